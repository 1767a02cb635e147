"""Everything that reaches into TRL's GRPOTrainer: with `math_grpo.server_generation` (the server-mode generation
it plugs in), the modules to read (and fix) when TRL is upgraded.

What it holds and why each part needs TRL's internals (TRL 1.16 has no public hook for them):

- `MathGRPOTrainer`: `GRPOTrainer.__init__` builds its `VLLMGeneration` from a module global, and in server
  mode that always calls `VLLMClient.init_communicator`, which raises on a non-CUDA trainer. The filesystem
  backend must replace that step before it runs, so the trainer swaps the global for
  `server_generation.ServerVLLMGeneration` while TRL's constructor runs (same arguments, TRL's code otherwise
  untouched). That class (bounded HTTP through `BoundedVLLMClient`, the sync backends, the wait for a restarted
  server) and TRL's version gate live in math_grpo/server_generation.py, whose docstring lists its private names.
- `force_sync` reads and sets `_last_loaded_step` (TRL's "weights already pushed for this step").
- `latest_rollouts` reads the `_logs` buffer: TRL's public completion logging (`log_completions`) prints rich
  tables and writes parquet files per step, but gives no access to the batch itself.
- Asynchronous rollouts (`async_rollouts`, `math_grpo.async_rollouts` says how they work): the trainer looks one
  generation batch ahead in the Trainer's epoch iterator (`get_batch_samples`), tokenizes the next batch's
  prompts with `_tokenize_prompts` when a round starts (`_generate_and_score_completions`), and
  `ServerVLLMGeneration.generate` takes the prefetched rollouts and posts the next.
- Dynamic sampling (`dynamic_sampling`, `math_grpo.dynamic_sampling` says how it works): each generation round
  goes through `_generate_and_score_completions`, whose scored batch the sampler filters and refills; its
  metrics go into `_metrics` (the values are the same on every rank).
- Importance-sampling ratio from the training forward (`fused_is_ratio`, on by default): when a generation batch
  is trained once within one optimizer step, TRL's "old" logprobs equal the training forward's own (same
  weights), yet TRL computes them in an extra forward pass over every rollout (a fifth of a CPU demo step). The
  trainer computes the same ratio, clipping and `sampling/*` metrics from the training forward
  (`_get_per_token_logps_and_entropies` inside `_compute_loss`) where `fused_is_applies` allows it;
  tests/test_is_parity.py compares it with TRL's own on the same batches.
- Weight-sync metrics go through `_log_metric`, the callable TRL hands reward functions as `log_metric`
  (averaged over ranks, logged with the step's other metrics).

TRL's private names used by the project, each guarded by its row of `HOOKS` in tests/test_trl_contract.py (which
fails, naming the hook, when TRL no longer has it or no longer calls or reads it where shown; it also fails when
a TRL private name is used in the project without a row, or a module using one does not list it):

  `_generate_and_score_completions`  override  TRL's `_prepare_inputs` calls it
  `_compute_loss`                    override  `compute_loss` calls it; it applies inputs["importance_sampling_ratio"]
  `_get_per_token_logps_and_entropies` override  called once in `_compute_loss` (the policy forward) and for
                                     the "old" logprobs in `_generate_and_score_completions`
  `_tokenize_prompts`                call      TRL's `_generate` tokenizes through it
  `_log_metric`                      call      fills `_pending_metrics`, which each round logs
  `_metrics`                         attribute set in `__init__`, logged by `log`
  `_logs`                            attribute filled per round (prompt, completion, rewards, advantages, extra)
  `_last_loaded_step`                attribute read and set in `_generate_single_turn` around the sync
  in math_grpo/server_generation.py:
  `_init_vllm`                       override  `VLLMGeneration.__init__` calls it
  `_iter_named_params`               override  a generator `VLLMGeneration.sync_weights` walks
  `VLLMGeneration` (module global), `check_server` and `session` (public, but relied on to be called / used
  for every request) have rows too.
"""

from __future__ import annotations

import functools
import math
import shutil
import threading
from typing import Any

import trl.trainer.grpo_trainer as _grpo_module
from accelerate.utils import gather_object
from trl import GRPOTrainer

from math_grpo.async_rollouts import Lookahead, RolloutPrefetcher
from math_grpo.configs import GRPOScriptArguments, uses_server
from math_grpo.dynamic_sampling import DynamicSampler, RefillStream
from math_grpo.errors import MathGRPOError
from math_grpo.server_generation import BoundedVLLMClient, ServerVLLMGeneration, check_trl_version
from math_grpo.weight_sync import SyncChecker, SyncSettings

__all__ = ["BoundedVLLMClient", "MathGRPOTrainer", "ServerVLLMGeneration", "check_trl_version", "force_sync",
           "fused_is_applies", "latest_rollouts", "make_dynamic_sampler"]

_SWAP_LOCK = threading.Lock()


class MathGRPOTrainer(GRPOTrainer):
    """`GRPOTrainer` whose server mode uses `ServerVLLMGeneration` (see the module docstring for why).

    Outside server mode it is exactly TRL's trainer. In server mode `sync_args` (the run's
    `GRPOScriptArguments`) picks the weight-sync backend and its check.
    """

    def __init__(self, *args: Any, sync_args: GRPOScriptArguments | None = None, **kwargs: Any):
        training_args = kwargs.get("args", args[2] if len(args) > 2 else None)
        self._lookahead: Lookahead | None = None
        self._dynamic: DynamicSampler | None = None
        self._is_inputs: dict | None = None
        if not uses_server(training_args):
            super().__init__(*args, **kwargs)
            self._fused_is = fused_is_applies(self, sync_args)
            self._dynamic = make_dynamic_sampler(self, sync_args)
            return
        if sync_args is None:
            raise MathGRPOError("server mode: MathGRPOTrainer needs sync_args=script_args (the weight-sync fields)")
        settings = SyncSettings.from_args(sync_args, training_args)
        with _SWAP_LOCK:
            original = _grpo_module.VLLMGeneration
            _grpo_module.VLLMGeneration = functools.partial(
                ServerVLLMGeneration, settings=settings,
                rollout_detokenize=getattr(sync_args, "rollout_detokenize", False))
            try:
                super().__init__(*args, **kwargs)
            finally:
                _grpo_module.VLLMGeneration = original
        vg = self.vllm_generation
        if settings.check:
            vg.checker = SyncChecker.from_tokenizer(settings, self.processing_class)
        vg.step_fn = lambda: self.state.global_step
        # The `log_metric` TRL hands reward functions: averaged over ranks and logged with the step's metrics.
        vg.on_record = lambda record: [self._log_metric(k, v) for k, v in record.items()]
        self._fused_is = fused_is_applies(self, sync_args)
        self._dynamic = make_dynamic_sampler(self, sync_args)
        if getattr(sync_args, "async_rollouts", False):
            self._round_steps = max(1, math.ceil(self.args.steps_per_generation * self.num_iterations
                                                 / self.args.gradient_accumulation_steps))
            vg.prefetcher = RolloutPrefetcher(max_staleness=sync_args.max_staleness)
            vg.before_sync.append(vg.prefetcher.wait)  # weights never change under a running request
            # The last round's batch is not sampled ahead: nothing would train on it.
            vg.prefetch_allowed = lambda: self.state.global_step + self._round_steps < self.state.max_steps

    # -- asynchronous rollouts ------------------------------------------------------------------------
    def _async(self) -> RolloutPrefetcher | None:
        return getattr(getattr(self, "vllm_generation", None), "prefetcher", None)

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        if self._async() is not None:
            if self._lookahead is None or self._lookahead.source is not epoch_iterator:
                self._lookahead = Lookahead(epoch_iterator)
            epoch_iterator = self._lookahead
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def _next_prompt_ids(self, batch: Any, ahead: int) -> list[list[int]] | None:
        """Token ids of the generation batch `ahead` items after `batch` in this epoch (None at its end)."""
        index = self._lookahead.index_of(batch) if self._lookahead is not None else None
        upcoming = self._lookahead.item_at(index + ahead) if index is not None else None
        if not upcoming or "prompt" not in upcoming[0]:
            return None
        prompt_ids, _, _ = self._tokenize_prompts([row["prompt"] for row in upcoming])
        return [list(ids) for ids in prompt_ids]

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:
            settings = getattr(getattr(self, "vllm_generation", None), "settings", None)
            if settings is not None and settings.in_ram and self.accelerator.is_main_process:
                shutil.rmtree(settings.sync_dir, ignore_errors=True)  # RAM is not left holding a model copy
            prefetcher = self._async()
            if prefetcher is not None:
                client = getattr(self.vllm_generation, "vllm_client", None)  # rank 0 only
                note = prefetcher.close(self.vllm_generation.settings.request_timeout,
                                        abort=client.session.close if client is not None else None)
                if note and self.accelerator.is_main_process:
                    print(f"[async] {note}", flush=True)

    # -- the importance-sampling ratio from the training forward -------------------------------------
    def _generate_and_score_completions(self, inputs: Any) -> Any:
        """One generation round of TRL's `_prepare_inputs` (training: the epoch iterator's generation batch)."""
        if self._async() is not None and self.model.training:  # the next round's prompts, for the prefetch
            self.vllm_generation.next_prompts = self._next_prompt_ids(
                inputs, self.args.steps_per_generation * self.num_iterations)
        if self._dynamic is not None and self.model.training:
            return self._dynamic.fill(inputs, self._score_round, self._score_refill, self.state.global_step)
        return self._score_round(inputs)

    def _score_refill(self, inputs: Any) -> Any:
        """A dynamic-sampling refill round: sampled now, never from (or into) the async prefetch."""
        vg = getattr(self, "vllm_generation", None)
        prefetcher = getattr(vg, "prefetcher", None)
        if prefetcher is not None:
            vg.prefetcher = None
        try:
            return self._score_round(inputs)
        finally:
            if prefetcher is not None:
                vg.prefetcher = prefetcher

    def _score_round(self, inputs: Any) -> Any:
        if not (self._fused_is and self.model.training):
            return super()._generate_and_score_completions(inputs)
        self.vllm_importance_sampling_correction = False  # TRL then skips the extra "old logprobs" forward
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.vllm_importance_sampling_correction = True

    def _compute_loss(self, model: Any, inputs: dict) -> Any:
        fused = self._fused_is and "sampling_per_token_logps" in inputs and "importance_sampling_ratio" not in inputs
        self._is_inputs = inputs if fused else None
        try:
            return super()._compute_loss(model, inputs)
        finally:
            if fused:
                inputs.pop("importance_sampling_ratio", None)  # a buffered batch gets a fresh ratio each pass
            self._is_inputs = None

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        inputs, self._is_inputs = self._is_inputs, None  # only the first call of _compute_loss: the policy
        if inputs is not None:
            inputs["importance_sampling_ratio"] = self._is_ratio(out[0].detach(), inputs)
        return out

    def _is_ratio(self, logps: Any, inputs: dict) -> Any:
        """TRL's vLLM importance-sampling ratio (its modes and clipping) and its sampling/* metrics."""
        import torch

        mask = inputs["completion_mask"]
        sampling = inputs["sampling_per_token_logps"]
        diff = torch.nan_to_num((logps - sampling) * mask, nan=0.0)
        sequence = self.vllm_importance_sampling_mode in ("sequence_mask", "sequence_truncate")
        ratio = torch.exp(diff.sum(-1, keepdim=True) if sequence else diff)
        lo, hi = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if self.vllm_importance_sampling_mode.endswith("_truncate"):
            ratio = torch.clamp(ratio, min=lo, max=hi)
        else:
            out = (ratio < (-math.inf if lo is None else lo)) | (ratio > (math.inf if hi is None else hi))
            ratio = ratio.masked_fill(out, 0.0)
        mode = "train" if self.model.training else "eval"
        valid = mask.bool()
        delta = (logps - sampling).abs()[valid & ~torch.isnan(sampling)]
        flat = ratio.flatten() if sequence else ratio[valid]
        zero = torch.zeros((), device=logps.device)
        stats = torch.stack([delta.mean() if delta.numel() else zero, delta.max() if delta.numel() else zero,
                             flat.min() if flat.numel() else zero, flat.mean() if flat.numel() else zero,
                             flat.max() if flat.numel() else zero]).float()
        gathered = self.accelerator.gather(stats[None]).view(-1, 5)
        m = self._metrics[mode]
        m["sampling/sampling_logp_difference/mean"].append(gathered[:, 0].mean().item())
        m["sampling/sampling_logp_difference/max"].append(gathered[:, 1].max().item())
        m["sampling/importance_sampling_ratio/min"].append(gathered[:, 2].min().item())
        m["sampling/importance_sampling_ratio/mean"].append(gathered[:, 3].mean().item())
        m["sampling/importance_sampling_ratio/max"].append(gathered[:, 4].max().item())
        return ratio


# The loss types whose `_compute_loss` multiplies the per-token loss by `inputs["importance_sampling_ratio"]`
# (TRL 1.16; "vespo" folds the ratio into its own weights instead). An unknown one keeps TRL's computation.
FUSED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo", "cispo", "sapo")
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def fused_is_applies(trainer: GRPOTrainer, script_args: Any = None) -> bool:
    """True when TRL's "old" logprobs equal the training forward's own: one pass per generation batch, within
    one optimizer step (TRL then needs them only for the vLLM importance-sampling ratio). Every condition is an
    allowlist of what tests/test_is_parity.py compares with TRL's computation; anything else (a new loss type
    or mode, tools, a rollout function, `fused_is_ratio: false`) keeps TRL's own."""
    args = trainer.args
    return bool(getattr(script_args, "fused_is_ratio", True)
                and trainer.use_vllm and trainer.vllm_importance_sampling_correction and trainer.num_iterations == 1
                and args.gradient_accumulation_steps % args.steps_per_generation == 0
                and trainer.loss_type in FUSED_LOSS_TYPES and trainer.vllm_importance_sampling_mode in IS_MODES
                and not getattr(trainer, "tools", None) and getattr(trainer, "rollout_func", None) is None)


def make_dynamic_sampler(trainer: GRPOTrainer, script_args: Any) -> DynamicSampler | None:
    """The dynamic sampler of a run with `dynamic_sampling: true` (its refill stream is a checkpointed callback)."""
    if not getattr(script_args, "dynamic_sampling", False):
        return None
    accelerator = trainer.accelerator
    stream = RefillStream(size=len(trainer.train_dataset), seed=trainer.args.seed + 1)
    trainer.add_callback(stream)
    return DynamicSampler(
        stream, trainer.train_dataset, trainer.num_generations, script_args.dynamic_sampling_max_rounds,
        gather=gather_object, rank=accelerator.process_index, world=accelerator.num_processes,
        pad_token_id=getattr(trainer.processing_class, "tokenizer", trainer.processing_class).pad_token_id,
        log=lambda key, value: trainer._metrics["train"][key].append(value),
        say=lambda line: print(line, flush=True) if accelerator.is_main_process else None)


def force_sync(trainer: GRPOTrainer) -> bool:
    """Push the current weights now (every rank must call it); the next rollout then skips its own sync.

    Returns False when there is no server to sync (not server mode).
    """
    if not uses_server(trainer):
        return False
    if trainer._last_loaded_step != trainer.state.global_step:
        trainer.vllm_generation.sync_weights()
        trainer._last_loaded_step = trainer.state.global_step
    return True


def latest_rollouts(trainer: GRPOTrainer) -> dict[str, Any] | None:
    """The last generation batch (gathered on the main process): prompt, completion, rewards, advantages,
    extra columns; None before the first one."""
    buf = getattr(trainer, "_logs", None)
    if not buf or not buf.get("prompt"):
        return None
    return {"prompt": list(buf["prompt"]), "completion": list(buf["completion"]),
            "rewards": {name: list(vals) for name, vals in buf["rewards"].items()},
            "advantages": list(buf["advantages"]), "extra": {k: list(v) for k, v in buf.get("extra", {}).items()}}
