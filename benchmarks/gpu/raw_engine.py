"""The raw vLLM engine's throughput on the rollouts' prompts and sampling: the anchor for rollout tokens/s.

Same model folder, same r1_zero prompts as token ids (tokenized as TRL does), same sampling as the GRPO
runs (n generations per prompt, temperature 1, top_p 1, `ignore_eos` so every completion is max_tokens long,
logprobs of the sampled token as TRL asks for), the same GPU memory fraction as the server / colocate engine.
Each case is run `--repeats` times on fresh prompts (no prefix-cache help across repeats), after a warm-up.
Cases: the rollout batch with n=8 (as the server gets it), the same batch as n=1 duplicates (as TRL's
colocate mode sends it; TRL's colocate engine also sets max_num_batched_tokens=4096, see
`--max-num-batched-tokens`), and a larger batch.

    python benchmarks/gpu/raw_engine.py --model DIR --data DIR/train.jsonl --out raw.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def load_prompt_ids(model: str, data: str, count: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from math_grpo.data import format_prompt

    tok = AutoTokenizer.from_pretrained(model)
    with open(data, encoding="utf-8") as f:
        problems = [json.loads(line)["problem"] for line in f if line.strip()][:count]
    if len(problems) < count:
        raise SystemExit(f"error: {data}: need {count} problems, found {len(problems)}")
    return [tok(format_prompt(p))["input_ids"] for p in problems]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="train.jsonl of the GRPO run")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompts", type=int, default=32, help="unique prompts per rollout batch")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--large-prompts", type=int, default=128, help="unique prompts of the large case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-num-batched-tokens", type=int, default=None)
    parser.add_argument("--variants", action="store_true",
                        help="also the rollout batch without detokenization and without logprobs (where the "
                             "engine's time goes on the CPU side)")
    args = parser.parse_args(argv)

    from vllm import LLM, SamplingParams

    need = (args.repeats + 1) * (3 * args.prompts) + 2 * args.repeats * args.large_prompts
    prompt_ids = load_prompt_ids(args.model, args.data, need)
    t0 = time.perf_counter()
    kwargs = {}
    if args.max_num_batched_tokens:
        kwargs["max_num_batched_tokens"] = args.max_num_batched_tokens
    llm = LLM(model=args.model, dtype="bfloat16", gpu_memory_utilization=args.gpu_memory_utilization,
              max_model_len=args.max_model_len, logprobs_mode="processed_logprobs", seed=0, **kwargs)
    start_s = time.perf_counter() - t0
    sched = llm.llm_engine.vllm_config.scheduler_config
    engine = {"start_s": start_s, "max_num_seqs": sched.max_num_seqs,
              "max_num_batched_tokens": sched.max_num_batched_tokens,
              "gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": args.max_model_len}
    print(f"[raw] engine up in {start_s:.0f} s: {engine}", flush=True)

    cursor = 0

    def take(k: int) -> list[list[int]]:
        nonlocal cursor
        chunk = prompt_ids[cursor:cursor + k]
        cursor += k
        return chunk

    def run(prompts: list[list[int]], n: int, detokenize: bool = True, logprobs: int | None = 0) -> dict:
        sp = SamplingParams(n=n, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=args.max_tokens,
                            ignore_eos=True, logprobs=logprobs, detokenize=detokenize)
        inputs = [{"prompt_token_ids": p} for p in prompts]
        t = time.perf_counter()
        outs = llm.generate(inputs, sampling_params=sp, use_tqdm=False)
        dt = time.perf_counter() - t
        gen = sum(len(o.token_ids) for out in outs for o in out.outputs)
        prompt_tokens = sum(len(p) for p in prompts) * n
        return {"seconds": dt, "completion_tokens": gen, "prompt_tokens": prompt_tokens, "tok_s": gen / dt}

    run(take(args.prompts), args.n)  # warm-up (CUDA graphs, sampler kernels)
    cases = {}
    plan = [("rollout_n8", args.prompts, args.n, 1, {}), ("rollout_dup_n1", args.prompts, 1, args.n, {}),
            ("large_n8", args.large_prompts, args.n, 1, {})]
    if args.variants:
        plan = [plan[0], ("rollout_n8_no_detok", args.prompts, args.n, 1, {"detokenize": False}),
                ("rollout_n8_no_detok_no_logprobs", args.prompts, args.n, 1, {"detokenize": False, "logprobs": None}),
                plan[2], ("large_n8_no_detok_no_logprobs", args.large_prompts, args.n, 1,
                          {"detokenize": False, "logprobs": None})]
    for name, k, n, dup, kw in plan:
        runs = []
        for _ in range(args.repeats):
            prompts = take(k)
            prompts = [p for p in prompts for _ in range(dup)]
            runs.append(run(prompts, n, **kw))
        tok_s = [r["tok_s"] for r in runs]
        cases[name] = {"sequences": k * n * dup, "runs": runs, "median_tok_s": statistics.median(tok_s),
                       "median_seconds": statistics.median(r["seconds"] for r in runs)}
        print(f"[raw] {name}: {k * n * dup} sequences x {args.max_tokens} tokens: median "
              f"{cases[name]['median_tok_s']:.0f} tok/s ({cases[name]['median_seconds']:.2f} s)", flush=True)
    result = {"engine": engine, "prompt_tokens_mean": statistics.mean(len(p) for p in prompt_ids),
              "max_tokens": args.max_tokens, "cases": cases}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
