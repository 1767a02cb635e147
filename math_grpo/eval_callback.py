"""Benchmark evaluation during GRPO: at step 0, every `eval_steps`, and at the end.

In server mode the evaluation runs on the same vLLM server as the rollouts. It first forces a weight sync
(the sync is otherwise lazy, so the server would still hold the previous step's weights), then sends the
benchmark requests from a background thread while training goes on; the next sync waits for them, because
it changes the weights under them. Only rank 0 talks HTTP; every rank joins the sync (ZeRO-3 gathers).
A failed evaluation is logged and training continues: an evaluation must never cost a run.
"""

from __future__ import annotations

import copy
import threading
import time
import traceback
from typing import Any

from transformers import TrainerCallback

from math_grpo.checkpoints import broadcast_from_main
from math_grpo.configs import EVAL_BACKENDS, GRPOScriptArguments, uses_server
from math_grpo.errors import MathGRPOError
from math_grpo.evaluation import (
    Benchmark,
    EvalResult,
    SamplingSettings,
    ServerGenerator,
    TransformersGenerator,
    evaluate,
    load_benchmarks,
    write_eval_jsonl,
)
from math_grpo.server_recovery import pause_point, read_status, recover
from math_grpo.trl_adapter import force_sync


class BenchmarkEvalCallback(TrainerCallback):
    """Runs `evaluation.evaluate` on the configured benchmarks and logs eval/* through the trainer's callbacks."""

    def __init__(self, trainer: Any, script_args: GRPOScriptArguments, run_dir: str, tokenizer: Any,
                 benchmarks: list[Benchmark] | None, backend: str, overlap: bool = True):
        self.trainer = trainer
        self.script_args = script_args
        self.run_dir = run_dir
        self.tokenizer = tokenizer
        self.benchmarks = benchmarks or []
        self.backend = backend
        self.overlap = overlap and backend == "server"
        self.sampling = SamplingSettings.from_args(script_args)
        self.template = script_args.prompt_template
        self.grader_mode = script_args.eval_grader_mode
        self.grader_timeout = script_args.grader_timeout
        self.num_samples_logged = script_args.eval_num_samples_logged
        self.is_main = trainer.accelerator.is_main_process
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[int, EvalResult | None, str | None, float]] = []
        self._lock = threading.Lock()
        self._final_done = False
        self._last_eval_step: int | None = None
        self.blocked_s = 0.0  # time the training loop spent on evaluation (sync + waits), over the run
        self.eval_s = 0.0  # wall time of the evaluations themselves
        self.results: list[EvalResult] = []
        self._lost: int | None = None  # the step of an evaluation lost with the vLLM server (main process)
        if backend == "server":
            trainer.vllm_generation.before_sync.append(self.wait)
            trainer.vllm_generation.after_recovery.append(self.retry_lost)

    # -- scheduling -----------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self._run(state.global_step, final=False)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self._flush(state)
        final = state.global_step >= state.max_steps or control.should_training_stop
        # TrainerState.compute_steps turned a fractional eval_steps into steps; unset: only start and end.
        every = int(state.eval_steps) if args.eval_steps and args.eval_steps > 0 else None
        if final:
            self._run(state.global_step, final=True)
        elif every and state.global_step % every == 0:
            self._run(state.global_step, final=False)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if not self._final_done:
            self._run(state.global_step, final=True)
        self.wait()
        self._flush(state)
        if self.is_main and self.results:
            n = len(self.results)
            print(f"[eval] {n} evaluations: {self.eval_s:.1f} s of evaluation, {self.blocked_s:.1f} s of it blocking "
                  f"training ({self.blocked_s / n:.2f} s per evaluation)", flush=True)
        return control

    # -- work -----------------------------------------------------------------------------------------
    def _run(self, step: int, final: bool) -> None:
        if final:
            self._final_done = True
        if self._last_eval_step == step:
            return
        self._last_eval_step = step
        t0 = time.perf_counter()
        if self.backend == "server":
            self.wait()  # the previous evaluation must finish before the weights change under it
            try:
                force_sync(self.trainer)  # every rank: collectives
            except MathGRPOError:
                raise  # a failed sync check must stop the run, evaluation or not
            if self.is_main:
                if self.overlap and not final:
                    self._thread = threading.Thread(target=self._evaluate, args=(step,), daemon=True,
                                                    name=f"eval-step-{step}")
                    self._thread.start()
                else:
                    self._evaluate(step)
            if not self.overlap or final:
                self._recover_lost_now()  # every rank
        elif self.is_main:
            self._evaluate(step)
        self.blocked_s += time.perf_counter() - t0
        if final or not self.overlap:
            self._flush(self.trainer.state)

    def _generator(self) -> Any:
        if self.backend == "server":
            return ServerGenerator(self.trainer.vllm_generation.http, timeout=self.script_args.eval_request_timeout)
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        return TransformersGenerator(model, self.tokenizer)

    def _restarts(self) -> tuple[int, int]:
        recovery = getattr(self.trainer.vllm_generation, "recovery", None) if self.backend == "server" else None
        return (recovery.restarts if recovery is not None else 0, int(read_status().get("restarts", 0)))

    def _evaluate(self, step: int, retry: bool = False) -> None:
        t0 = time.perf_counter()
        before = self._restarts()
        pause_point("eval", step)  # tests: kill the server at a known point
        try:
            result = evaluate(self._generator(), self.benchmarks, self.sampling, template=self.template,
                              grader_mode=self.grader_mode, grader_timeout=self.grader_timeout, step=step)
            error = None
        except Exception as exc:  # an evaluation must never cost the run
            result = None
            error = f"{type(exc).__name__}: {exc}" if isinstance(exc, MathGRPOError) else traceback.format_exc(limit=3)
        recovery = getattr(self.trainer.vllm_generation, "recovery", None) if self.backend == "server" else None
        # Lost with the server (or answered partly by a restarted one, holding other weights): not a result.
        if recovery is not None and (self._restarts() != before or (error is not None and recovery.is_lost(error))):
            if not retry:
                self._lost = step  # run again once the server is back with this step's weights (`retry_lost`)
                return
            result, error = None, "evaluation lost to a vLLM server restart again; skipped"
        with self._lock:
            self._pending.append((step, result, error, time.perf_counter() - t0))

    def retry_lost(self) -> None:
        """Every rank, once a lost server is back with the full weights: the evaluation lost with it runs once
        more if the weights are still those of its step, else it is skipped with a line."""
        step, self._lost = self._lost, None
        if step is None or not self.is_main:
            return
        if step != self.trainer.state.global_step:
            with self._lock:
                self._pending.append((step, None, "evaluation lost to a vLLM server restart; skipped (the weights "
                                      "have moved on since)", 0.0))
            return
        print(f"[eval] step {step}: evaluation lost to a vLLM server restart; running it again", flush=True)
        self._thread = threading.Thread(target=self._evaluate, args=(step, True), daemon=True,
                                        name=f"eval-step-{step}-again")
        self._thread.start()

    def _recover_lost_now(self) -> None:
        """Every rank, after an evaluation in the training thread: if it was lost with the server, wait for the
        server, push the weights and run it again (once); a server that does not come back skips it."""
        if not broadcast_from_main(self._lost is not None, self.trainer.accelerator):
            return
        vg = self.trainer.vllm_generation
        why = "not lost with the server"
        try:
            if recover(vg, "an evaluation request was lost", vg._broadcast):
                self.wait()  # the evaluation `retry_lost` started again
                return
        except MathGRPOError as exc:
            why = str(exc)
        step, self._lost = self._lost, None
        if step is not None:
            with self._lock:
                self._pending.append((step, None, f"evaluation lost to the vLLM server; skipped: {why}", 0.0))

    def wait(self) -> None:
        """Block until the in-flight evaluation (if any) is done; counted as evaluation overhead."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            t0 = time.perf_counter()
            thread.join()
            self.blocked_s += time.perf_counter() - t0
        self._thread = None

    def _flush(self, state: Any) -> None:
        """Log finished evaluations from the main thread (callbacks and W&B are not thread-safe)."""
        if not self.is_main:
            return
        with self._lock:
            done, self._pending = self._pending, []
        for step, result, error, seconds in done:
            self.eval_s += seconds
            if error is not None:
                print(f"[eval] step {step}: evaluation failed, training goes on: {error.strip().splitlines()[-1]}",
                      flush=True)
                self._emit({"eval/failed": 1.0, "step": step}, state)
                continue
            self.results.append(result)
            path = write_eval_jsonl(self.run_dir, result)
            logs = {**result.metrics, "eval/seconds": seconds, "eval/blocked_seconds_total": self.blocked_s,
                    "step": step}
            self._emit(logs, state)
            self._log_samples(result, step)
            acc = result.metrics.get("eval/accuracy", 0.0)
            fmt = result.metrics.get("eval/format_accuracy", 0.0)
            print(f"[eval] step {step}: accuracy {acc:.3f}, format {fmt:.3f} ({seconds:.1f} s; {path})", flush=True)

    def _emit(self, logs: dict[str, Any], state: Any) -> None:
        trainer = self.trainer
        state.log_history.append(dict(logs))
        # `on_log` clears control.should_log: use a copy, or the Trainer's own log for this step is dropped.
        control = trainer.callback_handler.on_log(trainer.args, state, copy.copy(trainer.control), logs)
        trainer.control.should_training_stop |= control.should_training_stop

    def _log_samples(self, result: EvalResult, step: int) -> None:
        run = next((cb.wandb_run for cb in self.trainer.callback_handler.callbacks
                    if getattr(cb, "wandb_run", None) is not None), None)
        if run is None:
            return
        try:
            import wandb

            cols = ["step", "benchmark", "problem", "answer", "response", "format_reward", "answer_reward"]
            table = wandb.Table(columns=cols)
            for r in result.samples(self.num_samples_logged):
                table.add_data(step, r["benchmark"], r["problem"][:500], r["answer"], r["response"],
                               r["format_reward"], r["answer_reward"])
            run.log({"eval/samples": table, "train/global_step": step})
        except Exception as exc:
            print(f"[wandb] eval samples table failed ({type(exc).__name__}); continuing", flush=True)


def resolve_backend(trainer: Any, requested: str) -> str:
    if requested not in EVAL_BACKENDS:
        raise MathGRPOError(f"eval_backend: {requested!r} is not one of {', '.join(EVAL_BACKENDS)}")
    if requested == "auto":
        return "server" if uses_server(trainer) else "transformers"
    if requested == "server" and not uses_server(trainer):
        raise MathGRPOError("eval_backend: 'server' needs use_vllm: true and vllm_mode: server")
    return requested


def add_eval_callback(trainer: Any, script_args: GRPOScriptArguments, run_dir: str,
                      tokenizer: Any) -> BenchmarkEvalCallback | None:
    """Load the benchmarks (rank 0; a bad name or path fails now) and attach the callback."""
    if not script_args.benchmarks:
        return None
    backend = resolve_backend(trainer, script_args.eval_backend)
    if backend == "transformers" and trainer.accelerator.num_processes > 1 and trainer.is_deepspeed_enabled:
        raise MathGRPOError("eval_backend: transformers generation on rank 0 cannot run under DeepSpeed with several "
                            "processes; use the server (vllm_mode: server)")
    if backend == "server" and not hasattr(trainer.vllm_generation, "before_sync"):
        raise MathGRPOError("evaluation on the server needs math_grpo.trl_adapter.MathGRPOTrainer")
    benches = None
    if trainer.accelerator.is_main_process:
        benches = load_benchmarks(script_args.benchmarks, script_args.eval_max_samples, script_args.dataset_name,
                                  getattr(script_args, "eval_sampling", None))
        sizes = ", ".join(f"{b.name} ({len(b.rows)})" for b in benches)
        print(f"[eval] benchmarks: {sizes}; backend {backend}", flush=True)
    callback = BenchmarkEvalCallback(trainer, script_args, run_dir, tokenizer, benches, backend)
    trainer.add_callback(callback)
    return callback
