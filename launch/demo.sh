#!/usr/bin/env bash
# The embedded demo: synthetic data + tiny model, SFT, GRPO on a vLLM CPU server, evaluation and a plot.
# Usage: bash launch/demo.sh [--server off] [--out results/demo] [--seed 0]
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec python -m math_grpo.demo "$@"
