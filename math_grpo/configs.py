"""Script-argument dataclasses that extend TRL's, so `TrlParser` reads our YAML recipes.

Everything TRL already has (learning rate, beta, num_generations, vLLM server address, ...) stays in
`GRPOConfig` / `SFTConfig` / `ModelConfig`; only what TRL lacks lives here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ScriptArguments

DEFAULT_SFT_CHECKPOINT = "results/checkpoints/checkpoint_6000"
DEFAULT_GRPO_OUTPUT_ROOT = "results/grpo_checkpoints"
DEFAULT_WANDB_PROJECT = "math-grpo"


@dataclass
class DataArguments(ScriptArguments):
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


@dataclass
class EvalArguments:
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


@dataclass
class StopArguments:
    """When a run ends early and cleanly (math_grpo.callbacks.StopRequest: a checkpoint, then exit)."""

    time_limit_s: float | None = field(
        default=None, metadata={"help": "Stop training cleanly (with a checkpoint) after this many seconds."}
    )
    stop_file: str | None = field(
        default=None, metadata={"help": "Stop training cleanly (with a checkpoint) once this file exists."}
    )


@dataclass
class GRPOScriptArguments(DataArguments, EvalArguments, StopArguments):
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
    grader_timeout: float = field(default=2.0, metadata={"help": "Wall-clock bound per graded answer (s)."})
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
    stop_on_nan: bool = field(default=True, metadata={"help": "Stop (with a checkpoint) on NaN/inf loss."})


@dataclass
class SFTScriptArguments(DataArguments, EvalArguments, StopArguments):
    """Arguments of `recipes/sft.py` that are not in TRL's SFTConfig / ModelConfig."""

    solution_column: str = field(
        default="solution", metadata={"help": "Column holding the worked solution used as the SFT target."}
    )
