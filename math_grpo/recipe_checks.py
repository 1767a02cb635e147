"""Cross-field checks of a GRPO recipe, run before anything heavy starts.

Most failed GRPO launches are configuration errors that would otherwise surface minutes later, after the
model loaded and the server warmed up, as an NCCL hang, an OOM or a vLLM 400: a batch that does not hold
whole prompt groups, a server context shorter than prompt + completion, NCCL sync without GPUs, a model or
benchmark path that does not exist. Each check names the fields at fault and the fix, in one line.

A single field's own rules (allowed values, positive counts) are checked where the field is declared, in
`math_grpo.configs`; the launch itself (GPU sets, port, accelerate config) in `math_grpo.launch_checks`.
The batch sizes are TRL's own: `generation_sizes` runs `GRPOConfig`'s post-init for the launch's world size.
`validate_grpo_config` runs in `recipes/grpo.py` on every rank and in the launcher before it starts anything.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

from math_grpo.configs import VLLM_MODES, GRPOScriptArguments, uses_server
from math_grpo.errors import ConfigError, MathGRPOError
from math_grpo.evaluation import resolve_benchmark
from math_grpo.models import looks_local

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_DATA_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")


def looks_like_hub_id(name: str) -> bool:
    """'org/name' or 'name' that is not meant as a path: not `math_grpo.models.looks_local` and id-shaped."""
    return not looks_local(name) and bool(_HUB_ID.match(name)) and not name.endswith(_DATA_EXTENSIONS)


def _check_model(path: str | None, problems: list[str]) -> None:
    if not path:
        problems.append("model_name_or_path: not set; give a hub id or the SFT checkpoint folder "
                        "(default results/checkpoints/checkpoint_6000)")
        return
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            problems.append(f"model_name_or_path: {path} has no config.json (not a saved model); point it at a "
                            f"checkpoint folder written by save_pretrained")
        return
    if os.path.exists(path):
        problems.append(f"model_name_or_path: {path} is a file; it must be a model folder or a hub id")
        return
    if not looks_like_hub_id(path):
        problems.append(f"model_name_or_path: {path} does not exist (a local path, not a hub id); run "
                        f"recipes/sft.py to make the SFT checkpoint or pass --model_name_or_path")


def _check_dataset(name: str | None, problems: list[str]) -> None:
    if not name:
        problems.append("dataset_name: not set; give a hub id, a local .jsonl/.json/.parquet file or folder")
        return
    path = name.split(":", 1)[1] if name.startswith("synthetic:") else name
    if name.startswith("synthetic:"):
        return  # the demo's data folder; created on demand by the demo
    if os.path.exists(path):
        if os.path.isfile(path) and not os.access(path, os.R_OK):
            problems.append(f"dataset_name: {path} is not readable")
        return
    if not looks_like_hub_id(path):
        problems.append(f"dataset_name: {path} does not exist (a local path, not a hub id)")


def _readable(path: str) -> bool:
    if os.path.isdir(path):
        return os.access(path, os.R_OK | os.X_OK)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError:
        return False
    return True


def _check_benchmarks(entries: Sequence[str], dataset_name: str | None, problems: list[str]) -> None:
    for entry in entries:
        path = None
        if "=" in entry:
            name, path = (s.strip() for s in entry.split("=", 1))
            if not name or not path:
                problems.append(f"benchmarks: {entry!r} must be NAME=PATH")
                continue
        elif not looks_like_hub_id(entry) or os.path.exists(entry):
            path = entry
        if path is not None:
            if not os.path.exists(path):
                problems.append(f"benchmarks: {entry}: {path} does not exist; fix the path or drop the entry")
            elif not _readable(path):
                problems.append(f"benchmarks: {entry}: {path} is not readable")
            continue
        try:
            resolve_benchmark(entry, dataset_name)
        except (MathGRPOError, ValueError) as exc:
            problems.append(str(exc) if str(exc).startswith("benchmarks") else f"benchmarks: {exc}")


def generation_sizes(training_args: Any, world_size: int) -> tuple[int | None, int | None]:
    """(generation_batch_size, steps_per_generation) for `world_size` training processes, as TRL's own
    `GRPOConfig.__post_init__` derives them (not a copy of its formulas: `_trl_config_at` runs it).

    A config TRL already derived for this world size is read as it is. Otherwise the user's own fields go in (a
    field left `None` is derived); when both are set by TRL's post-init for another world size (a recipe parsed
    outside the launch), `steps_per_generation` (TRL's default path, from `gradient_accumulation_steps`) is
    taken as the intent and the batch derived again. A size TRL cannot derive comes back `None`.
    """
    gen, spg = training_args.generation_batch_size, training_args.steps_per_generation
    if gen is not None and spg is not None:
        if _parsed_world_size(training_args) == world_size:
            return int(gen), int(spg)
        gen = None
    derived = _trl_config_at(world_size, training_args, gen, spg)
    return derived.generation_batch_size, derived.steps_per_generation


def _parsed_world_size(training_args: Any) -> int:
    try:
        return int(training_args.world_size)
    except Exception:
        return 1


@functools.lru_cache(maxsize=64)
def _trl_config_class(world_size: int) -> type:
    """`GRPOConfig` as it would be built in a launch of `world_size` processes; TRL's checks of the batch it
    derives are left to `_check_batches` (one line naming the fix), so its ValueError is kept, not raised."""
    from trl import GRPOConfig

    def post_init(self: Any) -> None:
        try:
            GRPOConfig.__post_init__(self)
        except ValueError as exc:
            self.trl_error = str(exc)

    return type(f"GRPOConfigAt{world_size}", (GRPOConfig,),
                {"world_size": property(lambda self: world_size), "__post_init__": post_init, "trl_error": None})


def _trl_config_at(world_size: int, training_args: Any, gen: int | None, spg: int | None) -> Any:
    """Only the fields TRL's batch arithmetic reads; on CPU, so that no device is set up to count."""
    return _trl_config_class(world_size)(
        output_dir=tempfile.gettempdir(), report_to="none", use_cpu=True, bf16=False, fp16=False,
        per_device_train_batch_size=int(training_args.per_device_train_batch_size),
        gradient_accumulation_steps=int(training_args.gradient_accumulation_steps),
        generation_batch_size=gen, steps_per_generation=spg, num_generations=training_args.num_generations)


def _check_batches(training_args: Any, world_size: int, problems: list[str]) -> None:
    ng = training_args.num_generations
    if ng is None or ng < 2:
        problems.append(f"num_generations ({ng}): GRPO compares completions within a prompt's group, so it "
                        f"needs at least 2 (the main recipe uses 4)")
        return
    per_device = int(training_args.per_device_train_batch_size)
    global_batch = per_device * world_size
    gen_only = training_args.generation_batch_size is not None and training_args.steps_per_generation is None
    gen, spg = generation_sizes(training_args, world_size)
    if gen_only and gen % global_batch:
        problems.append(
            f"generation_batch_size ({gen}) must be a multiple of per_device_train_batch_size ({per_device}) x "
            f"{world_size} process(es) = {global_batch}; set it to {math.ceil(gen / global_batch) * global_batch} "
            f"or set steps_per_generation instead")
        return
    if gen % ng:
        if gen_only:
            how, fix = f"generation_batch_size ({gen})", f"set generation_batch_size to a multiple of {ng}"
        else:
            mult = ng // math.gcd(ng, world_size * spg)
            src = "" if training_args.steps_per_generation is not None else ", from gradient_accumulation_steps"
            how = (f"per_device_train_batch_size ({per_device}) x {world_size} process(es) x "
                   f"steps_per_generation ({spg}{src}) = {gen}")
            fix = f"set per_device_train_batch_size to a multiple of {mult} (it counts completions, not prompts)"
        problems.append(
            f"num_generations ({ng}) must divide the completions per generation, {how}: each prompt's {ng} "
            f"completions must land in one generation batch; {fix}, or change num_generations")
    strategy = training_args.eval_strategy
    if training_args.do_eval and getattr(strategy, "value", strategy) not in ("no", None):
        eval_ng = training_args.num_generations_eval or ng
        eval_total = training_args.per_device_eval_batch_size * world_size
        if eval_total % eval_ng:
            problems.append(
                f"per_device_eval_batch_size ({training_args.per_device_eval_batch_size}) x {world_size} "
                f"process(es) = {eval_total} is not a multiple of num_generations_eval/num_generations "
                f"({eval_ng}); make it one")


def round_steps(training_args: Any, world_size: int) -> int:
    """Optimizer steps one generation round trains (TRL reuses a generation batch for steps_per_generation x
    num_iterations micro-batches): the staleness of a batch sampled one round ahead."""
    _, spg = generation_sizes(training_args, world_size)
    micro = int(spg or 1) * int(training_args.num_iterations)
    return max(1, math.ceil(micro / int(training_args.gradient_accumulation_steps)))


def _check_async(script_args: GRPOScriptArguments, training_args: Any, world_size: int, server: bool,
                 problems: list[str]) -> None:
    if not script_args.async_rollouts:
        return
    if not server:
        problems.append("async_rollouts: overlaps the vLLM server's generation with training, so it needs "
                        "use_vllm: true and vllm_mode: server")
    if not training_args.vllm_importance_sampling_correction:
        problems.append("async_rollouts: batches are sampled with weights up to max_staleness steps old; TRL's "
                        "importance-sampling correction corrects that, so set vllm_importance_sampling_correction: "
                        "true")
    steps = round_steps(training_args, world_size)
    if steps > script_args.max_staleness:
        problems.append(
            f"async_rollouts: a generation round trains {steps} optimizer steps (steps_per_generation x "
            f"num_iterations / gradient_accumulation_steps), so a batch sampled one round ahead is {steps} steps "
            f"stale > max_staleness ({script_args.max_staleness}); raise max_staleness to {steps}")


def longest_generation(script_args: GRPOScriptArguments, training_args: Any) -> int:
    """Rollouts need max_completion_length; evaluation on the same server needs eval_max_tokens."""
    longest = int(training_args.max_completion_length or 0)
    if script_args.benchmarks and script_args.eval_backend != "transformers":
        longest = max(longest, script_args.eval_max_tokens)
    return longest


def check_context(max_model_len: int | None, what: str, script_args: GRPOScriptArguments, training_args: Any,
                  problems: list[str]) -> None:
    """The server's context must hold the longest prompt (max_prompt_length, TRL 1.16 has no such field)
    plus the longest generation."""
    if not max_model_len:
        return
    longest = longest_generation(script_args, training_args)
    budget = script_args.max_prompt_length
    which = "max_completion_length" if longest == (training_args.max_completion_length or 0) else "eval_max_tokens"
    if budget is not None:
        if max_model_len < budget + longest:
            problems.append(
                f"{what} ({max_model_len}) < max_prompt_length ({budget}) + {which} ({longest}) = "
                f"{budget + longest}: long prompts would be rejected or cut; raise {what} to at least "
                f"{budget + longest} or lower {which}")
    elif max_model_len <= longest:
        problems.append(
            f"{what} ({max_model_len}) leaves no room for the prompt next to {which} ({longest}); raise "
            f"{what} to the longest prompt + {longest} (about {longest + 1024} for MATH) or lower {which}")


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def validate_grpo_config(script_args: GRPOScriptArguments, training_args: Any, model_args: Any,
                         world_size: int | None = None) -> None:
    """Raise `ConfigError` (one line, every problem) if the recipe cannot run as configured.

    `world_size`: the number of training processes (`accelerate launch --num_processes`); default: what
    the args see now (1 outside a distributed launch).
    """
    problems: list[str] = []
    if world_size is None:
        world_size = int(training_args.world_size or 1)
    if world_size < 1:
        problems.append(f"world size {world_size}: need at least one training process")
        raise ConfigError(problems)

    _check_batches(training_args, world_size, problems)

    server = uses_server(training_args)
    if training_args.use_vllm and training_args.vllm_mode not in VLLM_MODES:
        problems.append(f"vllm_mode: {training_args.vllm_mode!r} is not one of {', '.join(VLLM_MODES)}")
    if training_args.use_vllm:
        check_context(training_args.vllm_max_model_length, "vllm_max_model_length", script_args, training_args,
                      problems)
    if server and script_args.weight_sync_backend == "nccl" and (training_args.use_cpu or not cuda_available()):
        problems.append("weight_sync_backend: nccl needs CUDA GPUs for both trainer and server (TRL's NCCL "
                        "sync refuses a CPU trainer); on CPU or one shared GPU set weight_sync_backend: "
                        "filesystem")

    _check_async(script_args, training_args, world_size, server, problems)
    _check_model(model_args.model_name_or_path, problems)
    _check_dataset(script_args.dataset_name, problems)
    _check_benchmarks(script_args.benchmarks, script_args.dataset_name, problems)
    if script_args.eval_backend == "server" and not server:
        problems.append("eval_backend: 'server' needs use_vllm: true and vllm_mode: server; use 'auto' or "
                        "'transformers'")
    if problems:
        raise ConfigError(problems)


