"""Turn the per-step timing of the GPU runs into the numbers of issue 7 (JSON + a markdown table).

Reads RESULTS_DIR/{zero2,colocate,server}_timing.jsonl (bench_timing.py), *_gpumem.csv (nvidia-smi every
0.5 s), raw.json (raw_engine.py) and build_info.json (build_model.py). Steady state = the median over steps
after the first (the first carries warm-up, the first sync and the step-0 evaluation's overlap).

MFU counts model FLOPs only (no recomputation from gradient checkpointing): 6 N per trained token plus
causal attention 6 L d T (T = mean sequence length), over the training phase's time (fwd + bwd + optimizer,
i.e. training_step minus the rollout inside it), against the H100 SXM datasheet's 989 TFLOP/s dense bf16;
the measured bf16 matmul ceiling of the H100 these runs used (798 TFLOP/s) is given as a second denominator.

    python benchmarks/gpu/summarize.py RESULTS_DIR [--out summary.json] [--markdown summary.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
from typing import Any

PEAK_BF16 = 989.4e12
MEASURED_MATMUL = 798e12
MODES = ("zero2", "colocate", "colocate_nodetok", "server", "nccl_zero2", "nccl_zero3")


def read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def model_flops(build_info: dict) -> tuple[float, int, int]:
    """(matmul parameters N, layers, hidden) of the model, from its config."""
    c = build_info["config"]
    d, ff, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * ff
    return float(L * per_layer + d * V), L, d


def gpu_peak_gib(path: str) -> float | None:
    if not os.path.isfile(path):
        return None
    peak = 0.0
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f):
            try:
                peak = max(peak, float(row[1]))
            except (IndexError, ValueError):
                continue
    return peak / 1024


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_mode(res: str, mode: str, n_matmul: float, layers: int, hidden: int) -> dict[str, Any] | None:
    rows = read_jsonl(os.path.join(res, f"{mode}_timing.jsonl"))
    begin = next((r for r in rows if r.get("event") == "train_begin"), None)
    steps = [r for r in rows if r.get("event") == "step"]
    end = next((r for r in rows if r.get("event") == "train_end"), None)
    probe = next((r for r in rows if r.get("event") == "engine_probe"), None)
    if not steps or begin is None:
        return None
    steady = steps[1:] or steps
    out: dict[str, Any] = {"mode": mode, "steps": len(steps), "setup": begin}

    def m(key: str) -> float:
        return med([s.get(key, 0.0) for s in steady]) or 0.0

    wall, gen, tokens = m("wall_s"), m("generation_s"), m("tokens")
    ts, prep = m("training_step_s"), m("prepare_inputs_s")
    mean_len = m("completions/mean_length")
    completions = begin["generation_batch_size"]
    completion_tokens = completions * mean_len
    seq_len = tokens / completions if completions else 0.0
    train_s = ts - prep
    flops_per_token = 6 * n_matmul + 6 * layers * hidden * seq_len
    out.update({
        "step_wall_s": wall, "tokens_per_step": tokens, "completion_tokens_per_step": completion_tokens,
        "mean_completion_len": mean_len, "mean_sequence_len": seq_len,
        "split_s": {"generation": gen, "reward": m("reward_s"), "sync": m("sync_rollout_path_s"),
                    "scoring_logps": m("scoring_logps_s"),
                    "other_rollout": max(prep - gen - m("reward_s") - m("sync_rollout_path_s") - m("scoring_logps_s"), 0),
                    "training": train_s, "outside_training_step": wall - ts},
        "rollout_tok_s": completion_tokens / gen if gen else None,
        "trainer_tok_s": tokens / train_s if train_s > 0 else None,
        "step_tok_s": tokens / wall if wall else None,
        "mfu_train": tokens * flops_per_token / train_s / PEAK_BF16 if train_s > 0 else None,
        "mfu_train_vs_measured_matmul": tokens * flops_per_token / train_s / MEASURED_MATMUL if train_s > 0 else None,
        "mfu_step": tokens * flops_per_token / wall / PEAK_BF16 if wall else None,
        "peak_trainer_reserved_gib": max((s.get("peak_reserved_gib") or 0) for s in steps),
        "peak_trainer_alloc_gib": max((s.get("peak_alloc_gib") or 0) for s in steps),
        "peak_gpu_used_gib": gpu_peak_gib(os.path.join(res, f"{mode}_gpumem.csv")),
        "per_step": [{k: s.get(k) for k in ("step", "wall_s", "generation_s", "training_step_s",
                                            "prepare_inputs_s", "sync_all_s", "sync_transfer_s", "sync_check_s")}
                     for s in steps],
    })
    if probe:
        out["engine_probe_tok_s"] = probe["median_tok_s"]
        if out["rollout_tok_s"]:
            out["rollout_vs_probe"] = out["rollout_tok_s"] / probe["median_tok_s"]
    syncs = [s for s in steps if s.get("sync_count")]
    if syncs:
        n = sum(s["sync_count"] for s in syncs)
        out["sync"] = {"count": n,
                       "transfer_s_mean": sum(s.get("sync_transfer_s", 0) for s in syncs) / n,
                       "check_s_mean": sum(s.get("sync_check_s", 0) for s in syncs) / n,
                       "all_s_mean_incl_eval_wait": sum(s.get("sync_all_s", 0) for s in syncs) / n}
    if end:
        train_wall = end["train_wall_s"]
        out["train_wall_s"] = train_wall
        n_evals = end.get("num_evals") or 0
        if n_evals:
            overhead = max(train_wall - len(steps) * wall, 0.0)
            per_eval = overhead / n_evals
            out["eval"] = {"num_evals": n_evals, "eval_wall_total_s": end.get("eval_wall_total_s"),
                           "blocked_total_s": end.get("eval_blocked_total_s"),
                           "overhead_total_s": overhead, "overhead_share": overhead / train_wall,
                           "overhead_per_eval_s": per_eval,
                           "projected_share_every_10_steps": per_eval / (10 * wall + per_eval)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--out", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    res = args.results
    info_path = os.path.join(res, "build_info.json")
    if not os.path.isfile(info_path):
        raise SystemExit(f"error: {info_path}: missing (run the base stage first)")
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    n_matmul, layers, hidden = model_flops(info)
    summary: dict[str, Any] = {"params": info["params"], "matmul_params": n_matmul, "modes": {}}
    raw_path = os.path.join(res, "raw.json")
    if os.path.isfile(raw_path):
        with open(raw_path, encoding="utf-8") as f:
            summary["raw"] = json.load(f)
        summary["raw"]["peak_gpu_used_gib"] = gpu_peak_gib(os.path.join(res, "raw_gpumem.csv"))
    variants_path = os.path.join(res, "raw_variants.json")
    if os.path.isfile(variants_path):
        with open(variants_path, encoding="utf-8") as f:
            summary["raw_variants"] = json.load(f)
    for mode in MODES:
        s = summarize_mode(res, mode, n_matmul, layers, hidden)
        if s:
            if mode.endswith("_nodetok") and "raw_variants" in summary and s.get("rollout_tok_s"):
                # the rollouts ran with detokenize=False: compare with the engine doing the same
                anchor = summary["raw_variants"]["cases"].get("rollout_n8_no_detok", {}).get("median_tok_s")
                if anchor:
                    s["raw_engine_tok_s"] = anchor
                    s["rollout_vs_raw_engine"] = s["rollout_tok_s"] / anchor
            elif "raw" in summary and s.get("rollout_tok_s"):
                case = "rollout_dup_n1" if mode.startswith("colocate") else "rollout_n8"
                anchor = summary["raw"]["cases"].get(case, {}).get("median_tok_s")
                if anchor:
                    s["raw_engine_tok_s"] = anchor
                    s["rollout_vs_raw_engine"] = s["rollout_tok_s"] / anchor
            summary["modes"][mode] = s
    lines = ["| | " + " | ".join(summary["modes"]) + " |", "|---|" + "---|" * len(summary["modes"])]

    def row(label: str, fn) -> None:
        cells = []
        for s in summary["modes"].values():
            try:
                v = fn(s)
            except (KeyError, TypeError, ZeroDivisionError):
                v = None
            cells.append("-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("steps timed", lambda s: s["steps"])
    row("step wall (s, median)", lambda s: s["step_wall_s"])
    for k in ("generation", "reward", "sync", "scoring_logps", "other_rollout", "training", "outside_training_step"):
        row(f"  {k} (s)", lambda s, k=k: s["split_s"][k])
    row("completion tokens / step", lambda s: s["completion_tokens_per_step"])
    row("rollout tok/s", lambda s: s["rollout_tok_s"])
    row("engine probe tok/s (same engine, no trainer)", lambda s: s.get("engine_probe_tok_s"))
    row("rollout / probe", lambda s: s.get("rollout_vs_probe"))
    row("raw engine tok/s (raw_engine.py)", lambda s: s.get("raw_engine_tok_s"))
    row("rollout / raw engine", lambda s: s.get("rollout_vs_raw_engine"))
    row("trained tokens / step", lambda s: s["tokens_per_step"])
    row("trainer tok/s (training phase)", lambda s: s["trainer_tok_s"])
    row("MFU, training phase (vs 989 TF/s)", lambda s: s["mfu_train"])
    row("MFU, whole step", lambda s: s["mfu_step"])
    row("sync transfer (s, mean)", lambda s: s["sync"]["transfer_s_mean"])
    row("sync check (s, mean)", lambda s: s["sync"]["check_s_mean"])
    row("evaluations", lambda s: s["eval"]["num_evals"])
    row("eval overhead share (this run)", lambda s: s["eval"]["overhead_share"])
    row("eval overhead share, projected every 10 steps", lambda s: s["eval"]["projected_share_every_10_steps"])
    row("peak trainer reserved (GiB)", lambda s: s["peak_trainer_reserved_gib"])
    row("peak GPU used, all processes (GiB)", lambda s: s["peak_gpu_used_gib"])
    md = "\n".join(lines)
    if "raw_variants" in summary:
        md += "\n\nraw engine, variants: " + ", ".join(
            f"{k} {v['median_tok_s']:.0f} tok/s ({v['sequences']} seqs)" for k, v in summary["raw_variants"]["cases"].items())
    if "raw" in summary:
        md += "\n\nraw engine: " + ", ".join(f"{k} {v['median_tok_s']:.0f} tok/s ({v['sequences']} seqs)"
                                            for k, v in summary["raw"]["cases"].items())
    print(md)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
