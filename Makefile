# Two commands on a fresh machine: `make demo` and `make test`. Both build the virtual
# environment first: torch pinned to the local CPU wheel BEFORE anything else, so no package
# can pull a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
TORCH ?= torch==2.13.0

.PHONY: install demo test test-fast test-slow bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(TORCH)
	$(PIP) -e ".[dev,bench]"
	touch $@

demo: install
	$(VENV)/bin/tunesmith train rotten-tomatoes --out runs/demo --overwrite

test: install
	$(PY) -m pytest -q -m "not slow" tests --durations=15
	$(PY) -m pytest -q -m slow tests --durations=15

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

test-slow: install
	$(PY) -m pytest -q -m slow tests

clean:
	rm -rf $(VENV) runs .pytest_cache
