"""The filesystem weight-sync backend and the logprob check that follows every sync to the vLLM server.

The worst failure of server mode is silent: a server that keeps sampling from stale or wrongly loaded weights.
So after every sync the server's prompt logprobs on a fixed probe are compared with the trainer's own
log-softmax. The first sync of a run pushes weights that are equal by construction; its difference is the
noise floor of the set-up (0 in float32 on CPU, about 0.1 nats in bf16 on a GPU), and later syncs must stay
within max(sync_check_min_tolerance, sync_check_factor * floor) of it.

How the two plug into TRL's trainer (and why that needs a subclass) is `math_grpo.trl_adapter`'s job; nothing
here imports TRL.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

from math_grpo.checkpoints import broadcast_from_main
from math_grpo.configs import GRPOScriptArguments
from math_grpo.errors import MathGRPOError, WeightSyncError
from math_grpo.vllm_server import VLLMServerClient

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


@dataclass
class SyncSettings:
    backend: str = "nccl"
    sync_dir: str | None = None
    check: bool = True
    factor: float = 4.0
    min_tolerance: float = 0.05
    request_timeout: float = 600.0
    probe_max_tokens: int = 128
    in_ram: bool = False  # sync_dir is our own folder in /dev/shm (removed when training ends)
    restart_wait_s: float = 600.0  # how long to wait for a lost server to come back (math_grpo.server_recovery)

    @classmethod
    def from_args(cls, script_args: GRPOScriptArguments, training_args: Any) -> SyncSettings:
        sync_dir, in_ram = script_args.weight_sync_dir, False
        if sync_dir is None:
            sync_dir, in_ram = default_sync_dir(training_args)
        return cls(backend=script_args.weight_sync_backend, sync_dir=os.path.abspath(sync_dir), in_ram=in_ram,
                   check=script_args.sync_check, factor=script_args.sync_check_factor,
                   min_tolerance=script_args.sync_check_min_tolerance,
                   request_timeout=script_args.server_request_timeout,
                   restart_wait_s=getattr(script_args, "server_restart_wait_s", 600.0))


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
RAM_DIR = "/dev/shm"


def default_sync_dir(training_args: Any) -> tuple[str, bool]:
    """(folder, in RAM): a folder of /dev/shm when it exists and the server is on this host (writing and reading
    the weights then never touches a disk), else the run dir's weight_sync/."""
    from urllib.parse import urlparse

    url = getattr(training_args, "vllm_server_base_url", None)
    host = urlparse(url).hostname if url else getattr(training_args, "vllm_server_host", None)
    if host in LOCAL_HOSTS and os.path.isdir(RAM_DIR) and os.access(RAM_DIR, os.W_OK):
        tag = hashlib.sha1(os.path.abspath(training_args.output_dir).encode()).hexdigest()[:12]
        return os.path.join(RAM_DIR, f"math-grpo-sync-{os.getuid()}-{tag}"), True
    return os.path.join(training_args.output_dir, "weight_sync"), False


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
    """Save parameters to OUT_DIR/model.safetensors, with an explicit `lm_head.weight` when tied.

    vLLM's reload of a tied model from a file without `lm_head.weight` leaves a head that matches neither the
    old nor the new weights (about 2 nats off on a perturbed embedding; docs/faults.md): always write it.
    The server reads the file only when asked to reload, after this returns, so the previous file is removed
    first and the new one written in place: one copy of the weights in the folder (it may be RAM), not two.
    """
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    state = dict(named_params)
    if tie_lm_head_to is not None and "lm_head.weight" not in state:
        state["lm_head.weight"] = state[tie_lm_head_to].clone()  # safetensors refuses tensors sharing memory
    path = os.path.join(out_dir, "model.safetensors")
    if os.path.exists(path):
        os.remove(path)
    save_file(state, path, metadata={"format": "pt"})
    return path


def tied_embedding_name(model: Any) -> str | None:
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
