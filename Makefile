# The two set-up commands for a fresh machine: `make demo` and `make test`.
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PYTHON  ?= python3
# Exact versions with their hashes: a fresh machine installs what CI tested (README, "The lock").
LOCK    := requirements.lock
LOCK_COMPILE = uv pip compile pyproject.toml --extra test --extra slurm --extra lock --extra lint --universal \
	--generate-hashes --quiet --custom-compile-command "make lock"
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint format clean-demo lock check-lock

# pip, not uv, installs: pip also finds wheels a machine keeps on disk (its find-links), and
# --require-hashes refuses any file whose hash the lock does not list.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# Rewrite the lock after editing pyproject.toml's dependencies; pinned versions that still satisfy
# pyproject.toml are kept (UPGRADE=1 moves every package to its newest allowed release).
lock: $(STAMP)
	$(BIN)/$(LOCK_COMPILE) $(if $(UPGRADE),--upgrade) -o $(LOCK)

# CI: the lock is what pyproject.toml resolves to (a rewrite that keeps its pins changes nothing).
check-lock: $(STAMP)
	cp $(LOCK) $(VENV)/lock.check
	$(BIN)/$(LOCK_COMPILE) -o $(VENV)/lock.check
	@cmp -s $(LOCK) $(VENV)/lock.check || { diff $(LOCK) $(VENV)/lock.check | head -40; \
	  echo "$(LOCK) does not match pyproject.toml: run 'make lock' and commit it" >&2; exit 1; }
	@echo "$(LOCK) matches pyproject.toml"

# The whole pipeline on the built-in synthetic Market-format dataset, on CPU.
demo: $(STAMP)
	$(BIN)/snakemake --cores all --workflow-profile none --configfile params.yaml config/demo.yaml

# Two workers, one test file at a time each (a file's fixtures, such as a whole demo-sized DAG,
# are built once): much of the suite is single-threaded process start-up and Snakemake/DVC
# bookkeeping, so two workers finish it far sooner than one on a 2-core machine.
# --no-loadscope-reorder: files are handed out in the order tests/conftest.py gives them, which
# puts the files that fork the test process first (xdist's default reorders by test count, so a
# worker could run torch.export, which forbids autograd in forked children, before them).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# ruff's linter and formatter (settings: pyproject.toml), then Snakemake's lint of the workflow;
# any finding fails (CI runs it), but Snakemake's request for a conda environment or container
# per rule: every stage runs the one .venv (README, "Lint"). `make format` applies ruff's fixes.
SNAKEMAKE_LINT_ACCEPTED := Specify a conda environment or container for each rule
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(BIN)/snakemake --lint --workflow-profile none > $(VENV)/snakemake-lint.txt 2>&1; \
	status=$$?; other=$$(grep '^    \* ' $(VENV)/snakemake-lint.txt | grep -v '$(SNAKEMAKE_LINT_ACCEPTED)'); \
	if [ $$status -ne 0 ] && { [ -n "$$other" ] || ! grep -q '^Lints for rule' $(VENV)/snakemake-lint.txt; }; \
	then cat $(VENV)/snakemake-lint.txt; echo "snakemake --lint: findings above" >&2; exit 1; fi; \
	echo "snakemake --lint: only the accepted finding ($(SNAKEMAKE_LINT_ACCEPTED))"

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean-demo:
	rm -rf data/synthetic-market results models logs reports/* .snakemake
