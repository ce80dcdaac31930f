# Two commands do everything on a fresh clone; each installs what it needs first.
#   make demo   serve a tiny random-weight model with a LoRA adapter locally and curl it
#   make test   run the test suite (what CI runs, with make test-floors and make newcomer)
# and: make demo-serve (keep the demo server running), make bench, make newcomer, make clean
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo demo-serve test test-floors bench newcomer clean

# The cluster tests run a real control plane from the folder KUBEBUILDER_ASSETS names (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kwok; tests/kubesim/README.md says where
# to get them). Unset, it is unpacked once from K8S_TARBALL into .k8s-bin/ when that file exists.
K8S_TARBALL ?= ../shared/k8s/k8s-bin.tar.xz
K8S_BIN := .k8s-bin
ifeq ($(KUBEBUILDER_ASSETS),)
ifneq ($(wildcard $(K8S_TARBALL)),)
export KUBEBUILDER_ASSETS := $(abspath $(K8S_BIN))
K8S_DEP := $(K8S_BIN)/.unpacked
endif
endif

$(K8S_BIN)/.unpacked: $(K8S_TARBALL)
	mkdir -p $(K8S_BIN)
	tar -xJf $(K8S_TARBALL) -C $(K8S_BIN)
	touch $@

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

test: install $(K8S_DEP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

# The CLI at the lowest dependency versions setup.cfg allows (constraints/floors.txt), in its own
# venv without torch or the server extras: the offline and cluster tests.
FLOORS_VENV ?= .venv-floors
test-floors: $(FLOORS_VENV)/.installed $(K8S_DEP)
	HF_HUB_OFFLINE=1 $(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/offline tests/cluster tests/adapters tests/test_imports.py

$(FLOORS_VENV)/.installed: setup.cfg constraints/floors.txt
	python3 -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip --disable-pip-version-check -q install -c constraints/floors.txt -e . 'pytest>=8' 'hypothesis>=6.100'
	touch $@

bench: install $(K8S_DEP)
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
	rm -rf $(VENV) $(FLOORS_VENV) .pytest_cache .hypothesis .demo $(K8S_BIN)
