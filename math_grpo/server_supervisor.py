"""The launcher's watch over the vLLM server it started: a server that dies is started again.

`python -m math_grpo.launch` polls `ServerSupervisor.poll()` while training runs. When the server's process
exits (killed, out of memory, a driver fault), the supervisor logs why (the exit status and the telling line of
what the dead server wrote to server.log), stops what is left of its process group, waits a back-off (5 s,
doubling, at most 60 s) and starts the same command again, at most `--server-restarts` times in a run. It never
blocks: the launcher keeps answering signals and watching the training processes while a server starts.

What it does is published for the trainer in a small JSON file (`math_grpo.server_recovery` reads it): the
state (`up`, `restarting`, `failed`), the restart count, how long the trainer should be ready to wait, and the
cause. The trainer waits for the restarted server, pushes the full weights and sends the lost request again;
once the supervisor gives up (`failed`) it stops at once with the clear error of a lost server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from math_grpo.processes import wait_group
from math_grpo.server_recovery import write_status
from math_grpo.vllm_server import ServerProcess, VLLMServerClient

BACKOFF_S = 5.0
BACKOFF_MAX_S = 60.0
HEALTH_EVERY_S = 1.0
_CAUSE_MARKERS = ("Error", "error:", "Killed", "killed", "out of memory", "OOM", "CUDA", "Traceback")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def exit_reason(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class ServerSupervisor:
    """Restart the launcher's server when it dies (bounded, with back-off); publish the state for the trainer."""

    def __init__(self, server: ServerProcess, max_restarts: int, health_timeout: float, status_path: str,
                 backoff_s: float = BACKOFF_S, say: Callable[[str], None] = _say):
        self.server = server
        self.max_restarts = max_restarts
        self.health_timeout = health_timeout
        self.status_path = status_path
        self.backoff_s = backoff_s
        self.say = say
        self.state = "up"
        self.restarts = 0  # restarts that came up healthy
        self.attempts = 0  # restarts begun
        self.cause = ""
        self.until = 0.0  # back-off end, or the start's health deadline
        self.started = 0.0
        self._next_health = 0.0
        self._log_offset = self._log_size()
        self._client = VLLMServerClient(server.url, timeout=2.0)
        self.publish()

    @property
    def wait_s(self) -> float:
        """How long the trainer should be ready to wait for one outage: every restart left, each at its worst."""
        left = max(self.max_restarts - self.attempts, 0)
        return left * (BACKOFF_MAX_S + self.health_timeout) + 30.0

    def publish(self) -> None:
        write_status(self.status_path, state=self.state, restarts=self.restarts, attempts=self.attempts,
                     max_restarts=self.max_restarts, wait_s=self.wait_s, cause=self.cause, url=self.server.url,
                     pid=self.server.proc.pid if self.server.proc is not None else None, launcher_pid=os.getpid())

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.server.log_path)
        except OSError:
            return 0

    def _cause(self, code: int | None) -> str:
        """The exit status and the most telling line the server wrote since it was (re)started."""
        try:
            with open(self.server.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            text = ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        hits = [ln for ln in lines if any(m in ln for m in _CAUSE_MARKERS)]
        if hits:
            return f"{exit_reason(code)}; server.log: {hits[-1][:300]}"
        last = f"no error line, last: {lines[-1][:200]}" if lines else "nothing written since it started"
        return f"{exit_reason(code)}; server.log: {last}"

    def give_up(self, why: str) -> None:
        """No more restarts (the launcher is stopping): the trainer stops waiting at once."""
        if self.state != "failed":
            self.state, self.cause = "failed", why
            self.publish()

    def poll(self) -> None:
        """Advance: notice a death, wait out the back-off, start again, see the new server healthy."""
        now = time.monotonic()
        proc = self.server.proc
        if self.state == "up":
            if proc is not None and proc.poll() is None:
                return
            self._died(proc.returncode if proc is not None else None)
        elif self.state == "restarting" and proc is None:
            if now >= self.until:
                self._log_offset = self._log_size()
                self.server.spawn()
                self.started, self.until = now, now + self.health_timeout
                self.say(f"[launch] restarting the vLLM server ({self.attempts} of {self.max_restarts}): pid "
                         f"{self.server.proc.pid}, same command; log: {self.server.log_path}")
                self.publish()
        elif self.state == "restarting":
            if proc.poll() is not None:
                self._died(proc.returncode)
            elif now >= self._next_health:
                self._next_health = now + HEALTH_EVERY_S
                if self._client.is_healthy(timeout=2.0):
                    self.state, self.restarts = "up", self.restarts + 1
                    self.say(f"[launch] the vLLM server is back after {now - self.started:.0f} s "
                             f"(restart {self.restarts} of at most {self.max_restarts}, pid {proc.pid})")
                    self.publish()
                elif now >= self.until:
                    self.say(f"[launch] the restarted vLLM server was not healthy within {self.health_timeout:.0f} s")
                    self._died(None, stop=True)

    def _died(self, code: int | None, stop: bool = False) -> None:
        proc = self.server.proc
        cause = self._cause(code) if not stop else f"not healthy within {self.health_timeout:.0f} s"
        if proc is not None:  # what is left of its process group (engine workers) goes too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            wait_group(proc.pid, 10.0)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.server.proc = None
        self.cause = cause
        if self.attempts >= self.max_restarts:
            self.state = "failed"
            self.say(f"[launch] the vLLM server died ({cause}); not restarting it: {self.attempts} of "
                     f"{self.max_restarts} restart(s) used (--server-restarts)")
        else:
            delay = min(self.backoff_s * 2 ** self.attempts, BACKOFF_MAX_S)
            self.attempts += 1
            self.state, self.until = "restarting", time.monotonic() + delay
            self.say(f"[launch] the vLLM server died ({cause}); restart {self.attempts} of {self.max_restarts} "
                     f"in {delay:.0f} s")
        self.publish()
