# Two entry points that do all set-up on a fresh machine:
#   make run    build the venv, then materialize the whole pipeline (Dagster job, embedded defaults)
#   make test   build the venv, then unit tests; then, beside the browser test (both UIs in
#               chromium after two tiny pipeline runs; `make browser` alone), code-location
#               validation, pipeline_job on the shared 300-document sample
#               (configs/demo-cpu.yaml) with its report reproduced independently, and the
#               deployment stack on a real PostgreSQL (`make test-stack` alone)
# On demand: make test-slow   the held-out learning test (~15 minutes on 2 cores; docs/training.md)
PYTHON ?= python3
VENV ?= .venv
# On a CPU-only machine pin a CPU wheel first; a GPU user sets TORCH_SPEC to their CUDA build.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
SAMPLE ?= ../shared/data/fineweb-cc-main-2013-20-head300.parquet
JOB ?= pipeline_job

export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1
export DAGSTER_HOME ?= $(CURDIR)/.finegpt/dagster
export FINEGPT_HOME ?= $(CURDIR)/.finegpt
# `dagster job execute` is what our users run in their CI (the tests run it); its notice that
# `dg launch` supersedes it is noise here.
export PYTHONWARNINGS ?= ignore:Function `job_execute_command` is superseded

.PHONY: venv dagster-home run test test-slow unit validate data-job train-job demo browser test-stack beside-browser ui-and-stack

$(BIN)/finegpt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	# uv installs the same versions as pip, in parallel (16 s against 69 s here); pip if it fails
	($(BIN)/pip install -q uv && $(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev,deploy]') \
	  || $(BIN)/pip install -q -e '.[dev,deploy]'
	touch $@

venv: $(BIN)/finegpt

dagster-home:
	mkdir -p $(DAGSTER_HOME)
	cp -n docker/dagster.yaml $(DAGSTER_HOME)/dagster.yaml 2>/dev/null || true

# The data assets are partitioned by shard: register FINEGPT_SHARD's partition (prints the
# run tags that target it), then run the job on it
PARTITION = tags=$$($(BIN)/python -m assets.shards add --tags) &&

# runs a job in-process as `dagster job execute` does, filed under workspace.yaml's code location
# as a UI launch is (the Overview timeline shows it); ends with the run's summary block
# (assets/run_summary.py) and exits 1 when the run or an ERROR-severity check failed
LAUNCH = $(BIN)/python -m assets.launch

run: venv dagster-home
	$(PARTITION) $(LAUNCH) -j $(JOB) --tags "$$tags"

# two workers: half the suite waits on subprocesses, servers and SQLite, not on the CPU
unit: venv
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

# the dg project's definitions load (pyproject's [tool.dg]); `dg launch` runs jobs the same way
validate: venv dagster-home
	$(BIN)/dg check defs

data-job: venv dagster-home
	export FINEGPT_SHARD=$${FINEGPT_SHARD:-$(SAMPLE)} && $(PARTITION) $(LAUNCH) -j data_job --tags "$$tags"

# every shard the data job has tokenized
train-job: venv dagster-home
	$(LAUNCH) -j train_job

# The whole chain on the sample, as CI runs it; then ckpt.pt on val.bin, evaluated
# independently, must give the report's val loss and bits per byte
demo: venv dagster-home
	export FINEGPT_SHARD=$(SAMPLE) && $(PARTITION) $(LAUNCH) -j pipeline_job -c configs/demo-cpu.yaml --tags "$$tags"
	$(BIN)/python -m pytest -q -m demo tests/system/test_pipeline_report.py

# Debian's chromium (apt-get install chromium), driven by playwright; tmp homes, free ports
browser: venv
	$(BIN)/python -m pytest -q -m browser --durations=3 tests/system/test_browser.py

# Debian's PostgreSQL (apt-get install postgresql) behind the deployment's dagster.yaml and MLflow
test-stack: venv
	$(BIN)/python -m pytest -q -m stack -n 2 --durations=3 tests/system/test_postgres_stack.py

# After the unit tests, the browser test (the longest, mostly waiting on its servers) beside
# the rest in order: validate, the demo, the stack test
beside-browser: venv
	$(MAKE) validate && $(MAKE) demo && $(MAKE) test-stack

ui-and-stack: venv
	$(MAKE) -j2 --output-sync=target browser beside-browser

test: unit ui-and-stack
