"""Does GRPO learn on a GPU, in each mode, and how fast? Held-out accuracy against wall time.

    python benchmarks/gpu/learning_bench.py --out results/learning_bench [--stages prep,server,colocate,report]

The CPU demo's pipeline at a size where the GPU matters: synthetic word problems (math_grpo.synthetic), a
Qwen2-shaped model built from scratch (math_grpo.tiny, about 50M parameters, untied embeddings), SFT on the
worked solutions (recipes/sft.py), then GRPO from that checkpoint for the same wall time (`time_limit_s`) in
each mode, every run the project's own recipes/grpo.py under `accelerate launch` with
accelerate_configs/single_gpu.yaml (fp32 master weights, bf16 compute):

- `server_sync`: a vLLM server on the same GPU (filesystem weight sync, the logprob check after every sync);
- `server_async`: the same with `async_rollouts` (the next batch is sampled while this one trains);
- `colocate`: TRL's colocated vLLM engine in the trainer process;
- `bf16_weights`: colocate with `policy_dtype: bfloat16` (no fp32 masters), for contrast.

The two server runs share one server, started from the SFT checkpoint once SFT is done (vLLM's start-up memory
profiling fails when another process frees GPU memory meanwhile, seen on an H100); each run's first sync pushes
its own start weights anyway. (The 2026-12-06 run started the server from the init model and reloaded the SFT
weights into it: the same weights.) Every run evaluates greedy accuracy on
the 500 held-out problems at step 0 and every `--eval_steps`; metrics.jsonl carries `time/elapsed_s`.
The report stage writes OUT/learning.md (a table) and OUT/learning.png (accuracy against wall time).
About 10 minutes of one H100 (install excluded): SFT 45 s, a server start 70 s, 4 x (75 s + start-up and
evaluation). Offline machines: install trl, vllm and datasets from a folder of wheels first (`pip install
--no-index --find-links DIR ...`, as benchmarks/gpu/common.sh does with WHEELS=DIR). Stages can run in separate
calls: each skips what OUT already holds. Results of 2026-12-06: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
PY = sys.executable
MODEL_SHAPE = ["--hidden_size", "512", "--num_layers", "12", "--num_heads", "8", "--intermediate_size", "2048",
               "--vocab_size", "512", "--untied"]
MODES = {
    "server_sync": [],
    "server_async": ["--async_rollouts", "true"],
    "colocate": ["--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.25"],
    "bf16_weights": ["--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.25", "--policy_dtype",
                     "bfloat16"],
}


def log(msg: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], logfile: str, env: dict[str, str] | None = None) -> None:
    t0 = time.time()
    with open(logfile, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})})
    log(f"{os.path.basename(logfile)}: exit {proc.returncode} in {time.time() - t0:.0f} s")
    if proc.returncode:
        raise SystemExit(f"error: {os.path.basename(cmd[1] if cmd[1] != '-m' else cmd[2])} exited "
                         f"{proc.returncode}; see {logfile}")


def prep(args: argparse.Namespace) -> None:
    data, init, sft_dir = (os.path.join(args.out, d) for d in ("data", "init", "sft"))
    if not os.path.isfile(os.path.join(data, "test.jsonl")):
        run([PY, "-m", "math_grpo.synthetic", "--out", data, "--n_sft", "2000", "--n_train", "16000",
             "--n_test", "500", "--seed", "2"], os.path.join(args.out, "data.log"))
    if not os.path.isfile(os.path.join(init, "config.json")):
        run([PY, "-m", "math_grpo.tiny", "--data", data, "--out", init, "--seed", "2", *MODEL_SHAPE],
            os.path.join(args.out, "init.log"))
    if not os.path.isfile(os.path.join(sft_dir, "model.safetensors")):
        run([PY, os.path.join(REPO, "recipes/sft.py"), "--config", "recipes/tiny/sft.yaml",
             "--model_name_or_path", init, "--dataset_name", os.path.join(data, "sft.jsonl"), "--output_dir", sft_dir,
             "--use_cpu", "false", "--bf16", "true", "--learning_rate", str(args.sft_lr), "--warmup_steps", "50",
             "--max_steps", str(args.sft_steps), "--per_device_train_batch_size", "64", "--logging_steps", "50"],
            os.path.join(args.out, "sft.log"))


def done(args: argparse.Namespace, mode: str) -> bool:
    return os.path.isfile(os.path.join(args.out, "runs", mode, "bench_done"))


def grpo(args: argparse.Namespace, mode: str, server_url: str | None) -> None:
    """One GRPO run for `--seconds` of training-loop time (time_limit_s stops it cleanly, evaluating last)."""
    out = os.path.join(args.out, "runs", mode)
    if done(args, mode):
        return
    shutil.rmtree(out, ignore_errors=True)  # a run cut off by an earlier call starts again
    os.makedirs(os.path.dirname(out), exist_ok=True)
    data = os.path.join(args.out, "data")
    cmd = [PY, "-m", "accelerate.commands.launch", "--config_file", os.path.join(REPO, "accelerate_configs/single_gpu.yaml"),
           os.path.join(REPO, "recipes/grpo.py"), "--config", "recipes/tiny/grpo_server.yaml",
           "--model_name_or_path", os.path.join(args.out, "sft"), "--dataset_name", os.path.join(data, "train.jsonl"),
           "--output_dir", out, "--use_cpu", "false", "--bf16", "true", "--dtype", "bfloat16",
           "--learning_rate", str(args.lr), "--max_steps", "100000", "--time_limit_s", str(args.seconds),
           "--per_device_train_batch_size", "128", "--num_generations", "8", "--max_completion_length", "64",
           "--eval_steps", str(args.eval_steps), "--eval_max_tokens", "64", "--save_strategy", "no",
           "--report_to", "none", *(["--vllm_server_base_url", server_url] if server_url else []), *MODES[mode]]
    run(cmd, os.path.join(args.out, f"grpo_{mode}.log"))
    open(os.path.join(out, "bench_done"), "w").close()


def server_stage(args: argparse.Namespace) -> None:
    from math_grpo.vllm_server import ServerProcess, ServerSpec

    todo = [m for m in ("server_sync", "server_async") if not done(args, m)]
    if not todo:
        return
    os.makedirs(args.out, exist_ok=True)
    spec = ServerSpec(model=os.path.join(args.out, "sft"), port=args.port, dtype="bfloat16", gpus="0",
                      gpu_memory_utilization=0.25, max_model_len=512, weight_transfer=False)
    prep(args)  # SFT first: not beside the server's start-up
    server = ServerProcess(spec, os.path.join(args.out, "server.log"))
    t0 = time.time()
    try:
        server.start(health_timeout=900)
        log(f"server healthy after {time.time() - t0:.0f} s")
        for mode in todo:
            grpo(args, mode, spec.url)
    finally:
        server.stop()


def accuracy_rows(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return [r for r in rows if r.get("eval/accuracy") is not None]


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines, table = {}, []
    for mode in MODES:
        run_dir = os.path.join(args.out, "runs", mode)
        rows = accuracy_rows(run_dir)
        if not rows:
            continue
        metrics = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")) if line.strip()]
        syncs = [r["weight_sync/logprob_max_abs_diff"] for r in metrics if "weight_sync/logprob_max_abs_diff" in r]
        tol = [r["weight_sync/tolerance"] for r in metrics if "weight_sync/tolerance" in r]
        steps = max(r["step"] for r in metrics)
        xs = [r.get("time/elapsed_s", 0.0) for r in rows]
        ys = [r["eval/accuracy"] for r in rows]
        lines[mode] = (xs, ys)
        best = max(ys)
        table.append(dict(mode=mode, steps=steps, seconds=round(max(r.get("time/elapsed_s", 0) for r in metrics)),
                          start=ys[0], final=ys[-1], gain=round(ys[-1] - ys[0], 3), best=best,
                          sync_max=round(max(syncs), 4) if syncs else None, sync_tol=round(tol[-1], 4) if tol else None,
                          t_reach_colocate=None))
    colo = next((t for t in table if t["mode"] == "colocate"), None)
    if colo:
        for t in table:
            xs, ys = lines[t["mode"]]
            hit = [x for x, y in zip(xs, ys) if y >= colo["final"]]
            t["t_reach_colocate"] = round(hit[0]) if hit else None
    fig, ax = plt.subplots(figsize=(8, 5))
    for mode, (xs, ys) in lines.items():
        ax.plot(xs, ys, "o-", label=mode)
    ax.set_xlabel("GRPO wall time (s, training loop)")
    ax.set_ylabel("held-out greedy accuracy (500 problems)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "learning.png"), dpi=110)
    head = ["mode", "steps", "seconds", "start", "final", "gain", "best", "sync_max", "sync_tol", "t_reach_colocate"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(str(t[h]) for h in head) + " |" for t in table]
    text = "\n".join(md)
    with open(os.path.join(args.out, "learning.md"), "w") as f:
        f.write(text + "\n")
    print(text, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/learning_bench")
    p.add_argument("--stages", default="server,colocate,report")
    p.add_argument("--seconds", type=float, default=75.0, help="GRPO training-loop wall time per mode")
    p.add_argument("--lr", type=float, default=3e-5, help="GRPO learning rate")
    p.add_argument("--sft_lr", type=float, default=3e-4)
    p.add_argument("--sft_steps", type=int, default=600)
    p.add_argument("--eval_steps", type=int, default=10)
    p.add_argument("--port", type=int, default=8011)
    args = p.parse_args()
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    for stage in args.stages.split(","):
        t0 = time.time()
        log(f"stage {stage}")
        if stage == "prep":
            prep(args)
        elif stage == "server":
            server_stage(args)
        elif stage == "colocate":
            prep(args)
            grpo(args, "colocate", None)
            grpo(args, "bf16_weights", None)
        elif stage == "report":
            report(args)
        else:
            raise SystemExit(f"error: --stages: unknown stage {stage!r}")
        log(f"stage {stage} done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
