"""Serve a trained policy over HTTP with Ray Serve (``python -m platform.serve``; docs/serving.md).

Importing this package imports only the client (no Ray, no torch): ``from platform.serve import Client``.
"""

from platform.serve.client import Client, HttpInference, Prediction, ServeError

__all__ = ["Client", "HttpInference", "Prediction", "ServeError"]
