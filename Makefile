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

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/snakemake --lint --workflow-profile none

clean-demo:
	rm -rf data/synthetic-market results models logs reports/* .snakemake
