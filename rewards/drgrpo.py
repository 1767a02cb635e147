"""The reference r1_zero verdict (Dr. GRPO / CS336 grader, `fast=True`), reimplemented as pure functions.

Correct = the MATH ("mathd") normalisation gives equal strings, or the second normalisation plus a sympy
check says so. The reference's quirks are kept on purpose (unreduced fractions fail, an integer never
equals a non-integer, ...) because this mode exists to reproduce its verdicts. What is *not* kept is its
ability to hang: inputs whose sympy evaluation would explode are judged wrong up front, and everything
else runs under the worker pool's CPU-time bound.

`check(given, gt, allow_sympy=False)` returns None where only sympy can decide, so the trainer process
settles most pairs itself and ships only the rest to a worker.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction

# MathQA unit words the MATH normaliser deletes when they stand alone (order matters: applied in turn).
_UNIT_WORDS = (
    "east degree mph kmph ft|m sqaure| m east|sq m|deg mile|q .|monkey prime ratio|profit of rs|rd o gm"
    "|p . m|lb tile per dm lt gain ab way west|a .|b .|c .|d .|e .|f .|g .|h .|t a h|no change|men soldier"
    " pie bc excess st inches noon percent by gal kmh c acre rise|a . m|th|π r 2|sq mark l toy coin"
    "|sq . m|gallon|° f|profit minw yr women feet am pm hr|cu cm|square|v â € ™|are rupee rounds cubic cc"
    " mtr s ohm number kmph day hour minute min second man woman sec cube mt|sq inch|mp|∏ cm ³|hectare more"
    " sec unit|cu . m|cm 2|rs .|rs kg g month km m cm mm apple liter loss yard pure year increase decrease"
    " d less Surface litre|pi sq m|s .|metre meter inch"
)


def _fixed_units() -> list[str]:
    # Multi-word entries are kept whole, single words split; the order is the reference's.
    out: list[str] = []
    for chunk in _UNIT_WORDS.split("|"):
        multi = chunk.startswith(" ") or not all(w.isalpha() for w in chunk.split()) or chunk in (
            "m sqaure", "no change", "profit of rs", "sq inch", "sq m", "cu cm", "pi sq m")
        if multi:
            out.append(chunk)
        else:
            out.extend(chunk.split())
    return out


UNIT_TEXTS = _fixed_units()
UNIT_TEXTS = UNIT_TEXTS + [u + "s" for u in UNIT_TEXTS]
_UNIT_RES = [re.compile(r"(^|\W)" + u + r"($|\W)") for u in UNIT_TEXTS]

_TEXT_WRAP = re.compile(r"^\\text\{(?P<text>.+?)\}$")
_ARRAY_BEGIN = re.compile(r"\\begin\{array\}\{.*?\}")
_TRAILING_TEXT = re.compile(r"\\text{.*?}$")


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub[0] == "{":  # IndexError on a trailing \frac, as in the reference
            out += sub
            continue
        if len(sub) < 2:
            return s
        a, b, rest = sub[0], sub[1], sub[2:]
        out += ("{" + a + "}{" + b + "}" + rest) if b != "{" else ("{" + a + "}" + b + rest)
    return out


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return s
    if s != f"{a}/{b}":
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for sub in parts[1:]:
        out += ("\\sqrt{" + sub[0] + "}" + sub[1:]) if sub[0] != "{" else ("\\sqrt" + sub)
    return out


def _strip_string(s: str) -> str:
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = _ARRAY_BEGIN.sub(r"\\begin{pmatrix}", s)
    s = s.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "")
    t = _TRAILING_TEXT.sub("", s).strip()
    if t != "" and t != s:
        s = t
    for _ in range(2):
        for rx in _UNIT_RES:
            t = rx.sub(r"\1\2", s)
            if t != "":
                s = t
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in s:
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise ValueError("several unit texts")
        s = parts[0]
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    eq = s.split("=")
    if len(eq) == 2 and len(eq[0]) <= 2:
        s = eq[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


@functools.lru_cache(maxsize=65536)
def mathd_normalize(answer: str) -> str:
    """The MATH normalisation (Hendrycks); on an internal error the unwrapped answer comes back as is."""
    answer = answer.strip()
    m = _TEXT_WRAP.search(answer)
    if m is not None:
        answer = m.group("text").strip()
    try:
        return _strip_string(answer)
    except Exception:
        return answer


_SYMPY_UNITS = [
    re.compile(f"{u}(es)?(s)? *(\\^[0-9]+)?")
    for u in ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week",
              "month", "year", "foot", "feet", "inch", "yard")
]
_CIRC = re.compile(r"\^ *\\circ")
_COMMA_BANG = re.compile(r",\\! *")
_MINUS = re.compile(r"- *")
_MIXED = re.compile(r"([0-9]) +([0-9])")
_GOOD_COMMAS = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
_FRAC = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_LATEX2TEXT = None


def _latex_to_text(expr: str) -> str:
    global _LATEX2TEXT
    if _LATEX2TEXT is None:
        from pylatexenc.latex2text import LatexNodes2Text

        _LATEX2TEXT = LatexNodes2Text()
    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    expr = _LATEX2TEXT.latex_to_text(expr)
    for a, b in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        expr = expr.replace(a, b)
    return expr.strip()


def _float_or_none(s: str) -> float | None:
    try:
        return float(s)
    except (ValueError, OverflowError):
        return None


def _is_int_float(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (ValueError, OverflowError):
        return False


def strip_good_commas(expr: str) -> str:
    """`1,234,567` -> `1234567` without touching tuple commas."""
    while True:
        nxt = _GOOD_COMMAS.sub(r"\1\3\4", expr)
        if nxt == expr:
            return nxt
        expr = nxt


def _str_is_int(x: str) -> bool:
    f = _float_or_none(strip_good_commas(x))
    return f is not None and _is_int_float(f)


@functools.lru_cache(maxsize=65536)
def sympy_normalize(expr: str) -> str:
    """The second normalisation of the reference, before its tuple split and sympy check."""
    m = _TEXT_WRAP.search(expr)
    if m is not None:
        expr = m.group("text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for rx in _SYMPY_UNITS:
        expr = rx.sub("", expr)
    expr = _CIRC.sub("", expr)
    if len(expr) > 0 and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = _COMMA_BANG.sub("", expr)
    f = _float_or_none(expr)
    if f is not None and _is_int_float(f):
        expr = str(int(round(f)))
    if "\\" in expr:
        try:
            expr = _latex_to_text(expr)
        except Exception:
            pass
    expr = _MINUS.sub("-", expr)
    expr = _MIXED.sub(r"\1+\2", expr)
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _str_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


def split_tuple(expr: str) -> list[str]:
    expr = strip_good_commas(expr)
    if not expr:
        return []
    if len(expr) > 2 and expr[0] in "()[]" and expr[-1] in "()[]" and not any(c in expr[1:-1] for c in "()[]"):
        return [e.strip() for e in expr[1:-1].split(",")]
    return [expr]


_BAD_RES = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
# Inputs the reference would evaluate for minutes or forever (it has no bound on this path).
_EXPLOSIVE = (
    re.compile(r"\*\*[^*]*\*\*"),  # chained powers: 9**9**9
    re.compile(r"\*\*\s*\(?\s*\d{4,}"),  # huge exponents
    re.compile(r"!\s*\)?\s*!|\)\s*!"),  # factorial of a factorial or of a group
    re.compile(r"\d{4,}\s*!"),  # factorial of a large number
    re.compile(r"\d{400,}"),  # very long numbers
)


def should_allow_eval(expr: str) -> bool:
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > 2 or "^{" in expr or "^(" in expr:
        return False
    return not any(rx.search(expr) for rx in _BAD_RES)


def is_explosive(expr: str) -> bool:
    return len(expr) > 2000 or any(rx.search(expr) for rx in _EXPLOSIVE)


_PLAIN_NUM = re.compile(r"^-?\d+(\.\d+)?$")


def _sympy_equal(gt: str, given: str) -> bool:
    from sympy import simplify
    from sympy.parsing import sympy_parser

    expr = f"({gt})-({given})"
    try:
        if not should_allow_eval(expr) or is_explosive(expr):
            return False
        parsed = sympy_parser.parse_expr(
            expr.replace("^", "**"),
            transformations=sympy_parser.standard_transformations + (sympy_parser.implicit_multiplication_application,),
        )
        if parsed == 0:
            return True
        if not parsed.free_symbols:
            # a number that evaluates clearly away from zero cannot simplify to zero
            val = parsed.evalf(30)
            if val.is_number and abs(complex(val)) > 1e-12:
                return False
        return bool(simplify(parsed) == 0)
    except Exception:
        return False


def _elem_equal(gt: str, given: str, allow_sympy: bool) -> bool | None:
    if _FRAC.search(gt) and _FRAC.search(given):
        return gt == given  # unreduced fractions are wrong in the reference
    if _str_is_int(gt) != _str_is_int(given):
        return False
    if _PLAIN_NUM.match(gt) and _PLAIN_NUM.match(given) and len(gt) < 300 and len(given) < 300:
        return Fraction(gt) == Fraction(given)
    expr = f"({gt})-({given})"
    if not should_allow_eval(expr) or is_explosive(expr):
        return False
    if not allow_sympy:
        return None
    return _sympy_equal(gt, given)


def sympy_check(given: str, gt: str, allow_sympy: bool = True) -> bool | None:
    gt_n = sympy_normalize(gt)
    given_n = sympy_normalize(given)
    if gt_n == given_n:
        return True
    if not given_n:
        return False
    gt_elems, given_elems = split_tuple(gt_n), split_tuple(given_n)
    if len(gt_elems) > 1 and (gt_n[0] != given_n[0] or gt_n[-1] != given_n[-1]):
        return False
    if len(gt_elems) != len(given_elems):
        return False
    pending = False
    for a, b in zip(gt_elems, given_elems):
        res = _elem_equal(a, b, allow_sympy)
        if res is False:
            return False
        if res is None:
            pending = True
    return None if pending else True


def too_long(given: str, gt: str) -> bool:
    """An answer far longer than the ground truth cannot normalise to it; skip the (slow) normalisers."""
    return len(given) > 4 * len(gt) + 2000


def reduce_gt(gt: str) -> str | None:
    """The reference reduces a boxed or `####` ground truth before grading."""
    if "\\boxed" in gt or "####" in gt:
        from rewards.extract import extract_reference_answer

        return extract_reference_answer(gt)
    return gt


def check(given: str, gt: str, allow_sympy: bool = True) -> bool | None:
    """The reference verdict for one (answer, ground truth) pair; None = needs sympy (allow_sympy=False)."""
    gt_r = reduce_gt(gt)
    if gt_r is None or too_long(given, gt_r):
        return False
    if mathd_normalize(given) == mathd_normalize(gt_r):
        return True
    return sympy_check(given, gt_r, allow_sympy)
