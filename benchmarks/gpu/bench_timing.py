"""Where a GRPO step's wall time goes: generation, reward, weight sync, scoring, training, evaluation.

TRL 1.16 already times its phases (`profiling_context`: vLLM.generate, transformers.generate, sync_weights,
_calculate_rewards, _prepare_inputs, _get_per_token_logps_and_entropies, compute_loss) but reports them only
to W&B / MLflow / Trackio, none of which the GPU machine has. `install()` keeps those durations in memory
instead and a callback writes one JSON line per optimizer step to BENCH_TIMING_OUT, with the step's wall
time, tokens, the server-mode sync split (ServerVLLMGeneration.last_sync_s / last_check_s), the evaluation
callback's blocking time and peak CUDA memory. The project's code is untouched: `hook/sitecustomize.py`
installs this in the training processes when the hook folder is on PYTHONPATH, so runs started by
launch/grpo.sh are timed too.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from typing import Any

GENERATION = ("vLLM.generate", "transformers.generate", "transformers.generate_batch")


class _Events:
    """Profiled intervals (name, start, end) of the main process, drained once per step."""

    def __init__(self) -> None:
        self.items: list[tuple[str, float, float]] = []
        self.totals: dict[str, float] = defaultdict(float)

    def add(self, name: str, start: float, end: float) -> None:
        self.items.append((name, start, end))

    def drain(self) -> list[tuple[str, float, float]]:
        items, self.items = self.items, []
        return items


EVENTS = _Events()
_INSTALLED = False


def _inside(t0: float, t1: float, spans: list[tuple[float, float]]) -> bool:
    return any(a - 1e-6 <= t0 and t1 <= b + 1e-6 for a, b in spans)


def summarize_events(items: list[tuple[str, float, float]]) -> dict[str, float]:
    """Seconds per phase of one step; logprob forwards inside _prepare_inputs count as scoring."""
    by: dict[str, float] = defaultdict(float)
    prep_spans = [(a, b) for n, a, b in items if n == "_prepare_inputs"]
    for name, a, b in items:
        d = b - a
        if name in GENERATION:
            by["generation_s"] += d
        elif name == "sync_weights":
            by["sync_rollout_path_s"] += d
        elif name == "_calculate_rewards":
            by["reward_s"] += d
        elif name == "_prepare_inputs":
            by["prepare_inputs_s"] += d
        elif name == "_get_per_token_logps_and_entropies":
            by["scoring_logps_s" if _inside(a, b, prep_spans) else "loss_logps_s"] += d
        elif name == "compute_loss":
            by["compute_loss_s"] += d
        elif name == "training_step":
            by["training_step_s"] += d
        elif name.startswith("sync_all"):
            by[name + "_s"] += d
    return dict(by)


def _sync_cuda(torch: Any) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def engine_probe(trainer: Any, repeats: int = 3) -> dict | None:
    """Rollout-shaped generation straight on the trainer's engine, before training: the raw anchor.

    Colocate: `LLM.generate` on TRL's own engine, prompts duplicated n times with n=1 as TRL sends them.
    Server: one `POST /v1/completions` with n generations per prompt (TRL's request, minus TRL). Fresh prompts
    for every repeat, after one warm-up.
    """
    args = trainer.args
    vg = getattr(trainer, "vllm_generation", None)
    if not args.use_vllm or vg is None:
        return None
    per_batch = args.generation_batch_size // args.num_generations
    tok = trainer.processing_class
    texts = trainer.train_dataset["prompt"][: per_batch * (repeats + 1)]
    ids = [tok(t)["input_ids"] for t in texts]
    extra = dict(args.generation_kwargs or {})
    runs = []
    for r in range(repeats + 1):
        batch = ids[r * per_batch:(r + 1) * per_batch]
        t0 = time.perf_counter()
        if args.vllm_mode == "colocate":
            if not trainer.accelerator.is_main_process:
                return None
            from vllm import SamplingParams

            sp = SamplingParams(n=1, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_completion_length,
                                logprobs=0, **extra)
            outs = vg.llm.generate([{"prompt_token_ids": p} for p in batch for _ in range(args.num_generations)],
                                   sampling_params=sp, use_tqdm=False)
            tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
        else:
            if not trainer.accelerator.is_main_process:
                return None
            http = getattr(vg, "http", None)
            if http is None:
                return None
            choices = http.completions(batch, n=args.num_generations, temperature=args.temperature, top_p=args.top_p,
                                       max_tokens=args.max_completion_length, logprobs=0, return_token_ids=True,
                                       **extra)
            tokens = sum(len(c.get("token_ids") or []) for c in choices)
        dt = time.perf_counter() - t0
        if r > 0:
            runs.append({"seconds": dt, "completion_tokens": tokens, "tok_s": tokens / dt})
    med = sorted(x["tok_s"] for x in runs)[len(runs) // 2]
    print(f"[probe] {args.vllm_mode}: {per_batch} prompts x {args.num_generations}: median {med:.0f} tok/s", flush=True)
    return {"event": "engine_probe", "mode": args.vllm_mode, "prompts": per_batch, "n": args.num_generations,
            "max_tokens": args.max_completion_length, "runs": runs, "median_tok_s": med}


def install(out_path: str | None = None) -> None:
    """Patch TRL's profiling sink and GRPOTrainer so every step is timed (call before the trainer is built)."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOTrainer
    from trl.extras import profiling

    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    out_path = out_path or os.environ.get("BENCH_TIMING_OUT") or "bench_timing.jsonl"
    original_log = profiling.ProfilingContext._log_metrics

    def _log_metrics(self: Any, duration: float) -> None:
        if self.is_main_process:
            end = time.perf_counter()
            EVENTS.add(self.name.split(".", 1)[-1], end - duration, end)
        original_log(self, duration)

    profiling.ProfilingContext._log_metrics = _log_metrics

    original_training_step = GRPOTrainer.training_step

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original_training_step(self, *args, **kwargs)
        finally:
            EVENTS.add("training_step", t0, time.perf_counter())

    GRPOTrainer.training_step = training_step

    original_init = GRPOTrainer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        timer = StepTimer(self, out_path)
        self.add_callback(timer)
        vg = getattr(self, "vllm_generation", None)
        if vg is not None:
            _wrap_sync(vg, timer)

    GRPOTrainer.__init__ = __init__

    class StepTimer(TrainerCallback):
        def __init__(self, trainer: Any, path: str):
            self.trainer = trainer
            self.path = path
            self.is_main = trainer.accelerator.is_main_process
            self.t_prev = time.perf_counter()
            self.t_begin = self.t_prev
            self.tokens_prev = 0
            self.sync: dict[str, float] = defaultdict(float)
            if self.is_main:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

        def _eval_cb(self) -> Any:
            return next((cb for cb in self.trainer.callback_handler.callbacks if hasattr(cb, "blocked_s")), None)

        def on_train_begin(self, args, state, control, **kwargs):
            if os.environ.get("BENCH_ENGINE_PROBE") == "1":
                record = engine_probe(self.trainer)
                if self.is_main and record:
                    with open(self.path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
            _sync_cuda(torch)
            self.t_prev = self.t_begin = time.perf_counter()
            self.tokens_prev = state.num_input_tokens_seen
            EVENTS.drain()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            if self.is_main:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"event": "train_begin", "time": time.time(),
                                        "generation_batch_size": args.generation_batch_size,
                                        "per_device_train_batch_size": args.per_device_train_batch_size,
                                        "gradient_accumulation_steps": args.gradient_accumulation_steps,
                                        "num_generations": args.num_generations,
                                        "max_completion_length": args.max_completion_length,
                                        "world_size": self.trainer.accelerator.num_processes,
                                        "vllm_mode": args.vllm_mode if args.use_vllm else None}) + "\n")
            return control

        def on_step_end(self, args, state, control, **kwargs):
            _sync_cuda(torch)
            now = time.perf_counter()
            record: dict[str, Any] = {"event": "step", "step": state.global_step, "wall_s": now - self.t_prev,
                                      "since_begin_s": now - self.t_begin,
                                      "tokens": state.num_input_tokens_seen - self.tokens_prev}
            self.t_prev = now
            self.tokens_prev = state.num_input_tokens_seen
            record.update(summarize_events(EVENTS.drain()))
            record.update({k: v for k, v in self.sync.items()})
            self.sync.clear()
            metrics = self.trainer._metrics.get("train", {})
            for key in ("completions/mean_length", "completions/min_length", "completions/max_length",
                        "completions/clipped_ratio"):
                if metrics.get(key):
                    record[key] = metrics[key][-1]
            cb = self._eval_cb()
            if cb is not None:
                record["eval_blocked_total_s"] = cb.blocked_s
                record["eval_wall_total_s"] = cb.eval_s
            if torch.cuda.is_available():
                record["peak_alloc_gib"] = torch.cuda.max_memory_allocated() / 2**30
                record["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
                torch.cuda.reset_peak_memory_stats()
            if self.is_main:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                print("[timing] " + " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in record.items() if k != "event"), flush=True)
            return control

        def on_train_end(self, args, state, control, **kwargs):
            cb = self._eval_cb()
            if self.is_main:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"event": "train_end", "time": time.time(),
                                        "train_wall_s": time.perf_counter() - self.t_begin,
                                        "eval_blocked_total_s": getattr(cb, "blocked_s", None),
                                        "eval_wall_total_s": getattr(cb, "eval_s", None),
                                        "num_evals": len(getattr(cb, "results", []) or [])}) + "\n")
            return control

    def _wrap_sync(vg: Any, timer: Any) -> None:
        """Time every sync (rollout path and the eval callback's forced ones) and its pure/check split."""
        inner = vg.sync_weights

        def sync_weights() -> None:
            t0 = time.perf_counter()
            inner()
            timer.sync["sync_all_s"] += time.perf_counter() - t0
            timer.sync["sync_count"] += 1
            if hasattr(vg, "last_sync_s"):
                timer.sync["sync_transfer_s"] += vg.last_sync_s
                timer.sync["sync_check_s"] += vg.last_check_s

        vg.sync_weights = sync_weights
