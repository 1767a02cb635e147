"""The launcher (`python -m math_grpo.launch`, `launch/grpo.sh`) on bad input: one line naming the culprit,
exit 2, no traceback, nothing started. The end-to-end launcher runs are in tests/test_launcher_runs.py."""

from __future__ import annotations

import os
import sys

import pytest
from _tiny import REPO, run

SERVER_RECIPE = os.path.join(REPO, "recipes", "tiny", "grpo_server.yaml")


def _launch(*args: str) -> tuple[int, list[str], str]:
    proc = run([sys.executable, "-m", "math_grpo.launch", *args], timeout=180, check=False)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    return proc.returncode, errors, proc.stdout + proc.stderr


def test_port_out_of_range_is_one_line():
    rc, errors, text = _launch("--port", "99999", SERVER_RECIPE, "--check")
    assert rc == 2 and len(errors) == 1 and "--port: 99999 is not a port (1-65535)" in errors[0], text[-3000:]
    assert "Traceback" not in text


@pytest.mark.parametrize("args, culprit", [
    (["--port", "0"], "--port: 0 is not a port"),
    (["--port", "80a"], "--port: '80a' is not a number"),
    (["--health-timeout", "-5"], "--health-timeout: -5"),
    (["--health-timeout", "nan"], "--health-timeout: nan"),
    (["--kv-cache-bytes", "0"], "--kv-cache-bytes: 0"),
    (["--port"], "--port needs a value"),
    (["--role", "trainer"], "--role trainer trains against a running server: pass --server-url"),
    (["--role", "server", "--server-url", "http://h:8000"], "--server-url is for the trainer role"),
    (["--num-machines", "2"], "--num-machines 2: pass --main-process-ip"),
    (["--role", "chef"], "--role: invalid choice: 'chef'"),
])
def test_bad_launcher_options_are_named(args, culprit):
    from math_grpo.errors import MathGRPOError
    from math_grpo.launch import parse_options

    with pytest.raises(MathGRPOError) as err:
        parse_options([SERVER_RECIPE, *args])
    assert culprit in str(err.value) and "\n" not in str(err.value)


def test_recipe_port_out_of_range_is_named(tmp_path):
    rc, errors, text = _launch(SERVER_RECIPE, "--vllm_server_port", "99999", "--check")
    assert rc == 2 and len(errors) == 1 and "vllm_server_port: 99999 is not a port" in errors[0], text[-3000:]
    assert "Traceback" not in text


def _minimal_recipe(tmp_path, extra: str) -> str:
    """What a new user writes first: a model, a data file, one misspelt field; TRL's defaults for the rest
    (bf16 on, which this CPU machine cannot run: the misspelling must still be what is reported)."""
    path = tmp_path / "mine.yaml"
    path.write_text(f"model_name_or_path: {tmp_path}/model\ndataset_name: {tmp_path}/train.jsonl\n{extra}\n")
    return str(path)


@pytest.mark.parametrize("entry", ["launcher", "recipe"])
def test_minimal_recipe_misspelt_field_reports_the_field_not_bf16(tmp_path, entry):
    recipe = _minimal_recipe(tmp_path, "learnig_rate: 1.0e-5")
    if entry == "launcher":
        rc, errors, text = _launch(recipe)
    else:
        proc = run([sys.executable, os.path.join(REPO, "recipes", "grpo.py"), "--config", recipe], check=False,
                   timeout=180)
        rc, text = proc.returncode, proc.stdout + proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1, text[-3000:]
    assert "mine.yaml" in errors[0] and "unknown field(s) learnig_rate" in errors[0], errors
    assert "bf16" not in errors[0] and "Traceback" not in text


def test_misspelt_command_line_override_is_named(tmp_path):
    recipe = _minimal_recipe(tmp_path, "learning_rate: 1.0e-5")
    proc = run([sys.executable, os.path.join(REPO, "recipes", "grpo.py"), "--config", recipe, "--max_step", "3"],
               check=False, timeout=180)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "unknown argument(s) --max_step" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_recipe_through_the_shell_shim_exits_2_and_starts_nothing(tmp_path):
    """`launch/grpo.sh` with a recipe naming a missing model: exit 2 before any server or run dir exists."""
    out = tmp_path / "run"
    proc = run(["bash", os.path.join(REPO, "launch", "grpo.sh"), SERVER_RECIPE, "--model_name_or_path",
                str(tmp_path / "no_model"), "--output_dir", str(out)], check=False, timeout=180,
               env={"PYTHON": sys.executable})
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "no_model does not exist" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "starting the vLLM server" not in proc.stdout
    assert not out.exists()
