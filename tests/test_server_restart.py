"""A vLLM server killed mid-run costs a step, not the run (issue 30), with the real CPU server and SIGKILL.

Two runs, each killed at several points (a CPU server start costs 20-90 s, so each run pays for its restarts
only): the launcher's own server, restarted by the launcher, killed during a rollout request, during a weight
sync and during the final evaluation; and an `async_rollouts` + `dynamic_sampling` run on a server given by URL
that the test itself kills and starts again, with the prefetched request in flight and during a sync. Each run
must train every step once, on the same prompts in the same order as an uninterrupted run on the session's
server, and leave no process behind. The points are reached through MATH_GRPO_TEST_PAUSE
(`math_grpo.server_recovery.pause_point`): the trainer waits at the named point until the test, having killed
the server, removes the file it created.
"""

from __future__ import annotations

import collections
import json
import os
import time

import pytest
import requests
from _runs import RECIPE, interrupt_when, kill_group, launch, read_text, small_run, train_steps
from _tiny import read_jsonl, recipe_cmd, run
from conftest import assert_all_gone, group_processes, reserve_port

from math_grpo.vllm_server import ServerProcess, ServerSpec

pytestmark = [pytest.mark.server, pytest.mark.slow]

STEPS = 6
TRAIN = ("--save_steps", "1000", "--eval_steps", "1000", "--max_completion_length", "48")
ASYNC = ("--async_rollouts", "true", "--max_staleness", "1", "--vllm_importance_sampling_correction", "true",
         "--dynamic_sampling", "true", "--dynamic_sampling_max_rounds", "2")


def _prompts_by_step(out: str) -> dict[int, list[str]]:
    by_step: dict[int, list[str]] = collections.defaultdict(list)
    for row in read_jsonl(os.path.join(out, "completions.jsonl")):
        by_step[row["step"]].append(row["prompt"])
    return {step: sorted(prompts) for step, prompts in by_step.items()}


def _reference(server, tmp_path, *extra: str) -> dict[int, list[str]]:
    """The uninterrupted run's prompts per step (same recipe and seed, on the session's server)."""
    out = str(tmp_path / "reference")
    run(recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                   *small_run(server.model, server.data, out, STEPS, *TRAIN, *extra, "--vllm_server_base_url",
                              server.url)), timeout=600)
    assert train_steps(out) == list(range(1, STEPS + 1))
    return _prompts_by_step(out)


def _running(url: str) -> float:
    try:
        text = requests.get(f"{url}/metrics", timeout=2).text
    except requests.RequestException:
        return 0.0
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("vllm:num_requests_running"))


def _wait_file(path: str, proc, log: str, timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"exited {proc.returncode} before {os.path.basename(path)}:\n{read_text(log)[-4000:]}"
        assert time.monotonic() < deadline, f"no {os.path.basename(path)} in time:\n{read_text(log)[-3000:]}"
        time.sleep(0.1)


def _kill_in_flight(url: str, pgid: int, within: float = 20.0) -> bool:
    """SIGKILL the server's group once it runs a request (or after `within` s); True if one was running."""
    deadline = time.monotonic() + within
    while _running(url) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    busy = _running(url) > 0
    kill_group(pgid)
    return busy


def _check_run(out: str, reference: dict[int, list[str]], restarts: int) -> list[dict]:
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))  # every step, each once
    assert _prompts_by_step(out) == reference  # the uninterrupted run's data, in its order: nothing trained twice
    assert train[-1]["server/restarts"] == restarts, [r.get("server/restarts") for r in train]
    assert train[-1]["server/down_seconds"] > 0
    syncs = [r["weight_sync/logprob_max_abs_diff"] for r in rows if "weight_sync/logprob_max_abs_diff" in r]
    assert syncs and max(syncs) <= 0.05  # the restarted server got the trained weights back
    return rows


@pytest.mark.timeout(1800)
def test_launcher_restarts_its_killed_server_during_rollout_sync_and_eval(vllm_server, tmp_path, monkeypatch):
    out, pause = str(tmp_path / "run"), str(tmp_path)
    reference = _reference(vllm_server, tmp_path)
    port, reservation = reserve_port()
    log = str(tmp_path / "launch.log")
    monkeypatch.setenv("MATH_GRPO_TEST_PAUSE", f"rollout@2,sync@3,eval@{STEPS}")
    monkeypatch.setenv("MATH_GRPO_TEST_PAUSE_DIR", pause)
    proc = launch(["--port", str(port), "--server-restarts", "3", RECIPE,
                   *small_run(vllm_server.model, vllm_server.data, out, STEPS, *TRAIN)], log)
    status = os.path.join(out, "server_status.json")
    pids: list[int] = []

    def server_pid() -> int:
        deadline = time.monotonic() + 300
        while True:
            state = json.load(open(status)) if os.path.exists(status) else {}
            if state.get("state") == "up" and state.get("pid"):
                pids.append(state["pid"])
                return state["pid"]
            assert time.monotonic() < deadline and proc.poll() is None, read_text(log)[-3000:]
            time.sleep(0.2)

    try:
        # 1. a rollout: the server dies as the trainer is about to send the request (at the pause, so the kill
        # cannot land later, once the trainer has moved on to the sync: on a loaded machine a short request can
        # be answered before a poll sees it in flight, and the two kills would then be one outage)
        _wait_file(os.path.join(pause, "paused-rollout-2"), proc, log)
        kill_group(server_pid())
        os.remove(os.path.join(pause, "paused-rollout-2"))
        # 2. during a weight sync (the weights written, the server about to reload them)
        _wait_file(os.path.join(pause, "paused-sync-3"), proc, log)
        kill_group(server_pid())
        os.remove(os.path.join(pause, "paused-sync-3"))
        # 3. during the final evaluation (in the training thread)
        _wait_file(os.path.join(pause, f"paused-eval-{STEPS}"), proc, log)
        kill_group(server_pid())
        os.remove(os.path.join(pause, f"paused-eval-{STEPS}"))
        proc.wait(timeout=600)
        assert_all_gone(proc.pid, *pids, run_dir=out)
    finally:
        reservation.close()
        if proc.poll() is None:
            kill_group(proc.pid)
        for pid in pids:
            kill_group(pid)
    text = read_text(log)
    assert proc.returncode == 0, text[-4000:]
    marker = "[launch] the vLLM server died"  # a progress bar's \r-line may come first on the same line
    died = [ln[ln.index(marker):] for ln in text.splitlines() if marker in ln]
    assert len(died) == 3 and all("killed by SIGKILL; server.log:" in ln for ln in died), died
    assert [f"restart {k} of 3" in ln for k, ln in enumerate(died, 1)] == [True] * 3, died
    said = "\n".join(ln for ln in text.splitlines() if "[server]" in ln or "[launch]" in ln or "[eval]" in ln)
    assert text.count("pushing the full weights") >= 3, said
    assert f"[eval] step {STEPS}: evaluation lost to a vLLM server restart; running it again" in text, text[-3000:]
    rows = _check_run(out, reference, 2)  # the third restart came after the last training step (final evaluation)
    assert STEPS in [r["step"] for r in rows if "eval/accuracy" in r]  # the lost evaluation, run again
    assert not [r for r in rows if r.get("eval/failed")]


@pytest.mark.timeout(1800)
def test_async_dynamic_server_by_url_killed_and_restarted_by_hand(vllm_server, tmp_path, monkeypatch):
    """`--vllm_server_base_url` (nobody supervises the server): the trainer waits for it (server_restart_wait_s)
    while the test starts it again; async_rollouts' prefetched request and the refill rounds go on."""
    out, pause = str(tmp_path / "run"), str(tmp_path)
    reference = _reference(vllm_server, tmp_path, *ASYNC)
    port, reservation = reserve_port()
    spec = ServerSpec(model=vllm_server.model, port=port, dtype="float32", max_model_len=512,
                      kv_cache_bytes=256 * 2**20)
    server = ServerProcess(spec, str(tmp_path / "server.log"))
    server.start(health_timeout=600)
    pids = [server.proc.pid]
    monkeypatch.setenv("MATH_GRPO_TEST_PAUSE", "sync@4")
    monkeypatch.setenv("MATH_GRPO_TEST_PAUSE_DIR", pause)
    cmd = recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                     *small_run(vllm_server.model, vllm_server.data, out, STEPS, *TRAIN, *ASYNC,
                                "--vllm_server_base_url", spec.url, "--server_restart_wait_s", "600"))
    state = {"busy": False}

    def kill_twice(proc) -> None:
        # 1. the next batch's request, posted ahead, in flight while this batch trains
        state["busy"] = _kill_in_flight(spec.url, server.proc.pid)
        server.proc.wait()
        server.start(health_timeout=600)
        pids.append(server.proc.pid)
        # 2. during a weight sync
        while not os.path.exists(os.path.join(pause, "paused-sync-4")):
            if proc.poll() is not None:
                return  # its output is checked below
            time.sleep(0.1)
        kill_group(server.proc.pid)
        server.proc.wait()
        os.remove(os.path.join(pause, "paused-sync-4"))
        server.start(health_timeout=600)
        pids.append(server.proc.pid)
        proc.wait(timeout=600)

    try:
        ended = interrupt_when(cmd, lambda: len(train_steps(out)) >= 2, kill_twice, "step 2", timeout=600)
    finally:
        server.stop()
        reservation.close()
        for pid in pids:
            kill_group(pid)
    output = ended.stdout
    assert ended.returncode == 0, output[-4000:]
    lost = [ln for ln in output.splitlines() if "[server] lost the vLLM server" in ln]
    assert len(lost) == 2, "\n".join(lost) + "\n" + output[-3000:]
    rows = _check_run(out, reference, 2)
    train = [r for r in rows if "train/loss" in r]
    assert all(r["train/async/staleness"] <= 1 for r in train)
    assert [r["train/dynamic_sampling/refill_prompts_total"] for r in train] == \
        [2 * k for k in range(1, STEPS + 1)]  # refill rounds: none repeated, none skipped
    assert not [p for pid in pids for p in group_processes(pid)]
