"""Dynamic sampling (`dynamic_sampling`) off vs on for the same wall time, from the demo's SFT checkpoint.

    python benchmarks/dynamic_sampling_bench.py [--seconds 360] [--max_rounds 3] [recipe overrides ...]
    python benchmarks/dynamic_sampling_bench.py --smoke --model DIR --data DIR --server_url URL   (the tests')

Starts one CPU vLLM server and trains recipes/tiny/grpo_server.yaml on the demo data twice, in one process, each
for `--seconds` of training (StopRequest's time limit, counted from the start of `train()`): dynamic sampling
off, then on (same seed, so the same first prompts). Each final model is evaluated as the demo evaluates
(greedy, the 400 held-out test problems, transformers backend). Prints steps, rollouts and the dynamic-sampling
metrics of each run, and ends with exactly one line

    dynamic_sampling: off=<acc> on=<acc> seconds=<budget>

Without the SFT checkpoint (`make demo` writes results/demo/sft) it is built first, as the demo does.
`--smoke` (tests/test_bench_smoke.py) trains a few seconds each and evaluates 32 problems: the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["OMP_NUM_THREADS"] = "1"  # the server inherits it: one thread each for trainer and server


from async_step_split import ensure_sft  # noqa: E402  (the demo's SFT checkpoint, built if missing)


def train_once(args: argparse.Namespace, url: str, dynamic: bool) -> dict:
    import torch
    from trl import GRPOConfig, ModelConfig

    from math_grpo import data, models
    from math_grpo.callbacks import StopRequest
    from math_grpo.cli import parse_recipe
    from math_grpo.configs import GRPOScriptArguments
    from math_grpo.trl_adapter import MathGRPOTrainer
    from rewards.registry import get_reward_funcs

    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix=f"dynamic-bench-{'on' if dynamic else 'off'}-")
    script_args, training_args, model_args = parse_recipe(
        (GRPOScriptArguments, GRPOConfig, ModelConfig),
        ["--config", args.recipe, "--model_name_or_path", args.model,
         "--dataset_name", os.path.join(args.data, "train.jsonl"), "--output_dir", out,
         "--max_steps", "100000", "--vllm_server_base_url", url, "--report_to", "none",
         "--save_strategy", "no", "--disable_tqdm", "true", "--dynamic_sampling", str(dynamic).lower(),
         "--dynamic_sampling_max_rounds", str(args.max_rounds), *args.overrides])
    tokenizer = models.load_tokenizer(args.model)
    dataset = data.load_training_set(script_args, verbose=False)
    reward_funcs = get_reward_funcs(script_args.reward_funcs, mode=script_args.grader_mode,
                                    timeout=script_args.grader_timeout)
    trainer = MathGRPOTrainer(model=models.load_model(model_args), reward_funcs=reward_funcs, args=training_args,
                              train_dataset=dataset, processing_class=tokenizer, sync_args=script_args)
    trainer.add_callback(StopRequest(time_limit_s=args.seconds))  # the clock starts here, with training
    t0 = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - t0
    final = os.path.join(out, "final")
    trainer.save_model(final)
    history = trainer._dynamic.history if trainer._dynamic is not None else []
    steps = trainer.state.global_step
    groups = training_args.per_device_train_batch_size // training_args.num_generations
    rounds = sum(h["dynamic_sampling/rounds"] for h in history) if history else steps
    n = len(history)
    return {"model": final, "steps": steps, "seconds": seconds,
            "rollouts": int(rounds * groups * trainer.num_generations), "mean_rounds": rounds / max(1, steps),
            "dropped": sum(h["dynamic_sampling/dropped_fraction"] for h in history) / n if n else None,
            "filled": sum(h["dynamic_sampling/batch_filled"] for h in history) / n if n else None,
            "zero_std": _mean_log(trainer, "frac_reward_zero_std")}


def _mean_log(trainer, key: str) -> float | None:
    values = [row[key] for row in trainer.state.log_history if key in row]
    return sum(values) / len(values) if values else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=os.path.join(REPO, "recipes", "tiny", "grpo_server.yaml"))
    p.add_argument("--seconds", type=float, default=360.0, help="training wall time of each run")
    p.add_argument("--max_rounds", type=int, default=3, help="dynamic_sampling_max_rounds of the 'on' run")
    p.add_argument("--model", default=os.path.join(REPO, "results", "demo", "sft"))
    p.add_argument("--data", default=os.path.join(REPO, "results", "demo", "data"))
    p.add_argument("--port", type=int, default=8733)
    p.add_argument("--on_first", action="store_true", help="train the 'on' run first (to see the machine's drift)")
    p.add_argument("--server_url", default=None, help="use this running server (serving --model) instead")
    p.add_argument("--smoke", action="store_true", help="a few seconds of training, 32 problems evaluated (tests)")
    args, args.overrides = p.parse_known_args(argv)
    if args.smoke:
        args.seconds = min(args.seconds, 5.0)
    ensure_sft(args.model, args.data)

    from math_grpo.demo import Clock, evaluate
    from math_grpo.vllm_server import ServerProcess, ServerSpec

    server, url = None, args.server_url
    if url is None:
        log = os.path.join(tempfile.mkdtemp(prefix="dynamic-bench-server-"), "server.log")
        server = ServerProcess(ServerSpec(model=args.model, port=args.port, dtype="float32", max_model_len=512), log)
        url = server.start(600).url
    try:
        order = (True, False) if args.on_first else (False, True)
        runs = {("on" if dynamic else "off"): train_once(args, url, dynamic=dynamic) for dynamic in order}
    finally:
        if server is not None:
            server.stop()
    # Both final models in one evaluation process (math_grpo.demo.evaluate: greedy, the test split).
    out_json = os.path.join(tempfile.mkdtemp(prefix="dynamic-bench-eval-"), "eval.json")
    accuracy = evaluate({name: r["model"] for name, r in runs.items()}, os.path.join(args.data, "test.jsonl"),
                        out_json, 40, Clock({}, enabled=False), quick=args.smoke)
    for name, r in runs.items():
        r["accuracy"] = accuracy[name]

    print(f"\n{args.recipe} from {args.model}: {args.seconds:.0f} s of training each, server mode, "
          f"{os.cpu_count()} cores, one thread for the trainer and one for the server; "
          f"dynamic_sampling_max_rounds {args.max_rounds}" + (f"; overrides: {' '.join(args.overrides)}"
                                                              if args.overrides else ""))
    print(f"{'run':>4} {'steps':>6} {'train s':>8} {'rollouts':>9} {'rounds/step':>12} {'dropped':>8} "
          f"{'filled':>7} {'zero-std':>9} {'accuracy':>9}")
    for name, r in runs.items():
        zero, dropped, filled = (f"{r[k]:.3f}" if r[k] is not None else "-" for k in ("zero_std", "dropped", "filled"))
        print(f"{name:>4} {r['steps']:>6} {r['seconds']:>8.0f} {r['rollouts']:>9} {r['mean_rounds']:>12.2f} "
              f"{dropped:>8} {filled:>7} {zero:>9} {r['accuracy']:>9.3f}")
    print(f"dynamic_sampling: off={runs['off']['accuracy']:.3f} on={runs['on']['accuracy']:.3f} "
          f"seconds={args.seconds:.0f}", flush=True)


if __name__ == "__main__":
    main()
