"""Supervised fine-tuning on worked solutions in the r1_zero format: the start point of GRPO.

    accelerate launch recipes/sft.py --config recipes/tiny/sft.yaml [--field value ...]

The prompt is the same template GRPO uses and the completion is " solution </think> <answer> x </answer>",
so the SFT model already speaks the format the grader rewards. The final model is saved at `output_dir`
itself (loadable as GRPO's `model_name_or_path`); `time_limit_s` stops cleanly after a wall-time budget.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from math_grpo.cli import parse_recipe, run_cli  # noqa: E402
from math_grpo.configs import SFTScriptArguments  # noqa: E402
from math_grpo.errors import MathGRPOError  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    from trl import ModelConfig, SFTConfig

    script_args, training_args, model_args = parse_recipe((SFTScriptArguments, SFTConfig, ModelConfig), argv)
    train(script_args, training_args, model_args)


def train(script_args: SFTScriptArguments, training_args, model_args) -> None:
    from accelerate import PartialState
    from transformers import set_seed
    from trl import SFTTrainer

    from math_grpo import checkpoints, data, models, precision, tracking
    from math_grpo.callbacks import MetricsCallback, NonFiniteGuard, StopRequest

    state = PartialState()
    if not training_args.output_dir or training_args.output_dir == "trainer_output":
        training_args.output_dir = os.path.join("results", "checkpoints", time.strftime("sft-%Y%m%d-%H%M%S"))
    run_dir = training_args.output_dir
    set_seed(training_args.seed)
    use_wandb = tracking.take_over_wandb(training_args)

    tokenizer = models.load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    with state.local_main_process_first():
        dataset = data.load_training_set(script_args, with_completion=True, verbose=state.is_main_process)
    dataset = dataset.select_columns(["prompt", "completion"])
    model = models.load_model(model_args, gradient_checkpointing=training_args.gradient_checkpointing,
                              dtype=script_args.policy_dtype)
    precision.report(model, script_args, training_args, model_args, state)
    resume = checkpoints.resolve_resume_on_all_ranks(training_args.resume_from_checkpoint, run_dir, state)
    wandb_run = tracking.start_run(run_dir, state, use_wandb, script_args, training_args, model_args)
    guard = NonFiniteGuard()
    stopper = StopRequest(time_limit_s=script_args.time_limit_s, stop_file=script_args.stop_file)
    trainer = SFTTrainer(
        model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
        callbacks=[MetricsCallback(run_dir, wandb_run), checkpoints.CompleteCheckpointCallback(),
                   checkpoints.ThisRunsIntervals(), guard, stopper],
    )
    trainer.train(resume_from_checkpoint=resume)
    if guard.tripped:
        step, key, value = guard.tripped
        raise MathGRPOError(f"non-finite {key}={value} at step {step}: stopped; last usable checkpoint: "
                            f"{checkpoints.last_complete_checkpoint(run_dir, quarantine=False)}")
    trainer.save_model(run_dir)
    if state.is_main_process:
        tokenizer.save_pretrained(run_dir)
        why = f" ({stopper.reason})" if stopper.reason else ""
        print(f"[done] SFT: {trainer.state.global_step} steps{why}; model saved to {run_dir}", flush=True)
    if state.num_processes > 1:  # an undestroyed gloo/NCCL group can abort the process at exit
        state.destroy_process_group()
    if stopper.signum is not None:
        sys.exit(128 + stopper.signum)


if __name__ == "__main__":
    run_cli(main)
