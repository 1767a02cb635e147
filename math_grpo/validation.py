"""Check a GRPO run's configuration before anything heavy starts.

Most failed GRPO launches are configuration errors that would otherwise surface minutes later, after the
model loaded and the server warmed up, as an NCCL hang, an OOM or a vLLM 400: a batch that does not hold
whole prompt groups, a server context shorter than prompt + completion, trainer and server on one GPU with
NCCL sync, a busy port. Each check here names the fields at fault and the fix, in one line.

Two levels:

- `validate_grpo_config(script_args, training_args, model_args, world_size)`: the recipe itself; called by
  `recipes/grpo.py` on every rank before the model loads.
- `validate_launch(...)`: the recipe plus how it is about to be launched (GPU sets, accelerate config,
  port, the server's max-model-len); called by the launchers through the CLI below, before they start
  the server.

CLI (for launch/grpo.sh and launch/slurm/; exit 0 and a one-line summary when the set-up is fine, exit 2
and `error: <one line>` on stderr when not):

    python -m math_grpo.validation --config RECIPE.yaml \
        [--server-gpus 1] [--trainer-gpus 0] [--port 8000] [--host 127.0.0.1] \
        [--accelerate-config accelerate_configs/X.yaml] [--num-processes N] [--num-machines M] \
        [--max-model-len N] [--no-port-check] [--server-running] [recipe overrides: --field value ...]

- `--server-gpus` / `--trainer-gpus`: comma-separated CUDA ids; empty (the default) means "none" (the CPU
  build of vLLM / CPU training). With NCCL weight sync the two sets must be disjoint and both non-empty.
- `--accelerate-config`: its `num_processes` (or `--num-processes`, as given to `accelerate launch`) is
  the trainer's world size, used for the batch check; on GPUs it must match the trainer GPU count.
- `--port`: the server's HTTP port; it must be free (unless `--no-port-check`, or `--server-running`
  when the server is already up) and equal the recipe's `vllm_server_port` (pass both the same).
- `--max-model-len`: the context the server will be started with; default: what
  `python -m math_grpo.vllm_server plan` would choose for the recipe.
- Multi-node (Slurm): pass `--num-processes` = total training processes, `--num-machines`, and
  `--no-port-check --server-running` when the server is on another node.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
import sys
from collections.abc import Sequence
from typing import Any

VLLM_MODES = ("server", "colocate")
WEIGHT_SYNC_BACKENDS = ("nccl", "filesystem")
EVAL_BACKENDS = ("auto", "server", "transformers")
BAD_ROWS = ("skip", "error")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_DATA_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")


class ConfigError(ValueError):
    """One or more configuration problems; `str()` is a single line naming every field and its fix."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# ---------------------------------------------------------------------------------------------------------
# Recipe-level checks
# ---------------------------------------------------------------------------------------------------------


def _grader_modes() -> tuple[str, ...]:
    try:
        from rewards.grader import MODES
    except ImportError:
        return ("drgrpo", "accurate")
    return tuple(MODES)


def _reward_names() -> tuple[str, ...] | None:
    try:
        from rewards.registry import REWARD_FUNCS
    except ImportError:
        return None
    return tuple(REWARD_FUNCS)


def _prompt_templates() -> tuple[str, ...]:
    try:
        from math_grpo.data import PROMPT_TEMPLATES
    except ImportError:
        return ("r1_zero", "question_only")
    return tuple(PROMPT_TEMPLATES)


def looks_like_hub_id(name: str) -> bool:
    """'org/name' or 'name' that is not meant as a path (the same rule as `math_grpo.models.looks_local`)."""
    try:
        from math_grpo.models import looks_local
    except ImportError:
        looks_local = None
    if looks_local is not None and looks_local(name):
        return False
    if name.startswith((".", "/", "~")) or os.sep != "/" and os.sep in name:
        return False
    return bool(_HUB_ID.match(name)) and not name.endswith(_DATA_EXTENSIONS)


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
    try:
        from math_grpo.evaluation import resolve_benchmark
    except ImportError:
        resolve_benchmark = None
    for entry in entries or []:
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
        if resolve_benchmark is not None:
            try:
                resolve_benchmark(entry, dataset_name)
            except ValueError as exc:  # pragma: no cover - depends on the registry
                problems.append(str(exc))
            except Exception as exc:
                problems.append(str(exc) if str(exc).startswith("benchmarks") else f"benchmarks: {exc}")


def generation_sizes(training_args: Any, world_size: int) -> tuple[int | None, int | None]:
    """(generation_batch_size, steps_per_generation) as TRL 1.16's `GRPOConfig.__post_init__` derives them
    for `world_size` training processes; (None, None) if they cannot both be given.

    A field left `None` is derived; after TRL's own post-init both are set, for the world size it saw at
    parse time: if that differs from `world_size`, `steps_per_generation` (TRL's default path, from
    `gradient_accumulation_steps`) is taken as the intent and the batch re-derived.
    """
    per_device = int(training_args.per_device_train_batch_size)
    gen, spg = training_args.generation_batch_size, training_args.steps_per_generation
    if gen is not None and spg is not None:
        parsed_world = _parsed_world_size(training_args)
        if parsed_world == world_size or gen != per_device * parsed_world * spg:
            return int(gen), int(spg)
        gen = None
    if gen is None:
        spg = int(spg if spg is not None else training_args.gradient_accumulation_steps)
        return per_device * world_size * spg, spg
    return int(gen), int(gen) // (per_device * world_size) if per_device * world_size else None


def _parsed_world_size(training_args: Any) -> int:
    try:
        return int(training_args.world_size)
    except Exception:
        return 1


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
    strategy = getattr(training_args, "eval_strategy", "no")
    if getattr(training_args, "do_eval", False) and getattr(strategy, "value", strategy) not in ("no", None):
        eval_ng = training_args.num_generations_eval or ng
        eval_total = training_args.per_device_eval_batch_size * world_size
        if eval_total % eval_ng:
            problems.append(
                f"per_device_eval_batch_size ({training_args.per_device_eval_batch_size}) x {world_size} "
                f"process(es) = {eval_total} is not a multiple of num_generations_eval/num_generations "
                f"({eval_ng}); make it one")


def prompt_budget(script_args: Any, training_args: Any) -> int | None:
    """The longest prompt the run allows, if the recipe bounds it (TRL 1.16's GRPOConfig has no such field)."""
    for args in (script_args, training_args):
        value = getattr(args, "max_prompt_length", None)
        if value:
            return int(value)
    return None


def longest_generation(script_args: Any, training_args: Any) -> int:
    """Rollouts need max_completion_length; evaluation on the same server needs eval_max_tokens."""
    longest = int(training_args.max_completion_length or 0)
    if getattr(script_args, "benchmarks", None) and getattr(script_args, "eval_backend", "auto") != "transformers":
        longest = max(longest, int(getattr(script_args, "eval_max_tokens", 0) or 0))
    return longest


def _check_context(max_model_len: int | None, what: str, script_args: Any, training_args: Any,
                   problems: list[str]) -> None:
    if not max_model_len:
        return
    longest = longest_generation(script_args, training_args)
    budget = prompt_budget(script_args, training_args)
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


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def validate_grpo_config(script_args: Any, training_args: Any, model_args: Any,
                         world_size: int | None = None) -> None:
    """Raise `ConfigError` (one line, every problem) if the recipe cannot run as configured.

    `world_size`: the number of training processes (`accelerate launch --num_processes`); default: what
    the args see now (1 outside a distributed launch).
    """
    problems: list[str] = []
    if world_size is None:
        world_size = int(getattr(training_args, "world_size", 1) or 1)
    if world_size < 1:
        problems.append(f"world size {world_size}: need at least one training process")
        raise ConfigError(problems)

    _check_batches(training_args, world_size, problems)

    use_vllm = bool(getattr(training_args, "use_vllm", False))
    mode = getattr(training_args, "vllm_mode", "server")
    if use_vllm and mode not in VLLM_MODES:
        problems.append(f"vllm_mode: {mode!r} is not one of {', '.join(VLLM_MODES)}")
    if use_vllm:
        _check_context(getattr(training_args, "vllm_max_model_length", None), "vllm_max_model_length",
                       script_args, training_args, problems)

    backend = getattr(script_args, "weight_sync_backend", "nccl")
    if backend not in WEIGHT_SYNC_BACKENDS:
        problems.append(f"weight_sync_backend: {backend!r} is not one of {', '.join(WEIGHT_SYNC_BACKENDS)} "
                        f"(nccl: trainer and server on different GPUs; filesystem: anything else)")
    elif use_vllm and mode == "server" and backend == "nccl":
        on_cpu = bool(getattr(training_args, "use_cpu", False)) or not _cuda_available()
        if on_cpu:
            problems.append("weight_sync_backend: nccl needs CUDA GPUs for both trainer and server (TRL's NCCL "
                            "sync refuses a CPU trainer); on CPU or one shared GPU set weight_sync_backend: "
                            "filesystem")

    _check_model(getattr(model_args, "model_name_or_path", None), problems)
    _check_dataset(getattr(script_args, "dataset_name", None), problems)
    _check_benchmarks(getattr(script_args, "benchmarks", None) or [], getattr(script_args, "dataset_name", None),
                      problems)

    known = _reward_names()
    names = list(getattr(script_args, "reward_funcs", None) or [])
    if not names:
        problems.append("reward_funcs: empty; name at least one (r1_zero)")
    elif known is not None:
        unknown = [n for n in names if n not in known]
        if unknown:
            problems.append(f"reward_funcs: unknown {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    modes = _grader_modes()
    for field_name in ("grader_mode", "eval_grader_mode"):
        value = getattr(script_args, field_name, None)
        if value is not None and value not in modes:
            problems.append(f"{field_name}: {value!r} is not one of {', '.join(modes)}")
    template = getattr(script_args, "prompt_template", None)
    if template is not None and template not in _prompt_templates():
        problems.append(f"prompt_template: {template!r} is not one of {', '.join(_prompt_templates())}")
    eval_backend = getattr(script_args, "eval_backend", None)
    if eval_backend is not None and eval_backend not in EVAL_BACKENDS:
        problems.append(f"eval_backend: {eval_backend!r} is not one of {', '.join(EVAL_BACKENDS)}")
    if eval_backend == "server" and not (use_vllm and mode == "server"):
        problems.append("eval_backend: 'server' needs use_vllm: true and vllm_mode: server; use 'auto' or "
                        "'transformers'")
    bad_rows = getattr(script_args, "bad_rows", None)
    if bad_rows is not None and bad_rows not in BAD_ROWS:
        problems.append(f"bad_rows: {bad_rows!r} is not one of {', '.join(BAD_ROWS)}")
    if problems:
        raise ConfigError(problems)


# ---------------------------------------------------------------------------------------------------------
# Launch-level checks
# ---------------------------------------------------------------------------------------------------------


def parse_gpu_ids(text: str | None, what: str) -> list[int]:
    """'0,1' -> [0, 1]; '' or None -> []."""
    if text is None or not str(text).strip():
        return []
    try:
        ids = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError([f"{what}: {text!r} must be comma-separated GPU ids such as 0,1"]) from None
    if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
        raise ConfigError([f"{what}: {text!r} lists a GPU twice or a negative id"])
    return ids


def visible_gpu_count() -> int:
    """GPUs this process could use (honours CUDA_VISIBLE_DEVICES); 0 without CUDA."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (bind test; the server binds the same way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def load_accelerate_config(path: str) -> Any:
    """accelerate's own loader (the one `accelerate launch --config_file` uses); errors name the file."""
    from accelerate.commands.config.config_args import load_config_from_file

    if not os.path.isfile(path):
        raise ConfigError([f"--accelerate-config: {path} not found (see accelerate_configs/)"])
    try:
        return load_config_from_file(path)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError([f"--accelerate-config: {path}: {first}"]) from None


def validate_launch(script_args: Any, training_args: Any, model_args: Any, *, server_gpus: Sequence[int] = (),
                    trainer_gpus: Sequence[int] = (), port: int | None = None, host: str = "127.0.0.1",
                    accelerate_config: str | None = None, num_processes: int | None = None,
                    num_machines: int | None = None, max_model_len: int | None = None,
                    check_port: bool = True, visible_gpus: int | None = None) -> int:
    """The recipe checks plus the launch set-up; returns the training world size. Raises `ConfigError`."""
    problems: list[str] = []
    cfg = load_accelerate_config(accelerate_config) if accelerate_config else None
    cfg_cpu = bool(cfg is not None and getattr(cfg, "use_cpu", False))
    machines = num_machines or (int(cfg.num_machines) if cfg is not None and cfg.num_machines else 1)
    # The launchers pass `--num_processes <trainer GPU count>` to accelerate, overriding the file's value.
    if num_processes is not None:
        world_size = int(num_processes)
    elif trainer_gpus and machines == 1:
        world_size = len(trainer_gpus)
    elif cfg is not None and cfg.num_processes and cfg.num_processes > 0:
        world_size = int(cfg.num_processes)
    else:
        world_size = 1

    server_mode = bool(training_args.use_vllm) and training_args.vllm_mode == "server"
    backend = getattr(script_args, "weight_sync_backend", "nccl")
    if server_mode and backend == "nccl":
        overlap = sorted(set(server_gpus) & set(trainer_gpus))
        if overlap:
            problems.append(
                f"--server-gpus {','.join(map(str, server_gpus))} and --trainer-gpus "
                f"{','.join(map(str, trainer_gpus))} share GPU {','.join(map(str, overlap))} but weight_sync_backend "
                f"is nccl, and NCCL refuses two ranks on one GPU (the run would hang at the first sync): give them "
                f"disjoint GPUs or set --weight_sync_backend filesystem")
        elif not server_gpus and machines == 1 and _cuda_available():  # without CUDA the recipe check says it
            problems.append("weight_sync_backend: nccl needs the server on a GPU (--server-gpus ID); for the CPU "
                            "build of vLLM set --weight_sync_backend filesystem")
    dist = getattr(getattr(cfg, "distributed_type", None), "value", getattr(cfg, "distributed_type", None))
    if cfg is not None and dist == "NO" and world_size > 1:
        problems.append(
            f"--accelerate-config {accelerate_config} runs one process (distributed_type NO) but {world_size} "
            f"training processes are asked for; use accelerate_configs/multi_gpu.yaml or zero2.yaml "
            f"(cpu_ddp.yaml on CPU)")
    if cfg_cpu and trainer_gpus:
        problems.append(f"--accelerate-config {accelerate_config} trains on CPU (use_cpu: true) but --trainer-gpus "
                        f"{','.join(map(str, trainer_gpus))} was given; pick a GPU accelerate config or drop the GPUs")
    if machines == 1 and trainer_gpus and not cfg_cpu and world_size != len(trainer_gpus):
        problems.append(
            f"accelerate num_processes ({world_size}) != number of trainer GPUs ({len(trainer_gpus)}: "
            f"{','.join(map(str, trainer_gpus))}); pass --num_processes {len(trainer_gpus)} to accelerate launch "
            f"or change --trainer-gpus")
    if visible_gpus is None:
        visible_gpus = visible_gpu_count()
    if machines == 1 and not cfg_cpu:
        wanted = sorted(set(server_gpus) | set(trainer_gpus))
        if wanted and visible_gpus and max(wanted) >= visible_gpus:
            problems.append(f"GPU ids {','.join(map(str, wanted))} but only {visible_gpus} GPU(s) are visible "
                            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); use ids "
                            f"0..{visible_gpus - 1}")
        if not trainer_gpus and visible_gpus and cfg is not None and world_size > visible_gpus - len(server_gpus):
            free = visible_gpus - len(server_gpus)
            problems.append(f"accelerate num_processes ({world_size}) > GPUs left for training ({free} of "
                            f"{visible_gpus} visible, {len(server_gpus)} for the server); lower --num_processes")
        if cfg is not None and not cfg_cpu and not visible_gpus and (trainer_gpus or world_size > 1) \
                and not getattr(training_args, "use_cpu", False):
            problems.append(f"--accelerate-config {accelerate_config} expects GPUs but none is visible here; "
                            f"use accelerate_configs/cpu.yaml or cpu_ddp.yaml on CPU")

    if server_mode:
        want_port = int(port if port is not None else training_args.vllm_server_port)
        if port is not None and not training_args.vllm_server_base_url and \
                int(training_args.vllm_server_port) != int(port):
            problems.append(f"--port {port} but the recipe's vllm_server_port is {training_args.vllm_server_port}: "
                            f"the trainer would talk to the wrong port; pass --vllm_server_port {port} too")
        if check_port and not port_is_free(host, want_port):
            problems.append(f"port {want_port} on {host} is already in use (another vLLM server?); stop it or "
                            f"choose another port (--port P --vllm_server_port P)")
        if max_model_len is None:
            max_model_len = getattr(training_args, "vllm_max_model_length", None) or _planned_max_model_len(
                script_args, training_args, model_args)
        _check_context(max_model_len, "the server's max-model-len", script_args, training_args, problems)

    try:
        validate_grpo_config(script_args, training_args, model_args, world_size=world_size)
    except ConfigError as exc:
        problems = exc.problems + problems
    if problems:
        raise ConfigError(problems)
    return world_size


def _planned_max_model_len(script_args: Any, training_args: Any, model_args: Any) -> int | None:
    """The context `python -m math_grpo.vllm_server plan` would start the server with (None if unknown)."""
    try:
        from math_grpo.vllm_server import max_model_len_for
    except ImportError:
        return None
    budget = prompt_budget(script_args, training_args)
    kwargs = {"prompt_budget": budget} if budget else {}
    return max_model_len_for(model_args.model_name_or_path or "", training_args.max_completion_length,
                             getattr(script_args, "eval_max_tokens", 0), getattr(script_args, "benchmarks", None),
                             **kwargs)


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


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
    import tempfile

    import yaml
    from trl import GRPOConfig, ModelConfig

    from math_grpo.cli import MathGRPOError, parse_recipe
    from math_grpo.configs import DEFAULT_SFT_CHECKPOINT, GRPOScriptArguments

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m math_grpo.validation",
        description="Check a GRPO recipe and its launch set-up before starting anything (exit 2 on a problem).",
        allow_abbrev=False)
    parser.add_argument("--config", required=True, help="the GRPO recipe YAML")
    parser.add_argument("--server-gpus", default="", help="CUDA ids of the vLLM server ('' = CPU build)")
    parser.add_argument("--trainer-gpus", default="", help="CUDA ids of the training processes ('' = CPU)")
    parser.add_argument("--port", type=int, default=None, help="the server's HTTP port")
    parser.add_argument("--host", default="127.0.0.1", help="the server's host (for the port check)")
    parser.add_argument("--accelerate-config", default=None, help="the accelerate config file of the launch")
    parser.add_argument("--num-processes", type=int, default=None, help="accelerate --num_processes override")
    parser.add_argument("--num-machines", type=int, default=None, help="accelerate --num_machines override")
    parser.add_argument("--max-model-len", type=int, default=None, help="the server's --max-model-len")
    parser.add_argument("--no-port-check", action="store_true", help="skip the free-port check")
    parser.add_argument("--server-running", action="store_true",
                        help="the server is already up (implies --no-port-check)")
    args, overrides = parser.parse_known_args(argv)
    try:
        server_gpus = parse_gpu_ids(args.server_gpus, "--server-gpus")
        trainer_gpus = parse_gpu_ids(args.trainer_gpus, "--trainer-gpus")
        script_args, training_args, model_args = parse_recipe_for_launch(args.config, overrides)
        world = validate_launch(
            script_args, training_args, model_args, server_gpus=server_gpus, trainer_gpus=trainer_gpus,
            port=args.port, host=args.host, accelerate_config=args.accelerate_config,
            num_processes=args.num_processes, num_machines=args.num_machines, max_model_len=args.max_model_len,
            check_port=not (args.no_port_check or args.server_running))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    mode = f"vllm {training_args.vllm_mode}" if training_args.use_vllm else "transformers generation"
    print(f"config ok: {args.config}: {world} training process(es), {mode}, "
          f"weight_sync_backend={script_args.weight_sync_backend}, model={model_args.model_name_or_path}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
