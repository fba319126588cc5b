# The two set-up commands (see README): `make demo` runs the main job on a built-in default, `make test` the tests.
# Both create .venv and install volo into it first (torch/torchvision pinned to the releases on this machine's disk).
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH := torch==2.14.1 torchvision==0.29.1

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,dali]'
	touch $@

.PHONY: demo test lint
demo: $(VENV)/.installed
	$(VENV)/bin/volo demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check volo tests benchmarks && $(VENV)/bin/ruff format --check volo tests benchmarks
