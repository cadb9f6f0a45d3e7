# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# copick pins zarr < 3, so its own virtualenv: the interop tests open our copick projects with it.
COPICK_VENV := .venv-copick

.PHONY: demo test install lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch==2.13.0 first (a CPU build on this machine kind); the project then accepts it (torch>=2.4).
# deploy/constraints.txt pins the libraries the simulator's output depends on.
$(STAMP): $(BIN)/python pyproject.toml deploy/constraints.txt
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[test]" -c deploy/constraints.txt
	$(PY) -m venv $(COPICK_VENV)
	$(COPICK_VENV)/bin/pip install -q copick "zarr<3"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python jobs/demo.py --output demo_output

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(COPICK_VENV) demo_output
