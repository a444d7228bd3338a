# Set-up commands: `make train` (reference run on the real MNIST) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000

.PHONY: install data train test lint bench ui docs-screenshots clean-venv

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

# Prints the address of the runs table (MLflow 3 opens a new browser on its GenAI pages otherwise).
ui: install
	mkdir -p mlruns/artifacts
	@$(BIN)/python -m mnist_mlp.tracking.ui --host $(UI_HOST) --port $(UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host $(UI_HOST) --port $(UI_PORT)

# docs/*.png: a short sweep on MNIST into a temporary store, photographed in headless Chromium.
docs-screenshots: data
	$(BIN)/python docs/screenshots.py

clean-venv:
	rm -rf $(VENV)
