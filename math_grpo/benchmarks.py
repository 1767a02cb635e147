"""Benchmarks: the registry of what papers report (hub id, config, split, schema), names and files -> rows.

`NAME=PATH` loads a local file or folder in any of the registry's schemas (jsonl, json list, parquet, arrow,
a `save_to_disk` folder) without a network; the schema is detected per row by `math_grpo.data`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from math_grpo.errors import MathGRPOError


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives (a hub id with config and split, or a local path) and where its answer is."""

    name: str
    source: str
    split: str = "test"
    config: str | None = None
    schema: str = ""  # where the problem and the answer are, for `--list_benchmarks` and docs/benchmarks.md


# Hub ids as the field uses them (open-r1, oat / understand-r1-zero, Qwen2.5-Math evaluation), checked against
# each dataset's card: columns, config and split.
REGISTRY: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("aime24", "HuggingFaceH4/aime_2024", split="train",
                      schema="problem; answer: a string ('204'; other copies write '025' or an int)"),
        BenchmarkSpec("aime25", "math-ai/aime25", split="test", schema="problem; answer: a string"),
        BenchmarkSpec("amc23", "math-ai/amc23", split="test",
                      schema="question (and problem); answer: a float (27.0 means 27)"),
        BenchmarkSpec("math500", "HuggingFaceH4/MATH-500", split="test",
                      schema="problem; answer; solution with \\boxed{}; level 1-5; subject"),
        BenchmarkSpec("minerva_math", "math-ai/minervamath", split="test",
                      schema="question; answer (other copies: problem; the answer only as the last \\boxed{} "
                             "of solution; type)"),
        BenchmarkSpec("olympiadbench", "Hothan/OlympiadBench", split="train", config="OE_TO_maths_en_COMP",
                      schema="question (context prepended when set); final_answer: a list of $-wrapped strings, "
                             "any element matches; subfield"),
        BenchmarkSpec("gsm8k", "openai/gsm8k", split="test", config="main",
                      schema="question; answer: a worked solution ending '#### 1,200'"),
    )
}
# The names other evaluation suites use for the same benchmarks (understand-r1-zero, Qwen2.5-Math).
ALIASES = {"aime": "aime24", "aime_2024": "aime24", "aime2024": "aime24", "aime2025": "aime25", "amc": "amc23",
           "math": "math500", "math_500": "math500", "minerva": "minerva_math", "olympiad_bench": "olympiadbench",
           "olympiad": "olympiadbench"}
SAMPLING_KEYS = {"n": int, "temperature": float, "top_p": float, "max_tokens": int}


@dataclass
class Benchmark:
    name: str
    rows: list[dict[str, Any]]  # problem, answer (str, or list[str] = any of these)[, level, subject]
    sampling: dict[str, Any] = field(default_factory=dict)  # per-benchmark overrides of SamplingSettings


def registry_name(name: str) -> str | None:
    name = name.strip()
    return name if name in REGISTRY else ALIASES.get(name.lower())


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


def _name_of_path(path: str) -> str:
    """`data/aime24.jsonl` -> aime24; `data/aime24/test.jsonl` -> aime24 (a split's file is named by its folder)."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    stem = parts[-1].split(".")[0]
    is_split = stem in ("train", "test", "validation", "val", "dev") or stem.startswith(("train-", "test-"))
    return parts[-2] if is_split and len(parts) > 1 and parts[-2] else stem


def resolve_benchmark(entry: str, dataset_name: str | None = None) -> BenchmarkSpec:
    """A registry name (hub id), 'synthetic' (the demo's test split), 'NAME=PATH' or a path (a local file/folder)."""
    entry = entry.strip()
    if "=" in entry:
        name, path = (s.strip() for s in entry.split("=", 1))
        if not name or not path:
            raise MathGRPOError(f"benchmarks: {entry!r} must be NAME=PATH")
        if not os.path.exists(path):
            raise MathGRPOError(f"benchmarks: {name}: {path} does not exist")
        known = registry_name(name)
        return BenchmarkSpec(name, path, split=REGISTRY[known].split if known else "test")
    known = registry_name(entry)
    if known:
        spec = REGISTRY[known]
        return spec if known == entry else BenchmarkSpec(entry, spec.source, spec.split, spec.config, spec.schema)
    if entry == "synthetic":
        path = _synthetic_test_file(dataset_name)
        if path is None:
            raise MathGRPOError(f"benchmarks: 'synthetic' needs the demo data (a folder with test.jsonl) as "
                                f"dataset_name, got {dataset_name!r}; or write synthetic=PATH")
        return BenchmarkSpec("synthetic", path, split="test")
    if os.path.exists(entry):
        return BenchmarkSpec(_name_of_path(entry), entry, split="test")
    known_names = ", ".join([*REGISTRY, "synthetic"])
    raise MathGRPOError(f"benchmarks: unknown benchmark {entry!r} (known: {known_names}; or NAME=PATH for a local "
                        f"file)")


def load_benchmark(spec: BenchmarkSpec, max_samples: int | None = None) -> Benchmark:
    """Every row or a loud warning: a skipped row changes what the accuracy is out of."""
    from math_grpo.data import load_problems

    local = os.path.exists(spec.source)
    # A local folder: its test file first, else the hub copy's split (aime24's is 'train'), else the only file.
    splits = ["test", spec.split, "train"] if local else [spec.split]
    try:
        dataset, report = load_problems(spec.source, split=list(dict.fromkeys(splits)), config=spec.config,
                                        limit=max_samples, verbose=False)
    except MathGRPOError as exc:
        raise MathGRPOError(f"benchmark {spec.name}: {exc}") from None
    if report.skipped:
        print(f"[benchmarks] {spec.name}: {report.summary()}", file=sys.stderr, flush=True)
    return Benchmark(spec.name, dataset.to_list())


def parse_sampling(entries: Sequence[str] | None, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """'aime24: n=16 temperature=0.6 top_p=0.95' (spaces or commas) -> {'aime24': {'n': 16, ...}}."""
    out: dict[str, dict[str, Any]] = {}
    for entry in entries or []:
        name, sep, rest = entry.partition(":")
        name = name.strip()
        if not sep or not name:
            raise MathGRPOError(f"eval_sampling: {entry!r} must be 'BENCHMARK: key=value ...' "
                                f"(keys: {', '.join(SAMPLING_KEYS)})")
        if name not in names and not registry_name(name):  # a recipe's entry for a benchmark not run now is fine
            raise MathGRPOError(f"eval_sampling: {name!r} is not one of the benchmarks ({', '.join(names)})")
        settings: dict[str, Any] = {}
        for item in rest.replace(",", " ").split():
            key, eq, value = item.partition("=")
            if not eq or key not in SAMPLING_KEYS:
                raise MathGRPOError(f"eval_sampling: {name}: {item!r} is not key=value with a key in "
                                    f"{', '.join(SAMPLING_KEYS)}")
            try:
                settings[key] = SAMPLING_KEYS[key](value)
            except ValueError:
                raise MathGRPOError(f"eval_sampling: {name}: {key}={value!r} is not a number") from None
        if settings.get("n", 1) < 1:
            raise MathGRPOError(f"eval_sampling: {name}: n must be >= 1")
        out[name] = settings
    return out


def load_benchmarks(entries: Sequence[str], max_samples: int | None = None, dataset_name: str | None = None,
                    sampling: Sequence[str] | None = None) -> list[Benchmark]:
    """The benchmarks of a recipe, each with its `eval_sampling` overrides."""
    specs = [resolve_benchmark(e, dataset_name) for e in entries]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise MathGRPOError(f"benchmarks: duplicate names {names}")
    overrides = parse_sampling(sampling, names)
    benches = [load_benchmark(s, max_samples) for s in specs]
    for bench in benches:
        bench.sampling = overrides.get(bench.name, {})
    return benches


def dry_run_rows(benches: Sequence[Benchmark]) -> list[dict[str, Any]]:
    """What the loader made of each row: benchmark, index, problem, answer[, level, subject]."""
    rows = []
    for bench in benches:
        for i, row in enumerate(bench.rows):
            out = {"benchmark": bench.name, "index": i, "problem": row["problem"], "answer": row["answer"]}
            for key in ("level", "subject"):
                if row.get(key) not in (None, ""):
                    out[key] = row[key]
            rows.append(out)
    return rows
