"""Server rollouts through vLLM's token route: prompt token ids in, completion token ids out, nothing decoded.

Why: TRL decodes the completion ids itself, so the text `/v1/completions` builds for every sampled token is work
thrown away (colocate on one H200: generation 16.0 s with detokenization, 5.5 s without, benchmarks/RESULTS.md).
`/v1/completions` also drops fields it does not know, so `generation_kwargs: {detokenize: false}` does nothing
there. `/inference/v1/generate` takes one prompt's ids and `sampling_params.detokenize: false`. vLLM serves it
always up to 0.29; from 0.30 only with `--enable-scale-out` (`math_grpo.vllm_server.ServerSpec` passes it; not
`--tokens-only`, which loads no tokenizer and so would take the text that evaluation needs).

The answer is put into the shape TRL's own client gives for `/v1/completions` (prompt_ids, completion_ids, and
logprobs / logprob_token_ids through TRL's public `parse_logprobs`), so TRL's trainer cannot tell them apart.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from trl.generation.vllm_client import parse_logprobs

from math_grpo.errors import ServerError

TOKEN_ROUTE = "/inference/v1/generate"
FINAL_ONLY = 2  # vLLM's RequestOutputKind.FINAL_ONLY: before 0.30 a non-streamed n > 1 request otherwise
# returns only the sequences that finished last (the server sets it itself from 0.30)
MAX_CONCURRENT = 64  # the route takes one prompt a request; the bounded session pools 64 connections


def route_problem(base_url: str, timeout: float = 30.0) -> str | None:
    """None when the server serves the token route, else why not (one line). Posts an empty body: a server with the
    route rejects it as invalid without generating anything; 404 is a server without it, 403 vLLM >= 0.30 started
    without --enable-scale-out."""
    url = base_url.rstrip("/") + TOKEN_ROUTE
    try:
        status = requests.post(url, json={}, timeout=timeout).status_code
    except requests.exceptions.RequestException as exc:  # the wording server_recovery reads as a lost server
        raise ServerError(f"vLLM server at {base_url} is unreachable (POST {TOKEN_ROUTE}: "
                          f"{type(exc).__name__})") from None
    if status == 404:
        return f"the vLLM server at {base_url} has no {TOKEN_ROUTE}"
    if status == 403:
        return f"the vLLM server at {base_url} has {TOKEN_ROUTE} turned off (start it with --enable-scale-out)"
    return None


def _token_tag(entry: dict) -> str:
    """A logprob entry's token as `token_id:<id>`, the form TRL's parser reads: vLLM >= 0.30 sends the integer
    `token_id`, older versions the string already."""
    if "token_id" in entry:
        return f"token_id:{int(entry['token_id'])}"
    token = entry.get("token")
    if not isinstance(token, str) or not token.startswith("token_id:"):
        raise ServerError(f"{TOKEN_ROUTE} answered a logprob without a token id ({str(entry)[:120]})")
    return token


def as_trl_logprobs(logprobs: dict | None) -> dict | None:
    """One choice's logprobs in the chat-completions form TRL's `parse_logprobs` reads (the sampled token, its
    logprob, the top candidates)."""
    if logprobs is None:
        return None
    return {"content": [{"token": _token_tag(e), "logprob": e["logprob"],
                         "top_logprobs": [{"token": _token_tag(t), "logprob": t["logprob"]}
                                          for t in e.get("top_logprobs") or []]}
                        for e in logprobs.get("content") or []]}


def generate_tokens(session: requests.Session, base_url: str, model: str, prompts: list[list[int]],
                    sampling_params: dict[str, Any]) -> dict[str, Any]:
    """Sample `sampling_params["n"]` completions per prompt without detokenization, one request per prompt (sent
    concurrently); the result is prompt-major, as TRL's `VLLMClient.generate` returns it."""
    if not prompts:
        return {"prompt_ids": [], "completion_ids": [], "logprobs": None, "logprob_token_ids": None}
    params = {**sampling_params, "detokenize": False, "output_kind": FINAL_ONLY}
    n, url = int(params.get("n", 1) or 1), base_url.rstrip("/") + TOKEN_ROUTE

    def send(ids: list[int]) -> list[dict]:
        answer = session.post(url, json={"model": model, "token_ids": list(ids), "sampling_params": params}).json()
        choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise ServerError(f"vLLM server at {base_url}: {TOKEN_ROUTE} answered {len(choices)} choices, not {n}")
        return choices

    with ThreadPoolExecutor(max_workers=min(MAX_CONCURRENT, len(prompts))) as pool:
        choices = [c for group in pool.map(send, prompts) for c in group]
    logprobs, logprob_token_ids = parse_logprobs([as_trl_logprobs(c.get("logprobs")) for c in choices])
    return {"prompt_ids": [list(p) for p in prompts], "completion_ids": [c["token_ids"] for c in choices],
            "logprobs": logprobs, "logprob_token_ids": logprob_token_ids}
