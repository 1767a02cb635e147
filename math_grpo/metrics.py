"""Benchmark metrics from n graded samples per problem: avg@n, unbiased pass@k, maj@k, and the tables.

maj@k votes over the answers of the first k samples, grouped by the grader's equivalence (`\\frac{1}{2}`,
`0.5` and `1/2` are one vote), not by string; unformatted samples do not vote; a tie goes to the answer
seen first. The voted group counts as correct when its first member was graded correct.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
    return ks if ks[-1] == n else [*ks, n]


def _wrap(answer: str) -> str:
    return f"<think> </think> <answer> {answer} </answer>"


def equivalence_groups(answers_per_problem: Sequence[Sequence[str | None]], mode: str = "accurate",
                       timeout: float = 2.0) -> list[list[int]]:
    """For each problem, a group id per sample (-1: no answer); equal strings first, then the grader pairwise.

    All pairs of distinct answers of all problems go to the grader in one time-bounded batch.
    """
    from rewards.grader import grade_batch

    distinct: list[list[str]] = []
    pairs: list[tuple[int, int, int]] = []  # (problem, later, earlier) indices into distinct[problem]
    for p, answers in enumerate(answers_per_problem):
        seen = list(dict.fromkeys(a.strip() for a in answers if a is not None and a.strip()))
        distinct.append(seen)
        pairs += [(p, j, i) for j in range(len(seen)) for i in range(j)]
    verdicts = grade_batch([_wrap(distinct[p][j]) for p, j, _ in pairs], [distinct[p][i] for p, _, i in pairs],
                           mode=mode, timeout=timeout) if pairs else []
    same = {pair: r.answer_reward > 0 for pair, r in zip(pairs, verdicts)}
    out = []
    for p, answers in enumerate(answers_per_problem):
        group_of: dict[str, int] = {}
        reps: list[int] = []  # the distinct index that founded each group
        for j, text in enumerate(distinct[p]):
            gid = next((g for g, i in enumerate(reps) if same.get((p, j, i))), None)
            if gid is None:
                gid = len(reps)
                reps.append(j)
            group_of[text] = gid
        out.append([group_of[a.strip()] if a is not None and a.strip() else -1 for a in answers])
    return out


def majority_correct(groups: Sequence[int], correct: Sequence[bool], k: int) -> bool:
    """Is the most voted group among the first k samples correct? (ties: the group seen first)."""
    votes: dict[int, int] = {}
    first: dict[int, int] = {}
    for s, g in enumerate(groups[:k]):
        if g >= 0:
            votes[g] = votes.get(g, 0) + 1
            first.setdefault(g, s)
    if not votes:
        return False
    best = max(votes, key=lambda g: (votes[g], -first[g]))
    return bool(correct[first[best]])


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _key(value: Any) -> str:
    return str(value).strip().replace("/", "-").replace(" ", "_") or "none"


def benchmark_metrics(prefix: str, correct: Sequence[Sequence[bool]], formatted: Sequence[Sequence[bool]],
                      groups: Sequence[Sequence[int]] | None, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Metrics of one benchmark from per-problem, per-sample grades; `prefix` is `eval/<benchmark>/`."""
    n = min((len(c) for c in correct), default=0)
    per_problem = [_mean([float(x) for x in c]) for c in correct]
    m: dict[str, float] = {
        prefix + "accuracy": _mean(per_problem),
        prefix + "format_accuracy": _mean([_mean([float(x) for x in f]) for f in formatted]),
        prefix + "num_problems": len(rows),
        prefix + "n": n,
    }
    if n > 1:
        m[f"{prefix}avg@{n}"] = m[prefix + "accuracy"]
        for k in ks_for(n):
            m[f"{prefix}pass@{k}"] = _mean([pass_at_k(len(c), sum(c), k) for c in correct])
        if groups is not None:
            for k in ks_for(n):
                m[f"{prefix}maj@{k}"] = _mean([float(majority_correct(g, c, k)) for g, c in zip(groups, correct)])
    for column in ("level", "subject"):
        buckets: dict[str, list[float]] = {}
        for row, acc in zip(rows, per_problem):
            if row.get(column) not in (None, ""):
                buckets.setdefault(_key(row[column]), []).append(acc)
        for name, values in sorted(buckets.items()):
            m[f"{prefix}{column}_{name}/accuracy"] = _mean(values)
    return m


def comparison_table(results: dict[str, dict[str, float]], benchmarks: Sequence[str]) -> str:
    """Markdown: rows = checkpoints, columns = benchmarks (accuracy %, avg@n when n > 1) + their average;
    then pass@k / maj@k / format / length per benchmark where they were measured."""
    def n_of(name: str) -> int:
        return max((int(m.get(f"eval/{name}/n", 1)) for m in results.values()), default=1)

    heads = [f"{b} (avg@{n_of(b)})" if n_of(b) > 1 else b for b in benchmarks]
    lines = ["| checkpoint | " + " | ".join(heads) + " | average |",
             "|---" * (len(benchmarks) + 2) + "|"]
    for label, m in results.items():
        cells = [m.get(f"eval/{b}/accuracy") for b in benchmarks]
        text = [f"{100 * v:.1f}" if v is not None else "-" for v in cells]
        lines.append(f"| {label} | " + " | ".join(text) + f" | {100 * m.get('eval/accuracy', 0.0):.1f} |")
    detail = ["", "| checkpoint | benchmark | n | avg@n | pass@n | maj@n | format | mean tokens |", "|---" * 8 + "|"]
    for label, m in results.items():
        for b in benchmarks:
            n = int(m.get(f"eval/{b}/n", 1))

            def pct(key: str, m: dict = m) -> str:
                return f"{100 * m[key]:.1f}" if key in m else "-"

            tokens = m.get(f"eval/{b}/mean_response_tokens")
            detail.append(f"| {label} | {b} | {n} | {pct(f'eval/{b}/accuracy')} | {pct(f'eval/{b}/pass@{n}')} | "
                          f"{pct(f'eval/{b}/maj@{n}')} | {pct(f'eval/{b}/format_accuracy')} | "
                          f"{'-' if tokens is None else f'{tokens:.0f}'} |")
    return "\n".join(lines + detail)
