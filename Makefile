# Quick start: `make train` trains the default experiment, `make test` runs the test suite.
# Both create the virtual environment in .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: venv train test test-slow lint tensorboard clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

train: venv
	$(PY) bin/train.py $(ARGS)

test: venv
	$(PY) -m pytest -q $(ARGS)

test-slow: venv
	$(PY) -m pytest -q -m slow $(ARGS)

lint: venv
	$(VENV)/bin/ruff check bin pipeline tests

tensorboard: venv
	$(VENV)/bin/tensorboard --logdir experiments_results --bind_all

clean-venv:
	rm -rf $(VENV)
