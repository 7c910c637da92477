"""Corpus rows: scale (trees ~1,000 directories deep or deeper than PATH_MAX, thousands of empty runs,
runs with very many distinct tags). No row asserts a time beyond the corpus's hang timeout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corpus import Case, params, run_case
from bench.trees import deep_tree, empty_runs, many_tags_run, remove_tree

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


def _tags(n: int, fmt: str):
    def build(tmp: Path) -> list[str]:
        many_tags_run(tmp / "run", n, fmt=fmt)
        return ["check", str(tmp / "run"), "--json"]
    return build


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
    # Very many distinct tags in one run (1M took 116 s and 0.94 GB; the 1M timing is `make bench`'s):
    # past 50,000 unmapped tags the rest are counted, not read, and the finding says how many.
    Case("check-150k-unmapped-tags", _tags(150_000, "hist/{:07d}"), 0, "", timeout=300,
         stdout=r"150000 tags not mapped to any term, ignored: hist/0000000, .* the scalars of 100,000 of them "
                r"were not read \(vaediag reads at most 50,000 per load\)"),
    # Tags that all name a term (per-sample losses): the loss arithmetic tried every pair of them (hours);
    # past 100,000 distinct tags the rest are not read, and a warning says so.
    Case("check-120k-loss-tags", _tags(120_000, "sample/{:06d}/loss"), 0, "", timeout=300,
         stdout=r"20,003 tags that vaediag reads were not read \(20,003 scalars\): past its limit of 100,000"),
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
