#!/usr/bin/env bash
# One task per server node, started by grpo.sbatch with the launcher's command line as arguments: the launcher
# in the server role over this node's GPUs. Node 0 of the server step runs the API server (the trainers' URL);
# with SERVER_NODES > 1 the others join it as headless data-parallel engines (vLLM's multi-node data parallel).
# Only what depends on this node's rank is added here; the launcher does the rest (and stops the server on
# SIGTERM, which srun passes on).
set -euo pipefail
RANK=${SLURM_PROCID:-0}
LOCAL_DP=$(( GPUS_PER_NODE / VLLM_TP ))
VLLM_ARGS="--data-parallel-size $VLLM_DP"
EXTRA=()
if (( SERVER_NODES > 1 )); then
  VLLM_ARGS+=" --data-parallel-size-local $LOCAL_DP --data-parallel-address $SERVER_HOST_PRIMARY"
  VLLM_ARGS+=" --data-parallel-rpc-port $DP_RPC_PORT"
  if (( RANK > 0 )); then
    # An engine node: it serves no HTTP, so neither the port nor /health is its to check.
    VLLM_ARGS+=" --headless --data-parallel-start-rank $(( RANK * LOCAL_DP ))"
    EXTRA=(--no-port-check)
  fi
fi
echo "[server $(hostname) rank $RANK] vLLM args: $VLLM_ARGS" >&2
exec "$@" --role server --vllm-args "$VLLM_ARGS" "${EXTRA[@]}"
