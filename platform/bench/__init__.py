"""``python -m platform.bench policy|eval``: benchmarks that print and save figures (``cli`` dispatches to
``policy``: two-level vs one-to-one training, and ``evaluation``: parallel simulator evaluation)."""
