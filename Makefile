# Two entry points (see README): `make repro` runs the pipeline, `make test` runs the tests.
# Both create the virtual environment first when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv repro test test-fast lint params clean-venv

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

repro: venv
	. $(VENV)/bin/activate && dvc repro

test: lint
	. $(VENV)/bin/activate && pytest $(PYTEST_ARGS)

test-fast: venv
	. $(VENV)/bin/activate && pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	. $(VENV)/bin/activate && ruff check . && ruff format --check .

clean-venv:
	rm -rf $(VENV)

# Recompose params.yaml from conf/ (what `dvc exp run` does) after editing conf/.
params: venv
	$(PY) -c "from reviewpipe.config import compose_params; compose_params()"
