# fusedops: `make demo` (set up + train a GPT on the embedded corpus), `make test` (everything CI runs),
# `make quick` (fast development loop).
#
# Everything is installed into a project virtual environment, .venv (VENV=), made on first use
# from the interpreter PY (default python3: PY=/path/to/python3.12 picks another) and reused
# after that; delete .venv to start again. Nothing is installed into PY itself, so a system
# Python that refuses installs (Debian, Ubuntu: "externally managed") serves as PY too.
PY ?= python3
VENV ?= .venv
TORCH ?= 2.13.0
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip --disable-pip-version-check -q
# the recipes run with the environment first on PATH (its python3, pip, ninja)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup demo test quick pytest csrc-test sim-test sim-test-no-toolkit cuda-check package-check bench clean

# The environment: when PY has a torch, the environment uses it (tools/make_venv.py).
$(VPY):
	$(PY) tools/make_venv.py $(VENV)

# torch (the one the environment has; else the CPU build, or a CUDA build where nvidia-smi
# sees a GPU: tools/install_torch.py), the build tools, then fusedops itself (editable, built
# against that torch) with everything the tests, the trainer and the benchmarks use.
setup: $(VPY)
	@$(VPY) tools/install_torch.py $(TORCH)
	@$(PIP) install "setuptools>=64" wheel ninja
	$(PIP) install --no-build-isolation -e ".[test,train,bench]"
	@$(VPY) -c 'import fusedops; print("setup: fusedops", fusedops.build_info())'

demo: setup
	$(VPY) -m fusedops.train

test: setup pytest csrc-test sim-test cuda-check

quick: setup
	$(VPY) -m pytest -q -m "not slow"

pytest:
	$(VPY) -m pytest -q

csrc-test:
	bash tests/csrc/run.sh

sim-test:
	bash tests/sim/run.sh

# The simulator tests as on a machine without the CUDA toolkit: nvcc off PATH, no CUDA_HOME.
sim-test-no-toolkit:
	env -u CUDA_HOME -u CUDA_PATH PATH="$$(echo "$$PATH" | tr ':' '\n' | while read -r d; do \
	  [ -x "$$d/nvcc" ] || echo "$$d"; done | paste -sd:)" bash tests/sim/run.sh --no-toolkit

cuda-check:
	bash tools/cuda_check.sh

# The package as users install it: a source distribution from a clean export of HEAD, a wheel
# built from it, installed into a fresh environment, imported, one op run (tools/package_check.sh).
package-check: setup
	bash tools/package_check.sh $(VPY)

bench: setup
	$(VPY) -m fusedops.benchmarks all --threads 1,2

clean:
	rm -rf build dist *.egg-info fusedops/*.so
