# `make test` and `make demo` bootstrap .venv themselves (torch/torchvision pinned by constraints.txt).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install test test-fast test-floors lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Not part of CI: the loss tests on the oldest versions pyproject allows (a separate venv, a
# download of those versions; run it once after changing a floor, record the result in README).
FLOORS = "torch==2.3.1" "numpy<2" "segmentation-models-pytorch==0.4.0" "timm==1.0.3" \
	"pytest>=8" "hypothesis>=6.100"
test-floors:
	$(PYTHON) -m venv .venv-floors
	.venv-floors/bin/pip install --quiet $(FLOORS)
	.venv-floors/bin/pip install --quiet --no-deps -e .
	.venv-floors/bin/python -m pytest -q -p no:cacheprovider \
		tests/test_acb_mse.py tests/test_valid_pixel.py tests/test_crl.py tests/test_registry.py

demo: $(STAMP)
	$(BIN)/smp-imbalance fit --config detector_denoise

bench: $(STAMP)
	$(BIN)/python benchmarks/speed_losses.py

clean:
	rm -rf $(VENV) .venv-floors .pytest_cache .ruff_cache .hypothesis dist build
