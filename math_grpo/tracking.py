"""W&B set-up that never blocks a run: offline by itself when there is no key or no network."""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        with open(netrc, encoding="utf-8") as f:
            return host in f.read()
    except OSError:
        return False


def _reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout):
            return True
    except OSError:
        return False


def take_over_wandb(training_args: Any) -> bool:
    """Remove "wandb" from report_to and say whether it was there: W&B is logged by our MetricsCallback,
    because the Trainer's own integration would rename eval/* to train/eval/*."""
    wanted = "wandb" in (training_args.report_to or [])
    training_args.report_to = [r for r in (training_args.report_to or []) if r != "wandb"]
    return wanted


def choose_wandb_mode() -> tuple[str, str | None]:
    """(mode, reason): respect WANDB_MODE; otherwise online only with a key and a reachable server."""
    forced = os.environ.get("WANDB_MODE")
    if forced:
        return forced, None
    if not _has_wandb_key():
        return "offline", "no W&B API key"
    if not _reachable():
        return "offline", "W&B server unreachable"
    return "online", None


def init_wandb(project: str, run_name: str | None, run_dir: str, config: dict[str, Any]) -> Any | None:
    """Start a W&B run in `run_dir`; returns None (and says so once) when wandb cannot start at all."""
    try:
        import wandb
    except ImportError:
        print("[wandb] wandb is not installed: metrics go to metrics.jsonl only", flush=True)
        return None
    mode, reason = choose_wandb_mode()
    if reason:
        print(f"[wandb] {reason}: logging offline to {run_dir}/wandb (upload later with `wandb sync`)", flush=True)
    try:
        run = wandb.init(
            project=project, name=run_name, dir=run_dir, config=config, mode=mode,
            settings=wandb.Settings(init_timeout=60, silent=True),
        )
    except Exception as exc:  # a W&B outage must not cost a training run
        if mode == "offline":
            print(f"[wandb] could not start ({type(exc).__name__}): metrics go to metrics.jsonl only", flush=True)
            return None
        print(f"[wandb] online start failed ({type(exc).__name__}): falling back to offline", flush=True)
        try:
            run = wandb.init(project=project, name=run_name, dir=run_dir, config=config, mode="offline")
        except Exception:
            return None
    for key in ("train/*", "eval/*", "weight_sync/*", "rewards/*"):
        run.define_metric(key, step_metric="train/global_step")
    return run


def start_run(run_dir: str, state: Any, use_wandb: bool, script_args: Any, training_args: Any,
              model_args: Any) -> Any | None:
    """Main process only: save the resolved config and git commit in the run dir, then start W&B (or None).

    Both recipes call it after the resume checkpoint is resolved, so the metadata describes the run that goes on.
    """
    from math_grpo.checkpoints import scrub_secrets, write_run_metadata

    if not state.is_main_process:
        return None
    write_run_metadata(run_dir, script_args=script_args, training_args=training_args, model_args=model_args)
    if not use_wandb:
        return None
    return init_wandb(script_args.wandb_project, training_args.run_name, run_dir,
                      scrub_secrets({"script": vars(script_args), "training": training_args.to_dict()}))
