"""The heavy half of `accurate`: LaTeX -> sympy through math-verify, and an equality that cannot round.

math-verify parses LaTeX better than anything we would write (sets, intervals, matrices, `\\sum`, `\\int`,
mixed numbers, `\\%`), so it is the parser and, for exact expressions, the equivalence engine. What it
gets wrong was measured on tests/fixtures/rewards/soundness_cases.jsonl (docs/rewards.md) and is
guarded here instead of patched:
- `verify` rounds numbers to 6 decimal places, so `1.39e-10` equals `3.61e-10` and `355/113` equals
  `\\pi`: every `True` of an expression is confirmed at 50 digits with a relative bound, and a side
  written with a decimal point is compared with a relative tolerance only (never an absolute one);
- it reads `1.39e-10` as `1.39*E - 10` and lowercases symbols (`Y` equals `y`): numbers in `e` notation
  never get here (accurate.py parses them exactly) and a case-only difference of letters is a mismatch;
- `1/0`, `0/0` and `12:00` parse to `zoo`/`nan`, which equal each other: such values are rejected.
Everything here runs in a grading worker (rewards/pool.py), which bounds its CPU time; math-verify's own
signal timeouts are switched off (they only work in a main thread).
"""

from __future__ import annotations

import logging
import random
import re

MAX_LEN = 1000  # longer answers are not parsed (a human would not accept a page as a final answer)

_RISKY = (
    re.compile(r"(\^|\*\*)\s*[{(]?\s*[-+]?\s*\d{4,}"),  # huge exponents
    re.compile(r"(\^|\*\*)\s*[{(]\s*\d+\s*(\^|\*\*)"),  # towers: 9^{9^9}, 9**(9**9)
    re.compile(r"(\^|\*\*)\s*\d+\s*(\^|\*\*)"),  # 9**9**9, 9^9^9
    re.compile(r"!\s*[)}]?\s*!|[)}]\s*!|\d{4,}\s*!|\\(?:frac|cdot)?\s*\w*\s*!"),  # factorial blow-ups
    re.compile(r"\d{200,}"),
)
_LETTERS = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z](?![a-zA-Z])")
_DECIMAL = re.compile(r"(?<![\d.])\d*\.\d+")
REL_TOL = 1e-9  # only where a side is written as a decimal
CONFIRM_TOL = 1e-25  # exact expressions: relative difference at 50 digits


def is_risky(s: str) -> bool:
    """Inputs whose symbolic evaluation may not finish in time: decided by string rules only."""
    return len(s) > MAX_LEN or s.count("{") > 100 or any(rx.search(s) for rx in _RISKY)


def has_decimal(s: str) -> bool:
    return bool(_DECIMAL.search(s))


def case_clash(a: str, b: str) -> bool:
    """`y` vs `Y`: math-verify lowercases symbols; we treat a case-only difference as different letters."""
    la, lb = set(_LETTERS.findall(a)), set(_LETTERS.findall(b))
    for x, y in ((la, lb), (la - {"e", "i"}, lb - {"e", "i"})):  # also with the constants e and i aside
        if x != y and {c.lower() for c in x} == {c.lower() for c in y}:
            return True
    return False


_PLAIN_EXPR = re.compile(r"[0-9a-zA-Z+\-*/^(). ]+")


def _parse_plain(s: str):
    """`3ab`, `2 i`, `6yx^2`: text without LaTeX, letters as single symbols, `i` the imaginary unit."""
    import sympy
    from sympy.parsing import sympy_parser as sp

    t = sp.standard_transformations + (sp.implicit_multiplication_application, sp.convert_xor, sp.split_symbols)
    local = {"e": sympy.E, "pi": sympy.pi, "sqrt": sympy.sqrt, "ln": sympy.log}
    try:
        return sp.parse_expr(s, transformations=t, local_dict=local, evaluate=True)
    except Exception:
        return None


def parse(s: str):
    """A sympy reading of one answer, or None: plain text by sympy itself, LaTeX by math-verify."""
    import sympy
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    from math_verify import parse as mv_parse

    if _PLAIN_EXPR.fullmatch(s):
        return _parse_plain(s)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    cfg = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    try:
        out = mv_parse(f"${s}$", extraction_config=cfg, fallback_mode="no_fallback", parsing_timeout=None)
    except Exception:
        return None
    if out and isinstance(out[0], sympy.MatrixBase):
        out = [sympy.ImmutableMatrix(out[0])]  # a Basic, like every other reading
    if not out or not isinstance(out[0], sympy.Basic):
        return None
    v = out[0]
    # math-verify drops what it cannot read (`3ab` -> 3): every letter of the text must survive.
    names = {str(x).lower() for x in v.atoms(sympy.Symbol)}
    plain = re.sub(r"\\(?:begin|end)\{[a-z*]+\}(?:\{[lcr|]*\})?|\\[a-zA-Z]+", " ", s)  # commands, environments
    letters = set(plain.lower()) & set("abcdefghijklmnopqrstuvwxyz")
    letters -= {"e", "i", "d"}
    if not letters <= names:
        return None
    return v


def _canonical(v):
    """One plain symbol per letter: math-verify's symbols carry assumptions, and `Symbol('n')` differs from
    `Symbol('n', real=True)`; names are lowercased (math-verify already does), `i` is the imaginary unit."""
    import sympy

    if not isinstance(v, sympy.Basic):
        return v
    imaginary = not v.has(*_unevaluated())  # in `\\sum_{i=1}` the i is an index
    swap = {s: (sympy.I if str(s).lower() == "i" and imaginary else sympy.Symbol(str(s).lower()))
            for s in v.atoms(sympy.Symbol)}
    return v.xreplace(swap) if swap else v


def _undefined(v) -> bool:
    import sympy

    try:
        return bool(v.has(sympy.zoo, sympy.nan)) if isinstance(v, sympy.Basic) else False
    except Exception:
        return True


# Sample magnitudes: small, around 1, a few units, tens and hundreds, each with both signs. Identities that hold
# only for positive values (`|2x|` = `2x`, `\\ln(x^2)` = `2\\ln x`, `\\max(x, 0)` = `x`) fail at a negative point;
# `\\arcsin(\\sin x)` = `x` fails beyond pi/2. Denominators 7, 11, 13, 17 keep the points off integers and simple
# fractions, where removable singularities and poles usually sit.
_MAGNITUDES = ((0.1, 0.9), (1.1, 3.9), (4.1, 9.9), (11, 40), (60, 300))
_DENOMS = (7, 11, 13, 17)


def _points(symbols, n: int = 10) -> list[dict]:
    """`n` fixed exact rational points, half of them negative, over several magnitudes (deterministic)."""
    import sympy

    rng = random.Random(1234)  # the same points every time: a verdict must not depend on luck
    syms = sorted(symbols, key=str)
    if not syms:
        return [{}]
    out = []
    for k in range(n):
        point = {}
        for j, s in enumerate(syms):
            lo, hi = _MAGNITUDES[(k // 2 + j) % len(_MAGNITUDES)]
            den = _DENOMS[(k + 3 * j) % len(_DENOMS)]
            num = rng.randint(max(1, int(lo * den)), int(hi * den))
            num += num % den == 0
            negative = (k >> min(j, 3)) % 2  # every sign combination of up to four letters occurs
            point[s] = sympy.Rational(-num if negative else num, den)
        out.append(point)
    return out


def _close(va, vb, tol: float) -> bool:
    """|va - vb| <= tol * min(max(|va|, |vb|), 1): relative for small values, absolute (tol) for large ones.

    A pure relative bound cannot tell `2^{100}` from `2^{100}+1` (they differ by 1e-30 relatively); values are
    evaluated with enough digits (`_value`) that a true identity differs by far less than tol absolutely.
    """
    import sympy

    scale = sympy.Min(sympy.Max(sympy.Abs(va), sympy.Abs(vb)), 1)
    return bool(sympy.Abs(va - vb) <= tol * scale)


EXACT_DIGITS = 3000  # numbers beyond 10^3000 are not expanded into exact integers (seconds of CPU each)


def _exact(v):
    """math-verify leaves `10^{30}` and `\\frac{1}{2^{100}}` unevaluated; evaluated, they compare exactly.
    A number too large to expand (`(999^{999})^{999}`) stays as it is and only meets its own form."""
    import sympy

    try:
        if not v.free_symbols:
            mag = sympy.Abs(sympy.N(v, 5))
            if mag.is_number and mag != 0 and (mag > 10**EXACT_DIGITS or mag < sympy.Rational(1, 10**EXACT_DIGITS)):
                return v
        return v.doit()
    except Exception:
        return v


def _real_roots(v):
    """Odd roots of reals as real roots (`\\sqrt[3]{-8}` = -2, `x^{2/3}` = `\\sqrt[3]{x^2}`), the school
    convention; sympy's principal branch would make `\\sqrt[3]{x^3}` differ from x at negative x. Even roots
    and anything with `i` keep the principal branch."""
    import sympy

    if not isinstance(v, sympy.Expr) or v.has(sympy.I):
        return v

    def odd_root(e) -> bool:
        return bool(e.is_Pow and e.exp.is_Rational and not e.exp.is_Integer and e.exp.q % 2 == 1
                    and not e.base.is_positive)

    try:
        return v.replace(odd_root, lambda e: sympy.sign(e.base) ** e.exp.p * sympy.Abs(e.base) ** e.exp)
    except Exception:
        return v


def _value(v, base: int):
    """v to `base` significant digits, or, for a value above 1e10, to `base` digits after the point as well
    (so that an absolute bound can tell 2^100 from 2^100 + 1); None above 10^2000."""
    import sympy

    val = sympy.N(v, base)
    try:
        mag = sympy.Abs(val)
        if mag.is_number and mag > 10**10:
            extra = int(sympy.floor(sympy.log(mag, 10))) + 1
            if extra > 2000:
                return None  # beyond 10^2000 a difference of 1 cannot be seen: undecided, so rejected
            val = sympy.N(v, base + extra)
    except Exception:
        return None
    return val


def _numerically_equal(a, b, tol: float, digits: int, absolute: bool = True) -> bool:
    """Equal at every sample point, complex values included (principal branches), evaluated with `digits`
    significant digits plus the value's integer digits. No float casts, so nothing rounds to 6 places.

    absolute=False (a side written with a decimal point) compares relatively: a decimal approximates.
    """
    import sympy

    if not isinstance(a, sympy.Expr) or not isinstance(b, sympy.Expr):
        return False
    if a == b:
        return True  # the same expression
    a, b = _real_roots(_exact(a)), _real_roots(_exact(b))
    if a.is_Rational and b.is_Rational:
        return a == b  # integers and fractions of any size are compared exactly
    # Different letters can still be equal (sin^2 x + cos^2 x vs 1): the points cover both sides' letters.
    for p in _points(a.free_symbols | b.free_symbols):
        pa, pb = a.subs(p), b.subs(p)
        if pa.is_Rational and pb.is_Rational:
            if pa != pb:
                return False
            continue
        va, vb = _value(pa, digits), _value(pb, digits)
        if va is None or vb is None:
            return False
        if not (va.is_number and vb.is_number) or any(v.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) for v in (va, vb)):
            if va == vb and va.is_number:
                continue
            return False
        if absolute:
            if not _close(va, vb, tol):
                return False
        elif sympy.Abs(va - vb) > tol * sympy.Max(sympy.Abs(va), sympy.Abs(vb)):
            return False
    return True


def _verify(a, b) -> bool:
    from math_verify import verify

    try:
        return bool(verify([b], [a], timeout_seconds=None))
    except Exception:
        return False


def _evaluated(v):
    """Sums, products, integrals and limits done where sympy can (`\\sum_{i=1}^{10} i` -> 55)."""
    import sympy

    if isinstance(v, sympy.Basic) and v.has(*_unevaluated()):
        try:
            v = v.doit()
        except Exception:
            return None
        if isinstance(v, sympy.Expr) and not v.has(*_unevaluated()):
            v = sympy.simplify(v)
    return v


def _unevaluated() -> tuple:
    import sympy

    return (sympy.Sum, sympy.Product, sympy.Integral, sympy.Limit)


def _as_matrix(v):
    """An explicit matrix for a matrix or a matrix expression (`A + B`, `AB`, `A^{-1}`); None for anything else."""
    import sympy

    try:
        if not isinstance(v, (sympy.MatrixBase, sympy.MatrixExpr)) and not (
                isinstance(v, sympy.Pow) and isinstance(v.base, (sympy.MatrixBase, sympy.MatrixExpr))):
            return None
        m = v.doit()
        if isinstance(m, sympy.Pow):
            m = m.base ** m.exp  # evaluates a power of an explicit matrix
        return sympy.ImmutableMatrix(m) if isinstance(m, sympy.MatrixBase) else None
    except Exception:
        return None


def _inequality(v):
    """`a < b` -> (b - a, strict): every one-sided inequality as `expr > 0` or `expr >= 0`; else None."""
    import sympy

    if isinstance(v, (sympy.StrictGreaterThan, sympy.GreaterThan)):
        return v.lhs - v.rhs, isinstance(v, sympy.StrictGreaterThan)
    if isinstance(v, (sympy.StrictLessThan, sympy.LessThan)):
        return v.rhs - v.lhs, isinstance(v, sympy.StrictLessThan)
    return None


def _positive_multiple(a, b) -> bool:
    """`-x + 1 > 0` and `2 - 2x > 0` say the same: one side is a positive constant times the other."""
    import sympy

    ratio = sympy.simplify(a / b)
    return bool(ratio.is_number and ratio.is_positive)


def equal(given: str, gt: str) -> bool:
    """Equivalence of two single LaTeX answers (no lists, no equations); False when undecided."""
    import sympy

    if is_risky(given) or is_risky(gt) or case_clash(given, gt):
        return False
    a, b = _canonical(parse(given)), _canonical(parse(gt))
    if a is None or b is None or _undefined(a) or _undefined(b):
        return False
    try:
        a, b = _evaluated(a), _evaluated(b)
        if a is None or b is None:
            return False
        if a.has(*_unevaluated()) or b.has(*_unevaluated()):
            return a == b  # a sum or integral sympy cannot close: only the same one
        ma, mb = _as_matrix(a), _as_matrix(b)
        if ma is not None or mb is not None:  # `A + B` against its value: entry by entry
            if ma is None or mb is None or ma.shape != mb.shape:
                return False
            dec = has_decimal(given) or has_decimal(gt)
            return all(_numerically_equal(x, y, REL_TOL if dec else CONFIRM_TOL, 30 if dec else 50, absolute=not dec)
                       for x, y in zip(ma, mb))
        if has_decimal(given) or has_decimal(gt):
            return _numerically_equal(a, b, REL_TOL, 30, absolute=False)
        if isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr):
            # verify would round to 6 places; an exact expression is compared at 50 digits instead
            return _numerically_equal(a, b, CONFIRM_TOL, 50)
        ra, rb = _inequality(a), _inequality(b)
        if ra is not None or rb is not None:
            return ra is not None and rb is not None and ra[1] == rb[1] and _positive_multiple(ra[0], rb[0])
        return _verify(a, b)  # sets, intervals, matrices, equations: math-verify's own structure rules
    except Exception:
        return False


def exact_value(s: str):
    """The exact value (a Fraction) of an expression that evaluates to a rational number (`2^{100}+1`), else None."""
    from fractions import Fraction

    if is_risky(s):
        return None
    try:
        v = _canonical(parse(s))
        if v is None or _undefined(v) or getattr(v, "free_symbols", True):
            return None
        v = _exact(_evaluated(v))
        return Fraction(int(v.p), int(v.q)) if v is not None and v.is_Rational else None
    except Exception:
        return None


def relation_equal(lhs_a: str, rhs_a: str, lhs_b: str, rhs_b: str) -> bool:
    """`x + y = 0` vs `y = -x`: the same relation when lhs - rhs of one is a nonzero constant times the other's.

    Checked at fixed rational points with 50 digits (a constant ratio at every point), not by `simplify`,
    which took over a minute on a big trigonometric polynomial.
    """
    import sympy

    if any(is_risky(p) for p in (lhs_a, rhs_a, lhs_b, rhs_b)):
        return False
    parts = [_canonical(parse(p)) for p in (lhs_a, rhs_a, lhs_b, rhs_b)]
    if any(p is None or not isinstance(p, sympy.Expr) or _undefined(p) for p in parts):
        return False
    da, db = parts[0] - parts[1], parts[2] - parts[3]
    if not da.free_symbols or {str(s) for s in da.free_symbols} != {str(s) for s in db.free_symbols}:
        return False
    ratios = []
    for p in _points(da.free_symbols | db.free_symbols):
        va, vb = _value(da.subs(p), 50), _value(db.subs(p), 50)
        if va is None or vb is None:
            return False
        if not (va.is_number and vb.is_number) or va.has(sympy.zoo, sympy.nan) or vb.has(sympy.zoo, sympy.nan):
            return False
        if va == 0 and vb == 0:
            continue
        if va == 0 or vb == 0:
            return False
        ratios.append(va / vb)
    if len(ratios) < 2 or ratios[0] == 0:
        return False
    return all(sympy.Abs(r - ratios[0]) <= CONFIRM_TOL * sympy.Abs(ratios[0]) for r in ratios)
