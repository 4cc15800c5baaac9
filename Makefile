# Entry points: `make demo` (a few minutes), `make demo-full` (the longer budget), `make test`,
# `make test-slow` (the tests marked slow). Each builds .venv from scratch when needed.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
PIP_FLAGS := -c constraints.txt --disable-pip-version-check -q
DEMO_DIR ?= demo_out
DEMO_FULL_DIR ?= demo_full_out

# Backbone weights: where this project's machines keep torchvision's files (../shared/weights), unless
# the variable is already set; elsewhere rlad finds them in the torch hub cache or downloads them.
SHARED_WEIGHTS := $(wildcard ../shared/weights)
ifneq ($(SHARED_WEIGHTS),)
export RLAD_BACKBONE_WEIGHTS ?= $(abspath $(SHARED_WEIGHTS))
endif

.PHONY: demo demo-full test test-slow install install-dev clean bench

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

demo-full: $(VENV)/.installed
	$(PY) -m rlad.demo --full --out $(DEMO_FULL_DIR)

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q -n 2 --timeout 900

# The tests marked slow (real data, minutes each; each has its own time budget): not in `make test`.
test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m slow --timeout 3600

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(DEMO_FULL_DIR)
