# Set-up shared by run_1gpu.sh and run_2gpu.sh (sourced, not run). Expects RES (the results folder) to be set.
#
# Environment knobs:
#   WORK=/tmp/math-grpo-bench   scratch: the synthetic data, the random-weight model, run dirs
#   WHEELS=DIR                  offline machine: install every package from this folder of wheels (pip
#                               --no-index --find-links DIR; fill it beforehand on a connected machine with
#                               `pip download -d DIR` of the packages below); without it pip uses its index
#   SKIP_INSTALL=1              the environment already has trl 1.16, vllm, deepspeed, datasets, math-verify
#   LIMIT=540                   seconds per training or engine command (a stuck stage still leaves its logs)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$(pwd)
WORK=${WORK:-/tmp/math-grpo-bench}
DATA=$WORK/data
MODEL=$WORK/model
RUNS=$WORK/runs
LIMIT=${LIMIT:-540}
mkdir -p "$RES" "$RUNS"
RES=$(cd "$RES" && pwd)
export PYTHONPATH=$REPO:$REPO/benchmarks/gpu/hook${PYTHONPATH:+:$PYTHONPATH}  # keeps a --target install
export PYTHON=python3 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 WANDB_MODE=disabled TQDM_DISABLE=1
# NVLink multicast (NVLS) off, as on the hosts these numbers come from: some virtualised multi-GPU hosts hang
# in NCCL set-up with it. Remove on a host where NVLS works.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# Versions measured (benchmarks/RESULTS.md); vLLM 0.26 is the build that matches torch 2.11 + CUDA 13.
PACKAGES=("trl==1.16.0" "vllm==0.26.0" "deepspeed==0.19.8" "datasets==5.2.0" "math-verify==0.9.0"
  "latex2sympy2-extended==1.11.0" hjson)

log() { echo "[bench $(date -u +%H:%M:%S)] $*"; }
MON_PID=""
monitor() {  # GPU index, memory (MiB) and utilisation every 0.5 s while a stage runs
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu,index --format=csv,noheader,nounits -lms 500 >"$1" &
  MON_PID=$!
}
unmonitor() { [[ -n "$MON_PID" ]] && kill "$MON_PID" 2>/dev/null; wait "$MON_PID" 2>/dev/null; MON_PID=""; }

stage_base() {  # install (unless SKIP_INSTALL), record versions and the GPU, build data and model once
  if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
    local src=()
    [[ -n "${WHEELS:-}" ]] && src=(--no-index --find-links "$WHEELS")
    log "base: installing ${PACKAGES[*]}${WHEELS:+ from $WHEELS}, keeping the installed torch"
    python3 -c "import torch; print('torch==' + torch.__version__)" >"$WORK/constraints.txt" || return 1
    python3 -m pip install -q --disable-pip-version-check "${src[@]}" -c "$WORK/constraints.txt" \
      "${PACKAGES[@]}" || return 1
  fi
  python3 -c "import trl, vllm, datasets, deepspeed, math_verify, torch, transformers; print('trl', trl.__version__, \
'vllm', vllm.__version__, 'datasets', datasets.__version__, 'deepspeed', deepspeed.__version__, \
'torch', torch.__version__, 'transformers', transformers.__version__)" | tee "$RES/versions.txt" || return 1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$RES/gpu.txt"
  if [[ ! -f $MODEL/model.safetensors ]]; then
    python3 -m math_grpo.synthetic --out "$DATA" --n_sft 0 --n_train 4000 --n_test 500 || return 1
    python3 benchmarks/gpu/build_model.py --data "$DATA" --out "$MODEL" || return 1
  fi
  cp "$MODEL/build_info.json" "$RES/" 2>/dev/null
}

stage_summary() {
  python3 benchmarks/gpu/summarize.py "$RES" --out "$RES/summary.json" --markdown "$RES/summary.md"
}

run_stages() {  # STAGE...: each in order, timed; a failed base stops the rest
  local rc=0 src t0 stage
  for stage in "$@"; do
    t0=$(date +%s)
    "stage_$stage"
    src=$?
    log "$stage: exit $src after $(( $(date +%s) - t0 )) s"
    [[ $src -ne 0 ]] && rc=$src
    [[ $src -ne 0 && $stage == base ]] && break
  done
  log "results in $RES"
  return $rc
}
