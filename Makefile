# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-slurm lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m seg.train

# pytest-xdist: WORKERS processes share the cores (tests/conftest.py gives each its share of threads); a test
# file stays on one worker, so a module's shared fixture is built once. WORKERS=1 runs the tests one by one.
WORKERS ?= 2

test: $(STAMP)
	$(BIN)/ruff check seg tests benchmarks
	$(BIN)/ruff format --check seg tests benchmarks
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "" -n $(WORKERS) --dist loadfile

# sweeps through a real SLURM scheduler on a one-node cluster on this machine (root: scripts/slurm_local.sh)
test-slurm: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/test_slurm.py

lint: $(STAMP)
	$(BIN)/ruff check seg tests benchmarks
	$(BIN)/ruff format --check seg tests benchmarks

clean:
	rm -rf $(VENV) outputs/*/ .pytest_cache
