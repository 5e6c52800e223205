# minift: the two commands. Both create .venv when missing and install the project into it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean

$(STAMP): setup.py
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/minift demo

# worksteal: an idle worker takes queued tests from the busy one, so the suite does not end
# with one worker running a tail of slow lessons alone (8 min 06 s with the default
# scheduling, 5 min 42 s with this, same machine, idle)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15 tests

lint: $(STAMP)
	$(BIN)/ruff check minift kernels tests scripts lessons
	$(BIN)/ruff format --check minift kernels tests scripts lessons

format: $(STAMP)
	$(BIN)/ruff format minift kernels tests scripts lessons

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

# On a lent CUDA machine with no network: install into its python (no deps), run the GPU
# tests and every benchmark's CUDA section, write results.md/json under OUT (< 5 minutes).
.PHONY: gpu-check
gpu-check:
	$(PY) scripts/gpu_check.py --out $(if $(OUT),$(OUT),runs/gpu-check)
