"""Trainer callbacks: metric names and sinks (metrics.jsonl, W&B), sample completions, run guards.

TRL logs `loss`, `reward`, `kl`, ...; the product's dashboards use `train/loss`, `train/reward`, `train/kl`,
`eval/accuracy`. One callback owns that naming so metrics.jsonl, W&B and the plots agree.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

from transformers import TrainerCallback

from math_grpo.trl_adapter import latest_rollouts

# Prefixes that are already namespaced and go through unchanged.
_NAMESPACED = ("train/", "eval/", "weight_sync/", "rewards/", "timing/", "sft/", "server/")


def canonical_key(key: str) -> str:
    """TRL/transformers log key -> the product's metric name."""
    if key.startswith(_NAMESPACED):
        return key
    if key == "train_loss":
        return "train/mean_loss"
    if key.startswith("train_"):
        return "train/" + key[len("train_"):]
    if key.startswith("eval_"):
        return "eval/" + key[len("eval_"):]
    return "train/" + key


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


def append_jsonl(path: str, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()


class MetricsCallback(TrainerCallback):
    """Writes every log as {"step": N, "train/...": ...} to metrics.jsonl and to W&B (main process only)."""

    def __init__(self, run_dir: str, wandb_run: Any | None = None):
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.wandb_run = wandb_run
        self.start = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()  # wall time of the training loop, model loading and set-up excluded
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return control
        step = int(logs.get("step", state.global_step))
        record = {canonical_key(k): _finite_or_none(v) for k, v in logs.items() if k != "step"}
        record = {"step": step, **record, "time/elapsed_s": round(time.monotonic() - self.start, 3)}
        append_jsonl(self.path, record)
        if self.wandb_run is not None:
            numeric = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
            try:
                self.wandb_run.log({**numeric, "train/global_step": step})
            except Exception as exc:  # never let the tracker kill a run
                print(f"[wandb] log failed ({type(exc).__name__}); continuing", flush=True)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.wandb_run is not None and state.is_world_process_zero:
            try:
                self.wandb_run.finish()
            except Exception:
                pass
        return control


class CompletionSamplesCallback(TrainerCallback):
    """Writes the latest rollouts (prompt, completion, answer, rewards) to completions.jsonl and W&B.

    Reading TRL's last generation batch at log time costs nothing and gives users the samples they always ask
    for when a reward curve looks odd (`trl_adapter.latest_rollouts` says why it reads TRL's buffer).
    """

    def __init__(self, run_dir: str, trainer: Any, wandb_run: Any | None = None, num_wandb_samples: int = 8):
        self.path = os.path.join(run_dir, "completions.jsonl")
        self.trainer = trainer
        self.wandb_run = wandb_run
        self.num_wandb_samples = num_wandb_samples

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or logs is None or "loss" not in logs:
            return control
        buf = latest_rollouts(self.trainer)
        if buf is None:
            return control
        prompts, completions, rewards, advantages = buf["prompt"], buf["completion"], buf["rewards"], buf["advantages"]
        answers = buf["extra"].get("answer", [])
        rows = []
        with open(self.path, "a", encoding="utf-8") as f:
            for i, (p, c) in enumerate(zip(prompts, completions)):
                row = {
                    "step": state.global_step,
                    "prompt": p,
                    "completion": c,
                    "rewards": {n: v[i] for n, v in rewards.items() if i < len(v)},
                    "advantage": advantages[i] if i < len(advantages) else None,
                }
                if i < len(answers):
                    row["answer"] = answers[i]
                rows.append(row)
                f.write(json.dumps(row, default=str) + "\n")
        if self.wandb_run is not None and rows:
            try:
                import wandb

                cols = ["step", "prompt", "completion", *rewards]
                table = wandb.Table(columns=cols)
                for r in rows[: self.num_wandb_samples]:
                    table.add_data(r["step"], r["prompt"][-300:], r["completion"], *[r["rewards"].get(n) for n in rewards])
                self.wandb_run.log({"train/completions": table, "train/global_step": state.global_step})
            except Exception as exc:
                print(f"[wandb] samples table failed ({type(exc).__name__}); continuing", flush=True)
        return control


class NonFiniteGuard(TrainerCallback):
    """Stops the run on a NaN/inf loss, gradient norm or weight, and never saves non-finite weights.

    A checkpoint of inf weights is worse than none: it is what `resume auto` would pick. So the parameters
    are checked after every step (cheap next to the step), before any save, and the run stops with the last
    good checkpoint intact.
    """

    def __init__(self, keys: tuple[str, ...] = ("loss", "grad_norm")):
        self.keys = keys
        self.tripped: tuple[int, str, float] | None = None
        self.saved_on_trip = False

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # Every step, not only before a save: an update can overflow the weights while the loss and gradient
        # norm it was computed from were finite, and the next step's sampling then dies on NaN probabilities
        # (a traceback, not this guard's message). All ranks decide together, or the next collective hangs.
        if model is not None and not self.tripped and _any_rank(not _weights_finite(model)):
            self.tripped = (state.global_step, "weights", float("nan"))
            control.should_save = False
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs or self.tripped:
            return control
        for key in self.keys:
            value = logs.get(key)
            if isinstance(value, int | float) and not math.isfinite(value):
                self.tripped = (state.global_step, key, float(value))
                control.should_training_stop = True
                if model is not None and _weights_finite(model):
                    control.should_save = True
                    self.saved_on_trip = True
                break
        return control


def _weights_finite(model: Any) -> bool:
    import torch

    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class StopRequest(TrainerCallback):
    """Ends training at the next step boundary with a checkpoint, on a signal, a wall-time limit or a stop file.

    Real runs get pre-empted (SIGTERM from Slurm, Ctrl-C); stopping at a step boundary keeps the optimizer,
    scheduler and data-order state consistent, so the saved checkpoint resumes exactly. The stop file lets
    another program end a run cleanly without signals (the demo stops its SFT baseline when GRPO ends).
    """

    def __init__(self, time_limit_s: float | None = None, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
                 stop_file: str | None = None):
        self.time_limit_s = time_limit_s
        self.stop_file = stop_file
        self.start = time.monotonic()
        self.reason: str | None = None
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        for sig in signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: give up immediately
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        self.signum = signum
        self.reason = f"received {signal.Signals(signum).name}"
        print(f"[stop] {self.reason}: saving a checkpoint at the end of this step (send again to abort)", flush=True)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.reason is None and self.time_limit_s is not None and time.monotonic() - self.start > self.time_limit_s:
            self.reason = f"time limit of {self.time_limit_s:.0f} s reached"
        if self.reason is None and self.stop_file and os.path.exists(self.stop_file):
            self.reason = f"stop file {self.stop_file} found"
        if _any_rank(self.reason is not None):
            self.reason = self.reason or "another rank asked to stop"
            control.should_save = True
            control.should_training_stop = True
        return control


def _any_rank(flag: bool) -> bool:
    """True if any training process says so: all ranks must stop at the same step or the next collective hangs."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
