"""Worker processes that run answer checks under a per-item CPU-time bound, without signals.

sympy can hang or eat memory on adversarial answers, and signal-based timeouts only work in the main
thread. Here every check runs in a child process; the parent waits on pipes and kills a worker whose
check has used more than the bound of CPU time (or replaces one that crashed). The bound is CPU time,
not wall time, because during training the trainer and the vLLM server keep the cores busy: a check that
takes 0.3 s alone took over 2 s of wall time there, waiting for a core, and scored 0. There are never more
workers than cores. Workers come from a forkserver that has sympy and
the graders imported, so a replacement starts in a few milliseconds and never inherits the trainer's
torch threads. The pool starts lazily, is shared by every caller (threads serialize on one lock) and is
shut down at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

PRELOAD = ["rewards._worker"]
ERROR = "error"
TIMEOUT = "timeout"
READY = "ready"
START_LIMIT = 60.0  # seconds a fresh worker may take to import sympy and the graders
WALL_FACTOR = 10.0  # wall-clock backstop, in multiples of the CPU-time bound
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc; psutil elsewhere); 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        try:
            import psutil

            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        except Exception:
            return 0.0


def _context():
    try:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    except ValueError:  # no forkserver on this platform
        return mp.get_context("spawn")


WORKER_MEMORY = 4 << 30  # bytes of address space per worker: a runaway sympy raises MemoryError instead


def _serve(conn: Connection) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    except (ImportError, ValueError, OSError):
        pass
    from rewards._worker import run_task

    conn.send(READY)  # the per-item clock starts only once imports are done
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            out: Any = run_task(*task)
        except Exception as exc:  # a bug in a checker must not kill the worker
            out = (ERROR, f"{type(exc).__name__}: {exc}"[:300])
        try:
            conn.send(out)
        except (OSError, ValueError):
            return


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _hidden_main():
    """Start workers without re-importing the caller's main script (the trainer imports torch there, and a
    script without a `__main__` guard would start processes from inside the child)."""
    main = sys.modules.get("__main__")
    with _MAIN_LOCK:
        saved = {k: main.__dict__.pop(k) for k in ("__file__", "__spec__") if main and k in main.__dict__}
        if main is not None:
            main.__spec__ = None
        try:
            yield
        finally:
            if main is not None:
                main.__dict__.pop("__spec__", None)
                main.__dict__.update(saved)


class _Worker:
    def __init__(self, ctx) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        with _hidden_main():
            self.proc.start()
        child.close()
        self.item: int | None = None
        self.started = time.monotonic()
        self.cpu0 = 0.0
        self.ready = False

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(1.0)
        except Exception:
            pass
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(0.5)
        except Exception:
            pass
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


class WorkerPool:
    """`run(tasks, timeout)` -> one result per task: the checker's value, TIMEOUT or (ERROR, message)."""

    def __init__(self, processes: int | None = None) -> None:
        self.size = max(1, processes or os.cpu_count() or 1)
        self._ctx = _context()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx)

    def _ensure(self) -> None:
        while len(self._workers) < self.size:
            self._workers.append(self._spawn())

    def run(self, tasks: list[tuple], timeout: float) -> list[Any]:
        if not tasks:
            return []
        with self._lock:
            if self._closed:
                raise RuntimeError("the grading pool is shut down")
            self._ensure()
            return self._run(tasks, timeout)

    def _run(self, tasks: list[tuple], timeout: float) -> list[Any]:
        results: list[Any] = [None] * len(tasks)
        todo = list(range(len(tasks) - 1, -1, -1))  # a stack, first task on top
        idle = [w for w in self._workers if w.ready]
        starting = {w.conn: w for w in self._workers if not w.ready}
        busy: dict[Connection, _Worker] = {}

        def replace(w: _Worker) -> None:
            w.kill()
            self._workers.remove(w)
            self.restarts += 1
            nw = self._spawn()
            self._workers.append(nw)
            starting[nw.conn] = nw

        while todo or busy:
            while todo and idle:
                w = idle.pop()
                i = todo.pop()
                try:
                    w.conn.send(tasks[i])
                except (OSError, ValueError):
                    todo.append(i)
                    replace(w)
                    continue
                w.item, w.started, w.cpu0 = i, time.monotonic(), cpu_seconds(w.proc.pid)
                busy[w.conn] = w
            if not todo and not busy:
                break
            # The bound is on the CPU time the check itself used, so a check that waits for a core on a busy
            # machine is not cut short; a wall-clock backstop catches a worker that is stopped or swapping.
            now = time.monotonic()
            spent = {c: cpu_seconds(w.proc.pid) - w.cpu0 for c, w in busy.items()}
            waits = [timeout - spent[c] for c in busy] + [w.started + timeout * WALL_FACTOR - now for w in busy.values()]
            waits += [w.started + START_LIMIT - now for w in starting.values()]
            wait_for = min(max(0.005, min(waits)), 0.25) if waits else 0.05
            for conn in wait(list(busy) + list(starting), timeout=wait_for):
                if conn in starting:
                    w = starting.pop(conn)
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):
                        msg = None
                    if msg == READY:
                        w.ready = True
                        idle.append(w)
                    else:
                        replace(w)
                    continue
                w = busy.pop(conn)
                try:
                    results[w.item] = conn.recv()
                    idle.append(w)
                except (EOFError, OSError):
                    results[w.item] = (ERROR, "worker died")
                    replace(w)
            now = time.monotonic()
            for conn, w in list(busy.items()):
                if cpu_seconds(w.proc.pid) - w.cpu0 >= timeout or now - w.started >= timeout * WALL_FACTOR:
                    busy.pop(conn)
                    results[w.item] = TIMEOUT
                    replace(w)
            for conn, w in list(starting.items()):
                if now - w.started >= START_LIMIT:
                    starting.pop(conn)
                    replace(w)
        return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for w in self._workers:
                w.stop()
            self._workers.clear()


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool() -> WorkerPool:
    """The process-wide pool, started on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._closed:
            _POOL = WorkerPool()
        return _POOL


def shutdown() -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


atexit.register(shutdown)
