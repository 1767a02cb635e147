"""The embedded demo (`make demo`): RL with verifiable rewards, end to end on a laptop CPU.

The story it tells is the real one: SFT sees a small set of worked solutions; GRPO then trains on many more
problems that carry only their final answers. To show GRPO's gain is not just "more training", the demo
also continues SFT on the same worked solutions for GRPO's wall time (`sft_more`): it trains beside GRPO,
from the moment GRPO's stage starts until it ends, on the CPU time GRPO leaves free (GRPO's trainer and vLLM
server take turns, so together they keep about one core busy; the baseline runs at a lower priority, so it
takes what they leave instead of slowing them down). All three checkpoints are evaluated the
same way (greedy, held-out test split, same grader), and the last line reads

    accuracy: before=<sft> after=<grpo> sft_more=<sft_more>
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# SFT and evaluation run alone, so they get every core (2 threads: 0.48 s per SFT step against 0.75 s with 1,
# measured on the 2-core dev machine); GRPO keeps one thread per process (trainer, vLLM server, graders).
SOLO = {"OMP_NUM_THREADS": str(min(8, os.cpu_count() or 1))}
# Seconds per stage of a full `make demo` (server on) on the 2-core dev VM (AMD EPYC, idle; 2026-12-02 run,
# benchmarks/RESULTS.md): the remaining-time estimate scales them by this machine's pace so far. A slower 2-core
# VM of the same kind ran SFT and GRPO 1.5x slower than the dev VM did that day (2.2x slower than on its best).
STAGE_BUDGET_S = {"data + model": 12, "SFT": 273, "GRPO": 462, "evaluate": 29}


class Clock:
    """The demo's expected remaining time: each stage's measured cost on the reference machine, scaled by how
    fast this machine ran the stages done so far (a VM twice as slow is told twice the time)."""

    def __init__(self, budget_s: dict[str, float], enabled: bool = True):
        self.budget_s, self.enabled, self.done = budget_s, enabled, {}
        if enabled:
            print(f"[demo] {len(budget_s)} stages, about {sum(budget_s.values()) / 60:.0f} min on the 2-core "
                  "dev VM; the time left is printed after each stage", flush=True)

    def finished(self, stage: str, seconds: float) -> None:
        self.done[stage] = seconds
        if not self.enabled:
            return
        budget_done = sum(self.budget_s[s] for s in self.done)
        pace = sum(self.done.values()) / budget_done if budget_done >= 60 else 1.0  # short stages say little
        left = pace * sum(t for s, t in self.budget_s.items() if s not in self.done)
        print(f"[demo] {stage}: {seconds:.0f} s (this machine: {pace:.2f}x the reference's time); "
              f"about {left / 60:.1f} min left", flush=True)


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> float:
    """Run a stage with its output streaming through; return its wall time, fail loudly with the command."""
    print(f"\n=== {what} ===\n$ {shlex.join(cmd)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        print(f"error: demo stage '{what}' failed (exit {proc.returncode}): {shlex.join(cmd)}", file=sys.stderr)
        sys.exit(proc.returncode or 1)
    return time.monotonic() - start


def _accelerate(script: str, *args: str) -> list[str]:
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    return [accelerate if os.path.exists(accelerate) else "accelerate", "launch",
            "--config_file", "accelerate_configs/cpu.yaml", script, *args]


def evaluate(models: dict[str, str], test_file: str, out_json: str, max_tokens: int, clock: Clock,
             quick: bool = False) -> dict[str, float]:
    """Greedy accuracy of each checkpoint ({name: dir}) on the test split, in one process (one import of
    torch/transformers instead of one per checkpoint); recipes/evaluate.py prints them side by side."""
    cap = ["--eval_max_samples", "32"] if quick else []
    seconds = _run([sys.executable, "recipes/evaluate.py", "--model", *models.values(), "--backend", "transformers",
                    "--benchmarks", f"synthetic={test_file}", "--eval_max_tokens", str(max_tokens),
                    "--output_json", out_json, *cap], "evaluate " + ", ".join(models), env=SOLO)
    clock.finished("evaluate", seconds)
    with open(out_json, encoding="utf-8") as f:
        report = json.load(f)
    label_of = {path: label for label, path in report["models"].items()}
    return {name: float(report["results"][label_of[path]]["eval/accuracy"]) for name, path in models.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/demo", help="where data, models and runs go")
    p.add_argument("--server", choices=["on", "off"], default="on",
                   help="GRPO rollouts on a vLLM CPU server (the GPU shape) or in-process transformers")
    # Data/model seed 2: of the three measured (recipes/tiny/grpo.yaml), the one where GRPO's gain is clearest.
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--until", choices=["sft"], default=None,
                   help="stop after this stage (benchmarks/async_step_split.py builds its SFT start point so)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run of every stage with a few steps (for tests; the numbers mean nothing)")
    args = p.parse_args(argv)
    import yaml

    from math_grpo.processes import stop_process_group

    out = os.path.abspath(args.out)
    data_dir, init_dir = f"{out}/data", f"{out}/tiny-init"
    sft_dir, more_dir, grpo_dir = f"{out}/sft", f"{out}/sft_more", f"{out}/grpo"
    grpo_yaml = "recipes/tiny/grpo_server.yaml" if args.server == "on" else "recipes/tiny/grpo.yaml"
    with open(os.path.join(REPO, grpo_yaml), encoding="utf-8") as f:
        grpo_recipe = yaml.safe_load(f)
    max_tokens = int(grpo_recipe.get("max_completion_length", 64))
    t0 = time.monotonic()
    clock = Clock(STAGE_BUDGET_S, enabled=not args.quick)

    quick_sft = ["--max_steps", "10"] if args.quick else []
    quick_grpo = ["--max_steps", "3", "--eval_steps", "2", "--eval_max_samples", "16",
                  "--per_device_train_batch_size", "32"] if args.quick else []
    setup_s = _run([sys.executable, "-m", "math_grpo.synthetic", "--out", data_dir, "--seed", str(args.seed)],
                   "build synthetic data")
    # Untied input/output embeddings: measured to reach SFT's plateau in about half the steps of the tied model.
    # The template's fixed text as two tokens: prompts of ~30 tokens instead of 124, so an SFT step costs 0.4x
    # and a GRPO step 0.55x (benchmarks/RESULTS.md, issue 15 item 5); the text the model sees is unchanged.
    setup_s += _run([sys.executable, "-m", "math_grpo.tiny", "--data", data_dir, "--out", init_dir,
                     "--seed", str(args.seed), "--untied", "--template_tokens"], "build tiny model + tokenizer")
    clock.finished("data + model", setup_s)
    sft_s = _run(_accelerate("recipes/sft.py", "--config", "recipes/tiny/sft.yaml", "--model_name_or_path", init_dir,
                     "--dataset_name", f"{data_dir}/sft.jsonl", "--output_dir", sft_dir, "--seed", str(args.seed),
                     *quick_sft),
                 "SFT on the small set of worked solutions", env=SOLO)
    clock.finished("SFT", sft_s)
    if args.until == "sft":
        return

    grpo_args = ["--model_name_or_path", sft_dir, "--dataset_name", f"{data_dir}/train.jsonl",
                 "--output_dir", grpo_dir, "--benchmarks", f"synthetic={data_dir}/test.jsonl",
                 "--seed", str(args.seed), *quick_grpo]
    # The SFT baseline runs beside GRPO and stops (cleanly, with its model saved) when GRPO's stage ends.
    stop_file = f"{out}/sft_more.stop"
    if os.path.exists(stop_file):
        os.remove(stop_file)
    more_cmd = _accelerate("recipes/sft.py", "--config", "recipes/tiny/sft.yaml", "--model_name_or_path", sft_dir,
                           "--dataset_name", f"{data_dir}/sft.jsonl", "--output_dir", more_dir,
                           "--stop_file", stop_file, "--max_steps", "1000000",
                           "--lr_scheduler_type", "constant", "--save_strategy", "no", "--seed", str(args.seed + 1))
    more_log = f"{out}/sft_more.log"
    print(f"\n=== SFT continued on the same worked solutions, beside GRPO for its wall time (log: {more_log}) ===\n"
          f"$ {shlex.join(more_cmd)}", flush=True)
    more_start = time.monotonic()
    with open(more_log, "w", encoding="utf-8") as log:
        # GRPO's two processes keep about one core busy; the baseline gets the rest (at least one thread).
        more = subprocess.Popen(more_cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) - 2))},
                                preexec_fn=lambda: os.nice(10))
    try:
        if args.server == "on":
            grpo_time = _run([sys.executable, "-m", "math_grpo.launch", grpo_yaml, *grpo_args],
                             "GRPO (rollouts on a vLLM CPU server)")
        else:
            grpo_time = _run(_accelerate("recipes/grpo.py", "--config", grpo_yaml, *grpo_args), "GRPO")
    except BaseException:
        stop_process_group(more.pid, grace_s=5.0)
        more.wait()
        raise
    open(stop_file, "w").close()
    if more.wait() != 0:
        print(f"error: demo stage 'SFT continued' failed (exit {more.returncode}); see {more_log}", file=sys.stderr)
        sys.exit(more.returncode or 1)
    more_time = time.monotonic() - more_start
    os.remove(stop_file)
    train_time = _train_runtime(grpo_dir) or grpo_time
    more_steps = _last_step(more_dir)
    clock.finished("GRPO", grpo_time)
    print(f"[demo] GRPO stage {grpo_time:.0f} s (training {train_time:.0f} s); "
          f"SFT continued beside it: {more_steps} steps in {more_time:.0f} s", flush=True)
    acc = evaluate({"before": sft_dir, "after": f"{grpo_dir}/final", "sft_more": more_dir}, f"{data_dir}/test.jsonl",
                   f"{out}/eval.json", max_tokens, clock, args.quick)
    before, after, sft_more = acc["before"], acc["after"], acc["sft_more"]

    from math_grpo.plotting import plot_run

    png = plot_run(grpo_dir, title="tiny GRPO demo",
                   extra_lines={f"SFT before ({before:.2f})": before, f"SFT continued ({sft_more:.2f})": sft_more})
    summary = {"before": before, "after": after, "sft_more": sft_more, "grpo_stage_s": grpo_time,
               "grpo_train_s": train_time, "sft_more_s": more_time, "sft_more_steps": more_steps,
               "total_s": time.monotonic() - t0}
    with open(f"{out}/summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    print(f"\nrun dir: {grpo_dir}\nplot: {png}\ntotal time: {summary['total_s'] / 60:.1f} min")
    print(f"accuracy: before={before:.3f} after={after:.3f} sft_more={sft_more:.3f}", flush=True)


def _last_step(run_dir: str) -> int:
    from math_grpo.plotting import read_metrics

    return max((int(row["step"]) for row in read_metrics(os.path.join(run_dir, "metrics.jsonl"))
                if isinstance(row.get("step"), int | float)), default=0)


def _train_runtime(run_dir: str) -> float | None:
    from math_grpo.plotting import read_metrics

    for row in reversed(read_metrics(os.path.join(run_dir, "metrics.jsonl"))):
        if isinstance(row.get("train/runtime"), int | float):
            return float(row["train/runtime"])
    return None


if __name__ == "__main__":
    main()
