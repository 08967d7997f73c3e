# The two quick-start commands are `make demo` and `make test`; both set up first.
PYTHON ?= python
PIP ?= $(PYTHON) -m pip

.PHONY: setup demo test lint

# torch/torchvision are pinned here (the exact tested install) and ranged in
# pyproject.toml; the CUDA build also runs on CPU-only machines.
setup:
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[dev]'

demo: setup
	irconvert demo

test: setup
	$(PYTHON) -m pytest -q

lint:
	ruff check irconvert tests benchmarks tools
	mypy
