"""Dynamic sampling's parts without a server: the refill stream's order and its checkpointed position, the
regrouping of rows from rounds of different widths, and the field check."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerState

from math_grpo.configs import GRPOScriptArguments
from math_grpo.dynamic_sampling import DynamicSampler, RefillStream, stack_rows, to_rows, zero_variance
from math_grpo.errors import ConfigError


def test_refill_stream_passes_are_permutations_and_resume_continues():
    stream = RefillStream(size=10, seed=3)
    first, second = stream.take(10), stream.take(10)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second  # one shuffled pass each
    more = stream.take(4)
    # A resumed run: the position comes back from trainer_state.json's stateful_callbacks.
    state = TrainerState(stateful_callbacks=[RefillStream(size=10, seed=3)])
    state.stateful_callbacks["RefillStream"]["attributes"]["consumed"] = 20
    resumed = RefillStream(size=10, seed=3)
    resumed.on_train_begin(None, state, None)
    assert resumed.consumed == 20 and resumed.take(4) == more


def test_rows_of_rounds_with_different_widths_are_padded_on_the_right_side():
    a = {"prompt_ids": torch.tensor([[9, 5, 6]]), "prompt_mask": torch.tensor([[0, 1, 1]]),
         "completion_ids": torch.tensor([[7, 8]]), "completion_mask": torch.tensor([[1, 1]]),
         "advantages": torch.tensor([0.5]), "num_items_in_batch": torch.tensor(2)}
    b = {"prompt_ids": torch.tensor([[4]]), "prompt_mask": torch.tensor([[1]]),
         "completion_ids": torch.tensor([[3, 2, 1]]), "completion_mask": torch.tensor([[1, 1, 0]]),
         "advantages": torch.tensor([-0.5]), "num_items_in_batch": torch.tensor(2)}
    out = stack_rows(to_rows(a, 1) + to_rows(b, 1), pad_token_id=9, device="cpu")
    assert out["prompt_ids"].tolist() == [[9, 5, 6], [9, 9, 4]]  # left-padded
    assert out["prompt_mask"].tolist() == [[0, 1, 1], [0, 0, 1]]
    assert out["completion_ids"].tolist() == [[7, 8, 9], [3, 2, 1]]  # right-padded
    assert out["completion_mask"].tolist() == [[1, 1, 0], [1, 1, 0]]
    assert out["advantages"].tolist() == [0.5, -0.5]


def test_zero_variance_groups_and_unsupported_fields():
    assert zero_variance(torch.tensor([0.0, 0.0, 0.7, -0.7, 1e-9, 0.0]), 2) == [True, False, True]
    with pytest.raises(Exception, match="pixel_values"):
        to_rows({"pixel_values": torch.zeros(5, 3), "advantages": torch.zeros(2)}, 2)


def test_max_rounds_must_be_positive():
    with pytest.raises(ConfigError, match="dynamic_sampling_max_rounds"):
        GRPOScriptArguments(dataset_name="x.jsonl", dynamic_sampling=True, dynamic_sampling_max_rounds=0)


def _scored(advantages: list[float], width: int) -> dict:
    """A scored batch as TRL's _generate_and_score_completions returns it (one process), completions `width` wide."""
    n = len(advantages)
    return {"prompt_ids": torch.arange(n * 2).view(n, 2), "prompt_mask": torch.ones(n, 2, dtype=torch.long),
            "completion_ids": torch.full((n, width), 5), "completion_mask": torch.ones(n, width, dtype=torch.long),
            "advantages": torch.tensor(advantages), "num_items_in_batch": torch.tensor(n * width)}


def test_fill_across_rounds_of_different_widths_keeps_signal_groups_only():
    """Round 1 has one signal group of two; the refill round (wider completions) brings the second. The batch
    is full, in order, with the token count of the rows it holds; the zero-variance group is gone."""
    rounds = iter([_scored([1.0, -1.0, 0.0, 0.0], 3), _scored([0.0, 0.0, 0.5, -0.5], 5)])
    log: dict[str, float] = {}
    sampler = DynamicSampler(RefillStream(size=8, seed=0), [{"prompt": f"p{i}"} for i in range(8)],
                             num_generations=2, max_rounds=3, gather=lambda rows: rows, rank=0, world=1,
                             pad_token_id=0, log=log.__setitem__, say=print)
    out = sampler.fill([{"prompt": "a"}] * 4, lambda b: next(rounds), lambda b: next(rounds), step=0)
    assert out["advantages"].tolist() == [1.0, -1.0, 0.5, -0.5]
    assert out["completion_ids"].shape == (4, 5) and int(out["num_items_in_batch"]) == 2 * 3 + 2 * 5
    assert log["dynamic_sampling/rounds"] == 2 and log["dynamic_sampling/batch_filled"] == 1.0
    assert log["dynamic_sampling/dropped_fraction"] == 0.5 and log["dynamic_sampling/prompts_consumed"] == 4
    assert sampler.stream.consumed == 2  # one refill round of two prompts


def test_fill_at_the_bound_masks_what_it_lacks(capsys):
    sampler = DynamicSampler(RefillStream(size=8, seed=0), [{"prompt": f"p{i}"} for i in range(8)],
                             num_generations=2, max_rounds=2, gather=lambda rows: rows, rank=0, world=1,
                             pad_token_id=0, log=lambda k, v: None, say=print)
    rounds = iter([_scored([0.0, 0.0, 0.0, 0.0], 3), _scored([0.0, 0.0, 0.25, -0.25], 4)])
    out = sampler.fill([{"prompt": "a"}] * 4, lambda b: next(rounds), lambda b: next(rounds), step=7)
    assert out["advantages"].tolist() == [0.25, -0.25, 0.0, 0.0]
    assert out["completion_mask"][2:].sum() == 0 and int(out["num_items_in_batch"]) == 2 * 4
    assert sampler.history[-1]["dynamic_sampling/batch_filled"] == 0.5
    assert "step 7: 1 of 2 groups carry a learning signal after 2 rounds" in capsys.readouterr().out
