"""Weight sync to the vLLM server (TRL's NCCL path or a filesystem backend) and a logprob check after each sync.

The worst failure of server mode is silent: a server that keeps sampling from stale or wrongly loaded weights.
So after every sync the server's prompt logprobs on a fixed probe are compared with the trainer's own
log-softmax. The first sync of a run pushes weights that are equal by construction; its difference is the
noise floor of the set-up (0 in float32 on CPU, about 0.1 nats in bf16 on a GPU), and later syncs must stay
within max(sync_check_min_tolerance, sync_check_factor * floor) of it.

Why a trainer subclass: TRL 1.16 builds its `VLLMGeneration` inside `GRPOTrainer.__init__`, and in server
mode that always calls `VLLMClient.init_communicator`, which raises on a non-CUDA trainer. The filesystem
backend must therefore replace that step *before* it runs; `MathGRPOTrainer` makes TRL build our
`ServerVLLMGeneration` subclass instead (same constructor arguments, TRL's code otherwise untouched).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trl import GRPOTrainer
from trl.generation.vllm_generation import VLLMGeneration

from math_grpo.checkpoints import broadcast_from_main
from math_grpo.cli import MathGRPOError
from math_grpo.vllm_server import ServerError, VLLMServerClient, make_trl_client

BACKENDS = ("nccl", "filesystem")
# A "noise floor" above this on known-equal weights means the sync itself is broken, not noise.
MAX_NOISE_FLOOR = 1.0
PROBE_TEXT = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the "
    "answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
    "<answer> </answer> tags, respectively.\nUser: Tom has 12 apples and buys 7 more. He gives 4 to Ann. "
    "How many apples does he have now?\nAssistant: <think> 12 + 7 = 19, and 19 - 4 = 15. </think> "
    "<answer> 15 </answer>"
)
_SWAP_LOCK = threading.Lock()


class WeightSyncError(MathGRPOError):
    """The server does not hold the trainer's weights (or the sync itself failed)."""


@dataclass
class SyncSettings:
    backend: str = "nccl"
    sync_dir: str | None = None
    check: bool = True
    factor: float = 4.0
    min_tolerance: float = 0.05
    request_timeout: float = 600.0
    probe_max_tokens: int = 128

    @classmethod
    def from_args(cls, script_args: Any, training_args: Any) -> SyncSettings:
        backend = getattr(script_args, "weight_sync_backend", "nccl")
        if backend not in BACKENDS:
            raise MathGRPOError(f"weight_sync_backend: {backend!r} is not one of {', '.join(BACKENDS)}")
        sync_dir = getattr(script_args, "weight_sync_dir", None) or os.path.join(training_args.output_dir,
                                                                                 "weight_sync")
        return cls(backend=backend, sync_dir=os.path.abspath(sync_dir),
                   check=bool(getattr(script_args, "sync_check", True)),
                   factor=float(getattr(script_args, "sync_check_factor", 4.0)),
                   min_tolerance=float(getattr(script_args, "sync_check_min_tolerance", 0.05)),
                   request_timeout=float(getattr(script_args, "eval_request_timeout", 600.0)))


def _is_main(accelerator: Any) -> bool:
    return accelerator is None or accelerator.is_main_process


class SyncChecker:
    """Compares server and trainer logprobs on a fixed probe after each sync; keeps the noise floor."""

    def __init__(self, settings: SyncSettings, probe_ids: list[int]):
        if len(probe_ids) < 4:
            raise MathGRPOError("weight-sync probe: the tokenizer turned the probe text into < 4 tokens")
        self.settings = settings
        self.probe_ids = list(probe_ids)
        self.noise_floor: float | None = None
        self.history: list[dict[str, float]] = []

    @classmethod
    def from_tokenizer(cls, settings: SyncSettings, tokenizer: Any) -> SyncChecker:
        tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
        ids = tok(PROBE_TEXT, add_special_tokens=False)["input_ids"][: settings.probe_max_tokens]
        return cls(settings, ids)

    def trainer_logprobs(self, model: Any) -> list[float]:
        """The trainer's log p(token_i | prefix); every rank must call it (ZeRO-3 gathers in forward)."""
        import torch

        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            ids = torch.tensor([self.probe_ids], device=device)
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
            return logp.cpu().tolist()
        finally:
            if was_training:
                model.train()

    def check(self, model: Any, client: VLLMServerClient | None, accelerator: Any, step: int) -> dict[str, float]:
        """Raise WeightSyncError on every rank if the server's logprobs drift beyond the tolerance."""
        trainer_lp = self.trainer_logprobs(model)
        result: dict[str, Any] | None = None
        if _is_main(accelerator):
            try:
                server_lp = client.prompt_logprobs(self.probe_ids)
                diffs = [abs(a - b) for a, b in zip(server_lp, trainer_lp)]
                if any(math.isnan(d) for d in diffs):
                    raise WeightSyncError("weight sync check: NaN logprobs on the probe (server or trainer)")
                result = {"max": max(diffs), "mean": sum(diffs) / len(diffs), "error": None}
            except MathGRPOError as exc:
                result = {"error": str(exc)}
        result = broadcast_from_main(result, accelerator)
        if result["error"]:
            raise WeightSyncError(result["error"])
        max_diff, mean_diff = result["max"], result["mean"]
        first = self.noise_floor is None
        if first:
            if max_diff > MAX_NOISE_FLOOR:
                raise WeightSyncError(
                    f"weight sync check at step {step}: right after pushing the trainer's own weights the server's "
                    f"logprobs differ by {max_diff:.3g} nats (max over {len(trainer_lp)} probe tokens; > "
                    f"{MAX_NOISE_FLOOR}): the server does not load what the trainer sends (tied lm_head? other "
                    "architecture or tokenizer?)")
            self.noise_floor = max_diff
        tolerance = max(self.settings.min_tolerance, self.settings.factor * self.noise_floor)
        record = {"weight_sync/logprob_max_abs_diff": max_diff, "weight_sync/logprob_mean_abs_diff": mean_diff,
                  "weight_sync/tolerance": tolerance, "weight_sync/noise_floor": self.noise_floor}
        self.history.append({"step": step, **record})
        if not first and max_diff > tolerance:
            raise WeightSyncError(
                f"weight sync check failed at step {step}: server vs trainer logprobs differ by {max_diff:.4g} nats "
                f"(max; mean {mean_diff:.3g}) > tolerance {tolerance:.3g} (noise floor {self.noise_floor:.3g} at the "
                f"first sync): the vLLM server is not serving the trained weights; stopping")
        return record


def write_safetensors(named_params: Any, out_dir: str, tie_lm_head_to: str | None) -> str:
    """Save parameters to OUT_DIR/model.safetensors atomically, with an explicit `lm_head.weight` when tied.

    vLLM's reload of a tied model from a file without `lm_head.weight` leaves a head that matches neither the
    old nor the new weights (about 2 nats off on a perturbed embedding, see NOTES): always write it.
    """
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    state = dict(named_params)
    if tie_lm_head_to is not None and "lm_head.weight" not in state:
        state["lm_head.weight"] = state[tie_lm_head_to].clone()
    path = os.path.join(out_dir, "model.safetensors")
    tmp = path + ".partial"
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)
    return path


def _tied_embedding_name(model: Any) -> str | None:
    """The parameter name of the input embedding when the LM head shares it, else None."""
    config = getattr(model, "config", None)
    if not getattr(config, "tie_word_embeddings", False):
        return None
    try:
        emb = model.get_input_embeddings().weight
    except (AttributeError, NotImplementedError):
        return None
    for name, param in model.named_parameters():
        if param is emb:
            return name.removeprefix("base_model.model.")
    return None


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
        super().__init__(*args, **kwargs)

    def _init_vllm(self) -> None:
        if self.mode != "server":
            super()._init_vllm()
            return
        accelerator = self.accelerator
        base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
        if accelerator.is_main_process:
            self.vllm_client = make_trl_client(base_url, self.settings.request_timeout, self.server_timeout,
                                               group_port=self.group_port)
            self.http = VLLMServerClient(base_url, timeout=self.settings.request_timeout, model=self.vllm_client.model)
            if self.settings.backend == "nccl":
                self.vllm_client.init_communicator(device=accelerator.device)
            elif self.settings.backend == "filesystem":
                self.http.server_info()  # fail now, naming VLLM_SERVER_DEV_MODE, not at the first sync
        self._tied_name = _tied_embedding_name(self.model)
        accelerator.wait_for_everyone()

    def sync_weights(self) -> None:
        for hook in list(self.before_sync):
            hook()
        t0 = time.perf_counter()
        if self.mode == "server" and self.settings.backend == "filesystem":
            self._filesystem_sync()
        else:
            try:
                super().sync_weights()
            except ServerError as exc:
                raise WeightSyncError(f"weight sync (nccl) failed: {exc}") from None
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

    def _filesystem_sync(self) -> None:
        """All ranks gather each parameter (ZeRO-3 collectives); rank 0 writes, then the server reloads."""
        main = self.accelerator.is_main_process
        state = {}
        for name, param in self._iter_named_params():
            if main:
                state[name] = param.detach().to("cpu", copy=True).contiguous()
        error = None
        if main:
            try:
                write_safetensors(state, self.settings.sync_dir, self._tied_name)
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

    `sync_args` is anything with the weight_sync_* / sync_check* fields of `GRPOScriptArguments`.
    Outside server mode it is exactly TRL's trainer.
    """

    def __init__(self, *args: Any, sync_args: Any = None, **kwargs: Any):
        training_args = kwargs.get("args", args[2] if len(args) > 2 else None)
        server = bool(training_args is not None and training_args.use_vllm and training_args.vllm_mode == "server")
        if not server:
            super().__init__(*args, **kwargs)
            return
        settings = SyncSettings.from_args(sync_args, training_args)
        import trl.trainer.grpo_trainer as grpo_module

        with _SWAP_LOCK:
            original = grpo_module.VLLMGeneration
            grpo_module.VLLMGeneration = functools.partial(ServerVLLMGeneration, settings=settings)
            try:
                super().__init__(*args, **kwargs)
            finally:
                grpo_module.VLLMGeneration = original
        install_weight_sync(self, sync_args)


def install_weight_sync(trainer: GRPOTrainer, script_args: Any) -> None:
    """Make a server-mode trainer check every sync; idempotent. The backend itself is chosen at construction.

    For `weight_sync_backend: filesystem` the trainer must be a `MathGRPOTrainer` (TRL's own would already
    have failed in `init_communicator` on a non-CUDA device).
    """
    if not (getattr(trainer, "use_vllm", False) and getattr(trainer, "vllm_mode", None) == "server"):
        return
    vg = trainer.vllm_generation
    if not isinstance(vg, ServerVLLMGeneration):
        raise MathGRPOError("server mode: build the trainer with math_grpo.weight_sync.MathGRPOTrainer(..., "
                            "sync_args=script_args) so the weight sync backend and its check are installed")
    settings = SyncSettings.from_args(script_args, trainer.args)
    if settings.backend != vg.settings.backend:
        raise MathGRPOError(f"weight_sync_backend changed after the trainer was built ({vg.settings.backend} -> "
                            f"{settings.backend})")
    vg.settings = settings
    if settings.check and vg.checker is None:
        vg.checker = SyncChecker.from_tokenizer(settings, trainer.processing_class)
    vg.step_fn = lambda: trainer.state.global_step

    def record(metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            trainer._metrics["train"][key].append(value)

    vg.on_record = record


def force_sync(trainer: GRPOTrainer) -> bool:
    """Push the current weights now (every rank must call it); the next rollout then skips its own sync.

    Returns False when there is no server to sync (not server mode).
    """
    if not (getattr(trainer, "use_vllm", False) and getattr(trainer, "vllm_mode", None) == "server"):
        return False
    if trainer._last_loaded_step != trainer.state.global_step:
        trainer.vllm_generation.sync_weights()
        trainer._last_loaded_step = trainer.state.global_step
    return True
