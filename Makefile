# Quick start: `make train` trains the default experiment, `make test` runs the test suite.
# Both create the virtual environment in .venv on first use, from the lock file requirements/dev.lock
# (the tested versions of every package, extras and test tools included): see docs/install.md.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION ?= 0.13.9
LOCK := requirements/dev.lock
ARGS ?=
# Parallel test workers (pytest-xdist): one per core; `make test JOBS=0` runs in one process. A test file stays
# on one worker (--dist loadfile): its module-scoped fixtures (trained runs shared by its tests) are built once,
# and a file's DDP or server tests never run beside each other. Files start in collection order (the longest
# first: tests/conftest.py's LONG_FILES), not xdist's most-tests-first.
JOBS ?= auto
# uv does not read pip's configuration: hand it the package sources pip is configured with on this machine
# (a local wheel folder, local index mirrors), so the lock installs from them where they exist.
PIP_SOURCES := $(shell python3 -m pip config list 2>/dev/null | sed -n \
	-e "s/^global\.find-links='\(.*\)'/--find-links \1/p" \
	-e "s/^global\.extra-index-url='\(.*\)'/\1/p" | sed -e "s/ \(file:[^ ]*\)/ --extra-index-url \1/g" \
	-e "s/^\(file:[^ ]*\)/--extra-index-url \1/")
UV_SOURCES := --index-strategy unsafe-best-match $(PIP_SOURCES)

.PHONY: venv lock train test test-slow lint tensorboard clean-venv

venv: $(VENV)/.installed

$(UV):
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "uv==$(UV_VERSION)"

$(VENV)/.installed: $(LOCK) pyproject.toml | $(UV)
	$(UV) pip sync -q --compile-bytecode --python $(PY) $(UV_SOURCES) $(LOCK)
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $@

# Re-resolve the lock from pyproject.toml's ranges (newest releases that fit), e.g. after adding a dependency.
# `make lock LOCK_ARGS="--upgrade-package optuna"` moves one package only.
LOCK_ARGS ?=
lock: | $(UV)
	$(UV) pip compile -q --python $(PY) $(UV_SOURCES) --extra dev --constraints requirements/constraints.txt \
		--no-emit-find-links --no-emit-index-url --custom-compile-command "make lock" $(LOCK_ARGS) \
		-o $(LOCK) pyproject.toml

train: venv
	$(PY) bin/train.py $(ARGS)

test: venv
	$(PY) -m pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder $(ARGS)

test-slow: venv
	$(PY) -m pytest -q -m slow $(ARGS)

lint: venv
	$(VENV)/bin/ruff check bin pipeline tests hydra_plugins

tensorboard: venv
	$(VENV)/bin/tensorboard --logdir experiments_results --host 127.0.0.1

clean-venv:
	rm -rf $(VENV)
