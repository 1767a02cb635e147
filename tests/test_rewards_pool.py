"""The time bound: worker processes, a per-item CPU-time bound, kill and replace, threads, asyncio, pathological
input, and a busy machine (the clock measures the check, not the wait for a core)."""

import asyncio
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rewards import accurate
from rewards.grader import grade, grade_batch
from rewards.pool import TIMEOUT, WALL_FACTOR, get_pool

BOUND = 2.0
SLACK = 10.0  # wall-clock asserts allow for a loaded 2-core machine; the bound itself is CPU time
# A check that really runs long: sympy integrating a rational function (about 5 s of CPU alone).
def slow_pair(i: int) -> tuple[str, str]:
    return f"\\int_0^1 \\frac{{1}}{{x^7+x+{i + 1}}} dx", "\\frac{1}{3}"


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    """Start the workers once, so no test below times the pool's start-up."""
    get_pool().run([("accurate", "1", ["1"])], 60.0)
PATHOLOGICAL = {
    "power tower vs non-integer": ("9**9**9", "1.5"),
    "latex power tower": ("9^{9^{9^{9}}}", "\\frac{1}{3}"),
    "factorial of factorial": ("(99!)!", "2.5"),
    "million-digit number": ("7" * 1_000_000, "2.5"),
    "1e5 nested braces": ("{" * 100_000 + "1" + "}" * 100_000, "1.5"),
    "1e5 open braces": ("{" * 100_000, "3"),
    "unbalanced latex": ("\\frac{1}{\\sqrt{2", "\\frac{1}{3}"),
    "unbalanced box": ("\\boxed{\\frac{1}{2}", "\\frac12"),
    "empty answer": ("", "3"),
    "blank answer": ("   ", "3"),
    "huge exponent": ("10^{100000}", "1.5"),
    "many left parens": ("\\left(" * 5000, "2"),
}


@pytest.mark.parametrize("mode", ["drgrpo", "accurate"])
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_inputs_finish_within_the_bound(mode, name):
    answer, gt = PATHOLOGICAL[name]
    t = time.monotonic()
    res = grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode=mode, timeout=BOUND)
    assert time.monotonic() - t < BOUND + SLACK
    assert (res.format_reward, res.reward) == (1.0, 0.0)
    assert not res.timed_out  # decided up front, not by the clock


@pytest.mark.parametrize("mode", ["drgrpo", "accurate"])
def test_unicode_minus(mode):
    res = grade("<think>x</think> <answer>−5</answer>", "-5", mode=mode)
    assert res.reward == (1.0 if mode == "accurate" else 0.0)  # the reference does not know U+2212


def test_batch_of_pathological_inputs_within_bound():
    answers = [a for a, _ in PATHOLOGICAL.values()] * 2
    gts = [g for _, g in PATHOLOGICAL.values()] * 2
    t = time.monotonic()
    res = grade_batch([f"<think>x</think> <answer>{a}</answer>" for a in answers], gts, timeout=BOUND)
    assert time.monotonic() - t < BOUND + SLACK
    assert len(res) == len(answers) and all(r.reward == 0.0 for r in res)


def test_overrunning_check_is_killed_counted_and_replaced():
    pool = get_pool()
    restarts = pool.restarts
    answer, gt = slow_pair(0)
    res = grade(f"<think>x</think> <answer>{answer}</answer>", gt, timeout=0.2)
    assert res.timed_out and res.reward == 0.0 and res.format_reward == 1.0
    assert pool.restarts > restarts
    # the replacement worker grades normally
    assert grade("<think>x</think> <answer>(x+1)^2</answer>", "x^2+2x+1", mode="drgrpo").reward == 1.0


def test_crashed_worker_is_replaced():
    pool = get_pool()
    pool.run([("drgrpo", "1", ["1"])], 10.0)
    for w in list(pool._workers):
        w.proc.kill()
        w.proc.join()
    out = pool.run([("drgrpo", "(x+1)^2", ["x^2+2x+1"]), ("accurate", "\\sqrt{8}", ["2\\sqrt{2}"])], 10.0)
    assert out[0] is True and out[1] is True or all(o != TIMEOUT for o in out)
    assert pool.run([("accurate", "\\sqrt{8}", ["2\\sqrt{2}"])], 10.0) == [True]
    assert all(w.proc.is_alive() for w in pool._workers)


def test_results_keep_input_order():
    gts = [str(i) for i in range(200)]
    answers = [f"<think>x</think> <answer>{i if i % 3 else '(x+1)^2'}</answer>" for i in range(200)]
    res = grade_batch(answers, gts)
    assert [r.reward for r in res] == [1.0 if i % 3 else 0.0 for i in range(200)]


def test_safe_from_threads():
    out = {}

    def work(k):
        out[k] = [grade(f"<think>x</think> <answer>\\sqrt{{{4 * k * k}}}</answer>", str(2 * k)).reward for _ in range(5)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {k: [1.0] * 5 for k in range(1, 5)}


def test_safe_inside_a_running_event_loop():
    async def main():
        direct = grade("<think>x</think> <answer>\\frac{\\sqrt2}{2}</answer>", "\\frac{1}{\\sqrt2}")
        threaded = await asyncio.to_thread(grade_batch, ["<think>x</think> <answer>2^{10}</answer>"], ["1024"])
        return direct.reward, threaded[0].reward

    assert asyncio.run(main()) == (1.0, 1.0)


def test_no_worker_leak():
    pool = get_pool()
    for _ in range(3):
        grade_batch(["<think>x</think> <answer>(x+1)^2</answer>"] * 20, ["x^2+2x+1"] * 20)
    assert 1 <= len(pool._workers) <= pool.size


def test_batch_of_genuinely_slow_checks_is_cut_at_the_bound():
    """Checks that really run long are each stopped at the CPU bound; never more workers than cores."""
    bound = 0.3
    pairs = [slow_pair(i) for i in range(6)]
    t = time.monotonic()
    res = grade_batch([f"<think>x</think> <answer>{a}</answer>" for a, _ in pairs] + ["<think>x</think> <answer>4</answer>"],
                      [g for _, g in pairs] + ["4"], timeout=bound)
    rounds = math.ceil(len(pairs) / get_pool().size)
    assert time.monotonic() - t < rounds * bound * WALL_FACTOR + SLACK
    assert all(r.timed_out and r.reward == 0.0 for r in res[:-1]) and res[-1].reward == 1.0
    assert len(get_pool()._workers) <= get_pool().size


SOUNDNESS = Path(__file__).parent / "fixtures" / "rewards" / "soundness_cases.jsonl"


def test_busy_machine_does_not_time_out_normal_checks():
    """One CPU burner per core beside the grader (as the trainer and the server are during training): the
    symbolic checks of the soundness suite, each well under the bound alone, never time out."""
    rows = [json.loads(line) for line in SOUNDNESS.read_text().splitlines()]
    heavy = [r for r in rows if accurate.check(r["answer"], r["ground_truth"], heavy=False) is None]
    assert len(heavy) >= 50  # the suite really exercises the workers
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(get_pool().size)]
    try:
        res = grade_batch([f"<think>x</think> <answer>{r['answer']}</answer>" for r in heavy],
                          [r["ground_truth"] for r in heavy], timeout=BOUND)
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert [r.answer_reward for r in res] == [float(r["label"]) for r in heavy]
    assert not any(r.timed_out for r in res)


def test_evaluation_and_training_batches_do_not_wait_for_each_other():
    """A long batch (evaluation) and a short one (a training step's rewards) from two threads: the short one is
    served by the next free worker, not after the whole long batch (no lock over a batch)."""
    pool = get_pool()
    bound = 0.5
    slow = [("accurate", *slow_pair(i)[:1], [slow_pair(i)[1]]) for i in range(3 * pool.size)]
    out = {}

    def evaluation():
        t = time.monotonic()
        out["eval"] = (pool.run(slow, bound), time.monotonic() - t)

    thread = threading.Thread(target=evaluation)
    thread.start()
    time.sleep(0.3)
    t = time.monotonic()
    quick = pool.run([("accurate", "\\sqrt{8}", ["2\\sqrt{2}"])] * 2, BOUND)
    quick_s = time.monotonic() - t
    thread.join(120)
    assert quick == [True, True]
    assert all(r == TIMEOUT for r in out["eval"][0])
    assert quick_s < out["eval"][1]  # served while the long batch still ran


def test_workers_start_as_checks_wait():
    """A pool sized 4 that gets one check starts one worker, not four (8 ranks x a big node's cores would)."""
    from rewards.pool import WorkerPool

    pool = WorkerPool(processes=4)
    try:
        assert pool._workers == []  # nothing before the first check
        assert pool.run([("accurate", "\\sqrt{8}", ["2\\sqrt{2}"])], BOUND) == [True]
        assert len(pool._workers) == 1
        assert pool.memory() and all(m["rss"] > 0 for m in pool.memory())
    finally:
        pool.close()
