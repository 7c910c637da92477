"""Scale: trees deeper than the recursion limit or PATH_MAX, thousands of empty runs, many distinct tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import vaediag
from scaletrees import deep_tree, empty_runs, many_tags_run, remove_tree
from vaediag.logs.discover import discover


# --- deep trees -----------------------------------------------------------------------------------

@pytest.fixture
def deep_tmp(tmp_path):
    """tmp_path, emptied without recursion afterwards (pytest's shutil.rmtree would die on a deep tree
    left behind, in every later session on this machine)."""
    yield tmp_path
    for child in list(tmp_path.iterdir()):
        remove_tree(child)


@pytest.mark.slow
def test_a_tree_deeper_than_the_recursion_limit_is_walked(deep_tmp):
    tmp_path = deep_tmp
    depth = sys.getrecursionlimit() + 50  # os.walk recursed once per level: RecursionError here
    deep_id = deep_tree(tmp_path, depth)
    skipped: list = []
    root, runs, orphans = discover(tmp_path, skipped=skipped)
    assert [r.run for r in runs] == sorted([deep_id, "shallow"])
    assert skipped == [] and orphans == []
    rs = vaediag.load(tmp_path)
    assert set(rs.runs) == {deep_id, "shallow"}
    assert rs.runs[deep_id].n_scalars == rs.runs["shallow"].n_scalars > 0
    assert rs.warnings == []


@pytest.mark.slow
def test_a_directory_past_path_max_is_skipped_with_one_warning(deep_tmp):
    tmp_path = deep_tmp
    max_path = os.pathconf(tmp_path, "PC_PATH_MAX")
    depth = max_path // 2 + 10  # "d/" per level: the deep run's path is longer than the OS allows
    deep_tree(tmp_path / "t", depth)
    rs = vaediag.load(tmp_path / "t")
    assert list(rs.runs) == ["shallow"]
    (w,) = rs.warnings
    assert w.startswith("1 directory could not be read and was skipped: d/d/d/") and "(File name too long)" in w
    assert len(w) < 250  # the path is shortened in the middle
    # The CLI: the console view lists the warning; --json puts it on stderr, as one line.
    cli = [sys.executable, "-m", "vaediag.cli", "check", str(tmp_path / "t")]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == ""
    assert "1 run checked" in out.stdout and "could not be read and was skipped" in out.stdout
    js = subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=120)
    assert js.returncode == 0 and [r["run"] for r in json.loads(js.stdout)["runs"]] == ["shallow"]
    assert js.stderr.count("\n") == 1 and js.stderr.startswith("warning: 1 directory could not be read")
    # The iterative, fd-based clean-up takes trees past PATH_MAX (shutil.rmtree recurses).
    remove_tree(tmp_path / "t")
    assert list(tmp_path.iterdir()) == []


def test_the_walk_lists_runs_in_name_order_and_keeps_layout_rules(tmp_path):
    # tf/ and add_hparams sub-directories belong to their parent; a symlink to a directory is not entered.
    for rel in ("b/version_0", "a/version_1/tf", "a/version_0", "c/run/1702448066.1234"):
        empty_dir = tmp_path / rel
        empty_dir.mkdir(parents=True)
        (empty_dir / "events.out.tfevents.1.host").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "hparams.yaml").write_text("lr: 1\n")
    _, runs, orphans = discover(tmp_path)
    assert [r.run for r in runs] == ["a/version_0", "a/version_1", "b/version_0", "c/run"]
    assert orphans == [tmp_path / "orphan"]
