"""The training stage: ``python -m platform.train`` (the driver) and what each Ray Train worker runs.

Driver, in the order it runs: ``__main__`` -> ``command`` (the run) -> ``preflight`` (checks) -> ``dataset``
(``ensure_dataset``) -> ``platform.session`` (Ray) -> ``launch`` (the ``TorchTrainer``, ``fit``).
Worker, in the order a training step runs: ``worker`` -> ``dataset`` (``open_split``) -> ``state`` ->
``loop`` (``run_steps``) -> ``sampler`` -> ``step`` (``train_step``) -> ``metrics`` -> ``checkpoint``;
beside them ``validation``, ``marks`` and ``periodic_eval``. docs/design.md (section 2a) follows one sample
from its Parquet shard to MLflow through these files.
"""
