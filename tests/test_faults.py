"""What real runs meet, with real processes: signals, partial checkpoints, NaN, a full disk, W&B outages.

The server faults (server killed mid-run, unreachable) live in tests/test_server_*.py beside the server.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from _runs import grpo_args, interrupt_when, train_steps, two_step_run
from _tiny import REPO, accelerate_cmd, read_jsonl, recipe_cmd, run

from math_grpo.checkpoints import COMPLETE_MARKER

pytestmark = pytest.mark.slow


def _interrupt_after(cmd: list[str], out: str, steps: int, interrupt) -> subprocess.CompletedProcess:
    """Run a training command, call `interrupt(proc)` once it has logged `steps` steps, return how it ended."""
    return interrupt_when(cmd, lambda: len(train_steps(out)) >= steps, interrupt, f"step {steps}")


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path):
    out = str(tmp_path / "run")
    cmd = accelerate_cmd("cpu.yaml", "recipes/grpo.py", *grpo_args(out, 500, "--save_steps", "1000"))
    # what Slurm does to a job step at pre-emption
    ended = _interrupt_after(cmd, out, 2, lambda proc: os.killpg(proc.pid, signal.SIGTERM))
    output = ended.stdout
    assert ended.returncode != 0
    assert "received SIGTERM" in output, output[-4000:]
    ckpts = sorted(glob.glob(os.path.join(out, "checkpoint-*")))
    assert len(ckpts) == 1 and os.path.isfile(os.path.join(ckpts[0], COMPLETE_MARKER)), (ckpts, output[-3000:])
    saved_step = int(ckpts[0].rsplit("-", 1)[1])
    assert saved_step >= 2
    # resume continues from the saved step (not from 0) and counts on
    target = saved_step + 2
    resumed = run(recipe_cmd("recipes/grpo.py",
                             *grpo_args(out, target, "--resume_from_checkpoint", "auto", "--save_steps", "1000")))
    assert f"checkpoint-{saved_step}" in resumed.stdout
    steps = train_steps(out)
    assert steps[-2:] == [saved_step + 1, target]


def test_sigint_saves_and_exits_130_and_a_second_signal_aborts_at_once(tmp_path):
    """Ctrl-C to the trainer itself (no accelerate in between, so its exit code is the trainer's own)."""
    out = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(REPO, "recipes/grpo.py"), *grpo_args(out, 500, "--save_steps", "1000")]
    ended = _interrupt_after(cmd, out, 2, lambda proc: proc.send_signal(signal.SIGINT))
    assert ended.returncode == 128 + signal.SIGINT, ended.stdout[-3000:]
    assert "received SIGINT" in ended.stdout
    saved = [c for c in glob.glob(os.path.join(out, "checkpoint-*")) if os.path.isfile(os.path.join(c, COMPLETE_MARKER))]
    assert [int(c.rsplit("-", 1)[1]) for c in saved] == [train_steps(out)[-1]], (saved, ended.stdout[-3000:])

    out2 = str(tmp_path / "run2")
    cmd = [sys.executable, os.path.join(REPO, "recipes/grpo.py"), *grpo_args(out2, 500, "--save_steps", "1000")]
    aborted_at: list[float] = []

    def twice(proc):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)  # the first handler has run; the second signal must not wait for the step's end
        proc.send_signal(signal.SIGINT)
        aborted_at.append(time.monotonic())

    ended = _interrupt_after(cmd, out2, 2, twice)
    assert ended.returncode == 130 and "interrupted" in ended.stdout, ended.stdout[-3000:]
    assert "stopped at step" not in ended.stdout  # aborted: no orderly stop after the step
    assert time.monotonic() - aborted_at[0] < 120  # bounded (the stop itself is not timed)


def test_stop_file_ends_sft_cleanly_with_its_model_saved(tmp_path):
    """The demo stops its SFT baseline this way when GRPO ends: exit 0, model saved, stopped mid-run."""
    from _tiny import tiny_assets

    assets = tiny_assets()
    out, stop = str(tmp_path / "sft"), str(tmp_path / "STOP")
    cmd = recipe_cmd("recipes/sft.py", "--config", os.path.join(REPO, "tests/fixtures/recipes/sft_test.yaml"),
                     "--model_name_or_path", assets["model"], "--dataset_name", os.path.join(assets["data"], "sft.jsonl"),
                     "--output_dir", out, "--max_steps", "100000", "--logging_steps", "1", "--report_to", "none",
                     "--save_strategy", "no", "--stop_file", stop)
    ended = _interrupt_after(cmd, out, 3, lambda proc: open(stop, "w").close())
    output = ended.stdout
    assert ended.returncode == 0, output[-4000:]
    assert f"stop file {stop} found" in output, output[-3000:]
    steps = train_steps(out)
    assert 3 <= steps[-1] < 1000, steps
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)


def test_partial_checkpoint_is_skipped_on_resume(tmp_path):
    out = two_step_run(str(tmp_path / "run"))
    # a save cut short: a newer checkpoint folder without its completion marker and missing files
    partial = os.path.join(out, "checkpoint-7")
    shutil.copytree(os.path.join(out, "checkpoint-2"), partial)
    os.remove(os.path.join(partial, COMPLETE_MARKER))
    for name in os.listdir(partial):
        if name.startswith("optimizer"):
            os.remove(os.path.join(partial, name))
    proc = run(recipe_cmd("recipes/grpo.py", *grpo_args(out, 3, "--resume_from_checkpoint", "auto")))
    assert "skipping incomplete checkpoint" in proc.stdout and "checkpoint-7" in proc.stdout
    assert "resuming from" in proc.stdout and "checkpoint-2" in proc.stdout
    assert train_steps(out)[-1] == 3
    assert not os.path.isdir(partial) and glob.glob(partial + ".incomplete-*")


def test_non_finite_weights_stop_the_run_with_a_usable_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    # Warm-up makes step 1's learning rate 0 (a good checkpoint-1); at step 2 AdamW's decoupled weight decay,
    # lr * wd = 1e30 / 3 * 1e10, overflows float32 and every weight becomes inf (a random policy earns no
    # reward, so the gradients alone would not move it).
    proc = run(recipe_cmd("recipes/grpo.py",
                          *grpo_args(out, 6, "--learning_rate", "1e30", "--lr_scheduler_type", "linear",
                                     "--warmup_steps", "3", "--weight_decay", "1e10", "--save_steps", "1")),
               check=False)
    assert proc.returncode != 0
    assert "non-finite" in proc.stderr and "checkpoint-1" in proc.stderr, proc.stderr[-3000:]
    assert os.path.isfile(os.path.join(out, "checkpoint-1", COMPLETE_MARKER))
    assert not glob.glob(os.path.join(out, "checkpoint-[2-9]"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(os.path.join(out, "checkpoint-1"))
    import torch

    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_weights_overflowing_between_saves_stop_the_run_at_that_step(tmp_path):
    """No warm-up and no save due: step 1's decoupled weight decay (lr * wd overflows float32) turns every
    weight inf although that step's loss and gradient norm were finite. The run must stop at step 1 with the
    guard's one-line error, not die at step 2's sampling on NaN probabilities with a traceback."""
    out = str(tmp_path / "run")
    proc = run(recipe_cmd("recipes/grpo.py",
                          *grpo_args(out, 6, "--learning_rate", "1e30", "--weight_decay", "1e10",
                                     "--save_steps", "1000")), check=False)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert "non-finite weights=nan at step 1" in errors[0] and "last usable checkpoint: None" in errors[0], errors
    assert "probability tensor" not in proc.stderr
    assert train_steps(out) == [1] and not glob.glob(os.path.join(out, "checkpoint-*"))


@pytest.mark.parametrize("key, value", [("loss", float("nan")), ("grad_norm", float("inf"))])
def test_non_finite_loss_or_grad_norm_stops_and_saves_the_finite_weights(key, value):
    """The guard on a logged NaN loss / inf gradient norm (the weights still finite): stop, and save them. Fed
    the Trainer's own state and control objects, as `Trainer` calls `on_log`."""
    from _tiny import tiny_assets
    from transformers import AutoModelForCausalLM, TrainerControl, TrainerState

    from math_grpo.callbacks import NonFiniteGuard

    model = AutoModelForCausalLM.from_pretrained(tiny_assets()["model"])
    guard, control = NonFiniteGuard(), TrainerControl()
    guard.on_log(None, TrainerState(global_step=3), control, logs={"loss": 0.5, "grad_norm": 1.0}, model=model)
    assert guard.tripped is None and not control.should_training_stop
    guard.on_log(None, TrainerState(global_step=4), control, logs={"loss": 0.5, "grad_norm": 1.0, key: value},
                 model=model)
    assert guard.tripped[:2] == (4, key) and control.should_training_stop and control.should_save


def test_failed_evaluation_never_costs_the_run(tmp_path):
    """An evaluation that raises (here transformers' own refusal of 2 greedy samples per prompt in-process):
    each evaluation point is reported failed and counted as eval/failed, and training runs to its end."""
    from _tiny import tiny_assets

    out = str(tmp_path / "run")
    bench = os.path.join(tiny_assets()["data"], "test.jsonl")
    proc = run(recipe_cmd("recipes/grpo.py",
                          *grpo_args(out, 3, "--benchmarks", f"synthetic={bench}", "--eval_steps", "2",
                                     "--eval_max_samples", "4", "--eval_max_tokens", "8", "--eval_n", "2",
                                     "--eval_temperature", "0", "--save_steps", "1000")))
    assert proc.stdout.count("evaluation failed, training goes on") == 3, proc.stdout[-3000:]  # steps 0, 2, 3
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3]
    assert sorted(r["step"] for r in rows if r.get("eval/failed") == 1.0) == [0, 2, 3]
    assert not [r for r in rows if "eval/accuracy" in r]
    assert os.path.isfile(os.path.join(out, "final", "config.json"))


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {ok.stderr.decode().strip()}")
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(small_disk):
    out = os.path.join(small_disk, "run")
    proc = run(recipe_cmd("recipes/grpo.py", *grpo_args(out, 20, "--save_steps", "1")), check=False)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors and "disk full" in errors[-1], proc.stderr[-3000:]
    complete = [c for c in glob.glob(os.path.join(out, "checkpoint-*")) if os.path.isfile(os.path.join(c, COMPLETE_MARKER))]
    assert complete, "no complete checkpoint survived"
    last = max(complete, key=lambda c: int(c.rsplit("-", 1)[1]))
    assert last in errors[-1]
    state = json.load(open(os.path.join(last, "trainer_state.json")))
    assert state["global_step"] == int(last.rsplit("-", 1)[1])


def test_wandb_unreachable_goes_offline_once_and_hides_the_key(tmp_path):
    out = str(tmp_path / "run")
    secret = "abcdef0123456789abcdef0123456789abcdef01"
    env = {"WANDB_API_KEY": secret, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_MODE": ""}
    # A token field of TrainingArguments, in the recipe (on a command line, ps and W&B's argv record see it):
    # kept out of every checkpoint's pickled training_args.bin and of the W&B run.
    hub = "hf_" + "x7" * 17
    recipe = tmp_path / "recipe.yaml"
    with open(os.path.join(REPO, "tests/fixtures/recipes/grpo_test.yaml"), encoding="utf-8") as f:
        recipe.write_text(f.read() + f"\nhub_token: {hub}\n", encoding="utf-8")
    args = grpo_args(out, 2, "--report_to", "wandb")
    args[args.index("--config") + 1] = str(recipe)
    cmd = recipe_cmd("recipes/grpo.py", *args)
    full_env = {k: v for k, v in {**os.environ, **env}.items() if v}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = (proc.stdout + proc.stderr).count("W&B server unreachable")
    assert said == 1
    assert glob.glob(os.path.join(out, "wandb", "offline-run-*"))
    assert secret not in proc.stdout + proc.stderr and hub not in proc.stdout + proc.stderr
    for path in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        if os.path.isfile(path) and os.path.getsize(path) < 20_000_000:
            with open(path, "rb") as f:
                data = f.read()
            assert secret.encode() not in data, f"W&B key leaked into {path}"
            assert hub.encode() not in data, f"hub_token leaked into {path}"


def test_secret_looking_config_keys_are_redacted_in_the_saved_config(tmp_path):
    from math_grpo.checkpoints import write_run_metadata

    write_run_metadata(str(tmp_path), script={"wandb_api_key": "k" * 40, "learning_rate": 1e-5,
                                              "nested": {"db_password": "hunter2", "run_name": "x"}})
    text = (tmp_path / "config.yaml").read_text(encoding="utf-8")
    assert "k" * 40 not in text and "hunter2" not in text and text.count("<redacted>") == 2
    assert "learning_rate: 1.0e-05" in text and "run_name: x" in text


def test_malformed_rows_are_counted_in_a_real_run(tmp_path):
    from _tiny import tiny_assets

    src = os.path.join(tiny_assets()["data"], "train.jsonl")
    bad = tmp_path / "train.jsonl"
    with open(src, "rb") as f:
        lines = f.read().splitlines()[:40]
    lines[3] = b'{"problem": "", "answer": "1"}'
    lines[5] = b'{"problem": "no answer"}'
    lines[7] = b'{"problem": "\xff\xfe bad bytes", "answer": "2"}'
    lines[9] = json.dumps({"problem": "x" * 50_000, "answer": "3"}).encode()
    bad.write_bytes(b"\n".join(lines) + b"\n")
    proc = run(recipe_cmd("recipes/grpo.py", *grpo_args(str(tmp_path / "r"), 1, "--dataset_name", str(bad))))
    assert "kept 36 of 40 rows, skipped 4 malformed" in proc.stdout
    proc = run([sys.executable, os.path.join(REPO, "recipes/grpo.py"),
                *grpo_args(str(tmp_path / "r2"), 1, "--dataset_name", str(bad), "--bad_rows", "error")], check=False)
    assert proc.returncode == 2 and "train.jsonl: row 4: empty problem" in proc.stderr
