#!/usr/bin/env bash
# One task per training node, started by grpo.sbatch with the launcher's command line as arguments: the
# launcher in the trainer role, for this node's GPUs; the machine rank is the task's rank in the training step
# (the rendezvous is the first training node). The launcher waits for the server's /health, runs
# `accelerate launch`, and on SIGTERM (which srun passes on) lets the ranks checkpoint before they stop.
set -euo pipefail
RANK=${SLURM_PROCID:-0}
echo "[train $(hostname) machine_rank $RANK]" >&2
exec "$@" --role trainer --machine-rank "$RANK"
