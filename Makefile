# Two entry points (README): `make demo` runs the main job, `make test` the tests.
# Both build the virtual environment at .venv first (once; again when pins change).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# --no-compile: pip would byte-compile every installed module (about half of the set-up
# time); Python compiles the modules a run imports on first import instead.
$(STAMP): setup.py requirements/constraints.txt requirements/assets.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	$(PY) -m pip install -q --no-compile -c requirements/constraints.txt -e ".[dev]"
	$(PY) -m pip install -q --no-compile --no-deps -r requirements/assets.txt
	touch $(STAMP)

.PHONY: setup demo distill test test-integration
setup: $(STAMP)

# The whole recipe (FRet -> pre-finetune -> fine-tune -> eval -> report) on the embedded
# default; cached and resumable in runs/distill (rerun to continue or reuse).
demo distill: $(STAMP)
	$(VENV)/bin/gecko distill --output runs/distill

test: $(STAMP)
	$(PY) -m pytest -q

test-integration: $(STAMP)
	$(PY) -m pytest -q -m integration
