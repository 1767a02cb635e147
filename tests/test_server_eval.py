"""Benchmark evaluation through the real CPU vLLM server, and the same code in-process (transformers)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from _tiny import REPO, read_jsonl, run

from math_grpo.evaluation import (
    SamplingSettings,
    ServerGenerator,
    TransformersGenerator,
    evaluate,
    format_table,
    load_benchmarks,
    pass_at_k,
    write_eval_jsonl,
)
from math_grpo.vllm_server import VLLMServerClient
from math_grpo.weight_sync import tied_embedding_name, write_safetensors

pytestmark = pytest.mark.server

FIXTURES = os.path.join(REPO, "tests", "fixtures", "data")


def _model(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), AutoTokenizer.from_pretrained(model_dir)


def _reset_server(vllm_server, model, tmp_path) -> VLLMServerClient:
    """Other tests reload weights: put the model under test on the server first."""
    client = VLLMServerClient(vllm_server.url, timeout=120)
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    write_safetensors(state, str(tmp_path / "weights"), tied_embedding_name(model))
    client.reload_weights(str(tmp_path / "weights"))
    client.reset_prefix_cache()
    return client


def test_evaluation_through_server_produces_metrics(vllm_server, tmp_path):
    model, _ = _model(vllm_server.model)
    client = _reset_server(vllm_server, model, tmp_path)
    benches = load_benchmarks(["synthetic", f"math500={FIXTURES}/math500.jsonl"], max_samples=12,
                              dataset_name=os.path.join(vllm_server.data, "train.jsonl"))
    assert [b.name for b in benches] == ["synthetic", "math500"] and len(benches[0].rows) == 12
    sampling = SamplingSettings(temperature=1.0, max_tokens=24, n=4, seed=1)
    result = evaluate(ServerGenerator(client, timeout=120), benches, sampling, grader_mode="accurate", step=7)
    m = result.metrics
    for name in ("synthetic", "math500"):
        for key in ("accuracy", "format_accuracy", "pass@1", "pass@2", "pass@4"):
            assert 0.0 <= m[f"eval/{name}/{key}"] <= 1.0
        assert m[f"eval/{name}/pass@1"] == pytest.approx(m[f"eval/{name}/accuracy"])
        assert m[f"eval/{name}/pass@1"] <= m[f"eval/{name}/pass@2"] <= m[f"eval/{name}/pass@4"]
        assert 0 < m[f"eval/{name}/mean_response_tokens"] <= 24
        assert m[f"eval/{name}/avg@4"] == m[f"eval/{name}/accuracy"] and m[f"eval/{name}/n"] == 4
        assert 0.0 <= m[f"eval/{name}/maj@4"] <= m[f"eval/{name}/pass@4"]
    assert "eval/math500/level_1/accuracy" in m and "eval/math500/level_3/accuracy" in m
    assert m["eval/accuracy"] == pytest.approx((m["eval/synthetic/accuracy"] + m["eval/math500/accuracy"]) / 2)
    assert len(result.records) == (12 + len(benches[1].rows)) * 4
    path = write_eval_jsonl(str(tmp_path), result)
    rows = read_jsonl(path)
    assert os.path.basename(path) == "step_0007.jsonl" and len(rows) == len(result.records)
    assert {"benchmark", "problem", "answer", "response", "format_reward", "answer_reward"} <= set(rows[0])
    assert "macro avg" in format_table(m, ["synthetic", "math500"])


def test_server_and_transformers_greedy_agree(vllm_server, tmp_path):
    """Same weights, greedy, float32: the two generators of `evaluate` must produce the same texts."""
    model, tok = _model(vllm_server.model)
    client = _reset_server(vllm_server, model, tmp_path)
    benches = load_benchmarks(["synthetic"], max_samples=8, dataset_name=vllm_server.data)
    sampling = SamplingSettings(temperature=0.0, max_tokens=16, n=1)
    server = evaluate(ServerGenerator(client), benches, sampling)
    local = evaluate(TransformersGenerator(model, tok, batch_size=4), benches, sampling)
    same = sum(a["response"] == b["response"] for a, b in zip(server.records, local.records))
    assert same >= 7, [(a["response"], b["response"]) for a, b in zip(server.records, local.records)]
    assert server.metrics["eval/accuracy"] == pytest.approx(local.metrics["eval/accuracy"], abs=0.13)


def test_stop_string_is_kept_in_the_text(vllm_server, tmp_path):
    """The r1_zero format rule needs the closing </answer> that the stop cut: it must be put back."""
    model, tok = _model(vllm_server.model)
    client = _reset_server(vllm_server, model, tmp_path)
    # A stop string the random model is sure to produce quickly: its own first greedy tokens. A random model
    # may also put EOS first for a given prompt, so take the first of a few prompts that yields some text.
    prompts = ["Tom has", "Ann has 3 apples.", "How many pens", "A conversation between", "User: 7 + 5"]
    firsts = [c[0]["text"] for c in client.generate_text(prompts, max_tokens=6)]
    prompt, first = next(((p, t) for p, t in zip(prompts, firsts) if len(t) >= 4), (None, None))
    assert prompt is not None, f"no prompt gave 4+ characters greedily: {firsts}"
    stop = first[1:4]
    out = client.generate_text([prompt], max_tokens=6, stop=[stop])[0][0]
    assert out["text"].endswith(stop) and out["finish_reason"] == "stop"


def test_pass_at_k_estimator():
    assert pass_at_k(4, 0, 1) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 2, 4) == 1.0


def test_evaluate_recipe_cli_through_server_and_transformers(vllm_server, tmp_path):
    model, _ = _model(vllm_server.model)
    _reset_server(vllm_server, model, tmp_path)
    out_json = str(tmp_path / "server.json")
    proc = run([sys.executable, "recipes/evaluate.py", "--server_url", vllm_server.url, "--benchmarks",
                f"gsm8k={FIXTURES}/gsm8k.jsonl", "synthetic", "--dataset_name", vllm_server.data,
                "--eval_max_samples", "6", "--eval_max_tokens", "16", "--eval_sampling", "synthetic: n=2 temperature=1",
                "--output_json", out_json], timeout=300)
    assert "macro avg" in proc.stdout and "| checkpoint | gsm8k | synthetic (avg@2) | average |" in proc.stdout
    with open(out_json, encoding="utf-8") as f:
        served = json.load(f)
    # one checkpoint: flat eval/* keys, as the demo reads them
    assert served["model"] == vllm_server.url and 0.0 <= served["eval/accuracy"] <= 1.0
    assert served["eval/synthetic/num_problems"] == 6 and served["eval/synthetic/n"] == 2
    assert served["eval/gsm8k/n"] == 1 and "eval/synthetic/maj@2" in served

    # two checkpoints in-process: one table, rows = checkpoints, written beside the per-sample files
    out = tmp_path / "run"
    local = run([sys.executable, "recipes/evaluate.py", "--model", vllm_server.model, vllm_server.model,
                 "--backend", "transformers", "--benchmarks", f"gsm8k={FIXTURES}/gsm8k.jsonl", "synthetic",
                 "--dataset_name", vllm_server.data, "--eval_max_samples", "6", "--eval_max_tokens", "16",
                 "--output_dir", str(out)], timeout=300)
    with open(out / "results.json", encoding="utf-8") as f:
        report = json.load(f)
    labels = list(report["results"])
    assert len(labels) == 2 and labels[1] == labels[0] + "#2" and report["benchmarks"] == ["gsm8k", "synthetic"]
    table = (out / "results.md").read_text(encoding="utf-8").splitlines()
    assert table[0] == "| checkpoint | gsm8k | synthetic | average |"
    assert table[2].startswith(f"| {labels[0]} |") and table[3].startswith(f"| {labels[1]} |")
    assert "\n".join(table) in local.stdout
    for label in labels:
        samples = read_jsonl(str(out / "samples" / (label.replace("/", "__") + ".jsonl")))
        assert len(samples) == 6 + 2 and {"response", "extracted", "answer_reward"} <= set(samples[0])
    # greedy and the same weights: the two rows agree
    first, second = (report["results"][lb] for lb in labels)
    assert first["eval/accuracy"] == second["eval/accuracy"]

    bad = run([sys.executable, "recipes/evaluate.py", "--server_url", vllm_server.url, "--benchmarks", "nope"],
              timeout=120, check=False)
    assert bad.returncode == 2 and "unknown benchmark 'nope'" in bad.stderr


def test_prompt_longer_than_server_context_is_counted_not_fatal(vllm_server, tmp_path):
    model, _ = _model(vllm_server.model)
    client = _reset_server(vllm_server, model, tmp_path)
    path = tmp_path / "bench.jsonl"
    rows = [{"problem": "What is 2 plus 3?", "answer": "5"},
            {"problem": "Tom has 3 apples. " * 200 + "How many apples?", "answer": "3"},  # > 512 tokens
            {"problem": "What is 4 plus 4?", "answer": "8"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    benches = load_benchmarks([f"long={path}"])
    result = evaluate(ServerGenerator(client), benches, SamplingSettings(max_tokens=8))
    assert result.metrics["eval/long/refused_prompts"] == 1
    assert result.metrics["eval/long/num_problems"] == 3
    refused = result.records[1]
    assert refused["response"] == "" and refused["num_tokens"] == 0 and refused["answer_reward"] == 0


class GoldOnEveryOtherRow:
    """A real generator (server or in-process) whose answers are then set per problem: the gold answer for
    the rows in `right`, a wrong one for the others, both in the r1_zero format. Rows are found by their
    prompt text, not by position, so an evaluation that paired outputs with the wrong rows would score wrong."""

    def __init__(self, inner, answers: dict[str, tuple[str, bool]]):
        self.inner, self.answers = inner, answers
        self.batch_size = 3  # several batches: the pairing must survive them

    def generate(self, prompts, sampling):
        out = self.inner.generate(prompts, sampling)
        assert len(out) == len(prompts) and all(len(g) == sampling.n for g in out)
        rows = []
        for prompt, group in zip(prompts, out):
            gold, right = self.answers[prompt]
            answer = gold if right else f"{gold}7"
            rows.append([{**c, "text": f"{c['text'][:20]} </think> <answer> {answer} </answer>"} for c in group])
        return rows


def _known_accuracy_check(generator_for, tmp_path):
    from math_grpo.data import format_prompt

    rows = [{"problem": f"What is {a} plus {b}?", "answer": str(a + b)} for a, b in zip(range(3, 14), range(20, 31))]
    path = tmp_path / "known.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    benches = load_benchmarks([f"known={path}"])
    right = {i for i in range(len(rows)) if i % 2 == 0}  # 6 of 11
    answers = {format_prompt(r["problem"], "r1_zero"): (r["answer"], i in right) for i, r in enumerate(rows)}
    result = evaluate(GoldOnEveryOtherRow(generator_for(), answers), benches, SamplingSettings(max_tokens=8, n=1))
    m = result.metrics
    assert m["eval/known/accuracy"] == pytest.approx(6 / 11, abs=1e-12) == m["eval/accuracy"]
    assert m["eval/known/format_accuracy"] == 1.0 and m["eval/known/num_problems"] == 11
    assert [r["answer_reward"] > 0 for r in result.records] == [i in right for i in range(len(rows))]
    assert [r["index"] for r in result.records] == list(range(len(rows)))


def test_known_accuracy_through_the_server(vllm_server, tmp_path):
    model, _ = _model(vllm_server.model)
    client = _reset_server(vllm_server, model, tmp_path)
    _known_accuracy_check(lambda: ServerGenerator(client, batch_size=4), tmp_path)


def test_known_accuracy_in_process(tmp_path):
    from _tiny import tiny_assets

    model, tok = _model(tiny_assets()["model"])
    _known_accuracy_check(lambda: TransformersGenerator(model, tok, batch_size=4), tmp_path)
