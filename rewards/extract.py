"""The r1_zero format rule, answer extraction and ground-truth reduction.

These are pure string functions, cheap enough to run in the trainer process before any worker is involved.
"""

from __future__ import annotations

import re
from typing import Any

FORMAT_OPEN = "</think> <answer>"
FORMAT_CLOSE = "</answer>"


def last_boxed(text: str) -> str | None:
    """The last `\\boxed{...}` (or `\\fbox{...}`) group including the command, or None when unbalanced.

    Brace counting starts at the command itself, as in the MATH reference, so `\\boxed 5` yields None.
    """
    idx = text.rfind("\\boxed")
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[idx : i + 1]
    return None


def all_boxed(text: str) -> list[str]:
    """The contents of every balanced `\\boxed{...}` in order (an unbalanced one ends the scan)."""
    out, start = [], 0
    while (idx := text.find("\\boxed{", start)) >= 0:
        depth = 0
        for i in range(idx + len("\\boxed"), len(text)):
            depth += text[i] == "{"
            depth -= text[i] == "}"
            if depth == 0:
                out.append(text[idx + len("\\boxed{") : i].strip())
                start = i + 1
                break
        else:
            break
    return out


def boxed_content(text: str) -> str | None:
    """Content of the last balanced `\\boxed{...}`; None if missing, unbalanced or an `\\fbox`."""
    group = last_boxed(text)
    if group is None or not group.startswith("\\boxed{") or not group.endswith("}"):
        return None
    return group[len("\\boxed{") : -1]


def extract_reference_answer(passage: str) -> str | None:
    """A boxed answer, else the text after the last `####`, else None (the reference's `extract_answer`)."""
    if "\\boxed" in passage:
        return boxed_content(passage)
    if "####" in passage:
        return passage.split("####")[-1].strip()
    return None


def is_formatted(response: str) -> bool:
    """The r1_zero rule: the exact text `</think> <answer>` (one space) and a closing `</answer>`."""
    return FORMAT_OPEN in response and FORMAT_CLOSE in response


def extract_answer(response: str, question_only: bool = False, all_boxes: bool = False) -> tuple[bool, str | None]:
    """(formatted, answer). answer is None when formatted but the last box is unbalanced.

    r1_zero: the text after the last `<answer>` with every `</answer>` removed; a `\\boxed` inside it wins.
    question_only: the last boxed answer of the whole response (format = a box was found).
    all_boxes: several different boxes are one list answer (`\\boxed{1}, \\boxed{2}` -> `1, 2`), so a
    hedge of many boxes meets a single ground truth as a list, not as its last box (the `accurate` mode).
    """
    if question_only:
        ans = extract_reference_answer(response)
        if all_boxes and ans is not None:
            ans = _joined_boxes(response) or ans
        return (ans is not None), ans
    if not is_formatted(response):
        return False, None
    ans = response.split("<answer>")[-1].replace(FORMAT_CLOSE, "")
    if "\\boxed" in ans:
        last = extract_reference_answer(ans)
        return True, (_joined_boxes(ans) or last) if all_boxes and last is not None else last
    return True, ans


def _joined_boxes(text: str) -> str | None:
    boxes = list(dict.fromkeys(all_boxed(text)))
    return ", ".join(boxes) if len(boxes) > 1 else None


_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")


def reduce_ground_truth(answer: Any) -> str | list[str]:
    """GSM8K `... #### 1,200` -> `1200`, a MATH solution -> its last boxed answer, a number -> its string.

    A list or tuple (OlympiadBench's `final_answer: ["2"]`) means "any of these": each element is reduced and
    a list comes back, which the graders read as any-element-matches (`ground_truth_list`). Other values are
    turned into strings; the graders accept the reduced form and the original.
    """
    if isinstance(answer, (list, tuple)):
        out: list[str] = []
        for item in answer:
            reduced = reduce_ground_truth(item)
            out.extend(reduced if isinstance(reduced, list) else [reduced])
        return out
    if isinstance(answer, bool):
        return str(answer)
    if isinstance(answer, int):
        return str(answer)
    if isinstance(answer, float):
        return str(int(answer)) if answer.is_integer() else repr(answer)
    text = str(answer).strip()
    if "\\boxed" in text:
        boxed = boxed_content(text)
        if boxed is not None:
            return boxed.strip()
    if "####" in text:
        text = text.split("####")[-1].strip()
        if _THOUSANDS.match(text):
            text = text.replace(",", "")
    return text


def ground_truth_list(ground_truth: Any) -> list[str]:
    """Ground truth as the reference sees it: numbers become strings, a list means 'any of these'."""
    if isinstance(ground_truth, (list, tuple)):
        return [g if isinstance(g, str) else str(g) for g in ground_truth]
    if isinstance(ground_truth, str):
        return [ground_truth]
    return [str(ground_truth)]
