"""The dtype the trained weights live in, and why it is float32 by default (fp32 master weights).

AdamW moves a weight by about `learning_rate` a step. A bfloat16 weight keeps 8 significant bits, so an update
below half its rounding step (2^-9 to 2^-8 of the weight) rounds to nothing: at lr 5e-7 that is every weight
above about 2.6e-4, nearly all of a trained model. Measured on one H100 (docs/hardware.md): 100 GRPO steps at
5e-7 with bf16 weights changed 0.6% of the elements, with float32 weights 97%.

So the policy is loaded in float32 unless a recipe asks otherwise (`policy_dtype`), and bf16 compute comes
from `bf16: true`: autocast without DeepSpeed, DeepSpeed's own fp32 master copies under ZeRO, and FSDP2's
mixed-precision policy (accelerate upcasts the sharded parameters to float32). ModelConfig's `dtype` keeps
its other roles: the dtype of the reference model, of in-process evaluation and of a server the launcher starts;
the weight sync casts to whatever dtype the vLLM server serves, once per sync.
"""

from __future__ import annotations

import re
from typing import Any

# Significant bits of each low-precision float (mantissa + the implicit leading bit).
SIGNIFICANT_BITS = {"bfloat16": 8, "float16": 11}
SHARDED = ("DEEPSPEED", "FSDP")  # these keep their own fp32 master copies of bf16 weights
VANISHING_WARN_FRACTION = 0.5


def torch_dtype(name: str | None) -> Any:
    import torch

    return None if name in (None, "auto") else getattr(torch, name)


def vanishing_update_fraction(model: Any, learning_rate: float) -> float:
    """The share of the model's trainable weights whose dtype cannot represent a change of `learning_rate`:
    the update is below half the weight's rounding step, so AdamW's step rounds back to the same value."""
    import torch

    vanish = total = 0
    for param in model.parameters():
        if not param.requires_grad:
            continue
        bits = SIGNIFICANT_BITS.get(str(param.dtype).removeprefix("torch."))
        total += param.numel()
        if bits is None:
            continue
        _, exponent = torch.frexp(param.detach().float())  # |w| = m * 2^e, m in [0.5, 1)
        half_step = torch.ldexp(torch.ones_like(param, dtype=torch.float32), exponent - bits - 1)
        vanish += int(((half_step > learning_rate) & (param != 0)).sum())  # a zero takes any update
    return vanish / total if total else 0.0


def low_precision_warning(model: Any, learning_rate: float, policy_dtype: str, distributed_type: str,
                          optim: str) -> str | None:
    """One line when the recipe trains low-precision weights with a plain optimizer at a learning rate whose
    updates mostly round away (DeepSpeed and FSDP2 keep fp32 masters of their own, so they get none)."""
    if policy_dtype not in SIGNIFICANT_BITS or str(distributed_type).split(".")[-1] in SHARDED:
        return None
    fraction = vanishing_update_fraction(model, learning_rate)
    if fraction < VANISHING_WARN_FRACTION:
        return None
    return (f"[precision] warning: policy_dtype {policy_dtype} with optim {optim} and no DeepSpeed/FSDP: at "
            f"learning_rate {learning_rate:g} the update is below half the rounding step of {fraction:.0%} of the "
            f"weights, so AdamW's step leaves them unchanged; use policy_dtype: float32 (fp32 master weights, the "
            f"default; bf16 compute stays on with bf16: true) or a DeepSpeed ZeRO accelerate config")


def cast_reference(trainer: Any, dtype_name: str | None) -> None:
    """Hold TRL's reference model (built in the policy's float32) in ModelConfig's `dtype`: it is never trained,
    so bf16 costs it nothing and halves its memory. DeepSpeed/FSDP engines are left to cast it themselves."""
    ref = getattr(trainer, "ref_model", None)
    dtype = torch_dtype(dtype_name)
    if ref is None or dtype is None or not hasattr(ref, "named_parameters") or type(ref).__name__.endswith(
            ("Engine", "FullyShardedDataParallel")):
        return
    if next(ref.parameters()).dtype != dtype:
        ref.to(dtype)


_SERVED_DTYPE = re.compile(r"\bdtype=torch\.(\w+)")


def served_dtype(server_info: dict | None) -> str | None:
    """The dtype a vLLM server holds its weights in, from its dev-mode `/server_info` (None if not said)."""
    config = (server_info or {}).get("vllm_config")
    if isinstance(config, dict):
        value = (config.get("model_config") or {}).get("dtype")
        return str(value).removeprefix("torch.") if value else None
    match = _SERVED_DTYPE.search(str(config or ""))
    return match.group(1) if match else None


def describe(policy_dtype: str, model_dtype: str | None, bf16: bool, distributed_type: str) -> str:
    """The one start-up line that says where each copy of the weights lives."""
    kind = str(distributed_type).split(".")[-1]
    masters = ("fp32 master weights" if policy_dtype == "float32" else
               f"{kind}'s fp32 master weights" if kind in SHARDED else f"{policy_dtype} weights, no fp32 masters")
    compute = "bf16" if bf16 else policy_dtype
    return (f"[precision] policy {policy_dtype} ({masters}), compute {compute}, reference/evaluation "
            f"{model_dtype or 'as loaded'}")


def report(model: Any, script_args: Any, training_args: Any, model_args: Any, state: Any) -> None:
    """Print where the weights live (main process) and warn when the recipe's updates would round away."""
    if not state.is_main_process:
        return
    kind = state.distributed_type
    print(describe(script_args.policy_dtype, model_args.dtype, training_args.bf16, kind), flush=True)
    warning = low_precision_warning(model, training_args.learning_rate, script_args.policy_dtype, kind,
                                    getattr(training_args.optim, "value", str(training_args.optim)))
    if warning:
        print(warning, flush=True)
