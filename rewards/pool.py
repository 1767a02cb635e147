"""Worker processes that run answer checks under a per-item CPU-time bound, without signals.

sympy can hang or eat memory on adversarial answers, and signal-based timeouts only work in the main
thread. Here every check runs in a child process; the parent waits on pipes and kills a worker whose
check has used more than the bound of CPU time (or replaces one that crashed). The bound is CPU time,
not wall time, because during training the trainer and the vLLM server keep the cores busy: a check that
takes 0.3 s alone took over 2 s of wall time there, waiting for a core, and scored 0. There are never more
workers than the CPUs this process may use (rewards/sizing.py: affinity, cgroup quota, Slurm, shared among
the node's ranks), and a worker starts only when a check is waiting and no worker is free. Workers come from a
forkserver that has sympy and the graders imported, so a replacement starts in a few milliseconds and never
inherits the trainer's torch threads.

Callers never wait for each other: each `run` is a request whose checks a dispatcher thread hands to free
workers, taking one check from each waiting request in turn. The evaluation thread's grading and the
training step's rewards share the workers but neither holds a lock over its batch, so a long evaluation
batch delays a training batch by at most one check per worker, never by the whole evaluation.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

from rewards.sizing import pool_size

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
        self.item: int = -1
        self.req: Any = None
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


class _Request:
    """One caller's checks: results fill in as workers answer; `done` is set when the last one has."""

    def __init__(self, tasks: list[tuple], timeout: float) -> None:
        self.tasks, self.timeout = tasks, timeout
        self.results: list[Any] = [None] * len(tasks)
        self.next = 0
        self.running = 0  # checks of this request on a worker now
        self.left = len(tasks)
        self.done = threading.Event()

    def finish(self, i: int, value: Any) -> None:
        self.results[i] = value
        self.running -= 1
        self.left -= 1
        if self.left <= 0:
            self.done.set()


class WorkerPool:
    """`run(tasks, timeout)` -> one result per task: the checker's value, TIMEOUT or (ERROR, message).

    Safe from any number of threads at once; a dispatcher thread owns the workers."""

    def __init__(self, processes: int | None = None) -> None:
        self.size = max(1, processes or pool_size())
        self._ctx = _context()
        self._workers: list[_Worker] = []
        self._requests: deque[_Request] = deque()  # requests with checks not yet handed out, served in turn
        self._lock = threading.Lock()  # guards _requests and _closed only: held for microseconds
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread: threading.Thread | None = None
        self._inflight: list[_Request] = []
        self._pid = os.getpid()
        self.restarts = 0

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def submit(self, tasks: list[tuple], timeout: float) -> _Request:
        """Queue the checks and return at once; `request.done.wait()` then `request.results`."""
        req = _Request(list(tasks), timeout)
        if not req.tasks:
            req.done.set()
            return req
        with self._lock:
            if self._closed:
                raise RuntimeError("the grading pool is shut down")
            self._requests.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name="rewards-pool", daemon=True)
                self._thread.start()
        self._wake()
        return req

    def run(self, tasks: list[tuple], timeout: float) -> list[Any]:
        req = self.submit(tasks, timeout)
        req.done.wait()
        return req.results

    def _next_task(self) -> tuple[_Request, int] | None:
        """The next check: from the waiting request with the fewest checks on workers now (the oldest of those),
        so a small training batch goes first to the next free worker even while a long evaluation runs."""
        with self._lock:
            if not self._requests:
                return None
            req = min(self._requests, key=lambda r: r.running)
            i = req.next
            req.next += 1
            req.running += 1
            if req.next >= len(req.tasks):
                self._requests.remove(req)
            return req, i

    def _unsent(self) -> int:
        with self._lock:
            return sum(len(r.tasks) - r.next for r in self._requests)

    def _dispatch(self) -> None:
        """The dispatcher thread; should it ever fail, every waiting caller gets an error instead of hanging."""
        try:
            self._serve_requests()
        except BaseException as exc:  # noqa: BLE001 - callers must never wait for ever
            with self._lock:
                pending, self._requests, self._thread = list(self._requests), deque(), None
            for req in pending + self._inflight:
                for i, r in enumerate(req.results):
                    if r is None and not req.done.is_set():
                        req.finish(i, (ERROR, f"grading pool failed: {exc!r}"[:300]))
            for w in list(self._workers):
                w.kill()
            self._workers.clear()

    def _serve_requests(self) -> None:
        idle: list[_Worker] = []
        retry: list[tuple[_Request, int]] = []  # checks whose worker died before it got them
        starting: dict[Connection, _Worker] = {}
        busy: dict[Connection, _Worker] = {}

        def replace(w: _Worker) -> None:
            w.kill()
            if w in self._workers:
                self._workers.remove(w)
            self.restarts += 1

        while True:
            with self._lock:
                closed = self._closed
            if closed:
                break
            while idle:
                nxt = retry.pop() if retry else self._next_task()
                if nxt is None:
                    break
                w = idle.pop()
                req, i = nxt
                try:
                    w.conn.send(req.tasks[i])
                except (OSError, ValueError):
                    retry.append(nxt)
                    replace(w)
                    continue
                w.item, w.req, w.started, w.cpu0 = i, req, time.monotonic(), cpu_seconds(w.proc.pid)
                busy[w.conn] = w
            # start workers only for checks that wait, never past the size
            self._inflight = [w.req for w in busy.values()] + [r for r, _ in retry]
            want = min(self._unsent() + len(retry) - len(starting), self.size - len(self._workers))
            for _ in range(max(0, want)):
                nw = self._spawn()
                self._workers.append(nw)
                starting[nw.conn] = nw
            # The bound is on the CPU time the check itself used, so a check that waits for a core on a busy
            # machine is not cut short; a wall-clock backstop catches a worker that is stopped or swapping.
            now = time.monotonic()
            spent = {c: cpu_seconds(w.proc.pid) - w.cpu0 for c, w in busy.items()}
            waits = [w.req.timeout - spent[c] for c, w in busy.items()]
            waits += [w.started + w.req.timeout * WALL_FACTOR - now for w in busy.values()]
            waits += [w.started + START_LIMIT - now for w in starting.values()]
            wait_for = min(max(0.005, min(waits)), 0.25) if waits else 1.0
            for conn in wait([self._wake_r, *busy, *starting], timeout=wait_for):
                if conn == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except OSError:
                        pass
                    continue
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
                    w.req.finish(w.item, conn.recv())
                    idle.append(w)
                except (EOFError, OSError):
                    replace(w)
                    w.req.finish(w.item, (ERROR, "worker died"))
            now = time.monotonic()
            for conn, w in list(busy.items()):
                if cpu_seconds(w.proc.pid) - w.cpu0 >= w.req.timeout or now - w.started >= w.req.timeout * WALL_FACTOR:
                    busy.pop(conn)
                    replace(w)  # first, so a caller that sees the timeout also sees the restart
                    w.req.finish(w.item, TIMEOUT)
            for conn, w in list(starting.items()):
                if now - w.started >= START_LIMIT:
                    starting.pop(conn)
                    replace(w)
        for req, i in [(w.req, w.item) for w in busy.values()] + retry:
            req.finish(i, (ERROR, "the grading pool is shut down"))

    def memory(self) -> list[dict[str, int]]:
        """RSS and PSS (bytes) of each live worker: PSS shares the forkserver's copy-on-write pages out."""
        return [m for w in list(self._workers) if (m := process_memory(w.proc.pid))]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pending, self._requests = list(self._requests), deque()
            thread = self._thread
        self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        for req in pending:
            for i in range(req.next, len(req.tasks)):
                req.finish(i, (ERROR, "the grading pool is shut down"))
        for w in list(self._workers):
            w.stop()
        self._workers.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def process_memory(pid: int) -> dict[str, int] | None:
    """{"rss": bytes, "pss": bytes} of a live process from /proc (None elsewhere or once it is gone)."""
    out: dict[str, int] = {}
    for name, key, field in (("status", "rss", "VmRSS:"), ("smaps_rollup", "pss", "Pss:")):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(field):
                        out[key] = int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return out or None


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool() -> WorkerPool:
    """The process-wide pool, created on first use (workers start with the first checks that need them).

    A forked child gets its own pool: the parent's dispatcher thread does not exist there."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._closed or _POOL._pid != os.getpid():
            _POOL = WorkerPool()
        return _POOL


def shutdown() -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL._pid == os.getpid():
            _POOL.close()
        _POOL = None


atexit.register(shutdown)
