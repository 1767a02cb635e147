"""Benchmark evaluation: two generators (vLLM server, in-process transformers), grading with `rewards`, and
the metrics the dashboards plot (`math_grpo.metrics`) for the benchmarks of `math_grpo.benchmarks`.

The GRPO eval callback and `recipes/evaluate.py` both call `evaluate(...)`, so a number seen during training
and one from a standalone evaluation of the same checkpoint mean the same thing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from math_grpo.benchmarks import (  # noqa: F401  (re-exported: the callback, recipes and tests import them here)
    REGISTRY,
    Benchmark,
    BenchmarkSpec,
    load_benchmark,
    load_benchmarks,
    resolve_benchmark,
)
from math_grpo.errors import MathGRPOError
from math_grpo.metrics import benchmark_metrics, equivalence_groups, pass_at_k  # noqa: F401  (pass_at_k: re-export)
from math_grpo.vllm_server import ServerError

STOP = ("</answer>",)


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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _generate(generator: Generator, prompts: list[str], sampling: SamplingSettings, bar: Any) -> list:
    """Generate in the generator's own batch size, so the progress bar moves once per batch."""
    step = max(1, int(getattr(generator, "batch_size", len(prompts)) or len(prompts)))
    out: list = []
    for i in range(0, len(prompts), step):
        out.extend(generator.generate(prompts[i:i + step], sampling))
        if bar is not None:
            bar.update(len(prompts[i:i + step]))
    return out


def evaluate(generator: Generator, benchmarks: Sequence[Benchmark], sampling: SamplingSettings,
             template: str = "r1_zero", grader_mode: str = "accurate", grader_timeout: float = 2.0,
             step: int = 0, progress: bool = False) -> EvalResult:
    """Generate, grade and summarise; one call per evaluation point (all benchmarks).

    Each benchmark samples with `sampling` updated by its own overrides (`eval_sampling`: AIME n=16 at a
    temperature, MATH-500 greedy). `progress` draws a bar per benchmark on stderr.
    """
    from math_grpo.data import format_prompt
    from rewards.extract import extract_answer
    from rewards.grader import grade_batch

    start = time.perf_counter()
    metrics: dict[str, float] = {}
    records: list[dict[str, Any]] = []
    accs, fmts, lengths = [], [], []
    gen_s = grade_s = 0.0
    question_only = template == "question_only"
    for bench in benchmarks:
        bench_sampling = dataclasses.replace(sampling, **bench.sampling)
        prompts = [format_prompt(r["problem"], template) for r in bench.rows]
        t0 = time.perf_counter()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prompts), desc=f"{bench.name} (n={bench_sampling.n})", unit="problem",
                       file=sys.stderr, leave=True)
        try:
            outputs = _generate(generator, prompts, bench_sampling, bar)
        finally:
            if bar is not None:
                bar.close()
        t1 = time.perf_counter()
        if len(outputs) != len(prompts):
            raise MathGRPOError(f"eval {bench.name}: {len(outputs)} outputs for {len(prompts)} prompts")
        responses = [c["text"] for group in outputs for c in group]
        truths = [r["answer"] for r, group in zip(bench.rows, outputs) for _ in group]
        grades = grade_batch(responses, truths, mode=grader_mode, question_only=question_only,
                             timeout=grader_timeout)
        extracted = [extract_answer(t, question_only)[1] for t in responses]
        correct: list[list[bool]] = []
        formatted: list[list[bool]] = []
        answers: list[list[str | None]] = []
        b_len, timeouts, refused = [], 0, 0
        g = iter(zip(grades, extracted))
        for idx, (row, group) in enumerate(zip(bench.rows, outputs)):
            correct.append([])
            formatted.append([])
            answers.append([])
            for s, comp in enumerate(group):
                res, given = next(g)
                correct[-1].append(res.answer_reward > 0)
                formatted[-1].append(res.format_reward > 0)
                answers[-1].append(given if res.format_reward > 0 else None)
                timeouts += int(res.timed_out)
                refused += int("error" in comp)
                if comp.get("num_tokens") is not None:
                    b_len.append(comp["num_tokens"])
                records.append({"step": step, "benchmark": bench.name, "index": idx, "sample": s,
                                "problem": row["problem"], "answer": row["answer"], "level": row.get("level"),
                                "subject": row.get("subject"), "response": comp["text"], "extracted": given,
                                "num_tokens": comp.get("num_tokens"), "format_reward": res.format_reward,
                                "answer_reward": res.answer_reward, "timed_out": res.timed_out})
        groups = (equivalence_groups(answers, grader_mode, grader_timeout) if bench_sampling.n > 1 else None)
        grade_s += time.perf_counter() - t1
        gen_s += t1 - t0
        p = f"eval/{bench.name}/"
        metrics.update(benchmark_metrics(p, correct, formatted, groups, bench.rows))
        metrics[p + "temperature"] = bench_sampling.temperature
        if b_len:
            metrics[p + "mean_response_tokens"] = _mean(b_len)
        if timeouts:
            metrics[p + "grader_timeouts"] = timeouts
        if refused:
            metrics[p + "refused_prompts"] = refused // max(1, bench_sampling.n)
        accs.append(metrics[p + "accuracy"])
        fmts.append(metrics[p + "format_accuracy"])
        lengths.extend(b_len)
    # Macro average, as the papers report it: each benchmark counts once, whatever its size.
    metrics["eval/accuracy"] = _mean(accs)
    metrics["eval/format_accuracy"] = _mean(fmts)
    if lengths:
        metrics["eval/mean_response_tokens"] = _mean(lengths)
    seconds = time.perf_counter() - start
    metrics["eval/generation_seconds"] = gen_s
    metrics["eval/grading_seconds"] = grade_s
    return EvalResult(step=step, metrics=metrics, records=records, seconds=seconds)


def write_records(path: str, records: Sequence[dict[str, Any]]) -> str:
    """One JSON line per (problem, sample), written whole or not at all."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_eval_jsonl(run_dir: str, result: EvalResult) -> str:
    """RUN_DIR/eval/step_XXXX.jsonl: one line per (problem, sample), for reading what the model wrote."""
    return write_records(os.path.join(run_dir, "eval", f"step_{result.step:04d}.jsonl"), result.records)


def format_table(metrics: dict[str, float], benchmarks: Sequence[str]) -> str:
    """A plain-text table: one row per benchmark, then the macro average."""
    cols = ["accuracy", "format_accuracy", "mean_response_tokens", "num_problems"]
    for kind in ("pass@", "maj@"):
        cols += sorted({k.split("/")[-1] for k in metrics if f"/{kind}" in k}, key=lambda s: int(s.split("@")[1]))
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
