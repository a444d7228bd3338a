# Set-up commands: `make train` (reference run on the real MNIST) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=
# Two pytest-xdist workers, each taking a whole file at a time (its module fixtures built once) in
# the order tests/conftest.py gives; TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000
DOCS_PORT ?= 8000
DOCS_STAMP := $(VENV)/.docs-stamp
MODEL ?=
PORT ?= 5001
WORKERS ?= 1

.PHONY: install data train test test-fast lint bench ui serve docs docs-serve docs-screenshots clean-venv gpu-wheels

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

# Everything: tests/unit, tests/integration (the commands as processes), tests/services (servers).
test: install
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The inner loop: tests/unit only (in-process; no servers, no subprocesses).
test-fast: install
	$(BIN)/python -m pytest tests/unit $(XDIST) $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: data
	$(BIN)/python -m bench $(ARGS)

# Wheels for scripts/gpu_check.sh on a GPU machine with Python 3.12 and no internet (docs: Development):
# hydra-core, omegaconf, mlflow and their dependencies; antlr4-python3-runtime 4.9.3 is only an
# sdist, so it is built into a (pure-Python) wheel here first. Wheels of what that machine already
# has (numpy, scipy, scikit-learn, matplotlib and its image/font packages) are dropped again.
WHEELS ?= .whl
GPU_PY ?= 3.12
GPU_HAS ?= numpy scipy scikit_learn matplotlib pillow fonttools contourpy kiwisolver
gpu-wheels: install
	$(BIN)/python -m pip wheel --quiet --no-deps -w $(WHEELS) antlr4-python3-runtime==4.9.3
	$(BIN)/python -m pip download --quiet -d $(WHEELS) --find-links $(WHEELS) --only-binary=:all: \
		--python-version $(GPU_PY) --implementation cp --platform manylinux2014_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
		"hydra-core==1.3.*" "omegaconf>=2.3,<2.4" "mlflow==3.17.*"
	for name in $(GPU_HAS); do rm -f $(WHEELS)/$$name-*.whl; done
	du -sh $(WHEELS)

# Serves the local store with mlflow ui and prints the address of the runs table once it answers
# (MLflow 3 opens a new browser on its GenAI pages otherwise): mnist_mlp/tracking/ui.py.
ui: install
	mkdir -p mlruns/artifacts
	@$(BIN)/python -m mnist_mlp.tracking.ui --serve --host $(UI_HOST) --port $(UI_PORT)

# MLflow's scoring server for a model of the local store on loopback (docs/serving.md):
#   make serve MODEL=runs:/<run id>/model   or   MODEL=models:/mnist-mlp@champion PORT=5002 WORKERS=2
serve: install
	@$(BIN)/python serve.py 'model_uri=$(MODEL)' port=$(PORT) workers=$(WORKERS) $(ARGS)

# docs/images/*.png: two short runs on MNIST into a temporary store, photographed in headless Chromium.
docs-screenshots: data
	$(BIN)/python docs/screenshots.py

# The documentation site (mkdocs.yml, docs/): the docs extra in its own stamp, so `make test` does
# not install it. --strict: a broken link or anchor, or a page left out of the nav, fails the build.
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:$(DOCS_PORT)

clean-venv:
	rm -rf $(VENV)
