"""GRPO in server mode end to end: recipes/grpo.py on the shared CPU server (also as the README's two-terminal
usage), and the launcher (launch/grpo.sh) with its own server (started, killed mid-run, stopped on SIGTERM),
with nothing left behind."""

from __future__ import annotations

import glob
import math
import os
import signal
import sys
import time

import pytest
from _runs import RECIPE, kill_group, launch, read_text, server_child, small_run, train_steps
from _tiny import REPO, accelerate_cmd, read_jsonl, recipe_cmd, run
from conftest import assert_all_gone, group_processes, reserve_port

from math_grpo.checkpoints import COMPLETE_MARKER
from math_grpo.vllm_server import VLLMServerClient

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_grpo_recipe_server_mode_logs_sync_check_and_eval(vllm_server, tmp_path):
    out = str(tmp_path / "run")
    proc = run(recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                          *small_run(vllm_server.model, vllm_server.data, out, 3, "--eval_steps", "2", "--save_steps",
                                     "2", "--vllm_server_base_url", vllm_server.url)), timeout=600)
    assert "[rollouts]" not in proc.stdout + proc.stderr  # rollouts took the token route (no fallback line)
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    syncs = [r["weight_sync/logprob_max_abs_diff"] for r in rows if "weight_sync/logprob_max_abs_diff" in r]
    assert len(syncs) >= 2 and all(0 <= d <= 0.05 for d in syncs), syncs
    evals = [r for r in rows if "eval/accuracy" in r]
    assert sorted(r["step"] for r in evals) == [0, 2, 3]  # step 0, every eval_steps, the end
    for r in evals:
        for key in ("eval/accuracy", "eval/format_accuracy", "eval/synthetic/accuracy", "eval/mean_response_tokens"):
            assert isinstance(r[key], int | float) and math.isfinite(r[key]), (key, r)
    for step in (0, 2, 3):
        samples = read_jsonl(os.path.join(out, "eval", f"step_{step:04d}.jsonl"))
        assert len(samples) == 8 and all("response" in s for s in samples)
    assert os.path.isfile(os.path.join(out, "checkpoint-2", COMPLETE_MARKER))

    # Resume in server mode: the first sync pushes the resumed weights (not the server's start-up ones) and
    # the check's noise floor is measured on them.
    run(recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                   *small_run(vllm_server.model, vllm_server.data, out, 4, "--eval_steps", "1000", "--save_steps",
                              "1000", "--resume_from_checkpoint", "auto", "--vllm_server_base_url",
                              vllm_server.url)), timeout=600)
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows if "train/loss" in r][-1] == 4
    resumed = [r for r in rows if "weight_sync/logprob_max_abs_diff" in r and r["step"] >= 3]
    assert resumed and all(r["weight_sync/logprob_max_abs_diff"] <= 0.05 for r in resumed)


def test_two_terminal_usage_from_the_readme(vllm_server, tmp_path):
    """The README's launcher-free path: a server started by hand (the session's CPU server, started the way the
    README says for CPU), then `accelerate launch recipes/grpo.py --vllm_server_base_url URL` in another
    process. Training uses that server, and leaves it running when it ends."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "CUDA_VISIBLE_DEVICES=1 trl vllm-serve --model" in readme
    assert "CUDA_VISIBLE_DEVICES=0 accelerate launch --config_file accelerate_configs/zero2.yaml" in readme
    assert "python -m math_grpo.vllm_cpu_server" in readme  # the CPU server the fixture starts

    out = str(tmp_path / "run")
    cmd = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--config_file",
           "accelerate_configs/cpu.yaml", "recipes/grpo.py", "--config", "recipes/tiny/grpo_server.yaml",
           "--vllm_server_base_url", vllm_server.url,
           *small_run(vllm_server.model, vllm_server.data, out, 2, "--eval_steps", "1000", "--save_steps", "1000",
                      "--benchmarks", f"synthetic={os.path.join(vllm_server.data, 'test.jsonl')}")]
    run(cmd, timeout=600, env={"CUDA_VISIBLE_DEVICES": ""})
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    syncs = [r["weight_sync/logprob_max_abs_diff"] for r in rows if "weight_sync/logprob_max_abs_diff" in r]
    assert syncs and all(d <= 0.05 for d in syncs)  # rollouts came from that server, with the trained weights
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 2]
    assert not os.path.exists(os.path.join(out, "server.log"))  # training started no server of its own
    assert group_processes(vllm_server.pid)  # and did not stop the one it was given
    assert VLLMServerClient(vllm_server.url).is_healthy()










@pytest.mark.timeout(1800)  # two launcher runs, the first starting its own server
def test_launcher_server_killed_mid_run_clear_error_checkpoint_kept(vllm_server, tmp_path):
    """The launcher's own server dies mid-run with no restart left (`--server-restarts 0`, the bound reached): one
    error naming the URL, the complete checkpoints kept; then a resume from them on a healthy server. (With async_rollouts and a request in flight:
    tests/test_server_async.py::test_async_server_lost_mid_request_clear_error_checkpoint_kept.)"""
    out = str(tmp_path / "run")
    port, reservation = reserve_port()
    log = str(tmp_path / "launch.log")
    train = small_run(vllm_server.model, vllm_server.data, out, 500, "--save_steps", "1", "--eval_steps", "1000")
    proc = launch(["--port", str(port), "--server-restarts", "0", RECIPE, *train], log, shell=True)
    server_pid = None
    try:
        server_pid = server_child(proc.pid, 120)
        deadline = time.monotonic() + 420
        while not os.path.isfile(os.path.join(out, "checkpoint-2", COMPLETE_MARKER)):
            assert proc.poll() is None, read_text(log)[-4000:]
            assert time.monotonic() < deadline, "no complete checkpoint-2 in time: " + read_text(log)[-3000:]
            time.sleep(0.5)
        assert os.path.isfile(os.path.join(out, "server.log"))
        os.killpg(server_pid, signal.SIGKILL)  # the server dies mid-run
        proc.wait(timeout=180)
        assert_all_gone(server_pid, proc.pid, run_dir=out)  # polled, and before the clean-up below
    finally:
        reservation.close()
        if proc.poll() is None:
            kill_group(proc.pid)
        if server_pid:
            kill_group(server_pid)
    text = read_text(log)
    assert proc.returncode != 0
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert errors and f"127.0.0.1:{port}" in errors[0], text[-3000:]
    complete = [c for c in glob.glob(os.path.join(out, "checkpoint-*")) if os.path.isfile(os.path.join(c, COMPLETE_MARKER))]
    assert complete
    from transformers import AutoModelForCausalLM

    last = max(complete, key=lambda c: int(c.rsplit("-", 1)[1]))
    AutoModelForCausalLM.from_pretrained(last)  # intact: it loads
    assert "the vLLM server died during training (killed by SIGKILL" in text, text[-3000:]  # which part died, how
    assert "not restarting it: 0 of 0 restart(s) used (--server-restarts)" in text, text[-3000:]
    # Resume from that checkpoint through the launcher, on a healthy server: the step count goes on from it.
    saved = int(last.rsplit("-", 1)[1])
    log2 = str(tmp_path / "resume.log")
    proc = launch(["--server-url", vllm_server.url, RECIPE,
                   *small_run(vllm_server.model, vllm_server.data, out, saved + 1, "--save_steps", "1000",
                              "--eval_steps", "1000", "--resume_from_checkpoint", "auto")], log2)
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            kill_group(proc.pid)
    assert proc.returncode == 0, read_text(log2)[-4000:]
    assert "resuming from" in read_text(log2) and f"checkpoint-{saved}" in read_text(log2), read_text(log2)[-3000:]
    assert train_steps(out)[-1] == saved + 1


def test_launcher_sigterm_while_server_starts_stops_it(vllm_server, tmp_path):
    port, reservation = reserve_port()
    log = str(tmp_path / "launch.log")
    train = small_run(vllm_server.model, vllm_server.data, str(tmp_path / "run"), 5)
    proc = launch(["--port", str(port), RECIPE, *train], log, shell=True)
    server_pid = None
    try:
        server_pid = server_child(proc.pid, 120)  # found: it is starting (a CPU start takes about 90 s)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert not group_processes(server_pid), "server left behind"  # before the clean-up below
    finally:
        reservation.close()
        if proc.poll() is None:
            kill_group(proc.pid)
        if server_pid:
            kill_group(server_pid)
    assert proc.returncode == 143, read_text(log)[-2000:]
    assert "stopping the vLLM server" in read_text(log)
    assert not group_processes(server_pid), "server left behind"


def test_grpo_two_processes_only_rank0_talks_http(vllm_server, tmp_path):
    """DDP on CPU (2 processes): every rank joins the syncs, one evaluation per point, no hang."""
    out = str(tmp_path / "run")
    run(accelerate_cmd("cpu_ddp.yaml", "recipes/grpo.py", "--config", RECIPE,
                       *small_run(vllm_server.model, vllm_server.data, out, 2, "--eval_steps", "1", "--save_steps",
                                  "1000", "--vllm_server_base_url", vllm_server.url)), timeout=600)
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 1, 2]
    syncs = [r["weight_sync/logprob_max_abs_diff"] for r in rows if "weight_sync/logprob_max_abs_diff" in r]
    assert syncs and all(d <= 0.05 for d in syncs)


def test_sync_check_mismatch_stops_the_run_with_its_error(vllm_server, tmp_path):
    """A tolerance far below the float32 noise floor (~1e-6) makes the second sync a mismatch: the run must
    stop there with the check's one-line error, not train on."""
    out = str(tmp_path / "run")
    proc = run(recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                          *small_run(vllm_server.model, vllm_server.data, out, 20, "--eval_steps", "1000",
                                     "--save_steps", "1000", "--sync_check_min_tolerance", "1e-15",
                                     "--sync_check_factor", "1e-9", "--vllm_server_base_url", vllm_server.url)),
               timeout=600, check=False)
    assert proc.returncode != 0
    # (a progress bar may precede it on the terminal line)
    errors = [ln[ln.index("error: "):] for ln in proc.stderr.splitlines() if "error: " in ln]
    assert len(errors) == 1 and "weight sync check failed at step" in errors[0], proc.stderr[-3000:]
    assert "not serving the trained weights" in errors[0]
    steps = [r["step"] for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if "train/loss" in r] \
        if os.path.isfile(os.path.join(out, "metrics.jsonl")) else []
    assert len(steps) <= 2, steps  # stopped at the second sync, not 20 steps later
