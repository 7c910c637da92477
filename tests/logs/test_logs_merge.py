"""Several PATHs as one RunSet (vaediag.logs.merge): ids made unique, runs selected, inputs left as they were."""

from __future__ import annotations

import pandas as pd
import pytest

import vaediag
from tbwrite import epoch_map, epoch_series, write_run
from vaediag.errors import InputError, UsageError
from vaediag.logs import load_paths, merge_runsets, select_runs


@pytest.fixture
def two_trees(tmp_path):
    """Two trees that both hold ear_vae/version_0 (different curves), one also version_1."""
    for tree, kls in (("a", {"version_0": [30.0, 20.0]}), ("b", {"version_0": [50.0, 40.0], "version_1": [9.0, 8.0]})):
        for version, kl in kls.items():
            write_run(tmp_path / tree / "ear_teacher" / "ear_vae" / version,
                      {"val/kl": epoch_series(kl), "train/loss": epoch_series([1.0, 0.5])}, epochs=epoch_map(2))
    return tmp_path / "a" / "ear_teacher", tmp_path / "b" / "ear_teacher"


def _snapshot(rs):
    return (str(rs.root), rs.frame.copy(deep=True), {k: (id(v), v.run, v.path) for k, v in rs.runs.items()},
            list(rs.warnings), list(rs.orphans))


def _assert_same(rs, snap):
    root, frame, runs, warnings, orphans = snap
    assert str(rs.root) == root
    pd.testing.assert_frame_equal(rs.frame, frame)
    assert {k: (id(v), v.run, v.path) for k, v in rs.runs.items()} == runs
    assert rs.warnings == warnings and rs.orphans == orphans


def test_merge_returns_a_new_runset_and_leaves_its_inputs_unchanged(two_trees):
    a, b = (vaediag.load(p) for p in two_trees)
    snaps = [_snapshot(a), _snapshot(b)]
    merged = merge_runsets([a, b])
    _assert_same(a, snaps[0])
    _assert_same(b, snaps[1])
    assert list(merged.runs) == ["a/ear_teacher/ear_vae/version_0", "b/ear_teacher/ear_vae/version_0",
                                 "ear_vae/version_1"]
    assert {k: v.run for k, v in merged.runs.items()} == {k: k for k in merged.runs}
    assert all(merged.runs[k] is not info for k in merged.runs for info in [*a.runs.values(), *b.runs.values()])
    assert sorted(merged.frame["run"].astype(str).unique()) == sorted(merged.runs)
    assert len(merged.frame) == len(a.frame) + len(b.frame)

    picked = select_runs(merged, ["ear_vae/version_1"])
    assert list(picked.runs) == ["ear_vae/version_1"] and len(merged.runs) == 3
    assert list(picked.frame["run"].cat.categories) == ["ear_vae/version_1"]


def test_load_paths_one_path_is_load(two_trees):
    a, _ = two_trees
    pd.testing.assert_frame_equal(load_paths([str(a)]).frame, vaediag.load(a).frame)


@pytest.mark.parametrize("make_args, error, message", [
    (lambda a, b: ([str(a), str(a) + "/"], {}), UsageError, r"PATH '.*' is given twice"),
    (lambda a, b: ([str(a), str(b)], {"run_glob": "c/*"}), InputError, r"--run 'c/\*' matches no run \(runs: a/"),
])
def test_load_paths_errors(two_trees, make_args, error, message):
    paths, kw = make_args(*two_trees)
    with pytest.raises(error, match=message):
        load_paths(paths, **kw)


def test_the_old_import_path_still_works():
    from vaediag.commands.report import load_paths as old

    assert old is load_paths
