"""Every benchmark a user is told to run (README, docs, Makefile), in a smoke form of a few steps: a change that
breaks one fails the suite instead of the first person who runs it. The numbers mean nothing here.

`make bench-rewards` -> benchmarks/grader_bench.py; `make bench-cpu` -> benchmarks/cpu_step_split.py;
`make bench-async` -> benchmarks/async_step_split.py; `make bench-dynamic` -> benchmarks/dynamic_sampling_bench.py;
benchmarks/gpu: the timing hook (bench_timing.py through hook/sitecustomize.py) and summarize.py, the parts that
run without a GPU; recipes/evaluate.py starting its own server (the README's GPU quickstart), whose other modes
are run by tests/test_benchmarks.py (--dry_run) and tests/test_server_eval.py (a running server, the
transformers backend). The benchmarks that need a server use the session's shared one (tests/conftest.py),
passing its URL; only the evaluate.py test starts one, since that is the mode under test.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
from _runs import grpo_args
from _tiny import REPO, recipe_cmd, run, tiny_assets

pytestmark = pytest.mark.slow

# A few small steps of recipes/tiny/grpo_server.yaml (the benchmarks' recipe) against the shared server.
SMALL = ["--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "16",
         "--eval_max_tokens", "16"]


def last_line(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


def test_bench_rewards_smoke():
    proc = run([sys.executable, "benchmarks/grader_bench.py", "--n", "20", "--modes", "drgrpo", "--burners", "0",
                "--ranks", "2", "--timeout", "0.5"], timeout=300)
    assert re.search(r"^\| 0 \| drgrpo \| \d+ \|", proc.stdout, re.M), proc.stdout
    assert re.search(r"^\| 2 \| drgrpo \| \d+ \|", proc.stdout, re.M), proc.stdout  # the simulated ranks


@pytest.mark.server
def test_bench_cpu_smoke(vllm_server):
    proc = run([sys.executable, "benchmarks/cpu_step_split.py", "--steps", "2", "--eval_steps", "1",
                "--eval_max_samples", "4", "--model", vllm_server.model, "--data", vllm_server.data,
                "--server_url", vllm_server.url, *SMALL], timeout=600)
    assert re.search(r"^total\s+[0-9.]+\s+100\.0%$", proc.stdout, re.M), proc.stdout[-3000:]
    assert re.match(r"wall time [0-9.]+ s for 2 steps", last_line(proc)), last_line(proc)


@pytest.mark.server
def test_bench_async_smoke(vllm_server):
    proc = run([sys.executable, "benchmarks/async_step_split.py", "--steps", "3", "--skip", "1",
                "--model", vllm_server.model, "--data", vllm_server.data, "--server_url", vllm_server.url, *SMALL],
               timeout=600)
    assert re.fullmatch(r"step_seconds: sync=[0-9.]+ async=[0-9.]+ ratio=[0-9.]+ bound=[0-9.]+", last_line(proc)), \
        proc.stdout[-3000:]


@pytest.mark.server
def test_bench_dynamic_smoke(vllm_server):
    proc = run([sys.executable, "benchmarks/dynamic_sampling_bench.py", "--smoke", "--model", vllm_server.model,
                "--data", vllm_server.data, "--server_url", vllm_server.url, *SMALL], timeout=600)
    assert re.fullmatch(r"dynamic_sampling: off=[0-9.]+ on=[0-9.]+ seconds=5", last_line(proc)), proc.stdout[-3000:]


def test_gpu_timing_hook_and_summary_on_cpu(tmp_path):
    """benchmarks/gpu: the timing hook in a real (CPU, in-process generation) GRPO run, then summarize.py."""
    assets = tiny_assets()
    res = tmp_path / "results"
    res.mkdir()
    env = {"PYTHONPATH": os.path.join(REPO, "benchmarks", "gpu", "hook"),
           "BENCH_TIMING_OUT": str(res / "zero2_timing.jsonl")}
    run(recipe_cmd("recipes/grpo.py", *grpo_args(str(tmp_path / "run"), 2, "--save_strategy", "no")), env=env)
    with open(os.path.join(assets["model"], "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    (res / "build_info.json").write_text(json.dumps({"params": 1, "config": config}), encoding="utf-8")
    run([sys.executable, "benchmarks/gpu/summarize.py", str(res), "--out", str(res / "summary.json"),
         "--markdown", str(res / "summary.md")], timeout=120)
    with open(res / "summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    zero2 = summary["modes"]["zero2"]
    assert zero2["steps"] == 2 and zero2["step_wall_s"] > 0 and zero2["split_s"]["generation"] > 0, zero2
    assert (res / "summary.md").read_text(encoding="utf-8").startswith("| | zero2 |")


def test_evaluate_starts_its_own_server(tmp_path):
    """recipes/evaluate.py's mode of the README's GPU quickstart (`--model DIR`, no --server_url: it starts a vLLM
    server for the checkpoint, evaluates, stops it), on CPU; the other modes are tested in test_server_eval.py."""
    from conftest import reserve_port

    assets = tiny_assets()
    port, reservation = reserve_port()
    try:
        proc = run([sys.executable, "recipes/evaluate.py", "--model", assets["model"], "--benchmarks", "synthetic",
                    "--dataset_name", assets["data"], "--eval_max_samples", "4", "--eval_max_tokens", "8",
                    "--server_port", str(port), "--output_dir", str(tmp_path / "eval")], timeout=600)
    finally:
        reservation.close()
    with open(tmp_path / "eval" / "results.json", encoding="utf-8") as f:
        report = json.load(f)
    (label,) = report["results"]
    assert report["results"][label]["eval/synthetic/num_problems"] == 4, report
    assert "| checkpoint | synthetic | average |" in proc.stdout
