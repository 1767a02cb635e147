"""Benchmark registry and loaders on fixture files in each benchmark's schema, `--dry_run`, bad input.

Each fixture copies the layout of the real file (columns, types, answer forms); every row's gold answer as
the file writes it must grade correct against what was loaded, as the real files will be checked.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from _tiny import REPO, run

from math_grpo.benchmarks import (
    REGISTRY,
    dry_run_rows,
    load_benchmarks,
    parse_sampling,
    resolve_benchmark,
)
from math_grpo.data import format_completion, format_prompts, load_problems
from math_grpo.errors import MathGRPOError
from rewards.extract import boxed_content
from rewards.grader import grade, grade_batch

FIXTURES = os.path.join(REPO, "tests", "fixtures", "benchmarks")
FILES = {
    "aime24": "aime24.jsonl",
    "aime25": "aime25.parquet",
    "amc23": "amc23.parquet",
    "math500": "math500.jsonl",
    "minerva_math": "minerva_math.jsonl",
    "minerva_qa": "minerva_qa.jsonl",
    "olympiadbench": "olympiadbench.json",
    "olympiadbench_text": "olympiadbench_text.jsonl",
    "gsm8k": "gsm8k.jsonl",
}


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


def raw_rows(path: str) -> list[dict]:
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def gold_as_written(row: dict):
    """The gold answer the way the file writes it (a list's first element, GSM8K's text after ####)."""
    for key in ("answer", "final_answer"):
        if row.get(key) is not None:
            value = row[key]
            if isinstance(value, list):
                return value[0]
            if isinstance(value, str) and "####" in value:
                return value.split("####")[-1].strip()
            return str(value)
    return boxed_content(row["solution"])


def r1(answer: str) -> str:
    return f"<think> x </think> <answer> {answer} </answer>"


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_row_loads_and_its_own_gold_answer_grades_correct(name):
    path = fixture(FILES[name])
    (bench,) = load_benchmarks([f"{name}={path}"])
    raw = raw_rows(path)
    assert len(bench.rows) == len(raw)
    golds = [gold_as_written(r) for r in raw]
    results = grade_batch([r1(g) for g in golds], [row["answer"] for row in bench.rows], mode="accurate")
    assert [r.reward for r in results] == [1.0] * len(raw), list(zip(golds, [row["answer"] for row in bench.rows]))


def test_answer_forms_are_reduced():
    aime, amc, aime25, gsm = load_benchmarks([f"aime24={fixture('aime24.jsonl')}", f"amc23={fixture('amc23.parquet')}",
                                              f"aime25={fixture('aime25.parquet')}", f"gsm8k={fixture('gsm8k.jsonl')}"])
    assert [r["answer"] for r in aime.rows] == ["376", "25", "0"]  # leading zeros: AIME's 000-999 form
    assert [r["answer"] for r in amc.rows] == ["27", "36", "0.5"]  # floats that mean integers
    assert [r["answer"] for r in aime25.rows] == ["70", "117"]  # ints
    assert [r["answer"] for r in gsm.rows] == ["1200", "3"]  # '#### 1,200'
    # a wrong answer is still wrong against the reduced form
    assert grade(r1("250"), aime.rows[1]["answer"]).reward == 0.0


def test_dollar_wrappers_come_off_only_around_whole_math_spans():
    (bench,) = load_benchmarks([f"olympiadbench={fixture('olympiadbench_text.jsonl')}"])
    answers = [r["answer"] for r in bench.rows]
    assert answers[0].startswith("$f(x)=a x+b$, where $b$")  # text around math: as written
    assert answers[1:] == ["$221,$8$", "(1,8,19), (2,7,13), (4,5,7)", "90"]  # an odd `$` count: as written


def test_minerva_answer_is_the_last_box_of_the_solution():
    (bench,) = load_benchmarks([f"minerva_math={fixture('minerva_math.jsonl')}"])
    assert [r["answer"] for r in bench.rows] == ["1.6", "4.5e33", "\\frac{1}{2} e^{-T}"]
    assert bench.rows[0]["subject"] == "Introduction to Astronomy (8.282J Spring 2006)"
    assert grade(r1("4e33"), bench.rows[1]["answer"]).reward == 0.0  # the earlier box is not the answer


def test_olympiadbench_lists_stay_lists_and_any_element_matches():
    ds, _ = load_problems(fixture("olympiadbench.json"), split="test")
    # one row has two answers, so the column is list[str] for every row (Arrow: one type per column)
    assert ds["answer"] == [["2"], ["\\frac{1}{2 n+2}"], ["69,84"], ["3", "-3"]]
    assert ds["subject"] == ["Combinatorics", "Algebra", "Number Theory", "Algebra"]
    assert ds["problem"][3].startswith("Let $x$ be a real number with $x^2=9$.\n\nWhat can $x$ be?")
    assert ds["solution"][0] == "Sergey needs 2 moves."
    assert grade(r1("-3"), ds["answer"][3]).reward == 1.0 and grade(r1("3"), ds["answer"][3]).reward == 1.0
    assert grade(r1("9"), ds["answer"][3]).reward == 0.0
    # without a multi-element row, one-element lists become their element: never the text "['2']"
    ds1, _ = load_problems(fixture("olympiadbench.json"), split="test", limit=3)
    assert ds1["answer"] == ["2", "\\frac{1}{2 n+2}", "69,84"]
    # SFT targets and GRPO rewards take the list as it is
    assert format_completion("Either root.", ["3", "-3"]).endswith("<answer> 3 </answer>")
    sft = format_prompts(ds, with_completion=True)
    assert sft["completion"][3].endswith("<answer> 3 </answer>")
    from rewards.registry import get_reward_funcs

    (reward,) = get_reward_funcs(["r1_zero"])
    assert reward([r1("-3"), r1("2"), r1("5")], answer=[ds["answer"][3], ds["answer"][0], ds["answer"][0]]) == [
        1.0, 1.0, 0.0]


def test_folders_hub_layout_and_saved_datasets(tmp_path):
    hub = tmp_path / "amc23" / "data"
    hub.mkdir(parents=True)
    shutil.copy(fixture("amc23.parquet"), hub / "test-00000-of-00001.parquet")
    single = tmp_path / "aime"
    single.mkdir()
    shutil.copy(fixture("aime24.jsonl"), single / "aime_2024_problems.jsonl")
    from datasets import Dataset, DatasetDict

    olymp = Dataset.from_list(raw_rows(fixture("olympiadbench.json")))
    olymp.save_to_disk(str(tmp_path / "olympiad_saved"))
    DatasetDict({"test": olymp}).save_to_disk(str(tmp_path / "suite"))
    benches = load_benchmarks([f"amc23={tmp_path / 'amc23'}", f"aime24={single}",
                               f"olympiadbench={tmp_path / 'olympiad_saved'}", f"olympiad_dict={tmp_path / 'suite'}"])
    assert [len(b.rows) for b in benches] == [3, 3, 4, 4]
    assert benches[2].rows[3]["answer"] == ["3", "-3"] == benches[3].rows[3]["answer"]


def test_json_with_a_list_per_split(tmp_path):
    rows = raw_rows(fixture("olympiadbench.json"))
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": rows[:1], "test": rows}), encoding="utf-8")
    (bench,) = load_benchmarks([f"olympiadbench={path}"])
    assert len(bench.rows) == 4


def test_registry_has_the_papers_benchmarks_with_schemas():
    assert set(REGISTRY) >= {"aime24", "aime25", "amc23", "math500", "minerva_math", "olympiadbench", "gsm8k"}
    assert REGISTRY["olympiadbench"].config == "OE_TO_maths_en_COMP" and REGISTRY["gsm8k"].config == "main"
    assert all(spec.schema for spec in REGISTRY.values())
    assert resolve_benchmark("minerva").source == REGISTRY["minerva_math"].source  # understand-r1-zero's name


def test_dry_run_rows_and_cli():
    benches = load_benchmarks([f"math500={fixture('math500.jsonl')}"])
    rows = dry_run_rows(benches)
    assert rows[1] == {"benchmark": "math500", "index": 1, "problem": "Simplify $\\sqrt{12}$.",
                       "answer": "2\\sqrt{3}", "level": "3", "subject": "Algebra"}
    entries = [f"{name}={fixture(f)}" for name, f in FILES.items()]
    proc = run([sys.executable, "recipes/evaluate.py", "--dry_run", "--benchmarks", *entries], timeout=300)
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(printed) == sum(len(raw_rows(fixture(f))) for f in FILES.values())
    assert {r["benchmark"] for r in printed} == set(FILES)
    olymp = [r for r in printed if r["benchmark"] == "olympiadbench"]
    assert olymp[3]["answer"] == ["3", "-3"] and olymp[0]["subject"] == "Combinatorics"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bench.jsonl", '{"text": "hello", "answer": "1"}\n', "no problem column"),
        ("bench.json", '[{"problem": "What is 1+1?", "hint": "two"}]', "no answer column"),
        ("bench.jsonl", "", "empty file"),
        ("bench.parquet", "", "empty file"),
        ("bench.json", "[]", "no usable rows"),
        ("bench.jsonl", "\n\n", "no usable rows"),
        ("bench.json", '{"problem": ', "cannot read"),
        ("bench.parquet", "not parquet", "cannot read"),
    ],
)
def test_bad_files_give_one_line_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MathGRPOError, match=message) as info:
        load_benchmarks([f"mine={path}"])
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "mine" in text


def test_bad_names_and_sampling_entries():
    assert resolve_benchmark(fixture("gsm8k.jsonl")).name == "gsm8k"  # a bare path names itself
    assert resolve_benchmark(os.path.join(REPO, "tests", "fixtures", "data")).name == "data"
    with pytest.raises(MathGRPOError, match="unknown benchmark 'aime23'"):
        resolve_benchmark("aime23")
    with pytest.raises(MathGRPOError, match="nope: .*does not exist"):
        resolve_benchmark("nope=/no/such/file.jsonl")
    assert parse_sampling(["aime24: n=16 temperature=0.6, top_p=0.95"], ["aime24", "math500"]) == {
        "aime24": {"n": 16, "temperature": 0.6, "top_p": 0.95}}
    with pytest.raises(MathGRPOError, match="'gsm9k' is not one of the benchmarks"):
        parse_sampling(["gsm9k: n=4"], ["aime24"])
    assert parse_sampling(["gsm8k: n=4"], ["aime24"]) == {"gsm8k": {"n": 4}}  # a recipe's, not run this time
    with pytest.raises(MathGRPOError, match="'k=4' is not key=value"):
        parse_sampling(["aime24: k=4"], ["aime24"])


def test_cli_errors_are_one_line(tmp_path):
    bad = run([sys.executable, "recipes/evaluate.py", "--dry_run", "--benchmarks", "nope"], timeout=120, check=False)
    assert bad.returncode == 2 and "unknown benchmark 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    # a list flag given twice would silently keep its last use (argparse): `--model A --model B` is an error
    twice = run([sys.executable, "recipes/evaluate.py", "--dry_run", "--model", "a", "--model", "b", "--benchmarks",
                 f"aime24={fixture('aime24.jsonl')}"], timeout=120, check=False)
    assert twice.returncode == 2 and "--model given more than once" in twice.stderr, twice.stderr
    assert len(twice.stderr.strip().splitlines()) == 1


def test_gpu_evaluation_recipe_parses_and_samples_per_benchmark():
    """The shipped recipe: AIME/AMC avg@16 at a temperature, the rest greedy (dry run, so no model)."""
    import importlib.util

    from math_grpo.cli import parse_recipe

    spec = importlib.util.spec_from_file_location("evaluate_recipe", os.path.join(REPO, "recipes", "evaluate.py"))
    recipe = importlib.util.module_from_spec(spec)
    sys.modules["evaluate_recipe"] = recipe  # dataclasses look their module up while being made
    spec.loader.exec_module(recipe)
    config = os.path.join(REPO, "recipes", "qwen2.5-math-1.5b", "evaluate.yaml")
    (args,) = parse_recipe((recipe.EvaluateArguments,), ["--config", config])
    assert args.benchmarks == ["aime24", "amc23", "math500", "minerva_math", "olympiadbench"]
    entries = [f"aime24={fixture('aime24.jsonl')}", f"math500={fixture('math500.jsonl')}"]
    aime, math500 = load_benchmarks(entries, sampling=args.eval_sampling)
    assert aime.sampling == {"n": 16, "temperature": 0.6, "top_p": 0.95} and math500.sampling == {}
    assert args.eval_temperature == 0.0 and args.eval_max_tokens == 3000
