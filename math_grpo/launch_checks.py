"""Checks of a launch: the recipe plus how it is about to run (GPU sets, accelerate config, port, the server's
context), before the launcher starts the server. Each problem is one line naming the option and the fix.

Used by `python -m math_grpo.launch` in every role (and its `--check` mode, which the Slurm script runs before
it starts anything). The recipe's own checks are `math_grpo.recipe_checks`, run from here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from math_grpo.configs import GRPOScriptArguments, uses_server
from math_grpo.errors import ConfigError
from math_grpo.recipe_checks import check_context, cuda_available, validate_grpo_config
from math_grpo.vllm_server import max_model_len_for


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


def validate_launch(script_args: GRPOScriptArguments, training_args: Any, model_args: Any, *, server_gpus: Sequence[int] = (),
                    trainer_gpus: Sequence[int] = (), port: int | None = None, host: str = "127.0.0.1",
                    accelerate_config: str | None = None, num_processes: int | None = None,
                    num_machines: int | None = None, max_model_len: int | None = None,
                    check_port: bool = True, visible_gpus: int | None = None, role: str = "both") -> int:
    """The recipe checks plus the launch set-up; returns the training world size. Raises `ConfigError`.

    `role`: "both" (server and training on this machine), "server" or "trainer" (the other one runs elsewhere,
    so how this machine's GPUs are shared between them is not checked)."""
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

    server_mode = uses_server(training_args)
    shared = machines == 1 and role == "both"  # server and trainers share this machine's GPUs
    if server_mode and script_args.weight_sync_backend == "nccl":
        overlap = sorted(set(server_gpus) & set(trainer_gpus))
        if overlap:
            problems.append(
                f"--server-gpus {','.join(map(str, server_gpus))} and --trainer-gpus "
                f"{','.join(map(str, trainer_gpus))} share GPU {','.join(map(str, overlap))} but weight_sync_backend "
                f"is nccl, and NCCL refuses two ranks on one GPU (the run would hang at the first sync): give them "
                f"disjoint GPUs or set --weight_sync_backend filesystem")
        elif not server_gpus and shared and cuda_available():  # without CUDA the recipe check says it
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
    if machines == 1 and role != "server" and trainer_gpus and not cfg_cpu and world_size != len(trainer_gpus):
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
        if shared and not trainer_gpus and visible_gpus and cfg is not None and \
                world_size > visible_gpus - len(server_gpus):
            free = visible_gpus - len(server_gpus)
            problems.append(f"accelerate num_processes ({world_size}) > GPUs left for training ({free} of "
                            f"{visible_gpus} visible, {len(server_gpus)} for the server); lower --num_processes")
        if role != "server" and cfg is not None and not cfg_cpu and not visible_gpus and \
                (trainer_gpus or world_size > 1) and not training_args.use_cpu:
            problems.append(f"--accelerate-config {accelerate_config} expects GPUs but none is visible here; "
                            f"use accelerate_configs/cpu.yaml or cpu_ddp.yaml on CPU")

    if server_mode:
        want_port = int(port if port is not None else training_args.vllm_server_port)
        if port is not None and not training_args.vllm_server_base_url and \
                int(training_args.vllm_server_port) != int(port):
            problems.append(f"--port {port} but the recipe's vllm_server_port is {training_args.vllm_server_port}: "
                            f"the trainer would talk to the wrong port; pass --vllm_server_port {port} too")
        if not 1 <= want_port <= 65535:
            problems.append(f"{'--port' if port is not None else 'vllm_server_port'}: {want_port} is not a port "
                            f"(1-65535)")
        elif check_port and not port_is_free(host, want_port):
            problems.append(f"port {want_port} on {host} is already in use (another vLLM server?); stop it or "
                            f"choose another port (--port P --vllm_server_port P)")
        if max_model_len is None:
            max_model_len = training_args.vllm_max_model_length or max_model_len_for(
                model_args.model_name_or_path or "", training_args.max_completion_length,
                script_args.eval_max_tokens, script_args.benchmarks, prompt_budget=script_args.max_prompt_length)
        check_context(max_model_len, "the server's max-model-len", script_args, training_args, problems)

    try:
        validate_grpo_config(script_args, training_args, model_args, world_size=world_size)
    except ConfigError as exc:
        problems = exc.problems + problems
    if problems:
        raise ConfigError(problems)
    return world_size
