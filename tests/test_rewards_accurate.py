"""`accurate` mode: what a careful human grader accepts, and the near misses it still rejects."""

import json
from collections import defaultdict
from pathlib import Path

import pytest

from rewards import accurate
from rewards.grader import grade

FIXTURE = Path(__file__).parent / "fixtures" / "rewards" / "accurate_cases.jsonl"
ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
BY_CATEGORY = defaultdict(list)
for _row in ROWS:
    BY_CATEGORY[_row["category"]].append(_row)


@pytest.mark.parametrize("category", sorted(BY_CATEGORY))
def test_labelled_cases(category):
    """Hand-labelled pairs per category (fractions, powers, lists, units, percent, intervals, ...)."""
    rows = BY_CATEGORY[category]
    wrong = [(r["answer"], r["ground_truth"], r["label"]) for r in rows
             if bool(accurate.check(r["answer"], r["ground_truth"])) != bool(r["label"])]
    assert not wrong, wrong


def test_both_labels_present_in_every_category_that_can_fail():
    for cat in ("fraction", "list", "interval", "tuple", "choice", "near", "matrix"):
        labels = {r["label"] for r in BY_CATEGORY[cat]}
        assert labels == {0, 1}, cat


@pytest.mark.parametrize(
    "answer, gt",
    # each known fault of the reference, fixed here
    [("2/4", "\\frac12"), ("10^{10}", "10000000000"), ("0.5", "50\\%"), ("2, 1", "1, 2"), ("72 clips", "72")],
)
def test_reference_faults_fixed(answer, gt):
    res = grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode="accurate")
    assert (res.format_reward, res.answer_reward, res.reward, res.timed_out) == (1.0, 1.0, 1.0, False)
    assert grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode="drgrpo").reward == 0.0


def test_through_the_pool_same_as_in_process():
    """Pairs that need sympy go to the workers; the verdict must not depend on where it ran."""
    pairs = [(r["answer"], r["ground_truth"]) for r in ROWS[:60]]
    direct = [bool(accurate.check(a, g)) for a, g in pairs]
    from rewards.grader import grade_batch

    pooled = grade_batch([f"<think>x</think> <answer>{a}</answer>" for a, _ in pairs], [g for _, g in pairs])
    assert [r.reward == 1.0 for r in pooled] == direct
    assert not any(r.timed_out for r in pooled)
