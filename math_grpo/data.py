"""Problem datasets: loading (hub id or local file), schema detection, cleaning and prompt templates.

Every loader returns the same columns so the rest of the code never guesses: `problem`, `answer` (the
reduced ground truth), and where the source has them `solution`, `level`, `subject`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from math_grpo.errors import MathGRPOError

# The r1_zero template of Dr. GRPO / CS336: the model continues after "<think>" and must close with
# "</think> <answer> ... </answer>", which is exactly what the r1_zero grader checks.
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the "
    "answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer "
    "here </answer>.\nUser: {question}\nAssistant: <think>"
)
# The question-only prompt (Dr. GRPO's "no template"): the answer is expected in \boxed{}.
QUESTION_ONLY_TEMPLATE = "{question}"

PROMPT_TEMPLATES = {"r1_zero": R1_ZERO_TEMPLATE, "question_only": QUESTION_ONLY_TEMPLATE}

PROBLEM_COLUMNS = ("problem", "question", "query", "input")
ANSWER_COLUMNS = ("answer", "final_answer", "ground_truth", "target", "expected_answer", "gt_answer")
SOLUTION_COLUMNS = ("solution", "worked_solution", "rationale")
CONTEXT_COLUMNS = ("context",)
EXTRA_COLUMNS = ("level", "subject", "type", "unique_id")
LOCAL_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".parquet", ".arrow", ".csv")
_SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval")


@dataclass
class LoadReport:
    """What cleaning did to a source: how many rows were kept and why the others were dropped."""

    source: str
    total: int = 0
    kept: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        msg = f"{self.source}: kept {self.kept} of {self.total} rows"
        if self.skipped:
            row, why = self.skipped[0]
            msg += f", skipped {len(self.skipped)} malformed (first: row {row}: {why})"
        return msg


def prompt_template(name: str) -> str:
    if name not in PROMPT_TEMPLATES:
        raise MathGRPOError(f"prompt_template: unknown template {name!r} (known: {', '.join(PROMPT_TEMPLATES)})")
    return PROMPT_TEMPLATES[name]


def format_prompt(problem: str, template: str = "r1_zero") -> str:
    return prompt_template(template).format(question=problem.strip())


def format_completion(solution: str, answer: str | list[str], template: str = "r1_zero") -> str:
    """The SFT target in the same format the grader rewards (a list answer: its first element)."""
    if isinstance(answer, list | tuple):
        answer = answer[0] if answer else ""
    solution = solution.strip()
    if template == "r1_zero":
        return f" {solution} </think> <answer> {answer} </answer>"
    if template == "question_only":
        if "\\boxed" in solution:
            return f" {solution}"
        return f" {solution}\nThe final answer is $\\boxed{{{answer}}}$."
    raise MathGRPOError(f"prompt_template: unknown template {template!r} (known: {', '.join(PROMPT_TEMPLATES)})")


def _is_local(source: str) -> bool:
    return os.path.exists(source) or source.endswith(LOCAL_EXTENSIONS) or source.startswith(("./", "/", "../"))


def _read_jsonl(path: str) -> list[tuple[int, dict[str, Any] | str]]:
    """Rows with their 1-based line numbers; an undecodable or non-object line becomes an error string."""
    rows: list[tuple[int, dict[str, Any] | str]] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                rows.append((lineno, "undecodable bytes (not UTF-8)"))
                continue
            except json.JSONDecodeError as exc:
                rows.append((lineno, f"invalid JSON ({exc.msg})"))
                continue
            rows.append((lineno, obj if isinstance(obj, dict) else "not a JSON object"))
    return rows


def _is_saved_dataset(folder: str) -> bool:
    """A folder written by `datasets.save_to_disk` (a Dataset or a DatasetDict)."""
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("state.json", "dataset_dict.json"))


def _data_files(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, f) for f in sorted(files) if f.endswith(LOCAL_EXTENSIONS)]
    return found


def _is_split_file(path: str, folder: str, split: str) -> bool:
    """`test.jsonl`, `data/test-00000-of-00001.parquet` or `test/0000.parquet` (the hub's layouts)."""
    *dirs, name = os.path.relpath(path, folder).split(os.sep)
    stem = name.split(".")[0]
    return stem == split or stem.startswith((split + "-", split + "_")) or split in dirs


def _resolve_local(source: str, split: str | Sequence[str]) -> list[str]:
    """The file(s) to read for `split` (several names tried in order): a file, a folder's files, or a saved dataset."""
    splits = [split] if isinstance(split, str) else list(split)
    if os.path.isfile(source):
        return [source]
    if not os.path.isdir(source):
        raise MathGRPOError(f"{source}: dataset file not found")
    if _is_saved_dataset(source):
        return [source]
    files = _data_files(source)
    for name in splits:
        chosen = [f for f in files if _is_split_file(f, source, name)]
        if chosen:
            return chosen
    # A folder holding one data file named for no split (`aime_2024_problems.parquet`) is that file; one named
    # for another split is not: a train split must never quietly be read from test.jsonl.
    if len(files) == 1 and not any(_is_split_file(files[0], source, s) for s in _SPLIT_NAMES):
        return files
    names = ", ".join(os.path.relpath(f, source) for f in files[:6]) or "none"
    raise MathGRPOError(
        f"{source}: no {splits[0]}{{{','.join(LOCAL_EXTENSIONS)}}} file in this folder for split {splits[0]!r} "
        f"(data files found: {names})"
    )


def _read_json(path: str, splits: Sequence[str]) -> list[Any]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON lines under a .json name
            return [r for _, r in _read_jsonl(path)]
        raise
    if isinstance(data, dict):  # {"data": [...]}, {"test": [...], "train": [...]} or column-oriented
        lists = [v for v in data.values() if isinstance(v, list)]
        split = next((s for s in splits if isinstance(data.get(s), list)), None)
        if split is not None and all(isinstance(r, dict) for r in data[split]):
            data = data[split]
        elif len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
            data = lists[0]
        elif lists and all(isinstance(v, list) and len(v) == len(lists[0]) for v in data.values()):
            data = [dict(zip(data, values)) for values in zip(*data.values())]
    if not isinstance(data, list):
        raise MathGRPOError(f"{path}: expected a JSON list of objects (or JSON lines)")
    return data


def _read_saved(folder: str, splits: Sequence[str]) -> list[Any]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(folder)
    if isinstance(ds, DatasetDict):
        name = next((s for s in splits if s in ds), None)
        if name is None:
            raise MathGRPOError(f"{folder}: a saved DatasetDict without split {splits[0]!r} (splits: "
                                f"{', '.join(ds)}); pass {os.path.join(folder, next(iter(ds)))} or the split")
        ds = ds[name]
    return ds.to_list()


def _read_file(path: str, splits: Sequence[str]) -> list[Any]:
    if path.endswith(".json"):
        return _read_json(path, splits)
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.endswith(".arrow"):
        return Dataset.from_file(path).to_list()
    return Dataset.from_csv(path).to_list()


def _read_local(paths: list[str], splits: Sequence[str]) -> list[tuple[int, dict[str, Any] | str]]:
    """Rows with their 1-based numbers (line numbers for JSON lines); a non-object row becomes an error string."""
    for path in paths:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise MathGRPOError(f"{path}: empty file (no rows)")
    if len(paths) == 1 and paths[0].endswith((".jsonl", ".ndjson")):
        return _read_jsonl(paths[0])
    data: list[Any] = []
    for path in paths:
        try:
            if os.path.isdir(path):
                data += _read_saved(path, splits)
            elif path.endswith((".jsonl", ".ndjson")):
                data += [r for _, r in _read_jsonl(path)]
            else:
                data += _read_file(path, splits)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MathGRPOError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
        except MathGRPOError:
            raise
        except Exception as exc:  # pyarrow / csv / datasets errors have many types
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise MathGRPOError(f"{path}: cannot read ({type(exc).__name__}: {first})") from None
    return [(i, r if isinstance(r, dict) else "not an object") for i, r in enumerate(data, start=1)]


def _read_hub(source: str, config: str | None, split: str) -> list[tuple[int, dict[str, Any] | str]]:
    from datasets import load_dataset

    try:
        ds = load_dataset(source, config, split=split)
    except Exception as exc:
        raise MathGRPOError(
            f"dataset {source!r} (config={config}, split={split}): cannot load from the hub or cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    return [(i, r) for i, r in enumerate(ds, start=1)]


def _pick(row: dict[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    """The first of `names` the row has (not None); a column's case does not matter (`Problem`, `Answer`)."""
    for name in names:
        if name in row and row[name] is not None:
            return name, row[name]
    lower = {k.lower(): k for k in row if isinstance(k, str)}
    for name in names:
        key = lower.get(name)
        if key is not None and row[key] is not None:
            return key, row[key]
    return None, None


# `$x$` or a list of such spans (`$69$,$84$`); text around math (`$f(x)=ax+b$, where $b$ ...`) is left alone.
_MATH_SPANS = re.compile(r"^\$[^$]+\$(\s*,\s*\$[^$]+\$)*$")
_LEADING_ZEROS = re.compile(r"^0+(\d+)$")
_WHOLE_FLOAT = re.compile(r"^([+-]?\d+)\.0*$")


def clean_answer(text: str) -> str:
    """One reduced answer as the grader should see it: `$2^{10}$` -> `2^{10}`, `025` -> `25`, `27.0` -> `27`."""
    text = text.strip()
    if _MATH_SPANS.match(text):
        text = text.replace("$", "").strip()  # `$69$,$84$` -> `69,84`
    if text.startswith("\\(") and text.endswith("\\)"):
        text = text[2:-2].strip()
    if m := _LEADING_ZEROS.match(text):
        text = m.group(1).lstrip("0") or "0"
    elif m := _WHOLE_FLOAT.match(text):
        text = m.group(1)
    return text


def reduce_answer(value: Any) -> str | list[str]:
    """A source answer (text, number, list) -> one cleaned string, or a list of them meaning "any of these"."""
    from rewards.extract import reduce_ground_truth

    reduced = reduce_ground_truth(value)
    items = reduced if isinstance(reduced, list) else [reduced]
    out: list[str] = []
    for item in items:
        item = clean_answer(str(item))
        if item and item not in out:
            out.append(item)
    if len(out) == 1:
        return out[0]
    return out if out else ""


def _text(value: Any) -> str | None:
    """A solution as text: OlympiadBench keeps a list of worked solutions (the first one is used)."""
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _normalise_row(row: dict[str, Any], max_problem_chars: int, max_answer_chars: int = 2000) -> dict[str, Any]:
    """One source row -> our columns, or raise ValueError saying what is wrong with it."""
    _, problem = _pick(row, PROBLEM_COLUMNS)
    if problem is None:
        raise ValueError(f"missing problem (one of {', '.join(PROBLEM_COLUMNS)})")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("empty problem")
    _, context = _pick(row, CONTEXT_COLUMNS)
    if isinstance(context, str) and context.strip():
        problem = context.strip() + "\n\n" + problem.strip()  # OlympiadBench: shared background of a problem
    if len(problem) > max_problem_chars:
        raise ValueError(f"problem longer than max_problem_chars={max_problem_chars}")
    _, answer = _pick(row, ANSWER_COLUMNS)
    _, raw_solution = _pick(row, SOLUTION_COLUMNS)
    solution = _text(raw_solution)
    ground_truth: str | list[str] = ""
    if answer is not None:
        ground_truth = reduce_answer(answer)
    if not ground_truth and solution and "\\boxed" in solution:
        ground_truth = reduce_answer(solution)  # MATH, Minerva: the answer is the last \boxed{} of the solution
    elif answer is None and not ground_truth:
        raise ValueError(f"missing answer (one of {', '.join(ANSWER_COLUMNS)}, or a solution with \\boxed{{}})")
    if not ground_truth:
        raise ValueError("empty answer")
    if sum(len(a) for a in ([ground_truth] if isinstance(ground_truth, str) else ground_truth)) > max_answer_chars:
        raise ValueError(f"answer longer than {max_answer_chars} characters")
    out: dict[str, Any] = {"problem": problem.strip(), "answer": ground_truth}
    if solution:
        out["solution"] = solution
    elif isinstance(answer, str) and "####" in answer:
        # GSM8K keeps its worked solution in `answer` ("... #### 42"): use the part before the marker.
        out["solution"] = answer.split("####")[0].strip()
    for name in EXTRA_COLUMNS:
        if name in row and row[name] is not None:
            out[name] = str(row[name])
    if "subject" not in out:  # OlympiadBench: `subfield` (its `subject` is "Math" throughout); MATH: `type`
        _, subject = _pick(row, ("subfield", "type"))
        if subject is not None:
            out["subject"] = str(subject)
    elif row.get("subfield"):
        out["subject"] = str(row["subfield"])
    return out


def _check_columns(where: str, raw_rows: list[tuple[int, dict[str, Any] | str]]) -> None:
    """A file without any problem or answer column is one error naming the file, not N malformed rows."""
    columns = {k for _, r in raw_rows if isinstance(r, dict) for k in r}
    if not columns:
        return
    lower = {str(c).lower() for c in columns}
    found = ", ".join(sorted(map(str, columns))[:12])
    if not lower & set(PROBLEM_COLUMNS):
        raise MathGRPOError(f"{where}: no problem column (looked for {', '.join(PROBLEM_COLUMNS)}; found {found})")
    if not lower & set(ANSWER_COLUMNS) and not lower & set(SOLUTION_COLUMNS):
        raise MathGRPOError(f"{where}: no answer column (looked for {', '.join(ANSWER_COLUMNS)}, or a solution "
                            f"with \\boxed{{}}; found {found})")


def load_problems(
    source: str,
    split: str | Sequence[str] = "train",
    config: str | None = None,
    bad_rows: str = "skip",
    max_problem_chars: int = 20_000,
    limit: int | None = None,
    verbose: bool = True,
) -> tuple[Dataset, LoadReport]:
    """Load math problems from a hub id or a local file/folder into our columns.

    Malformed rows (missing or empty problem/answer, undecodable bytes, absurdly long text) are skipped and
    counted (`bad_rows="skip"`) or stop the load with the row number (`bad_rows="error"`). A local folder is
    searched for `split` (several names are tried in order; a folder with a single data file is that file).
    """
    if bad_rows not in ("skip", "error"):
        raise MathGRPOError(f"bad_rows: must be 'skip' or 'error', got {bad_rows!r}")
    if not source:
        raise MathGRPOError("dataset_name: no dataset given (a hub id, a .jsonl/.json/.parquet file or a folder)")
    splits = [split] if isinstance(split, str) else list(split)
    if _is_local(source):
        paths = _resolve_local(source, splits)
        where = paths[0] if len(paths) == 1 else source
        raw_rows = _read_local(paths, splits)
    else:
        where = source
        raw_rows = _read_hub(source, config, splits[0])
    _check_columns(where, raw_rows)
    report = LoadReport(source=where, total=len(raw_rows))
    rows: list[dict[str, Any]] = []
    for rowno, raw in raw_rows:
        try:
            if isinstance(raw, str):
                raise ValueError(raw)
            rows.append(_normalise_row(raw, max_problem_chars))
        except ValueError as exc:
            if bad_rows == "error":
                raise MathGRPOError(f"{where}: row {rowno}: {exc}") from None
            report.skipped.append((rowno, str(exc)))
        if limit is not None and len(rows) >= limit:
            break
    report.kept = len(rows)
    if not rows:
        raise MathGRPOError(f"{where}: no usable rows ({report.summary()})")
    if verbose:
        print(f"[data] {report.summary()}", flush=True)
    # Arrow needs one type per column: when some answer is a list ("any of these"), every answer is a list.
    if any(isinstance(r["answer"], list) for r in rows):
        for r in rows:
            if isinstance(r["answer"], str):
                r["answer"] = [r["answer"]]
    # Optional columns must be present in every row for Arrow: fill the gaps with "".
    columns = {k for r in rows for k in r}
    for r in rows:
        for k in columns:
            r.setdefault(k, "")
    return Dataset.from_list(rows), report


def format_prompts(dataset: Dataset, template: str = "r1_zero", with_completion: bool = False) -> Dataset:
    """Add `prompt` (and for SFT `completion`) in the chosen template, keeping `answer` for the rewards."""
    prompt_template(template)  # fail early on an unknown name

    def _fmt(row: dict[str, Any]) -> dict[str, Any]:
        out = {"prompt": format_prompt(row["problem"], template)}
        if with_completion:
            out["completion"] = format_completion(row.get("solution") or "", row["answer"], template)
        return out

    if with_completion:
        missing = sum(1 for s in dataset["solution"] if not s) if "solution" in dataset.column_names else None
        if missing is None or missing == len(dataset):
            raise MathGRPOError("SFT data has no worked solutions (a `solution` column, or GSM8K-style answers)")
        if missing:
            dataset = dataset.filter(lambda r: bool(r["solution"]))
    return dataset.map(_fmt, desc="formatting prompts")


def drop_long_prompts(dataset: Dataset, tokenizer: Any, max_tokens: int, verbose: bool = True) -> Dataset:
    """Drop rows whose prompt is longer than `max_tokens` tokens (TRL 1.16 would otherwise keep them whole)."""
    prompts = list(dataset["prompt"])  # datasets 5 returns a lazy Column, which tokenizers refuse
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    keep = [i for i, n in enumerate(lengths) if n <= max_tokens]
    if not keep:
        raise MathGRPOError(f"max_prompt_length={max_tokens}: every prompt is longer (shortest: {min(lengths)} tokens)")
    if verbose and len(keep) < len(lengths):
        print(f"[data] dropped {len(lengths) - len(keep)} of {len(lengths)} prompts longer than "
              f"max_prompt_length={max_tokens} tokens", flush=True)
    return dataset.select(keep) if len(keep) < len(lengths) else dataset


def load_training_set(script_args: Any, with_completion: bool = False, verbose: bool = True) -> Dataset:
    """The recipes' training data: load, clean and format per the script arguments (one place for both)."""
    dataset, _ = load_problems(script_args.dataset_name, split=script_args.dataset_train_split,
                               config=script_args.dataset_config, bad_rows=script_args.bad_rows,
                               max_problem_chars=script_args.max_problem_chars,
                               limit=script_args.max_train_samples, verbose=verbose)
    return format_prompts(dataset, script_args.prompt_template, with_completion=with_completion)
