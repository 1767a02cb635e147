"""The TRL internals math_grpo relies on: each still exists in the installed TRL and is still called where the
adapter needs it, so a TRL upgrade that drops or bypasses a hook fails here, naming the hook, instead of an
override silently never running.

`HOOKS` has one row per name (math_grpo/trl_adapter.py's docstring lists the same names and points here;
math_grpo/server_generation.py's lists the ones it uses). The
checker reads TRL's source (not a mock of it): `hook_problems(hook, sources)` parses the classes a hook lives in
and checks its requirements (defined, called by the method that must call it, read/written where TRL keeps it).
`test_simulated_trl_change_names_the_hook` feeds it TRL's own files with one change each. The runtime test trains
two real steps on CPU (TRL's loop, the tiny model, a stand-in vLLM engine) and records that every override ran.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from _tiny import REPO

# -- the checker -------------------------------------------------------------------------------------------------
FILES = {"grpo": "trainer/grpo_trainer.py", "generation": "generation/vllm_generation.py",
         "client": "generation/vllm_client.py", "profiling": "extras/profiling.py"}


@functools.lru_cache(maxsize=1)
def installed_sources() -> dict[str, str]:
    """The installed TRL's files the hooks live in, as text."""
    root = os.path.dirname(importlib.util.find_spec("trl").origin)
    out = {}
    for key, rel in FILES.items():
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            out[key] = f.read()
    return out


def dotted(node: ast.AST) -> str | None:
    """`self.vllm_generation.generate` for an attribute chain on a name; None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


@functools.lru_cache(maxsize=16)
def find_class(source: str, name: str) -> ast.ClassDef | None:
    return next((n for n in ast.walk(parsed(source)) if isinstance(n, ast.ClassDef) and n.name == name), None)


@functools.lru_cache(maxsize=16)
def parsed(source: str) -> ast.Module:
    return ast.parse(source)


def find_method(cls: ast.ClassDef, name: str) -> ast.FunctionDef | None:
    return next((n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name),
                None)


def calls(fn: ast.AST, target: str) -> list[ast.Call]:
    return [n for n in ast.walk(fn) if isinstance(n, ast.Call) and dotted(n.func) == target]


def mentions(fn: ast.AST, target: str) -> bool:
    return any(dotted(n) == target for n in ast.walk(fn) if isinstance(n, ast.Attribute | ast.Name))


def writes(fn: ast.AST, target: str) -> bool:
    for n in ast.walk(fn):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AugAssign | ast.AnnAssign) else []
        if any(dotted(t) == target for t in targets):
            return True
    return False


def subscript_keys(fn: ast.AST, target: str) -> set:
    return {n.slice.value for n in ast.walk(fn) if isinstance(n, ast.Subscript) and dotted(n.value) == target
            and isinstance(n.slice, ast.Constant)}


@dataclass(frozen=True)
class Need:
    """One requirement on TRL: in `method` of the hook's class, `check(fn_ast)` holds; `what` says it in words."""

    method: str
    what: str
    check: Callable[[ast.AST], bool]


@dataclass(frozen=True)
class Hook:
    name: str  # the TRL name math_grpo relies on
    file: str  # key of FILES
    cls: str  # TRL class it belongs to
    use: str  # what math_grpo does with it
    needs: tuple[Need, ...] = ()
    defined: bool = True  # a method of `cls` (else an attribute, or a module global)
    adapter: bool = True  # used by math_grpo (listed in trl_adapter's docstring); False: only by benchmarks/


def called_by(method: str, target: str, exactly: int | None = None) -> Need:
    word = f"exactly {exactly} time(s)" if exactly else "at all"
    return Need(method, f"`{method}` no longer calls `{target}` {word}",
                lambda fn: len(calls(fn, target)) == exactly if exactly else bool(calls(fn, target)))


def read_in(method: str, target: str) -> Need:
    return Need(method, f"`{method}` no longer reads `{target}`", lambda fn: mentions(fn, target))


def written_in(method: str, target: str) -> Need:
    return Need(method, f"`{method}` no longer sets `{target}`", lambda fn: writes(fn, target))


def keys_in(method: str, target: str, keys: tuple[str, ...]) -> Need:
    return Need(method, f"`{method}` no longer fills `{target}` under {', '.join(keys)}",
                lambda fn: set(keys) <= subscript_keys(fn, target))


def calls_before(method: str, first: str, then: str) -> Need:
    def check(fn: ast.AST) -> bool:
        a, b = calls(fn, first), calls(fn, then)
        return bool(a) and bool(b) and min(c.lineno for c in a) < min(c.lineno for c in b)

    return Need(method, f"`{method}` no longer calls `{first}` before its first `{then}`", check)


def no_call_starting(method: str, prefix: str) -> Need:
    return Need(method, f"`{method}` calls `{prefix}...` directly (bypassing `self.session`)",
                lambda fn: not any(isinstance(n, ast.Call) and (dotted(n.func) or "").startswith(prefix)
                                   for n in ast.walk(fn)))


def profiled(method: str) -> Need:
    return Need(method, f"`{method}` is no longer timed by `profiling_decorator` (its span is read by name)",
                lambda fn: any(dotted(d) == "profiling_decorator" for d in fn.decorator_list))


G, GEN, CLIENT = ("grpo", "GRPOTrainer"), ("generation", "VLLMGeneration"), ("client", "VLLMClient")

HOOKS: tuple[Hook, ...] = (
    Hook("_generate_and_score_completions", *G, "overridden: dynamic sampling, the async prefetch's next prompts, "
         "the fused IS ratio's round", (called_by("_prepare_inputs", "self._generate_and_score_completions"),)),
    Hook("_compute_loss", *G, "overridden: marks the batch whose policy forward gives the fused IS ratio",
         (called_by("compute_loss", "self._compute_loss"),
          Need("_compute_loss", '`_compute_loss` no longer multiplies by inputs["importance_sampling_ratio"]',
               lambda fn: "importance_sampling_ratio" in subscript_keys(fn, "inputs")))),
    Hook("_get_per_token_logps_and_entropies", *G, "overridden: the first call in `_compute_loss` is the policy "
         "forward the fused IS ratio is computed from; the call in `_generate_and_score_completions` is the extra "
         "forward it saves",
         (called_by("_compute_loss", "self._get_per_token_logps_and_entropies", exactly=1),
          called_by("_generate_and_score_completions", "self._get_per_token_logps_and_entropies"),
          read_in("_generate_and_score_completions", "self.vllm_importance_sampling_correction"),
          profiled("_get_per_token_logps_and_entropies"))),
    Hook("_tokenize_prompts", *G, "called: the async prefetch tokenizes the next batch's prompts as TRL does",
         (called_by("_generate", "self._tokenize_prompts"),)),
    Hook("_log_metric", *G, "called: weight-sync and async metrics, averaged over ranks with the step's",
         (written_in("__init__", "self._pending_metrics"), read_in("_log_metric", "self._pending_metrics"),
          read_in("_generate_and_score_completions", "self._pending_metrics"))),
    Hook("_metrics", *G, "appended to: dynamic sampling's metrics, the fused ratio's sampling/* metrics",
         (written_in("__init__", "self._metrics"), read_in("log", "self._metrics")), defined=False),
    Hook("_logs", *G, "read: `latest_rollouts` (the completions table of math_grpo.callbacks)",
         (written_in("__init__", "self._logs"),
          keys_in("_generate_and_score_completions", "self._logs", ("prompt", "completion", "rewards", "advantages",
                                                                     "extra"))), defined=False),
    Hook("_last_loaded_step", *G, "read and set: `force_sync` (TRL then skips its own sync for the step)",
         (written_in("__init__", "self._last_loaded_step"), read_in("_generate_single_turn", "self._last_loaded_step"),
          written_in("_generate_single_turn", "self._last_loaded_step")), defined=False),
    Hook("VLLMGeneration", *G, "swapped (module global) for server_generation.ServerVLLMGeneration while TRL's "
         "constructor runs",
         (called_by("__init__", "VLLMGeneration"),), defined=False),
    Hook("generate", *G, "overridden in ServerVLLMGeneration: async rollouts, bounded errors",
         (called_by("_generate_single_turn", "self.vllm_generation.generate"),), defined=False),
    Hook("sync_weights", *G, "overridden in ServerVLLMGeneration: the filesystem backend and the sync check",
         (called_by("_generate_single_turn", "self.vllm_generation.sync_weights"),), defined=False),
    Hook("_calculate_rewards", *G, "timed by benchmarks/cpu_step_split.py and, by its profiling span, "
         "benchmarks/gpu/bench_timing.py",
         (called_by("_generate_and_score_completions", "self._calculate_rewards"), profiled("_calculate_rewards")),
         adapter=False),
    Hook("_prepare_inputs", *G, "its profiling span is read by benchmarks/gpu/bench_timing.py",
         (profiled("_prepare_inputs"),), adapter=False),
    Hook("_init_vllm", *GEN, "overridden: the bounded client and the chosen sync backend",
         (called_by("__init__", "self._init_vllm"),)),
    Hook("_iter_named_params", *GEN, "overridden (cast to the server's dtype) and walked by the filesystem sync",
         (called_by("sync_weights", "self._iter_named_params"),
          Need("_iter_named_params", "`_iter_named_params` is no longer a generator",
               lambda fn: any(isinstance(n, ast.Yield | ast.YieldFrom) for n in ast.walk(fn))))),
    Hook("check_server", *CLIENT, "overridden: mounts BoundedAdapter on `session` before TRL's first request",
         (calls_before("__init__", "self.check_server", "self._get"),)),
    Hook("session", *CLIENT, "public; its BoundedAdapter bounds every request (timeout, retries, errors)",
         (written_in("__init__", "self.session"), called_by("_get", "self.session.get"),
          called_by("_post", "self.session.post"), no_call_starting("generate", "requests."),
          no_call_starting("init_communicator", "requests.")), defined=False),
    Hook("_log_metrics", "profiling", "ProfilingContext", "replaced by benchmarks/gpu/bench_timing.py",
         (called_by("__exit__", "self._log_metrics"),), adapter=False),
)


def hook_problems(hook: Hook, sources: dict[str, str]) -> list[str]:
    """What no longer holds of `hook` in these TRL sources, each line naming the hook and what math_grpo does."""
    prefix = f"TRL hook `{hook.name}` ({hook.cls}, trl/{FILES[hook.file]}) broken"
    cls = find_class(sources[hook.file], hook.cls)
    if cls is None:
        return [f"{prefix}: class {hook.cls} is gone; math_grpo relies on it: {hook.use}"]
    problems = []
    if hook.defined and find_method(cls, hook.name) is None:
        problems.append(f"{prefix}: {hook.cls}.{hook.name} no longer exists; math_grpo relies on it: {hook.use}")
    for need in hook.needs:
        fn = find_method(cls, need.method)
        if fn is None:
            problems.append(f"{prefix}: {hook.cls}.{need.method} no longer exists; math_grpo relies on it: {hook.use}")
        elif not need.check(fn):
            problems.append(f"{prefix}: {need.what}; math_grpo relies on it: {hook.use}")
    return problems


def contract_problems(sources: dict[str, str]) -> list[str]:
    return [p for hook in HOOKS for p in hook_problems(hook, sources)]


# -- the contract against the installed TRL -----------------------------------------------------------------------
@pytest.mark.parametrize("hook", HOOKS, ids=[h.name for h in HOOKS])
def test_hook_holds_in_installed_trl(hook):
    problems = hook_problems(hook, installed_sources())
    assert not problems, "\n".join(problems)


def _replace(source: str, old: str, new: str, count: int = -1) -> str:
    assert old in source, f"the simulated change does not apply: {old!r} is not in TRL's source"
    return source.replace(old, new, count)


SIMULATED = {
    # TRL computes the policy logprobs through another helper: the fused ratio's hook would never run.
    "_get_per_token_logps_and_entropies": ("grpo", lambda s: _replace(
        s, "per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(",
        "per_token_logps, entropies, aux_loss = self._policy_logps(")),
    # TRL renames its "weights already pushed" marker: force_sync would set a flag nobody reads.
    "_last_loaded_step": ("grpo", lambda s: _replace(s, "_last_loaded_step", "_last_synced_step")),
    # TRL's client no longer checks the server before its first request: our adapter would never be mounted.
    "check_server": ("client", lambda s: _replace(s, "        self.check_server(connection_timeout)", "", 1)),
    # TRL's input preparation generates through a renamed method: dynamic sampling would silently stop.
    "_generate_and_score_completions": ("grpo", lambda s: _replace(
        s, "self._generate_and_score_completions(generation_batch)", "self._generate_and_score(generation_batch)")),
    # TRL sends a request with `requests.post` instead of its session: no timeout on it.
    "session": ("client", lambda s: _replace(s, 'self._post(f"{self.base_url}/v1/completions"',
                                             'requests.post(f"{self.base_url}/v1/completions"')),
}


@pytest.mark.parametrize("name", sorted(SIMULATED))
def test_simulated_trl_change_names_the_hook(name):
    """A copy of TRL's real source with one change: the checker reports exactly that hook, by name."""
    key, change = SIMULATED[name]
    sources = dict(installed_sources())
    sources[key] = change(sources[key])
    problems = contract_problems(sources)
    assert problems, f"the checker missed a simulated change to {name}"
    assert all(f"TRL hook `{name}`" in p for p in problems), problems
    assert not contract_problems(installed_sources())


# -- every TRL private name math_grpo uses is a guarded hook, and the adapter lists it ---------------------------
def _trl_private_names(sources: dict[str, str]) -> set[str]:
    """Private names TRL defines on the classes math_grpo subclasses or drives (methods and self attributes)."""
    names = set()
    for file, cls_name in (G, GEN, CLIENT, ("profiling", "ProfilingContext")):
        cls = find_class(sources[file], cls_name)
        for n in ast.walk(cls):
            if isinstance(n, ast.FunctionDef) and n.name.startswith("_") and not n.name.startswith("__"):
                names.add(n.name)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self" \
                    and n.attr.startswith("_") and not n.attr.startswith("__"):
                names.add(n.attr)
    return names


def _used_private_names(paths: list[str]) -> dict[str, set[str]]:
    """Private names per file: `x._name` accesses, and strings naming one (`getattr(trainer, "_logs")`)."""
    used: dict[str, set[str]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for n in ast.walk(tree):
            name = n.attr if isinstance(n, ast.Attribute) else n.value if isinstance(n, ast.Constant) else None
            if isinstance(name, str) and re.fullmatch(r"_[a-z]\w*", name):
                used.setdefault(name, set()).add(os.path.relpath(path, REPO))
    return used


def _project_files() -> list[str]:
    out = []
    for folder in ("math_grpo", "recipes", "benchmarks", os.path.join("benchmarks", "gpu")):
        base = os.path.join(REPO, folder)
        out += [os.path.join(base, f) for f in sorted(os.listdir(base)) if f.endswith(".py")]
    return out


def test_every_trl_private_name_used_is_a_guarded_hook():
    trl_private = _trl_private_names(installed_sources())
    guarded = {h.name for h in HOOKS}
    used = _used_private_names(_project_files())
    unguarded = {name: sorted(files) for name, files in used.items() if name in trl_private and name not in guarded}
    assert not unguarded, (f"TRL private names used without a row in tests/test_trl_contract.py HOOKS: {unguarded}; "
                           "add a hook (and list it in math_grpo/trl_adapter.py's docstring)")



def test_adapter_docstring_lists_each_private_hook_with_its_test():
    import math_grpo.trl_adapter as adapter

    doc = adapter.__doc__
    assert "tests/test_trl_contract.py" in doc
    for hook in HOOKS:
        if hook.name.startswith("_") and hook.adapter:
            assert f"`{hook.name}`" in doc, f"math_grpo/trl_adapter.py's docstring does not list `{hook.name}`"


def test_each_module_lists_the_private_hooks_it_uses():
    """The TRL coupling is split over math_grpo/trl_adapter.py and math_grpo/server_generation.py: each module of
    math_grpo/ that uses a guarded private name lists it in its own docstring, with the test guarding it."""
    guarded = {h.name for h in HOOKS if h.name.startswith("_") and h.adapter}
    folder = os.path.join(REPO, "math_grpo")
    paths = [os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.endswith(".py")]
    used = _used_private_names(paths)
    for name, files in sorted(used.items()):
        if name not in guarded:
            continue
        for rel in sorted(files):
            with open(os.path.join(REPO, rel), encoding="utf-8") as f:
                doc = ast.get_docstring(ast.parse(f.read())) or ""
            assert f"`{name}`" in doc and "tests/test_trl_contract.py" in doc, \
                f"{rel} uses TRL's `{name}` but its docstring does not list it with tests/test_trl_contract.py"


# -- at run time: TRL's loop calls every override ------------------------------------------------------------------
def test_trl_training_loop_runs_every_override(tmp_path):
    """Two real training steps (TRL's loop, the tiny model, a stand-in vLLM engine): each hook ran as expected."""
    from _trl_fake import rows, tiny_trainer
    from transformers import TrainerCallback

    from math_grpo.trl_adapter import latest_rollouts

    trainer = tiny_trainer(str(tmp_path / "run"))
    assert trainer._fused_is
    counts = {"_generate_and_score_completions": 0, "_compute_loss": 0, "_get_per_token_logps_and_entropies": 0}
    for name in counts:
        method = getattr(trainer, name)

        def spy(*args, _method=method, _name=name, **kwargs):
            counts[_name] += 1
            return _method(*args, **kwargs)

        setattr(trainer, name, spy)  # an instance attribute: TRL's `self.NAME(...)` calls land here

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            trainer._log_metric("contract/log_metric", 3.0)
            trainer._metrics["train"]["contract/metrics"].append(2.0)

    trainer.add_callback(Probe())
    trainer.train()
    steps = trainer.state.global_step
    assert steps == 2
    # One round, one loss, and one logprob forward per step: the fused ratio saved TRL's extra forward.
    assert counts == {"_generate_and_score_completions": 2, "_compute_loss": 2,
                      "_get_per_token_logps_and_entropies": 2}, counts
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert all("sampling/importance_sampling_ratio/mean" in row for row in logged), logged
    assert all(row.get("contract/log_metric") == 3.0 and row.get("contract/metrics") == 2.0 for row in logged)
    # `_last_loaded_step`: TRL synced once per step, and skips the sync when the step's weights are pushed.
    vg = trainer.vllm_generation
    assert vg.syncs == 2 and vg.calls == 2 and trainer._last_loaded_step == steps - 1
    trainer._last_loaded_step = steps  # what force_sync sets after pushing the weights itself
    trainer._generate_and_score_completions(rows(trainer))
    assert vg.syncs == 2 and vg.calls == 3
    # `_logs` and `_tokenize_prompts`
    rollouts = latest_rollouts(trainer)
    assert rollouts is not None and len(rollouts["completion"]) >= 8 and rollouts["advantages"]
    prompt = trainer.train_dataset[0]["prompt"]
    ids, _, _ = trainer._tokenize_prompts([prompt])
    assert list(ids[0]) == trainer.processing_class(prompt)["input_ids"]


class _Silent:
    """An HTTP server that answers health and model checks and never answers a completion (a wedged server)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = b'{"data": [{"id": "m"}]}' if self.path.startswith("/v1/models") else b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                time.sleep(30)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_trl_client_requests_are_bounded_through_its_session():
    """TRL's own `generate` (no timeout of its own) ends within the adapter's timeout, naming the server."""
    from math_grpo.errors import ServerError
    from math_grpo.server_generation import BoundedVLLMClient

    server = _Silent()
    try:
        client = BoundedVLLMClient(server.url, request_timeout=1.0, connection_timeout=5.0)
        assert client.model == "m"  # TRL's first request went through the mounted adapter
        t0 = time.monotonic()
        with pytest.raises(ServerError, match=f"{server.url}.*no answer within 1 s"):
            client.generate(prompts=[[1, 2, 3]], n=1, max_tokens=1)
        assert time.monotonic() - t0 < 20
    finally:
        server.close()
    port = socket.socket()
    port.bind(("127.0.0.1", 0))  # bound, never listening: refused
    try:
        client.session.get_adapter(client.base_url).base_url = url = f"http://127.0.0.1:{port.getsockname()[1]}"
        client.base_url = url
        with pytest.raises(ServerError, match="unreachable"):
            client.get_world_size()
    finally:
        port.close()
