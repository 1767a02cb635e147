#!/usr/bin/env bash
# GRPO with rollouts on a vLLM server: `python -m math_grpo.launch` (see its --help for the options).
#   bash launch/grpo.sh [launcher options] RECIPE.yaml [recipe overrides, e.g. --max_steps 10]
cd "$(dirname "$0")/.." || exit 2
exec "${PYTHON:-python}" -m math_grpo.launch "$@"
