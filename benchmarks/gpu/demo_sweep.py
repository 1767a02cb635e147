"""Scratch sweep of the CPU demo's pipeline on a GPU machine: which cheaper shape keeps the story.

    python benchmarks/gpu/demo_sweep.py --out OUT [--jobs 14] [--plan NAME]

The demo (math_grpo.demo) must fit 20 minutes on a slow 2-core VM, so its stages have to shrink; whether a
shorter SFT, fewer GRPO steps or rollouts, or shorter prompts still give GRPO a gain of 0.15 above SFT
continued is a question of many seeds, which a GPU answers in minutes (transformers rollouts, the in-process
path of recipes/tiny/grpo.yaml; earlier GPU scratch runs of this recipe matched the CPU demo's numbers).
Every stage runs the project's own scripts (math_grpo.synthetic, math_grpo.tiny, recipes/sft.py,
recipes/grpo.py) on the GPU; SFT keeps a checkpoint every 100 steps, so "SFT continued" for M more steps is
the checkpoint M steps later. Results go to OUT/results.jsonl as each job ends (a cut-off call keeps them).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
MODEL_FLAGS = {"long": ["--untied"], "short": ["--untied", "--template_tokens"],
               "L2": ["--untied", "--num_layers", "2"]}
GRPO_CFGS = {"16x8": [], "16x4": ["--per_device_train_batch_size", "64", "--num_generations", "4"],
             "16x4lr2": ["--per_device_train_batch_size", "64", "--num_generations", "4", "--learning_rate", "2e-4"],
             "16x8lr2": ["--learning_rate", "2e-4"], "16x8lr1.5": ["--learning_rate", "1.5e-4"],
             "16x8ds": ["--dynamic_sampling", "true"]}
PLANS = {
    "smoke": dict(prep=[("short", 0)], grpo=[("short", 0, 100, "16x4", 0)]),
    # (model variant, data seed) -> SFT; then GRPO (variant, data seed, SFT step, cfg, grpo seed)
    "a": dict(prep=[("long", 0), ("long", 1), ("short", 0), ("short", 1), ("L2", 0)],
              grpo=[(v, d, s, c, g) for v, d in [("long", 0), ("long", 1)] for s in (300, 500)
                    for c in ("16x8", "16x4", "16x4lr2") for g in (0, 1)]
              + [("short", d, s, "16x8", g) for d in (0, 1) for s in (300, 500) for g in (0, 1)]
              + [("L2", 0, s, "16x8", g) for s in (300, 500) for g in (0, 1)]
              + [("long", 0, 700, "16x8", g) for g in (0, 1)]),
    "b": dict(prep=[("short", 0), ("short", 1), ("short", 2)],
              grpo=[("short", d, s, "16x8", g) for d in (0, 1, 2) for s in (500, 700) for g in (0, 1)]
              + [("short", 0, 700, "16x4", g) for g in (0, 1)] + [("short", 0, s, "16x8", g) for s in (600, 900)
                                                                   for g in (0, 1)]),
    "c": dict(prep=[("short", 0), ("short", 2)],
              grpo=[("short", d, 700, c, g) for c in ("16x8", "16x8lr2", "16x8lr1.5", "16x8ds") for d in (0, 2)
                    for g in (0, 1)]),
}


def log(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], logfile: str) -> None:
    with open(logfile, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode:
        raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd)} (log {logfile})")


def evaluate_dir(model_dir: str, test_file: str) -> float:
    """Greedy accuracy on the test split, on the GPU (the demo's evaluation, transformers generator)."""
    import torch
    from transformers import AutoModelForCausalLM

    from math_grpo.benchmarks import load_benchmarks
    from math_grpo.evaluation import SamplingSettings, TransformersGenerator, evaluate
    from math_grpo.models import load_tokenizer

    lm = AutoModelForCausalLM.from_pretrained(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    benches = load_benchmarks([f"synthetic={test_file}"])
    sampling = SamplingSettings(temperature=0.0, max_tokens=40, n=1)
    result = evaluate(TransformersGenerator(lm, load_tokenizer(model_dir), 128), benches, sampling)
    return float(result.metrics["eval/accuracy"])


def prep(out: str, variant: str, ds: int, sft_steps: int) -> dict:
    base = f"{out}/{variant}-d{ds}"
    os.makedirs(base, exist_ok=True)
    t0 = time.time()
    run([PY, "-m", "math_grpo.synthetic", "--out", f"{base}/data", "--seed", str(ds)], f"{base}/data.log")
    run([PY, "-m", "math_grpo.tiny", "--data", f"{base}/data", "--out", f"{base}/init", "--seed", str(ds),
         *MODEL_FLAGS[variant]], f"{base}/tiny.log")
    run([PY, "recipes/sft.py", "--config", "recipes/tiny/sft.yaml", "--use_cpu", "false",
         "--model_name_or_path", f"{base}/init", "--dataset_name", f"{base}/data/sft.jsonl",
         "--output_dir", f"{base}/sft", "--seed", str(ds), "--max_steps", str(sft_steps),
         "--save_strategy", "steps", "--save_steps", "100", "--save_only_model", "true"], f"{base}/sft.log")
    accs = {}
    for step in range(100, sft_steps + 1, 100):
        accs[step] = evaluate_dir(f"{base}/sft/checkpoint-{step}", f"{base}/data/test.jsonl")
    return {"kind": "sft", "variant": variant, "ds": ds, "acc": accs, "seconds": time.time() - t0}


def grpo(out: str, variant: str, ds: int, sft_step: int, cfg: str, seed: int, steps: int,
         eval_steps: int) -> dict:
    base = f"{out}/{variant}-d{ds}"
    run_dir = f"{base}/grpo-s{sft_step}-{cfg}-g{seed}"
    t0 = time.time()
    run([PY, "recipes/grpo.py", "--config", "recipes/tiny/grpo.yaml", "--use_cpu", "false",
         "--model_name_or_path", f"{base}/sft/checkpoint-{sft_step}", "--dataset_name", f"{base}/data/train.jsonl",
         "--benchmarks", f"synthetic={base}/data/test.jsonl", "--output_dir", run_dir, "--seed", str(seed),
         "--max_steps", str(steps), "--eval_steps", str(eval_steps), "--save_steps", "100000", "--report_to", "none",
         *GRPO_CFGS[cfg]], f"{run_dir}.log")
    accs = {}
    with open(f"{run_dir}/metrics.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if "eval/accuracy" in row:
                accs[int(row["step"])] = float(row["eval/accuracy"])
    return {"kind": "grpo", "variant": variant, "ds": ds, "sft_step": sft_step, "cfg": cfg, "seed": seed,
            "acc": accs, "seconds": time.time() - t0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--plan", default="a", choices=sorted(PLANS))
    p.add_argument("--jobs", type=int, default=14)
    p.add_argument("--sft_steps", type=int, default=1300)
    p.add_argument("--grpo_steps", type=int, default=100)
    p.add_argument("--eval_steps", type=int, default=10)
    args = p.parse_args()
    sys.path.insert(0, REPO)
    os.makedirs(args.out, exist_ok=True)
    plan = PLANS[args.plan]
    results = open(f"{args.out}/results.jsonl", "a")
    with cf.ProcessPoolExecutor(args.jobs) as pool:
        preps = {pool.submit(prep, args.out, v, d, args.sft_steps): (v, d) for v, d in plan["prep"]}
        pending = []
        for fut in cf.as_completed(preps):
            v, d = preps[fut]
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - a scratch sweep keeps going
                log(f"prep {v} d{d} failed: {exc}")
                continue
            results.write(json.dumps(res) + "\n")
            results.flush()
            log(f"prep {v} d{d}: {res['seconds']:.0f} s, SFT acc {res['acc']}")
            pending += [pool.submit(grpo, args.out, *job, args.grpo_steps, args.eval_steps) for job in plan["grpo"]
                        if (job[0], job[1]) == (v, d)]
        for fut in cf.as_completed(pending):
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001
                log(f"grpo failed: {exc}")
                continue
            results.write(json.dumps(res) + "\n")
            results.flush()
            log(f"grpo {res['variant']} d{res['ds']} sft{res['sft_step']} {res['cfg']} g{res['seed']}: "
                f"{res['seconds']:.0f} s {res['acc']}")


if __name__ == "__main__":
    main()
