# Set-up commands: `make train` (reference run on the real MNIST) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000

.PHONY: install data train test lint bench ui clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

data: install
	$(BIN)/python -m mnist_mlp.fetch

train: data
	$(BIN)/python train.py $(ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: data
	$(BIN)/python -m mnist_mlp.bench $(ARGS)

ui: install
	mkdir -p mlruns/artifacts
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host $(UI_HOST) --port $(UI_PORT)

clean-venv:
	rm -rf $(VENV)
