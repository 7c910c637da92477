"""Corpus rows: scale (trees ~1,000 directories deep or deeper than PATH_MAX, thousands of empty runs,
runs with very many distinct tags). No row asserts a time beyond the corpus's hang timeout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corpus import Case, params, run_case
from scaletrees import deep_tree, empty_runs, remove_tree

_REPORT = ("r.md", "r_files", "r_files/*")


def _deep(depth: int, *argv: str):
    def build(tmp: Path) -> list[str]:
        deep_tree(tmp / "tree", depth)
        return [a.format(tree=tmp / "tree", tmp=tmp) for a in argv]
    return build


def _empty(tmp: Path) -> list[str]:
    # What "an empty run" is in practice: an event file with only the file_version header (a
    # SummaryWriter whose run died before its first scalar) or a zero-byte one (killed before a flush).
    empty_runs(tmp / "tree" / "header", 1500, kind="header")
    empty_runs(tmp / "tree" / "zero", 1000, kind="zero")
    return ["check", str(tmp / "tree")]


CASES = [
    # os.walk recursed once per level: RecursionError (a 60-line traceback) on a tree ~1,000 deep.
    # (Deeper than PATH_MAX: tests/logs/test_logs_scale.py; the corpus's snapshot cannot lstat such paths.)
    Case("check-deep-tree-1000", _deep(1000, "check", "{tree}"), 0, "", stdout=r"2 runs checked"),
    Case("report-deep-tree-1000", _deep(1000, "report", "{tree}", "-o", "{tmp}/r.md"), 0, "",
         stdout=r"Wrote .*r\.md \(2 runs", may_create=_REPORT),
    # 2,500 runs with nothing logged: one block for all of them (no time asserted beyond the hang timeout;
    # the 10,000-run timing is `make bench`'s).
    Case("check-2500-empty-runs", _empty, 0, "", timeout=600,
         stdout=r"2500 runs with nothing to judge  ·  0 completed epochs  ·  WARN(?s:.*)2500 runs checked: 2500 warn"),
]


@pytest.fixture
def tmp(tmp_path: Path):
    """tmp_path, emptied without recursion afterwards: pytest's own clean-up (shutil.rmtree) recurses and
    would die on a deep tree left behind, in every later session on this machine."""
    yield tmp_path
    for child in list(tmp_path.iterdir()):
        remove_tree(child)


# Every row builds or reads thousands of directories (slow metadata on this disk) or spawns a big check.
@pytest.mark.slow
@pytest.mark.parametrize("case", params(CASES))
def test_corpus_scale(case: Case, tmp: Path) -> None:
    run_case(case, tmp)
