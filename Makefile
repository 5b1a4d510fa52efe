# One virtual environment for everything; created and filled on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv lint test demo validate bench clean stop-ray

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

# The checks CI runs before the tests: ruff (lint + format) on everything, mypy on the package.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Tests start what they need themselves (a Ray head, an S3 endpoint, an MLflow server, Airflow),
# all on 127.0.0.1, and stop it when they finish.
test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The main job on the embedded default: example pipelines run through real Airflow, stages as Ray jobs.
demo: venv
	$(BIN)/python scripts/demo.py

validate: venv
	$(BIN)/rayops validate

bench: venv
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	$(BIN)/python benchmarks/parse.py

stop-ray: venv
	$(BIN)/rayops head stop

clean:
	rm -rf .rayops .rayops-test
