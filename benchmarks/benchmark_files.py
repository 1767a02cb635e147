"""Check real benchmark files against the loader and the grader (not a test: the files are not in the repo).

    python benchmarks/benchmark_files.py aime24=data/aime24/test.jsonl olympiadbench=data/olympiad.parquet ...

For each NAME=PATH: how many rows the file has, how many `load_benchmarks` kept, and how many rows' own gold
answer, as the file writes it (a list's first element, GSM8K's text after `####`, else the last `\\boxed{}` of
the solution), is *not* graded correct (`accurate`, r1_zero format) against what was loaded. Target: every
row kept, 0 wrong. The first few wrong rows are printed with both forms.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from math_grpo.benchmarks import load_benchmarks  # noqa: E402
from math_grpo.data import ANSWER_COLUMNS, _read_local, _resolve_local  # noqa: E402
from rewards.extract import boxed_content  # noqa: E402
from rewards.grader import grade_batch  # noqa: E402


def written_answer(row: dict) -> str | None:
    lower = {k.lower(): v for k, v in row.items() if isinstance(k, str)}
    for key in ANSWER_COLUMNS:
        value = lower.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            return str(value[0]) if value else None
        if isinstance(value, str) and "####" in value:
            return value.split("####")[-1].strip()
        if isinstance(value, str) and "\\boxed" in value:
            return boxed_content(value)
        return str(value)
    solution = lower.get("solution")
    solution = solution[0] if isinstance(solution, list) and solution else solution
    return boxed_content(solution) if isinstance(solution, str) else None


def check(entry: str, show: int) -> bool:
    name, path = entry.split("=", 1)
    raw = [r for _, r in _read_local(_resolve_local(path, ["test", "train"]), ["test", "train"])]
    (bench,) = load_benchmarks([entry])
    written = [written_answer(r) if isinstance(r, dict) else None for r in raw]
    ok = len(bench.rows) == len(raw)
    wrong: list[tuple[int, str | None, object]] = []
    if ok:
        responses = [f"<think> x </think> <answer> {w} </answer>" for w in written]
        results = grade_batch(responses, [r["answer"] for r in bench.rows], mode="accurate")
        wrong = [(i, written[i], bench.rows[i]["answer"]) for i, r in enumerate(results) if r.reward != 1.0]
    print(f"{name:<16} {os.path.basename(path.rstrip('/')):<28} rows {len(raw):>5}  loaded {len(bench.rows):>5}  "
          f"wrong {len(wrong) if ok else '-':>4}", flush=True)
    for i, w, loaded in wrong[:show]:
        print(f"    row {i}: written {w!r} loaded {loaded!r}")
    return ok and not wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="+", help="NAME=PATH of a local benchmark file or folder")
    parser.add_argument("--show", type=int, default=5, help="wrong rows printed per file")
    args = parser.parse_args()
    results = [check(e, args.show) for e in args.entries]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
