"""Loading the policy and its tokenizer from a hub id or a local folder, with errors that name the path."""

from __future__ import annotations

import os
from typing import Any

from math_grpo.errors import MathGRPOError


def looks_local(name: str) -> bool:
    """Hub ids are `org/name`; anything else with a path shape is meant to be on disk."""
    if os.path.exists(name):
        return True
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or name.startswith("results/")


def check_model_path(name: str | None, field_name: str = "model_name_or_path") -> str:
    if not name:
        raise MathGRPOError(f"{field_name}: no model given (a hub id or a local checkpoint folder)")
    if looks_local(name):
        path = os.path.expanduser(name)
        if not os.path.isdir(path):
            hint = " (make it with recipes/sft.py, or pass a hub id)" if "checkpoint" in name else ""
            raise MathGRPOError(f"{field_name}: {name} does not exist{hint}")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise MathGRPOError(f"{field_name}: {name} has no config.json (not a transformers model folder)")
        return path
    return name


def _dtype(name: str | None) -> Any:
    import torch

    if name in (None, "auto"):
        return "auto" if name == "auto" else None
    try:
        return getattr(torch, name)
    except AttributeError:
        raise MathGRPOError(f"dtype: unknown torch dtype {name!r}") from None


def load_tokenizer(name: str, revision: str = "main") -> Any:
    from transformers import AutoTokenizer

    path = check_model_path(name)
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision)
    except Exception as exc:
        raise MathGRPOError(f"model_name_or_path: cannot load a tokenizer from {name} ({type(exc).__name__})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(model_args: Any, gradient_checkpointing: bool = False, dtype: str | None = None) -> Any:
    """AutoModelForCausalLM from `ModelConfig`, failing with one line when the path or id is wrong. `dtype`
    overrides ModelConfig's: the trained policy is loaded in `policy_dtype` (math_grpo.precision)."""
    from transformers import AutoModelForCausalLM

    path = check_model_path(model_args.model_name_or_path)
    kwargs: dict[str, Any] = {"revision": model_args.model_revision}
    load_dtype = _dtype(dtype or model_args.dtype)
    if load_dtype is not None:
        kwargs["dtype"] = load_dtype
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if gradient_checkpointing:
        kwargs["use_cache"] = False
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise MathGRPOError(
            f"model_name_or_path: cannot load {model_args.model_name_or_path} "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from None
