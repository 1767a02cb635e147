#!/usr/bin/env bash
# The embedded demo: synthetic data + tiny model, SFT, GRPO on a vLLM CPU server, evaluation and a plot.
# Usage: bash launch/demo.sh [--server off] [--out results/demo] [--seed 0]
set -euo pipefail
cd "$(dirname "$0")/.."
# One OpenMP thread per process: the trainer, the vLLM CPU server and the reward workers share the cores, and
# spinning OpenMP threads slow a tiny model's forward pass several times over.
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# The project's .venv (made by `make setup`) unless a PYTHON is given.
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; fi
export PATH="$(cd "$(dirname "${PYTHON:-python}")" 2>/dev/null && pwd):$PATH"
exec "${PYTHON:-python}" -m math_grpo.demo "$@"
