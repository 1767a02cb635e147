"""The trainer's side of a vLLM server that dies mid-run: wait for it to come back, then go on.

A request lost to a dead server (a rollout, the prefetched rollout of `async_rollouts`, a dynamic-sampling
refill round, a weight sync or its check) is not an error of the run if the server comes back: rank 0 waits for
`/health` (at most `server_restart_wait_s`, or as long as the launcher that owns the server says a restart may
take), every rank then pushes the full weights again (the restarted server holds the checkpoint it was started
from), and the lost request is sent again for the same prompts, so the data order is the uninterrupted run's and
no batch trains twice. Whether a failed request means a lost server is decided on rank 0 by asking `/health`
(a server that answers it and refused a request is a real error, raised as before) and broadcast, so every rank
takes the same path through the collectives.

The launcher (`math_grpo.server_supervisor`) restarts a server it started and publishes what it does in a small
JSON file named by the environment variable `MATH_GRPO_SERVER_STATUS`: its restart count (a restart the trainer
did not see fail a request still forces a full weight push before the next rollout), how long a restart may take,
and `failed` once it gave up (the trainer then stops at once with the clear error of a lost server).

Nothing here imports TRL: the hooks are in `math_grpo.server_generation`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from math_grpo.errors import MathGRPOError
from math_grpo.vllm_server import VLLMServerClient

STATUS_ENV = "MATH_GRPO_SERVER_STATUS"
PAUSE_ENV = "MATH_GRPO_TEST_PAUSE"  # tests: "rollout@3,sync@5,eval@6" (see `pause_point`)
PAUSE_DIR_ENV = "MATH_GRPO_TEST_PAUSE_DIR"
POLL_S = 1.0
HEALTHY_RETRY_WINDOW_S = 60.0  # a second failure beside a healthy server within this stops the run
_PAUSED: set[str] = set()  # pause points already taken (each at most once per process)


def read_status(path: str | None = None) -> dict[str, Any]:
    """The launcher's published server state ({} when there is none, or it cannot be read right now)."""
    path = path or os.environ.get(STATUS_ENV)
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_status(path: str, **state: Any) -> None:
    """Atomically replace the status file (the trainer may read it at any time)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(tmp, path)


class ServerRecovery:
    """Rank 0's view of the server's life: is a failed request a lost server, wait for it, count what it cost."""

    def __init__(self, url: str, wait_s: float, say: Callable[[str], None] | None = None):
        self.url = url.rstrip("/")
        self.wait_s = wait_s
        self.say = say or (lambda line: print(line, flush=True))
        self.restarts = 0  # outages the run came through
        self.down_s = 0.0  # seconds the run spent waiting for the server
        self.seen_restarts = int(read_status().get("restarts", 0))
        self._health = VLLMServerClient(self.url, timeout=5.0)
        self._healthy_retry_at = -HEALTHY_RETRY_WINDOW_S  # when a request last failed beside a healthy server

    def restarted_unseen(self) -> bool:
        """True once if the launcher restarted the server since we last looked (no request of ours saw it)."""
        restarts = int(read_status().get("restarts", self.seen_restarts))
        if restarts == self.seen_restarts:
            return False
        self.seen_restarts = restarts
        self.restarts += 1
        self.say(f"[server] {self.url} was restarted by the launcher; pushing the full weights again")
        return True

    def is_lost(self, error: str = "") -> bool:
        """After a failed request: True when the server does not answer /health, was restarted meanwhile, or the
        request lost its connection (a server back already, by another's hand, lost our weights too)."""
        if "is unreachable" in error:
            return True
        status, probe = read_status(), VLLMServerClient(self.url, timeout=5.0)  # its own session: any thread
        return status.get("state") in ("restarting", "failed") or not probe.is_healthy(timeout=5.0) \
            or int(status.get("restarts", self.seen_restarts)) != self.seen_restarts

    def wait_for_return(self, error: str) -> str | None:
        """Block until the server answers /health again; None when it does, else the run's stop message."""
        status = read_status()
        restarted = int(status.get("restarts", self.seen_restarts)) != self.seen_restarts
        if status.get("state") not in ("restarting", "failed") and not restarted and self._health.is_healthy(5.0):
            # A request lost to an outage the run already came through (the async request posted before it),
            # or a dropped connection: the server is up, so nothing to wait for and no restart to count.
            now = time.monotonic()
            if now - self._healthy_retry_at < HEALTHY_RETRY_WINDOW_S:  # failing again: not a lost connection
                return f"{error}; the server answers /health but its requests keep failing"
            self._healthy_retry_at = now
            self.say(f"[server] a request to {self.url} failed ({error}) but the server answers /health; "
                     "pushing the full weights, then the request again")
            return None
        bound = max(self.wait_s, float(status.get("wait_s", 0) or 0))
        owner = "the launcher restarts it" if status else "waiting for it to come back"
        self.say(f"[server] lost the vLLM server at {self.url} ({error}); {owner}, up to {bound:.0f} s "
                 "(server_restart_wait_s)")
        t0 = time.monotonic()
        while True:
            status = read_status()
            if status.get("state") == "failed":
                return (f"{error}; the launcher gave up restarting it after {status.get('restarts', 0)} restart(s) "
                        f"(--server-restarts): {status.get('cause', 'see server.log')}")
            if status.get("state") != "restarting" and self._health.is_healthy(timeout=5.0):
                break
            waited = time.monotonic() - t0
            if waited >= bound:
                return f"{error}; not back within {bound:.0f} s (server_restart_wait_s)"
            time.sleep(min(POLL_S, bound - waited))
        waited = time.monotonic() - t0
        self.restarts += 1
        self.down_s += waited
        self.seen_restarts = int(status.get("restarts", self.seen_restarts))
        self.say(f"[server] {self.url} is back after {waited:.0f} s; pushing the full weights, then the lost "
                 "request again")
        return None

    def metrics(self) -> dict[str, float]:
        return {"server/restarts": float(self.restarts), "server/down_seconds": self.down_s}


def recover_all_ranks(recovery: ServerRecovery | None, error: str, broadcast: Callable[[Any], Any],
                      is_main: bool) -> bool:
    """Every rank, after a request failed with `error` (rank 0's text; others pass ""): True when the server was
    lost and is back (the caller pushes the weights and retries); False for an error that is not a lost server;
    raises ServerError (every rank) when it does not come back in time."""
    from math_grpo.errors import ServerError

    verdict = None
    if is_main:
        if recovery is None or not recovery.is_lost(error):
            verdict = ("raise", None)
        else:
            stop = recovery.wait_for_return(error)
            verdict = ("stop", stop) if stop else ("retry", None)
    verdict = broadcast(verdict)
    if verdict[0] == "stop":
        raise ServerError(verdict[1])
    return verdict[0] == "retry"


def rollouts_on_main(vg: Any, all_prompts: list, all_next: list, num_generations: int, profiler: Any) -> tuple:
    """Rank 0's part of a server-mode generation round of `vg` (server_generation's ServerVLLMGeneration): the batch
    (prefetched with async_rollouts, else sampled now), the next batch's request posted (async_rollouts).
    Returns (output, metrics, error, resync); resync: the launcher restarted the server unseen, so the full
    weights go first."""
    if vg.recovery is not None and vg.recovery.restarted_unseen():
        return None, {}, None, True
    step, unique = vg.step_fn(), all_prompts[::num_generations]
    try:
        pause_point("rollout", step)
        output, record = vg.prefetcher.take(unique, step) if vg.prefetcher is not None else (None, {})
        if output is None:
            with profiler or nullcontext():
                output = vg._sample(unique, num_generations)
        if vg.prefetcher is not None and len(all_next) == len(all_prompts) and vg.prefetch_allowed():
            ahead = all_next[::num_generations]
            vg.prefetcher.submit(ahead, step, functools.partial(vg._sample, ahead, num_generations))
        return output, {**record, **(vg.recovery.metrics() if vg.recovery is not None else {})}, None, False
    except MathGRPOError as exc:
        return None, {}, str(exc), False
    except Exception as exc:
        return None, {}, f"rollout request to {vg.http.base_url} failed: {type(exc).__name__}: {exc}", False


def recover(vg: Any, error: str, broadcast: Callable[[Any], Any]) -> bool:
    """Every rank of `vg` (ServerVLLMGeneration), after a request failed with `error`: False when the server was not
    lost (the caller raises); else, once it is back, the request posted ahead is dropped (its batch is sampled
    again), the full weights are pushed (a new NCCL communicator first) and the `after_recovery` hooks run."""
    if not recover_all_ranks(vg.recovery, error, broadcast, vg.accelerator.is_main_process):
        return False
    if vg.prefetcher is not None:
        vg.prefetcher.wait()
        vg.prefetcher.pending = None
    if vg.accelerator.is_main_process and vg.settings.backend == "nccl":
        vg.vllm_client.init_communicator(device=vg.accelerator.device)
    vg.sync_weights()
    for hook in list(vg.after_recovery):
        hook()
    return True


def pause_point(name: str, step: int) -> None:
    """Tests only: with MATH_GRPO_TEST_PAUSE naming `name@step`, create PAUSE_DIR/paused-NAME-STEP and wait (at
    most 10 min) until the test removes it, so a test can kill the server at a known point of the run."""
    wanted, point = os.environ.get(PAUSE_ENV), f"{name}@{step}"
    if not wanted or point not in wanted.split(",") or point in _PAUSED:
        return
    _PAUSED.add(point)
    path = os.path.join(os.environ.get(PAUSE_DIR_ENV, "."), f"paused-{name}-{step}")
    open(path, "w").close()
    deadline = time.monotonic() + 600
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
