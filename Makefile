# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv idempotently first.
# The set-up installs torch before the package so that pip never resolves a plain `torch` on a fresh
# environment (that pulls GBs of CUDA packages). GPU users: see README ("GPU machines").
# The first interpreter that really runs and is 3.10-3.12 (pyenv shims exist for versions that don't run).
PYTHON ?= $(shell for p in python3 python3.12 python3.11 python3.10; do $$p -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -n "$(PYTHON)" || { echo "vcam needs Python 3.10-3.12 (MediaPipe 0.10.21 has no newer wheel); none found" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; v = sys.version_info[:2]; (3, 10) <= v <= (3, 12) or sys.exit(f"vcam needs Python 3.10-3.12 (MediaPipe 0.10.21 has no wheel for {v[0]}.{v[1]}); set PYTHON=python3.11")'
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,train]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vcam demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
