"""Dataset loaders on small fixture files of each format, prompt templates and malformed rows."""

from __future__ import annotations

import os

import pytest

from math_grpo.data import R1_ZERO_TEMPLATE, format_completion, format_prompt, format_prompts, load_problems
from math_grpo.errors import MathGRPOError
from rewards.grader import grade

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


def test_math_style_answer_from_last_boxed():
    ds, report = load_problems(fixture("math.jsonl"))
    assert ds["answer"] == ["\\frac{3}{4}", "81", "4"]
    assert ds["level"] == ["Level 1", "Level 2", "Level 1"]
    assert all("\\boxed" in s for s in ds["solution"])
    assert report.kept == 3 and not report.skipped


def test_gsm8k_style_answer_after_hashes():
    ds, _ = load_problems(fixture("gsm8k.jsonl"))
    assert ds["problem"][0].startswith("Tom has 3 apples")
    assert ds["answer"] == ["8", "2000"] or ds["answer"] == ["8", "2,000"]
    # the worked solution is the text before '####', without the marker
    assert "####" not in ds["solution"][0] and "3 + 5" in ds["solution"][0]
    # whatever the reduced form, the grader accepts the plain number
    assert grade("<think> x </think> <answer> 2000 </answer>", ds["answer"][1]).reward == 1.0


def test_math500_style_problem_answer_and_levels():
    ds, _ = load_problems(fixture("math500.jsonl"), split="test")
    assert ds["answer"] == ["4", "2\\sqrt{3}"]
    assert ds["level"] == ["1", "3"] and ds["subject"] == ["Prealgebra", "Algebra"]


def test_json_list_and_parquet_and_folder(tmp_path):
    ds, _ = load_problems(fixture("list.json"))
    assert ds["answer"] == ["42", "7"]  # numbers become strings
    ds, _ = load_problems(fixture("synthetic.parquet"))
    assert ds["answer"] == ["10", "9"]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "test.jsonl").write_text(open(fixture("math500.jsonl")).read())
    ds, _ = load_problems(str(folder), split="test")
    assert len(ds) == 2
    with pytest.raises(MathGRPOError, match="no train"):
        load_problems(str(folder), split="train")


def test_malformed_rows_are_skipped_and_counted():
    ds, report = load_problems(fixture("bad.jsonl"), bad_rows="skip")
    assert ds["answer"] == ["2", "5"]
    reasons = dict(report.skipped)
    assert report.total == 7 and len(report.skipped) == 5
    assert "missing answer" in reasons[2]
    assert "empty problem" in reasons[3]
    assert "undecodable" in reasons[4]
    assert "max_problem_chars" in reasons[5]
    assert "invalid JSON" in reasons[6]


def test_malformed_rows_rejected_with_row_number():
    with pytest.raises(MathGRPOError, match=r"bad\.jsonl: row 2: missing answer"):
        load_problems(fixture("bad.jsonl"), bad_rows="error")


def test_missing_file_and_empty_dataset(tmp_path):
    with pytest.raises(MathGRPOError, match="nope.jsonl: dataset file not found"):
        load_problems(str(tmp_path / "nope.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(MathGRPOError, match="empty.jsonl: empty file"):
        load_problems(str(empty))
    nocol = tmp_path / "nocol.jsonl"
    nocol.write_text('{"text": "hello", "label": 1}\n')
    with pytest.raises(MathGRPOError, match=r"nocol.jsonl: no problem column \(looked for problem, question"):
        load_problems(str(nocol), bad_rows="error")
    noanswer = tmp_path / "noanswer.jsonl"
    noanswer.write_text('{"problem": "What is 1+1?"}\n')
    with pytest.raises(MathGRPOError, match="noanswer.jsonl: no answer column"):
        load_problems(str(noanswer))


def test_templates_match_the_grader():
    prompt = format_prompt("What is 2+2?")
    assert prompt == R1_ZERO_TEMPLATE.format(question="What is 2+2?")
    assert prompt.endswith("User: What is 2+2?\nAssistant: <think>")
    completion = format_completion("2 plus 2 is 4.", "4")
    # the SFT target, appended to the prompt, is a correct r1_zero answer
    assert grade(completion, "4").reward == 1.0
    assert format_prompt("What is 2+2?", "question_only") == "What is 2+2?"
    boxed = format_completion("2 plus 2 is 4.", "4", "question_only")
    assert grade(boxed, "4", question_only=True).reward == 1.0
    with pytest.raises(MathGRPOError, match="unknown template"):
        format_prompt("x", "chatml")


def test_format_prompts_for_sft_and_grpo():
    ds, _ = load_problems(fixture("math.jsonl"))
    grpo = format_prompts(ds, "r1_zero")
    assert grpo["prompt"][0].endswith("Assistant: <think>") and grpo["answer"][0] == "\\frac{3}{4}"
    sft = format_prompts(ds, "r1_zero", with_completion=True)
    assert sft["completion"][1].endswith("</think> <answer> 81 </answer>")
    no_solutions, _ = load_problems(fixture("math500.jsonl"))
    with pytest.raises(MathGRPOError, match="no worked solutions"):
        format_prompts(no_solutions, with_completion=True)
