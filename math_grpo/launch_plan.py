"""What a GRPO launch needs, worked out from its recipe: parse it once, then plan the server and the run dir.

`parse_recipe_for_launch` parses a recipe outside `accelerate launch` (so TRL cannot judge the batch sizes for
one process: `recipe_checks.generation_sizes` asks TRL's own `GRPOConfig` for the real world size later);
`plan_launch` turns the parsed recipe into a `LaunchPlan`: the run dir, whether a vLLM server is needed, and the
`ServerSpec` to start it with. `python -m math_grpo.launch` (every launch, the Slurm script's roles included)
uses both in-process; this module has no command line of its own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from trl import GRPOConfig, ModelConfig

from math_grpo.cli import parse_recipe
from math_grpo.configs import DEFAULT_SFT_CHECKPOINT, GRPOScriptArguments, resolve_run_dir, uses_server
from math_grpo.errors import ConfigError, MathGRPOError
from math_grpo.launch_checks import visible_gpu_count
from math_grpo.vllm_server import DEFAULT_HOST, DEFAULT_PORT, ServerSpec, max_model_len_for

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
                port: int | None = None, gpus: str | None = None, kv_cache_bytes: int | None = None,
                tensor_parallel: int | None = None, max_model_len: int | None = None,
                extra_args: Sequence[str] = ()) -> LaunchPlan:
    """The run dir and the server a parsed GRPO recipe needs (`gpus` None: the CPU build of vLLM;
    `tensor_parallel` None: one shard per GPU; `extra_args`: more `vllm serve` arguments, e.g. data parallel)."""
    run_dir = os.path.abspath(resolve_run_dir(script_args, training_args))
    model = model_args.model_name_or_path
    max_len = max_model_len or training_args.vllm_max_model_length or max_model_len_for(
        model, training_args.max_completion_length, script_args.eval_max_tokens, script_args.benchmarks,
        prompt_budget=script_args.max_prompt_length)
    # float32 on CPU: the server then matches the float32 trainer to about 1e-6 (the sync check's floor).
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else ("float32" if gpus is None else "auto")
    spec = ServerSpec(model=model, host=host, port=port or training_args.vllm_server_port or DEFAULT_PORT,
                      dtype=dtype, max_model_len=max_len, gpus=gpus,
                      gpu_memory_utilization=training_args.vllm_gpu_memory_utilization,
                      kv_cache_bytes=kv_cache_bytes, weight_transfer=script_args.weight_sync_backend == "nccl",
                      tensor_parallel=tensor_parallel, extra_args=list(extra_args))
    return LaunchPlan(run_dir=run_dir, use_server=uses_server(training_args), spec=spec,
                      health_timeout=max(float(training_args.vllm_server_timeout or 0), 60.0))


def check_summary(recipe: str, world: int, script_args: GRPOScriptArguments, training_args: Any,
                  model_args: Any) -> str:
    mode = f"vllm {training_args.vllm_mode}" if training_args.use_vllm else "transformers generation"
    return (f"config ok: {recipe}: {world} training process(es), {mode}, "
            f"weight_sync_backend={script_args.weight_sync_backend}, model={model_args.model_name_or_path}")
