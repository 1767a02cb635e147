#!/usr/bin/env bash
# GRPO on one GPU with a random Qwen2.5-Math-1.5B-shaped model, three ways, each timed per step
# (benchmarks/RESULTS.md, "one H100"):
#
#   bash benchmarks/gpu/run_1gpu.sh RESULTS_DIR [STAGE ...]     (default: every stage, in this order)
#
# Stages:
#   base      install the packages (benchmarks/gpu/common.sh: WHEELS=DIR offline), build the synthetic data
#             and the model (build_model.py)
#   zero2     (a) accelerate launch, DeepSpeed ZeRO-2 (accelerate_configs/zero2.yaml), transformers generation
#   colocate  (c) TRL colocate mode (vLLM in the training process, 0.3 of the GPU), ZeRO-2, engine probe
#   colocate_nodetok  the same with detokenize=False (TRL decodes token ids itself; see RESULTS.md)
#   server    (b) python -m math_grpo.launch with recipes/qwen2.5-math-1.5b/grpo_1gpu.yaml: vLLM server on the
#             same GPU (0.35), filesystem weight sync + logprob check, evaluation of 500 problems every
#             EVAL_STEPS steps
#   server_async  the same with async_rollouts (generation of the next batch overlaps this one's training)
#   raw       the raw vLLM engine (benchmarks/gpu/raw_engine.py) on the same prompts and sampling, plus the
#             variants without detokenization / logprobs (raw_variants.json)
#   summary   benchmarks/gpu/summarize.py over everything in RESULTS_DIR
# Stages take 5-10 minutes each (the server's cold start is most of `server`). RESULTS_DIR gets the logs,
# per-step timing jsonl, GPU memory traces and summary.md; knobs: STEPS=6 SERVER_STEPS=6 EVAL_STEPS=3 and
# those of common.sh.
RES=${1:?usage: bash benchmarks/gpu/run_1gpu.sh RESULTS_DIR [STAGE ...]}
shift
source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-6}
SERVER_STEPS=${SERVER_STEPS:-6}
EVAL_STEPS=${EVAL_STEPS:-3}
COMMON=(--model_name_or_path "$MODEL" --dataset_name "$DATA")

stage_zero2() {
  log "zero2: (a) ZeRO-2, transformers generation, $STEPS steps"
  rm -rf "$RUNS/zero2" "$RES/zero2_timing.jsonl"
  monitor "$RES/zero2_gpumem.csv"
  BENCH_TIMING_OUT=$RES/zero2_timing.jsonl timeout -k 30 "$LIMIT" accelerate launch --config_file accelerate_configs/zero2.yaml \
    --num_processes 1 recipes/grpo.py --config benchmarks/gpu/grpo_1gpu.yaml "${COMMON[@]}" \
    --output_dir "$RUNS/zero2" --use_vllm false --generation_kwargs '{"min_new_tokens": 512}' \
    --max_steps "$STEPS" 2>&1 | tee "$RES/zero2.log"
  local rc=$?
  unmonitor
  return $rc
}

run_colocate() {  # NAME GENERATION_KWARGS
  local name=$1 kwargs=$2
  log "$name: (c) TRL colocate, ZeRO-2, $STEPS steps, generation_kwargs $kwargs"
  rm -rf "$RUNS/$name" "$RES/${name}_timing.jsonl"
  monitor "$RES/${name}_gpumem.csv"
  BENCH_ENGINE_PROBE=1 BENCH_TIMING_OUT=$RES/${name}_timing.jsonl timeout -k 30 "$LIMIT" accelerate launch \
    --config_file accelerate_configs/zero2.yaml --num_processes 1 recipes/grpo.py \
    --config benchmarks/gpu/grpo_1gpu.yaml "${COMMON[@]}" --output_dir "$RUNS/$name" \
    --use_vllm true --vllm_mode colocate --generation_kwargs "$kwargs" \
    --max_steps "$STEPS" 2>&1 | tee "$RES/$name.log"
  local rc=$?
  unmonitor
  return $rc
}
stage_colocate() { run_colocate colocate '{"ignore_eos": true}'; }
stage_colocate_nodetok() { run_colocate colocate_nodetok '{"ignore_eos": true, "detokenize": false}'; }

run_server() {  # NAME [EXTRA RECIPE OVERRIDES ...]
  local name=$1
  shift
  log "$name: (b) the launcher, server on the same GPU, filesystem sync, eval every $EVAL_STEPS steps $*"
  rm -rf "$RUNS/$name" "$RES/${name}_timing.jsonl"
  monitor "$RES/${name}_gpumem.csv"
  BENCH_ENGINE_PROBE=1 BENCH_TIMING_OUT=$RES/${name}_timing.jsonl timeout -k 60 "$LIMIT" python3 -m math_grpo.launch \
    --server-gpus 0 --trainer-gpus 0 --accelerate-config accelerate_configs/zero2.yaml \
    recipes/qwen2.5-math-1.5b/grpo_1gpu.yaml "${COMMON[@]}" --output_dir "$RUNS/$name" \
    --per_device_train_batch_size 32 --gradient_accumulation_steps 8 --steps_per_generation 8 \
    --num_generations 8 --max_completion_length 512 --generation_kwargs '{"ignore_eos": true}' \
    --benchmarks synthetic --eval_max_samples 500 --eval_steps "$EVAL_STEPS" --max_steps "$SERVER_STEPS" \
    --report_to none --save_strategy no "$@" 2>&1 | tee "$RES/$name.log"
  local rc=$?
  unmonitor
  cp -f "$RUNS/$name/server.log" "$RES/${name}_vllm.log" 2>/dev/null
  cp -f "$RUNS/$name/metrics.jsonl" "$RES/${name}_metrics.jsonl" 2>/dev/null
  return $rc
}
stage_server() { run_server server; }
# the overlap: the next batch is sampled on the server while this one trains (math_grpo/async_rollouts.py)
stage_server_async() { run_server server_async --async_rollouts true --max_staleness 1; }

stage_raw() {
  log "raw: the vLLM engine alone, same prompts and sampling"
  monitor "$RES/raw_gpumem.csv"
  timeout -k 30 "$LIMIT" python3 benchmarks/gpu/raw_engine.py --model "$MODEL" --data "$DATA/train.jsonl" --out "$RES/raw.json" \
    --gpu-memory-utilization 0.3 --max-model-len 2048 --max-tokens 512 --repeats 2 --large-prompts 64 \
    2>&1 | tee "$RES/raw.log"
  local rc=$?
  timeout -k 30 "$LIMIT" python3 benchmarks/gpu/raw_engine.py --model "$MODEL" --data "$DATA/train.jsonl" \
    --out "$RES/raw_variants.json" --gpu-memory-utilization 0.3 --max-model-len 2048 --max-tokens 512 \
    --repeats 2 --large-prompts 64 --variants 2>&1 | tee "$RES/raw_variants.log"
  local rc2=$?
  unmonitor
  [[ $rc -ne 0 ]] && return "$rc"
  return "$rc2"
}

# Peak trainer memory of the 1.5B recipes as written (fp32 master weights, micro-batch 8 x up to 1024 completion
# tokens, every completion forced to full length), transformers generation in place of the server so the card
# holds the trainer alone: grpo_1gpu.yaml under single_gpu.yaml and grpo_2gpu.yaml's trainer under zero2.yaml
# (one process). The 1-GPU server recipe needs this plus its server share (vllm_gpu_memory_utilization).
run_trainer_memory() {  # NAME ACCELERATE_CONFIG RECIPE
  local name=$1 config=$2 recipe=$3
  log "$name: trainer peak memory, $config, $recipe, 2 steps"
  rm -rf "$RUNS/$name" "$RES/${name}_timing.jsonl"
  monitor "$RES/${name}_gpumem.csv"
  BENCH_TIMING_OUT=$RES/${name}_timing.jsonl timeout -k 30 "$LIMIT" accelerate launch --config_file "$config" \
    --num_processes 1 recipes/grpo.py --config "$recipe" "${COMMON[@]}" --output_dir "$RUNS/$name" \
    --use_vllm false --generation_kwargs '{"min_new_tokens": 1024}' --benchmarks synthetic --eval_backend transformers \
    --eval_max_samples 4 --eval_max_tokens 8 --max_steps 2 \
    --report_to none --save_strategy no 2>&1 | tee "$RES/$name.log"
  local rc=$?
  unmonitor
  return $rc
}
stage_memory_1gpu() { run_trainer_memory memory_1gpu accelerate_configs/single_gpu.yaml recipes/qwen2.5-math-1.5b/grpo_1gpu.yaml; }
stage_memory_2gpu() { run_trainer_memory memory_2gpu accelerate_configs/zero2.yaml recipes/qwen2.5-math-1.5b/grpo_2gpu.yaml; }

(( $# )) || set -- base zero2 colocate colocate_nodetok server server_async raw summary
run_stages "$@"
