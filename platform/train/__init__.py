"""The training stage: ``python -m platform.train`` (driver) and what each Ray Train worker runs."""
