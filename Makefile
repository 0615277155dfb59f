# The two commands of the README: `make demo` (main job on the built-in example) and `make test`.
# Both create .venv and install everything on first use, at the exact versions in constraints.txt, with torch
# first: `pip install torch==2.13.0` takes the CPU wheel where one lies on disk (as on the project's machines);
# elsewhere pass TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU wheel instead of PyPI's CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TORCH_INDEX ?=
PIP_INSTALL := $(PY) -m pip install -q -c constraints.txt

.PHONY: demo test test-slow lint package lock

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP_INSTALL) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PIP_INSTALL) -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/submask demo -o submask-demo --overwrite

# The test suite without the tests marked slow (multi-process training, TRL, the demo); test-slow runs those.
test: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -m slow

# Linters CI runs: ruff (rules in pyproject.toml) and mypy --strict on submask/.
lint: $(STAMP)
	$(VENV)/bin/ruff check submask tests tools
	$(VENV)/bin/mypy

# What `pip install submask` gets: build the wheel and sdist, install the wheel in a fresh venv, smoke test.
package: $(STAMP)
	PY=$(PY) bash tools/wheel_smoke.sh

# Refresh constraints.txt: the newest versions pyproject.toml's ranges allow, resolved in a throwaway venv.
lock:
	rm -rf .venv-lock
	python3 -m venv .venv-lock
	.venv-lock/bin/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	.venv-lock/bin/pip install -q -e ".[all]"
	{ sed -n '1,2p' constraints.txt; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^#' | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-lock
