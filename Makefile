# The two set-up commands for a fresh machine: `make demo` and `make test`.
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTHON  ?= python3
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,slurm]"
	touch $(STAMP)

# The whole pipeline on the built-in synthetic Market-format dataset, on CPU.
demo: $(STAMP)
	$(BIN)/snakemake --cores all --workflow-profile none --configfile params.yaml config/demo.yaml

# Two workers, one test file at a time each (a file's fixtures, such as a whole demo-sized DAG,
# are built once): much of the suite is single-threaded process start-up and Snakemake/DVC
# bookkeeping, so two workers finish it far sooner than one on a 2-core machine.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/snakemake --lint --workflow-profile none

clean-demo:
	rm -rf data/synthetic-market results models logs reports/* .snakemake
