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


SOUNDNESS = Path(__file__).parent / "fixtures" / "rewards" / "soundness_cases.jsonl"
SOUND_ROWS = [json.loads(line) for line in SOUNDNESS.read_text().splitlines()]
SOUND_BY_CATEGORY = defaultdict(list)
for _row in SOUND_ROWS:
    SOUND_BY_CATEGORY[_row["category"]].append(_row)


def test_soundness_suite_is_broad():
    near = [r for r in SOUND_ROWS if r["label"] == 0]
    assert len(SOUND_ROWS) >= 418 and len(near) >= 230 and len(SOUND_BY_CATEGORY) >= 30
    # issue 27: identities that hold only for positive values, big numbers as expressions, and the forms real
    # golds take (unions, array matrices, named parts, prose, inline `$`), each with near misses beside them
    for cat in ("sign_domain_identity", "big_number_expression", "interval_union", "matrix_array", "named_parts",
                "prose_units", "inline_dollar"):
        assert {r["label"] for r in SOUND_BY_CATEGORY[cat]} == {0, 1}, cat


@pytest.mark.parametrize(
    "answer, gt, expected",
    # the reward hacks of issue 27: equal only where the variable is positive, or equal to 30 digits
    [("|2x|", "2x", False), ("\\ln(x^2)", "2\\ln x", False), ("\\max(x, 0)", "x", False), ("2^{100}", "2^{100}+1", False),
     ("\\sqrt{x^2}", "|x|", True), ("x^{1/2}", "\\sqrt{x}", True)],
)
def test_identities_hold_for_all_values(answer, gt, expected):
    res = grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode="accurate")
    assert res.reward == float(expected) and not res.timed_out


@pytest.mark.parametrize("category", sorted(SOUND_BY_CATEGORY))
def test_near_misses_rejected_equivalent_forms_accepted(category):
    """Sound first: every plausible near miss is rejected; then complete: every equivalent form accepted."""
    rows = SOUND_BY_CATEGORY[category]
    false_accepts = [(r["answer"], r["ground_truth"]) for r in rows if r["label"] == 0 and accurate.check(r["answer"], r["ground_truth"])]
    false_rejects = [(r["answer"], r["ground_truth"]) for r in rows if r["label"] == 1 and not accurate.check(r["answer"], r["ground_truth"])]
    assert not false_accepts, false_accepts
    assert not false_rejects, false_rejects


@pytest.mark.parametrize(
    "answer, gt",
    # the faults the 2026-12-01 review found in the previous `accurate`, each now rejected
    [("x = 3", "x = 4"), ("B", "B = 3"), ("\\sum_{k=0}^{n} k", "\\sum_{k=0}^{n} k^2"), ("0", "x+y=0"),
     ("1.39e-10", "3.61e-10"), ("1.39e-10", "0"), ("12345678901234567890123456789", "12345678901234567890123456788"),
     ("\\frac{1}{x}+1", "\\frac{1}{x+1}"), ("\\frac{1}{0}", "\\frac{2}{0}"), ("1:00", "12:00"), ("2\\frac{1}{2}", "1")],
)
def test_review_false_accepts_rejected(answer, gt):
    assert grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode="accurate").reward == 0.0


@pytest.mark.parametrize(
    "answer, gt",
    [("-1\\frac{1}{2}", "-\\frac{3}{2}"), ("6yx^2", "6x^2y"), ("1.24\\times10^{-8}", "1.24e-8"), ("[1, 2]", "1 \\le x \\le 2"),
     ("x > 3", "(3, \\infty)")],
)
def test_review_false_rejects_accepted(answer, gt):
    assert grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode="accurate").reward == 1.0


def test_no_absolute_tolerance():
    """Numbers are exact, or relatively close where one is a decimal: never close to zero in absolute terms."""
    assert not accurate.check("1e-12", "2e-12")
    assert not accurate.check("0.0000000001", "0")
    assert accurate.check("0.0833333333333333", "\\frac{1}{12}")  # a decimal to 15 places
    assert not accurate.check("0.0833", "\\frac{1}{12}")  # a rounded one


@pytest.mark.parametrize(
    "answer, gt, expected",
    [("\\boxed{1}, \\boxed{2}", "1, 2", 1.0), ("\\boxed{2} and \\boxed{1}", "\\{1, 2\\}", 1.0),
     ("\\boxed{1}, \\boxed{2}", "2", 0.0),  # a hedge of boxes is a list, not its last box
     ("\\boxed{1}, \\boxed{3}", "1, 2", 0.0), ("\\boxed{2}, \\boxed{2}", "2", 1.0)],
)
def test_several_boxes_are_a_list(answer, gt, expected):
    assert grade(f"<think>x</think> <answer>{answer}</answer>", gt, mode="accurate").reward == expected
    assert grade(f"so {answer}", gt, mode="accurate", question_only=True).reward == expected


def test_ground_truth_with_several_boxes():
    assert accurate.check("1, 2", "\\boxed{1} and \\boxed{2}")
    assert accurate.check("2, 1", "The roots are \\boxed{1} and \\boxed{2}.")
    assert not accurate.check("1", "\\boxed{1} and \\boxed{2}")


def test_list_ground_truth_any_element_matches():
    assert grade("<think>x</think> <answer>\\frac12</answer>", ["0.5", "50\\%"], mode="accurate").reward == 1.0
    assert grade("<think>x</think> <answer>3</answer>", ["1", "2"], mode="accurate").reward == 0.0


def test_drgrpo_keeps_the_reference_last_box():
    """Parity: the reference grades the last box only, quirks included."""
    assert grade("<think>x</think> <answer>\\boxed{1}, \\boxed{2}</answer>", "2", mode="drgrpo").reward == 1.0
