"""`accurate`: the careful-human grader, sound first and complete second.

In RL a false accept is a reward hack the policy will find, so every rule here is written to reject
when in doubt. The answer is read as a structure (option letter, matrix, list, equation, interval, set,
tuple) whose parts are compared recursively; a single value is compared by, in order:
- exact rules of our own, where they were measured better than math-verify (docs/rewards.md): numbers
  of any size as exact rationals (integers, decimals, `1.2e-8`, `1.2\\times10^{-8}`, fractions, mixed
  numbers, repeating decimals, thousands separators, leading zeros), percent, units, base subscripts,
  option letters, words;
- math-verify (rewards/symbolic.py) for everything symbolic, with its float rounding guarded.
`check(given, gt, heavy=False)` returns None where only the symbolic half can decide, so the trainer
process settles the cheap pairs itself and ships only the rest to a grading worker.
"""

from __future__ import annotations

import re
from fractions import Fraction

from rewards import forms, symbolic
from rewards.extract import all_boxed

MAX_LEN = symbolic.MAX_LEN
REL_TOL = Fraction(1, 10**9)  # where a side is written as a decimal
UNDEFINED = "undefined"  # a number with a zero denominator: never equal to anything but its own text

_TEXT_CMDS = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname|textnormal|mathit|boldsymbol)\s*\{([^{}]*)\}")
_SPACES = re.compile(r"(?<!\\)\\[,;:! ]|~|\\quad|\\qquad|\\displaystyle|\\limits")
_CURRENCY = re.compile(r"\\\$|(?<![\\])\$(?=\s*\d)|£|€|¥|\bUSD\b|\bRs\.?")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_PERCENT = re.compile(r"\\%|%|\s*\bper\s?cent(?:age)?\b|\s*\bpct\b")
# `{,}`, `,\!` and `\,` are always thousands separators; a bare comma only when the whole answer is one
# number (`1,000`), since `(12,102)` is a pair and `2,345` inside a list is two answers.
_THOUSANDS_TEX = re.compile(r"(?<![\d.,])\d{1,3}(?:(?:,\\!\s*|\{,\}|\\,)\d{3})+(?![\d])")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_LEAD_IN = re.compile(
    r"^(?:(?:so|thus|therefore|hence)\s*,?\s*)?(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:|=)\s*", re.I)
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


def _unwrap_text(s: str) -> str:
    for _ in range(3):
        t = _TEXT_CMDS.sub(r"\1", s)
        if t == s:
            break
        s = t
    return s


def normalize(s: str) -> str:
    """A tidy, comparable form of an answer: no markup, spacing, currency, degree signs or outer `$`."""
    s = s.strip().replace("−", "-").replace("–", "-").replace("\n", " ")
    s = forms.math_spans(s) if "$" in s.replace("\\$", "") or "\\(" in s or "\\[" in s else s
    for a, b in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"), ("\\left", ""),
                 ("\\right", ""), ("\\bigl", ""), ("\\bigr", ""), ("bmatrix", "pmatrix"), ("\\leq", "\\le"),
                 ("\\geq", "\\ge"), ("\\leqslant", "\\le"), ("\\geqslant", "\\ge"), ("≤", "\\le "), ("≥", "\\ge "),
                 ("\\lt", "<"), ("\\gt", ">"), ("<=", "\\le "), (">=", "\\ge "), ("\\dots", "\\ldots"),
                 ("\\neq", "\\ne"), ("!=", "\\ne "), ("\\approx", "="), ("\\textnormal", "\\text")):
        s = s.replace(a, b)
    s = _THOUSANDS_TEX.sub(lambda m: re.sub(r",\\!\s*|\{,\}|\\,", "", m.group(0)), s)
    s = forms.matrices(s)
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)
    s = _SPACES.sub(" ", s)
    s = _unwrap_text(s)
    s = _CURRENCY.sub("", s)
    s = _DEGREE.sub("", s)
    s = s.replace("\\infty", "\\infty ").replace("\\inf ", "\\infty ")
    s = re.sub(r"(?<![\\a-zA-Z])(?:inf|infinity|oo)(?![a-zA-Z])", r"\\infty ", s)
    s = s.strip().strip("$").strip()
    s = re.sub(r"\s*\.$", "", s)  # a final full stop
    s = re.sub(r"^[a-zA-Z]\s*\\in\s*", "", s)  # x \in [1, 2]
    s = _LEAD_IN.sub("", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = forms.strip_prose(s)  # `The total is 3,450` -> `3,450`
    s = re.sub(r"(?<=[\w}])\s*:\s*(?=[\w\\])", ":", s)  # ratios: `11 : 21` -> `11:21`
    if _THOUSANDS.fullmatch(s) and not s.lstrip("+-").startswith("0,"):  # `0,111` is no thousands
        s = s.replace(",", "")
    s = forms.thousands_with_words(s)  # `1,200 dollars` -> `1200 dollars`
    s = forms.outer_group(s)  # `{1,3}` is TeX grouping (it prints `1,3`); `\{1,3\}` is the set
    return _NUMBER_WORDS.get(s.lower(), s)


# ---------------------------------------------------------------- exact numbers

_PLAIN = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d{1,3})?")
_TIMES_TEN = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))(?:\\times|\\cdot|\*|×)10\^\{?([-+]?\d{1,3})\}?")
_POWER = re.compile(r"(-?\d{1,6})\^\{?(\d{1,3})\}?")
_FRAC = re.compile(r"(-?)\\frac\{([-+]?\d+(?:\.\d+)?)\}\{([-+]?\d+(?:\.\d+)?)\}")
_SLASH = re.compile(r"(-?)\(?([-+]?\d+(?:\.\d+)?)\)?/\(?([-+]?\d+(?:\.\d+)?)\)?")
_MIXED = re.compile(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")
_REPEAT = re.compile(r"(-?)(\d*)\.(\d*)\\(?:overline|bar)\{(\d+)\}")


def number(s: str) -> Fraction | str | None:
    """The exact value of a plain number, or UNDEFINED (zero denominator), or None (not a plain number)."""
    s = s.replace(" ", "").lstrip("+")
    if len(s) > 400:
        return None
    if _PLAIN.fullmatch(s):
        return Fraction(s)
    if m := _TIMES_TEN.fullmatch(s):
        return Fraction(m.group(1)) * Fraction(10) ** int(m.group(2))
    if m := re.fullmatch(r"10\^\{?([-+]?\d{1,3})\}?", s):
        return Fraction(10) ** int(m.group(1))
    if m := _POWER.fullmatch(s):
        return Fraction(int(m.group(1)) ** int(m.group(2)))
    if m := _MIXED.fullmatch(s):  # 2\frac{1}{2} is two and a half, only with a proper fraction
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        if den == 0:
            return UNDEFINED
        if num >= den:
            return None
        val = whole + Fraction(num, den)
        return -val if m.group(1) else val
    if m := _FRAC.fullmatch(s) or _SLASH.fullmatch(s):
        num, den = Fraction(m.group(2)), Fraction(m.group(3))
        if den == 0:
            return UNDEFINED
        return -(num / den) if m.group(1) else num / den
    if m := _REPEAT.fullmatch(s):
        whole, fix, rep = m.group(2) or "0", m.group(3), m.group(4)
        val = Fraction(int(whole)) + Fraction(int(fix or "0"), 10 ** len(fix)) + Fraction(
            int(rep), (10 ** len(rep) - 1) * 10 ** len(fix))
        return -val if m.group(1) else val
    return None


# ---------------------------------------------------------------- single values

_SCI = r"(?:\s*\\times\s*10\^\{?[-+]?\d{1,3}\}?)?"  # 4.2 \times 10^{3} J
_NUM_UNIT = re.compile(r"(?P<val>[-+]?(?:[\d.]+(?:\\frac\{\d+\}\{\d+\})?" + _SCI + r"|\\frac\{\d+\}\{\d+\}))\s+(?P<unit>[a-zA-Z]{2,}(?:\s*[\-/]\s*[a-zA-Z]+|\s+[a-zA-Z]+)*)"
                       r"\s*(?:\^\s*\{?\d\}?)?\.?")
_NUM_SI = re.compile(r"(?P<val>[-+]?[\d.]+" + _SCI + r")\s+(?P<unit>[mgshlLKJNWV](?:\s*/\s*[a-zA-Z]+)?)\s*(?:\^\s*\{?\d\}?)?")  # 10 m^2
_BASE = re.compile(r"(?P<digits>[0-9A-Fa-f]+)_\{?(?P<base>\d+)\}?")
_WORD = re.compile(r"[A-Za-z][A-Za-z\- ']*")
_CONSTANTS = re.compile(r"\\[a-zA-Z]+|\b(?:pi|sqrt|e|i|log|ln|sin|cos|tan|exp)\b")
_HEDGE_WORDS = {"if", "or", "and", "not", "is", "are", "when", "unless", "approx", "approximately", "about", "around",
                "roughly", "nearly", "almost", "plus", "minus", "maybe", "possibly", "probably", "than", "less", "more",
                "least", "most", "otherwise", "else", "but", "except", "only", "either", "neither", "nor", "up", "to",
                "over", "under", "above", "below", "between", "with", "without", "times", "each"}
_NOT_UNITS = {"pi", "and", "or", "mod", "pmod", "sqrt", "log", "ln", "sin", "cos", "tan", "exp", "times", "cdot"}


def _unit_split(s: str) -> tuple[str, str | None]:
    """`72 clips` -> (`72`, `clip`); (s, None) when s is not a number followed by a word."""
    m = _NUM_UNIT.fullmatch(s) or _NUM_SI.fullmatch(s)
    if not m or m.group("unit").split()[0].lower() in _NOT_UNITS:
        return s, None
    if _HEDGE_WORDS & set(re.split(r"[\s\-/]+", m.group("unit").lower())):
        return s, None  # `3 if n is even`, `3450 plus tax`, `3 approx`: words that change the number
    unit = m.group("unit").lower().replace(" ", "").replace("-", "")
    return m.group("val"), unit[:-1] if unit.endswith("s") and len(unit) > 3 else unit


_CALCULUS = re.compile(r"\\(?:int|sum|prod|lim|sin|cos|tan|cot|sec|csc|log|ln|exp|binom|det)(?![a-zA-Z])")


def _has_variable(s: str) -> bool:
    """A letter left after removing commands and constants (integrals, sums and functions may still be numbers)."""
    return not _CALCULUS.search(s) and bool(re.search(r"[a-zA-Z]", _CONSTANTS.sub(" ", s)))


def _value_equal(given: str, gt: str, heavy: bool) -> bool | None:
    if given == gt:
        return True
    if not given or not gt:
        return False
    g, gu = _unit_split(given)
    t, tu = _unit_split(gt)
    if gu and tu and gu != tu:
        return False  # 5 cm vs 5 m
    gp, tp = bool(_PERCENT.search(g)), bool(_PERCENT.search(t))
    g, t = _PERCENT.sub("", g).strip(), _PERCENT.sub("", t).strip()
    if g == t:
        return True
    mg, mt = _BASE.fullmatch(g.replace(" ", "")), _BASE.fullmatch(t.replace(" ", ""))
    if mg or mt:  # 1011_2 vs 1011 or 1011_{2}
        if mg and mt and int(mg.group("base")) != int(mt.group("base")):
            return False
        return (mg.group("digits") if mg else g).lower() == (mt.group("digits") if mt else t).lower()
    fg, ft = number(g), number(t)
    if fg == UNDEFINED or ft == UNDEFINED:
        return False
    if fg is not None and ft is not None:
        cands = [ft] if gp == tp else [ft * 100 if gp else ft / 100] + ([ft] if not tp else [])  # 50% vs 0.5, 50
        if "." in g + t:  # a decimal approximates: relative tolerance, never an absolute one ...
            return any(fg == c if fg.denominator == c.denominator == 1  # ... but integers compare exactly
                       else abs(fg - c) <= REL_TOL * max(abs(fg), abs(c)) for c in cands)
        return fg in cands
    if _WORD.fullmatch(g) and _WORD.fullmatch(t) and re.search(r"[A-Za-z]{3}", g + " " + t):
        return g.lower().replace(" ", "") == t.lower().replace(" ", "")  # words
    if (fg is not None and _has_variable(t)) or (ft is not None and _has_variable(g)):
        return False  # a number never equals an expression in a free variable
    if re.fullmatch(r"\d{1,2}:\d{2}", g) or re.fullmatch(r"\d{1,2}:\d{2}", t):
        return False  # times of day and ratios: only their exact text
    if gp != tp or symbolic.is_risky(g) or symbolic.is_risky(t):
        return False  # decided here, before any worker: inputs whose evaluation may not finish
    if not heavy:
        return None
    if (fg is None) != (ft is None) and "." in (g if fg is not None else t):
        other = symbolic.exact_value(t if fg is not None else g)  # `1.0\times10^{30}` vs `10^{30}+1`
        if other is not None:
            num = fg if fg is not None else ft
            return num == other if num.denominator == other.denominator == 1 else (  # type: ignore[union-attr]
                abs(num - other) <= REL_TOL * max(abs(num), abs(other)))  # type: ignore[operator, arg-type]
    return symbolic.equal(g, t)


# ---------------------------------------------------------------- structure


_split_top = forms.split_top

_LIST_WORDS = re.compile(r"\s*(?:\band\b|\bor\b|;)\s*")
_MC_ONLY = re.compile(r"\(?([A-J])\)?")
_MC_TEXT = re.compile(r"(?:\(([A-J])\)|([A-J])[.):])\s*(.+)")
_SIMPLE_LHS = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?(?:\([^()=]*\))?|\\[a-zA-Z]+(?:_\{?\w+\}?)?|\([A-Za-z](?:\s*,\s*[A-Za-z])+\)")


def _mc(s: str) -> tuple[str, str] | None:
    if m := _MC_ONLY.fullmatch(s):
        return m.group(1), ""
    if m := _MC_TEXT.fullmatch(s):
        return m.group(1) or m.group(2), m.group(3).strip()
    return None


def _equation(s: str) -> tuple[str, str] | None:
    """(lhs, rhs) of `lhs = ... = rhs` split at top-level `=` signs only (not `\\sum_{k=0}`), else None."""
    parts = _split_top(s, "=")
    if len(parts) < 2 or not all(parts) or re.search(r"\\(?:le|ge|ne|neq)\b|[<>]", s):
        return None
    return parts[0], parts[-1]


def _matrix(s: str) -> list[list[str]] | None:
    m = re.fullmatch(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", s.strip(), flags=re.S)
    if not m or "\\begin" in m.group(1) or "\\end" in m.group(1):
        return None  # not one matrix (`A + B`, nested)
    rows = [r for r in re.split(r"\\\\", m.group(1)) if r.strip()]
    return [[c.strip() for c in r.split("&")] for r in rows]


def _bracketed(s: str) -> tuple[str, list[str], str] | None:
    """(open, elements, close) for tuples, intervals and sets written with brackets."""
    s = s.replace("\\{", "{").replace("\\}", "}").replace("\\langle", "(").replace("\\rangle", ")")
    if len(s) >= 2 and s[0] in "([{" and s[-1] in ")]}":
        depth = 0
        for ch in s[1:-1]:  # the outer pair must enclose everything
            depth += ch in "([{"
            depth -= ch in ")]}"
            if depth < 0:
                return None
        parts = _split_top(s[1:-1])
        if len(parts) >= 2:
            return s[0], parts, s[-1]
    return None


def _lists_equal(g: list[str], t: list[str], ordered: bool, heavy: bool) -> bool | None:
    if len(g) != len(t):
        return False
    if ordered:
        verdicts = [_compare(a, b, heavy) for a, b in zip(g, t)]
        return False if False in verdicts else (None if None in verdicts else True)
    remaining, pending = list(t), False
    for a in g:
        for j, b in enumerate(remaining):
            r = _compare(a, b, heavy)
            if r:
                remaining.pop(j)
                break
            pending |= r is None
        else:
            return None if pending else False
    return True


def _compare(given: str, gt: str, heavy: bool) -> bool | None:
    given, gt = normalize(given), normalize(gt)
    if given == gt:
        return True
    if not given or not gt:
        return False
    if ("\\pm" in given) != ("\\pm" in gt):
        given, gt = forms.expand_pm(given), forms.expand_pm(gt)
    given, gt = forms.decimal_comma(given, gt), forms.decimal_comma(gt, given)
    # option letters: `B` is an option, `B = 3` is not
    mt, mg = _mc(gt), _mc(given)
    if mt is None and mg is not None and given.startswith("(") and re.fullmatch(r"[a-j]", gt):
        mt = (gt.upper(), "")  # `(A)` for the option written `a`
    if mt is not None:
        if mg is not None:
            return mg[0] == mt[0]
        return _compare(given, mt[1], heavy) if mt[1] else False
    if mg is not None and mg[1] and _compare(mg[1], gt, heavy):
        return True
    # matrices
    mgm, mtm = _matrix(given), _matrix(gt)
    if mgm is not None or mtm is not None:
        if (mgm is None or mtm is None) and "pmatrix" in (given if mgm is None else gt) and not heavy:
            return None  # `A + B` against a matrix: sympy evaluates it (symbolic.equal)
        if mgm is None or mtm is None:
            return symbolic.equal(given, gt) if "pmatrix" in (given if mgm is None else gt) else False
        if [len(r) for r in mgm] != [len(r) for r in mtm]:
            return False
        return _lists_equal([c for r in mgm for c in r], [c for r in mtm for c in r], True, heavy)
    # inequalities as intervals, so `x > 3` meets `(3, \infty)`, `x < 1 or x > 3` a union
    if "\\cup" in gt and "\\cup" not in given:
        given = forms.or_union(given) or given
    elif "\\cup" in given and "\\cup" not in gt:
        gt = forms.or_union(gt) or gt
    ig, it = forms.interval(given), forms.interval(gt)
    if (ig or _bracketed(given) or "\\cup" in given) and (it or _bracketed(gt) or "\\cup" in gt):
        given, gt = ig or given, it or gt
    named = _named_parts(given, gt, heavy)
    if named is not None:
        return named
    # unbracketed lists: order does not matter ("x=2 or x=3" vs "2, 3"); a hedge against one answer fails
    if _bracketed(given) is None and _bracketed(gt) is None and "\\cup" not in given + gt:
        sep_g, sep_t = _split_top(_LIST_WORDS.sub(",", given)), _split_top(_LIST_WORDS.sub(",", gt))
        if len(sep_t) > 1 or len(sep_g) > 1:
            return _lists_equal(sep_g, sep_t, False, heavy)
    # equations
    eg, et = _equation(given), _equation(gt)
    if eg or et:
        return _equations_equal(given, gt, eg, et, heavy)
    # unions of intervals
    if "\\cup" in gt or "\\cup" in given:
        gu, tu = [p.strip() for p in given.split("\\cup")], [p.strip() for p in gt.split("\\cup")]
        return _lists_equal(gu, tu, False, heavy)  # a union in another order is the same set
    bg, bt = _bracketed(given), _bracketed(gt)
    if bt is not None:
        if bg is None:  # "1, 2" for "{1, 2}" or "(1, 2)"; never for an interval
            parts = _split_top(given)
            if len(parts) > 1 and (bt[0] == "{" or (bt[0], bt[2]) == ("(", ")")):
                return _lists_equal(parts, bt[1], bt[0] != "{", heavy)
            return False
        if (bg[0], bg[2]) != (bt[0], bt[2]):
            return False
        return _lists_equal(bg[1], bt[1], bt[0] != "{", heavy)
    if bg is not None:
        parts = _split_top(gt)
        if (bg[0], bg[2]) not in (("(", ")"), ("{", "}")) or len(parts) < 2:
            return False
        return _lists_equal(bg[1], parts, bg[0] != "{", heavy)
    return _value_equal(given, gt, heavy)


def _named_parts(given: str, gt: str, heavy: bool) -> bool | None:
    """Named parts against bare values (`x = 1, y = -2` vs `(1, -2)` or `(x, y) = (1, -2)`, `AB=4, CD=5` vs
    `4, 5`, `p=5,q=2;p=7,q=2` vs `(p, q) = (5,2),(7,2)`): None when the rule does not apply (rewards/forms.py)."""
    groups = [forms.named_groups(s, _split_top) for s in (given, gt)]
    if groups[0] and groups[1]:
        return groups[0][0] == groups[1][0] and _compare(groups[0][1], groups[1][1], heavy)
    if groups[0] or groups[1]:
        (names, tuples), other = (groups[0], gt) if groups[0] else (groups[1], given)  # type: ignore[misc]
        eq = forms.tuple_equation(other)
        if eq is not None:
            if eq[0] != names:
                return False  # `(a, b) = ...` for `p=..., q=...`
            other = eq[1]
        elif _equation(other):
            return False  # one solution, or names in another order, for several
        return _compare(tuples, other, heavy) if groups[0] else _compare(other, tuples, heavy)
    vg, vt = (forms.named_values(_split_top(_LIST_WORDS.sub(",", s))) for s in (given, gt))
    if (vg is None) == (vt is None):
        return None
    (names, values, alphabetical), other = (vg, gt) if vg is not None else (vt, given)  # type: ignore[misc]
    eq = forms.tuple_equation(other)
    if eq is not None:
        if eq[0] != names:
            return False
        other, alphabetical = eq[1], True  # the tuple names its order
    bracket = _bracketed(other)
    if bracket is not None and ((bracket[0], bracket[2]) != ("(", ")") or not alphabetical):
        return False  # named values are no interval or set; `y=-2, x=1` against `(1, -2)` is a guess
    parts = bracket[1] if bracket is not None else _split_top(_LIST_WORDS.sub(",", other))
    if any(forms.named(p) for p in parts):
        return None  # names on both sides: matched by name below
    if len(parts) != len(values):
        return False
    return _lists_equal(values, parts, True, heavy) if vg is not None else _lists_equal(parts, values, True, heavy)


def _equations_equal(given: str, gt: str, eg, et, heavy: bool) -> bool | None:
    simple = [e is not None and bool(_SIMPLE_LHS.fullmatch(e[0].replace(" ", "")) or forms.name_key(e[0]))
              for e in (eg, et)]
    if eg and et:
        if simple[0] and simple[1]:  # x = 3 vs x = 4, A = 2 vs B = 2: same left side, then the right sides
            if (forms.name_key(eg[0]) or eg[0].replace(" ", "")) != (forms.name_key(et[0]) or et[0].replace(" ", "")):
                return False
            return _compare(eg[1], et[1], heavy)
        if not heavy:
            return None
        return symbolic.relation_equal(eg[0], eg[1], et[0], et[1])
    eq, simple_lhs, other = (eg, simple[0], gt) if eg else (et, simple[1], given)
    if not simple_lhs:
        return False  # 0 vs x + y = 0: a number is not an equation
    return _compare(eq[1], other, heavy) if eg else _compare(other, eq[1], heavy)


def _reduce_gt(gt: str) -> str | None:
    """A boxed ground truth -> its box; several boxes -> the list of them (`\\boxed{1}, \\boxed{2}`)."""
    if "\\boxed" in gt:
        boxes = all_boxed(gt)
        return ", ".join(dict.fromkeys(boxes)) if boxes else None
    if "####" in gt:
        return gt.split("####")[-1].strip()
    return gt


def check(given: str, gt: str, heavy: bool = True) -> bool | None:
    """The careful-human verdict for one answer; None = only the symbolic half can decide (heavy=False)."""
    if not isinstance(given, str) or not isinstance(gt, str):
        given, gt = str(given), str(gt)
    gt_r = _reduce_gt(gt)
    if not gt_r or not gt_r.strip():
        return False
    if "\\boxed" in given:  # an answer span that still holds its boxes: they are the answer
        given = _reduce_gt(given) or ""
    if len(given) > MAX_LEN or len(gt_r) > MAX_LEN or len(given) > 4 * len(gt_r) + 200:
        return given.strip() == gt_r.strip()
    try:
        res = _compare(given, gt_r, heavy)
    except (RecursionError, ValueError, ZeroDivisionError, OverflowError):
        return False
    if res is None:
        return None if not heavy else False
    return res
