"""The MLflow tag names every platform run carries (what each means: the ``platform.tracking`` docstring)."""

TAG_KIND = "platform.kind"
TAG_POLICY_TYPE = "platform.policy_type"
TAG_NUM_GPUS = "platform.num_gpus"
TAG_SUITE = "platform.suite"
TAG_SWEEP = "platform.sweep"
TAG_QUALITY = "platform.quality"
