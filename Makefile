# Front door: `make demo` and `make test` work on a fresh Debian machine as root.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.rknnlink-installed
APT_PACKAGES := clang-14 libclang-rt-14-dev systemd iproute2 libusb-1.0-0
# torch is pinned to the CPU wheel that these machines carry; a newer one would pull a CUDA build.
TORCH := torch==2.13.0

.PHONY: all deps venv test test-fast lint demo bench proto clean sim toolkit2

all: test

deps: $(VENV)/.apt-installed venv

$(VENV)/.apt-installed:
	@mkdir -p $(VENV)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (run as root or install them)"; fi; fi
	@touch $@

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py $(shell find runtime_c -name '*.[ch]' -not -path '*/vendor_double/*' 2>/dev/null)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -U pip
	$(PIP) install -q $(TORCH) || echo "torch unavailable: load_pytorch tests will be skipped"
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps ultralytics || echo "ultralytics unavailable: the YOLOv8 corpus models will be skipped"
	@touch $@

sim: venv
	$(PIP) install -q --no-deps --no-build-isolation -e .

proto: venv
	$(PY) -m grpc_tools.protoc -Iproto --python_out=host --grpc_python_out=host --pyi_out=host proto/rknnlink/v1/rknnlink.proto

lint: venv
	$(VENV)/bin/ruff check .

# RKNN-Toolkit2 (the vendor compiler) in the environment rknnlink manages, for tests/vendor (docs/vendor.md).
TOOLKIT2_ENV ?= $(VENV)/toolkit2
toolkit2: venv
	@test -f $(TOOLKIT2_ENV)/rknnlink-toolkit2.json || $(PY) -m rknnlink.cli -v toolkit2 setup --path $(TOOLKIT2_ENV)

test: deps toolkit2
	$(VENV)/bin/ruff check .
	RKNNLINK_TOOLKIT2_PYTHON=$(abspath $(TOOLKIT2_ENV))/bin/python $(PY) -m pytest -q -rs tests

test-fast: venv
	$(PY) -m pytest -q -x -m "not slow" tests

demo: deps
	$(PY) -m rknnlink.demo

bench: deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build dist *.egg-info host/*.egg-info host/rknnlink/_native/*.so runtime_c/build
