"""`make demo`'s pipeline end to end in its smoke mode (a few steps per stage; the numbers mean nothing)."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
from _tiny import read_jsonl, run

pytestmark = pytest.mark.slow


def test_demo_quick_runs_every_stage(tmp_path):
    out = str(tmp_path / "demo")
    proc = run([sys.executable, "-m", "math_grpo.demo", "--quick", "--server", "off", "--out", out], timeout=900)
    last = proc.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"accuracy: before=([0-9.]+) after=([0-9.]+) sft_more=([0-9.]+)", last)
    assert m, f"last line is not the accuracy line: {last!r}"
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    # The printed line and the summary agree, and each number is the one its evaluation wrote.
    for key, value in zip(("before", "after", "sft_more"), m.groups()):
        assert abs(summary[key] - float(value)) < 1e-3
    # The three checkpoints were evaluated in one recipes/evaluate.py run (results.json form, one row each).
    with open(os.path.join(out, "eval.json"), encoding="utf-8") as f:
        report = json.load(f)
    rows = {path: report["results"][label]["eval/accuracy"] for label, path in report["models"].items()}
    for key, path in (("before", "sft"), ("after", "grpo/final"), ("sft_more", "sft_more")):
        assert rows[os.path.join(out, path)] == pytest.approx(summary[key])
    # The continued SFT trained beside GRPO for its whole stage, and stopped cleanly when GRPO ended.
    assert summary["grpo_train_s"] > 0 and summary["sft_more_steps"] >= 1
    assert summary["grpo_stage_s"] <= summary["sft_more_s"] < summary["grpo_stage_s"] + 60
    assert not os.path.exists(os.path.join(out, "sft_more.stop"))
    with open(os.path.join(out, "sft_more.log"), encoding="utf-8") as f:
        more_log = f.read()
    assert "stop file" in more_log and "[done] SFT" in more_log, more_log[-2000:]
    # The run dir has its plot and metrics.
    grpo = os.path.join(out, "grpo")
    assert os.path.isfile(os.path.join(grpo, "progress.png"))
    steps = [r["step"] for r in read_jsonl(os.path.join(grpo, "metrics.jsonl")) if "train/reward" in r]
    assert steps == [1, 2, 3]
    # The demo's model is the untied tiny Qwen2 (see math_grpo/demo.py).
    with open(os.path.join(out, "tiny-init", "config.json"), encoding="utf-8") as f:
        assert json.load(f)["tie_word_embeddings"] is False


def test_clock_scales_the_remaining_budget_by_this_machines_pace(capsys):
    from math_grpo.demo import Clock

    clock = Clock({"a": 10, "b": 100, "c": 300})
    clock.finished("a", 40.0)  # too short a stage to judge the pace by: the budget as it stands
    assert "about 6.7 min left" in capsys.readouterr().out
    clock.finished("b", 220.0)  # 260 s against 110 s budgeted: 2.36x, so c's 300 s become about 709 s
    out = capsys.readouterr().out
    assert "2.36x" in out and "about 11.8 min left" in out, out
    quiet = Clock({"a": 10}, enabled=False)
    quiet.finished("a", 5.0)
    assert capsys.readouterr().out == "" and quiet.done == {"a": 5.0}
