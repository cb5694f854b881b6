# The README's commands. Every target sets the environment up first (idempotent: seconds when done).
#   make train   the main job on the embedded default (Meta-World MT10): collect if missing, train, evaluate, MLflow
#   make test    lint (scripts/lint.sh), then the default test suite (what CI runs)
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export MUJOCO_GL ?= egl
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1

.PHONY: setup train test test-all bench bench-policy bench-eval collect mlflow-ui lint clean

setup:
	@bash scripts/setup_env.sh

train: setup
	$(PY) -m platform.train $(ARGS)

test: setup
	@bash scripts/run_tests.sh $(ARGS)

test-all: setup
	$(PY) -m pytest -m "" $(ARGS)

bench-policy: setup
	$(PY) -m platform.bench policy --json .bench/policy.json $(ARGS)

bench-eval: setup
	$(PY) -m platform.bench eval --json .bench/eval.json $(ARGS)

bench: bench-policy bench-eval

collect: setup
	$(PY) -m evaluation.collect --suite mt10 --episodes-per-task 20 --out data/metaworld_mt10 $(ARGS)

mlflow-ui: setup
	$(PY) -m mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port 5000

lint: setup
	@bash scripts/lint.sh

clean:
	rm -rf .venv .pytest_cache .ruff_cache
