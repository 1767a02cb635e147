#!/usr/bin/env bash
# One task per server node, started by grpo.sbatch: the vLLM server over this node's GPUs. Node 0 of the
# server step runs the API server (the trainers' URL); with SERVER_NODES > 1 the others join it as headless
# data-parallel engines (vLLM's multi-node data parallel).
set -euo pipefail
cd "$REPO"
eval "SERVER_CMD=($SERVER_CMD_Q)"
RANK=${SLURM_PROCID:-0}
LOCAL_DP=$(( GPUS_PER_NODE / VLLM_TP ))
export CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((GPUS_PER_NODE - 1)))
export VLLM_SERVER_DEV_MODE=1   # the weight-transfer and cache endpoints TRL's sync uses
if (( SERVER_NODES > 1 )); then
  SERVER_CMD+=(--data-parallel-size-local "$LOCAL_DP" --data-parallel-address "$SERVER_HOST_PRIMARY"
    --data-parallel-rpc-port "$DP_RPC_PORT")
  if (( RANK > 0 )); then
    SERVER_CMD+=(--headless --data-parallel-start-rank $(( RANK * LOCAL_DP )))
  fi
fi
echo "[server $(hostname) rank $RANK] ${SERVER_CMD[*]}"
exec "${SERVER_CMD[@]}"
