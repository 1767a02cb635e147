"""`drgrpo` mode reproduces the reference (Dr. GRPO / CS336 r1_zero, fast=True) verdicts, without its hangs."""

import json
from pathlib import Path

import pytest

from rewards import drgrpo
from rewards.grader import grade

FIXTURE = Path(__file__).parent / "fixtures" / "rewards" / "drgrpo_reference.jsonl"


def test_matches_recorded_reference_verdicts():
    """Verdicts recorded by running the reference grader on ~1,000 answer/ground-truth pairs."""
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    assert len(rows) > 500 and any(r["reference"] for r in rows) and not all(r["reference"] for r in rows)
    wrong = [(r["answer"], r["ground_truth"], r["reference"]) for r in rows
             if drgrpo.check(r["answer"], r["ground_truth"]) != r["reference"]]
    assert not wrong, wrong[:10]


@pytest.mark.parametrize(
    "answer, gt",
    # the reference's known faults are its verdicts: drgrpo keeps them
    [("2/4", "\\frac12"), ("10^{10}", "10000000000"), ("0.5", "50\\%"), ("2, 1", "1, 2"), ("72 clips", "72")],
)
def test_known_faults_are_kept(answer, gt):
    res = grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode="drgrpo")
    assert (res.format_reward, res.answer_reward, res.reward, res.timed_out) == (1.0, 0.0, 0.0, False)


@pytest.mark.parametrize(
    "answer, gt",
    [("\\frac{1}{2}", "0.5"), ("x = 3", "3"), ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}"), ("1,200", "1200"),
     ("\\dfrac{3}{4}", "3/4"), ("(x+1)^2", "x^2+2x+1"), ("\\text{Monday}", "Monday"), ("5 \\text{ cm}", "5")],
)
def test_reference_accepts(answer, gt):
    assert grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode="drgrpo").reward == 1.0


def test_ground_truth_forms():
    ok = "<think>x</think> <answer>18</answer>"
    assert grade(ok, 18, mode="drgrpo").reward == 1.0
    assert grade(ok, 18.0, mode="drgrpo").reward == 1.0  # "18.0" normalises to 18
    assert grade(ok, ["17", "18"], mode="drgrpo").reward == 1.0
    assert grade(ok, "The total is \\boxed{18}.", mode="drgrpo").reward == 1.0
    assert grade(ok, "#### 18", mode="drgrpo").reward == 1.0
    assert grade("<think>x</think> <answer>17</answer>", ["18", "19"], mode="drgrpo").reward == 0.0
    assert grade("no tags, 18", "18", mode="drgrpo").format_reward == 0.0


def test_question_only_variant():
    assert grade("... so \\boxed{18}", "18", mode="drgrpo", question_only=True).reward == 1.0
    res = grade("18", "18", mode="drgrpo", question_only=True)
    assert (res.format_reward, res.reward) == (0.0, 0.0)
