#!/usr/bin/env bash
# GRPO on two GPUs: the vLLM server on GPU 1 with NCCL weight sync, the trainer on GPU 0 with ZeRO-2 and with
# ZeRO-3, the logprob check after every sync, evaluation on the server, and a resume from a checkpoint mid-run
# (SIGTERM after checkpoint-$CKPT_STEP, then --resume_from_checkpoint auto). Same model, data, batch shape and
# per-step timing as run_1gpu.sh, so the numbers sit beside the one-GPU ones in benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu/run_2gpu.sh RESULTS_DIR [STAGE ...]     (default: base nccl_zero2 nccl_zero3 summary)
#
# Stages: base and summary (benchmarks/gpu/common.sh, shared with run_1gpu.sh), and
#   nccl_zero2    python -m math_grpo.launch --server-gpus 1 --trainer-gpus 0, accelerate_configs/zero2.yaml
#   nccl_zero3    the same with accelerate_configs/zero3.yaml, stopped by SIGTERM after checkpoint-$CKPT_STEP
#                 and resumed to $SERVER_STEPS steps (timing of both halves in nccl_zero3_timing.jsonl)
# Knobs: SERVER_STEPS=10 EVAL_STEPS=5 CKPT_STEP=4 and those of common.sh (WHEELS=DIR offline).
RES=${1:?usage: bash benchmarks/gpu/run_2gpu.sh RESULTS_DIR [STAGE ...]}
shift
source "$(dirname "$0")/common.sh"
SERVER_STEPS=${SERVER_STEPS:-10}
EVAL_STEPS=${EVAL_STEPS:-5}
CKPT_STEP=${CKPT_STEP:-4}

# Same training values and batch shape as the one-GPU server run; only the placement and the sync differ.
OVERRIDES=(--model_name_or_path "$MODEL" --dataset_name "$DATA"
  --per_device_train_batch_size 32 --gradient_accumulation_steps 8 --steps_per_generation 8
  --num_generations 8 --max_completion_length 512 --generation_kwargs '{"ignore_eos": true}'
  --benchmarks synthetic --eval_max_samples 500 --eval_steps "$EVAL_STEPS" --report_to none)

launch_2gpu() {  # ACC_CONFIG RUN_DIR TIMING_FILE [extra overrides...]
  local acc=$1 run=$2 timing=$3; shift 3
  BENCH_ENGINE_PROBE=1 BENCH_TIMING_OUT=$timing python3 -m math_grpo.launch --server-gpus 1 --trainer-gpus 0 \
    --accelerate-config "$acc" recipes/qwen2.5-math-1.5b/grpo_2gpu.yaml "${OVERRIDES[@]}" \
    --output_dir "$run" "$@"
}

stage_nccl_zero2() {
  log "nccl_zero2: server on GPU 1 (NCCL sync), trainer on GPU 0 with ZeRO-2, $SERVER_STEPS steps"
  rm -rf "$RUNS/nccl_zero2" "$RES/nccl_zero2_timing.jsonl"
  monitor "$RES/nccl_zero2_gpumem.csv"
  launch_2gpu accelerate_configs/zero2.yaml "$RUNS/nccl_zero2" "$RES/nccl_zero2_timing.jsonl" \
    --max_steps "$SERVER_STEPS" --save_strategy no 2>&1 | tee "$RES/nccl_zero2.log"
  local rc=$?
  unmonitor
  cp -f "$RUNS/nccl_zero2/server.log" "$RES/nccl_zero2_vllm.log" 2>/dev/null
  cp -f "$RUNS/nccl_zero2/metrics.jsonl" "$RES/nccl_zero2_metrics.jsonl" 2>/dev/null
  return $rc
}

stage_nccl_zero3() {
  log "nccl_zero3: ZeRO-3 trainer, SIGTERM after checkpoint-$CKPT_STEP, then resume to $SERVER_STEPS steps"
  local run=$RUNS/nccl_zero3
  rm -rf "$run" "$RES/nccl_zero3_timing.jsonl"
  monitor "$RES/nccl_zero3_gpumem.csv"
  launch_2gpu accelerate_configs/zero3.yaml "$run" "$RES/nccl_zero3_timing.jsonl" \
    --max_steps "$SERVER_STEPS" --save_strategy steps --save_steps "$CKPT_STEP" \
    >"$RES/nccl_zero3_part1.log" 2>&1 &
  local pid=$!
  # The interruption: once checkpoint-CKPT_STEP exists, SIGTERM the launcher as a scheduler would; it stops
  # training at the end of the step (with a checkpoint) and then the server.
  while kill -0 "$pid" 2>/dev/null; do
    if [[ -d "$run/checkpoint-$CKPT_STEP" ]]; then
      sleep 5
      log "checkpoint-$CKPT_STEP written: SIGTERM to the launcher (pid $pid)"
      kill -TERM "$pid"
      break
    fi
    sleep 2
  done
  wait "$pid"
  log "first half exited with $? ($(ls -d "$run"/checkpoint-* 2>/dev/null | xargs -n1 basename | paste -sd' '))"
  launch_2gpu accelerate_configs/zero3.yaml "$run" "$RES/nccl_zero3_timing.jsonl" \
    --max_steps "$SERVER_STEPS" --save_strategy steps --save_steps "$CKPT_STEP" \
    --resume_from_checkpoint auto 2>&1 | tee "$RES/nccl_zero3_part2.log"
  local rc=$?
  unmonitor
  cp -f "$run/server.log" "$RES/nccl_zero3_vllm.log" 2>/dev/null
  cp -f "$run/metrics.jsonl" "$RES/nccl_zero3_metrics.jsonl" 2>/dev/null
  grep -h "resum\|Continuing training\|WeightSyncError\|weight sync" "$RES"/nccl_zero3_part*.log | head -20
  return $rc
}

(( $# )) || set -- base nccl_zero2 nccl_zero3 summary
run_stages "$@"
