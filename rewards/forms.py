"""Forms real answers and golds take that are the same answer as a plainer one (glue for rewards/accurate.py).

Each rule turns one written form into another the structural comparison already handles, and is narrow on
purpose: what it does not recognise is left alone (and is then usually rejected), never guessed at.
- prose around a value: `The total is \\$3,450.` -> `3,450`, `1,200 dollars` -> `1200 dollars`;
- math spans in prose: `The minimum value is $\\frac{1}{2}$.` -> `\\frac{1}{2}`, `$1$ and $2$` -> `1, 2`;
- matrices written as `\\left(\\begin{array}{cc}...\\end{array}\\right)` or `(\\begin{matrix}...)` -> pmatrix;
- named parts: `AB=4, CD=5` against `4, 5`, `x = 1, y = -2` against `(1, -2)`, `p=5,q=2;p=7,q=2` against
  `(5,2),(7,2)`: the written order of the names gives the order of the bare values; against a tuple the names
  must be in alphabetical order (`(x, y)`), otherwise which order is meant is a guess and the pair is rejected;
- an inequality in one variable as an interval: `1 < x \\le 2` -> `(1, 2]`; inequalities joined by `or`
  as a union (`x < 1 or x > 3`; never `and`, which is an intersection);
- `a \\pm b` as the list `a+b, a-b`.
"""

from __future__ import annotations

import re

# ---------------------------------------------------------------- prose and numbers with words

_MATH_SPAN = re.compile(r"(?<!\\)\$\$?(.+?)(?<!\\)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)


_QUALIFIER = re.compile(r"\bfor\s+(?:all|every|any|each)\s*$", re.I)  # `for all $x$`: not part of the answer
_SUBJECT = re.compile(r"\s*(?:is|equals|was|must be|will be)\s*", re.I)  # `$n$ is $34$`: n names the answer


def math_spans(s: str) -> str:
    """`The answer is $9$ apples` -> `9`; several spans -> a list (`$12$ and $13$` -> `12, 13`).

    Spans that are no part of the answer are dropped: a qualifier after `for all` (`$f(x)=x$ for all $x$`)
    and a one-letter subject before `is` (`The largest $n$ is $34$`)."""
    found = list(_MATH_SPAN.finditer(s))
    spans = []
    for k, m in enumerate(found):
        text = next(g for g in m.groups() if g is not None).strip()
        before = s[found[k - 1].end() if k else 0:m.start()]
        after = s[m.end():found[k + 1].start() if k + 1 < len(found) else len(s)]
        subject = k + 1 < len(found) and re.fullmatch(r"[A-Za-z]", text) and _SUBJECT.fullmatch(after)
        if len(found) > 1 and (_QUALIFIER.search(before) or subject):
            continue
        spans.append(text)
    outside = _MATH_SPAN.sub("", s).strip(" .,:;")
    if not spans or (not outside and len(found) == 1):
        return s.strip().strip("$")
    return ", ".join(dict.fromkeys(spans))


_NEGATION = re.compile(r"\b(?:not|no|never|cannot|can't|isn't|aren't|nor|except|unless|if|approximately|about|"
                       r"around|roughly|nearly|almost|least|most|than|between|either)\b", re.I)
_PROSE = re.compile(r"([A-Za-z][A-Za-z' ]{0,60}?)\s+(?:is|are|was|were|equals|will be|would be)\s*:?\s+(.+)", re.I)
_THOUSANDS_WORDS = re.compile(r"([-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?)(\s+[A-Za-z][A-Za-z ]*)")


def strip_prose(s: str) -> str:
    """`The total is 3,450` -> `3,450`: a plain-words subject and a verb before the answer are dropped.

    Nothing is dropped when the sentence hedges or negates (`is not`, `is about`, `is at least`, `if`):
    those words would change the answer, and such a sentence stays text (and is rejected).
    """
    m = _PROSE.fullmatch(s)
    if not m or _NEGATION.search(s):
        return s
    return m.group(2).strip()


_DECIMAL_COMMA = re.compile(r"-?(?:0,\d+|\d+,(?:\d{1,2}|\d{4,}))")  # never d,ddd (thousands)
_POINT_DECIMAL = re.compile(r"-?\d*\.\d+")


def decimal_comma(s: str, other: str) -> str:
    """`1,22` -> `1.22` when the other side is a number with a decimal point (a European decimal comma); `1,222`
    stays thousands and `1, 22` (a space) stays a list."""
    if _DECIMAL_COMMA.fullmatch(s) and _POINT_DECIMAL.fullmatch(other):
        return s.replace(",", ".")
    return s


def thousands_with_words(s: str) -> str:
    """`1,200 dollars` -> `1200 dollars` (a bare `1,200` is handled by accurate.normalize)."""
    m = _THOUSANDS_WORDS.fullmatch(s)
    return m.group(1).replace(",", "") + m.group(2) if m else s


# ---------------------------------------------------------------- inequalities

_REL = r"(<|>|\\le|\\ge)"
_VAR = r"([a-zA-Z])"


def interval(s: str) -> str | None:
    """An inequality in one variable as interval notation: `1 < x \\le 2` -> `(1, 2]`, `x > 3` -> `(3, \\infty)`."""
    s = s.replace(" ", "")
    m = re.fullmatch(r"([^<>\\]+?)" + _REL + _VAR + _REL + r"([^<>\\]+)", s)
    if m and m.group(2) in ("<", "\\le") and m.group(4) in ("<", "\\le"):
        return ("(" if m.group(2) == "<" else "[") + f"{m.group(1)}, {m.group(5)}" + (")" if m.group(4) == "<" else "]")
    m = re.fullmatch(_VAR + _REL + r"([^<>\\][^<>]*)", s) or re.fullmatch(r"([^<>\\][^<>]*?)" + _REL + _VAR, s)
    if not m:
        return None
    if m.group(1).isalpha() and len(m.group(1)) == 1:
        rel, bound = m.group(2), m.group(3)
    else:  # 3 < x is x > 3
        rel, bound = {"<": ">", ">": "<", "\\le": "\\ge", "\\ge": "\\le"}[m.group(2)], m.group(1)
    return {">": f"({bound}, \\infty)", "\\ge": f"[{bound}, \\infty)",
            "<": f"(-\\infty, {bound})", "\\le": f"(-\\infty, {bound}]"}[rel]


# ---------------------------------------------------------------- plus-minus

def expand_pm(s: str) -> str:
    """`a \\pm b` -> `a+b, a-b` (and `x = \\pm 3` -> `3, -3`), so it compares as a list of solutions."""
    m = re.fullmatch(r"(.*?)\\pm(.*)", s)
    if not m or "\\pm" in m.group(2) or "," in s:
        return s
    a, b = m.group(1).strip(), m.group(2).strip()
    if "=" in a:
        a = a.split("=")[-1].strip()
    if not b:
        return s
    return f"{a}+{b}, {a}-{b}" if a else f"{b}, -{b}"


def outer_group(s: str) -> str:
    """`{1,3}` -> `1,3`: braces around the whole answer only group in TeX (`\\{1,3\\}` is the set)."""
    if len(s) < 2 or s[0] != "{" or s[-1] != "}":
        return s
    depth = 0
    for i, ch in enumerate(s):
        depth += ch == "{"
        depth -= ch == "}"
        if depth == 0 and i < len(s) - 1:
            return s  # `{a}{b}`: the first brace closes early
    return s[1:-1].strip()


# ---------------------------------------------------------------- matrices

_ARRAY = re.compile(r"[\[(]\s*\\begin\{(?:array\}\{[lcr| ]*|matrix)\}(.*?)\\end\{(?:array|matrix)\}\s*[\])]", re.S)


def matrices(s: str) -> str:
    """`(\\begin{array}{cc}1&2\\\\3&4\\end{array})` and `[\\begin{matrix}...]` -> `\\begin{pmatrix}...`."""
    return _ARRAY.sub(lambda m: "\\begin{pmatrix}" + m.group(1) + "\\end{pmatrix}", s)


# ---------------------------------------------------------------- named parts

# A name, not an expression: one letter with an optional subscript or prime (`x`, `V_{1}`, `a_n`, `p'`), a
# Greek letter, 2-3 capitals (a segment or an angle: `AB`, `ABC`, `\\angle A`, `m\\angle ABC`, `\\overline{AB}`),
# or a ratio of names (`V_1:V_2`). Lower-case pairs (`xy`) are products, so they are no names.
_ONE = r"(?:[A-Za-z]|\\[a-zA-Z]+)(?:_\{?\w+\}?|')?"
_SEGMENT = r"(?:(?:m\s*)?\\angle\s*)?[A-Z]{2,3}|(?:m\s*)?\\angle\s*[A-Z]|\\overline\{[A-Z]{2}\}|\|[A-Z]{2}\|"
_NAME = re.compile(rf"(?:{_ONE}|{_SEGMENT})(?:\s*:\s*(?:{_ONE}|{_SEGMENT}))*")
_FUNCTIONS = {"sin", "cos", "tan", "log", "ln", "exp", "sqrt", "frac", "cdot", "times", "pi", "infty", "sum", "int"}


def name_key(lhs: str) -> str | None:
    """The canonical name of an equation's left side (`V_{1}` -> `V_1`), or None when it is no plain name."""
    t = lhs.strip()
    if not _NAME.fullmatch(t):
        return None
    t = re.sub(r"\s+", "", t)
    t = re.sub(r"_\{(\w)\}", r"_\1", t)
    t = re.sub(r"\\overline\{([A-Z]{2})\}|\|([A-Z]{2})\|", lambda m: m.group(1) or m.group(2), t)
    if any(cmd in _FUNCTIONS for cmd in re.findall(r"\\([a-zA-Z]+)", t)):
        return None
    return t


def named(part: str) -> tuple[str, str] | None:
    """`AB = 4` -> (`AB`, `4`); None unless the part is `name = value` with one `=` at the top level."""
    pieces = split_top(part, "=")
    if len(pieces) != 2 or not pieces[1]:
        return None
    key = name_key(pieces[0])
    return (key, pieces[1]) if key else None


def split_top(s: str, seps: str = ",") -> list[str]:
    """Split at separators outside brackets and braces (shared with rewards.accurate)."""
    out, depth, cur = [], 0, []
    for ch in s:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch in seps and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.findall(r"\d+|\D+", name))


def named_values(parts: list[str]) -> tuple[list[str], list[str], bool] | None:
    """(names, values, alphabetical) of `name = value` parts naming two or more different things (`x = 1, y = -2`
    -> ([`x`, `y`], [`1`, `-2`], True)); None otherwise. Against a tuple only alphabetical names count (`(x, y)`)
    unless the tuple names them; a bare list is read in the written order."""
    pairs = [named(p) for p in parts]
    if len(pairs) < 2 or any(p is None for p in pairs):
        return None
    names = [p[0] for p in pairs]  # type: ignore[index]
    if len(set(names)) != len(names):
        return None
    return names, [p[1] for p in pairs], names == sorted(names, key=_natural)  # type: ignore[index]


def tuple_equation(s: str) -> tuple[list[str], str] | None:
    """`(p, q) = (5, 2), (7, 2)` -> ([`p`, `q`], `(5, 2), (7, 2)`); None unless the left side is a tuple of names."""
    m = re.fullmatch(r"\(([^()=]+)\)\s*=\s*(.+)", s.strip(), flags=re.S)
    if not m:
        return None
    names = [name_key(n) for n in m.group(1).split(",")]
    if len(names) < 2 or any(n is None for n in names):
        return None
    return names, m.group(2).strip()  # type: ignore[return-value]


_GROUP_WORDS = re.compile(r"\s*;\s*|\s+(?:or|and)\s+")


def named_groups(s: str, split_top) -> tuple[list[str], str] | None:
    """`p=5,q=2;p=7,q=2` (or `... or ...`) -> ([`p`, `q`], `(5, 2), (7, 2)`): solutions, each naming the same
    parts in alphabetical order."""
    groups = [g for g in _GROUP_WORDS.split(s) if g]
    if len(groups) < 2:
        return None
    tuples, names = [], None
    for g in groups:
        found = named_values(split_top(g, ","))
        if found is None or not found[2]:
            return None
        if names is not None and found[0] != names:
            return None
        names = found[0]
        tuples.append("(" + ", ".join(found[1]) + ")")
    return names or [], ", ".join(tuples)


def or_union(s: str) -> str | None:
    """`x < 1 or x > 3` -> `(-\\infty, 1) \\cup (3, \\infty)`: inequalities joined by `or` as a union."""
    parts = re.split(r"\s+or\s+", s)
    if len(parts) < 2:
        return None
    intervals = [interval(p) for p in parts]
    if any(i is None for i in intervals):
        return None
    return " \\cup ".join(intervals)  # type: ignore[arg-type]
