# `make run`: a fresh virtualenv, the package, and the main job. `make test`: the same virtualenv, and the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export WANDB_MODE ?= offline

.PHONY: run test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(PY) train.py fit --config configs/mlp_digits.yaml

test: $(VENV)/.installed
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check agoplight tests train.py
	$(VENV)/bin/ruff format --check agoplight tests train.py

clean:
	rm -rf $(VENV) runs
