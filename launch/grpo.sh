#!/usr/bin/env bash
# GRPO with rollouts (and evaluation) on a vLLM server: start the server the recipe asks for, wait for it,
# train with `accelerate launch recipes/grpo.py`, and always stop the server (exit, error, Ctrl-C, SIGTERM).
#
#   bash launch/grpo.sh [launcher options] RECIPE.yaml [recipe overrides, e.g. --max_steps 10]
#
# Launcher options (dashes; recipe fields use underscores):
#   --server-gpus IDS        GPU ids for the vLLM server, e.g. "1" (default: the last GPU when there are >= 2;
#                            "cpu" or no GPU: the CPU build of vLLM)
#   --trainer-gpus IDS       GPU ids for training (default: the GPUs the server does not use)
#   --port PORT              server port (default: the recipe's vllm_server_port, else 8000)
#   --host HOST              server address (default 127.0.0.1: loopback only)
#   --accelerate-config F    accelerate config (default: cpu.yaml without GPUs, single_gpu.yaml for one
#                            training GPU, zero2.yaml for several; all in accelerate_configs/)
#   --health-timeout S       seconds to wait for the server's /health (default: max(recipe's
#                            vllm_server_timeout, 60); CPU start takes about 90 s)
#   --server-url URL         use a server that is already running (nothing is started or stopped)
#   --kv-cache-bytes N       CPU build: KV cache size (default 512 MiB)
# The server log goes to RUN_DIR/server.log (RUN_DIR: the recipe's output_dir, else output_root/run_name).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}

die() { echo "error: $*" >&2; exit 2; }

SERVER_GPUS="" TRAINER_GPUS="" PORT="" HOST=127.0.0.1 ACC_CONFIG="" HEALTH_TIMEOUT="" SERVER_URL_GIVEN=""
KV_BYTES="" RECIPE="" OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server-gpus) SERVER_GPUS=${2:?--server-gpus needs ids}; shift 2 ;;
    --trainer-gpus) TRAINER_GPUS=${2:?--trainer-gpus needs ids}; shift 2 ;;
    --port) PORT=${2:?--port needs a number}; shift 2 ;;
    --host) HOST=${2:?--host needs an address}; shift 2 ;;
    --accelerate-config) ACC_CONFIG=${2:?--accelerate-config needs a file}; shift 2 ;;
    --health-timeout) HEALTH_TIMEOUT=${2:?--health-timeout needs seconds}; shift 2 ;;
    --server-url) SERVER_URL_GIVEN=${2:?--server-url needs a URL}; shift 2 ;;
    --kv-cache-bytes) KV_BYTES=${2:?--kv-cache-bytes needs a number}; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *)
      if [[ -z "$RECIPE" && "$1" != --* ]]; then RECIPE=$1; else OVERRIDES+=("$1"); fi
      shift ;;
  esac
done
[[ -n "$RECIPE" ]] || die "usage: bash launch/grpo.sh [options] RECIPE.yaml [overrides] (see --help)"
[[ -f "$RECIPE" ]] || die "$RECIPE: recipe file not found"

# GPUs: the server on one set, training on the rest. No GPU (or --server-gpus cpu): everything on CPU.
NUM_GPUS=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  NUM_GPUS=$(nvidia-smi -L | wc -l)
fi
if [[ "$SERVER_GPUS" == "cpu" ]]; then SERVER_GPUS=""
elif [[ -z "$SERVER_GPUS" && $NUM_GPUS -ge 2 ]]; then SERVER_GPUS=$((NUM_GPUS - 1))
fi
if [[ $NUM_GPUS -ge 1 && -z "$TRAINER_GPUS" ]]; then
  TRAINER_GPUS=$(seq -s, 0 $((NUM_GPUS - 1)) | tr ',' '\n' | grep -vxF -f <(tr ',' '\n' <<<"${SERVER_GPUS:-none}") \
    | paste -sd, - || true)
  [[ -n "$TRAINER_GPUS" ]] || die "no GPU left for training (server on $SERVER_GPUS of $NUM_GPUS); pass --trainer-gpus"
fi
NUM_TRAINERS=0
[[ -n "$TRAINER_GPUS" ]] && NUM_TRAINERS=$(tr ',' '\n' <<<"$TRAINER_GPUS" | grep -c .)
if [[ -z "$ACC_CONFIG" ]]; then
  if [[ $NUM_TRAINERS -gt 1 ]]; then ACC_CONFIG=accelerate_configs/zero2.yaml
  elif [[ $NUM_TRAINERS -eq 1 ]]; then ACC_CONFIG=accelerate_configs/single_gpu.yaml
  else ACC_CONFIG=accelerate_configs/cpu.yaml; fi
fi
[[ -f "$ACC_CONFIG" ]] || die "$ACC_CONFIG: accelerate config not found (--accelerate-config)"

# Validate the recipe and this launch before anything heavy starts (one-line errors, exit 2).
VAL_ARGS=(--config "$RECIPE" --host "$HOST" --accelerate-config "$ACC_CONFIG")
[[ -n "$SERVER_GPUS" ]] && VAL_ARGS+=(--server-gpus "$SERVER_GPUS")
[[ -n "$TRAINER_GPUS" ]] && VAL_ARGS+=(--trainer-gpus "$TRAINER_GPUS" --num-processes "$NUM_TRAINERS")
[[ -n "$PORT" ]] && VAL_ARGS+=(--port "$PORT")
[[ -n "$SERVER_URL_GIVEN" ]] && VAL_ARGS+=(--server-running)
URL_OVERRIDE=()
if [[ -n "$SERVER_URL_GIVEN" ]]; then URL_OVERRIDE=(--vllm_server_base_url "$SERVER_URL_GIVEN")
elif [[ -n "$PORT" ]]; then URL_OVERRIDE=(--vllm_server_base_url "http://$HOST:$PORT")
fi
"$PYTHON" -m math_grpo.validation "${VAL_ARGS[@]}" "${OVERRIDES[@]}" "${URL_OVERRIDE[@]}" || exit $?

# What the recipe needs: a server or not, its command, the run dir (fixed here so the log lands in it).
PLAN_ARGS=(plan --config "$RECIPE" --host "$HOST")
[[ -n "$PORT" ]] && PLAN_ARGS+=(--port "$PORT")
[[ -n "$SERVER_GPUS" ]] && PLAN_ARGS+=(--gpus "$SERVER_GPUS")
[[ -n "$KV_BYTES" ]] && PLAN_ARGS+=(--kv-cache-bytes "$KV_BYTES")
PLAN=$("$PYTHON" -m math_grpo.vllm_server "${PLAN_ARGS[@]}" -- "${OVERRIDES[@]}") || exit $?
# Only our assignments: imports may print to stdout.
eval "$(grep -E '^(USE_SERVER|RUN_DIR|SERVER_[A-Z_]+)=' <<<"$PLAN")"
[[ -n "${RUN_DIR:-}" && -n "${USE_SERVER:-}" ]] || die "could not plan the server for $RECIPE: $PLAN"
mkdir -p "$RUN_DIR"
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-$SERVER_HEALTH_TIMEOUT}

SERVER_PID="" TRAIN_PID=""
group_members() {  # processes of the process group led by $1, except the leader itself
  ps -eo pid=,pgid= | awk -v g="$1" '$2 == g && $1 != g {print $1}'
}
group_alive() { ps -eo pgid= | grep -qx " *$1"; }
stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  local pid=$SERVER_PID; SERVER_PID=""
  echo "[launch] stopping the vLLM server (pid $pid)" >&2
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 75); do group_alive "$pid" || return 0; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
stop_trainer() {
  # `accelerate launch` does not forward signals: signal its children (the training processes) directly; they
  # save a checkpoint at the end of the current step on SIGTERM, then the launcher exits with them.
  [[ -n "$TRAIN_PID" ]] || return 0
  local pid=$TRAIN_PID; TRAIN_PID=""
  local members; members=$(group_members "$pid")
  [[ -n "$members" ]] && kill -TERM $members 2>/dev/null
  local limit=$(( ${TRAIN_STOP_TIMEOUT:-300} * 5 ))
  for _ in $(seq 1 "$limit"); do group_alive "$pid" || return 0; sleep 0.2; done
  echo "[launch] training did not stop within ${TRAIN_STOP_TIMEOUT:-300} s: killing it" >&2
  kill -KILL -- "-$pid" 2>/dev/null || true
}
cleanup() { stop_trainer; stop_server; }
on_signal() {
  echo "[launch] got SIG$1: stopping training (checkpoint at the end of the step), then the server" >&2
  trap - EXIT INT TERM
  cleanup
  [[ $1 == INT ]] && exit 130 || exit 143
}
trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

EXTRA=()
if [[ "$USE_SERVER" == 1 ]]; then
  if [[ -n "$SERVER_URL_GIVEN" ]]; then
    SERVER_URL=$SERVER_URL_GIVEN
    "$PYTHON" -m math_grpo.vllm_server wait --url "$SERVER_URL" --timeout "$HEALTH_TIMEOUT" || exit $?
  else
    LOG="$RUN_DIR/server.log"
    echo "[launch] starting the vLLM server (${SERVER_GPUS:+GPUs $SERVER_GPUS}${SERVER_GPUS:-CPU build}) for $SERVER_MODEL at $SERVER_URL; log: $LOG"
    echo "\$ ${SERVER_CMD[*]}" >>"$LOG"
    if [[ -n "$SERVER_GPUS" ]]; then
      VLLM_SERVER_DEV_MODE=1 CUDA_VISIBLE_DEVICES=$SERVER_GPUS setsid "${SERVER_CMD[@]}" >>"$LOG" 2>&1 &
    else
      VLLM_SERVER_DEV_MODE=1 CUDA_VISIBLE_DEVICES="" setsid "${SERVER_CMD[@]}" >>"$LOG" 2>&1 &
    fi
    SERVER_PID=$!
    "$PYTHON" -m math_grpo.vllm_server wait --url "$SERVER_URL" --timeout "$HEALTH_TIMEOUT" --pid "$SERVER_PID" \
      --log "$LOG" || exit $?
  fi
  EXTRA=(--vllm_server_base_url "$SERVER_URL")
fi

ACC_ARGS=(--config_file "$ACC_CONFIG")
if [[ -n "$TRAINER_GPUS" ]]; then
  export CUDA_VISIBLE_DEVICES=$TRAINER_GPUS
  ACC_ARGS+=(--num_processes "$NUM_TRAINERS")
else
  # CPU training beside a CPU server and reward workers: one math thread per process. With more, OpenMP
  # threads spin against each other on a small machine (seen: a tiny model's forward 5x slower at 2 threads).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
ACCELERATE=(accelerate)
command -v accelerate >/dev/null 2>&1 || ACCELERATE=("$PYTHON" -m accelerate.commands.launch)
[[ ${ACCELERATE[0]} == accelerate ]] && ACCELERATE+=(launch)
echo "[launch] training: accelerate launch ${ACC_ARGS[*]} recipes/grpo.py --config $RECIPE (run dir $RUN_DIR)"
# Its own process group, so a signal to this script reaches every training process exactly once.
setsid "${ACCELERATE[@]}" "${ACC_ARGS[@]}" "$REPO/recipes/grpo.py" --config "$RECIPE" "${OVERRIDES[@]}" \
  --output_dir "$RUN_DIR" "${EXTRA[@]}" &
TRAIN_PID=$!
set +e
wait "$TRAIN_PID"
RC=$?
set -e
TRAIN_PID=""
if [[ $RC -ne 0 && -n "$SERVER_PID" ]] && ! group_alive "$SERVER_PID"; then
  echo "error: the vLLM server died during training; see $RUN_DIR/server.log" >&2
fi
exit $RC
