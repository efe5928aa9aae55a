# fusedops: `make demo` (set up + train a GPT on the embedded corpus), `make test` (everything CI runs),
# `make quick` (fast development loop). PY selects the interpreter.
PY ?= python3
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: setup demo test quick pytest csrc-test sim-test cuda-check bench clean

# Installs torch only when missing (the CPU build: `plain pip install torch` would fetch a
# multi-GB CUDA build), the test/bench tools, then builds fusedops._C against that torch.
setup:
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	@$(PIP) install numpy ninja pytest hypothesis matplotlib tqdm
	$(PIP) install --no-build-isolation -e .

demo: setup
	$(PY) -m fusedops.train

test: setup pytest csrc-test sim-test cuda-check

quick: setup
	$(PY) -m pytest -q -m "not slow"

pytest:
	$(PY) -m pytest -q

csrc-test:
	bash tests/csrc/run.sh

sim-test:
	@if [ -f tests/sim/run.sh ]; then bash tests/sim/run.sh; else echo "no simulator tests yet"; fi

cuda-check:
	@if [ -f tools/cuda_check.sh ]; then bash tools/cuda_check.sh; else echo "no CUDA sources yet"; fi

bench: setup
	$(PY) -m benchmarks all --threads 1,2

clean:
	rm -rf build *.egg-info fusedops/*.so
