#!/usr/bin/env bash
# Issue 7 on one H100: GRPO with a random Qwen2.5-Math-1.5B-shaped model, three ways, each timed per step.
#
#   bash benchmarks/gpu/run_1gpu.sh STAGE [STAGE ...]     (stages run in the order given)
#
# Stages:
#   base      install the carried wheels without vLLM (.gpuwheels/part4 + part5: TRL, datasets, DeepSpeed,
#             math-verify, ...) into /tmp/site, then build the synthetic data and the model (build_model.py)
#   zero2     (a) accelerate launch, DeepSpeed ZeRO-2 (accelerate_configs/zero2.yaml), transformers generation
#   vllm      join and install vLLM 0.26 (/tmp/wheels/vllm.part.00-01 from earlier calls + .gpuwheels/part3)
#   colocate  (c) TRL colocate mode (vLLM in the training process, 0.3 of the GPU), ZeRO-2, engine probe
#   colocate_nodetok  the same with detokenize=False (TRL decodes token ids itself; see RESULTS.md)
#   server    (b) launch/grpo.sh with recipes/qwen2.5-math-1.5b/grpo_1gpu.yaml: vLLM server on the same GPU
#             (0.35), filesystem weight sync + logprob check, evaluation of 500 problems every EVAL_STEPS steps
#   raw       the raw vLLM engine (benchmarks/gpu/raw_engine.py) on the same prompts and sampling, plus the
#             variants without detokenization / logprobs (raw_variants.json)
#   summary   benchmarks/gpu/summarize.py over everything measured so far on this machine
#
# The device tool carries 64 MiB a call, so vLLM comes in four calls, back to back on one warm machine:
#   1. carry [.gpuwheels/part4, .gpuwheels/part5]:  bash benchmarks/gpu/run_1gpu.sh base zero2 summary
#   2. carry [.gpuwheels/part1]:  mkdir -p /tmp/wheels && cp .gpuwheels/part1/* /tmp/wheels/
#   3. carry [.gpuwheels/part2]:  the same with part2
#   4. carry [.gpuwheels/part3]:  bash benchmarks/gpu/run_1gpu.sh vllm colocate summary
#   5. (nothing to carry):        bash benchmarks/gpu/run_1gpu.sh server summary
#   6. (nothing to carry):        bash benchmarks/gpu/run_1gpu.sh raw summary
#   7. (nothing to carry):        bash benchmarks/gpu/run_1gpu.sh colocate_nodetok summary
# Each of calls 1, 4-7 takes 5-10 minutes. A machine is given back after 30 minutes held, whatever happens, so
# the whole sequence does not fit one machine: after call 5, expect to start again from call 1 (base only).
# Results: /tmp/bench/results on the machine, copied to $OUT (logs, per-step timing jsonl, GPU memory csv).
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
OUT=${OUT:-/tmp/bench/out}
B=/tmp/bench
RES=$B/results
DATA=$B/data
MODEL=$B/model
STEPS=${STEPS:-6}
SERVER_STEPS=${SERVER_STEPS:-6}   # 6 steps + a cold server start fit one 10-minute call
EVAL_STEPS=${EVAL_STEPS:-3}
LIMIT=${LIMIT:-540}  # seconds per training/engine command: a slow stage still leaves its results
mkdir -p "$RES" "$B/runs" "$OUT"
export PYTHONPATH=/tmp/site:$REPO:$REPO/benchmarks/gpu/hook
export PYTHON=python3 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 WANDB_MODE=disabled TQDM_DISABLE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PIP=(python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check)

log() { echo "[bench $(date -u +%H:%M:%S)] $*"; }
MON_PID=""
monitor() {  # GPU memory (MiB) and utilisation every 0.5 s while a stage runs
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits -lms 500 >"$1" &
  MON_PID=$!
}
unmonitor() { [[ -n "$MON_PID" ]] && kill "$MON_PID" 2>/dev/null; wait "$MON_PID" 2>/dev/null; MON_PID=""; }
save() { cp -f "$@" "$OUT/" 2>/dev/null || true; }

stage_base() {
  log "base: installing part4 + part5 wheels (no vLLM) into /tmp/site"
  mkdir -p /tmp/wheels
  cp .gpuwheels/part4/* .gpuwheels/part5/* /tmp/wheels/ || return 1
  "${PIP[@]}" --target /tmp/site /tmp/wheels/*.whl || return 1
  (cd /tmp && "${PIP[@]}" --no-build-isolation --upgrade --target /tmp/site /tmp/wheels/deepspeed-*.tar.gz) || return 1
  python3 -c "import trl, datasets, deepspeed, math_verify, torch, transformers; print('trl', trl.__version__, \
'datasets', datasets.__version__, 'deepspeed', deepspeed.__version__, 'torch', torch.__version__, \
'transformers', transformers.__version__)" | tee "$RES/versions_base.txt" || return 1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$RES/gpu.txt"
  if [[ ! -f $MODEL/model.safetensors ]]; then
    python3 -m math_grpo.synthetic --out "$DATA" --n_sft 0 --n_train 4000 --n_test 500 || return 1
    python3 benchmarks/gpu/build_model.py --data "$DATA" --out "$MODEL" || return 1
  fi
  cp "$MODEL/build_info.json" "$RES/" 2>/dev/null
}

COMMON=(--model_name_or_path "$MODEL" --dataset_name "$DATA")

stage_zero2() {
  log "zero2: (a) ZeRO-2, transformers generation, $STEPS steps"
  rm -rf "$B/runs/zero2" "$RES/zero2_timing.jsonl"
  monitor "$RES/zero2_gpumem.csv"
  BENCH_TIMING_OUT=$RES/zero2_timing.jsonl timeout -k 30 "$LIMIT" accelerate launch --config_file accelerate_configs/zero2.yaml \
    --num_processes 1 recipes/grpo.py --config benchmarks/gpu/grpo_1gpu.yaml "${COMMON[@]}" \
    --output_dir "$B/runs/zero2" --use_vllm false --generation_kwargs '{"min_new_tokens": 512}' \
    --max_steps "$STEPS" 2>&1 | tee "$RES/zero2.log"
  local rc=$?
  unmonitor
  return $rc
}

stage_vllm() {
  log "vllm: joining and installing vLLM 0.26"
  cp .gpuwheels/part3/* /tmp/wheels/ || return 1
  local whl=/tmp/wheels/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl
  cat /tmp/wheels/vllm.part.00 /tmp/wheels/vllm.part.01 /tmp/wheels/vllm.part.02 >"$whl" || return 1
  "${PIP[@]}" --target /tmp/site "$whl" /tmp/wheels/mistral_common-*.whl /tmp/wheels/pycountry-*.whl || return 1
  rm -f /tmp/wheels/vllm.part.*
  python3 -c "import vllm, trl; print('vllm', vllm.__version__, 'trl', trl.__version__)" | tee "$RES/versions_vllm.txt"
}

run_colocate() {  # NAME GENERATION_KWARGS
  local name=$1 kwargs=$2
  log "$name: (c) TRL colocate, ZeRO-2, $STEPS steps, generation_kwargs $kwargs"
  rm -rf "$B/runs/$name" "$RES/${name}_timing.jsonl"
  monitor "$RES/${name}_gpumem.csv"
  BENCH_ENGINE_PROBE=1 BENCH_TIMING_OUT=$RES/${name}_timing.jsonl timeout -k 30 "$LIMIT" accelerate launch \
    --config_file accelerate_configs/zero2.yaml --num_processes 1 recipes/grpo.py \
    --config benchmarks/gpu/grpo_1gpu.yaml "${COMMON[@]}" --output_dir "$B/runs/$name" \
    --use_vllm true --vllm_mode colocate --generation_kwargs "$kwargs" \
    --max_steps "$STEPS" 2>&1 | tee "$RES/$name.log"
  local rc=$?
  unmonitor
  return $rc
}
stage_colocate() { run_colocate colocate '{"ignore_eos": true}'; }
stage_colocate_nodetok() { run_colocate colocate_nodetok '{"ignore_eos": true, "detokenize": false}'; }

stage_server() {
  log "server: (b) launch/grpo.sh, server on the same GPU, filesystem sync, eval every $EVAL_STEPS steps"
  rm -rf "$B/runs/server" "$RES/server_timing.jsonl"
  monitor "$RES/server_gpumem.csv"
  BENCH_ENGINE_PROBE=1 BENCH_TIMING_OUT=$RES/server_timing.jsonl timeout -k 60 "$LIMIT" bash launch/grpo.sh \
    --server-gpus 0 --trainer-gpus 0 --accelerate-config accelerate_configs/zero2.yaml \
    recipes/qwen2.5-math-1.5b/grpo_1gpu.yaml "${COMMON[@]}" --output_dir "$B/runs/server" \
    --per_device_train_batch_size 32 --gradient_accumulation_steps 8 --steps_per_generation 8 \
    --num_generations 8 --max_completion_length 512 --generation_kwargs '{"ignore_eos": true}' \
    --benchmarks synthetic --eval_max_samples 500 --eval_steps "$EVAL_STEPS" --max_steps "$SERVER_STEPS" \
    --report_to none --save_strategy no 2>&1 | tee "$RES/server.log"
  local rc=$?
  unmonitor
  cp -f "$B/runs/server/server.log" "$RES/server_vllm.log" 2>/dev/null
  cp -f "$B/runs/server/metrics.jsonl" "$RES/server_metrics.jsonl" 2>/dev/null
  return $rc
}

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

stage_summary() {
  python3 benchmarks/gpu/summarize.py "$RES" --out "$RES/summary.json" --markdown "$RES/summary.md"
}

rc=0
for stage in "$@"; do
  t0=$(date +%s)
  "stage_$stage"
  src=$?
  log "$stage: exit $src after $(( $(date +%s) - t0 )) s"
  [[ $src -ne 0 ]] && rc=$src
  [[ $src -ne 0 && $stage == base ]] && break
done
# Back to this machine: at most 8 files; the whole results folder as one archive plus the summary.
tar -C "$B" -czf "$OUT/results.tgz" results 2>/dev/null
save "$RES/summary.md" "$RES/summary.json"
exit $rc
