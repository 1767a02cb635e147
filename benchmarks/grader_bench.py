"""Grader throughput benchmark (not a test): 5,000 realistic responses with 1% pathological ones.

    python benchmarks/grader_bench.py [--n 5000] [--modes drgrpo accurate] [--timeout 2]

Prints, per mode, answers/s over the whole batch, p50/p99 latency of single `grade` calls on normal
inputs, timeouts, and the wall time of a batch made only of pathological inputs (target: bound + 1 s).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.grader import grade, grade_batch  # noqa: E402
from rewards.pool import get_pool, shutdown  # noqa: E402

GROUND_TRUTHS = [
    "4", "2\\sqrt{3}", "\\frac{1}{2}", "\\frac{3}{4}", "1200", "-5", "(1,2)", "[1,2)", "(-\\infty, 3]", "x^2+2x+1",
    "2\\pi", "\\frac{\\sqrt{2}}{2}", "A", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "1, 2", "18.90", "50\\%", "72",
    "90^\\circ", "\\frac{14}{3}", "1011_2", "y = 2x + 3", "\\{1, 2, 3\\}", "10^{10}", "\\text{Monday}", "2.5",
    "1+\\sqrt{2}", "8\\pi", "27", "0", "\\frac{25}{4}", "#### 1,200", "The answer is \\boxed{\\frac{5}{6}}",
]
GOOD = {
    "4": ["4", "4.0", "x = 4", "\\boxed{4}", "4 apples"], "2\\sqrt{3}": ["\\sqrt{12}", "2\\sqrt3", "2 \\sqrt{3}"],
    "\\frac{1}{2}": ["0.5", "1/2", "\\dfrac12", "\\frac{2}{4}"], "x^2+2x+1": ["(x+1)^2", "x^2 + 2x + 1"],
    "1, 2": ["2, 1", "1, 2"], "2\\pi": ["2 \\pi", "\\pi \\cdot 2"], "\\frac{\\sqrt{2}}{2}": ["\\frac{1}{\\sqrt{2}}", "\\sqrt{2}/2"],
}
PATHOLOGICAL = ["9**9**9", "(99!)!", "1" * 1_000_000, "{" * 100_000, "\\frac{1}{\\sqrt{", "", "−5", "9^{9^{9^{9}}}",
                "\\left(" * 5000, "x" * 50_000]


def make_mix(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    responses, gts = [], []
    for i in range(n):
        gt = rng.choice(GROUND_TRUTHS)
        if i % 100 == 50:
            ans = rng.choice(PATHOLOGICAL)
            gt = rng.choice(["1.5", "2.5", "\\frac{1}{3}", "x"])
        else:
            r = rng.random()
            if r < 0.45:
                ans = rng.choice(GOOD.get(gt, [gt]))
            elif r < 0.85:
                ans = str(rng.randint(-50, 500)) if rng.random() < 0.6 else f"\\frac{{{rng.randint(1, 30)}}}{{{rng.randint(2, 30)}}}"
            else:
                a, b = rng.randint(2, 50), rng.randint(0, 9)
                ans = rng.choice([f"\\sqrt{{{a}}}", f"{b}\\pi", f"x^2-{b}", f"({b}, {a})", "\\text{Tuesday}"])
        if rng.random() < 0.1:
            responses.append(f"<think>{'work ' * 50}</think> the answer is {ans}")  # unformatted
        else:
            responses.append(f"<think>{'some reasoning ' * 40}</think> <answer>{ans}</answer>")
        gts.append(gt)
    return responses, gts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--modes", nargs="+", default=["drgrpo", "accurate"])
    ap.add_argument("--timeout", type=float, default=2.0)
    args = ap.parse_args()
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    responses, gts = make_mix(args.n)
    t = time.perf_counter()
    get_pool().run([("drgrpo", "1", ["1"])], 10.0)  # start the workers outside the timings
    print(f"pool start: {time.perf_counter() - t:.2f}s ({get_pool().size} workers)")
    for mode in args.modes:
        t = time.perf_counter()
        res = grade_batch(responses, gts, mode=mode, timeout=args.timeout)
        wall = time.perf_counter() - t
        lat = []
        normal = [(r, g) for i, (r, g) in enumerate(zip(responses, gts)) if i % 100 != 50][:500]
        for r, g in normal:
            t1 = time.perf_counter()
            grade(r, g, mode=mode, timeout=args.timeout)
            lat.append((time.perf_counter() - t1) * 1000)
        lat.sort()
        patho = [f"<think>x</think> <answer>{p}</answer>" for p in PATHOLOGICAL]
        t2 = time.perf_counter()
        pres = grade_batch(patho, ["1.5"] * len(patho), mode=mode, timeout=args.timeout)
        pwall = time.perf_counter() - t2
        print(f"{mode:9s} {len(res) / wall:8.0f} answers/s  batch {wall:6.2f}s  correct {sum(r.reward for r in res):.0f}"
              f"  timeouts {sum(r.timed_out for r in res)}  |  single-call p50 {statistics.median(lat):.2f} ms"
              f"  p99 {lat[int(0.99 * len(lat)) - 1]:.2f} ms  |  pathological batch {pwall:.2f}s"
              f" (bound {args.timeout + 1:.0f}s), timeouts {sum(r.timed_out for r in pres)}")
    shutdown()


if __name__ == "__main__":
    main()
