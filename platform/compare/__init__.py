"""``python -m platform.compare``: our runs vs our baselines vs published numbers. ``cli`` is the command,
``runs`` reads our MLflow runs, ``published`` the published numbers, ``report`` writes tables and figures."""
