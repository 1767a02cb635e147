"""PNG plots of a run from its metrics.jsonl: people would rather look at a reward curve than read one."""

from __future__ import annotations

import json
import os
from typing import Any

PANELS = (
    ("train/reward", "train reward (mean over rollouts)"),
    ("eval/accuracy", "eval accuracy per benchmark (held-out)"),
    ("train/kl", "KL to reference"),
    ("train/loss", "loss"),
)
# What a panel shows when its own metric was not logged (TRL logs no KL when beta is 0).
FALLBACK = {"train/kl": ("train/completions/mean_length", "completion length (tokens)")}


def read_metrics(path: str) -> list[dict[str, Any]]:
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash must not hide the rest
    return rows


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, int | float):
            xs.append(int(r.get("step", len(xs))))
            ys.append(float(v))
    return xs, ys


def eval_benchmarks(rows: list[dict[str, Any]]) -> list[str]:
    """Benchmark names with an `eval/<name>/accuracy` in the log, in first-seen order."""
    names: dict[str, None] = {}
    for r in rows:
        for k in r:
            parts = k.split("/")
            if len(parts) == 3 and parts[0] == "eval" and parts[2] == "accuracy":
                names[parts[1]] = None
    return list(names)


def _smooth(ys: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_run(run_dir: str, out_name: str = "progress.png", title: str | None = None,
             extra_lines: dict[str, float] | None = None) -> str | None:
    """Plot reward, eval accuracy, KL and loss per step; horizontal `extra_lines` mark reference accuracies."""
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, label) in zip(axes.flat, PANELS):
        xs, ys = series(rows, key)
        if not xs and key in FALLBACK:
            key, label = FALLBACK[key]
            xs, ys = series(rows, key)
        if key == "eval/accuracy":
            for name, value in (extra_lines or {}).items():
                ax.axhline(value, linestyle="--", linewidth=1, label=name, color="gray" if "before" in name else None)
        if key == "eval/accuracy":
            for name in eval_benchmarks(rows):  # one line per benchmark beside their macro average
                bx, by = series(rows, f"eval/{name}/accuracy")
                ax.plot(bx, by, ".--", linewidth=1, alpha=0.8, label=name)
        if xs:
            style = "o-" if key.startswith("eval/") else "-"
            ax.plot(xs, ys, style, alpha=0.35 if len(xs) > 20 and not key.startswith("eval/") else 1.0,
                    label="average" if key == "eval/accuracy" and eval_benchmarks(rows) else key)
            if len(xs) > 20 and not key.startswith("eval/"):
                ax.plot(xs, _smooth(ys, max(3, len(xs) // 15)), "-", label=f"{key} (smoothed)")
        if not xs:
            ax.text(0.5, 0.5, f"{key}: not logged in this run", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title or os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    path = os.path.join(run_dir, out_name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
