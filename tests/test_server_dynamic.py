"""Dynamic sampling (`dynamic_sampling: true`) on the shared CPU vLLM server: what reaches the loss (in-process
trainer, every scored round and every loss batch recorded), the refill bound, resume continuing the refill
stream, with async rollouts. (2-process DDP, with async rollouts too: tests/test_server_async.py.)"""

from __future__ import annotations

import collections
import os
import zlib

import pytest
from _runs import RECIPE, small_run
from _tiny import read_jsonl, recipe_cmd, run

pytestmark = [pytest.mark.server, pytest.mark.slow]

G = 4  # completions per prompt in these runs
DYNAMIC = ("--dynamic_sampling", "true", "--dynamic_sampling_max_rounds", "2", "--save_steps", "2",
           "--eval_steps", "1000")


def _train_rows(out: str) -> list[dict]:
    return [r for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if "train/loss" in r]


def half_constant_reward(prompts, completions, **kwargs):
    """Real reward values with a known spread: prompts whose CRC is even get a constant reward (their groups have
    zero variance), the others one by completion-length parity (their groups usually vary)."""
    return [1.0 if zlib.crc32(p.encode()) % 2 == 0 else float(len(c) % 2) for p, c in zip(prompts, completions)]


def test_dropped_groups_never_reach_the_loss_and_the_batch_is_full(vllm_server, tmp_path):
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig

    from math_grpo import data, models
    from math_grpo.configs import GRPOScriptArguments
    from math_grpo.trl_adapter import MathGRPOTrainer

    script = GRPOScriptArguments(dataset_name=os.path.join(vllm_server.data, "train.jsonl"),
                                 weight_sync_backend="filesystem", dynamic_sampling=True,
                                 dynamic_sampling_max_rounds=3)
    args = GRPOConfig(output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=16,
                      num_generations=G, max_completion_length=12, learning_rate=1e-4, beta=0.0,
                      use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
                      use_vllm=True, vllm_mode="server", vllm_server_base_url=vllm_server.url,
                      vllm_importance_sampling_correction=False, seed=0)
    dataset = data.load_training_set(script, verbose=False)
    scored, losses = [], []

    class Recording(MathGRPOTrainer):
        def _score_round(self, inputs):
            out = super()._score_round(inputs)
            scored.append({k: v.clone() for k, v in out.items() if hasattr(v, "clone") and v.ndim > 0})
            return out

        def _compute_loss(self, model, inputs):
            losses.append({k: v.clone() for k, v in inputs.items() if hasattr(v, "clone") and v.ndim > 0})
            return super()._compute_loss(model, inputs)

    tokenizer = models.load_tokenizer(vllm_server.model)
    trainer = Recording(model=AutoModelForCausalLM.from_pretrained(vllm_server.model), args=args,
                        reward_funcs=[half_constant_reward], train_dataset=dataset, processing_class=tokenizer,
                        sync_args=script)
    trainer.train()

    history = trainer._dynamic.history
    assert [h["step"] for h in history] == [0, 1, 2]
    assert all(1 <= h["dynamic_sampling/rounds"] <= 3 for h in history), history
    assert sum(len(s["advantages"]) for s in scored) == 16 * sum(h["dynamic_sampling/rounds"] for h in history)
    assert any(h["dynamic_sampling/dropped_fraction"] > 0 for h in history), history

    def key(batch, i):
        return tuple(batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()), \
            tuple(batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist())

    dropped, kept = set(), set()
    for s in scored:
        for g in range(len(s["advantages"]) // G):
            rows = range(g * G, (g + 1) * G)
            zero = all(abs(float(s["advantages"][i])) <= 1e-6 for i in rows)
            (dropped if zero else kept).update(key(s, i) for i in rows)
    assert dropped and kept
    assert len(losses) == 3 and all(len(b["advantages"]) == 16 for b in losses)  # a full batch every step
    for batch, h in zip(losses, history):
        live = [i for i in range(16) if batch["completion_mask"][i].any()]
        assert all(key(batch, i) in kept for i in live)  # only signal-carrying groups reach the loss
        assert len(live) == round(16 * h["dynamic_sampling/batch_filled"])
        by_prompt = collections.defaultdict(list)
        for i in live:
            by_prompt[key(batch, i)[0]].append(float(batch["advantages"][i]))
        assert all(any(abs(a) > 1e-6 for a in adv) for adv in by_prompt.values())


def test_refill_bound_and_resume_continue_the_refill_stream(vllm_server, tmp_path):
    """The untrained tiny model never earns an r1_zero reward: every group is dropped, so each step runs exactly
    the bound's rounds and trains on nothing, and says so; a resumed run continues the refill stream."""
    out = str(tmp_path / "run")
    proc = run(recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                          *small_run(vllm_server.model, vllm_server.data, out, 4, "--vllm_server_base_url",
                                     vllm_server.url, *DYNAMIC)), timeout=600)
    train = _train_rows(out)
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    for i, r in enumerate(train):
        assert r["train/dynamic_sampling/rounds"] == 2
        assert r["train/dynamic_sampling/dropped_fraction"] == 1.0
        assert r["train/dynamic_sampling/batch_filled"] == 0.0
        assert r["train/dynamic_sampling/prompts_consumed"] == 2 * 8 / G
        assert r["train/dynamic_sampling/refill_prompts_total"] == (i + 1) * 8 / G
        assert r["train/loss"] == 0.0
    assert "groups carry a learning signal after 2 rounds" in proc.stdout

    resumed = str(tmp_path / "resumed")
    run(recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                   *small_run(vllm_server.model, vllm_server.data, resumed, 4, "--vllm_server_base_url",
                              vllm_server.url, *DYNAMIC, "--resume_from_checkpoint",
                              os.path.join(out, "checkpoint-2"))), timeout=600)
    again = _train_rows(resumed)
    assert [r["step"] for r in again] == [3, 4]
    assert [r["train/dynamic_sampling/refill_prompts_total"] for r in again] == [6, 8]

    def prompts(run_dir: str) -> dict[int, list[str]]:  # the last round of each step: the refill's prompts
        by_step = collections.defaultdict(list)
        for row in read_jsonl(os.path.join(run_dir, "completions.jsonl")):
            by_step[row["step"]].append(row["prompt"])
        return {step: sorted(p) for step, p in by_step.items()}

    first, second = prompts(out), prompts(resumed)
    assert second[3] == first[3] and second[4] == first[4] and first[3] != first[2]


def test_dynamic_sampling_with_async_rollouts(vllm_server, tmp_path):
    """Refill rounds are sampled at once and leave the prefetched next batch alone: it still trains a step
    later (staleness 1, never dropped)."""
    out = str(tmp_path / "run")
    run(recipe_cmd("recipes/grpo.py", "--config", RECIPE,
                   *small_run(vllm_server.model, vllm_server.data, out, 3, "--vllm_server_base_url",
                              vllm_server.url, *DYNAMIC, "--async_rollouts", "true",
                              "--vllm_importance_sampling_correction", "true")), timeout=600)
    train = _train_rows(out)
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(r["train/dynamic_sampling/rounds"] == 2 for r in train)
    assert [r["train/async/staleness"] for r in train] == [0, 1, 1]
    assert all(r["train/async/dropped"] == 0 for r in train)
