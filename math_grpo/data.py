"""Problem datasets: loading (hub id or local file), schema detection, cleaning and prompt templates.

Every loader returns the same columns so the rest of the code never guesses: `problem`, `answer` (the
reduced ground truth), and where the source has them `solution`, `level`, `subject`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from math_grpo.cli import MathGRPOError

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
ANSWER_COLUMNS = ("answer", "final_answer", "ground_truth", "target", "expected_answer")
SOLUTION_COLUMNS = ("solution", "worked_solution", "rationale")
EXTRA_COLUMNS = ("level", "subject", "type", "unique_id")
LOCAL_EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")


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


def format_completion(solution: str, answer: str, template: str = "r1_zero") -> str:
    """The SFT target in the same format the grader rewards."""
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


def _resolve_local_file(source: str, split: str) -> str:
    if os.path.isdir(source):
        for ext in LOCAL_EXTENSIONS:
            candidate = os.path.join(source, split + ext)
            if os.path.isfile(candidate):
                return candidate
        raise MathGRPOError(
            f"{source}: no {split}{{{','.join(LOCAL_EXTENSIONS)}}} file in this folder for split {split!r}"
        )
    if not os.path.isfile(source):
        raise MathGRPOError(f"{source}: dataset file not found")
    return source


def _read_local(path: str) -> list[tuple[int, dict[str, Any] | str]]:
    if path.endswith(".jsonl"):
        return _read_jsonl(path)
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data, dict):  # {"data": [...]} or column-oriented
                lists = [v for v in data.values() if isinstance(v, list)]
                data = lists[0] if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]) else data
            if isinstance(data, dict):
                data = Dataset.from_dict(data).to_list()
            if not isinstance(data, list):
                raise MathGRPOError(f"{path}: expected a JSON list of objects")
        elif path.endswith(".parquet"):
            data = Dataset.from_parquet(path).to_list()
        else:
            data = Dataset.from_csv(path).to_list()
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MathGRPOError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    except MathGRPOError:
        raise
    except Exception as exc:  # pyarrow / csv errors have many types
        raise MathGRPOError(f"{path}: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
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
    for name in names:
        if name in row and row[name] is not None:
            return name, row[name]
    return None, None


def _normalise_row(row: dict[str, Any], max_problem_chars: int, max_answer_chars: int = 2000) -> dict[str, Any]:
    """One source row -> our columns, or raise ValueError saying what is wrong with it."""
    from rewards.extract import reduce_ground_truth

    _, problem = _pick(row, PROBLEM_COLUMNS)
    if problem is None:
        raise ValueError(f"missing problem (one of {', '.join(PROBLEM_COLUMNS)})")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("empty problem")
    if len(problem) > max_problem_chars:
        raise ValueError(f"problem longer than max_problem_chars={max_problem_chars}")
    _, answer = _pick(row, ANSWER_COLUMNS)
    _, solution = _pick(row, SOLUTION_COLUMNS)
    if answer is not None:
        ground_truth = reduce_ground_truth(answer)
    elif isinstance(solution, str) and "\\boxed" in solution:
        ground_truth = reduce_ground_truth(solution)  # MATH: the answer is the last \boxed{} of the solution
    else:
        raise ValueError(f"missing answer (one of {', '.join(ANSWER_COLUMNS)}, or a solution with \\boxed{{}})")
    if isinstance(ground_truth, list):
        ground_truth = ground_truth[0] if len(ground_truth) == 1 else json.dumps(ground_truth)
    ground_truth = str(ground_truth).strip()
    if not ground_truth:
        raise ValueError("empty answer")
    if len(ground_truth) > max_answer_chars:
        raise ValueError(f"answer longer than {max_answer_chars} characters")
    out: dict[str, Any] = {"problem": problem.strip(), "answer": ground_truth}
    if isinstance(solution, str) and solution.strip():
        # GSM8K keeps its worked solution in `answer` ("... #### 42"): use the part before the marker.
        out["solution"] = solution.strip()
    elif isinstance(answer, str) and "####" in answer:
        out["solution"] = answer.split("####")[0].strip()
    for name in EXTRA_COLUMNS:
        if name in row and row[name] is not None:
            out[name] = str(row[name])
    return out


def load_problems(
    source: str,
    split: str = "train",
    config: str | None = None,
    bad_rows: str = "skip",
    max_problem_chars: int = 20_000,
    limit: int | None = None,
    verbose: bool = True,
) -> tuple[Dataset, LoadReport]:
    """Load math problems from a hub id or a local file/folder into our columns.

    Malformed rows (missing or empty problem/answer, undecodable bytes, absurdly long text) are skipped and
    counted (`bad_rows="skip"`) or stop the load with the row number (`bad_rows="error"`).
    """
    if bad_rows not in ("skip", "error"):
        raise MathGRPOError(f"bad_rows: must be 'skip' or 'error', got {bad_rows!r}")
    if not source:
        raise MathGRPOError("dataset_name: no dataset given (a hub id, a .jsonl/.json/.parquet file or a folder)")
    if _is_local(source):
        where = _resolve_local_file(source, split)
        raw_rows = _read_local(where)
    else:
        where = source
        raw_rows = _read_hub(source, config, split)
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
    lengths = [len(ids) for ids in tokenizer(dataset["prompt"], add_special_tokens=False)["input_ids"]]
    keep = [i for i, n in enumerate(lengths) if n <= max_tokens]
    if not keep:
        raise MathGRPOError(f"max_prompt_length={max_tokens}: every prompt is longer (shortest: {min(lengths)} tokens)")
    if verbose and len(keep) < len(lengths):
        print(f"[data] dropped {len(lengths) - len(keep)} of {len(lengths)} prompts longer than "
              f"max_prompt_length={max_tokens} tokens", flush=True)
    return dataset.select(keep) if len(keep) < len(lengths) else dataset


def load_training_set(script_args: Any, with_completion: bool = False, verbose: bool = True) -> Dataset:
    """The recipes' training data: load, clean and format per the script arguments (one place for both)."""
    dataset, _ = load_problems(
        script_args.dataset_name, split=script_args.dataset_train_split, config=script_args.dataset_config,
        bad_rows=script_args.bad_rows, max_problem_chars=script_args.max_problem_chars,
        limit=script_args.max_train_samples, verbose=verbose,
    )
    return format_prompts(dataset, script_args.prompt_template, with_completion=with_completion)
