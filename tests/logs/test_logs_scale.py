"""Scale: trees deeper than the recursion limit or PATH_MAX, thousands of empty runs, many distinct tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import vaediag
from bench.trees import deep_tree, empty_runs, many_tags_run, remove_tree
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


# --- many distinct tags ---------------------------------------------------------------------------

@pytest.fixture
def small_limits(monkeypatch):
    """The reader's limits on distinct tags, shrunk so a test needs hundreds of tags, not a million."""
    import vaediag.logs.decode as decode

    monkeypatch.setattr(decode, "MAX_UNMAPPED_TAGS", 100)
    monkeypatch.setattr(decode, "MAX_TAGS", 400)
    return decode


def _unmapped_finding(rs):
    from vaediag.diagnose import health

    return health.check_unmapped(rs.runs["r"], run="r")


def test_unmapped_tags_past_the_limit_are_counted_not_read(tmp_path, small_limits):
    # 1,000 per-sample tags logged 3 times each, before the run's real tags: the real tags are read in
    # full (a tag a term names is never refused for the unmapped limit), 100 of the others are kept.
    many_tags_run(tmp_path / "r", 1000, steps=3, after=False)
    rs = vaediag.load(tmp_path)
    info, f = rs.runs["r"], rs.frame
    assert len(f[f["tag"] == "train/loss"]) == 50 and len(f[f["tag"] == "val/loss"]) == 5
    assert len(info.unmapped_tags) == 100 and info.unmapped_tags[0] == "hist/0000000"
    assert (info.unmapped_not_read, info.tags_not_read, info.scalars_not_read) == (900, 0, 2700)
    assert f["tag"].nunique() == 103 and len(f) == 50 + 50 + 5 + 300
    assert [n.kind for n in info.facts if n.kind == "tags_not_read"] == ["tags_not_read"]
    assert any("900 more tags that no term names were not read (2,700 scalars)" in n for n in info.notes)
    assert info.warnings == []
    (finding,) = _unmapped_finding(rs)
    assert finding.message.startswith("1000 tags not mapped to any term, ignored: hist/0000000")
    assert "the scalars of 900 of them were not read (vaediag reads at most 100 per load)" in finding.message


def test_tags_past_the_limit_on_all_tags_are_a_warning(tmp_path, small_limits):
    many_tags_run(tmp_path / "r", 1000, fmt="sample/{:05d}/loss")  # each names the term loss
    rs = vaediag.load(tmp_path)
    info = rs.runs["r"]
    # The run's 3 real tags come first, then 397 sample tags fill the limit of 400.
    assert rs.frame["tag"].nunique() == 400 and info.tags_not_read == 603 and info.scalars_not_read == 603
    (w,) = info.warnings
    assert w.startswith("603 tags that vaediag reads were not read (603 scalars): past its limit of 400 distinct tags")
    assert any(x.startswith("r: 603 tags that vaediag reads were not read") for x in rs.warnings)


def test_the_limits_count_distinct_tags_across_files_and_chunks(tmp_path, small_limits, monkeypatch):
    import vaediag.logs.stream as stream

    monkeypatch.setattr(stream, "CHUNK_BYTES", 4096)  # dozens of chunks: refused tags seen again and again
    many_tags_run(tmp_path / "r", 300, steps=4)
    second = tmp_path / "r" / "events.out.tfevents.1700000001.host.2.0"
    second.write_bytes(many_tags_run(tmp_path / "tmp", 300, steps=2).read_bytes())
    rs = vaediag.load(tmp_path / "r")
    info = rs.runs["r"]
    assert (info.unmapped_not_read, info.scalars_not_read) == (200, 200 * 6)
    assert len(info.unmapped_tags) == 100


def test_tags_refused_on_the_protobuf_path_are_counted_too(tmp_path, small_limits):
    from logs_helpers import tensor_scalar_event, write_raw

    write_raw(tmp_path / "r", [tensor_scalar_event(f"tf2/{i:04d}", 1, float(i), 1.7e9) for i in range(250)] * 2)
    info = vaediag.load(tmp_path).runs["r"]
    assert (len(info.unmapped_tags), info.unmapped_not_read, info.scalars_not_read) == (100, 150, 300)


def test_a_registry_without_limits_registers_everything():
    from vaediag.logs.decode import TagRegistry

    reg = TagRegistry()
    assert [reg.admit(f"t{i}") for i in range(3)] == [0, 1, 2] and reg.code("t1") == 1


def test_tail_keeps_the_limits(tmp_path, small_limits):
    from vaediag.logs.tail import Tail

    many_tags_run(tmp_path / "r", 500)
    tail = Tail(tmp_path / "r")
    frame = tail.poll()
    assert frame["tag"].nunique() == 103 and tail.meta.not_read_unmapped.tags == 400
    assert len(tail.unmapped_tags) == 100


@pytest.mark.slow
def test_tags_past_the_slot_table_decode_to_their_names(tmp_path):
    # More tags than the 65,536-slot table holds at half load: the table grows, every tag decodes to its name.
    from vaediag.logs.decode import TagRegistry
    from vaediag.logs.events import EventMeta
    from vaediag.logs.stream import FileCursor

    path = many_tags_run(tmp_path / "r", 40_000, fmt="x/{:06d}")
    reg = TagRegistry()
    rows = FileCursor(path).read(reg, EventMeta())
    assert len(reg) == 40_003 and len(reg._slots) >= 2 * len(reg)
    names = [reg.names[c] for c in rows.codes[-40_000:]]
    assert names == [f"x/{i:06d}" for i in range(40_000)]


@pytest.mark.slow
def test_the_scale_benchmark_runs_small(tmp_path):
    # `make bench`'s scale entry, at a size that takes seconds: it builds, checks and removes every tree.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-m", "bench", "scale", "--runs", "12", "--tags", "300", "--depth", "40"],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["bench"] == "scale" and last["runs"] == 12
    assert {"check header", "check zero", "check tags unmapped", "check tags loss", "check deep",
            "report deep"} <= set(last["results"])
    assert all(r.get("exit", 0) in (0, 1) for r in last["results"].values())
    assert "goal: check on 12 empty runs under 10 s wall" in out.stdout
