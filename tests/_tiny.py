"""Shared test assets: synthetic data and a tiny Qwen2 model, built once per test session on disk.

Imported by test modules (not a conftest fixture) so every module shares the one build through the cache.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=1)
def tiny_assets() -> dict[str, str]:
    """{'data': DIR with sft/train/test.jsonl, 'model': DIR of a randomly initialised tiny Qwen2}."""
    from math_grpo.synthetic import write_synthetic_dataset
    from math_grpo.tiny import build_tiny_model, corpus_from_dir

    root = tempfile.mkdtemp(prefix="math-grpo-tiny-")
    data_dir = os.path.join(root, "data")
    write_synthetic_dataset(data_dir, n_sft=64, n_train=256, n_test=32, seed=0)
    model_dir = os.path.join(root, "model")
    build_tiny_model(model_dir, corpus_from_dir(data_dir), seed=0)
    return {"root": root, "data": data_dir, "model": model_dir}


# What every process a test starts runs with: no hub, W&B offline, output unbuffered (tests read it as it comes).
CHILD_ENV = {"TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def run(cmd: list[str], timeout: float = 600, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a real process from the repo root; on failure show its output (that is what one debugs from)."""
    full_env = {**os.environ, **CHILD_ENV, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
                             f"--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def accelerate_cmd(config: str, script: str, *args: str) -> list[str]:
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    port = ["--main_process_port", "0"] if "ddp" in config else []  # a free port: tests may overlap
    return [accelerate, "launch", "--config_file", os.path.join(REPO, "accelerate_configs", config), *port,
            os.path.join(REPO, script), *args]


def recipe_cmd(script: str, *args: str) -> list[str]:
    """A recipe run as a plain single process, without `accelerate launch` in front: that costs about 5 s of
    CPU per run (it imports torch) and changes nothing on one CPU process. The tests of accelerate's own part
    (single process, DDP, the README's command, the launcher, a scheduler's SIGTERM) keep `accelerate_cmd`."""
    return [sys.executable, os.path.join(REPO, script), *args]


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
