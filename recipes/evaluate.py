"""Evaluate a checkpoint on math benchmarks and print a table (the same code as the in-training evaluation).

    # through a vLLM server started for this run (CPU build without GPUs), stopped at the end:
    python recipes/evaluate.py --model results/grpo_checkpoints/run/final --benchmarks math500 gsm8k
    # through a running server (it must serve that checkpoint):
    python recipes/evaluate.py --model DIR --server_url http://127.0.0.1:8000 --benchmarks math500
    # in-process transformers generation (small models, tests):
    python recipes/evaluate.py --model DIR --backend transformers --benchmarks synthetic=data/test.jsonl

Metrics go to stdout as a table and, with --output_json, to a JSON file (eval/accuracy, eval/<bench>/...);
with --output_dir, one JSONL line per (problem, sample) goes to OUTPUT_DIR/eval/step_0000.jsonl.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from math_grpo.cli import MathGRPOError, parse_recipe, run_cli  # noqa: E402
from math_grpo.configs import EvalArguments  # noqa: E402


@dataclass
class EvaluateArguments(EvalArguments):
    model: str | None = field(default=None, metadata={"help": "Checkpoint folder or hub id to evaluate."})
    backend: str = field(default="server", metadata={"help": "'server' (vLLM) or 'transformers' (in-process)."})
    server_url: str | None = field(default=None, metadata={"help": "A running vLLM server; else one is started."})
    server_gpus: str | None = field(default=None, metadata={"help": "GPU ids for a started server (else CPU)."})
    server_port: int = field(default=8011, metadata={"help": "Port of a started server (loopback)."})
    server_dtype: str = field(default="auto", metadata={"help": "dtype of a started server (auto: fp32 on CPU)."})
    server_timeout: float = field(default=900.0, metadata={"help": "Seconds to wait for a started server's /health."})
    dataset_name: str | None = field(default=None, metadata={"help": "Demo data folder, for the 'synthetic' name."})
    prompt_template: str = field(default="r1_zero", metadata={"help": "r1_zero or question_only."})
    grader_timeout: float = field(default=2.0, metadata={"help": "Wall-clock bound per graded answer (s)."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per batch (transformers backend)."})
    output_json: str | None = field(default=None, metadata={"help": "Write the metrics to this JSON file."})
    output_dir: str | None = field(default=None, metadata={"help": "Write per-sample JSONL (eval/step_0000.jsonl)."})
    step: int = field(default=0, metadata={"help": "Step number recorded in the outputs."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})


def run_evaluation(args: EvaluateArguments) -> dict:
    from math_grpo.evaluation import (
        SamplingSettings,
        ServerGenerator,
        TransformersGenerator,
        evaluate,
        format_table,
        load_benchmarks,
        write_eval_jsonl,
    )
    from math_grpo.models import check_model_path

    if not args.benchmarks:
        raise MathGRPOError("--benchmarks: give at least one (math500, gsm8k, synthetic, or NAME=PATH)")
    if args.backend not in ("server", "transformers"):
        raise MathGRPOError(f"--backend: {args.backend!r} is not one of server, transformers")
    if args.model is None and not (args.backend == "server" and args.server_url):
        raise MathGRPOError("--model: which checkpoint to evaluate?")
    model_path = check_model_path(args.model, "--model") if args.model else None
    benches = load_benchmarks(args.benchmarks, args.eval_max_samples, args.dataset_name)
    sampling = SamplingSettings.from_args(args)
    sampling.seed = args.seed
    common = dict(template=args.prompt_template, grader_mode=args.eval_grader_mode,
                  grader_timeout=args.grader_timeout, step=args.step)

    if args.backend == "transformers":
        from transformers import AutoModelForCausalLM

        from math_grpo.models import load_tokenizer

        tokenizer = load_tokenizer(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        result = evaluate(TransformersGenerator(model, tokenizer, args.batch_size), benches, sampling, **common)
    elif args.server_url:
        from math_grpo.vllm_server import VLLMServerClient

        client = VLLMServerClient(args.server_url, timeout=args.eval_request_timeout)
        client.wait_until_healthy(min(args.server_timeout, 30.0))
        result = evaluate(ServerGenerator(client, timeout=args.eval_request_timeout), benches, sampling, **common)
    else:
        from math_grpo.vllm_server import ServerProcess, ServerSpec, VLLMServerClient, max_model_len_for

        gpus = args.server_gpus or None
        dtype = args.server_dtype if args.server_dtype != "auto" or gpus else "float32"
        spec = ServerSpec(model=model_path, port=args.server_port, dtype=dtype, gpus=gpus, weight_transfer=False,
                          max_model_len=max_model_len_for(model_path, args.eval_max_tokens))
        log_dir = args.output_dir or os.path.join("results", "eval_logs")
        with ServerProcess(spec, os.path.join(log_dir, "server.log")).start(args.server_timeout) as server:
            client = VLLMServerClient(server.url, timeout=args.eval_request_timeout)
            result = evaluate(ServerGenerator(client, timeout=args.eval_request_timeout), benches, sampling,
                              **common)

    print(format_table(result.metrics, [b.name for b in benches]), flush=True)
    print(f"[eval] {sum(len(b.rows) for b in benches)} problems x {sampling.n} in {result.seconds:.1f} s", flush=True)
    if args.output_dir:
        print(f"[eval] samples: {write_eval_jsonl(args.output_dir, result)}", flush=True)
    if args.output_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
        with open(args.output_json, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "step": args.step, **result.metrics}, f, indent=2)
    return result.metrics


def main(argv: list[str] | None = None) -> None:
    (args,) = parse_recipe((EvaluateArguments,), argv)
    run_evaluation(args)


if __name__ == "__main__":
    run_cli(main)
