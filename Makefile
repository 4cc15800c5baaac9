# Two entry points: `make demo` and `make test`. Both build .venv from scratch when needed.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
PIP_FLAGS := -c constraints.txt --disable-pip-version-check -q
DEMO_DIR ?= demo_out

.PHONY: demo test install install-dev clean bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_FLAGS) --upgrade pip
	$(PIP) install $(PIP_FLAGS) torch==2.13.0
	$(PIP) install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install $(PIP_FLAGS) -e '.[dev,export,serve,vlm]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(PY) -m rlad.demo --out $(DEMO_DIR)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q -n 2 --timeout 900

clean:
	rm -rf $(VENV) $(DEMO_DIR)
