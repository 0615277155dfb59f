# The two commands of the README: `make demo` (main job on the built-in example) and `make test`.
# Both create .venv and install everything on first use; torch is pinned first to the CPU wheel.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/submask demo -o submask-demo --overwrite

test: $(STAMP)
	$(PY) -m pytest -q
