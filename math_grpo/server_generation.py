"""TRL's server-mode generation made bounded and recoverable: the part of the TRL coupling that talks to the
vLLM server (`math_grpo.trl_adapter` builds the trainer around it; both are the modules to read when TRL is
upgraded, and `check_trl_version` below gates both).

- `ServerVLLMGeneration` (a `VLLMGeneration`): overrides `_init_vllm` (the bounded client and the chosen sync
  backend) and `_iter_named_params` (TRL's ZeRO-3/FSDP/PEFT-aware parameter walk, here casting each tensor to
  the server's dtype: float32 master weights, a bf16 server), which the filesystem sync walks too. Its public
  `generate` and `sync_weights` add async rollouts, the sync check and the wait for a restarted server.
- Rollouts go through vLLM's token route (`math_grpo.token_rollouts`: ids in and out, no detokenization on the
  server; TRL decodes) unless `rollout_detokenize` is set or the server lacks the route; evaluation keeps
  `/v1/completions` (text).
- `BoundedVLLMClient`: TRL's client sends without a timeout and retries for about a minute. Its public `session`
  gets `BoundedAdapter` (in `check_server`, which TRL's constructor calls before its first request), so every
  request TRL makes is bounded and its errors name the server.

TRL's private names used here, each guarded by its row of `HOOKS` in tests/test_trl_contract.py (the test fails,
naming the hook, when TRL no longer has it or no longer calls it where shown):

  `_init_vllm`          override  `VLLMGeneration.__init__` calls it
  `_iter_named_params`  override  a generator `VLLMGeneration.sync_weights` walks
  `check_server` and `session` (public, but relied on to be called / used for every request) have rows too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import trl

from math_grpo.errors import MathGRPOError

SUPPORTED_TRL = ("1.16",)  # major.minor versions whose internals this module and trl_adapter were written against


def check_trl_version(version: str = trl.__version__) -> None:
    """Fail with one line (not an AttributeError deep in training) on a TRL this adapter was not written for."""
    if ".".join(version.split(".")[:2]) not in SUPPORTED_TRL:
        raise MathGRPOError(f"TRL {version} is installed but math_grpo supports TRL {', '.join(SUPPORTED_TRL)}.x "
                            f"(its trainer internals are used in math_grpo/trl_adapter.py and "
                            f"math_grpo/server_generation.py); install trl==1.16.0")


check_trl_version()

import requests  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402
from trl.generation.vllm_client import VLLMClient  # noqa: E402
from trl.generation.vllm_generation import VLLMGeneration  # noqa: E402
from urllib3.util.retry import Retry  # noqa: E402

from math_grpo.async_rollouts import RolloutPrefetcher  # noqa: E402
from math_grpo.checkpoints import broadcast_from_main  # noqa: E402
from math_grpo.errors import ServerError, WeightSyncError  # noqa: E402
from math_grpo.precision import served_dtype, torch_dtype  # noqa: E402
from math_grpo.server_recovery import ServerRecovery, pause_point, recover, rollouts_on_main  # noqa: E402
from math_grpo.token_rollouts import generate_tokens, route_problem  # noqa: E402
from math_grpo.vllm_server import VLLMServerClient  # noqa: E402
from math_grpo.weight_sync import SyncChecker, SyncSettings, tied_embedding_name, write_safetensors  # noqa: E402


class BoundedAdapter(HTTPAdapter):
    """The transport of TRL's client session: a default timeout on every request (TRL sends none), a short
    retry policy, and errors that name the server and what to look at (not a bare `Exception` from TRL)."""

    def __init__(self, base_url: str, timeout: float):
        self.base_url, self.timeout = base_url, timeout
        # TRL's own policy backs off for about a minute against a dead server: retry briefly instead.
        # read=False: a request that got no answer in time fails as a timeout (read=0 made it "unreachable").
        retry = Retry(total=2, connect=2, read=False, status=2, status_forcelist=[502, 503], backoff_factor=0.5,
                      allowed_methods=["GET", "POST"])
        super().__init__(max_retries=retry, pool_maxsize=64)

    def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        what = f"{request.method} {request.url}"
        try:
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        except requests.exceptions.Timeout:
            seconds = f"{timeout:.0f} s" if isinstance(timeout, (int, float)) else f"{timeout} s"
            raise ServerError(f"vLLM server at {self.base_url}: {what} got no answer within {seconds}") from None
        except requests.exceptions.RequestException as exc:
            raise ServerError(f"vLLM server at {self.base_url} is unreachable ({what}: {type(exc).__name__}); "
                              "did it die? see its log (server.log in the run dir)") from None
        if response.status_code != 200:
            raise ServerError(f"vLLM server at {self.base_url}: {what} -> HTTP {response.status_code}: "
                              f"{response.text.strip()[:300]}")
        return response


class BoundedVLLMClient(VLLMClient):
    """TRL's `VLLMClient` whose public `session` sends through `BoundedAdapter` (timeouts, retries, errors)."""

    def __init__(self, base_url: str, request_timeout: float, connection_timeout: float, group_port: int = 51216):
        self.request_timeout = request_timeout
        super().__init__(base_url=base_url, group_port=group_port, connection_timeout=connection_timeout)

    def check_server(self, total_timeout: float = 0.0, retry_interval: float = 2.0) -> None:
        """TRL's constructor calls this after making `session` and before its first request: the place to mount."""
        VLLMServerClient(self.base_url, timeout=10.0).wait_until_healthy(max(total_timeout, 0.1))
        adapter = BoundedAdapter(self.base_url, self.request_timeout)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)


class ServerVLLMGeneration(VLLMGeneration):
    """TRL's server-mode generation with bounded HTTP, the chosen sync backend and the check after each sync."""

    def __init__(self, *args: Any, settings: SyncSettings, rollout_detokenize: bool = False, **kwargs: Any):
        self.settings = settings
        self.rollout_detokenize = rollout_detokenize  # True: rollouts through /v1/completions (server decodes)
        self._route_note: str | None = None  # why not the token route ("" = it is used); None = not decided yet
        self._route_lock = threading.Lock()  # _sample runs in the training thread and the prefetch thread
        self.http: VLLMServerClient | None = None
        self.checker: SyncChecker | None = None
        self.before_sync: list[Callable[[], None]] = []  # e.g. wait for in-flight evaluation requests
        self.num_syncs = 0
        self.last_sync_s = 0.0
        self.last_check_s = 0.0
        self.last_record: dict[str, float] = {}
        self.step_fn: Callable[[], int] = lambda: -1
        self.on_record: Callable[[dict[str, float]], None] | None = None
        self._tied_name: str | None = None
        self.sync_dtype: str | None = None  # the server's dtype (from /server_info), set on the main process
        self.prefetcher: RolloutPrefetcher | None = None  # set when async_rollouts is on
        self.next_prompts: list[list[int]] | None = None  # this rank's next generation batch (token ids)
        self.prefetch_allowed: Callable[[], bool] = lambda: True
        self.recovery: ServerRecovery | None = None  # rank 0: a lost server is waited for (math_grpo.server_recovery)
        self.after_recovery: list[Callable[[], None]] = []  # every rank, once the full weights are back on it
        super().__init__(*args, **kwargs)

    def _init_vllm(self) -> None:
        if self.mode != "server":
            super()._init_vllm()
            return
        accelerator = self.accelerator
        base_url = self.server_base_url or f"http://{self.server_host}:{self.server_port}"
        if accelerator.is_main_process:
            self.vllm_client = BoundedVLLMClient(base_url, self.settings.request_timeout, self.server_timeout,
                                                 group_port=self.group_port)
            self.http = VLLMServerClient(base_url, timeout=self.settings.request_timeout, model=self.vllm_client.model)
            self.recovery = ServerRecovery(base_url, self.settings.restart_wait_s)
            if self.settings.backend == "nccl":
                self.vllm_client.init_communicator(device=accelerator.device)
            # Fails now, naming VLLM_SERVER_DEV_MODE, not at the first sync; says the dtype the server serves
            # (float32 master weights are cast to it once per sync: a sync moves the bytes the server holds).
            self.sync_dtype = served_dtype(self.http.server_info())
        self._tied_name = tied_embedding_name(self.model)
        accelerator.wait_for_everyone()

    def _iter_named_params(self) -> Any:
        """TRL's parameter walk, each tensor cast to the server's dtype on the rank that sends it."""
        dtype = torch_dtype(self.sync_dtype) if self.accelerator.is_main_process else None
        for name, param in super()._iter_named_params():
            yield name, (param.to(dtype) if dtype is not None and param.dtype != dtype else param)

    def sync_weights(self) -> None:
        for hook in list(self.before_sync):
            hook()
        try:
            self._sync_once()
        except MathGRPOError as exc:  # on every rank; a lost server is waited for, then gets the full weights
            if self.mode != "server" or not recover(self, str(exc), self._broadcast):
                raise

    def _broadcast(self, value: Any) -> Any:
        return broadcast_from_main(value, self.accelerator)

    def _sync_once(self) -> None:
        t0 = time.perf_counter()
        if self.mode == "server" and self.settings.backend == "filesystem":
            self._filesystem_sync()
        else:
            error = None
            try:
                super().sync_weights()
            except ServerError as exc:  # raised on rank 0 only: every rank raises it
                error = f"weight sync (nccl) failed: {exc}"
            error = self._broadcast(error)
            if error:
                raise WeightSyncError(error)
        self.last_sync_s = time.perf_counter() - t0
        self.num_syncs += 1
        if self.checker is not None and self.mode == "server":
            t1 = time.perf_counter()
            record = self.checker.check(self.model, self.http, self.accelerator, self.step_fn())
            self.last_check_s = time.perf_counter() - t1
            record = {**record, "weight_sync/seconds": self.last_sync_s, "weight_sync/check_seconds": self.last_check_s}
            self.last_record = record
            if self.on_record is not None:
                self.on_record(record)

    def generate(self, prompts: list[list[int]], images: Any, num_generations: int, profiler: Any = None) -> tuple:
        """TRL's server-mode generate; with async rollouts the batch comes from the request posted last round
        (if within the staleness bound), and the next batch's request is posted before this one trains. A batch
        lost with the server is sampled again once it is back with the full weights (math_grpo.server_recovery)."""
        if self.mode != "server" or images is not None:
            return super().generate(prompts, images, num_generations, profiler)
        accelerator = self.accelerator
        upcoming, self.next_prompts = self.next_prompts, None
        all_prompts = gather_object(prompts)  # collectives here, in the training thread, on every rank
        all_next = gather_object(upcoming if upcoming is not None else [])
        while True:
            payload = rollouts_on_main(self, all_prompts, all_next, num_generations, profiler) \
                if accelerator.is_main_process else None
            output, record, error, resync = self._broadcast(payload)
            if resync:  # the launcher restarted the server unseen: the full weights before any rollout
                self.sync_weights()
            elif not error:
                break
            elif not recover(self, error, self._broadcast):
                raise ServerError(error)
        if self.on_record is not None:
            self.on_record(record)
        all_prompt_ids, all_completion_ids, all_logprobs, all_logprob_token_ids = output
        all_prompt_ids = [ids for ids in all_prompt_ids for _ in range(num_generations)]
        rank = slice(accelerator.process_index * len(prompts), (accelerator.process_index + 1) * len(prompts))
        return (all_prompt_ids[rank], all_completion_ids[rank],
                all_logprobs[rank] if all_logprobs is not None else None,
                all_logprob_token_ids[rank] if all_logprob_token_ids is not None else None)

    def _sample(self, prompts: list[list[int]], n: int) -> tuple:
        """One rollout request with the sampling settings TRL's own server-mode generate sends: through the token
        route (no detokenization) where it applies, else TRL's client on /v1/completions."""
        if self._uses_token_route():
            params = {"n": n, "repetition_penalty": self.repetition_penalty, "temperature": self.temperature,
                      "top_p": self.top_p, "top_k": self.top_k, "min_p": 0.0 if self.min_p is None else self.min_p,
                      "max_tokens": self.max_completion_length, "logprobs": self.logprobs}
            if self.structured_outputs_regex is not None:
                params["structured_outputs"] = {"regex": self.structured_outputs_regex}
            params.update(self.generation_kwargs or {})
            out = generate_tokens(self.vllm_client.session, self.vllm_client.base_url, self.vllm_client.model,
                                  prompts, params)
        else:
            out = self.vllm_client.generate(
                prompts=prompts, n=n, repetition_penalty=self.repetition_penalty, temperature=self.temperature,
                top_p=self.top_p, top_k=self.top_k, min_p=0.0 if self.min_p is None else self.min_p,
                max_tokens=self.max_completion_length, logprobs=self.logprobs,
                structured_outputs_regex=self.structured_outputs_regex, generation_kwargs=self.generation_kwargs)
        return out["prompt_ids"], out["completion_ids"], out["logprobs"], out.get("logprob_token_ids")

    def _uses_token_route(self) -> bool:
        """Decided at the first rollout; when the token route does not apply, one line says why."""
        if self.rollout_detokenize:
            return False
        with self._route_lock:
            if self._route_note is None:
                if self.logprobs:  # the route lists one top candidate fewer than /v1/completions
                    note = f"logprobs={self.logprobs} (the token route matches TRL's shape for 0 only)"
                elif (self.generation_kwargs or {}).get("stop"):
                    note = "generation_kwargs has stop strings (they need detokenization)"
                else:
                    note = route_problem(self.vllm_client.base_url, min(self.settings.request_timeout, 30.0))
                if note:
                    print(f"[rollouts] {note}: rollouts go through /v1/completions, detokenized on the server",
                          flush=True)
                self._route_note = note or ""
        return not self._route_note

    def _filesystem_sync(self) -> None:
        """All ranks gather each parameter (ZeRO-3 collectives); rank 0 writes, then the server reloads."""
        main = self.accelerator.is_main_process
        state = {}
        # A CPU parameter is written as it is (no copy); a GPU one is copied to CPU once; under ZeRO-3 the
        # gathered full parameter is released after each step of the walk, so it is copied.
        zero3 = getattr(self.accelerator.state, "deepspeed_plugin", None) is not None and \
            self.accelerator.state.deepspeed_plugin.zero_stage == 3
        for name, param in self._iter_named_params():
            if main:
                tensor = param.detach()
                tensor = tensor.to("cpu", copy=True) if zero3 or tensor.device.type != "cpu" else tensor
                state[name] = tensor.contiguous()
        error = None
        if main:
            try:
                write_safetensors(state, self.settings.sync_dir, self._tied_name)
                pause_point("sync", self.step_fn())
                self.http.reload_weights(self.settings.sync_dir)
                self.http.reset_prefix_cache()
            except ServerError as exc:
                error = f"weight sync (filesystem, {self.settings.sync_dir}) failed: {exc}"
            except OSError as exc:
                error = f"weight sync: cannot write {self.settings.sync_dir}: {exc}"
        error = broadcast_from_main(error, self.accelerator)
        if error:
            raise WeightSyncError(error)
