"""Regrade saved completions: `python -m rewards.grade --mode {drgrpo,accurate} FILE.jsonl`.

Each input line is a JSON object with `response` and `ground_truth`; each output line (same order) is
`{"format_reward", "answer_reward", "reward", "timed_out"}`. A bad line is reported on stderr with its
line number and printed as `{"line": N, "error": ...}` so the output stays aligned with the input.
"""

from __future__ import annotations

import argparse
import json
import sys

from rewards.grader import MODES, grade_batch

CHUNK = 2000


def _parse(line: str, lineno: int) -> tuple[str, object]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"line {lineno}: expected a JSON object, got {type(row).__name__}")
    for key in ("response", "ground_truth"):
        if key not in row:
            raise ValueError(f"line {lineno}: missing field '{key}'")
    if not isinstance(row["response"], str):
        raise ValueError(f"line {lineno}: field 'response' must be a string")
    return row["response"], row["ground_truth"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rewards.grade", description=__doc__.splitlines()[0])
    ap.add_argument("file", help="JSONL with 'response' and 'ground_truth' per line ('-' for stdin)")
    ap.add_argument("--mode", choices=MODES, default="accurate")
    ap.add_argument("--question-only", action="store_true", help="grade the last \\boxed{} (question-only prompt)")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per answer check")
    args = ap.parse_args(argv)
    try:
        fh = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # decoded per line below
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    bad = 0
    with fh:
        pending: list[tuple[int, str, object]] = []
        out: dict[int, dict] = {}
        lineno = 0

        def flush() -> None:
            if pending:
                res = grade_batch([p[1] for p in pending], [p[2] for p in pending], mode=args.mode,
                                  question_only=args.question_only, timeout=args.timeout)
                for (n, _, _), r in zip(pending, res):
                    d = r.to_dict()
                    d.pop("error", None)
                    out[n] = d
                pending.clear()
            for n in sorted(out):
                print(json.dumps(out[n]))
            out.clear()

        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"line {lineno}: not UTF-8 text (byte {exc.start})") from None
                resp, gt = _parse(line, lineno)
            except ValueError as exc:
                bad += 1
                print(f"error: {args.file}: {exc}", file=sys.stderr)
                out[lineno] = {"line": lineno, "error": str(exc)}
                continue
            pending.append((lineno, resp, gt))
            if len(pending) >= CHUNK:
                flush()
        flush()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
