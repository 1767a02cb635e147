"""Synthetic arithmetic word problems: the embedded, download-free dataset of the CPU demo.

Worked solutions are few, and like many human-written ones, most of them are terse: they state the result
without the steps (`short_share`). SFT imitates both styles (at about the same accuracy for the tiny model)
and greedy decoding mostly picks the terse one: one first token, "The", against a spread of digits. GRPO
trains on many answer-only problems, rewarded for correct answers only; measured, it moves the model to
showing its steps and sharpens them, turning what the model gets right when sampled into what it does
greedily (recipes/tiny/grpo.yaml has the numbers). Answers are MATH-style strings (plain integers here), so
the same graders as for MATH score them.

    python -m math_grpo.synthetic --out data/synthetic --n_sft 1000 --short_share 0.7 --n_train 4000 --n_test 400 --seed 0
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

# What happens to someone's items, and whether it adds to or takes from what they have.
GAINS = ("gets", "buys", "finds", "receives", "wins", "collects", "picks up", "is given", "earns", "orders",
         "borrows", "catches", "gathers", "inherits", "discovers", "unpacks")
LOSSES = ("loses", "gives away", "eats", "sells", "drops", "uses up", "breaks", "throws away", "donates",
          "lends out", "spends", "misplaces", "recycles", "mails", "spills", "discards")

# A problem template draws its numbers from `rng` and returns (problem, solution steps, answer).
Template = Callable[[random.Random, int], tuple[str, list[str], int]]


def _factor(hi: int) -> int:
    """Largest factor in products and quotients: a third of the additive range, from 3 to 9."""
    return min(9, max(3, hi // 3))


def _change(rng: random.Random, hi: int, have: int) -> tuple[str, str, int]:
    """A gain or a loss of `have`'s items: (phrase, operator, change); a loss never goes below one."""
    k = rng.randint(1, max(1, hi // 2))
    if rng.random() < 0.5 or have < 2:
        return rng.choice(GAINS), "+", k
    return rng.choice(LOSSES), "-", min(k, have - 1)


def _apply(have: int, op: str, k: int) -> int:
    return have + k if op == "+" else have - k


def _change1(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, it, a = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, hi)
    verb, op, k = _change(rng, hi, a)
    b = _apply(a, op, k)
    return (f"{n} has {a} {it}. Then {n} {verb} {k} {it}. How many {it} does {n} have now?",
            [f"{a} {op} {k} = {b}."], b)


def _change2(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, it, a = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, hi)
    verb1, op1, k1 = _change(rng, hi, a)
    b = _apply(a, op1, k1)
    verb2, op2, k2 = _change(rng, hi, b)
    c = _apply(b, op2, k2)
    return (f"{n} has {a} {it}. {n} {verb1} {k1} {it} and then {verb2} {k2} {it}. "
            f"How many {it} does {n} have now?",
            [f"{a} {op1} {k1} = {b}.", f"{b} {op2} {k2} = {c}."], c)


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


def _mul_change(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, c, it = rng.choice(NAMES), rng.choice(CONTAINERS), rng.choice(ITEMS)
    b, a = rng.randint(2, _factor(hi)), rng.randint(2, _factor(hi))
    verb, op, k = _change(rng, hi, a * b)
    d = _apply(a * b, op, k)
    return (f"{n} has {b} {c}s with {a} {it} in each. Then {n} {verb} {k} {it}. How many {it} does {n} have?",
            [f"{b} * {a} = {a * b}.", f"{a * b} {op} {k} = {d}."], d)


def _together(rng: random.Random, hi: int) -> tuple[str, list[str], int]:
    n, m, it = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    a, b = rng.randint(1, hi), rng.randint(1, max(1, hi // 2))
    return (f"{n} has {a} {it} and {m} has {b} {it}. How many {it} do they have together?",
            [f"{a} + {b} = {a + b}."], a + b)


TEMPLATES: dict[str, Template] = {
    "change1": _change1, "change2": _change2, "mul": _mul, "div": _div, "mul_change": _mul_change,
    "together": _together,
}
# The default mix leaves out "together" (one plain addition, the easiest kind of problem).
DEFAULT_TEMPLATES = ("change1", "change2", "mul", "div", "mul_change")


def make_problem(rng: random.Random, max_value: int = 9, templates: tuple[str, ...] | None = None) -> dict:
    """One problem: {'problem', 'solution' (worked steps, the last one ending in the answer), 'answer' (MATH-style str)}."""
    name = rng.choice(sorted(templates or DEFAULT_TEMPLATES))
    problem, steps, answer = TEMPLATES[name](rng, max_value)
    solution = " ".join(steps)
    return {"problem": problem, "solution": solution, "answer": str(answer), "type": name}


def generate_splits(n_sft: int, n_train: int, n_test: int, seed: int = 0, max_value: int = 9,
                    templates: tuple[str, ...] | None = None, short_share: float = 0.0) -> dict[str, list[dict]]:
    """Disjoint splits (no problem text appears twice across or within them), deterministic for a seed.

    `short_share`: that share of the worked solutions skips the steps and states only the result, as terse
    human solutions do (drawn from a separate generator, so the problems do not depend on it).
    The test split is drawn first so its problems never depend on how many training problems are asked for.
    """
    if min(n_sft, n_train, n_test) < 0:
        raise ValueError(f"split sizes must be >= 0, got sft={n_sft} train={n_train} test={n_test}")
    if not 0.0 <= short_share <= 1.0:
        raise ValueError(f"short_share must be in [0, 1], got {short_share}")
    rng, style_rng = random.Random(seed), random.Random(seed + 1)
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
            if split == "sft" and style_rng.random() < short_share:
                row["solution"] = f"The answer is {row['answer']}."
            rows.append(row)
        splits[split] = rows
    return splits


def write_synthetic_dataset(out_dir: str, n_sft: int = 1000, n_train: int = 4000, n_test: int = 400,
                            seed: int = 0, max_value: int = 9, short_share: float = 0.7) -> dict[str, str]:
    """Write sft.jsonl (problem, solution, answer), train.jsonl and test.jsonl (problem, answer).

    Train and test carry only final answers: that is all a verifiable reward needs, and it is the point of
    the demo (GRPO learns from many problems without worked solutions).
    """
    splits = generate_splits(n_sft, n_train, n_test, seed=seed, max_value=max_value, short_share=short_share)
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
    parser.add_argument("--n_sft", type=int, default=1000, help="Worked solutions for SFT.")
    parser.add_argument("--n_train", type=int, default=4000, help="Answer-only problems for GRPO.")
    parser.add_argument("--n_test", type=int, default=400, help="Held-out answer-only problems.")
    parser.add_argument("--max_value", type=int, default=9, help="Largest starting count (changes are up to half).")
    parser.add_argument("--short_share", type=float, default=0.7,
                        help="Share of worked solutions that state only the result, without the steps.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_synthetic_dataset(args.out, args.n_sft, args.n_train, args.n_test, args.seed, args.max_value,
                                    args.short_share)
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
