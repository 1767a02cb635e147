"""GRPO on math problems with the r1_zero reward.

    accelerate launch --config_file accelerate_configs/zero2.yaml recipes/grpo.py \
        --config recipes/qwen2.5-math-1.5b/grpo_2gpu.yaml [--field value ...]

On a vLLM server (`use_vllm: true, vllm_mode: server`) either start the server yourself and pass
`--vllm_server_base_url` (README: two terminals), or let `python -m math_grpo.launch` (`bash launch/grpo.sh`)
start it, run this script under `accelerate launch` and stop the server. The run dir (`output_dir`, by default results/grpo_checkpoints/<run_name>) holds the
resolved config, the git commit, metrics.jsonl, completions.jsonl, checkpoints and plots.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from math_grpo.cli import parse_recipe, run_cli  # noqa: E402
from math_grpo.configs import DEFAULT_SFT_CHECKPOINT, GRPOScriptArguments, resolve_run_dir  # noqa: E402
from math_grpo.errors import MathGRPOError  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    from trl import GRPOConfig, ModelConfig

    script_args, training_args, model_args = parse_recipe((GRPOScriptArguments, GRPOConfig, ModelConfig), argv)
    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = DEFAULT_SFT_CHECKPOINT
    train(script_args, training_args, model_args)


def train(script_args: GRPOScriptArguments, training_args, model_args) -> None:
    from accelerate import PartialState
    from transformers import set_seed

    from math_grpo import checkpoints, data, models, precision, tracking
    from math_grpo.callbacks import CompletionSamplesCallback, MetricsCallback, NonFiniteGuard, StopRequest
    from math_grpo.plotting import plot_run
    from math_grpo.recipe_checks import validate_grpo_config
    from math_grpo.trl_adapter import MathGRPOTrainer
    from rewards.registry import get_reward_funcs

    state = PartialState()
    run_dir = resolve_run_dir(script_args, training_args)
    validate_grpo_config(script_args, training_args, model_args, world_size=state.num_processes)
    set_seed(training_args.seed)

    use_wandb = tracking.take_over_wandb(training_args)

    tokenizer = models.load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    with state.local_main_process_first():
        dataset = data.load_training_set(script_args, verbose=state.is_main_process)
        if script_args.max_prompt_length:
            dataset = data.drop_long_prompts(dataset, tokenizer, script_args.max_prompt_length,
                                             verbose=state.is_main_process)
    try:
        reward_funcs = get_reward_funcs(
            script_args.reward_funcs, mode=script_args.grader_mode, timeout=script_args.grader_timeout,
            question_only=script_args.prompt_template == "question_only",
        )
    except ValueError as exc:
        raise MathGRPOError(f"reward_funcs: {exc}") from None
    model = models.load_model(model_args, gradient_checkpointing=training_args.gradient_checkpointing,
                              dtype=script_args.policy_dtype)
    precision.report(model, script_args, training_args, model_args, state)

    resume = checkpoints.resolve_resume_on_all_ranks(training_args.resume_from_checkpoint, run_dir, state)
    wandb_run = tracking.start_run(run_dir, state, use_wandb, script_args, training_args, model_args)
    guard = NonFiniteGuard() if script_args.stop_on_nan else None
    stopper = StopRequest(time_limit_s=script_args.time_limit_s, stop_file=script_args.stop_file)
    callbacks = [MetricsCallback(run_dir, wandb_run), checkpoints.CompleteCheckpointCallback(),
                 checkpoints.ThisRunsIntervals(), *([guard] if guard else []), stopper]

    # TRL's GRPOTrainer, plus our weight-sync backend and its logprob check in vLLM server mode.
    trainer = MathGRPOTrainer(
        model=model, reward_funcs=reward_funcs, args=training_args, train_dataset=dataset,
        processing_class=tokenizer, callbacks=callbacks, sync_args=script_args,
    )
    precision.cast_reference(trainer, model_args.dtype)
    trainer.add_callback(CompletionSamplesCallback(run_dir, trainer, wandb_run))
    if script_args.benchmarks:
        from math_grpo.eval_callback import add_eval_callback

        add_eval_callback(trainer, script_args, run_dir, tokenizer)

    try:
        trainer.train(resume_from_checkpoint=resume)
    except Exception as exc:
        if checkpoints.is_disk_full(exc, run_dir):
            last = checkpoints.last_complete_checkpoint(run_dir, quarantine=False)
            raise MathGRPOError(f"disk full while writing to {run_dir} at step {trainer.state.global_step}; "
                                f"last complete checkpoint kept: {last}") from None
        raise
    finally:
        if state.is_main_process:
            try:
                plot_run(run_dir)
            except Exception as exc:  # a plot must never hide the real outcome
                print(f"[plot] skipped ({type(exc).__name__}: {exc})", flush=True)

    if guard and guard.tripped:
        step, key, value = guard.tripped
        last = checkpoints.last_complete_checkpoint(run_dir, quarantine=False)
        raise MathGRPOError(f"non-finite {key}={value} at step {step}: stopped; last usable checkpoint: {last}")
    if stopper.reason:
        last = checkpoints.last_complete_checkpoint(run_dir, quarantine=False)
        print(f"[stop] {stopper.reason}: stopped at step {trainer.state.global_step}; checkpoint: {last}", flush=True)
        if stopper.signum is not None:
            sys.exit(128 + stopper.signum)
        return
    trainer.save_model(os.path.join(run_dir, "final"))
    if state.is_main_process:
        print(f"[done] {trainer.state.global_step} steps; run dir: {run_dir}", flush=True)
    if state.num_processes > 1:  # an undestroyed gloo/NCCL group can abort the process at exit
        state.destroy_process_group()


if __name__ == "__main__":
    run_cli(main)
