"""Grader throughput benchmark (not a test): 5,000 realistic responses with 1% pathological ones, plus the
symbolic checks of the soundness suite, on an idle machine and beside one CPU burner per core.

    python benchmarks/grader_bench.py [--n 5000] [--modes drgrpo accurate] [--timeout 2] [--burners 0 2] [--ranks 8]

Prints one table row per (load, mode): answers/s over the whole batch, timeouts on normal inputs (target
0: the bound is CPU time, so a busy machine must not cost rewards), p50/p99 latency of single `grade`
calls, and the wall time of a batch made only of pathological inputs. Then how long a training step's rewards
take while another thread grades an evaluation batch (they must not wait for each other's batch). Then the
same responses graded by
`--ranks` simulated training processes of one node at once (LOCAL_WORLD_SIZE set, so each sizes its pool to
its share of this machine's CPUs): total answers/s, timeouts, workers and memory per worker.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.grader import grade, grade_batch  # noqa: E402
from rewards.pool import get_pool, shutdown  # noqa: E402
from rewards.sizing import affinity_cpus  # noqa: E402

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


SOUNDNESS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "rewards" / "soundness_cases.jsonl"


def soundness_pairs() -> tuple[list[str], list[str]]:
    """The soundness suite as responses: realistic symbolic checks (sums, relations, radicals, decimals)."""
    rows = [json.loads(line) for line in SOUNDNESS.read_text().splitlines()]
    rows = [r for r in rows if r["category"] != "pathological"]
    return [f"<think>x</think> <answer>{r['answer']}</answer>" for r in rows], [r["ground_truth"] for r in rows]


def run_mode(mode: str, responses: list[str], gts: list[str], normal: list[bool], timeout: float) -> dict:
    t = time.perf_counter()
    res = grade_batch(responses, gts, mode=mode, timeout=timeout)
    wall = time.perf_counter() - t
    lat = []
    for r, g in [(r, g) for r, g, n in zip(responses, gts, normal) if n][:500]:
        t1 = time.perf_counter()
        grade(r, g, mode=mode, timeout=timeout)
        lat.append((time.perf_counter() - t1) * 1000)
    lat.sort()
    patho = [f"<think>x</think> <answer>{p}</answer>" for p in PATHOLOGICAL]
    t2 = time.perf_counter()
    pres = grade_batch(patho, ["1.5"] * len(patho), mode=mode, timeout=timeout)
    return {"answers_s": len(res) / wall, "batch_s": wall, "normal_timeouts": sum(r.timed_out for r, n in zip(res, normal) if n),
            "p50": statistics.median(lat), "p99": lat[int(0.99 * len(lat)) - 1], "patho_s": time.perf_counter() - t2,
            "patho_timeouts": sum(r.timed_out for r in pres)}


TRAIN = [("(x+1)^2", "x^2+2x+1"), ("\\sqrt{8}", "2\\sqrt{2}"), ("\\frac{\\sqrt2}{2}", "\\frac{1}{\\sqrt2}"), ("2\\pi r", "2r\\pi")] * 4


def run_contention(timeout: float) -> dict:
    """A training step's rewards (16 symbolic checks) graded again and again while another thread grades an
    evaluation (the suite's checks three times): how long a training batch takes beside it, against alone."""
    sr, sg = soundness_pairs()
    tr_r = [f"<think>x</think> <answer>{a}</answer>" for a, _ in TRAIN]
    tr_g = [g for _, g in TRAIN]
    grade_batch(tr_r, tr_g, timeout=timeout)
    alone = []
    for _ in range(5):
        t = time.perf_counter()
        grade_batch(tr_r, tr_g, timeout=timeout)
        alone.append(time.perf_counter() - t)
    done, ev = threading.Event(), {}

    def evaluation() -> None:
        t0 = time.perf_counter()
        ev["s"] = (grade_batch(sr * 3, sg * 3, timeout=timeout), time.perf_counter() - t0)
        done.set()

    thread = threading.Thread(target=evaluation)
    thread.start()
    time.sleep(0.2)
    beside = []
    while not done.is_set():
        t = time.perf_counter()
        grade_batch(tr_r, tr_g, timeout=timeout)
        beside.append(time.perf_counter() - t)
        time.sleep(0.1)
    thread.join()
    return {"eval_n": len(sr) * 3, "eval_s": ev["s"][1], "alone": statistics.median(alone), "n": len(beside),
            "median": statistics.median(beside) if beside else 0.0, "max": max(beside) if beside else 0.0}


def rank_main(rank: int, ranks: int, n: int, timeout: float, mode: str) -> None:
    """One simulated rank: its share of the responses, graded once every rank is ready (a line on stdin)."""
    responses, gts = make_mix(n)
    sr, sg = soundness_pairs()
    responses, gts = (responses + sr)[rank::ranks], (gts + sg)[rank::ranks]
    pool = get_pool()
    pool.run([("drgrpo", "1", ["1"])], 60.0)  # one worker up before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    t = time.perf_counter()
    res = grade_batch(responses, gts, mode=mode, timeout=timeout)
    wall = time.perf_counter() - t
    mem = pool.memory()
    print(json.dumps({"answers": len(res), "timeouts": sum(r.timed_out for r in res), "wall": wall,
                      "workers": len(pool._workers), "size": pool.size,
                      "rss": [m.get("rss", 0) for m in mem], "pss": [m.get("pss", 0) for m in mem]}), flush=True)
    shutdown()


def run_ranks(ranks: int, n: int, timeout: float, mode: str) -> dict:
    """`ranks` processes grading at once; answers/s is all their answers over the wall time from the start signal."""
    env = {**os.environ, "LOCAL_WORLD_SIZE": str(ranks), "OMP_NUM_THREADS": "1"}
    env.pop("REWARDS_WORKERS", None)
    procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), "--ranks", str(ranks), "--n", str(n),
                               "--timeout", str(timeout), "--modes", mode], env={**env, "LOCAL_RANK": str(r)},
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for r in range(ranks)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    t = time.perf_counter()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [json.loads(p.stdout.readline()) for p in procs if p.stdout is not None]
    wall = time.perf_counter() - t
    for p in procs:
        p.wait(60)
    rss = [x for o in outs for x in o["rss"]]
    pss = [x for o in outs for x in o["pss"]]
    return {"answers": sum(o["answers"] for o in outs), "timeouts": sum(o["timeouts"] for o in outs), "wall": wall,
            "workers": sum(o["workers"] for o in outs), "size": outs[0]["size"],
            "rss_mb": statistics.mean(rss) / 2**20 if rss else 0.0, "pss_mb": statistics.mean(pss) / 2**20 if pss else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--modes", nargs="+", default=["drgrpo", "accurate"])
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--burners", nargs="+", type=int, default=[0, os.cpu_count() or 1],
                    help="CPU-burner processes beside the grader, one run per value (default: none, one per core)")
    ap.add_argument("--ranks", type=int, default=8, help="simulated training processes of one node (0: skip)")
    ap.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank is not None:
        rank_main(args.rank, args.ranks, args.n, args.timeout, args.modes[0])
        return
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    responses, gts = make_mix(args.n)
    normal = [i % 100 != 50 for i in range(len(responses))]
    sr, sg = soundness_pairs()
    responses, gts, normal = responses + sr, gts + sg, normal + [True] * len(sr)
    t = time.perf_counter()
    get_pool().run([("drgrpo", "1", ["1"])], 60.0)  # start the workers outside the timings
    print(f"pool start: {time.perf_counter() - t:.2f}s (1 of {get_pool().size} workers; the rest start as checks wait); "
          f"{len(responses)} responses "
          f"({len(sr)} from the soundness suite), bound {args.timeout}s of CPU per check")
    print("| burners | mode | answers/s | batch s | timeouts (normal) | p50 ms | p99 ms | pathological batch s |")
    print("|---|---|---|---|---|---|---|---|")
    for n_burn in args.burners:
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_burn)]
        try:
            for mode in args.modes:
                r = run_mode(mode, responses, gts, normal, args.timeout)
                print(f"| {n_burn} | {mode} | {r['answers_s']:.0f} | {r['batch_s']:.2f} | {r['normal_timeouts']} | "
                      f"{r['p50']:.2f} | {r['p99']:.2f} | {r['patho_s']:.2f} ({r['patho_timeouts']} timeouts) |", flush=True)
        finally:
            for b in burners:
                b.kill()
                b.wait()
    c = run_contention(args.timeout)
    print(f"\ntraining rewards beside an evaluation: {c['n']} training batches of {len(TRAIN)} symbolic checks while "
          f"a {c['eval_n']}-answer evaluation batch ran ({c['eval_s']:.1f} s) in another thread: median "
          f"{c['median']:.3f} s, max {c['max']:.3f} s (alone {c['alone']:.3f} s)", flush=True)
    shutdown()
    if args.ranks > 0:
        print(f"\n{args.ranks} simulated ranks (LOCAL_WORLD_SIZE={args.ranks}) on {affinity_cpus()} CPUs, all grading at once:")
        print("| ranks | mode | answers/s | wall s | timeouts | workers per rank | workers | RSS / PSS per worker MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for mode in args.modes:
            r = run_ranks(args.ranks, args.n, args.timeout, mode)
            print(f"| {args.ranks} | {mode} | {r['answers'] / r['wall']:.0f} | {r['wall']:.2f} | {r['timeouts']} | {r['size']} | "
                  f"{r['workers']} | {r['rss_mb']:.0f} / {r['pss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
