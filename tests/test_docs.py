"""The docs' promises point at tests that exist: every row of docs/faults.md names at least one test, and each
`tests/FILE.py::name` (or `::name`, in the file named before it) is a test function of that file."""

from __future__ import annotations

import os
import re

from _tiny import REPO


def _fault_rows() -> list[list[str]]:
    with open(os.path.join(REPO, "docs", "faults.md"), encoding="utf-8") as f:
        lines = [ln for ln in f if ln.startswith("| ") and not ln.startswith("| fault ")]
    return [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines if not ln.startswith("| ---")]


def test_every_fault_row_names_tests_that_exist():
    rows = _fault_rows()
    assert len(rows) >= 15, "docs/faults.md: the table was not found"
    for fault, _, tests in rows:
        refs = re.findall(r"`((?:tests/[\w/]+\.py)?(?:::\w+)?)`", tests)
        assert refs, f"docs/faults.md: row {fault!r} names no test"
        current = None
        for ref in refs:
            path, _, name = ref.partition("::")
            current = path or current
            assert current, f"docs/faults.md: row {fault!r}: {ref!r} has no file before it"
            file = os.path.join(REPO, current)
            assert os.path.isfile(file), f"docs/faults.md: row {fault!r}: {current} does not exist"
            if name:
                with open(file, encoding="utf-8") as f:
                    source = f.read()
                assert re.search(rf"^def {name}\(", source, re.M), f"docs/faults.md: row {fault!r}: no {ref}"
