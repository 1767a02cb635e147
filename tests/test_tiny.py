"""The embedded demo's assets: synthetic problems and the tiny Qwen2 model + tokenizer (real builders)."""

from __future__ import annotations

import json
import os

import pytest
from _tiny import tiny_assets

from math_grpo.data import format_completion, format_prompt
from math_grpo.synthetic import DEFAULT_TEMPLATES, generate_splits, write_synthetic_dataset
from math_grpo.tiny import TAGS, build_tiny_model, corpus_from_dir
from rewards.grader import grade


def _rows(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_splits_disjoint_and_deterministic(tmp_path):
    a = write_synthetic_dataset(str(tmp_path / "a"), n_sft=50, n_train=300, n_test=100, seed=3)
    b = write_synthetic_dataset(str(tmp_path / "b"), n_sft=50, n_train=300, n_test=100, seed=3)
    c = write_synthetic_dataset(str(tmp_path / "c"), n_sft=50, n_train=300, n_test=100, seed=4)
    for split in ("sft", "train", "test"):
        assert open(a[split]).read() == open(b[split]).read(), f"{split} differs for the same seed"
    assert open(a["test"]).read() != open(c["test"]).read(), "a different seed gave the same test split"
    problems = {split: [r["problem"] for r in _rows(a[split])] for split in a}
    assert [len(problems[s]) for s in ("sft", "train", "test")] == [50, 300, 100]
    for split, ps in problems.items():
        assert len(set(ps)) == len(ps), f"duplicate problems inside {split}"
    assert not set(problems["sft"]) & set(problems["train"])
    assert not set(problems["sft"]) & set(problems["test"])
    assert not set(problems["train"]) & set(problems["test"])
    # Only the SFT split carries worked solutions: GRPO and evaluation see final answers only.
    assert all(r["solution"] for r in _rows(a["sft"]))
    assert not any("solution" in r for r in _rows(a["train"]) + _rows(a["test"]))
    # The test split does not depend on how many training problems were asked for.
    assert generate_splits(0, 10, 100, seed=3)["test"] == generate_splits(50, 300, 100, seed=3)["test"]


def test_short_solutions_only_in_sft_and_problems_unchanged():
    """`short_share` rewrites that share of worked solutions to the bare result; it never changes the problems."""
    plain, short = generate_splits(400, 50, 50, seed=2), generate_splits(400, 50, 50, seed=2, short_share=0.7)
    for split in ("sft", "train", "test"):
        assert [r["problem"] for r in plain[split]] == [r["problem"] for r in short[split]]
    terse = [r for r in short["sft"] if r["solution"] == f"The answer is {r['answer']}."]
    assert 0.6 < len(terse) / 400 < 0.8
    assert not any(r["solution"].startswith("The answer") for r in plain["sft"])
    with pytest.raises(ValueError, match="short_share"):
        generate_splits(1, 1, 1, short_share=1.5)


def test_answers_graded_correct_against_own_solutions():
    rows = generate_splits(200, 0, 0, seed=0)["sft"]
    assert {r["type"] for r in rows} == set(DEFAULT_TEMPLATES), "templates are not all in use"
    for row in rows[:60]:
        assert row["solution"].endswith(f"= {row['answer']}."), row
        completion = format_completion(row["solution"], row["answer"])
        for mode in ("drgrpo", "accurate"):
            result = grade(completion, row["answer"], mode=mode)
            assert result.reward == 1.0, (mode, completion, row["answer"], result)
        wrong = format_completion(row["solution"], str(int(row["answer"]) + 1))
        assert grade(wrong, row["answer"], mode="drgrpo").reward == 0.0


def test_tiny_model_and_tokenizer():
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_dir, data_dir = tiny_assets()["model"], tiny_assets()["data"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    assert config.model_type == "qwen2"
    assert config.hidden_size // config.num_attention_heads >= 32, "vLLM's CPU attention refuses head size < 32"
    assert config.tie_word_embeddings
    assert tok.eos_token is not None and tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id

    row = _rows(os.path.join(data_dir, "sft.jsonl"))[0]
    text = format_prompt(row["problem"]) + format_completion(row["solution"], row["answer"])
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    # Round trip, also with skip_special_tokens (how TRL decodes completions): the tags must survive.
    assert tok.decode(ids) == text
    decoded = tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True)
    assert decoded == text
    for tag in TAGS:
        assert tag in decoded and tag not in tok.all_special_tokens
    # Digits are single tokens, never merged, so "1234" is four tokens.
    for number in ("0", "7", "1234", "905"):
        pieces = tok.convert_ids_to_tokens(tok(number)["input_ids"])
        assert pieces == list(number), (number, pieces)
    # Unseen bytes still encode (byte-level BPE) and decode back.
    odd = "Größe ≤ 3½ 😀"
    assert tok.decode(tok(odd)["input_ids"]) == odd

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size >= len(tok)
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    assert out.logits.shape == (1, len(ids), model.config.vocab_size)
    assert torch.isfinite(out.logits).all()


def test_build_is_deterministic_and_rejects_small_heads(tmp_path):
    from safetensors.torch import load_file

    texts = [format_prompt(r["problem"]) + format_completion(r["solution"], r["answer"])
             for r in generate_splits(40, 0, 0, seed=1)["sft"]]
    kw = dict(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128)
    build_tiny_model(str(tmp_path / "a"), texts, seed=5, **kw)
    build_tiny_model(str(tmp_path / "b"), texts, seed=5, **kw)
    wa, wb = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("a", "b"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert open(tmp_path / "a" / "tokenizer.json").read() == open(tmp_path / "b" / "tokenizer.json").read()
    with pytest.raises(ValueError, match=">= 32"):
        build_tiny_model(str(tmp_path / "c"), texts, hidden_size=64, num_heads=4)
    # The demo's untied variant: its own lm_head.weight in the file, distinct from the input embeddings.
    build_tiny_model(str(tmp_path / "u"), texts, seed=5, tie_word_embeddings=False, **kw)
    wu = load_file(str(tmp_path / "u" / "model.safetensors"))
    assert "lm_head.weight" in wu and not (wu["lm_head.weight"] == wu["model.embed_tokens.weight"]).all()


def test_corpus_from_dir_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        corpus_from_dir(str(tmp_path))
