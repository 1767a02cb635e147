"""Where a GRPO step's time goes, for the tiny recipe in server mode on CPU.

    python benchmarks/cpu_step_split.py [--steps 12] [--model DIR --data DIR] [--server_url URL] [--field value ...]

Runs recipes/tiny/grpo_server.yaml in-process (one training process, a CPU vLLM server started for it unless
--server_url is given) and splits each step's wall time into
  generation  the rollout request to the server (vLLM.generate),
  reward      grading the completions (the r1_zero reward in the worker pool),
  sync        writing safetensors + /collective_rpc reload + prefix-cache reset,
  check       the logprob check after each sync (server prompt_logprobs + a trainer forward),
  evaluation  what evaluation blocked the training loop (forced sync + waits; its requests overlap training),
  training    the rest: old-policy logprobs, forward/backward, optimizer step,
and prints the table. Without --model it builds the synthetic data and a randomly initialised tiny model
(completions then run to max_completion_length, the slow case); pass the demo's SFT checkpoint for the
realistic lengths. Any other `--field value` overrides the recipe (e.g. `--vllm_importance_sampling_correction
true` to time TRL's re-scoring of every rollout).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PARTS = ("generation", "reward", "sync", "check", "evaluation", "training")


class Timer:
    """Seconds per part for the current step; nested parts count once (an evaluation's forced sync is sync)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self.step_start = 0.0
        self._stack: list[float] = []  # time spent in nested timed parts, per open frame

    def wrap(self, obj, name: str, part: str):
        fn = getattr(obj, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                nested = self._stack.pop()
                self.current[part] += elapsed - nested
                if self._stack:
                    self._stack[-1] += elapsed

        setattr(obj, name, timed)
        return timed


def _assets(args: argparse.Namespace) -> tuple[str, str]:
    if args.model and args.data:
        return args.model, args.data
    from math_grpo.synthetic import write_synthetic_dataset
    from math_grpo.tiny import build_tiny_model, corpus_from_dir

    root = tempfile.mkdtemp(prefix="cpu-step-split-")
    data = os.path.join(root, "data")
    write_synthetic_dataset(data, n_sft=64, n_train=512, n_test=64, seed=0)
    model = os.path.join(root, "model")
    build_tiny_model(model, corpus_from_dir(data), seed=0)
    return model, data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=os.path.join(REPO, "recipes", "tiny", "grpo_server.yaml"))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--eval_steps", type=int, default=4)
    p.add_argument("--eval_max_samples", type=int, default=64)
    p.add_argument("--model", default=None)
    p.add_argument("--data", default=None, help="folder with train.jsonl and test.jsonl")
    p.add_argument("--server_url", default=None)
    p.add_argument("--port", type=int, default=8731)
    args, overrides = p.parse_known_args(argv)

    from transformers import TrainerCallback
    from trl import GRPOConfig, ModelConfig

    from math_grpo import models
    from math_grpo.cli import parse_recipe
    from math_grpo.configs import GRPOScriptArguments
    from math_grpo.data import format_prompts, load_problems
    from math_grpo.eval_callback import add_eval_callback
    from math_grpo.trl_adapter import MathGRPOTrainer
    from math_grpo.vllm_server import ServerProcess, ServerSpec
    from rewards.registry import get_reward_funcs

    model_dir, data_dir = _assets(args)
    out = tempfile.mkdtemp(prefix="cpu-step-split-run-")
    server = None
    url = args.server_url
    if url is None:
        server = ServerProcess(ServerSpec(model=model_dir, port=args.port, dtype="float32", max_model_len=512),
                               os.path.join(out, "server.log")).start(600)
        url = server.url
    try:
        script_args, training_args, model_args = parse_recipe(
            (GRPOScriptArguments, GRPOConfig, ModelConfig),
            ["--config", args.recipe, "--model_name_or_path", model_dir,
             "--dataset_name", os.path.join(data_dir, "train.jsonl"), "--output_dir", out,
             "--max_steps", str(args.steps), "--eval_steps", str(args.eval_steps),
             "--eval_max_samples", str(args.eval_max_samples), "--vllm_server_base_url", url,
             "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", *overrides])
        tokenizer = models.load_tokenizer(model_dir)
        dataset, _ = load_problems(script_args.dataset_name, verbose=False)
        dataset = format_prompts(dataset, script_args.prompt_template)
        reward_funcs = get_reward_funcs(script_args.reward_funcs, mode=script_args.grader_mode,
                                        timeout=script_args.grader_timeout)
        model = models.load_model(model_args)
        trainer = MathGRPOTrainer(model=model, reward_funcs=reward_funcs, args=training_args, train_dataset=dataset,
                                  processing_class=tokenizer, sync_args=script_args)
        evaluator = add_eval_callback(trainer, script_args, out, tokenizer)

        timer = Timer()
        vg = trainer.vllm_generation
        timer.wrap(vg, "generate", "generation")
        timer.wrap(trainer, "_calculate_rewards", "reward")
        checker = vg.checker
        timer.wrap(checker, "check", "check")
        timer.wrap(vg, "_filesystem_sync", "sync")
        timer.wrap(evaluator, "_run", "evaluation")
        waiter = timer.wrap(evaluator, "wait", "evaluation")
        vg.before_sync[:] = [waiter if h == evaluator.wait.__wrapped__ else h for h in vg.before_sync]

        class StepClock(TrainerCallback):
            def on_step_begin(self, a, state, control, **kw):
                timer.step_start = time.perf_counter()
                timer.current = defaultdict(float)  # the step-0 evaluation is reported on its own

        # The step ends after the evaluation callback's on_step_end (it may block there): added last.
        class StepEnd(TrainerCallback):
            def on_step_end(self, a, state, control, **kw):
                total = time.perf_counter() - timer.step_start
                row = dict(timer.current)
                row["total"] = total
                row["training"] = total - sum(row.get(k, 0.0) for k in PARTS if k != "training")
                timer.steps.append(row)
                timer.current = defaultdict(float)

        trainer.add_callback(StepClock())
        trainer.add_callback(StepEnd())
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    finally:
        if server is not None:
            server.stop()

    steps = timer.steps[1:] if len(timer.steps) > 2 else timer.steps  # the first step warms caches up
    n = len(steps)
    mean = {k: sum(s.get(k, 0.0) for s in steps) / n for k in (*PARTS, "total")}
    print(f"\nGRPO step time split: {args.recipe} on CPU ({os.cpu_count()} cores), server mode, filesystem sync")
    print(f"{training_args.per_device_train_batch_size} completions/step "
          f"({training_args.num_generations} per prompt, max {training_args.max_completion_length} tokens), "
          f"eval every {args.eval_steps} steps on {args.eval_max_samples} problems; mean over steps 2..{len(timer.steps)}")
    print(f"{'part':<12}{'s/step':>10}{'share':>9}")
    print("-" * 31)
    for k in PARTS:
        print(f"{k:<12}{mean[k]:>10.3f}{100 * mean[k] / mean['total']:>8.1f}%")
    print("-" * 31)
    print(f"{'total':<12}{mean['total']:>10.3f}{100.0:>8.1f}%")
    if overrides:
        print(f"recipe overrides: {' '.join(overrides)}")
    evals = evaluator.results
    if evals:
        print(f"\nevaluation: {len(evals)} runs, {evaluator.eval_s / len(evals):.2f} s of requests each (overlapped "
              f"with training), {evaluator.blocked_s:.2f} s blocking in all (incl. the step-0 evaluation)")
    print(f"wall time {wall:.1f} s for {len(timer.steps)} steps; run dir {out}")


if __name__ == "__main__":
    main()
