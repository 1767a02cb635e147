"""Helpers for the tests that run training and the launcher as real processes and watch them from outside:
the server-mode recipe and its arguments, starting the launcher, finding the server it started, reading a
run dir's progress. (Shared by test_server_*.py and test_launcher_runs.py; no test module imports another.)"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from _tiny import CHILD_ENV, REPO, read_jsonl, recipe_cmd, run, tiny_assets

from math_grpo.checkpoints import COMPLETE_MARKER

RECIPE = os.path.join(REPO, "recipes", "tiny", "grpo_server.yaml")


def grpo_args(out: str, steps: int, *extra: str) -> list[str]:
    """Arguments of a few cheap in-process GRPO steps of the tiny model (tests/fixtures/recipes/grpo_test.yaml)."""
    assets = tiny_assets()
    return [
        "--config", os.path.join(REPO, "tests/fixtures/recipes/grpo_test.yaml"),
        "--model_name_or_path", assets["model"],
        "--dataset_name", os.path.join(assets["data"], "train.jsonl"),
        "--output_dir", out,
        "--max_steps", str(steps),
        "--per_device_train_batch_size", "8",
        "--num_generations", "4",
        "--max_completion_length", "12",
        "--logging_steps", "1",
        "--save_steps", "2",
        "--lr_scheduler_type", "constant",
        "--warmup_steps", "0",
        "--use_vllm", "false",
        "--report_to", "none",
        *extra,
    ]


@functools.lru_cache(maxsize=1)
def _two_step_run() -> str:
    """One 2-step GRPO run (checkpoint-2) for the session; tests copy it rather than train it again."""
    out = os.path.join(tempfile.mkdtemp(prefix="math-grpo-run2-"), "run")
    run(recipe_cmd("recipes/grpo.py", *grpo_args(out, 2)))
    return out


def two_step_run(dest: str) -> str:
    """A copy of the session's 2-step run at `dest` (same arguments as `grpo_args(dest, 2)`)."""
    shutil.copytree(_two_step_run(), dest)
    return dest


def small_run(model: str, data: str, out: str, steps: int, *extra: str) -> list[str]:
    """Overrides for a few cheap server-mode steps of the tiny model."""
    return ["--model_name_or_path", model, "--dataset_name", os.path.join(data, "train.jsonl"),
            "--output_dir", out, "--max_steps", str(steps), "--per_device_train_batch_size", "8",
            "--num_generations", "4", "--max_completion_length", "16", "--eval_max_tokens", "16",
            "--eval_max_samples", "8", "--report_to", "none", *extra]


def is_vllm_server(cmdline: str) -> bool:
    """A vLLM server's command line: the CPU entry (math_grpo.vllm_cpu_server) or vLLM's own on GPUs."""
    return "math_grpo.vllm_cpu_server" in cmdline or "vllm.entrypoints" in cmdline


def launch(args: list[str], log_path: str, shell: bool = False) -> subprocess.Popen:
    """The launcher (`python -m math_grpo.launch`, or with `shell` the `launch/grpo.sh` shim) in its own
    session, its output in a file (a pipe nobody reads would block it)."""
    env = {**os.environ, **CHILD_ENV, "PYTHON": sys.executable}  # the shim runs $PYTHON: this venv's
    cmd = ["bash", os.path.join(REPO, "launch", "grpo.sh")] if shell else [sys.executable, "-m", "math_grpo.launch"]
    with open(log_path, "w") as log:
        return subprocess.Popen([*cmd, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def server_child(launcher_pid: int, timeout: float) -> int:
    """The pid of the vLLM server the launcher started (its own process group)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
        for line in out.splitlines():
            pid, ppid, args = line.split(None, 2)
            if int(ppid) == launcher_pid and is_vllm_server(args):
                return int(pid)
        time.sleep(0.5)
    raise AssertionError("the launcher started no vLLM server")


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def train_steps(run_dir: str) -> list[int]:
    """The steps logged so far in a run dir's metrics.jsonl (none before the file exists)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    return [r["step"] for r in read_jsonl(path) if "train/loss" in r] if os.path.isfile(path) else []


def complete_checkpoints(run_dir: str) -> list[int]:
    return sorted(int(c.rsplit("-", 1)[1]) for c in glob.glob(os.path.join(run_dir, "checkpoint-*"))
                  if os.path.isfile(os.path.join(c, COMPLETE_MARKER)))


def wait_for(what: str, ready, proc: subprocess.Popen, log: str, timeout: float) -> None:
    """Poll `ready()` until true; fail if the process exits first or the deadline passes (with its log)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"exited {proc.returncode} before {what}:\n{read_text(log)[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s:\n{read_text(log)[-3000:]}"
        time.sleep(0.2)


def interrupt_when(cmd: list[str], ready, interrupt, what: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a training command in its own session, call `interrupt(proc)` once `ready()` holds, and return how it
    ended (its output went to a file, not a pipe: nobody drains a pipe while polling, and a full one, ~64 KiB,
    blocks the run). Nothing of it is left running when this returns."""
    from conftest import assert_all_gone

    fd, log = tempfile.mkstemp(prefix="math-grpo-run-", suffix=".log")
    try:
        with os.fdopen(fd, "w") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **CHILD_ENV, "OMP_NUM_THREADS": "1"},
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(what, ready, proc, log, timeout)
            interrupt(proc)
            proc.wait(timeout=300)
            assert_all_gone(proc.pid, timeout=180)  # accelerate may exit first; the trainer still saves its checkpoint
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return subprocess.CompletedProcess(cmd, proc.returncode, read_text(log))
    finally:
        os.remove(log)
