"""TRL reward functions by name, so a YAML recipe picks them (`reward_funcs: [r1_zero]`).

Each function has TRL's signature `f(completions, answer, **kwargs) -> list[float]` and `__name__` equal
to its registry name, so TRL logs `rewards/<name>/mean`. A bad row scores 0.0 and is counted, never
raised; so are timeouts. Each call reports its timeouts and errors through the `log_metric` callable TRL
passes reward functions (the step's `rewards/timeouts` and `rewards/errors` in W&B and metrics.jsonl), and
`STATS` keeps the running totals of the process.

- `r1_zero`: the r1_zero reward (1 iff formatted and correct), the reference's `reward`.
- `format`: the r1_zero format reward (1 iff `</think> <answer>` ... `</answer>`).
- `accuracy`: answer correctness whatever the format: the `<answer>` text if there is one, else the last
  `\\boxed{}`. The reference has no such reward; it is for monitoring a model that is still learning
  the format, and equals `r1_zero` on formatted completions.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from rewards.extract import boxed_content
from rewards.grader import MODES, GradeResult, grade_batch

logger = logging.getLogger(__name__)

STATS: dict[str, int] = {"items": 0, "timeouts": 0, "errors": 0}
_STATS_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple, GradeResult] = OrderedDict()
_CACHE_SIZE = 8192
_CACHE_LOCK = threading.Lock()


def reset_stats() -> None:
    with _STATS_LOCK:
        for k in STATS:
            STATS[k] = 0


def _count(key: str, n: int = 1) -> None:
    with _STATS_LOCK:
        STATS[key] += n


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or a conversation whose last message's content is taken."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        last = completion[-1]
        if isinstance(last, dict):
            content = last.get("content")
            if isinstance(content, list):  # multimodal content parts
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str):
                return content
    if isinstance(completion, dict) and isinstance(completion.get("content"), str):
        return completion["content"]
    raise TypeError(f"completion of type {type(completion).__name__} has no text")


def _grade_rows(texts: list[str | None], answers: list, mode: str, timeout: float, question_only: bool
                ) -> list[GradeResult | None]:
    """Grade with a small cache (TRL calls several reward functions on the same completions)."""
    out: list[GradeResult | None] = [None] * len(texts)
    _count("items", len(texts))
    todo = []
    for i, (t, a) in enumerate(zip(texts, answers)):
        if t is None:
            continue
        key = (mode, question_only, t, repr(a))
        with _CACHE_LOCK:
            hit = _CACHE.get(key)
        if hit is not None and not hit.timed_out:
            out[i] = hit
        else:
            todo.append((i, key))
    if todo:
        try:
            res = grade_batch([texts[i] for i, _ in todo], [answers[i] for i, _ in todo], mode=mode,
                              question_only=question_only, timeout=timeout)
        except Exception as exc:  # one odd row must not lose the batch: grade row by row
            logger.warning("reward batch failed (%s); grading row by row", exc)
            res = []
            for i, _ in todo:
                try:
                    res.extend(grade_batch([texts[i]], [answers[i]], mode=mode, question_only=question_only,
                                           timeout=timeout))
                except Exception as row_exc:
                    res.append(GradeResult(0.0, 0.0, 0.0, error=f"{type(row_exc).__name__}: {row_exc}"))
        with _CACHE_LOCK:
            for (i, key), r in zip(todo, res):
                out[i] = r
                _CACHE[key] = r
                _CACHE.move_to_end(key)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        timeouts = sum(r.timed_out for r in res)
        errors = sum(r.error is not None for r in res)
        if timeouts:
            _count("timeouts", timeouts)
            logger.warning("%d answer check(s) timed out after %.1fs and scored 0", timeouts, timeout)
        if errors:
            _count("errors", errors)
            logger.warning("%d answer check(s) failed and scored 0: %s", errors,
                           next(r.error for r in res if r.error is not None))
    return out


def _texts(completions: list) -> list[str | None]:
    out: list[str | None] = []
    bad = 0
    for c in completions:
        try:
            out.append(completion_text(c))
        except TypeError:
            out.append(None)
            bad += 1
    if bad:
        _count("errors", bad)
        logger.warning("%d completion(s) without text scored 0", bad)
    return out


def _answers(answer: list | None, n: int) -> list:
    if answer is None:
        raise ValueError("reward function needs the dataset column 'answer' (the reduced ground truth)")
    if len(answer) != n:
        raise ValueError(f"{n} completions but {len(answer)} answers")
    return list(answer)


def _report(log_metric: Any, texts: list[str | None], results: list[GradeResult | None]) -> None:
    """Per call: answer checks that timed out / failed (rows without text count as errors), through the
    `log_metric` callable TRL >= 1.15 passes reward functions; TRL averages it over ranks and reward functions
    into the step's `rewards/timeouts` and `rewards/errors`."""
    if not callable(log_metric):
        return
    done = [r for r in results if r is not None]
    log_metric("rewards/timeouts", float(sum(r.timed_out for r in done)))
    log_metric("rewards/errors", float(sum(r.error is not None for r in done) + sum(t is None for t in texts)))


def _make(name: str, mode: str, timeout: float, question_only: bool) -> Callable[..., list[float]]:
    def reward(completions: list, answer: list | None = None, **kwargs: Any) -> list[float]:
        texts = _texts(completions)
        answers = _answers(answer, len(texts))
        results = _score(texts, answers)
        _report(kwargs.get("log_metric"), texts, results)
        if name == "format":
            return [r.format_reward if r is not None else 0.0 for r in results]
        if name == "accuracy":
            return [r.answer_reward if r is not None else 0.0 for r in results]
        return [r.reward if r is not None else 0.0 for r in results]

    def _score(texts: list[str | None], answers: list) -> list[GradeResult | None]:
        if name == "accuracy" and not question_only:
            # lenient extraction: the <answer> text when formatted, else the last box
            results = _grade_rows(texts, answers, mode, timeout, False)
            need = [i for i, r in enumerate(results) if r is not None and r.format_reward == 0.0
                    and texts[i] is not None and boxed_content(texts[i]) is not None]
            if need:
                boxed = _grade_rows([texts[i] for i in need], [answers[i] for i in need], mode, timeout, True)
                for i, r in zip(need, boxed):
                    results[i] = r
            return results
        return _grade_rows(texts, answers, mode, timeout, question_only)

    reward.__name__ = name
    reward.__qualname__ = name
    reward.__doc__ = f"{name} reward ({mode} grader, {timeout}s bound)"
    return reward


REWARD_FUNCS: dict[str, str] = {
    "r1_zero": "1 iff the response is in r1_zero format and its answer is correct",
    "format": "1 iff the response is in r1_zero format",
    "accuracy": "1 iff the answer (<answer> text, else last \\boxed{}) is correct, whatever the format",
}


def get_reward_funcs(names: list[str], mode: str = "accurate", timeout: float = 2.0,
                     question_only: bool = False) -> list[Callable[..., list[float]]]:
    """Reward functions for TRL by registry name; unknown names or modes raise ValueError."""
    if isinstance(names, str):
        names = [names]
    if mode not in MODES:
        raise ValueError(f"unknown grader mode {mode!r}; choose one of {', '.join(MODES)}")
    if not timeout or timeout <= 0:
        raise ValueError(f"grader timeout must be positive, got {timeout!r}")
    funcs = []
    for name in names:
        if name not in REWARD_FUNCS:
            raise ValueError(f"unknown reward function {name!r}; known: {', '.join(REWARD_FUNCS)}")
        funcs.append(_make(name, mode, timeout, question_only))
    return funcs
