"""fp32 master weights: at the original design's learning rate 5e-7 a recipe asking for `dtype: bfloat16`
moves the weights as far as a float32 one (GRPO and SFT); bf16 weights asked for explicitly barely move and
say why in one line. Each run trains from a short SFT checkpoint of the tiny model (real recipes, real TRL)."""

from __future__ import annotations

import functools
import os
import tempfile

import pytest
import torch
from _tiny import recipe_cmd, run, tiny_assets

from math_grpo.precision import served_dtype, vanishing_update_fraction

LR = "5e-7"


@functools.lru_cache(maxsize=1)
def trained_checkpoint() -> str:
    """The tiny model after 80 SFT steps: it writes the r1_zero format often enough for the format reward to
    vary within a group (so GRPO's advantages, and its gradient, are not zero)."""
    assets = tiny_assets()
    out = os.path.join(tempfile.mkdtemp(prefix="math-grpo-sft80-"), "sft")
    run(recipe_cmd("recipes/sft.py", "--config", "recipes/tiny/sft.yaml", "--model_name_or_path", assets["model"],
                   "--dataset_name", os.path.join(assets["data"], "sft.jsonl"), "--output_dir", out,
                   "--max_steps", "80", "--per_device_train_batch_size", "16"))
    return out


def _weights(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "model.safetensors"))


def relative_change(before: str, after: str) -> float:
    """||w_after - w_before|| / ||w_before||, with the start point rounded to the dtype the run saved in (a
    bf16 run starts from the bf16-rounded checkpoint)."""
    w0, w1 = _weights(before), _weights(after)
    num = sum(float(((w1[k].float() - w0[k].to(w1[k].dtype).float()) ** 2).sum()) for k in w0)
    den = sum(float((w0[k].float() ** 2).sum()) for k in w0)
    return (num / den) ** 0.5


def _grpo(tmp: str, name: str, *extra: str) -> tuple[str, str]:
    assets = tiny_assets()
    out = os.path.join(tmp, name)
    proc = run(recipe_cmd(
        "recipes/grpo.py", "--config", "tests/fixtures/recipes/grpo_test.yaml",
        "--model_name_or_path", trained_checkpoint(), "--dataset_name", os.path.join(assets["data"], "train.jsonl"),
        "--output_dir", out, "--max_steps", "4", "--learning_rate", LR, "--reward_funcs", "format",
        "--beta", "0.0", "--max_completion_length", "40", "--save_steps", "1000", *extra))
    return os.path.join(out, "final"), proc.stdout + proc.stderr


def _sft(tmp: str, name: str, *extra: str) -> tuple[str, str]:
    assets = tiny_assets()
    out = os.path.join(tmp, name)
    proc = run(recipe_cmd(
        "recipes/sft.py", "--config", "recipes/tiny/sft.yaml", "--model_name_or_path", trained_checkpoint(),
        "--dataset_name", os.path.join(assets["data"], "sft.jsonl"), "--output_dir", out, "--max_steps", "4",
        "--learning_rate", LR, "--warmup_steps", "0", "--per_device_train_batch_size", "16", *extra))
    return out, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [_grpo, _sft], ids=["grpo", "sft"])
def test_bf16_recipe_moves_weights_as_far_as_float32(recipe, tmp_path):
    start = trained_checkpoint()
    fp32, _ = recipe(str(tmp_path), "fp32", "--dtype", "float32")
    bf16, log = recipe(str(tmp_path), "bf16", "--dtype", "bfloat16", "--bf16", "true")
    assert "[precision] policy float32 (fp32 master weights), compute bf16" in log
    bare, bare_log = recipe(str(tmp_path), "bf16_weights", "--dtype", "bfloat16", "--bf16", "true",
                            "--policy_dtype", "bfloat16")
    moved = {name: relative_change(start, folder) for name, folder in
             [("fp32", fp32), ("bf16", bf16), ("bf16_weights", bare)]}
    assert moved["fp32"] > 0, moved
    assert 0.5 <= moved["bf16"] / moved["fp32"] <= 2.0, moved  # fp32 masters: as far as float32
    assert moved["bf16_weights"] < 0.25 * moved["fp32"], moved  # the updates round away ...
    warnings = [ln for ln in bare_log.splitlines() if ln.startswith("[precision] warning")]
    assert len(warnings) == 1 and "policy_dtype: float32" in warnings[0], bare_log[-3000:]  # ... and it says so
    assert "[precision] warning" not in log


def test_vanishing_update_fraction_follows_the_rounding_step():
    layer = torch.nn.Linear(64, 64)
    with torch.no_grad():
        layer.weight.fill_(0.01)
        layer.bias.fill_(1e-6)
    assert vanishing_update_fraction(layer, 1e-3) == 0.0  # float32: every update representable
    layer.to(torch.bfloat16)
    # bf16 keeps 8 significant bits: half a step of 0.01 is about 2e-5, of 1e-6 about 2e-9.
    assert vanishing_update_fraction(layer, 5e-7) == pytest.approx(64 * 64 / (64 * 64 + 64))
    assert vanishing_update_fraction(layer, 1e-4) == 0.0


def test_served_dtype_from_server_info():
    assert served_dtype({"vllm_config": "model='m', dtype=torch.bfloat16, max_seq_len=512"}) == "bfloat16"
    assert served_dtype({"vllm_config": {"model_config": {"dtype": "torch.float16"}}}) == "float16"
    assert served_dtype({"vllm_config": "no dtype here"}) is None and served_dtype(None) is None
