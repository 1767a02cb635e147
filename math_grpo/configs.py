"""Script-argument dataclasses that extend TRL's, so `TrlParser` reads our YAML recipes.

Everything TRL already has (learning rate, beta, num_generations, vLLM server address, ...) stays in
`GRPOConfig` / `SFTConfig` / `ModelConfig`; only what TRL lacks lives here.

Each dataclass checks its own fields in `__post_init__` (a value outside its allowed set, a count that must
be positive), so a bad recipe fails while it is parsed, naming the field. Checks that need several fields,
TRL's config or the file system live in one place: `math_grpo.recipe_checks`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from trl import ScriptArguments

from math_grpo.data import PROMPT_TEMPLATES
from math_grpo.errors import ConfigError
from rewards.grader import MODES as GRADER_MODES
from rewards.registry import REWARD_FUNCS

DEFAULT_SFT_CHECKPOINT = "results/checkpoints/checkpoint_6000"
DEFAULT_GRPO_OUTPUT_ROOT = "results/grpo_checkpoints"
DEFAULT_WANDB_PROJECT = "math-grpo"
VLLM_MODES = ("server", "colocate")
WEIGHT_SYNC_BACKENDS = ("nccl", "filesystem")
EVAL_BACKENDS = ("auto", "server", "transformers")
BAD_ROWS = ("skip", "error")
POLICY_DTYPES = ("float32", "bfloat16", "float16")


def uses_server(args: Any) -> bool:
    """True for vLLM server mode; `args` is a GRPOConfig or a GRPOTrainer (both carry use_vllm/vllm_mode)."""
    return bool(getattr(args, "use_vllm", False)) and getattr(args, "vllm_mode", None) == "server"


def resolve_run_dir(script_args: GRPOScriptArguments, training_args: Any) -> str:
    """The GRPO run dir, fixed once: an explicit output_dir wins, else OUTPUT_ROOT/<run_name> (default: a
    timestamp). Sets `training_args.output_dir` and `run_name` so every later reader sees the same answer."""
    out = training_args.output_dir
    if not out or out == "trainer_output":
        training_args.run_name = training_args.run_name or time.strftime("grpo-%Y%m%d-%H%M%S")
        out = os.path.join(script_args.output_root, training_args.run_name)
    training_args.output_dir = out
    training_args.run_name = training_args.run_name or os.path.basename(os.path.normpath(out))
    return out


def _one_of(name: str, value: Any, allowed: Any) -> list[str]:
    return [] if value in allowed else [f"{name}: {value!r} is not one of {', '.join(allowed)}"]


def _positive(name: str, value: Any, optional: bool = False) -> list[str]:
    if value is None and optional:
        return []
    return [] if value is not None and value > 0 else [f"{name}: must be > 0, got {value!r}"]


class _FieldChecks:
    """Runs every class's `field_problems()` (cooperatively, along the MRO) once the dataclass is built."""

    def field_problems(self) -> list[str]:
        return []

    def __post_init__(self) -> None:
        problems = self.field_problems()
        if problems:
            raise ConfigError(problems)


@dataclass
class DataArguments(_FieldChecks, ScriptArguments):
    """Where the problems come from and how they become prompts (shared by SFT, GRPO and evaluation)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub id, a local .jsonl/.json/.parquet file, a folder of them, or 'synthetic:DIR'."},
    )
    prompt_template: str = field(
        default="r1_zero",
        metadata={"help": "Prompt template: 'r1_zero' (think/answer tags) or 'question_only' (boxed answer)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training rows (after cleaning)."}
    )
    bad_rows: str = field(
        default="skip",
        metadata={"help": "Malformed rows: 'skip' (drop and count) or 'error' (stop naming the row)."},
    )
    max_problem_chars: int = field(
        default=20_000, metadata={"help": "Rows whose problem is longer than this are malformed."}
    )
    wandb_project: str = field(default=DEFAULT_WANDB_PROJECT, metadata={"help": "W&B project name."})

    def field_problems(self) -> list[str]:
        return [*super().field_problems(), *_one_of("prompt_template", self.prompt_template, PROMPT_TEMPLATES),
                *_one_of("bad_rows", self.bad_rows, BAD_ROWS),
                *_positive("max_train_samples", self.max_train_samples, optional=True),
                *_positive("max_problem_chars", self.max_problem_chars)]


@dataclass
class EvalArguments(_FieldChecks):
    """Benchmark evaluation (the callback during GRPO and `recipes/evaluate.py`)."""

    benchmarks: list[str] = field(
        default_factory=list,
        metadata={"help": "Benchmark names from the registry (aime24, aime25, amc23, math500, minerva_math, "
                          "olympiadbench, gsm8k, synthetic) or NAME=PATH files."},
    )
    eval_max_samples: int | None = field(default=None, metadata={"help": "Cap on problems per benchmark."})
    eval_temperature: float = field(default=0.0, metadata={"help": "Sampling temperature for evaluation."})
    eval_top_p: float = field(default=1.0, metadata={"help": "Top-p for evaluation sampling."})
    eval_max_tokens: int = field(default=1024, metadata={"help": "Max new tokens per evaluation answer."})
    eval_n: int = field(default=1, metadata={"help": "Samples per problem (pass@k uses n >= k)."})
    eval_sampling: list[str] = field(
        default_factory=list,
        metadata={"help": "Per-benchmark sampling over the eval_* defaults: 'aime24: n=16 temperature=0.6 "
                          "top_p=0.95' (keys n, temperature, top_p, max_tokens)."},
    )
    eval_grader_mode: str = field(default="accurate", metadata={"help": "Grader mode: drgrpo or accurate."})
    eval_backend: str = field(
        default="auto",
        metadata={"help": "'server' (the vLLM server), 'transformers' (in-process) or 'auto' (server if used)."},
    )
    eval_request_timeout: float = field(default=600.0, metadata={"help": "HTTP timeout per eval request (s)."})
    eval_num_samples_logged: int = field(default=8, metadata={"help": "Sample completions logged per eval."})

    def field_problems(self) -> list[str]:
        problems = [*super().field_problems(), *_one_of("eval_grader_mode", self.eval_grader_mode, GRADER_MODES),
                    *_one_of("eval_backend", self.eval_backend, EVAL_BACKENDS),
                    *_positive("eval_max_samples", self.eval_max_samples, optional=True),
                    *_positive("eval_max_tokens", self.eval_max_tokens), *_positive("eval_n", self.eval_n),
                    *_positive("eval_request_timeout", self.eval_request_timeout)]
        if self.eval_temperature < 0:
            problems.append(f"eval_temperature: must be >= 0, got {self.eval_temperature}")
        if not 0 < self.eval_top_p <= 1:
            problems.append(f"eval_top_p: must be in (0, 1], got {self.eval_top_p}")
        return problems


@dataclass
class StopArguments(_FieldChecks):
    """When a run ends early and cleanly (math_grpo.callbacks.StopRequest: a checkpoint, then exit)."""

    time_limit_s: float | None = field(
        default=None, metadata={"help": "Stop training cleanly (with a checkpoint) after this many seconds."}
    )
    stop_file: str | None = field(
        default=None, metadata={"help": "Stop training cleanly (with a checkpoint) once this file exists."}
    )

    def field_problems(self) -> list[str]:
        return [*super().field_problems(), *_positive("time_limit_s", self.time_limit_s, optional=True)]


@dataclass
class PrecisionArguments(_FieldChecks):
    """The dtype of the trained weights (math_grpo.precision says why float32 is the default)."""

    policy_dtype: str = field(
        default="float32",
        metadata={"help": "dtype of the trained policy's weights and optimizer step: float32 (fp32 master weights; "
                          "bf16 compute with bf16: true) or bfloat16/float16 (no fp32 masters without DeepSpeed/FSDP: "
                          "small updates round away). ModelConfig's dtype sets the reference model and evaluation."},
    )

    def field_problems(self) -> list[str]:
        return [*super().field_problems(), *_one_of("policy_dtype", self.policy_dtype, POLICY_DTYPES)]


@dataclass
class GRPOScriptArguments(DataArguments, EvalArguments, StopArguments, PrecisionArguments):
    """Arguments of `recipes/grpo.py` that are not in TRL's GRPOConfig / ModelConfig."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["r1_zero"],
        metadata={"help": "Reward function names from rewards.registry (logged as rewards/<name>/mean)."},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Drop (and count) training prompts longer than this many tokens; TRL 1.16 has no such cap."},
    )
    grader_mode: str = field(default="accurate", metadata={"help": "Grader mode for rewards: drgrpo or accurate."})
    grader_timeout: float = field(default=2.0, metadata={"help": "CPU-time bound per graded answer (s)."})
    server_request_timeout: float = field(
        default=600.0, metadata={"help": "HTTP timeout per rollout or weight-sync request to the vLLM server (s); "
                                         "evaluation requests use eval_request_timeout."})
    server_restart_wait_s: float = field(
        default=600.0, metadata={"help": "A vLLM server lost mid-run: wait this long (s) for it to come back (the "
                                         "launcher restarts its own; longer when it says a restart takes longer), "
                                         "push the full weights and go on; 0: stop at once."})
    output_root: str = field(
        default=DEFAULT_GRPO_OUTPUT_ROOT,
        metadata={"help": "Run dirs go to OUTPUT_ROOT/<run_name> unless output_dir is set explicitly."},
    )
    weight_sync_backend: str = field(
        default="nccl",
        metadata={"help": "Server-mode weight sync: 'nccl' (TRL, separate GPUs) or 'filesystem' (safetensors)."},
    )
    weight_sync_dir: str | None = field(
        default=None, metadata={"help": "Filesystem sync folder, readable by the server (default: run dir)."}
    )
    sync_check: bool = field(default=True, metadata={"help": "Compare server vs trainer logprobs after sync."})
    sync_check_factor: float = field(
        default=4.0, metadata={"help": "A sync fails when the logprob diff exceeds factor x the noise floor."}
    )
    sync_check_min_tolerance: float = field(
        default=0.05, metadata={"help": "Lower bound of the sync tolerance (max abs logprob diff, nats)."}
    )
    stop_on_nan: bool = field(
        default=True, metadata={"help": "Stop (with the last finite checkpoint) on a NaN/inf loss, grad norm or weight."}
    )
    rollout_detokenize: bool = field(
        default=False,
        metadata={"help": "Server mode: false (default) samples rollouts through vLLM's token route (token ids in "
                          "and out, no detokenization on the server; TRL decodes), falling back to /v1/completions "
                          "when the server lacks it; true: always /v1/completions. Evaluation always gets text."},
    )
    async_rollouts: bool = field(
        default=False,
        metadata={"help": "Server mode: sample the next batch's rollouts on the server while this batch trains "
                          "(math_grpo.async_rollouts; TRL's importance-sampling correction must be on)."},
    )
    max_staleness: int = field(
        default=1,
        metadata={"help": "async_rollouts: a batch trains at most this many optimizer steps after the weights it "
                          "was sampled with (an older one is sampled again)."},
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={"help": "DAPO dynamic sampling: drop groups whose completions all get the same reward and refill "
                          "the batch with groups of new prompts (math_grpo.dynamic_sampling)."},
    )
    dynamic_sampling_max_rounds: int = field(
        default=3,
        metadata={"help": "dynamic_sampling: generation rounds per step at most, the first included; then the step "
                          "trains on the groups it has (logged)."},
    )
    fused_is_ratio: bool = field(
        default=True,
        metadata={"help": "Compute TRL's vLLM importance-sampling ratio from the training forward instead of an extra "
                          "forward over every rollout, where that gives the same ratio (math_grpo.trl_adapter."
                          "fused_is_applies); false: always TRL's own computation."},
    )

    def field_problems(self) -> list[str]:
        problems = [*super().field_problems(), *_one_of("grader_mode", self.grader_mode, GRADER_MODES),
                    *_one_of("weight_sync_backend", self.weight_sync_backend, WEIGHT_SYNC_BACKENDS),
                    *_positive("grader_timeout", self.grader_timeout),
                    *_positive("server_request_timeout", self.server_request_timeout),
                    *([] if self.server_restart_wait_s >= 0 else ["server_restart_wait_s: must be 0 or more"]),
                    *_positive("max_prompt_length", self.max_prompt_length, optional=True),
                    *_positive("sync_check_factor", self.sync_check_factor),
                    *_positive("max_staleness", self.max_staleness),
                    *_positive("dynamic_sampling_max_rounds", self.dynamic_sampling_max_rounds)]
        if not self.reward_funcs:
            problems.append("reward_funcs: empty; name at least one (r1_zero)")
        unknown = [n for n in self.reward_funcs if n not in REWARD_FUNCS]
        if unknown:
            problems.append(f"reward_funcs: unknown {', '.join(map(repr, unknown))}; known: {', '.join(REWARD_FUNCS)}")
        return problems


@dataclass
class SFTScriptArguments(DataArguments, EvalArguments, StopArguments, PrecisionArguments):
    """Arguments of `recipes/sft.py` that are not in TRL's SFTConfig / ModelConfig (the target is the
    worked solution `math_grpo.data` finds in the row: a `solution`, `worked_solution` or `rationale` column)."""
