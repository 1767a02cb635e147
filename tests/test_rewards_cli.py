"""`python -m rewards.grade`: regrade saved completions in input order; bad lines named by number."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, lines, *args):
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return subprocess.run([sys.executable, "-m", "rewards.grade", *args, str(f)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_grades_in_order(tmp_path):
    rows = [
        {"response": "<think>a</think> <answer>72 clips</answer>", "ground_truth": "#### 72"},
        {"response": "<think>a</think> <answer>\\frac{2}{4}</answer>", "ground_truth": "\\frac12"},
        {"response": "no format 3", "ground_truth": 3},
        {"response": "<think>a</think> <answer>(x+1)^2</answer>", "ground_truth": ["x^2+2x+1"]},
    ]
    for mode, expected in (("accurate", [1.0, 1.0, 0.0, 1.0]), ("drgrpo", [0.0, 0.0, 0.0, 1.0])):
        p = _run(tmp_path, [json.dumps(r) for r in rows], "--mode", mode)
        assert p.returncode == 0, p.stderr
        out = [json.loads(line) for line in p.stdout.splitlines()]
        assert [o["reward"] for o in out] == expected
        assert set(out[0]) == {"format_reward", "answer_reward", "reward", "timed_out"}
        assert out[2]["format_reward"] == 0.0


def test_cli_bad_lines(tmp_path):
    good = json.dumps({"response": "<think>a</think> <answer>4</answer>", "ground_truth": "4"})
    p = _run(tmp_path, [good, "{not json", json.dumps({"response": "x"}), good], "--mode", "drgrpo")
    assert p.returncode == 1
    out = [json.loads(line) for line in p.stdout.splitlines()]
    assert [o.get("reward") for o in out] == [1.0, None, None, 1.0]  # nothing else is lost
    assert "line 2" in p.stderr and "line 3" in p.stderr and "ground_truth" in p.stderr


def test_cli_missing_file(tmp_path):
    p = subprocess.run([sys.executable, "-m", "rewards.grade", str(tmp_path / "nope.jsonl")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "nope.jsonl" in p.stderr and "Traceback" not in p.stderr


def test_cli_names_a_line_that_is_not_utf8_and_keeps_the_rest(tmp_path):
    f = tmp_path / "latin1.jsonl"
    good = json.dumps({"response": "<think>a</think> <answer>2</answer>", "ground_truth": "2"}).encode()
    f.write_bytes(good + b"\n" + '{"response": "caf\xe9", "ground_truth": "2"}'.encode("latin-1") + b"\n" + good + b"\n")
    p = subprocess.run([sys.executable, "-m", "rewards.grade", str(f)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [f"error: {f}: line 2: not UTF-8 text (byte 17)"]
    out = [json.loads(line) for line in p.stdout.splitlines()]
    assert [o.get("reward") for o in out] == [1.0, None, 1.0] and out[1]["line"] == 2
