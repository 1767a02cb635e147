"""Rollouts generated on the vLLM server while the trainer trains (`async_rollouts: true`, server mode).

A generation round in TRL is: sync the weights, send the batch's prompts to the server, wait, train. With the
overlap, round t instead (i) waits for batch t's request, which was posted during round t-1, (ii) pushes the
weights to the now idle server (so a sync never runs under a request), (iii) posts batch t+1's prompts from a
background thread and (iv) trains on batch t while the server samples batch t+1. Batch t was sampled with the
weights of round t-1: its *staleness* is the number of optimizer steps between those weights and the step it
starts training at. It is logged per round (`async/staleness`), never exceeds `max_staleness` (a batch over the
bound is dropped and sampled again), and TRL's importance-sampling correction over vLLM's own sampling logprobs
corrects the lag.

Only HTTP runs in the background thread: every collective (gathers, broadcasts, ZeRO-3 parameter gathers for
the sync) stays in the training loop's thread, on every rank. Nothing here imports TRL: the hooks into
GRPOTrainer are `math_grpo.trl_adapter`'s job.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

RECENT = 256  # items of the epoch iterator remembered after they were handed out (to find the current one)


class Lookahead:
    """Wraps the Trainer's epoch iterator: yields the same items in the same order, and can look ahead.

    Looking ahead reads items early from the source and hands them out later, so the data order (and what
    `--resume_from_checkpoint` skips) is exactly the Trainer's own.
    """

    def __init__(self, source: Iterator):
        self.source = source
        self._ahead: deque = deque()
        self._recent: deque = deque(maxlen=RECENT)  # (index, item), handed out already
        self._count = 0  # items handed out
        self._exhausted = False

    def __iter__(self) -> Lookahead:
        return self

    def __next__(self) -> Any:
        if self._ahead:
            item = self._ahead.popleft()
        elif self._exhausted:
            raise StopIteration
        else:
            try:
                item = next(self.source)
            except StopIteration:
                self._exhausted = True
                raise
        self._recent.append((self._count, item))
        self._count += 1
        return item

    def index_of(self, item: Any) -> int | None:
        """The position of an item already handed out (by identity), or None."""
        for index, seen in reversed(self._recent):
            if seen is item:
                return index
        return None

    def item_at(self, index: int) -> Any | None:
        """The item at `index` of the epoch (reading ahead as needed); None past the end of the epoch."""
        if index < self._count:
            return next((seen for i, seen in self._recent if i == index), None)
        while len(self._ahead) <= index - self._count:
            if self._exhausted:
                return None
            try:
                self._ahead.append(next(self.source))
            except StopIteration:
                self._exhausted = True
                return None
        return self._ahead[index - self._count]


@dataclass
class _Request:
    key: list  # the prompts (token ids) it samples
    step: int  # the optimizer step whose weights the server held when it was posted
    thread: threading.Thread
    started: float
    result: Any = None
    error: BaseException | None = None
    seconds: float = 0.0  # how long the server took


@dataclass
class RolloutPrefetcher:
    """At most one rollout request in flight, posted from a background thread; the staleness bound."""

    max_staleness: int = 1
    pending: _Request | None = None
    waited_s: float = 0.0  # the trainer's wait for the request, since the last `take`
    history: list[dict[str, float]] = field(default_factory=list)

    def submit(self, key: list, step: int, request: Callable[[], Any]) -> None:
        """Post `request()` (plain HTTP) in the background; `key` identifies the batch it samples."""
        if self.pending is not None:
            raise RuntimeError("async rollouts: a request is already in flight")
        job = _Request(key=key, step=step, thread=None, started=time.perf_counter())  # type: ignore[arg-type]

        def work() -> None:
            t0 = time.perf_counter()
            try:
                job.result = request()
            except BaseException as exc:  # re-raised in the training thread by `take`
                job.error = exc
            job.seconds = time.perf_counter() - t0

        job.thread = threading.Thread(target=work, name=f"rollouts-step-{step}", daemon=True)
        self.pending = job
        job.thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request in flight (if any) is answered; True if none is left running."""
        job = self.pending
        if job is None or not job.thread.is_alive():
            return True
        t0 = time.perf_counter()
        job.thread.join(timeout)
        self.waited_s += time.perf_counter() - t0
        return not job.thread.is_alive()

    def take(self, key: list, step: int) -> tuple[Any | None, dict[str, float]]:
        """The prefetched rollouts for `key` if they are within the staleness bound at `step`, else None
        (the caller samples the batch now). Raises what the request raised. Returns (result, metrics)."""
        self.wait()
        job, self.pending = self.pending, None
        record = {"async/rollout_wait_seconds": self.waited_s, "async/staleness": 0.0, "async/dropped": 0.0}
        self.waited_s = 0.0
        if job is None:
            self.history.append({"step": step, **record})
            return None, record
        if job.error is not None:
            raise job.error
        staleness = step - job.step
        record["async/request_seconds"] = job.seconds
        if job.key != key or staleness > self.max_staleness or staleness < 0:
            record["async/dropped"] = 1.0
            self.history.append({"step": step, **record})
            return None, record
        record["async/staleness"] = float(staleness)
        self.history.append({"step": step, **record})
        return job.result, record

    def close(self, timeout: float, abort: Callable[[], None] | None = None) -> str | None:
        """At the end of training (or on a stop): wait up to `timeout` for the request in flight, then `abort()`
        it (close its connection; vLLM aborts a request whose client is gone). Returns what happened, or None."""
        job = self.pending
        if job is None:
            return None
        self.pending = None
        if not job.thread.is_alive():
            return "the rollout request posted for the next step was answered; dropped (nothing trains on it)"
        t0 = time.perf_counter()
        job.thread.join(timeout)
        if job.thread.is_alive() and abort is not None:
            abort()
            job.thread.join(10.0)
        left = "still running" if job.thread.is_alive() else "ended"
        return f"waited {time.perf_counter() - t0:.1f} s for the rollout request in flight ({left}; dropped)"
