"""avg@n, unbiased pass@k, maj@k by the grader's equivalence, per level/subject, and the comparison table."""

from __future__ import annotations

import os

import pytest

from math_grpo.metrics import (
    benchmark_metrics,
    comparison_table,
    equivalence_groups,
    ks_for,
    majority_correct,
    pass_at_k,
)


def test_pass_at_k_is_unbiased():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(16, 2, 8) == pytest.approx(1 - (14 * 13 * 12 * 11 * 10 * 9 * 8 * 7) / (16 * 15 * 14 * 13 * 12 * 11 * 10 * 9))
    assert ks_for(16) == [1, 2, 4, 8, 16] and ks_for(6) == [1, 2, 4, 6] and ks_for(1) == [1]


def test_answers_are_grouped_by_equivalence_not_by_string():
    (groups,) = equivalence_groups([["3", "\\frac{1}{2}", "0.5", "1/2", " 3 ", None]])
    assert groups == [0, 1, 1, 1, 0, -1]
    # three spellings of 1/2 outvote two 3s: a vote by string would have picked 3
    correct = [False, True, True, True, False, False]
    assert majority_correct(groups, correct, 6)
    assert not majority_correct(groups, correct, 1)  # first sample alone: 3
    assert majority_correct([1, 0, 0, 1], [True, False, False, True], 4)  # tie: the group seen first wins
    assert not majority_correct([-1, -1], [False, False], 2)  # nothing formatted: no vote


def test_benchmark_metrics_from_grades():
    rows = [{"level": "1", "subject": "Algebra"}, {"level": "2", "subject": "Number Theory"}]
    correct = [[True, False, True, True], [False, False, False, True]]
    formatted = [[True, True, True, True], [True, False, True, True]]
    groups = [[0, 1, 0, 0], [0, 1, 0, 2]]
    m = benchmark_metrics("eval/b/", correct, formatted, groups, rows)
    assert m["eval/b/accuracy"] == pytest.approx((0.75 + 0.25) / 2) == m["eval/b/avg@4"] == m["eval/b/pass@1"]
    assert m["eval/b/pass@4"] == 1.0 and m["eval/b/pass@2"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["eval/b/maj@4"] == 0.5 and m["eval/b/maj@1"] == 0.5
    assert m["eval/b/format_accuracy"] == pytest.approx(7 / 8)
    assert m["eval/b/level_1/accuracy"] == 0.75 and m["eval/b/subject_Number_Theory/accuracy"] == 0.25
    assert m["eval/b/n"] == 4 and m["eval/b/num_problems"] == 2
    greedy = benchmark_metrics("eval/g/", [[True], [False]], [[True], [True]], None, [{}, {}])
    assert greedy["eval/g/accuracy"] == 0.5 and not any("@" in k for k in greedy)


def test_comparison_table_rows_are_checkpoints():
    base = {"eval/aime24/accuracy": 0.1, "eval/aime24/n": 16, "eval/aime24/pass@16": 0.4, "eval/aime24/maj@16": 0.2,
            "eval/math500/accuracy": 0.5, "eval/math500/n": 1, "eval/accuracy": 0.3}
    tuned = {**base, "eval/aime24/accuracy": 0.2, "eval/math500/accuracy": 0.7, "eval/accuracy": 0.45}
    table = comparison_table({"base": base, "run/final": tuned}, ["aime24", "math500"])
    lines = table.splitlines()
    assert lines[0] == "| checkpoint | aime24 (avg@16) | math500 | average |"
    assert lines[2] == "| base | 10.0 | 50.0 | 30.0 |" and lines[3] == "| run/final | 20.0 | 70.0 | 45.0 |"
    assert "| base | aime24 | 16 | 10.0 | 40.0 | 20.0 |" in table


def test_run_plot_has_a_line_per_benchmark(tmp_path):
    import json

    from math_grpo.plotting import eval_benchmarks, plot_run

    rows = [{"step": s, "train/reward": 0.1 * s} for s in range(4)]
    rows += [{"step": s, "eval/accuracy": 0.2 + 0.1 * s, "eval/format_accuracy": 0.9, "eval/aime24/accuracy": 0.1 * s,
              "eval/aime24/pass@16": 0.3, "eval/math500/accuracy": 0.3 + 0.1 * s, "eval/math500/level_1/accuracy": 0.5}
             for s in (0, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert eval_benchmarks(rows) == ["aime24", "math500"]
    path = plot_run(str(tmp_path))
    assert path is not None and os.path.getsize(path) > 10_000
