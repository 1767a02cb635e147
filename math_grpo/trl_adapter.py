"""Everything that reaches into TRL's GRPOTrainer: the one module to read (and fix) when TRL is upgraded.

What it holds and why each part needs TRL's internals (TRL 1.16 has no public hook for them):

- `MathGRPOTrainer`: `GRPOTrainer.__init__` builds its `VLLMGeneration` from a module global, and in server
  mode that always calls `VLLMClient.init_communicator`, which raises on a non-CUDA trainer. The filesystem
  backend must replace that step before it runs, so the trainer swaps the global for our subclass while TRL's
  constructor runs (same arguments, TRL's code otherwise untouched).
- `ServerVLLMGeneration`: overrides `_init_vllm` (the client and the chosen backend) and `_iter_named_params`
  (TRL's ZeRO-3/FSDP/PEFT-aware parameter walk, here casting each tensor to the server's dtype: float32 master
  weights, a bf16 server), which the filesystem sync walks too.
- `BoundedVLLMClient`: TRL's client sends without a timeout and retries for about a minute. Its public `session`
  gets `BoundedAdapter` (in `check_server`, which TRL's constructor calls before its first request), so every
  request TRL makes is bounded and its errors name the server.
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

TRL's private names used here, each guarded by its row of `HOOKS` in tests/test_trl_contract.py (which fails,
naming the hook, when TRL no longer has it or no longer calls or reads it where shown; it also fails when a
TRL private name is used in the project without a row):

  `_generate_and_score_completions`  override  TRL's `_prepare_inputs` calls it
  `_compute_loss`                    override  `compute_loss` calls it; it applies inputs["importance_sampling_ratio"]
  `_get_per_token_logps_and_entropies` override  called once in `_compute_loss` (the policy forward) and for
                                     the "old" logprobs in `_generate_and_score_completions`
  `_init_vllm`                       override  `VLLMGeneration.__init__` calls it
  `_iter_named_params`               override  a generator `VLLMGeneration.sync_weights` walks
  `_tokenize_prompts`                call      TRL's `_generate` tokenizes through it
  `_log_metric`                      call      fills `_pending_metrics`, which each round logs
  `_metrics`                         attribute set in `__init__`, logged by `log`
  `_logs`                            attribute filled per round (prompt, completion, rewards, advantages, extra)
  `_last_loaded_step`                attribute read and set in `_generate_single_turn` around the sync
  `VLLMGeneration` (module global), `check_server` and `session` (public, but relied on to be called / used
  for every request) have rows too.
"""

from __future__ import annotations

import functools
import math
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import trl

from math_grpo.errors import MathGRPOError

SUPPORTED_TRL = ("1.16",)  # major.minor versions whose internals this module was written against


def check_trl_version(version: str = trl.__version__) -> None:
    """Fail with one line (not an AttributeError deep in training) on a TRL this adapter was not written for."""
    if ".".join(version.split(".")[:2]) not in SUPPORTED_TRL:
        raise MathGRPOError(f"TRL {version} is installed but math_grpo supports TRL {', '.join(SUPPORTED_TRL)}.x "
                            f"(its trainer internals are used in math_grpo/trl_adapter.py); install trl==1.16.0")


check_trl_version()

import requests  # noqa: E402
import trl.trainer.grpo_trainer as _grpo_module  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402
from trl import GRPOTrainer  # noqa: E402
from trl.generation.vllm_client import VLLMClient  # noqa: E402
from trl.generation.vllm_generation import VLLMGeneration  # noqa: E402
from urllib3.util.retry import Retry  # noqa: E402

from math_grpo.async_rollouts import Lookahead, RolloutPrefetcher  # noqa: E402
from math_grpo.checkpoints import broadcast_from_main  # noqa: E402
from math_grpo.configs import GRPOScriptArguments, uses_server  # noqa: E402
from math_grpo.dynamic_sampling import DynamicSampler, RefillStream  # noqa: E402
from math_grpo.errors import ServerError, WeightSyncError  # noqa: E402
from math_grpo.precision import served_dtype, torch_dtype  # noqa: E402
from math_grpo.server_recovery import ServerRecovery, pause_point, recover, rollouts_on_main  # noqa: E402
from math_grpo.vllm_server import VLLMServerClient  # noqa: E402
from math_grpo.weight_sync import SyncChecker, SyncSettings, tied_embedding_name, write_safetensors  # noqa: E402

_SWAP_LOCK = threading.Lock()


class BoundedAdapter(HTTPAdapter):
    """The transport of TRL's client session: a default timeout on every request (TRL sends none), a short
    retry policy, and errors that name the server and what to look at (not a bare `Exception` from TRL)."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url, self.timeout = base_url, timeout
        # TRL's own policy backs off for about a minute against a dead server: retry briefly instead.
        # read=False: a request that got no answer in time fails as a timeout (read=0 made it "unreachable").
        retry = Retry(total=2, connect=2, read=False, status=2, status_forcelist=[502, 503], backoff_factor=0.5,
                      allowed_methods=["GET", "POST"])
        super().__init__(max_retries=retry, pool_maxsize=64)

    def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        what = f"{request.method} {request.url}"
        try:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        except requests.exceptions.Timeout:
            seconds = f"{timeout:.0f} s" if isinstance(timeout, (int, float)) else f"{timeout} s"
            raise ServerError(f"vLLM server at {self.base_url}: {what} got no answer within {seconds}") from None
        except requests.exceptions.RequestException as exc:
            raise ServerError(f"vLLM server at {self.base_url} is unreachable ({what}: {type(exc).__name__}); "
                              "did it die? see its log (server.log in the run dir)") from None
        if response.status_code != 200:
            raise ServerError(f"vLLM server at {self.base_url}: {what} -> HTTP {response.status_code}: "
                              f"{response.text.strip()[:300]}")
        return response


class BoundedVLLMClient(VLLMClient):
    """TRL's `VLLMClient` whose public `session` sends through `BoundedAdapter` (timeouts, retries, errors)."""

    def __init__(self, base_url: str, request_timeout: float, connection_timeout: float, group_port: int = 51216):
        self.request_timeout = request_timeout
        super().__init__(base_url=base_url, group_port=group_port, connection_timeout=connection_timeout)

    def check_server(self, total_timeout: float = 0.0, retry_interval: float = 2.0) -> None:
        """TRL's constructor calls this after making `session` and before its first request: the place to mount."""
        VLLMServerClient(self.base_url, timeout=10.0).wait_until_healthy(max(total_timeout, 0.1))
        adapter = BoundedAdapter(self.base_url, self.request_timeout)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)


class ServerVLLMGeneration(VLLMGeneration):
    """TRL's server-mode generation with bounded HTTP, the chosen sync backend and the check after each sync."""

    def __init__(self, *args: Any, settings: SyncSettings, **kwargs: Any):
        self.settings = settings
        self.http: VLLMServerClient | None = None
        self.checker: SyncChecker | None = None
        self.before_sync: list[Callable[[], None]] = []  # e.g. wait for in-flight evaluation requests
        self.num_syncs = 0
        self.last_sync_s = 0.0
        self.last_check_s = 0.0
        self.last_record: dict[str, float] = {}
        self.step_fn: Callable[[], int] = lambda: -1
        self.on_record: Callable[[dict[str, float]], None] | None = None
        self._tied_name: str | None = None
        self.sync_dtype: str | None = None  # the server's dtype (from /server_info), set on the main process
        self.prefetcher: RolloutPrefetcher | None = None  # set when async_rollouts is on
        self.next_prompts: list[list[int]] | None = None  # this rank's next generation batch (token ids)
        self.prefetch_allowed: Callable[[], bool] = lambda: True
        self.recovery: ServerRecovery | None = None  # rank 0: a lost server is waited for (math_grpo.server_recovery)
        self.after_recovery: list[Callable[[], None]] = []  # every rank, once the full weights are back on it
        super().__init__(*args, **kwargs)

    def _init_vllm(self) -> None:
        if self.mode != "server":
            super()._init_vllm()
            return
        accelerator = self.accelerator
        base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
        if accelerator.is_main_process:
            self.vllm_client = BoundedVLLMClient(base_url, self.settings.request_timeout, self.server_timeout,
                                                 group_port=self.group_port)
            self.http = VLLMServerClient(base_url, timeout=self.settings.request_timeout, model=self.vllm_client.model)
            self.recovery = ServerRecovery(base_url, self.settings.restart_wait_s)
            if self.settings.backend == "nccl":
                self.vllm_client.init_communicator(device=accelerator.device)
            # Fails now, naming VLLM_SERVER_DEV_MODE, not at the first sync; says the dtype the server serves
            # (float32 master weights are cast to it once per sync: a sync moves the bytes the server holds).
            self.sync_dtype = served_dtype(self.http.server_info())
        self._tied_name = tied_embedding_name(self.model)
        accelerator.wait_for_everyone()

    def _iter_named_params(self) -> Any:
        """TRL's parameter walk, each tensor cast to the server's dtype on the rank that sends it."""
        dtype = torch_dtype(self.sync_dtype) if self.accelerator.is_main_process else None
        for name, param in super()._iter_named_params():
            yield name, (param.to(dtype) if dtype is not None and param.dtype != dtype else param)

    def sync_weights(self) -> None:
        for hook in list(self.before_sync):
            hook()
        try:
            self._sync_once()
        except MathGRPOError as exc:  # on every rank; a lost server is waited for, then gets the full weights
            if self.mode != "server" or not recover(self, str(exc), self._broadcast):
                raise

    def _broadcast(self, value: Any) -> Any:
        return broadcast_from_main(value, self.accelerator)

    def _sync_once(self) -> None:
        t0 = time.perf_counter()
        if self.mode == "server" and self.settings.backend == "filesystem":
            self._filesystem_sync()
        else:
            error = None
            try:
                super().sync_weights()
            except ServerError as exc:  # raised on rank 0 only: every rank raises it
                error = f"weight sync (nccl) failed: {exc}"
            error = self._broadcast(error)
            if error:
                raise WeightSyncError(error)
        self.last_sync_s = time.perf_counter() - t0
        self.num_syncs += 1
        if self.checker is not None and self.mode == "server":
            t1 = time.perf_counter()
            record = self.checker.check(self.model, self.http, self.accelerator, self.step_fn())
            self.last_check_s = time.perf_counter() - t1
            record = {**record, "weight_sync/seconds": self.last_sync_s, "weight_sync/check_seconds": self.last_check_s}
            self.last_record = record
            if self.on_record is not None:
                self.on_record(record)

    def generate(self, prompts: list[list[int]], images: Any, num_generations: int, profiler: Any = None) -> tuple:
        """TRL's server-mode generate; with async rollouts the batch comes from the request posted last round
        (if within the staleness bound), and the next batch's request is posted before this one trains. A batch
        lost with the server is sampled again once it is back with the full weights (math_grpo.server_recovery)."""
        if self.mode != "server" or images is not None:
            return super().generate(prompts, images, num_generations, profiler)
        accelerator = self.accelerator
        upcoming, self.next_prompts = self.next_prompts, None
        all_prompts = gather_object(prompts)  # collectives here, in the training thread, on every rank
        all_next = gather_object(upcoming if upcoming is not None else [])
        while True:
            payload = rollouts_on_main(self, all_prompts, all_next, num_generations, profiler) \
                if accelerator.is_main_process else None
            output, record, error, resync = self._broadcast(payload)
            if resync:  # the launcher restarted the server unseen: the full weights before any rollout
                self.sync_weights()
            elif not error:
                break
            elif not recover(self, error, self._broadcast):
                raise ServerError(error)
        if self.on_record is not None:
            self.on_record(record)
        all_prompt_ids, all_completion_ids, all_logprobs, all_logprob_token_ids = output
        all_prompt_ids = [ids for ids in all_prompt_ids for _ in range(num_generations)]
        rank = slice(accelerator.process_index * len(prompts), (accelerator.process_index + 1) * len(prompts))
        return (all_prompt_ids[rank], all_completion_ids[rank],
                all_logprobs[rank] if all_logprobs is not None else None,
                all_logprob_token_ids[rank] if all_logprob_token_ids is not None else None)

    def _sample(self, prompts: list[list[int]], n: int) -> tuple:
        """One rollout request, with the sampling settings TRL's own server-mode generate sends (plain HTTP)."""
        out = self.vllm_client.generate(
            prompts=prompts, n=n, repetition_penalty=self.repetition_penalty, temperature=self.temperature,
            top_p=self.top_p, top_k=self.top_k, min_p=0.0 if self.min_p is None else self.min_p,
            max_tokens=self.max_completion_length, logprobs=self.logprobs,
            structured_outputs_regex=self.structured_outputs_regex, generation_kwargs=self.generation_kwargs)
        return out["prompt_ids"], out["completion_ids"], out["logprobs"], out.get("logprob_token_ids")

    def _filesystem_sync(self) -> None:
        """All ranks gather each parameter (ZeRO-3 collectives); rank 0 writes, then the server reloads."""
        main = self.accelerator.is_main_process
        state = {}
        # A CPU parameter is written as it is (no copy); a GPU one is copied to CPU once; under ZeRO-3 the
        # gathered full parameter is released after each step of the walk, so it is copied.
        zero3 = getattr(self.accelerator.state, "deepspeed_plugin", None) is not None and \
            self.accelerator.state.deepspeed_plugin.zero_stage == 3
        for name, param in self._iter_named_params():
            if main:
                tensor = param.detach()
                tensor = tensor.to("cpu", copy=True) if zero3 or tensor.device.type != "cpu" else tensor
                state[name] = tensor.contiguous()
        error = None
        if main:
            try:
                write_safetensors(state, self.settings.sync_dir, self._tied_name)
                pause_point("sync", self.step_fn())
                self.http.reload_weights(self.settings.sync_dir)
                self.http.reset_prefix_cache()
            except ServerError as exc:
                error = f"weight sync (filesystem, {self.settings.sync_dir}) failed: {exc}"
            except OSError as exc:
                error = f"weight sync: cannot write {self.settings.sync_dir}: {exc}"
        error = broadcast_from_main(error, self.accelerator)
        if error:
            raise WeightSyncError(error)


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
            _grpo_module.VLLMGeneration = functools.partial(ServerVLLMGeneration, settings=settings)
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
