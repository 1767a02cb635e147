"""Evaluate checkpoints on math benchmarks and print one table (the same code as the in-training evaluation).

    # what the loaders make of the benchmarks, one JSON object per row, no model:
    python recipes/evaluate.py --dry_run --benchmarks aime24 olympiadbench=data/olympiadbench.jsonl
    # several checkpoints through a vLLM server started for each (CPU build without GPUs), one table:
    python recipes/evaluate.py --config recipes/qwen2.5-math-1.5b/evaluate.yaml --model base/ run/final
    # through a running server (it must serve that checkpoint):
    python recipes/evaluate.py --model DIR --server_url http://127.0.0.1:8000 --benchmarks math500
    # in-process transformers generation (small models, tests):
    python recipes/evaluate.py --model DIR --backend transformers --benchmarks synthetic=data/test.jsonl

The table (rows = checkpoints, columns = benchmarks + their average) goes to stdout; with --output_dir also to
OUTPUT_DIR/results.md and results.json, beside OUTPUT_DIR/samples/<checkpoint>.jsonl (one line per sample).
--output_json FILE writes one checkpoint's metrics as flat eval/* keys (several: the results.json form).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from math_grpo.cli import parse_recipe, run_cli  # noqa: E402
from math_grpo.configs import EvalArguments  # noqa: E402
from math_grpo.errors import MathGRPOError  # noqa: E402


@dataclass
class EvaluateArguments(EvalArguments):
    model: list[str] = field(default_factory=list, metadata={"help": "Checkpoint folder(s) or hub id(s)."})
    dry_run: bool = field(default=False, metadata={"help": "Load the benchmarks, print each row as JSON, no model."})
    backend: str = field(default="server", metadata={"help": "'server' (vLLM) or 'transformers' (in-process)."})
    server_url: str | None = field(default=None, metadata={"help": "A running vLLM server; else one is started."})
    server_gpus: str | None = field(default=None, metadata={"help": "GPU ids for a started server (else CPU)."})
    server_port: int = field(default=8011, metadata={"help": "Port of a started server (loopback)."})
    server_dtype: str = field(default="auto", metadata={"help": "dtype of a started server (auto: fp32 on CPU)."})
    server_timeout: float = field(default=900.0, metadata={"help": "Seconds to wait for a started server's /health."})
    dataset_name: str | None = field(default=None, metadata={"help": "Demo data folder, for the 'synthetic' name."})
    prompt_template: str = field(default="r1_zero", metadata={"help": "r1_zero or question_only."})
    grader_timeout: float = field(default=2.0, metadata={"help": "CPU-time bound per graded answer (s)."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per batch (transformers backend)."})
    output_json: str | None = field(
        default=None, metadata={"help": "Write the metrics here (one checkpoint: flat eval/* keys; several: as results.json)."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "results.md, results.json and samples/*.jsonl."})
    step: int = field(default=0, metadata={"help": "Step number recorded in the outputs."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})


def checkpoint_labels(models: list[str]) -> list[str]:
    """Short unique row names: `run/final` for .../run/final, the folder name otherwise."""
    def short(path: str) -> str:
        parts = os.path.normpath(path).split(os.sep)
        generic = parts[-1] == "final" or parts[-1].startswith(("checkpoint", "step"))
        return "/".join(parts[-2:]) if generic and len(parts) > 1 else parts[-1]

    labels = [short(m) for m in models]
    if len(set(labels)) < len(labels):
        labels = [os.path.normpath(m) for m in models]
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # the same checkpoint twice (a seed check): label#2
        seen[label] = seen.get(label, 0) + 1
        labels[i] = label if seen[label] == 1 else f"{label}#{seen[label]}"
    return labels


def dry_run(args: EvaluateArguments) -> None:
    from math_grpo.benchmarks import dry_run_rows, load_benchmarks

    benches = load_benchmarks(args.benchmarks, args.eval_max_samples, args.dataset_name, args.eval_sampling)
    for row in dry_run_rows(benches):
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    sizes = ", ".join(f"{b.name} ({len(b.rows)} rows)" for b in benches)
    print(f"[eval] dry run: {sizes}", file=sys.stderr, flush=True)


def _evaluate_one(args: EvaluateArguments, model: str | None, benches: list, sampling, common: dict):
    from math_grpo.evaluation import ServerGenerator, TransformersGenerator, evaluate
    from math_grpo.models import check_model_path

    model_path = check_model_path(model, "--model") if model else None
    if args.backend == "transformers":
        from transformers import AutoModelForCausalLM

        from math_grpo.models import load_tokenizer

        tokenizer = load_tokenizer(model_path)
        lm = AutoModelForCausalLM.from_pretrained(model_path)
        return evaluate(TransformersGenerator(lm, tokenizer, args.batch_size), benches, sampling, **common)
    from math_grpo.vllm_server import VLLMServerClient

    if args.server_url:
        client = VLLMServerClient(args.server_url, timeout=args.eval_request_timeout)
        client.wait_until_healthy(min(args.server_timeout, 30.0))
        return evaluate(ServerGenerator(client, timeout=args.eval_request_timeout), benches, sampling, **common)
    from math_grpo.vllm_server import ServerProcess, ServerSpec, max_model_len_for

    gpus = args.server_gpus or None
    dtype = args.server_dtype if args.server_dtype != "auto" or gpus else "float32"
    spec = ServerSpec(model=model_path, port=args.server_port, dtype=dtype, gpus=gpus, weight_transfer=False,
                      max_model_len=max_model_len_for(model_path, args.eval_max_tokens))
    log_dir = args.output_dir or os.path.join("results", "eval_logs")
    with ServerProcess(spec, os.path.join(log_dir, "server.log")).start(args.server_timeout) as server:
        client = VLLMServerClient(server.url, timeout=args.eval_request_timeout)
        return evaluate(ServerGenerator(client, timeout=args.eval_request_timeout), benches, sampling, **common)


def run_evaluation(args: EvaluateArguments) -> dict:
    if not args.benchmarks:
        raise MathGRPOError("--benchmarks: give at least one (aime24, amc23, math500, ..., or NAME=PATH)")
    if args.dry_run:
        dry_run(args)
        return {}
    from math_grpo.benchmarks import load_benchmarks
    from math_grpo.evaluation import SamplingSettings, format_table, write_records
    from math_grpo.metrics import comparison_table

    if args.backend not in ("server", "transformers"):
        raise MathGRPOError(f"--backend: {args.backend!r} is not one of server, transformers")
    models: list[str | None] = list(args.model)
    if not models:
        if not (args.backend == "server" and args.server_url):
            raise MathGRPOError("--model: which checkpoint(s) to evaluate?")
        models = [None]
    if args.server_url and len(models) > 1:
        raise MathGRPOError("--server_url serves one checkpoint: give one --model, or none to start a server each")
    benches = load_benchmarks(args.benchmarks, args.eval_max_samples, args.dataset_name, args.eval_sampling)
    sampling = SamplingSettings.from_args(args)
    sampling.seed = args.seed
    common = dict(template=args.prompt_template, grader_mode=args.eval_grader_mode,
                  grader_timeout=args.grader_timeout, step=args.step, progress=True)
    names = [b.name for b in benches]
    labels = checkpoint_labels([m or args.server_url or "server" for m in models])
    results: dict[str, dict] = {}
    for model, label in zip(models, labels):
        print(f"[eval] {label}: {', '.join(names)}", file=sys.stderr, flush=True)
        result = _evaluate_one(args, model, benches, sampling, common)
        results[label] = result.metrics
        print(format_table(result.metrics, names), flush=True)
        n = sum(len(b.rows) for b in benches)
        print(f"[eval] {label}: {n} problems in {result.seconds:.1f} s", flush=True)
        if args.output_dir:
            path = write_records(os.path.join(args.output_dir, "samples", label.replace("/", "__") + ".jsonl"),
                                 result.records)
            print(f"[eval] samples: {path}", flush=True)
    table = comparison_table(results, names)
    print("\n" + table, flush=True)
    report = {"benchmarks": names, "models": dict(zip(labels, [m or args.server_url for m in models])),
              "step": args.step, "results": results}
    if args.output_dir:
        _write_json(os.path.join(args.output_dir, "results.json"), report)
    if args.output_json:  # one checkpoint: its metrics at the top level, as the demo and older scripts read them
        single = {"model": report["models"][labels[0]], "step": args.step, **results[labels[0]]}
        _write_json(args.output_json, single if len(labels) == 1 else report)
    if args.output_dir:
        with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as f:
            f.write(table + "\n")
        print(f"[eval] table: {os.path.join(args.output_dir, 'results.md')}", flush=True)
    return results


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_recipe((EvaluateArguments,), argv)
    run_evaluation(args)


if __name__ == "__main__":
    run_cli(main)
