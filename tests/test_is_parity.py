"""The fused importance-sampling ratio (math_grpo.trl_adapter: `_is_ratio`, `fused_is_applies`) against TRL's own.

TRL computes the vLLM importance-sampling ratio from an extra no-grad forward over every rollout; the adapter
computes it from the training forward when that gives the same numbers. Each case runs one batch both ways
through a real trainer (tests/_trl_fake.py: TRL's rollout, scoring and loss code, a stand-in for the vLLM
engine) and compares the ratio, the loss (which also carries `off_policy_mask_threshold`'s sequence mask) and
the five `sampling/*` metrics. Every path `fused_is_applies` leaves to TRL has a test of its own below.

One known difference, by design: with `steps_per_generation` > 1 the fused `sampling/*` metrics are taken per
micro-batch (averaged over the step) rather than once per generation batch; the ratios themselves are the same.
"""

from __future__ import annotations

import copy
import json

import pytest
from _tiny import CHILD_ENV, accelerate_cmd, run, tiny_assets
from _trl_fake import SAMPLING_KEYS, parity_cases, rows, run_cases, tiny_trainer

from math_grpo.trl_adapter import FUSED_LOSS_TYPES, fused_is_applies

CASES = parity_cases()


def case_id(case: dict) -> str:
    lo = case["vllm_importance_sampling_clip_min"]
    return f"{case['vllm_importance_sampling_mode']}-min{lo}-opm{case['off_policy_mask_threshold']}"


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return tiny_trainer(str(tmp_path_factory.mktemp("is-parity")))


def assert_parity(result: dict) -> None:
    case = result["case"]
    assert result["same_rollouts"], "the two rounds must score the same rollouts"
    assert "importance_sampling_ratio" not in result["fused_keys"] and "old_per_token_logps" not in result["fused_keys"], \
        f"the fused round still ran TRL's extra forward: {result['fused_keys']}"
    assert result["max_ratio_diff"] <= 1e-6, f"{case}: ratio differs from TRL's by {result['max_ratio_diff']}"
    assert result["fused_loss"] == pytest.approx(result["trl_loss"], abs=1e-6), case
    for key in SAMPLING_KEYS:
        assert result["fused_metrics"][key] == pytest.approx(result["trl_metrics"][key], abs=1e-6), (case, key)
    # The batch reaches the bounds it sets, so clipping/masking on both sides is compared, not skipped.
    assert result["above_max"], f"{case}: no ratio above clip_max in this batch"
    assert result["below_min"] or case["vllm_importance_sampling_clip_min"] is None, f"{case}: none below clip_min"
    assert result["ratio_shape"][1] == (1 if case["vllm_importance_sampling_mode"].startswith("sequence") else 12)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_fused_ratio_matches_trl(trainer, case):
    assert trainer._fused_is, "the tiny trainer is a case the fused ratio covers"
    (result,) = run_cases(trainer, [case])
    assert_parity(result)


def test_off_policy_mask_changes_the_loss_it_is_compared_on(trainer):
    """The off-policy mask cases are only a check if the mask drops something in this batch."""
    base, masked = run_cases(trainer, [CASES[0], CASES[1]])
    assert masked["case"]["off_policy_mask_threshold"] is not None and base["case"]["off_policy_mask_threshold"] is None
    assert masked["trl_loss"] != pytest.approx(base["trl_loss"], abs=1e-6)


@pytest.mark.slow
def test_fused_ratio_matches_trl_on_two_ranks(tmp_path):
    """Two gloo ranks, each with its own batch: the gathered metrics and each rank's ratio and loss agree."""
    assets = tiny_assets()
    out = str(tmp_path / "parity.json")
    run(accelerate_cmd("cpu_ddp.yaml", "tests/_trl_fake.py", out), timeout=600,
        env={**CHILD_ENV, "TINY_MODEL": assets["model"], "TINY_DATA": assets["data"]})
    ranks = []
    for rank in (0, 1):
        with open(f"{out}.{rank}", encoding="utf-8") as f:
            ranks.append(json.load(f))
    assert [r["world"] for r in ranks] == [2, 2]
    for r in ranks:
        for result in r["results"]:
            assert_parity(result)
    # The metrics are gathered over both ranks (the same on each), and the ranks trained different batches.
    for a, b in zip(ranks[0]["results"], ranks[1]["results"]):
        assert a["trl_metrics"] == b["trl_metrics"]
        assert a["trl_loss"] != b["trl_loss"]


# -- the paths the fused ratio does not cover: each keeps TRL's own computation ------------------------------
def _changed(trainer, **changes):
    t = copy.copy(trainer)
    t.args = copy.copy(trainer.args)
    for key, value in changes.items():
        setattr(t.args if key in ("gradient_accumulation_steps", "steps_per_generation") else t, key, value)
    return t


@pytest.mark.parametrize("why, changes", [
    ("old logprobs come from weights before an update (several passes per batch)", {"num_iterations": 2}),
    ("a generation batch spans optimizer steps", {"gradient_accumulation_steps": 1, "steps_per_generation": 2}),
    ("vespo folds the ratio into its gamma weights", {"loss_type": "vespo"}),
    ("a loss type this adapter was not checked against", {"loss_type": "some_new_loss"}),
    ("an IS mode this adapter was not checked against", {"vllm_importance_sampling_mode": "some_new_mode"}),
    ("tool calls mask tokens with tool_mask", {"tools": [len]}),
    ("a rollout function may bring its own masks", {"rollout_func": lambda prompts, trainer: {}}),
    ("no vLLM: no ratio at all", {"use_vllm": False}),
    ("the correction is off", {"vllm_importance_sampling_correction": False}),
])
def test_uncovered_paths_keep_trls_computation(trainer, why, changes):
    assert fused_is_applies(trainer), "the unchanged trainer is covered"
    assert not fused_is_applies(_changed(trainer, **changes)), why


def test_every_allowed_loss_type_is_one_trl_multiplies_by_the_ratio():
    """FUSED_LOSS_TYPES: TRL's `_compute_loss` must apply `inputs["importance_sampling_ratio"]` for each."""
    import inspect

    from trl import GRPOTrainer

    source = inspect.getsource(GRPOTrainer._compute_loss)
    assert 'per_token_loss * inputs["importance_sampling_ratio"]' in source
    assert 'self.loss_type != "vespo"' in source
    for name in FUSED_LOSS_TYPES:
        assert f'"{name}"' in source, f"loss type {name}: not one of TRL's _compute_loss branches"


def test_field_turns_it_off(tmp_path):
    """`fused_is_ratio: false`: TRL's extra forward and its own ratio, on a run the fused ratio would cover."""
    off = tiny_trainer(str(tmp_path / "off"), script_overrides={"fused_is_ratio": False})
    assert not off._fused_is
    off.model.train()
    out = off._generate_and_score_completions(rows(off))
    assert "importance_sampling_ratio" in out and "old_per_token_logps" in out


def test_evaluation_rounds_keep_trls_computation(trainer):
    trainer.model.eval()
    try:
        out = trainer._generate_and_score_completions(rows(trainer))
    finally:
        trainer.model.train()
    assert "importance_sampling_ratio" in out and "old_per_token_logps" in out
