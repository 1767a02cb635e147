"""Asynchronous rollouts (`async_rollouts: true`) on the shared CPU vLLM server: the staleness bound read from
metrics.jsonl, evaluation overlapping, resume mid-run (same data order, the prefetched batch sampled again),
SIGTERM with a request in flight (nothing left running on the server), the server lost mid-request, and
2-process DDP (with dynamic sampling in the same run)."""

from __future__ import annotations

import collections
import glob
import os
import signal

import pytest
import requests
from _runs import RECIPE, complete_checkpoints, interrupt_when, small_run, train_steps
from _tiny import accelerate_cmd, read_jsonl, recipe_cmd, run

from math_grpo.checkpoints import COMPLETE_MARKER

pytestmark = [pytest.mark.server, pytest.mark.slow]

ASYNC = ("--async_rollouts", "true", "--max_staleness", "1", "--vllm_importance_sampling_correction", "true")


def _cmd(server, out: str, steps: int, *extra: str, ddp: bool = False) -> list[str]:
    args = ["--config", RECIPE, *small_run(server.model, server.data, out, steps, "--vllm_server_base_url",
                                           server.url, *ASYNC, *extra)]
    return accelerate_cmd("cpu_ddp.yaml", "recipes/grpo.py", *args) if ddp else recipe_cmd("recipes/grpo.py", *args)


def _train_rows(out: str) -> list[dict]:
    return [r for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if "train/loss" in r]


def _prompts_by_step(out: str) -> dict[int, list[str]]:
    by_step: dict[int, list[str]] = collections.defaultdict(list)
    for row in read_jsonl(os.path.join(out, "completions.jsonl")):
        by_step[row["step"]].append(row["prompt"])
    return {step: sorted(prompts) for step, prompts in by_step.items()}


def _running_requests(url: str) -> float:
    """vLLM's own gauge of requests being processed (Prometheus text at /metrics)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("vllm:num_requests_running")]
    assert values, "the server's /metrics has no vllm:num_requests_running"
    return sum(values)


def _check_async_metrics(rows: list[dict], bound: int = 1) -> None:
    assert rows and all("train/async/staleness" in r for r in rows), rows[:1]
    staleness = [r["train/async/staleness"] for r in rows]
    assert max(staleness) <= bound, staleness
    assert max(staleness) == 1, staleness  # batches after the first were sampled a step ahead
    for r in rows:
        assert r["train/async/rollout_wait_seconds"] >= 0
        lo, mean, hi = (r[f"train/sampling/importance_sampling_ratio/{k}"] for k in ("min", "mean", "max"))
        assert 0 <= lo <= mean <= hi, r


def test_async_staleness_bound_eval_overlap_and_resume(vllm_server, tmp_path):
    out = str(tmp_path / "run")
    run(_cmd(vllm_server, out, 4, "--eval_steps", "2", "--save_steps", "2"), timeout=600)
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    train = _train_rows(out)
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    _check_async_metrics(train)
    syncs = [r for r in rows if "weight_sync/logprob_max_abs_diff" in r]
    assert syncs and all(r["weight_sync/logprob_max_abs_diff"] <= 0.05 for r in syncs)
    assert all(r["weight_sync/seconds"] >= 0 for r in syncs)
    assert sorted(r["step"] for r in rows if "eval/accuracy" in r) == [0, 2, 4]  # evaluation on the same server
    assert os.path.isfile(os.path.join(out, "checkpoint-2", COMPLETE_MARKER))

    # Resume from step 2 into a second run dir: steps 3-4 train the same prompts as the uninterrupted run (the
    # batch prefetched before the checkpoint was not lost, not trained twice: it was sampled again).
    resumed = str(tmp_path / "resumed")
    run(_cmd(vllm_server, resumed, 4, "--eval_steps", "1000", "--save_steps", "1000",
             "--resume_from_checkpoint", os.path.join(out, "checkpoint-2")), timeout=600)
    again = _train_rows(resumed)
    assert [r["step"] for r in again] == [3, 4]
    assert again[0]["train/async/staleness"] == 0  # regenerated with the resumed weights
    _check_async_metrics(again[1:])
    first, second = _prompts_by_step(out), _prompts_by_step(resumed)
    assert second[3] == first[3] and second[4] == first[4]
    assert first[3] != first[2]


def test_async_sigterm_with_a_request_in_flight(vllm_server, tmp_path):
    out = str(tmp_path / "run")
    # Longer completions than training takes, so the next batch's request is running when the signal lands.
    cmd = _cmd(vllm_server, out, 500, "--save_steps", "1000", "--eval_steps", "1000", "--max_completion_length", "96",
               "--num_generations", "8", "--per_device_train_batch_size", "16")
    ended = interrupt_when(cmd, lambda: len(train_steps(out)) >= 2, lambda p: os.killpg(p.pid, signal.SIGTERM),
                           "step 2")
    output = ended.stdout
    assert ended.returncode == 143, output[-3000:]  # 128 + SIGTERM, from the trainer itself
    assert "received SIGTERM" in output
    # The request in flight was awaited (by the final evaluation's sync, or at the end of training), not abandoned.
    assert "[async] waited" in output or "[async] the rollout request posted for the next step was answered" in output
    ckpts = [c for c in glob.glob(os.path.join(out, "checkpoint-*")) if os.path.isfile(os.path.join(c, COMPLETE_MARKER))]
    assert len(ckpts) == 1, output[-3000:]
    assert _running_requests(vllm_server.url) == 0


def test_async_server_lost_mid_request_clear_error_checkpoint_kept(vllm_server, tmp_path):
    """The server goes away with the next batch's request in flight (every connection reset at a relay in front
    of the session's server, as when the server process dies): the run ends with one error naming the URL,
    its complete checkpoints intact. (A real server kill, through the launcher: tests/test_server_grpo.py.)"""
    from conftest import Relay

    relay = Relay(vllm_server.port)
    out = str(tmp_path / "run")
    # Completions longer than a training step takes, so the next batch's request is running when the cut comes.
    cmd = recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                     *small_run(vllm_server.model, vllm_server.data, out, 500, "--vllm_server_base_url", relay.url,
                                *ASYNC, "--save_steps", "1", "--eval_steps", "1000", "--max_completion_length", "96",
                                "--server_restart_wait_s", "3"))  # nobody brings it back: stop after 3 s
    try:
        ended = interrupt_when(cmd, lambda: os.path.isfile(os.path.join(out, "checkpoint-2", COMPLETE_MARKER)),
                               lambda p: relay.cut(), "a complete checkpoint-2")
    finally:
        relay.cut()
    output = ended.stdout
    assert ended.returncode != 0, output[-3000:]
    errors = [ln[ln.index("error: "):] for ln in output.splitlines() if "error: " in ln]
    assert len(errors) == 1 and relay.url in errors[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    from transformers import AutoModelForCausalLM

    last = complete_checkpoints(out)[-1]
    AutoModelForCausalLM.from_pretrained(os.path.join(out, f"checkpoint-{last}"))  # intact: it loads


def test_async_and_dynamic_sampling_two_processes(vllm_server, tmp_path):
    """DDP on CPU, both overlaps on (one run for both: each 2-process start costs about 25 s of CPU): each
    rank's next batch is gathered in the training thread and rank 0 alone posts it; both ranks run the same
    dynamic-sampling rounds (matched collectives) and train an equal share; one evaluation per point."""
    out = str(tmp_path / "run")
    dynamic = ("--dynamic_sampling", "true", "--dynamic_sampling_max_rounds", "2")
    run(_cmd(vllm_server, out, 3, "--eval_steps", "2", "--save_steps", "1000", *dynamic, ddp=True), timeout=600)
    train = _train_rows(out)
    assert [r["step"] for r in train] == [1, 2, 3]
    _check_async_metrics(train)
    assert all(r["train/async/dropped"] == 0 for r in train)
    # the untrained model earns no reward, so each step runs both rounds; 2 ranks x 8 rows / 4 per group
    assert all(r["train/dynamic_sampling/rounds"] == 2 for r in train)
    assert [r["train/dynamic_sampling/refill_prompts_total"] for r in train] == [4, 8, 12]
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 2, 3]
