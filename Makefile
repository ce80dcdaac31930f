# Two commands do everything on a fresh clone; each installs what it needs first.
#   make demo   serve a tiny random-weight model with a LoRA adapter locally and curl it
#   make test   run the test suite (what CI runs)
# and: make demo-serve (keep the demo server running), make bench, make newcomer, make clean
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo demo-serve test bench newcomer clean

install: $(VENV)/.installed

# torch first, pinned: an unpinned resolve pulls a multi-GB CUDA build.
$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[server,test]'
	touch $@

demo: install
	$(VENV)/bin/kaitoctl demo

demo-serve: install
	$(VENV)/bin/kaitoctl demo --serve

test: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

bench: install
	$(PY) bench/run_all.py

# What a newcomer gets from the README's CLI-only `pip install .` (no torch) in a fresh virtualenv:
# the offline commands, and `kaitoctl demo` / `serve` exiting 8 with the fix (.ci/newcomer). CI runs it.
NEWCOMER_VENV ?= $(or $(TMPDIR),/tmp)/kaitoctl-newcomer-venv
newcomer:
	rm -rf $(NEWCOMER_VENV)
	python3 -m venv $(NEWCOMER_VENV)
	$(NEWCOMER_VENV)/bin/python -m pip --disable-pip-version-check -q install .
	bash .ci/newcomer $(NEWCOMER_VENV)/bin
	rm -rf $(NEWCOMER_VENV)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .demo
