"""Synthetic arithmetic word problems: the embedded, download-free dataset of the CPU demo.

Worked solutions are few and use only the most common phrasings of "gets" and "loses" (`sft_verbs`); the
many answer-only problems GRPO trains on, and the held-out test problems, use all of them. SFT can teach the
format and the arithmetic but not what the other phrasings mean; only the answers carry that, which is what
RL with a verifiable reward can learn from. Answers are MATH-style strings (plain integers here), so the
same graders as for MATH score them.

    python -m math_grpo.synthetic --out data/synthetic --n_sft 1000 --sft_verbs 4 --n_train 4000 --n_test 400 --seed 0
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

# What happens to someone's items, and whether it adds to or takes from what they have, most common first.
# The worked solutions (`sft_verbs`) use only the first few of each; train and test use all of them, so which
# operation the other phrasings mean is only in the answer-only problems: the part RL has to learn.
GAINS = ("gets", "buys", "finds", "receives", "wins", "collects", "picks up", "is given", "earns", "orders",
         "borrows", "catches", "gathers", "inherits", "discovers", "unpacks")
LOSSES = ("loses", "gives away", "eats", "sells", "drops", "uses up", "breaks", "throws away", "donates",
          "lends out", "spends", "misplaces", "recycles", "mails", "spills", "discards")

# A problem template draws its numbers from `rng` and returns (problem, solution steps, answer); `verbs` is
# the (gains, losses) vocabulary it may use.
Verbs = tuple[tuple[str, ...], tuple[str, ...]]
Template = Callable[[random.Random, int, Verbs], tuple[str, list[str], int]]
ALL_VERBS: Verbs = (GAINS, LOSSES)


def _factor(hi: int) -> int:
    """Largest factor in products and quotients: a third of the additive range, from 3 to 9."""
    return min(9, max(3, hi // 3))


def _change(rng: random.Random, hi: int, have: int, verbs: Verbs) -> tuple[str, str, int]:
    """A gain or a loss of `have`'s items: (phrase, operator, change); a loss never goes below one."""
    k = rng.randint(1, max(1, hi // 2))
    if rng.random() < 0.5 or have < 2:
        return rng.choice(verbs[0]), "+", k
    return rng.choice(verbs[1]), "-", min(k, have - 1)


def _apply(have: int, op: str, k: int) -> int:
    return have + k if op == "+" else have - k


def _change1(rng: random.Random, hi: int, verbs: Verbs) -> tuple[str, list[str], int]:
    n, it, a = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, hi)
    verb, op, k = _change(rng, hi, a, verbs)
    b = _apply(a, op, k)
    return (f"{n} has {a} {it}. Then {n} {verb} {k} {it}. How many {it} does {n} have now?",
            [f"{a} {op} {k} = {b}."], b)


def _change2(rng: random.Random, hi: int, verbs: Verbs) -> tuple[str, list[str], int]:
    n, it, a = rng.choice(NAMES), rng.choice(ITEMS), rng.randint(2, hi)
    verb1, op1, k1 = _change(rng, hi, a, verbs)
    b = _apply(a, op1, k1)
    verb2, op2, k2 = _change(rng, hi, b, verbs)
    c = _apply(b, op2, k2)
    return (f"{n} has {a} {it}. {n} {verb1} {k1} {it} and then {verb2} {k2} {it}. "
            f"How many {it} does {n} have now?",
            [f"{a} {op1} {k1} = {b}.", f"{b} {op2} {k2} = {c}."], c)


def _mul(rng: random.Random, hi: int, verbs: Verbs) -> tuple[str, list[str], int]:
    c, it = rng.choice(CONTAINERS), rng.choice(ITEMS)
    a, b = rng.randint(2, _factor(hi)), rng.randint(2, _factor(hi))
    return (f"Each {c} holds {a} {it}. How many {it} are in {b} {c}s?",
            [f"{a} * {b} = {a * b}."], a * b)


def _div(rng: random.Random, hi: int, verbs: Verbs) -> tuple[str, list[str], int]:
    n, it = rng.choice(NAMES), rng.choice(ITEMS)
    q, b = rng.randint(2, _factor(hi)), rng.randint(2, _factor(hi))
    a = q * b
    return (f"{n} shares {a} {it} equally among {b} friends. How many {it} does each friend get?",
            [f"{a} / {b} = {q}."], q)


def _mul_change(rng: random.Random, hi: int, verbs: Verbs) -> tuple[str, list[str], int]:
    n, c, it = rng.choice(NAMES), rng.choice(CONTAINERS), rng.choice(ITEMS)
    b, a = rng.randint(2, _factor(hi)), rng.randint(2, _factor(hi))
    verb, op, k = _change(rng, hi, a * b, verbs)
    d = _apply(a * b, op, k)
    return (f"{n} has {b} {c}s with {a} {it} in each. Then {n} {verb} {k} {it}. How many {it} does {n} have?",
            [f"{b} * {a} = {a * b}.", f"{a * b} {op} {k} = {d}."], d)


def _together(rng: random.Random, hi: int, verbs: Verbs) -> tuple[str, list[str], int]:
    n, m, it = *rng.sample(NAMES, 2), rng.choice(ITEMS)
    a, b = rng.randint(1, hi), rng.randint(1, max(1, hi // 2))
    return (f"{n} has {a} {it} and {m} has {b} {it}. How many {it} do they have together?",
            [f"{a} + {b} = {a + b}."], a + b)


TEMPLATES: dict[str, Template] = {
    "change1": _change1, "change2": _change2, "mul": _mul, "div": _div, "mul_change": _mul_change,
    "together": _together,
}
# The default mix leaves out "together": every step of it is plain addition, which the worked solutions
# already teach, while the phrasing templates carry what only the answer-only problems can.
DEFAULT_TEMPLATES = ("change1", "change2", "mul", "div", "mul_change")


def make_problem(rng: random.Random, max_value: int = 6, templates: tuple[str, ...] | None = None,
                 verbs: Verbs = ALL_VERBS) -> dict:
    """One problem: {'problem', 'solution' (worked steps, the last one ending in the answer), 'answer' (MATH-style str)}."""
    name = rng.choice(sorted(templates or DEFAULT_TEMPLATES))
    problem, steps, answer = TEMPLATES[name](rng, max_value, verbs)
    solution = " ".join(steps)
    return {"problem": problem, "solution": solution, "answer": str(answer), "type": name}


def generate_splits(n_sft: int, n_train: int, n_test: int, seed: int = 0, max_value: int = 6,
                    templates: tuple[str, ...] | None = None, sft_verbs: int | None = None) -> dict[str, list[dict]]:
    """Disjoint splits (no problem text appears twice across or within them), deterministic for a seed.

    `sft_verbs`: the worked solutions use only the first (most common) that many gain and loss phrasings;
    train and test use all of them. None: every split uses all.
    The test split is drawn first so its problems never depend on how many training problems are asked for.
    """
    if min(n_sft, n_train, n_test) < 0:
        raise ValueError(f"split sizes must be >= 0, got sft={n_sft} train={n_train} test={n_test}")
    if sft_verbs is not None and not 1 <= sft_verbs <= min(len(GAINS), len(LOSSES)):
        raise ValueError(f"sft_verbs must be in 1..{min(len(GAINS), len(LOSSES))}, got {sft_verbs}")
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split, n in (("test", n_test), ("sft", n_sft), ("train", n_train)):
        verbs = ALL_VERBS if split != "sft" or sft_verbs is None else (GAINS[:sft_verbs], LOSSES[:sft_verbs])
        rows: list[dict] = []
        tries = 0
        while len(rows) < n:
            tries += 1
            if tries > 50 * n + 1000:
                raise ValueError(f"could not draw {n} distinct {split} problems with max_value={max_value}")
            row = make_problem(rng, max_value, templates, verbs)
            if row["problem"] in seen:
                continue
            seen.add(row["problem"])
            rows.append(row)
        splits[split] = rows
    return splits


def write_synthetic_dataset(out_dir: str, n_sft: int = 1000, n_train: int = 4000, n_test: int = 400,
                            seed: int = 0, max_value: int = 6, sft_verbs: int | None = 4) -> dict[str, str]:
    """Write sft.jsonl (problem, solution, answer), train.jsonl and test.jsonl (problem, answer).

    Train and test carry only final answers: that is all a verifiable reward needs, and it is the point of
    the demo (GRPO learns from many problems without worked solutions).
    """
    splits = generate_splits(n_sft, n_train, n_test, seed=seed, max_value=max_value, sft_verbs=sft_verbs)
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
    parser.add_argument("--max_value", type=int, default=6, help="Largest starting count (changes are up to half).")
    parser.add_argument("--sft_verbs", type=int, default=4,
                        help="Gain and loss phrasings the worked solutions use (the most common ones); 0: all.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_synthetic_dataset(args.out, args.n_sft, args.n_train, args.n_test, args.seed, args.max_value,
                                    args.sft_verbs or None)
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
