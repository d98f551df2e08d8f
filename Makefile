# The two commands of the README (and `make lab`, to explore in JupyterLab):
#   make repro   set up .venv, generate the embedded cohort if missing, run the DVC pipeline
#                (independent stages side by side: JOBS=auto, one per usable core)
#   make test    set up .venv, run the whole test suite
#   make lab     JupyterLab on the project, from .venv (LAB_ARGS="--port 8890 --no-browser" for more)
#   make fuzz    the readers' property-based fuzzing at full size (10,000 examples per reader)
# Only Python 3.11 and pip are needed beforehand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Stage commands (dvc.yaml) call `python`: the venv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# DVC's site cache (repo index, locks) stays inside the repo wherever dvc is started from.
export DVC_SITE_CACHE_DIR := $(CURDIR)/.dvc/site_cache
# Idle OpenMP threads sleep instead of spinning: spinning made a training step ~10x slower on
# shared cores (measured 3.6 s vs 0.32 s).
export OMP_WAIT_POLICY := PASSIVE
STAMP  := $(VENV)/.installed

.PHONY: repro test fuzz lab env data data-update lock clean-env

# dvc repro with independent stages side by side, one per core (anatcl_core/cli/pipeline.py); the same
# outputs, dvc.lock and `dvc status` as a serial `dvc repro`, which works too. JOBS=1: one at a time.
JOBS ?= auto
repro: $(STAMP) data
	$(BIN)/python -m anatcl_core.cli.pipeline --jobs $(JOBS)

test: $(STAMP)
	$(BIN)/python -m pytest

# Every reader fuzzed with Hypothesis's "full" profile (tests/test_fuzz_readers.py); `make test` runs
# the same tests at the "ci" size. FUZZ_EXAMPLES=N for another size.
FUZZ_EXAMPLES ?= 10000
fuzz: $(STAMP)
	ANATCL_FUZZ_PROFILE=full ANATCL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -m fuzz -q

# Kernels start in the notebook's folder with this environment (venv on PATH, DVC site cache, OpenMP
# policy); jupytext opens notebooks/*.py as notebooks (default viewer: .jupyter/lab/settings).
# As root (containers often run so) Jupyter refuses to start without --allow-root; token
# authentication stays on either way.
LAB_ARGS ?=
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
lab: $(STAMP)
	$(BIN)/jupyter-lab --ServerApp.root_dir=$(CURDIR) --LabApp.app_settings_dir=$(CURDIR)/.jupyter/lab/settings $(LAB_ROOT) $(LAB_ARGS)

env: $(STAMP)

# Recreated whenever a pin changes. torch==2.13.0 comes as whatever build the index serves (CUDA on
# the public index for Linux x86-64, CPU-only from the CPU index); envcheck prints which one and
# where it will run, with a one-line note (never a failure) when build and machine differ.
# requirements-test.txt: test-only clients (nidl, anatcl) without their dependencies, whose declared
# pins conflict with ours (that file says why). requirements-dev.txt: test-only tools (hypothesis),
# pinned by version, not hash: their wheels differ per platform.
$(STAMP): requirements.txt constraints.txt requirements-test.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-test.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m anatcl_core.cli.envcheck
	touch $(STAMP)

# The embedded cohort: deterministic, so a fresh clone regenerates exactly what data.dvc records.
data: $(STAMP)
	$(BIN)/python -m anatcl_core.synth.ensure --params params.yaml --data data --dvc-file data.dvc

# After changing params.yaml `synth:` or the generator: regenerate data/ and re-record data.dvc.
data-update: $(STAMP)
	$(BIN)/python -m anatcl_core.synth.ensure --params params.yaml --data data --dvc-file data.dvc --update

# Re-pin every transitive dependency after editing requirements.txt.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --all --exclude-editable | grep -v -E '^(pip|nidl|anatcl)==' | sed 's/+cpu//' > constraints.txt

clean-env:
	rm -rf $(VENV)
