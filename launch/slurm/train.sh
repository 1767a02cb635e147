#!/usr/bin/env bash
# One task per training node, started by grpo.sbatch: `accelerate launch` for this node's GPUs; the machine
# rank is the task's rank in the training step, the rendezvous is the first training node.
set -euo pipefail
cd "$REPO"
eval "TRAIN_ARGS=($TRAIN_ARGS_Q)"
RANK=${SLURM_PROCID:-0}
LOG="$RUN_DIR/train-$(hostname).log"
echo "[train $(hostname) machine_rank $RANK] log: $LOG"
ACCELERATE=(accelerate launch)
command -v accelerate >/dev/null 2>&1 || ACCELERATE=("$PYTHON" -m accelerate.commands.launch)
# srun forwards SIGTERM here; pass it on to the training processes, which checkpoint and stop.
"${ACCELERATE[@]}" --config_file "$ACCELERATE_CONFIG" --num_machines "$TRAIN_NODES" \
  --num_processes "$NUM_PROCESSES" --machine_rank "$RANK" --main_process_ip "$MAIN_HOST" \
  --main_process_port "$MAIN_PORT" --same_network --rdzv_backend static \
  recipes/grpo.py --config "$RECIPE" "${TRAIN_ARGS[@]}" > >(tee -a "$LOG") 2>&1 &
PID=$!
trap 'pkill -TERM -P "$PID" 2>/dev/null; wait "$PID"' TERM INT
wait "$PID"
