"""DAPO's dynamic sampling (`dynamic_sampling: true`): train only on groups that carry a learning signal.

A group whose completions all get the same reward has zero advantage: it costs a backward pass and teaches
nothing. After a step's generation round the groups with zero reward variance (every advantage zero, which for
TRL's sum-then-normalize is the same as one reward for the whole group) are dropped and more groups are sampled
from new prompts until the step has as many signal-carrying groups as it asked for, in at most
`dynamic_sampling_max_rounds` rounds in all. Groups past the batch are discarded (as verl's `filter_groups`
does); if the bound is hit first the step trains on what it has: the missing rows are filled with dropped groups
whose loss mask is zero, so the batch keeps its shape and the dropped groups never reach the loss.

Refill prompts come from their own stream, a seeded shuffled pass over the training set (`RefillStream`),
not from the Trainer's data loader: the Trainer's order, what `--resume_from_checkpoint` skips, and the
asynchronous rollouts' look-ahead stay exactly as without the option. The stream's position is saved in
`trainer_state.json` with each checkpoint, so a resumed run continues it (refill prompts are counted, not
replayed).

Under DDP/ZeRO every rank gathers every round's rows, the drop decision is made on the gathered advantages
(so every rank runs the same number of rounds: collectives stay matched) and each rank takes an equal slice of
the assembled batch. Nothing here imports TRL: the hook is in `math_grpo.trl_adapter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from math_grpo.errors import MathGRPOError

PROMPT_SIDE = ("prompt_ids", "prompt_mask")  # left-padded; every other (B, T) tensor is right-padded
ZERO_ADVANTAGE = 1e-6


class RefillStream(TrainerCallback, ExportableState):
    """Indices of refill prompts: shuffled passes over the training set (pass k seeded with seed + k).

    `consumed` (prompts handed out so far) is exported into the checkpoint's trainer_state.json and read back
    when training (re)starts.
    """

    def __init__(self, size: int = 0, seed: int = 0):
        self.size, self.seed, self.consumed = size, seed, 0
        self._order: tuple[int, torch.Tensor] | None = None

    def take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            epoch, offset = divmod(self.consumed, self.size)
            if self._order is None or self._order[0] != epoch:
                g = torch.Generator().manual_seed(self.seed + epoch)
                self._order = (epoch, torch.randperm(self.size, generator=g))
            out.append(int(self._order[1][offset]))
            self.consumed += 1
        return out

    def state(self) -> dict:
        return {"args": {"size": self.size, "seed": self.seed}, "attributes": {"consumed": self.consumed}}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = state.stateful_callbacks.get(type(self).__name__) if state.stateful_callbacks else None
        if isinstance(saved, dict) and saved.get("args", {}).get("size") == self.size:
            self.consumed = int(saved.get("attributes", {}).get("consumed", self.consumed))
        return control


def zero_variance(advantages: torch.Tensor, num_generations: int) -> list[bool]:
    """Per group (consecutive `num_generations` rows of the gathered batch): True if every advantage is ~0."""
    return (advantages.view(-1, num_generations).abs() <= ZERO_ADVANTAGE).all(dim=1).tolist()


def to_rows(batch: dict[str, Any], n_rows: int) -> list[dict[str, torch.Tensor]]:
    """One dict of CPU tensors per row of a scored batch (TRL's `_generate_and_score_completions` output)."""
    rows: list[dict[str, torch.Tensor]] = [{} for _ in range(n_rows)]
    for key, value in batch.items():
        if key == "num_items_in_batch" or value is None:
            continue
        if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != n_rows:
            raise MathGRPOError(f"dynamic_sampling: cannot regroup batch field {key!r} (multimodal or tool inputs "
                                f"are not supported with dynamic_sampling); turn dynamic_sampling off")
        value = value.detach().cpu()
        for i in range(n_rows):
            rows[i][key] = value[i]
    return rows


def _pad_value(key: str, pad_token_id: int) -> float:
    if key in ("prompt_ids", "completion_ids"):
        return pad_token_id
    return 1.0 if key in ("tool_mask", "importance_sampling_ratio") else 0.0


def stack_rows(rows: list[dict[str, torch.Tensor]], pad_token_id: int, device: Any) -> dict[str, torch.Tensor]:
    """The inverse of `to_rows` for rows of several rounds: prompts left-padded, the rest right-padded."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if values[0].ndim == 0:
            out[key] = torch.stack(values).to(device)
            continue
        width = max(v.shape[0] for v in values)
        pad = _pad_value(key, pad_token_id)
        padded = []
        for v in values:
            fill = v.new_full((width - v.shape[0], *v.shape[1:]), pad)
            padded.append(torch.cat([fill, v] if key in PROMPT_SIDE else [v, fill]))
        out[key] = torch.stack(padded).to(device)
    return out


def masked(row: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A dropped group's row that keeps the batch's shape and never reaches the loss."""
    row = dict(row)
    row["completion_mask"] = torch.zeros_like(row["completion_mask"])
    row["advantages"] = torch.zeros_like(row["advantages"])
    return row


class DynamicSampler:
    """Fills one generation batch with signal-carrying groups; see the module docstring."""

    def __init__(self, stream: RefillStream, dataset: Any, num_generations: int, max_rounds: int,
                 gather: Callable[[list], list], rank: int, world: int, pad_token_id: int,
                 log: Callable[[str, float], None], say: Callable[[str], None]):
        self.stream, self.dataset, self.g, self.max_rounds = stream, dataset, num_generations, max_rounds
        self.gather, self.rank, self.world, self.pad = gather, rank, world, pad_token_id
        self.log, self.say = log, say
        self.history: list[dict[str, float]] = []  # one record per step (tests and benchmarks read it)

    def refill_inputs(self, n_prompts: int) -> list[dict]:
        """This rank's rows for `n_prompts` new prompts, each repeated num_generations times (TRL's layout)."""
        rows = [self.dataset[i] for i in self.stream.take(n_prompts) for _ in range(self.g)]
        per_rank = len(rows) // self.world
        return rows[self.rank * per_rank:(self.rank + 1) * per_rank]

    def fill(self, inputs: list[dict], score: Callable[[list[dict]], dict], refill: Callable[[list[dict]], dict],
             step: int) -> dict[str, Any]:
        local = len(inputs)
        target = local * self.world // self.g  # groups in the step's generation batch
        kept: list[list[dict]] = []  # groups (lists of rows) with a learning signal, in order
        dropped: list[list[dict]] = []
        rounds = generated = 0
        batch = inputs
        while True:
            out = score(batch) if rounds == 0 else refill(batch)
            rounds += 1
            rows = self.gather(to_rows(out, local))  # every rank's rows, in rank order
            flat = torch.stack([r["advantages"] for r in rows])
            for index, zero in enumerate(zero_variance(flat, self.g)):
                group = rows[index * self.g:(index + 1) * self.g]
                (dropped if zero else kept).append(group)
            generated += target
            if len(kept) >= target or rounds >= self.max_rounds:
                break
            batch = self.refill_inputs(target)
        signal = min(len(kept), target)
        groups = kept[:target] + [[masked(r) for r in grp] for grp in dropped[:target - signal]]
        rows = [r for grp in groups for r in grp]
        mine = stack_rows(rows[self.rank * local:(self.rank + 1) * local], self.pad, out["advantages"].device)
        items = sum(int((r["completion_mask"] * r.get("tool_mask", 1)).sum()) for r in rows)  # rows of any width
        mine["num_items_in_batch"] = torch.tensor(items, device=out["advantages"].device)
        record = {"dynamic_sampling/dropped_fraction": 1.0 - len(kept) / generated,
                  "dynamic_sampling/rounds": float(rounds), "dynamic_sampling/prompts_consumed": float(generated),
                  "dynamic_sampling/batch_filled": signal / target,
                  "dynamic_sampling/refill_prompts_total": float(self.stream.consumed)}
        for key, value in record.items():
            self.log(key, value)
        self.history.append({"step": step, **record})
        if signal < target:
            self.say(f"[dynamic_sampling] step {step}: {signal} of {target} groups carry a learning signal after "
                     f"{rounds} rounds (dynamic_sampling_max_rounds); training on those, the rest masked")
        return mine
