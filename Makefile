# Two commands on a fresh machine: `make demo` and `make test`. Each sets up $(VENV) idempotently first.
# Any Python 3.10-3.14 that really runs (scripts/pick_python.sh: python3, else the newest python3.1x on
# PATH or in pyenv); `PYTHON=python3.13` picks one, `VENV=.venv313` keeps a second environment beside.
# The set-up installs torch before the package so that pip never resolves a plain `torch` (that pulls
# a newer CUDA build): `torch==2.13.0` takes the CPU wheel where one lies in pip's find-links (this
# machine's Python 3.11), else PyPI's build for that Python. GPU users: see README ("GPU machines").
# PIN adds requirements to the install, e.g. PIN='numpy<2' (CI tests the oldest numpy that way).
PYTHON ?=
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIN ?=
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: setup demo test lint onnx lean clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || { \
	  python=$$(sh scripts/pick_python.sh $(PYTHON)) || { \
	    echo "vcam needs Python 3.10-3.14; none found among: $(or $(PYTHON),python3 python3.10-3.14) (set PYTHON=...)" >&2; \
	    exit 1; }; \
	  echo "creating $(VENV) with $$python ($$($$python -V))"; \
	  $$python -m venv $(VENV); }
	@$(PY) -c 'import sys; v = sys.version_info[:2]; (3, 10) <= v <= (3, 14) or sys.exit(f"$(VENV) has Python {v[0]}.{v[1]}; vcam needs 3.10-3.14: make clean, then set PYTHON=python3.13")'
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e ".[dev,train]" $(foreach spec,$(PIN),"$(spec)")
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vcam demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The ONNX graph shipped beside the weights (engine/weights/default.onnx): regenerate after replacing
# engine/weights/default.safetensors (tests/test_shipped_graph.py fails on a stale graph until then).
onnx: $(STAMP)
	$(PY) scripts/export_onnx.py

# What a user's `pip install .` gets: a fresh venv from PyPI only, its size, no torch; vcam demo in it.
lean:
	python3 scripts/check_install.py --python $$(sh scripts/pick_python.sh $(PYTHON)) --smoke

clean:
	rm -rf $(VENV) build *.egg-info
