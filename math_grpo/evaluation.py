"""Benchmark evaluation: a registry of benchmarks, two generators (vLLM server, in-process transformers),
grading with `rewards`, and the metrics the dashboards plot.

The GRPO eval callback and `recipes/evaluate.py` both call `evaluate(...)`, so a number seen during training
and one from a standalone evaluation of the same checkpoint mean the same thing.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from math_grpo.cli import MathGRPOError
from math_grpo.vllm_server import ServerError

STOP = ("</answer>",)


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives: a hub id (with config and split) or a local file/folder."""

    name: str
    source: str
    split: str = "test"
    config: str | None = None


REGISTRY: dict[str, BenchmarkSpec] = {
    "math500": BenchmarkSpec("math500", "HuggingFaceH4/MATH-500", split="test"),
    "gsm8k": BenchmarkSpec("gsm8k", "openai/gsm8k", split="test", config="main"),
}


@dataclass
class Benchmark:
    name: str
    rows: list[dict[str, Any]]  # problem, answer[, level, subject]


@dataclass
class SamplingSettings:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    n: int = 1
    stop: tuple[str, ...] = STOP
    seed: int | None = 0

    @classmethod
    def from_args(cls, args: Any) -> SamplingSettings:
        return cls(temperature=args.eval_temperature, top_p=args.eval_top_p, max_tokens=args.eval_max_tokens,
                   n=max(1, int(args.eval_n)))


def _synthetic_test_file(dataset_name: str | None) -> str | None:
    """The demo's test split next to its training data ('synthetic:DIR', a folder, or a train file)."""
    if not dataset_name:
        return None
    path = dataset_name.split(":", 1)[1] if dataset_name.startswith("synthetic:") else dataset_name
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    for ext in (".jsonl", ".json", ".parquet"):
        candidate = os.path.join(folder, "test" + ext)
        if os.path.isfile(candidate):
            return candidate
    return None


def resolve_benchmark(entry: str, dataset_name: str | None = None) -> BenchmarkSpec:
    """'math500' / 'gsm8k' (hub ids), 'synthetic' (the demo's test split), or 'NAME=PATH' (a local file)."""
    entry = entry.strip()
    if "=" in entry:
        name, path = (s.strip() for s in entry.split("=", 1))
        if not name or not path:
            raise MathGRPOError(f"benchmarks: {entry!r} must be NAME=PATH")
        if not os.path.exists(path):
            raise MathGRPOError(f"benchmarks: {name}: {path} does not exist")
        return BenchmarkSpec(name, path, split="test")
    if entry in REGISTRY:
        return REGISTRY[entry]
    if entry == "synthetic":
        path = _synthetic_test_file(dataset_name)
        if path is None:
            raise MathGRPOError(f"benchmarks: 'synthetic' needs the demo data (a folder with test.jsonl) as "
                                f"dataset_name, got {dataset_name!r}; or write synthetic=PATH")
        return BenchmarkSpec("synthetic", path, split="test")
    if os.path.exists(entry):
        return BenchmarkSpec(os.path.splitext(os.path.basename(entry.rstrip("/")))[0], entry, split="test")
    known = ", ".join([*REGISTRY, "synthetic"])
    raise MathGRPOError(f"benchmarks: unknown benchmark {entry!r} (known: {known}; or NAME=PATH for a local file)")


def load_benchmark(spec: BenchmarkSpec, max_samples: int | None = None) -> Benchmark:
    from math_grpo.data import load_problems

    dataset, _ = load_problems(spec.source, split=spec.split, config=spec.config, limit=max_samples, verbose=False)
    return Benchmark(spec.name, dataset.to_list())


def load_benchmarks(entries: Sequence[str], max_samples: int | None = None,
                    dataset_name: str | None = None) -> list[Benchmark]:
    benches = [load_benchmark(resolve_benchmark(e, dataset_name), max_samples) for e in entries]
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise MathGRPOError(f"benchmarks: duplicate names {names}")
    return benches


# ---------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------


class Generator(Protocol):
    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[list[dict[str, Any]]]:
        """n completions per prompt: {"text": str, "num_tokens": int | None}."""


class ServerGenerator:
    """OpenAI-compatible completions on the vLLM server (the same server that samples the rollouts)."""

    def __init__(self, client: Any, batch_size: int = 256, timeout: float | None = None, send_seed: bool = False):
        self.client = client
        self.batch_size = batch_size
        self.timeout = timeout
        # A per-request seed kills the engine of vLLM's CPU build ("CPU Generator does not use offset"), and
        # with it every rollout of the run: only send one when asked (GPU servers, reproducible pass@k).
        self.send_seed = send_seed

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[list[dict[str, Any]]]:
        out: list[list[dict[str, Any]]] = []
        for i in range(0, len(prompts), self.batch_size):
            batch = prompts[i:i + self.batch_size]
            try:
                out.extend(self._request(batch, sampling))
            except ServerError as exc:
                if "HTTP 400" not in str(exc):
                    raise
                # One prompt the server refuses (longer than its context) must not void the whole batch:
                # retry one by one; a refused prompt scores as an empty (wrong) answer and is counted.
                for prompt in batch:
                    try:
                        out.extend(self._request([prompt], sampling))
                    except ServerError as one:
                        if "HTTP 400" not in str(one):
                            raise
                        out.append([{"text": "", "num_tokens": 0, "error": str(one)[:300]}] * sampling.n)
        return out

    def _request(self, prompts: list[str], sampling: SamplingSettings) -> list[list[dict[str, Any]]]:
        return self.client.generate_text(
            prompts, n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, stop=list(sampling.stop),
            seed=sampling.seed if self.send_seed and sampling.temperature > 0 else None, timeout=self.timeout)


class TransformersGenerator:
    """In-process batched generation (greedy at temperature 0), for evaluation without a server and in tests."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def generate(self, prompts: list[str], sampling: SamplingSettings) -> list[list[dict[str, Any]]]:
        import torch

        tok = self.tokenizer
        padding_side = tok.padding_side
        tok.padding_side = "left"
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        greedy = sampling.temperature <= 0
        out: list[list[dict[str, Any]]] = []
        try:
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            for i in range(0, len(prompts), self.batch_size):
                batch = tok(prompts[i:i + self.batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
                kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": pad_id,
                                          "num_return_sequences": sampling.n, "do_sample": not greedy}
                if not greedy:
                    kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                # No `stop_strings`: transformers rebuilds its stop-string tables on every call, which costs
                # more than generating. Text after a stop string is cut below; EOS still ends sequences early.
                with torch.no_grad():
                    seqs = self.model.generate(**batch, **kwargs)
                new = seqs[:, batch["input_ids"].shape[1]:]
                texts = tok.batch_decode(new, skip_special_tokens=True)
                lengths = _generated_lengths(new, tok.eos_token_id, pad_id)
                rows = [{"text": _cut_at_stop(t, sampling.stop), "num_tokens": n} for t, n in zip(texts, lengths)]
                out.extend(rows[j:j + sampling.n] for j in range(0, len(rows), sampling.n))
        finally:
            tok.padding_side = padding_side
            if was_training:
                self.model.train()
        return out


def _generated_lengths(new_ids: Any, eos_id: int | None, pad_id: int | None) -> list[int]:
    """Tokens up to and including the first EOS (right padding after it is not the model's output)."""
    lengths = []
    for row in new_ids.tolist():
        n = len(row)
        for j, t in enumerate(row):
            if t == eos_id or (t == pad_id and pad_id != eos_id):
                n = j + 1 if t == eos_id else j
                break
        lengths.append(n)
    return lengths


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Keep the text up to and including the first stop string (what the server returns with it included)."""
    cut = len(text)
    for s in stop:
        idx = text.find(s)
        if idx != -1:
            cut = min(cut, idx + len(s))
    return text[:cut]


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    step: int
    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def samples(self, k: int) -> list[dict[str, Any]]:
        """A few records for a table: the first sample of the first k problems of each benchmark."""
        seen: dict[str, int] = defaultdict(int)
        out = []
        for r in self.records:
            if r["sample"] == 0 and seen[r["benchmark"]] < k:
                seen[r["benchmark"]] += 1
                out.append(r)
        return out[:k] if len(seen) == 1 else out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def evaluate(generator: Generator, benchmarks: Sequence[Benchmark], sampling: SamplingSettings,
             template: str = "r1_zero", grader_mode: str = "accurate", grader_timeout: float = 2.0,
             step: int = 0) -> EvalResult:
    """Generate, grade and summarise; one call per evaluation point (all benchmarks)."""
    from math_grpo.data import format_prompt
    from rewards.grader import grade_batch

    start = time.perf_counter()
    metrics: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    accs, fmts, lengths = [], [], []
    gen_s = grade_s = 0.0
    for bench in benchmarks:
        prompts = [format_prompt(r["problem"], template) for r in bench.rows]
        t0 = time.perf_counter()
        outputs = generator.generate(prompts, sampling)
        t1 = time.perf_counter()
        if len(outputs) != len(prompts):
            raise MathGRPOError(f"eval {bench.name}: {len(outputs)} outputs for {len(prompts)} prompts")
        responses = [c["text"] for group in outputs for c in group]
        truths = [r["answer"] for r, group in zip(bench.rows, outputs) for _ in group]
        grades = grade_batch(responses, truths, mode=grader_mode, question_only=template == "question_only",
                             timeout=grader_timeout)
        grade_s += time.perf_counter() - t1
        gen_s += t1 - t0
        per_problem_correct: list[int] = []
        per_level: dict[str, list[float]] = defaultdict(list)
        b_acc, b_fmt, b_len, timeouts, refused = [], [], [], 0, 0
        g = iter(grades)
        for idx, (row, group) in enumerate(zip(bench.rows, outputs)):
            correct = 0
            for s, comp in enumerate(group):
                res = next(g)
                b_acc.append(res.answer_reward)
                b_fmt.append(res.format_reward)
                timeouts += int(res.timed_out)
                refused += int("error" in comp)
                correct += int(res.answer_reward > 0)
                if comp.get("num_tokens") is not None:
                    b_len.append(comp["num_tokens"])
                if row.get("level") not in (None, ""):
                    per_level[str(row["level"])].append(res.answer_reward)
                records.append({"step": step, "benchmark": bench.name, "index": idx, "sample": s,
                                "problem": row["problem"], "answer": row["answer"], "level": row.get("level"),
                                "response": comp["text"], "num_tokens": comp.get("num_tokens"),
                                "format_reward": res.format_reward, "answer_reward": res.answer_reward,
                                "timed_out": res.timed_out})
            per_problem_correct.append(correct)
        p = f"eval/{bench.name}/"
        metrics[p + "accuracy"] = _mean(b_acc)
        metrics[p + "format_accuracy"] = _mean(b_fmt)
        metrics[p + "num_problems"] = len(bench.rows)
        if b_len:
            metrics[p + "mean_response_tokens"] = _mean(b_len)
        if timeouts:
            metrics[p + "grader_timeouts"] = timeouts
        if refused:
            metrics[p + "refused_prompts"] = refused // max(1, sampling.n)
        for level, vals in sorted(per_level.items()):
            metrics[f"{p}level_{level}/accuracy"] = _mean(vals)
        if sampling.n > 1:
            k = 1
            while k <= sampling.n:
                metrics[f"{p}pass@{k}"] = _mean([pass_at_k(sampling.n, c, k) for c in per_problem_correct])
                k *= 2
            if sampling.n not in (2 ** i for i in range(16)):
                metrics[f"{p}pass@{sampling.n}"] = _mean([pass_at_k(sampling.n, c, sampling.n)
                                                          for c in per_problem_correct])
        accs.append(metrics[p + "accuracy"])
        fmts.append(metrics[p + "format_accuracy"])
        lengths.extend(b_len)
    # Macro average: each benchmark counts once, whatever its size.
    metrics["eval/accuracy"] = _mean(accs)
    metrics["eval/format_accuracy"] = _mean(fmts)
    if lengths:
        metrics["eval/mean_response_tokens"] = _mean(lengths)
    seconds = time.perf_counter() - start
    metrics["eval/generation_seconds"] = gen_s
    metrics["eval/grading_seconds"] = grade_s
    return EvalResult(step=step, metrics=metrics, records=records, seconds=seconds)


def write_eval_jsonl(run_dir: str, result: EvalResult) -> str:
    """RUN_DIR/eval/step_XXXX.jsonl: one line per (problem, sample), for reading what the model wrote."""
    folder = os.path.join(run_dir, "eval")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"step_{result.step:04d}.jsonl")
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in result.records:
            f.write(json.dumps(rec, default=str) + "\n")
    os.replace(tmp, path)
    return path


def format_table(metrics: dict[str, float], benchmarks: Sequence[str]) -> str:
    """A plain-text table: one row per benchmark, then the macro average."""
    cols = ["accuracy", "format_accuracy", "mean_response_tokens", "num_problems"]
    extra = sorted({k.split("/")[-1] for k in metrics if "/pass@" in k}, key=lambda s: int(s.split("@")[1]))
    cols += extra
    header = f"{'benchmark':<14}" + "".join(f"{c:>22}" for c in cols)
    lines = [header, "-" * len(header)]
    for name in benchmarks:
        cells = []
        for c in cols:
            v = metrics.get(f"eval/{name}/{c}")
            cells.append(f"{'-':>22}" if v is None else (f"{v:>22.4f}" if isinstance(v, float) else f"{v:>22}"))
        lines.append(f"{name:<14}" + "".join(cells))
        levels = sorted(k for k in metrics if k.startswith(f"eval/{name}/level_"))
        for k in levels:
            lines.append(f"  {k.split('/')[2]:<12}{metrics[k]:>22.4f}")
    lines.append(f"{'macro avg':<14}{metrics.get('eval/accuracy', 0.0):>22.4f}"
                 f"{metrics.get('eval/format_accuracy', 0.0):>22.4f}")
    return "\n".join(lines)
