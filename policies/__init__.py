"""Pure-PyTorch policies: Mini-Diffuser (two-level mini-batches, masked attention) and the
one-to-one / 3DDA-style baselines. Imports no ray, mlflow or simulator (docs/design.md, section 1)."""
