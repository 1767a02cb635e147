"""TRL reward functions from the string-keyed registry."""

import inspect

import pytest

from rewards import registry
from rewards.registry import REWARD_FUNCS, STATS, get_reward_funcs

GOOD = "<think>2+2</think> <answer>4</answer>"
WRONG = "<think>2+2</think> <answer>5</answer>"
UNFORMATTED = "<think>2+2</think> the answer is \\boxed{4}"


def test_names_and_values():
    r1, fmt, acc = get_reward_funcs(["r1_zero", "format", "accuracy"])
    assert [f.__name__ for f in (r1, fmt, acc)] == ["r1_zero", "format", "accuracy"]
    completions = [GOOD, WRONG, UNFORMATTED]
    answers = ["4", "4", "4"]
    assert r1(completions, answer=answers) == [1.0, 0.0, 0.0]
    assert fmt(completions, answer=answers) == [1.0, 1.0, 0.0]
    assert acc(completions, answer=answers) == [1.0, 0.0, 1.0]  # the box counts whatever the format


def test_trl_calling_convention():
    """TRL passes prompts, completions, completion_ids and every dataset column as keywords."""
    (r1,) = get_reward_funcs(["r1_zero"], mode="drgrpo")
    params = inspect.signature(r1).parameters
    assert "completions" in params and any(p.kind is p.VAR_KEYWORD for p in params.values())
    out = r1(prompts=["p", "p"], completions=[GOOD, WRONG], completion_ids=[[1], [2]], answer=["4", "4"],
             problem=["2+2", "2+2"], trainer_state=None)
    assert out == [1.0, 0.0]


def test_conversational_completions():
    (r1,) = get_reward_funcs(["r1_zero"])
    conv = [[{"role": "assistant", "content": GOOD}], [{"role": "user", "content": "q"}, {"role": "assistant", "content": WRONG}]]
    assert r1(conv, answer=["4", "4"]) == [1.0, 0.0]


def test_bad_rows_score_zero_and_are_counted():
    registry.reset_stats()
    (r1,) = get_reward_funcs(["r1_zero"])
    out = r1([GOOD, None, 12345, GOOD], answer=["4", "4", "4", None])
    assert out == [1.0, 0.0, 0.0, 0.0]
    assert STATS["errors"] == 3 and STATS["items"] == 4  # no text (2), no ground truth (1)


def test_timeouts_are_counted():
    registry.reset_stats()
    (r1,) = get_reward_funcs(["r1_zero"], timeout=0.1)
    out = r1(["<think>x</think> <answer>\\int_0^1 \\frac{1}{x^7+x+3} dx</answer>"], answer=["\\frac{1}{3}"])
    assert out == [0.0]  # seconds of sympy CPU: cut at the bound
    assert STATS["timeouts"] == 1


def test_unknown_name_and_mode():
    with pytest.raises(ValueError, match="'nope'.*r1_zero"):
        get_reward_funcs(["r1_zero", "nope"])
    with pytest.raises(ValueError, match="grader mode"):
        get_reward_funcs(["r1_zero"], mode="fast")
    assert {"r1_zero", "format", "accuracy"} <= set(REWARD_FUNCS)


def test_question_only():
    (r1,) = get_reward_funcs(["r1_zero"], question_only=True)
    assert r1(["so \\boxed{4}", "4"], answer=["4", "4"]) == [1.0, 0.0]



def test_timeouts_and_errors_reach_trl_log_metric():
    """TRL passes reward functions `log_metric`; each call reports its timeouts and errors there."""
    logged = []
    slow = "\\int_0^1 \\frac{1}{x^7+x+5} dx"  # seconds of sympy CPU: over a 0.1 s bound
    (f,) = registry.get_reward_funcs(["r1_zero"], timeout=0.1)
    out = f([f"<think>x</think> <answer>{slow}</answer>", 42, "<think>x</think> <answer>3</answer>"],
            answer=["\\frac{1}{3}", "1", "3"], log_metric=lambda k, v: logged.append((k, v)))
    assert out == [0.0, 0.0, 1.0]
    assert dict(logged) == {"rewards/timeouts": 1.0, "rewards/errors": 1.0}
