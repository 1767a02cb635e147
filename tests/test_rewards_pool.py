"""The time bound: worker processes, per-item deadline, kill and replace, threads, asyncio, pathological input."""

import asyncio
import random
import threading
import time

import pytest

from rewards.grader import grade, grade_batch
from rewards.pool import TIMEOUT, get_pool

BOUND = 2.0
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
    assert time.monotonic() - t < BOUND + 1
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
    assert time.monotonic() - t < BOUND + 1
    assert len(res) == len(answers) and all(r.reward == 0.0 for r in res)


def test_overrunning_check_is_killed_counted_and_replaced():
    pool = get_pool()
    pool.run([("drgrpo", "1", ["1"])], 10.0)  # warm
    restarts = pool.restarts
    t = time.monotonic()
    # a sympy check takes milliseconds; a 1 us bound forces the timeout path
    k = random.randint(10, 10**6)  # a pair no worker has cached, so the check takes milliseconds
    res = grade(f"<think>x</think> <answer>(x+{k})^2</answer>", f"x^2+{2 * k}x+{k * k}", mode="drgrpo", timeout=1e-6)
    assert time.monotonic() - t < 1.0
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
    assert len(pool._workers) == pool.size


def test_batch_of_genuinely_slow_checks_ends_about_one_bound_later():
    """Checks that really run long (big symbolic simplifications) get extra workers and are cut at the bound."""
    bound = 1.0
    grade_batch(["<think>x</think> <answer>1</answer>"], ["x+1"])  # pool warm
    answers = [f"<think>x</think> <answer>\\sin(x)^{{{40 + i}}}\\cos(x)^{{{30 + i}}} + (x+{i})^{{{60 + i}}}</answer>"
               for i in range(8)]
    gts = [f"(x+{i})^{{{61 + i}}}\\tan(x)" for i in range(8)]
    t = time.monotonic()
    res = grade_batch(answers + ["<think>x</think> <answer>4</answer>"], gts + ["4"], timeout=bound)
    assert time.monotonic() - t < bound + 1
    assert all(r.reward == 0.0 for r in res[:-1]) and res[-1].reward == 1.0
    assert len(get_pool()._workers) == get_pool().size  # extra workers are gone afterwards
