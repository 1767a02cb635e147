"""recipes/grpo.py and recipes/sft.py through real `accelerate launch` on CPU with a tiny model."""

from __future__ import annotations

import glob
import json
import math
import os
import sys

import pytest
from _runs import grpo_args, two_step_run
from _tiny import REPO, accelerate_cmd, read_jsonl, recipe_cmd, run, tiny_assets

from math_grpo.checkpoints import COMPLETE_MARKER

pytestmark = pytest.mark.slow


def prompts_by_step(run_dir: str) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    for row in read_jsonl(os.path.join(run_dir, "completions.jsonl")):
        steps.setdefault(row["step"], []).append(row["prompt"])
    return {s: sorted(p) for s, p in steps.items()}


def test_grpo_single_process_writes_metrics_checkpoints_and_plot(tmp_path):
    out = str(tmp_path / "run")
    run(accelerate_cmd("cpu.yaml", "recipes/grpo.py", *grpo_args(out, 3, "--report_to", "wandb")),
        env={"WANDB_MODE": "offline"})
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    for r in train_rows:
        # rewards/timeouts and rewards/errors: the reward functions' own counts, per step (rewards/registry.py)
        for key in ("train/loss", "train/reward", "train/kl", "rewards/r1_zero/mean", "rewards/timeouts",
                    "rewards/errors"):
            assert isinstance(r[key], int | float) and math.isfinite(r[key]), (key, r)
    # completions are logged with their rewards, the config and commit are saved, checkpoints are complete
    samples = read_jsonl(os.path.join(out, "completions.jsonl"))
    assert len(samples) == 3 * 8 and all("r1_zero" in s["rewards"] for s in samples)
    assert os.path.isfile(os.path.join(out, "config.yaml")) and os.path.isfile(os.path.join(out, "git_commit.txt"))
    assert os.path.isfile(os.path.join(out, "checkpoint-2", COMPLETE_MARKER))
    assert os.path.isfile(os.path.join(out, "final", "config.json"))
    assert os.path.isfile(os.path.join(out, "progress.png"))
    # W&B ran for real, offline, inside the run dir
    assert glob.glob(os.path.join(out, "wandb", "offline-run-*"))


def test_grpo_two_processes_ddp(tmp_path):
    out = str(tmp_path / "ddp")
    run(accelerate_cmd("cpu_ddp.yaml", "recipes/grpo.py", *grpo_args(out, 2)))
    rows = [r for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    # both ranks' completions are gathered on the main process: 2 processes x 8 per step
    assert len(read_jsonl(os.path.join(out, "completions.jsonl"))) == 2 * 2 * 8
    assert os.path.isfile(os.path.join(out, "checkpoint-2", COMPLETE_MARKER))


def test_resume_continues_step_count_and_data_order(tmp_path):
    straight = str(tmp_path / "straight")
    run(recipe_cmd("recipes/grpo.py", *grpo_args(straight, 4)))
    resumed = two_step_run(str(tmp_path / "resumed"))
    proc = run(recipe_cmd("recipes/grpo.py",
                          *grpo_args(resumed, 4, "--resume_from_checkpoint", "auto", "--save_steps", "3")))
    assert "resuming from" in proc.stdout and "checkpoint-2" in proc.stdout
    # this run's save_steps (3) apply, not the checkpoint's (2, restored by transformers with the state); the
    # Trainer also saves at max_steps
    assert sorted(int(c.rsplit("-", 1)[1]) for c in glob.glob(os.path.join(resumed, "checkpoint-*"))) == [2, 3, 4]
    state = json.load(open(os.path.join(resumed, "checkpoint-4", "trainer_state.json")))
    assert state["global_step"] == 4
    a, b = prompts_by_step(straight), prompts_by_step(resumed)
    assert sorted(b) == [1, 2, 3, 4]
    assert a == b, "resumed run saw different prompts than the uninterrupted one"


def test_sft_smoke(tmp_path):
    assets = tiny_assets()
    out = str(tmp_path / "sft")
    run(accelerate_cmd("cpu.yaml", "recipes/sft.py", "--config", os.path.join(REPO, "tests/fixtures/recipes/sft_test.yaml"),
                       "--model_name_or_path", assets["model"],
                       "--dataset_name", os.path.join(assets["data"], "sft.jsonl"),
                       "--output_dir", out, "--max_steps", "6", "--logging_steps", "1", "--report_to", "none",
                       "--save_strategy", "no"))
    losses = [r["train/loss"] for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if "train/loss" in r]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], "SFT loss did not go down on a tiny model in 6 steps"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)


@pytest.mark.parametrize(
    "override, culprit",
    [
        (["--not_a_field", "1"], "not_a_field"),
        (["--model_name_or_path", "results/checkpoints/does_not_exist"], "results/checkpoints/does_not_exist"),
        (["--reward_funcs", "r1_zero", "no_such_reward"], "no_such_reward"),
        (["--dataset_name", "__EMPTY__"], "empty file (no rows)"),
        (["--dataset_name", "__NOCOL__"], "no problem column"),
    ],
)
def test_bad_inputs_end_with_one_line_error(tmp_path, override, culprit):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    nocol = tmp_path / "nocol.jsonl"
    nocol.write_text('{"text": "2+2", "label": 4}\n')
    override = [str(empty) if o == "__EMPTY__" else str(nocol) if o == "__NOCOL__" else o for o in override]
    extra = ["--bad_rows", "error"] if culprit == "no problem column" else []
    proc = run([sys.executable, os.path.join(REPO, "recipes/grpo.py"), *grpo_args(str(tmp_path / "r"), 1), *extra,
                *override], check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and culprit in lines[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_unknown_yaml_field_names_the_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(open(os.path.join(REPO, "tests/fixtures/recipes/grpo_test.yaml")).read() + "\nlearning_rat: 0.1\n")
    proc = run([sys.executable, os.path.join(REPO, "recipes/grpo.py"), "--config", str(recipe)], check=False, timeout=300)
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and "learning_rat" in proc.stderr and "Traceback" not in proc.stderr
