"""A tiny Qwen2-architecture model and byte-level BPE tokenizer, built locally (no downloads).

Constraints that shape it:
- attention head size >= 32: vLLM's CPU attention refuses 16 (supported: 32, 64, 80, ...);
- digits are single tokens, so arithmetic is digit by digit rather than over arbitrary number chunks;
- the r1_zero tags (<think>, </think>, <answer>, </answer>) are ordinary text, not special tokens, because
  TRL decodes completions with skip_special_tokens=True and the grader needs to see the tags;
- embeddings are tied (like Qwen2.5-Math-1.5B), so weight sync code is exercised on the same layout;
- `--template_tokens` (the demo's choice) adds the r1_zero template's fixed text as two ordinary tokens: the
  text is unchanged, a prompt is ~30 tokens instead of 124, and on CPU every step costs about half.

    python -m math_grpo.tiny --data data/synthetic --out results/tiny-init
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from collections.abc import Iterable

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Train a byte-level BPE on `texts` (plus the prompt template) and wrap it as a transformers tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from math_grpo.data import R1_ZERO_TEMPLATE

    tok = Tokenizer(models.BPE())
    # Digits are split off one by one before the byte-level split, so no merge can ever join two digits.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [R1_ZERO_TEMPLATE, " ".join(TAGS), " </think> <answer> 0 </answer>", *texts]
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(out_dir: str, texts: Iterable[str], seed: int = 0, hidden_size: int = 128,
                     num_layers: int = 4, num_heads: int = 4, intermediate_size: int = 512,
                     vocab_size: int = 512, max_position_embeddings: int = 512,
                     tie_word_embeddings: bool = True, template_tokens: bool = False) -> str:
    """Save a randomly initialised Qwen2 causal LM and its tokenizer to `out_dir`; returns `out_dir`.

    `template_tokens` adds the r1_zero template's fixed text (before and after the question) as two ordinary
    tokens, so a prompt is about 30 tokens instead of 124."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if hidden_size % num_heads or hidden_size // num_heads < 32:
        raise ValueError(f"hidden_size/num_heads must be an integer >= 32 (vLLM CPU), got {hidden_size}/{num_heads}")
    tokenizer = build_tokenizer(texts, vocab_size=vocab_size)
    if template_tokens:
        from tokenizers import AddedToken

        from math_grpo.data import R1_ZERO_TEMPLATE

        head, tail = R1_ZERO_TEMPLATE.split("{question}")
        tokenizer.add_tokens([AddedToken(head, normalized=False), AddedToken(tail, normalized=False)])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def corpus_from_dir(data_dir: str) -> list[str]:
    """All text fields of the jsonl files in `data_dir`, in prompt/completion shape, for tokenizer training."""
    from math_grpo.data import format_completion, format_prompt

    files = sorted(glob.glob(os.path.join(data_dir, "*.jsonl")))
    if not files:
        raise ValueError(f"{data_dir}: no .jsonl files to train the tokenizer on")
    texts: list[str] = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                text = format_prompt(row["problem"])
                if row.get("solution"):
                    text += format_completion(row["solution"], row["answer"])
                else:
                    text += f" </think> <answer> {row['answer']} </answer>"
                texts.append(text)
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Folder of jsonl files (e.g. from math_grpo.synthetic).")
    parser.add_argument("--out", required=True, help="Output model folder.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--intermediate_size", type=int, default=512)
    parser.add_argument("--vocab_size", type=int, default=512)
    parser.add_argument("--untied", action="store_true", help="Separate input and output embeddings.")
    parser.add_argument("--template_tokens", action="store_true",
                        help="The r1_zero template's fixed text as two tokens (short prompts).")
    args = parser.parse_args(argv)
    try:
        texts = corpus_from_dir(args.data)
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: {args.data}: {exc}") from None
    build_tiny_model(args.out, texts, seed=args.seed, hidden_size=args.hidden_size, num_layers=args.num_layers,
                     num_heads=args.num_heads, intermediate_size=args.intermediate_size, vocab_size=args.vocab_size,
                     tie_word_embeddings=not args.untied, template_tokens=args.template_tokens)
    print(f"tiny model: {args.out}")


if __name__ == "__main__":
    main()
