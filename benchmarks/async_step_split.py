"""Synchronous vs asynchronous rollouts (`async_rollouts`) in server mode on CPU, in one run.

    python benchmarks/async_step_split.py [--steps 14] [--model results/demo/sft --data results/demo/data]

Starts one CPU vLLM server and trains recipes/tiny/grpo_server.yaml from the demo's SFT checkpoint twice for
the same steps, in one process: the overlap off, then on (same seed, so the same prompts per step). The server
and the trainer get one thread each (they share the two cores). Each step's wall time splits into
  generation  time the training loop spent in the rollout request (with the overlap: taking the prefetched
              batch and posting the next; the request itself runs beside training),
  waiting     time the training loop waited for the prefetched batch before the sync,
  sync        safetensors write + reload + prefix-cache reset, and the logprob check after it,
  training    the rest (reward, advantages, forward/backward, optimizer step, logging).
It prints both tables and ends with exactly one line

    step_seconds: sync=<s> async=<s> ratio=<async/sync> bound=<best possible ratio from the sync split>

where `bound` hides all of the sync run's generation behind its training: (max(generation, training) + sync) /
step. Without the SFT checkpoint (`make demo` writes results/demo/sft) it is built first, as the demo does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["OMP_NUM_THREADS"] = "1"  # the server inherits it: one thread each for trainer and server

from cpu_step_split import Timer  # noqa: E402

PARTS = ("generation", "waiting", "sync", "training")


def ensure_sft(model: str, data: str) -> None:
    """Build the demo's synthetic data and SFT checkpoint if they are not there (about 6 min on 2 cores)."""
    if os.path.isfile(os.path.join(model, "config.json")) and os.path.isfile(os.path.join(data, "train.jsonl")):
        return
    out = os.path.dirname(os.path.abspath(model))
    print(f"[bench] no SFT checkpoint at {model}: building it as `make demo` does", flush=True)
    subprocess.run([sys.executable, "-m", "math_grpo.demo", "--out", out, "--until", "sft"], cwd=REPO, check=True)


def run_once(args: argparse.Namespace, url: str, overlap: bool) -> list[dict[str, float]]:
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, ModelConfig

    from math_grpo import models
    from math_grpo.cli import parse_recipe
    from math_grpo.configs import GRPOScriptArguments
    from math_grpo.data import format_prompts, load_problems
    from math_grpo.trl_adapter import MathGRPOTrainer
    from rewards.registry import get_reward_funcs

    torch.set_num_threads(1)
    out = tempfile.mkdtemp(prefix=f"async-bench-{'on' if overlap else 'off'}-")
    script_args, training_args, model_args = parse_recipe(
        (GRPOScriptArguments, GRPOConfig, ModelConfig),
        ["--config", args.recipe, "--model_name_or_path", args.model,
         "--dataset_name", os.path.join(args.data, "train.jsonl"), "--output_dir", out,
         "--max_steps", str(args.steps), "--vllm_server_base_url", url, "--report_to", "none",
         "--save_strategy", "no", "--disable_tqdm", "true", "--async_rollouts", str(overlap).lower(), *args.overrides])
    tokenizer = models.load_tokenizer(args.model)
    dataset, _ = load_problems(script_args.dataset_name, verbose=False)
    dataset = format_prompts(dataset, script_args.prompt_template)
    reward_funcs = get_reward_funcs(script_args.reward_funcs, mode=script_args.grader_mode,
                                    timeout=script_args.grader_timeout)
    trainer = MathGRPOTrainer(model=models.load_model(model_args), reward_funcs=reward_funcs, args=training_args,
                              train_dataset=dataset, processing_class=tokenizer, sync_args=script_args)
    timer = Timer()
    vg = trainer.vllm_generation
    timer.wrap(vg, "generate", "generation")
    timer.wrap(vg, "sync_weights", "sync")
    if vg.prefetcher is not None:
        waiter = timer.wrap(vg.prefetcher, "wait", "waiting")
        vg.before_sync[:] = [waiter if getattr(h, "__func__", None) is type(vg.prefetcher).wait else h
                             for h in vg.before_sync]

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            timer.step_start = time.perf_counter()
            timer.current = defaultdict(float)

        def on_step_end(self, a, state, control, **kw):
            row = dict(timer.current)
            row["total"] = time.perf_counter() - timer.step_start
            row["training"] = row["total"] - sum(row.get(k, 0.0) for k in PARTS if k != "training")
            timer.steps.append(row)

    trainer.add_callback(Clock())
    trainer.train()
    if vg.prefetcher is not None:
        for row, rec in zip(timer.steps, vg.prefetcher.history[-len(timer.steps):]):
            row["server"] = rec.get("async/request_seconds", 0.0)
            row["staleness"] = rec["async/staleness"]
    return timer.steps


def table(name: str, steps: list[dict[str, float]], skip: int) -> dict[str, float]:
    print(f"\n{name}: per step (s)")
    cols = (*PARTS, "total", "server", "staleness")
    print(f"{'step':>5}" + "".join(f"{c:>12}" for c in cols))
    for i, row in enumerate(steps, 1):
        mark = " " if i > skip else "*"
        print(f"{i:>4}{mark}" + "".join(f"{row.get(c, 0.0):>12.3f}" for c in cols))
    kept = steps[skip:]
    mean = {c: sum(r.get(c, 0.0) for r in kept) / len(kept) for c in cols}
    print(f"{'mean':>5}" + "".join(f"{mean[c]:>12.3f}" for c in cols) + f"   (steps {skip + 1}..{len(steps)})")
    return mean


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=os.path.join(REPO, "recipes", "tiny", "grpo_server.yaml"))
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--skip", type=int, default=2, help="warm-up steps left out of the means (marked *)")
    p.add_argument("--model", default=os.path.join(REPO, "results", "demo", "sft"))
    p.add_argument("--data", default=os.path.join(REPO, "results", "demo", "data"))
    p.add_argument("--port", type=int, default=8732)
    p.add_argument("--server_url", default=None, help="use this running server (serving --model) instead")
    args, args.overrides = p.parse_known_args(argv)
    ensure_sft(args.model, args.data)

    from math_grpo.vllm_server import ServerProcess, ServerSpec

    server, url = None, args.server_url
    if url is None:
        log = os.path.join(tempfile.mkdtemp(prefix="async-bench-server-"), "server.log")
        server = ServerProcess(ServerSpec(model=args.model, port=args.port, dtype="float32", max_model_len=512), log)
        url = server.start(600).url
    try:
        sync_steps = run_once(args, url, overlap=False)
        async_steps = run_once(args, url, overlap=True)
    finally:
        if server is not None:
            server.stop()
    print(f"\n{args.recipe} from {args.model}: {args.steps} steps each, server mode, filesystem sync, "
          f"{os.cpu_count()} cores, one thread for the trainer and one for the server")
    if args.overrides:
        print(f"recipe overrides: {' '.join(args.overrides)}")
    s = table("overlap off (async_rollouts: false)", sync_steps, args.skip)
    a = table("overlap on (async_rollouts: true, max_staleness 1)", async_steps, args.skip)
    best = max(s["generation"], s["training"]) + s["sync"] + s["waiting"]
    print(f"step_seconds: sync={s['total']:.3f} async={a['total']:.3f} ratio={a['total'] / s['total']:.3f} "
          f"bound={best / s['total']:.3f}")


if __name__ == "__main__":
    main()
