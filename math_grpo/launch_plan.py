"""What a GRPO launch needs, worked out from its recipe: parse it once, then plan the server and the run dir.

`parse_recipe_for_launch` parses a recipe outside `accelerate launch` (so TRL cannot judge the batch sizes for
one process); `plan_launch` turns the parsed recipe into a `LaunchPlan`: the run dir, whether a vLLM server
is needed, and the `ServerSpec` to start it with. `python -m math_grpo.launch` uses both in-process.

The Slurm script (launch/slurm/grpo.sbatch), which starts server and trainers on different nodes, uses the
same code through a small CLI:

    python -m math_grpo.launch_plan plan --config RECIPE.yaml [--host H] [--port P] [--gpus 0,1] [-- overrides]
    python -m math_grpo.launch_plan check --config RECIPE.yaml [--num-processes N] [--num-machines M] ...
    python -m math_grpo.launch_plan wait --url URL --timeout 600 [--pid PID] [--log server.log]

`plan` prints shell assignments (USE_SERVER, RUN_DIR, SERVER_URL, SERVER_MODEL, SERVER_CMD as an array);
`check` exits 0 with a one-line summary or 2 with `error: <one line>`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from trl import GRPOConfig, ModelConfig

from math_grpo.cli import parse_recipe, run_cli
from math_grpo.configs import DEFAULT_SFT_CHECKPOINT, GRPOScriptArguments, resolve_run_dir, uses_server
from math_grpo.errors import ConfigError, MathGRPOError
from math_grpo.launch_checks import parse_gpu_ids, validate_launch, visible_gpu_count
from math_grpo.vllm_server import DEFAULT_HOST, DEFAULT_PORT, ServerSpec, VLLMServerClient, max_model_len_for

_BATCH_KEYS = ("generation_batch_size", "steps_per_generation")


def _split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Take --generation_batch_size / --steps_per_generation (either spelling) out of the overrides."""
    rest: list[str] = []
    taken: dict[str, str] = {}
    i = 0
    while i < len(overrides):
        arg = overrides[i]
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if key in _BATCH_KEYS:
            if "=" in arg:
                taken[key] = arg.split("=", 1)[1]
                i += 1
            else:
                taken[key] = overrides[i + 1] if i + 1 < len(overrides) else ""
                i += 2
            continue
        rest.append(arg)
        i += 1
    return rest, taken


def _override_value(overrides: Sequence[str], key: str) -> str | None:
    value = None
    for i, arg in enumerate(overrides):
        if arg == f"--{key}" and i + 1 < len(overrides):
            value = overrides[i + 1]
        elif arg.startswith(f"--{key}="):
            value = arg.split("=", 1)[1]
    return value


def _as_int(value: Any, field_name: str, config: str) -> int | None:
    if value is None or str(value).lower() in ("none", "null", ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError([f"{config}: {field_name} must be an integer, got {value!r}"]) from None


def parse_recipe_for_launch(config: str, overrides: Sequence[str] = ()) -> tuple[Any, Any, Any]:
    """Parse a GRPO recipe outside `accelerate launch` without TRL judging its batch sizes for 1 process.

    `GRPOConfig.__post_init__` derives (and checks) the generation batch for the world size it sees, which
    outside the launch is 1: a recipe right for 7 processes could fail, one wrong for 7 could pass. So the
    parse here neutralises that (steps_per_generation = num_generations makes any batch whole) and puts the
    user's own `generation_batch_size` / `steps_per_generation` (or None: derived) back for our check.
    """
    rest, taken = _split_overrides(overrides)
    raw: dict[str, Any] = {}
    try:
        with open(config, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
        raw = loaded if isinstance(loaded, dict) else {}
    except (OSError, yaml.YAMLError):
        pass  # parse_recipe below reports it in one line
    user = {k: taken.get(k, raw.get(k)) for k in _BATCH_KEYS}
    ng = _override_value(rest, "num_generations") or raw.get("num_generations") or \
        GRPOConfig.__dataclass_fields__["num_generations"].default
    tmp = None
    path = config
    if any(k in raw for k in _BATCH_KEYS):
        fd, tmp = tempfile.mkstemp(suffix=".yaml", prefix="recipe-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump({k: v for k, v in raw.items() if k not in _BATCH_KEYS}, f)
        path = tmp
    try:
        script_args, training_args, model_args = parse_recipe(
            (GRPOScriptArguments, GRPOConfig, ModelConfig),
            ["--config", path, *rest, "--steps_per_generation", str(max(1, _as_int(ng, "num_generations", config)))])
    except MathGRPOError as exc:
        msg = str(exc).replace(path, config)
        if "bf16/gpu" in msg and visible_gpu_count() == 0:
            msg = (f"{config}: bf16 needs a GPU and none is visible here; validate on the GPU node, or on CPU "
                   f"pass --bf16 false --use_cpu true (and --gradient_checkpointing false)")
        raise ConfigError([msg]) from None
    finally:
        if tmp is not None:
            os.unlink(tmp)
    training_args.generation_batch_size = _as_int(user["generation_batch_size"], "generation_batch_size", config)
    training_args.steps_per_generation = _as_int(user["steps_per_generation"], "steps_per_generation", config)
    if training_args.generation_batch_size is not None and training_args.steps_per_generation is not None:
        raise ConfigError([f"{config}: generation_batch_size and steps_per_generation are both set; TRL accepts "
                           f"only one of them (the other is derived)"])
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = DEFAULT_SFT_CHECKPOINT
    return script_args, training_args, model_args



@dataclass
class LaunchPlan:
    run_dir: str  # absolute
    use_server: bool
    spec: ServerSpec
    health_timeout: float  # seconds to wait for /health: max(vllm_server_timeout, 60)


def plan_launch(script_args: GRPOScriptArguments, training_args: Any, model_args: Any, host: str = DEFAULT_HOST,
                port: int | None = None, gpus: str | None = None, kv_cache_bytes: int | None = None) -> LaunchPlan:
    """The run dir and the server a parsed GRPO recipe needs (`gpus` None: the CPU build of vLLM)."""
    run_dir = os.path.abspath(resolve_run_dir(script_args, training_args))
    model = model_args.model_name_or_path
    max_len = training_args.vllm_max_model_length or max_model_len_for(
        model, training_args.max_completion_length, script_args.eval_max_tokens, script_args.benchmarks,
        prompt_budget=script_args.max_prompt_length)
    # float32 on CPU: the server then matches the float32 trainer to about 1e-6 (the sync check's floor).
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else ("float32" if gpus is None else "auto")
    spec = ServerSpec(model=model, host=host, port=port or training_args.vllm_server_port or DEFAULT_PORT,
                      dtype=dtype, max_model_len=max_len, gpus=gpus,
                      gpu_memory_utilization=training_args.vllm_gpu_memory_utilization,
                      kv_cache_bytes=kv_cache_bytes, weight_transfer=script_args.weight_sync_backend == "nccl")
    return LaunchPlan(run_dir=run_dir, use_server=uses_server(training_args), spec=spec,
                      health_timeout=max(float(training_args.vllm_server_timeout or 0), 60.0))


def check_summary(recipe: str, world: int, script_args: GRPOScriptArguments, training_args: Any,
                  model_args: Any) -> str:
    mode = f"vllm {training_args.vllm_mode}" if training_args.use_vllm else "transformers generation"
    return (f"config ok: {recipe}: {world} training process(es), {mode}, "
            f"weight_sync_backend={script_args.weight_sync_backend}, model={model_args.model_name_or_path}")


# ---------------------------------------------------------------------------------------------------------
# CLI for the Slurm script
# ---------------------------------------------------------------------------------------------------------


def _cmd_plan(args: argparse.Namespace, overrides: list[str]) -> None:
    plan = plan_launch(*parse_recipe_for_launch(args.config, overrides), host=args.host, port=args.port,
                       gpus=args.gpus or None, kv_cache_bytes=args.kv_cache_bytes)
    spec = plan.spec
    if spec.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"[plan] the vLLM server will listen on {spec.host}:{spec.port}, not loopback only: its weight-update "
              "endpoints are open to whoever reaches that address", file=sys.stderr, flush=True)
    print(f"USE_SERVER={int(plan.use_server)}")
    print(f"RUN_DIR={shlex.quote(plan.run_dir)}")
    print(f"SERVER_URL={shlex.quote(spec.url)}")
    print(f"SERVER_PORT={spec.port}")
    print(f"SERVER_MODEL={shlex.quote(spec.model)}")
    print(f"SERVER_HEALTH_TIMEOUT={int(plan.health_timeout)}")
    print(f"SERVER_CMD=({' '.join(shlex.quote(c) for c in spec.command())})")


def _cmd_check(args: argparse.Namespace, overrides: list[str]) -> None:
    parsed = parse_recipe_for_launch(args.config, overrides)
    world = validate_launch(
        *parsed, server_gpus=parse_gpu_ids(args.server_gpus, "--server-gpus"),
        trainer_gpus=parse_gpu_ids(args.trainer_gpus, "--trainer-gpus"), port=args.port, host=args.host,
        accelerate_config=args.accelerate_config, num_processes=args.num_processes, num_machines=args.num_machines,
        max_model_len=args.max_model_len, check_port=not (args.no_port_check or args.server_running))
    print(check_summary(args.config, world, *parsed), flush=True)


def _cmd_wait(args: argparse.Namespace, overrides: list[str]) -> None:
    waited = VLLMServerClient(args.url).wait_until_healthy(args.timeout, pid=args.pid, log_path=args.log)
    print(f"[server] {args.url} healthy after {waited:.0f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m math_grpo.launch_plan", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="cmd", required=True)
    plan = sub.add_parser("plan", help="print shell assignments: the run dir and the server a recipe needs")
    check = sub.add_parser("check", help="check a recipe and its launch set-up (exit 2 on a problem)")
    for p in (plan, check):
        p.add_argument("--config", required=True, help="the GRPO recipe YAML")
        p.add_argument("--host", default=DEFAULT_HOST)
        p.add_argument("--port", type=int, default=None)
    plan.add_argument("--gpus", default="", help="server GPU ids (empty: the CPU build)")
    plan.add_argument("--kv-cache-bytes", type=int, default=None)
    check.add_argument("--server-gpus", default="", help="CUDA ids of the vLLM server ('' = CPU build)")
    check.add_argument("--trainer-gpus", default="", help="CUDA ids of the training processes ('' = CPU)")
    check.add_argument("--accelerate-config", default=None, help="the accelerate config file of the launch")
    check.add_argument("--num-processes", type=int, default=None, help="accelerate --num_processes (total)")
    check.add_argument("--num-machines", type=int, default=None, help="accelerate --num_machines")
    check.add_argument("--max-model-len", type=int, default=None, help="the server's --max-model-len")
    check.add_argument("--no-port-check", action="store_true", help="skip the free-port check")
    check.add_argument("--server-running", action="store_true", help="the server is up (implies --no-port-check)")
    wait = sub.add_parser("wait", help="wait for the server's /health")
    wait.add_argument("--url", required=True)
    wait.add_argument("--timeout", type=float, default=600.0)
    wait.add_argument("--pid", type=int, default=None, help="fail early when this process (the server) exits")
    wait.add_argument("--log", default=None, help="the server log, quoted on failure")
    args, overrides = parser.parse_known_args(argv)
    overrides = [o for o in overrides if o != "--"]
    if args.cmd == "wait" and overrides:
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    {"plan": _cmd_plan, "check": _cmd_check, "wait": _cmd_wait}[args.cmd](args, overrides)


if __name__ == "__main__":
    run_cli(main)
