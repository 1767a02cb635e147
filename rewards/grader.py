"""`grade` / `grade_batch`: the r1_zero reward of one response or many, time-bounded.

The format rule and answer extraction run here; the answer check runs in this process when it is cheap
(string and exact-number comparisons) and otherwise in the worker pool under a CPU-time bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rewards import accurate, drgrpo
from rewards.extract import extract_answer, ground_truth_list
from rewards.pool import ERROR, TIMEOUT, get_pool

MODES = ("drgrpo", "accurate")


@dataclass
class GradeResult:
    format_reward: float
    answer_reward: float
    reward: float
    timed_out: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["error"] is None:
            d.pop("error")
        return d


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown grader mode {mode!r}; choose one of {', '.join(MODES)}")


def _quick(mode: str, given: str, gts: list[str]) -> bool | None:
    """Decide in-process if every ground truth can be judged without sympy; None otherwise."""
    checker = drgrpo.check if mode == "drgrpo" else accurate.check
    pending = False
    for gt in gts:
        try:
            r = checker(given, gt, False)
        except Exception:
            r = None
        if r:
            return True
        pending |= r is None
    return None if pending else False


def grade_batch(
    responses: list[str],
    ground_truths: list,
    mode: str = "accurate",
    question_only: bool = False,
    timeout: float = 2.0,
) -> list[GradeResult]:
    """Grade many responses; the sympy checks run in parallel in the worker pool, each under `timeout` s."""
    _check_mode(mode)
    if len(responses) != len(ground_truths):
        raise ValueError(f"{len(responses)} responses but {len(ground_truths)} ground truths")
    results: list[GradeResult | None] = [None] * len(responses)
    tasks: list[tuple] = []
    owners: list[int] = []
    for i, (resp, gt) in enumerate(zip(responses, ground_truths)):
        if not isinstance(resp, str):
            results[i] = GradeResult(0.0, 0.0, 0.0, error=f"response is {type(resp).__name__}, not str")
            continue
        formatted, answer = extract_answer(resp, question_only, all_boxes=mode == "accurate")
        if not formatted:
            results[i] = GradeResult(0.0, 0.0, 0.0)
            continue
        if gt is None:
            results[i] = GradeResult(1.0, 0.0, 0.0, error="ground truth is missing")
            continue
        if answer is None:
            results[i] = GradeResult(1.0, 0.0, 0.0)
            continue
        gts = ground_truth_list(gt)
        verdict = _quick(mode, answer, gts)
        if verdict is None:
            tasks.append((mode, answer, gts))
            owners.append(i)
        else:
            score = float(verdict)
            results[i] = GradeResult(1.0, score, score)
    if tasks:
        for i, out in zip(owners, get_pool().run(tasks, timeout)):
            if out == TIMEOUT:
                results[i] = GradeResult(1.0, 0.0, 0.0, timed_out=True)
            elif isinstance(out, tuple) and out and out[0] == ERROR:
                results[i] = GradeResult(1.0, 0.0, 0.0, error=str(out[1]))
            else:
                score = float(bool(out))
                results[i] = GradeResult(1.0, score, score)
    return results  # type: ignore[return-value]


def grade(
    response: str,
    ground_truth,
    mode: str = "accurate",
    question_only: bool = False,
    timeout: float = 2.0,
) -> GradeResult:
    """The r1_zero reward of one response: format_reward, answer_reward, reward (== answer_reward), timed_out."""
    return grade_batch([response], [ground_truth], mode=mode, question_only=question_only, timeout=timeout)[0]
