"""Synthetic arithmetic word problems: the embedded, download-free dataset of the CPU demo.

The problem space is deliberately broad (several templates, one- and two-step problems, names, items and
number ranges drawn at random) so that a small set of worked solutions teaches the format and some skill
but cannot cover it, while many answer-only problems (what GRPO trains on) can.  Answers are MATH-style
strings (plain integers here), so the same graders as for MATH score them.

    python -m math_grpo.synthetic --out data/synthetic --n_sft 400 --n_train 4000 --n_test 400 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable

NAMES = ("Ann", "Ben", "Cara", "Dan", "Eve", "Finn", "Gia", "Hugo", "Ivy", "Jack", "Kim", "Leo", "Mia", "Noah",
         "Olga", "Pablo", "Rosa", "Sam", "Tara", "Umar")
ITEMS = ("apples", "pens", "stickers", "coins", "marbles", "books", "cards", "shells", "stamps", "beads",
         "cookies", "balloons")
CONTAINERS = ("box", "bag", "jar", "basket", "crate", "pack")

# A problem template draws its numbers from `rng` and returns (problem, solution steps, answer).
Template = Callable[[random.Random, int], tuple[str, list[str], int]]


def _factor(hi: int) -> int:
    """Largest factor in products and quotients: a third of the additive range, at most 9."""
    return min(9, max(3, hi // 3))


def _add(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, it, a, b = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, hi), rng.randint(2, hi)
    return (f"{n} has {a} {it}. {n} gets {b} more. How many {it} does {n} have now?",
            [f"{a} + {b} = {a + b}."], a + b)


def _sub(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, m, it = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    a = rng.randint(3, hi)
    b = rng.randint(1, a - 1)
    return (f"{n} has {a} {it} and gives {b} of them to {m}. How many {it} does {n} have left?",
            [f"{a} - {b} = {a - b}."], a - b)


def _mul(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    c, it = rng.choice(CONTAINERS), rng.choice(ITEMS)
    a, b = rng.randint(2, _factor(hi)), rng.randint(2, _factor(hi))
    return (f"Each {c} holds {a} {it}. How many {it} are in {b} {c}s?",
            [f"{a} * {b} = {a * b}."], a * b)


def _div(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, it = rng.choice(NAMES), rng.choice(ITEMS)
    q, b = rng.randint(2, _factor(hi)), rng.randint(2, _factor(hi))
    a = q * b
    return (f"{n} shares {a} {it} equally among {b} friends. How many {it} does each friend get?",
            [f"{a} / {b} = {q}."], q)


def _add_sub(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, it = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    c = rng.randint(1, a + b - 1)
    return (f"{n} has {a} {it}, buys {b} more and then loses {c}. How many {it} does {n} have now?",
            [f"{a} + {b} = {a + b}.", f"{a + b} - {c} = {a + b - c}."], a + b - c)


def _mul_add(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, c, it = rng.choice(NAMES), rng.choice(CONTAINERS), rng.choice(ITEMS)
    a, b, d = rng.randint(2, _factor(hi)), rng.randint(2, _factor(hi)), rng.randint(1, hi)
    return (f"{n} has {b} {c}s with {a} {it} in each and {d} loose {it}. How many {it} does {n} have?",
            [f"{b} * {a} = {a * b}.", f"{a * b} + {d} = {a * b + d}."], a * b + d)


def _sub_sub(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, m, k, it = *rng.sample(NAMES, 3), rng.choice(ITEMS)
    a = rng.randint(4, hi)
    b = rng.randint(1, a - 2)
    c = rng.randint(1, a - b - 1)
    return (f"{n} has {a} {it}, gives {b} to {m} and {c} to {k}. How many {it} does {n} have left?",
            [f"{a} - {b} = {a - b}.", f"{a - b} - {c} = {a - b - c}."], a - b - c)


def _sum_two(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, m, it = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    a, b = rng.randint(2, hi), rng.randint(2, hi)
    c = rng.randint(2, hi)
    return (f"{n} has {a} {it}, {m} has {b} {it} and they find {c} more. How many {it} do they have together?",
            [f"{a} + {b} = {a + b}.", f"{a + b} + {c} = {a + b + c}."], a + b + c)


TEMPLATES: dict[str, Template] = {
    "add": _add, "sub": _sub, "mul": _mul, "div": _div,
    "add_sub": _add_sub, "mul_add": _mul_add, "sub_sub": _sub_sub, "sum_two": _sum_two,
}


def make_problem(rng: random.Random, max_value: int = 20, templates: tuple[str, ...] | None = None) -> dict:
    """One problem: {'problem', 'solution' (worked steps, the last one ending in the answer), 'answer' (MATH-style str)}."""
    name = rng.choice(sorted(templates or TEMPLATES))
    problem, steps, answer = TEMPLATES[name](rng, max_value)
    solution = " ".join(steps)
    return {"problem": problem, "solution": solution, "answer": str(answer), "type": name}


def generate_splits(n_sft: int, n_train: int, n_test: int, seed: int = 0, max_value: int = 20,
                    templates: tuple[str, ...] | None = None) -> dict[str, list[dict]]:
    """Disjoint splits (no problem text appears twice across or within them), deterministic for a seed.

    The test split is drawn first so its problems never depend on how many training problems are asked for.
    """
    if min(n_sft, n_train, n_test) < 0:
        raise ValueError(f"split sizes must be >= 0, got sft={n_sft} train={n_train} test={n_test}")
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split, n in (("test", n_test), ("sft", n_sft), ("train", n_train)):
        rows: list[dict] = []
        tries = 0
        while len(rows) < n:
            tries += 1
            if tries > 50 * n + 1000:
                raise ValueError(f"could not draw {n} distinct {split} problems with max_value={max_value}")
            row = make_problem(rng, max_value, templates)
            if row["problem"] in seen:
                continue
            seen.add(row["problem"])
            rows.append(row)
        splits[split] = rows
    return splits


def write_synthetic_dataset(out_dir: str, n_sft: int = 400, n_train: int = 4000, n_test: int = 400,
                            seed: int = 0, max_value: int = 20) -> dict[str, str]:
    """Write sft.jsonl (problem, solution, answer), train.jsonl and test.jsonl (problem, answer).

    Train and test carry only final answers: that is all a verifiable reward needs, and it is the point of
    the demo (GRPO learns from many problems without worked solutions).
    """
    splits = generate_splits(n_sft, n_train, n_test, seed=seed, max_value=max_value)
    os.makedirs(out_dir, exist_ok=True)
    paths: dict[str, str] = {}
    for split in ("sft", "train", "test"):
        path = os.path.join(out_dir, f"{split}.jsonl")
        keys = ("problem", "solution", "answer", "type") if split == "sft" else ("problem", "answer", "type")
        with open(path, "w", encoding="utf-8") as f:
            for row in splits[split]:
                f.write(json.dumps({k: row[k] for k in keys}) + "\n")
        paths[split] = path
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="Output folder for sft/train/test.jsonl.")
    parser.add_argument("--n_sft", type=int, default=400, help="Worked solutions for SFT.")
    parser.add_argument("--n_train", type=int, default=4000, help="Answer-only problems for GRPO.")
    parser.add_argument("--n_test", type=int, default=400, help="Held-out answer-only problems.")
    parser.add_argument("--max_value", type=int, default=20, help="Largest number drawn for additions.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_synthetic_dataset(args.out, args.n_sft, args.n_train, args.n_test, args.seed, args.max_value)
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
