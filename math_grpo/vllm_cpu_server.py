"""Entry point of the CPU vLLM server: vLLM's own OpenAI server module, less one busy-wait.

vLLM's shared-memory message queue keeps each reader spinning (`sched_yield` in a loop) for 1 s after every
message, so that the next one is picked up at once. On a GPU host that spends a spare core; on a 2-core machine
it takes the trainer's core after every request (a generation, a weight reload, a logprob check). Measured on the
2-core dev VM, the demo's GRPO step with the SFT baseline beside it: 5.8 s with the spin, 4.4 s without
(benchmarks/RESULTS.md, issue 15 item 5). vLLM has no setting for it, so this module shortens the readers' spin
to 20 ms (they then wait on their socket) and then runs `vllm.entrypoints.openai.api_server` unchanged. One
side effect: a worker waiting on its socket takes a moment to see SIGTERM, and vLLM's shutdown (timeout 0)
kills it instead, which logs an EngineDeadError traceback in the server log at every stop. vLLM's CPU platform starts its
engine processes with `spawn`, which imports this module again in each of them as their main module: so the
change is made at import, not under `__main__`, and `__main__` stays this module. GPU servers run vLLM as is.

    python -m math_grpo.vllm_cpu_server --model DIR ...   (the arguments of vllm.entrypoints.openai.api_server)
"""

from __future__ import annotations

import runpy
import sys

SPIN_S = 0.02  # seconds a reader still spins after a message (vLLM: 1.0)


def disable_busy_poll() -> bool:
    """Make vLLM's shared-memory readers wait without spinning; False (and a note) if vLLM changed shape."""
    try:
        from vllm.distributed.device_communicators import shm_broadcast

        cls = shm_broadcast.SpinCondition
        init = cls.__init__
    except (ImportError, AttributeError) as exc:
        print(f"[vllm_cpu_server] note: cannot turn off vLLM's busy-poll ({exc}); running vLLM as it is",
              file=sys.stderr, flush=True)
        return False

    def short_spin(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        if self.is_reader:
            self.busy_loop_s = SPIN_S

    cls.__init__ = short_spin
    return True


disable_busy_poll()  # at import: in this process and in every engine process spawned from it

if __name__ == "__main__":
    runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__")
