"""The launcher (`python -m math_grpo.launch`) end to end on CPU: its normal path (server started, training,
clean exit, server stopped, nothing left), a signal during training, resume through it, `--server-url`
to a server that is already running, and the server role a Slurm server node runs. Everything is polled with a deadline; nothing waits a fixed time.

Server faults through the launcher (server killed mid-run, a signal while it starts) are in
tests/test_server_grpo.py."""

from __future__ import annotations

import glob
import os
import signal
import subprocess

import pytest
from _runs import (
    RECIPE,
    complete_checkpoints,
    is_vllm_server,
    kill_group,
    launch,
    read_text,
    server_child,
    small_run,
    train_steps,
    wait_for,
)
from _tiny import read_jsonl
from conftest import assert_all_gone, group_processes, reserve_port

from math_grpo.vllm_server import VLLMServerClient

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _clean_up(reservation, proc, server_pid) -> None:
    """Free the reserved port and stop whatever the test left running (the launcher, a server it started)."""
    reservation.close()
    if proc is not None and proc.poll() is None:
        kill_group(proc.pid)
    if server_pid:
        kill_group(server_pid)


def _signal_mid_training(proc: subprocess.Popen, out: str, log: str, sig: int, after_step: int) -> None:
    """Wait for a training step, signal the launcher alone (as a terminal's Ctrl-C or `kill PID` would)."""
    wait_for(f"training step {after_step}", lambda: bool(train_steps(out)) and train_steps(out)[-1] >= after_step,
             proc, log, 480)
    proc.send_signal(sig)
    proc.wait(timeout=300)


def _assert_saved_on_signal(out: str, text: str, rc: int, sig: int) -> None:
    """Exit 128+n, the signal reported, the ranks told, one complete checkpoint at the last step trained."""
    assert rc == 128 + sig, text[-4000:]
    assert f"[launch] got {signal.Signals(sig).name}" in text and "received SIGTERM" in text, text[-3000:]
    saved = complete_checkpoints(out)
    assert saved and saved[-1] == train_steps(out)[-1], (saved, text[-3000:])
    assert not glob.glob(os.path.join(out, "checkpoint-*.incomplete-*"))


@pytest.mark.timeout(1800)  # two launcher runs, the first starting its own server
def test_launcher_normal_run_then_resume_with_server_url_then_sigint(vllm_server, tmp_path):
    """The launcher's normal path (its own server up, training, clean exit, the server stopped, nothing left);
    then a resume through it against a running server (--server-url: nothing started or stopped), ended by
    Ctrl-C mid-training: checkpoint at the end of the step, exit 130, the server it was given left running."""
    out, log = str(tmp_path / "run"), str(tmp_path / "launch.log")
    port, reservation = reserve_port()
    proc, server_pid = None, None
    try:
        proc = launch(["--port", str(port), RECIPE, *small_run(vllm_server.model, vllm_server.data, out, 2,
                                                                "--save_steps", "2", "--eval_steps", "1000")], log)
        server_pid = server_child(proc.pid, 120)
        client = VLLMServerClient(f"http://127.0.0.1:{port}")
        wait_for("a healthy server", lambda: client.is_healthy(timeout=2), proc, log, 420)
        assert listening_addresses(port) == {"127.0.0.1"}  # the default --host: loopback only
        proc.wait(timeout=600)
        assert proc.returncode == 0, read_text(log)[-4000:]
        assert_all_gone(server_pid, proc.pid, run_dir=out)  # before the clean-up below could do the launcher's job
    finally:
        _clean_up(reservation, proc, server_pid)
    text = read_text(log)
    assert f"starting the vLLM server (CPU build) for {vllm_server.model} at http://127.0.0.1:{port}" in text
    assert "stopping the vLLM server" in text
    assert train_steps(out) == [1, 2] and complete_checkpoints(out) == [2]
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r for r in rows if "weight_sync/logprob_max_abs_diff" in r], "rollouts did not come from the server"
    assert os.path.getsize(os.path.join(out, "server.log")) > 0

    # Resume through the launcher against the session's server, then Ctrl-C once it trained past step 3.
    log2 = str(tmp_path / "resume.log")
    proc = launch(["--server-url", vllm_server.url, RECIPE,
                   *small_run(vllm_server.model, vllm_server.data, out, 500, "--save_steps", "1000", "--eval_steps",
                              "1000", "--resume_from_checkpoint", "auto")], log2)
    try:
        _signal_mid_training(proc, out, log2, signal.SIGINT, after_step=3)
        assert_all_gone(proc.pid, run_dir=out)
    finally:
        if proc.poll() is None:
            kill_group(proc.pid)
    text = read_text(log2)
    assert "resuming from" in text and "checkpoint-2" in text, text[-3000:]
    steps = train_steps(out)
    assert steps[:3] == [1, 2, 3] and len(steps) == len(set(steps)), steps  # went on from 2, not from 0
    _assert_saved_on_signal(out, text, proc.returncode, signal.SIGINT)
    assert complete_checkpoints(out)[0] == 2  # the checkpoint it resumed from is kept
    assert "starting the vLLM server" not in text and "stopping the vLLM server" not in text
    assert group_processes(vllm_server.pid) and VLLMServerClient(vllm_server.url).is_healthy()


def test_launcher_sigterm_during_training_saves_and_exits_143(vllm_server, tmp_path):
    """A scheduler's SIGTERM to the launcher mid-training: the ranks checkpoint at the end of the step, the
    launcher exits 143 and leaves alone the server it was given. (SIGINT: the test above; a signal while the
    launcher's own server starts: tests/test_server_grpo.py.)"""
    out, log = str(tmp_path / "run"), str(tmp_path / "launch.log")
    train = small_run(vllm_server.model, vllm_server.data, out, 500, "--save_steps", "1000", "--eval_steps", "1000")
    proc = launch(["--server-url", vllm_server.url, RECIPE, *train], log)
    try:
        _signal_mid_training(proc, out, log, signal.SIGTERM, after_step=2)
        assert_all_gone(proc.pid, run_dir=out)  # before the clean-up below
    finally:
        if proc.poll() is None:
            kill_group(proc.pid)
    text = read_text(log)
    _assert_saved_on_signal(out, text, proc.returncode, signal.SIGTERM)
    assert len(complete_checkpoints(out)) == 1 and train_steps(out)[-1] >= 2
    assert "stopping the vLLM server" not in text
    assert group_processes(vllm_server.pid) and VLLMServerClient(vllm_server.url).is_healthy()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (IPv4, from /proc/net/tcp: state 0A is LISTEN)."""
    found = set()
    with open("/proc/net/tcp", encoding="ascii") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                found.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_launcher_health_timeout_expiry_is_one_line_and_stops_the_server(vllm_server, tmp_path):
    """A server that is not healthy within --health-timeout (a CPU start takes about 90 s; 3 s is given):
    one error line naming the URL and the timeout, exit 2, the half-started server stopped; meanwhile it
    listens on loopback only (the default --host)."""
    out, log = str(tmp_path / "run"), str(tmp_path / "launch.log")
    port, reservation = reserve_port()
    proc = None
    try:
        proc = launch(["--port", str(port), "--health-timeout", "3", RECIPE,
                       *small_run(vllm_server.model, vllm_server.data, out, 2)], log)
        proc.wait(timeout=300)
    finally:
        reservation.close()
        if proc is not None and proc.poll() is None:
            kill_group(proc.pid)
    text = read_text(log)
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, text[-3000:]
    assert f"http://127.0.0.1:{port}" in errors[0] and "not healthy after 3 s" in errors[0], errors
    assert "stopping the vLLM server" in text and "Traceback" not in text
    assert_all_gone(proc.pid, run_dir=out)
    assert not [ln for ln in subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True).stdout.splitlines()
                if f"--port {port}" in ln and is_vllm_server(ln)], "server left behind"
    assert not os.path.isdir(os.path.join(out, "checkpoint-1"))  # training never started


@pytest.mark.timeout(900)
def test_launcher_server_role_serves_until_sigterm_then_stops_its_server(vllm_server, tmp_path):
    """`--role server`, what a Slurm server node runs (launch/slurm/server.sh): the server started and kept up,
    no training, and on SIGTERM the server stopped by the launcher's own teardown, exit 143, nothing left."""
    out, log = str(tmp_path / "run"), str(tmp_path / "launch.log")
    port, reservation = reserve_port()
    proc = None
    try:
        proc = launch(["--role", "server", "--port", str(port), RECIPE,
                       *small_run(vllm_server.model, vllm_server.data, out, 2)], log)
        url = f"http://127.0.0.1:{port}"
        # The launcher's own word that its server is up (a signal before that stops a server still starting).
        wait_for("the server role's server healthy", lambda: f"[server] {url} healthy" in read_text(log), proc, log,
                 600)
        assert VLLMServerClient(url).is_healthy(timeout=5.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        assert_all_gone(proc.pid, run_dir=out)
    finally:
        reservation.close()
        if proc is not None and proc.poll() is None:
            kill_group(proc.pid)
    text = read_text(log)
    assert proc.returncode == 143, text[-3000:]
    assert "[launch] got SIGTERM" in text and "stopping the vLLM server" in text, text[-3000:]
    assert "[launch] training:" not in text and not train_steps(out)
    assert os.path.isfile(os.path.join(out, "server_status.json"))  # the supervisor published its state
