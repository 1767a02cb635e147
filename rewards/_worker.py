"""What a grading worker runs. Imported by the forkserver up front so workers start with sympy loaded."""

from __future__ import annotations

import logging

import sympy  # noqa: F401  (preloaded on purpose)
from sympy.parsing import sympy_parser  # noqa: F401

from rewards import accurate, drgrpo


def _preload() -> None:
    # math-verify warns on every call that we bound time ourselves; we do, in the pool.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        import latex2sympy2_extended  # noqa: F401
        import math_verify  # noqa: F401
        from pylatexenc.latex2text import LatexNodes2Text  # noqa: F401
    except Exception:
        pass


_preload()


def _warm_up() -> None:
    """Run each checker once so lazy imports and caches are filled before the forkserver forks."""
    for mode in ("drgrpo", "accurate"):
        try:
            run_task(mode, "\\frac{\\sqrt{2}}{2}+x", ["\\frac{1}{\\sqrt{2}} + x"])
            run_task(mode, "(x+1)^2", ["x^2+2x+1"])
            run_task(mode, "\\sqrt{2}", ["1.5"])
        except Exception:
            pass


def run_task(mode: str, given: str, ground_truths: list[str]) -> bool:
    """Answer correctness of `given` against any of `ground_truths` with the full (sympy) checks."""
    checker = drgrpo.check if mode == "drgrpo" else accurate.check
    return any(bool(checker(given, gt)) for gt in ground_truths)


_warm_up()
