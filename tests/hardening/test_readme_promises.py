"""The README's reliability table and the adversarial corpus agree: every promise names corpus rows (or tests, as
``tests/<file>.py::<test function>``) that exist, and no named row is an open door (a known_bug xfail)."""

from __future__ import annotations

import importlib
import re

from corpus import ROOT, Case


def _cases() -> dict:
    out = {}
    for f in sorted((ROOT / "tests" / "hardening").glob("test_corpus_*.py")):
        mod = importlib.import_module(f.stem)
        for value in vars(mod).values():  # every table in the file (CASES, RESUME_CASES, ...)
            if isinstance(value, list) and value and all(isinstance(c, Case) for c in value):
                out.update({c.id: c for c in value})
    return out


def test_every_readme_promise_is_run_by_the_corpus() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Reliability: what vaediag guarantees", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| Door") and "---" not in ln]
    assert len(rows) >= 15
    cases = _cases()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        ids = re.findall(r"`([^`]+)`", cells[-1])
        assert ids, f"a promise without corpus rows: {cells[0]}"
        for i in ids:
            if "::" in i:  # a test named by file and function, for a case one corpus command cannot make
                path, name = i.split("::", 1)
                f = ROOT / path
                assert f.is_file(), f"README names test file {path!r}, which does not exist"
                assert re.search(rf"^def {re.escape(name)}\(", f.read_text(encoding="utf-8"), re.M), \
                    f"README names test {i!r}, which does not exist"
                continue
            assert i in cases, f"README names corpus row {i!r}, which does not exist"
            assert not cases[i].known_bug, f"README promises {i!r}, which the corpus marks as an open door"
