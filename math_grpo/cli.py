"""Recipe parsing and one-line errors for the entry points in `recipes/`.

Users meet most failures at start-up (a typo in a YAML field, a missing file); those must read as one line
that names the culprit, not as a 40-line traceback from argparse or TrainingArguments.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from math_grpo.errors import MathGRPOError


def _config_path(args: Sequence[str]) -> str | None:
    if "--config" in args:
        idx = list(args).index("--config")
        if idx + 1 >= len(args):
            raise MathGRPOError("--config needs a path to a YAML recipe")
        return args[idx + 1]
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_recipe(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple[Any, ...]:
    """TRL's `TrlParser` over `dataclass_types`, with file, YAML and unknown-field errors made one line."""
    from trl import TrlParser

    args = list(sys.argv[1:] if args is None else args)
    config = _config_path(args)
    where = config or "command line"
    if config is not None:
        if not os.path.isfile(config):
            raise MathGRPOError(f"{config}: recipe file not found")
        try:
            with open(config, encoding="utf-8") as f:
                content = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise MathGRPOError(f"{config}: invalid YAML: {_first_line(exc)}") from None
        if not isinstance(content, dict):
            raise MathGRPOError(f"{config}: a recipe must be a YAML mapping of field: value")
    parser = TrlParser(list(dataclass_types))
    parser.allow_abbrev = False  # `--learning_rat` must be an error, not a silent prefix match

    def one_line_error(message: str):  # argparse would print its whole usage (hundreds of fields) first
        raise MathGRPOError(f"command line: {message}")

    parser.error = one_line_error
    # Unknown names first: building the dataclasses runs their checks (TrainingArguments' bf16-needs-a-GPU
    # among them), which would otherwise report a misspelt field's side effect instead of the misspelling.
    fields = {action.dest for action in parser._actions} | {"env"}  # `env:` sets variables (TrlParser)
    unknown = [k for k in content if k not in fields] if config is not None else []
    flags = [a.split("=", 1)[0] for i, a in enumerate(args) if a.startswith("--") and a != "--config"
             and (i == 0 or args[i - 1] != "--config")]
    unknown_flags = [f for f in flags if f not in parser._option_string_actions]
    if unknown:
        known = ", ".join(t.__name__ for t in dataclass_types)
        raise MathGRPOError(f"{where}: unknown field(s) {', '.join(map(str, unknown))} (not a field of {known}); "
                            f"check the spelling")
    if unknown_flags:
        raise MathGRPOError(f"command line: unknown argument(s) {' '.join(unknown_flags)}; check the spelling")
    # argparse keeps only the last of a repeated list flag (`--model A --model B` evaluates B alone): an error,
    # since the user meant both. A repeated single-value flag stays an override, as in every CLI.
    lists = [f for f in flags if getattr(parser._option_string_actions[f], "nargs", None) in ("+", "*")]
    repeated = sorted({f for f in lists if lists.count(f) > 1})
    if repeated:
        raise MathGRPOError(f"command line: {', '.join(repeated)} given more than once (a list flag keeps only its "
                            f"last use; give all values after one flag: {repeated[0]} A B)")
    try:
        parsed = parser.parse_args_and_config(args)
    except ValueError as exc:
        msg = str(exc)
        known = ", ".join(t.__name__ for t in dataclass_types)
        unknown = re.findall(r"'--([A-Za-z0-9_.-]+)'", msg)
        if "Unknown arguments from config file" in msg and unknown:
            raise MathGRPOError(
                f"{where}: unknown field(s) {', '.join(unknown)} (not a field of {known}); check the spelling"
            ) from None
        if "not used by the HfArgumentParser" in msg:
            raise MathGRPOError(f"{where}: unknown argument(s) {msg.split(':', 1)[-1].strip()}") from None
        raise MathGRPOError(f"{where}: {_first_line(exc)}") from None
    for section in parsed:
        # The Trainer pickles its arguments into every checkpoint (training_args.bin): a hub token there would
        # travel with each copy of the checkpoint. huggingface_hub reads it from HF_TOKEN just as well.
        if getattr(section, "hub_token", None):
            os.environ.setdefault("HF_TOKEN", section.hub_token)
            section.hub_token = None
    return parsed


def run_cli(main: Callable[[], Any]) -> None:
    """Run `main`, turning `MathGRPOError` (and a missing file) into `error: ...` on stderr and exit code 2."""
    try:
        main()
    except MathGRPOError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
