"""A real `MathGRPOTrainer` on the tiny model whose vLLM is a stand-in: TRL's own rollout, scoring and loss
code runs on CPU without a server, so the contract and parity tests can watch TRL call the adapter's hooks.

`FakeGeneration` takes the place of `trainer.vllm_generation` after the trainer is built without vLLM; TRL's
`_generate_single_turn` then calls its `sync_weights` and `generate` as it calls a real one's. It samples
completions as random token ids with random "vLLM" logprobs (seeded by the prompt, so a replay of a batch gets
the same rollouts): the importance-sampling ratios then spread over both clip bounds.

Run as a script (`python tests/_trl_fake.py OUT.json`, under `accelerate launch` for several ranks) it writes
the IS parity results of `parity_cases()` for the rank (tests/test_is_parity.py reads them).
"""

from __future__ import annotations

import math
import os
import sys
import zlib
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeGeneration:
    """Stands in for TRL's `VLLMGeneration`: the two calls TRL's rollout makes, with recorded calls."""

    def __init__(self, vocab: int, max_tokens: int, eos_id: int):
        self.vocab, self.max_tokens, self.eos_id = vocab, max_tokens, eos_id
        self.syncs = 0
        self.calls = 0

    def sync_weights(self) -> None:
        self.syncs += 1

    def generate(self, prompts: list[list[int]], images: Any, num_generations: int, profiler: Any = None) -> tuple:
        import torch

        self.calls += 1
        completions, logprobs = [], []
        for i, ids in enumerate(prompts):
            g = torch.Generator().manual_seed(zlib.crc32(bytes(str((ids, i % num_generations)), "utf-8")))
            n = int(torch.randint(2, self.max_tokens + 1, (1,), generator=g))
            tokens = torch.randint(5, self.vocab, (n,), generator=g).tolist()
            if n < self.max_tokens:
                tokens[-1] = self.eos_id  # some end, some are cut at max_tokens: masks of different lengths
            completions.append(tokens)
            # About what the untrained model gives a random token (-log V), spread so ratios reach both clip bounds.
            noise = (torch.rand(n, generator=g) * 2 - 1) * 1.5
            logprobs.append([[float(v)] for v in noise - math.log(self.vocab)])
        return prompts, completions, logprobs, None


def reward_by_length(completions: list[str], **kwargs: Any) -> list[float]:
    """Rewards that differ within a group, so advantages (and the loss) are not zero."""
    return [float(len(c) % 7) for c in completions]


def tiny_trainer(out_dir: str, script_overrides: dict | None = None, **config: Any):
    """A `MathGRPOTrainer` on the session's tiny model whose vLLM is `FakeGeneration` (TRL's importance-sampling
    correction on); `config` overrides GRPOConfig fields."""
    import torch
    from _tiny import tiny_assets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from math_grpo.configs import GRPOScriptArguments
    from math_grpo.data import format_prompts, load_problems
    from math_grpo.trl_adapter import MathGRPOTrainer, fused_is_applies

    torch.set_num_threads(1)
    assets = tiny_assets() if "TINY_MODEL" not in os.environ else {"model": os.environ["TINY_MODEL"],
                                                                    "data": os.environ["TINY_DATA"]}
    model = AutoModelForCausalLM.from_pretrained(assets["model"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(assets["model"])
    ds, _ = load_problems(os.path.join(assets["data"], "train.jsonl"), limit=64, verbose=False)
    ds = format_prompts(ds)
    settings = dict(output_dir=out_dir, per_device_train_batch_size=8, num_generations=4, max_completion_length=12,
                    max_steps=2, learning_rate=1e-3, lr_scheduler_type="constant", beta=0.0, bf16=False,
                    use_cpu=True, gradient_checkpointing=False, report_to=[], save_strategy="no", logging_steps=1,
                    seed=0, use_vllm=False, vllm_importance_sampling_correction=True, disable_tqdm=True)
    args = GRPOConfig(**{**settings, **config})
    script_args = GRPOScriptArguments(**(script_overrides or {}))
    trainer = MathGRPOTrainer(model=model, reward_funcs=reward_by_length, args=args, train_dataset=ds,
                              processing_class=tok, sync_args=script_args)
    # What TRL's __init__ sets up for vLLM, with the stand-in for the engine.
    trainer.use_vllm = True
    trainer.vllm_generation = FakeGeneration(len(tok), args.max_completion_length, tok.eos_token_id)
    trainer._last_loaded_step = -1
    trainer._fused_is = fused_is_applies(trainer, script_args)
    return trainer


def rows(trainer: Any, start: int = 0) -> list[dict]:
    """One generation batch of dataset rows (each prompt `num_generations` times, as TRL's sampler repeats it)."""
    n, g = trainer.args.per_device_train_batch_size, trainer.num_generations
    ds = trainer.train_dataset
    return [dict(ds[start + i // g]) for i in range(n)]


SAMPLING_KEYS = ("sampling/sampling_logp_difference/mean", "sampling/sampling_logp_difference/max",
                 "sampling/importance_sampling_ratio/min", "sampling/importance_sampling_ratio/mean",
                 "sampling/importance_sampling_ratio/max")


def both_ways(trainer: Any, batch: list[dict]) -> dict[str, Any]:
    """The same batch through TRL's own importance-sampling computation and through the fused one.

    TRL's: `_generate_and_score_completions` with the correction on (its extra "old logprobs" forward, its
    ratio and sampling/* metrics), then `_compute_loss`. Fused: the adapter's round (no extra forward), then
    `_compute_loss`, where the ratio comes from the training forward. Returns both ratios (the fused one from
    TRL's old logprobs, to compare the arithmetic exactly), both losses and both metric sets.
    """
    import torch

    trainer.model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by train()
    fused = trainer._fused_is
    out: dict[str, Any] = {}
    try:
        trainer._fused_is = False
        trainer._metrics["train"].clear()
        torch.manual_seed(0)
        ref = trainer._generate_and_score_completions(batch)
        out["trl_metrics"] = {k: trainer._metrics["train"][k][-1] for k in SAMPLING_KEYS}
        out["trl_ratio"] = ref["importance_sampling_ratio"]
        out["trl_loss"] = trainer._compute_loss(trainer.model, ref).item()

        trainer._fused_is = True
        trainer._metrics["train"].clear()
        torch.manual_seed(0)
        mine = trainer._generate_and_score_completions(batch)
        out["fused_inputs_keys"] = sorted(mine)
        out["fused_loss"] = trainer._compute_loss(trainer.model, mine).item()
        out["fused_metrics"] = {k: trainer._metrics["train"][k][-1] for k in SAMPLING_KEYS}
        out["same_rollouts"] = torch.equal(ref["completion_ids"], mine["completion_ids"])
        out["fused_ratio"] = trainer._is_ratio(ref["old_per_token_logps"], mine)
        # The ratio before clipping, to show which clip bounds this batch reaches.
        diff = torch.nan_to_num((ref["old_per_token_logps"] - ref["sampling_per_token_logps"]) * ref["completion_mask"])
        sequence = trainer.vllm_importance_sampling_mode.startswith("sequence")
        raw = torch.exp(diff.sum(-1) if sequence else diff[ref["completion_mask"].bool()])
        out["raw_min"], out["raw_max"] = float(raw.min()), float(raw.max())
        trainer._metrics["train"].clear()
    finally:
        trainer._fused_is = fused
    return out


def parity_cases() -> list[dict[str, Any]]:
    """The importance-sampling settings the parity test covers: both levels, truncate and mask, both clip
    bounds (and an open lower bound), with and without the off-policy sequence mask."""
    cases = []
    for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
        for opm in (None, 0.0):
            seq = mode.startswith("sequence")
            cases.append({"vllm_importance_sampling_mode": mode, "off_policy_mask_threshold": opm,
                          "vllm_importance_sampling_clip_min": 0.5 if not seq else 0.3,
                          "vllm_importance_sampling_clip_max": 2.0 if not seq else 8.0})
    cases.append({"vllm_importance_sampling_mode": "token_mask", "off_policy_mask_threshold": None,
                  "vllm_importance_sampling_clip_min": None, "vllm_importance_sampling_clip_max": 2.0})
    return cases


def run_cases(trainer: Any, cases: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    """`both_ways` for each case on the same batch, as plain numbers (comparable across processes)."""
    results = []
    batch = rows(trainer, start)
    for case in cases:
        for key, value in case.items():
            setattr(trainer, key, value)
        r = both_ways(trainer, batch)
        lo, hi = case["vllm_importance_sampling_clip_min"], case["vllm_importance_sampling_clip_max"]
        results.append({
            "case": case, "same_rollouts": r["same_rollouts"], "fused_keys": r["fused_inputs_keys"],
            "max_ratio_diff": float((r["trl_ratio"] - r["fused_ratio"]).abs().max()),
            "ratio_shape": list(r["trl_ratio"].shape), "trl_loss": r["trl_loss"], "fused_loss": r["fused_loss"],
            "trl_metrics": r["trl_metrics"], "fused_metrics": r["fused_metrics"],
            "below_min": lo is not None and r["raw_min"] < lo, "above_max": hi is not None and r["raw_max"] > hi,
        })
    return results


def main(out_json: str) -> None:
    import json
    import tempfile

    from accelerate import PartialState

    state = PartialState(cpu=True)
    trainer = tiny_trainer(tempfile.mkdtemp(prefix="is-parity-"))
    results = run_cases(trainer, parity_cases(), start=8 * state.process_index)
    with open(f"{out_json}.{state.process_index}", "w", encoding="utf-8") as f:
        json.dump({"rank": state.process_index, "world": state.num_processes, "results": results}, f)


if __name__ == "__main__":
    main(sys.argv[1])
