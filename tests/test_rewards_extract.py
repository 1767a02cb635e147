"""r1_zero format rule, answer extraction and ground-truth reduction."""

import pytest

from rewards.extract import boxed_content, extract_answer, ground_truth_list, reduce_ground_truth


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<think>x</think> <answer>42</answer>", (True, "42")),
        ("<think>x</think><answer>42</answer>", (False, None)),  # the one space is required
        ("<think>x</think>  <answer>42</answer>", (False, None)),
        ("<think>x</think> <answer>42", (False, None)),  # no closing tag
        ("<think>x</think> <answer>1</answer> <answer>2</answer>", (True, "2")),  # the last <answer> wins
        ("<think>x</think> <answer>so \\boxed{7} done</answer>", (True, "7")),
        ("<think>x</think> <answer>\\boxed{\\frac{1}{2}} and \\boxed{3}</answer>", (True, "3")),
        ("<think>x</think> <answer>\\boxed{3</answer>", (True, None)),  # unbalanced box: formatted, wrong
        ("", (False, None)),
    ],
)
def test_r1_zero_extraction(response, expected):
    assert extract_answer(response) == expected


def test_question_only_extraction():
    assert extract_answer("so the answer is \\boxed{12}.", question_only=True) == (True, "12")
    assert extract_answer("no box here", question_only=True) == (False, None)
    assert boxed_content("\\boxed{a{b}c}") == "a{b}c"
    assert boxed_content("\\fbox{3}") is None


@pytest.mark.parametrize(
    "raw, reduced",
    [
        ("Natalia sold 48 clips... #### 1,200", "1200"),
        ("#### 72", "72"),
        ("So the total is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        (18, "18"),
        (2.0, "2"),
        (2.5, "2.5"),
        ("  \\pi ", "\\pi"),
        ("(1, 2)", "(1, 2)"),
    ],
)
def test_reduce_ground_truth(raw, reduced):
    assert reduce_ground_truth(raw) == reduced


def test_ground_truth_list():
    assert ground_truth_list(3) == ["3"]
    assert ground_truth_list(["1", 2]) == ["1", "2"]
