"""Directory layouts and event-file contents that real TensorBoard trees have, each checked with both
engines and (where tbparse reads the same data) against tbparse."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import vaediag
from logs_helpers import (
    frame_rows,
    hparams_event,
    scalar_event,
    tbparse_rows,
    tensor_scalar_event,
    text_event,
    write_raw,
)
from tbwrite import epoch_map, write_run
from vaediag.errors import InputError, NoRunsError

ENGINES = ["numpy", "python"]


def load_both(path, **kw):
    """Load with both engines, check they agree exactly, return the numpy engine's RunSet."""
    a = vaediag.load(path, engine="numpy", **kw)
    b = vaediag.load(path, engine="python", **kw)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.warnings == b.warnings
    assert {r: (i.notes, i.warnings, i.hparams, i.texts) for r, i in a.runs.items()} == {
        r: (i.notes, i.warnings, i.hparams, i.texts) for r, i in b.runs.items()
    }
    return a


def test_lightning_tree_with_metadata(tmp_path):
    root = tmp_path / "logs"
    for v in range(3):
        write_run(
            root / "ear_vae" / f"version_{v}",
            {"train/kl": [(s, 100.0 + s) for s in range(20)], "val/psnr": [(9, 20.0), (19, 22.0)]},
            epochs=epoch_map(2),
            hparams_yaml={"kl_weight": 1e-5 * (v + 1), "model": {"latent_dim": 128}},
            config={"kl_weight": 1e-7, "loss": {"w_l1": 1.0}},
        )
    rs = load_both(root)
    assert sorted(rs.runs) == [f"ear_vae/version_{v}" for v in range(3)]
    info = rs.runs["ear_vae/version_1"]
    assert info.hparams_yaml == {"kl_weight": 2e-5, "model": {"latent_dim": 128}}
    assert info.config == {"kl_weight": 1e-7, "loss": {"w_l1": 1.0}}
    assert info.param("kl_weight") == 1e-7  # config.json wins over hparams.yaml
    assert info.param("latent_dim") == 128 and info.params["model.latent_dim"] == 128
    assert info.param("nope", "w_l1") == 1.0
    assert len(rs.frame) == 3 * (20 + 2 + 20)
    assert set(rs.frame["epoch"]) == {0.0, 1.0}


def test_testtube_tf_folder_belongs_to_its_version(tmp_path):
    root = tmp_path / "default"
    write_run(root / "version_0" / "tf", {"loss": [(0, 1.0), (1, 0.5)]})
    (root / "version_0" / "meta_tags.csv").write_text("key,value\n")
    write_run(root / "version_1" / "tf", {"loss": [(0, 2.0)]})
    rs = load_both(root)
    assert sorted(rs.runs) == ["version_0", "version_1"]
    assert rs.runs["version_0"].path == root / "version_0"
    assert rs.run_frame("version_0")["value"].tolist() == [1.0, 0.5]


def test_plain_runs_folder_with_many_event_files(tmp_path):
    run = tmp_path / "runs" / "Nov24_exp"
    for i in range(5):  # five sessions into one folder, steps continuing
        write_run(run, {"Loss/train": [(i * 10 + s, float(i * 10 + s)) for s in range(10)]}, t0=1.7e9 + i * 100,
                  suffix=f".{i}")
    rs = load_both(tmp_path / "runs")
    assert list(rs.runs) == ["Nov24_exp"]
    assert len(rs.runs["Nov24_exp"].event_files) == 5
    f = rs.run_frame("Nov24_exp")
    assert f["step"].tolist() == list(range(50)) and f["value"].tolist() == [float(s) for s in range(50)]
    assert set(f["term"].astype(str)) == {"loss"} and set(f["split"].astype(str)) == {"train"}
    pd.testing.assert_frame_equal(
        frame_rows(rs.frame).drop(columns="run"),
        tbparse_rows(tmp_path / "runs").drop(columns="dir_name"),
        check_dtype=False,
    )


def test_resumed_run_latest_wall_time_wins(tmp_path):
    run = tmp_path / "version_0"
    write_run(run, {"train/kl": [(s, 1.0) for s in range(10)]}, t0=1.7e9, suffix=".a")
    write_run(run, {"train/kl": [(s, 2.0) for s in range(5, 15)]}, t0=1.7e9 + 1000, suffix=".b")
    rs = load_both(tmp_path)
    f = rs.run_frame("version_0")
    assert f["step"].tolist() == list(range(15))
    assert f["value"].tolist() == [1.0] * 5 + [2.0] * 10
    assert rs.runs["version_0"].n_scalars == 20


def test_resumed_run_older_file_written_later_in_name_order(tmp_path):
    # File order and time order disagree: the value with the latest wall_time still wins.
    run = tmp_path / "r"
    write_raw(run, [scalar_event("kl", 3, 5.0, 2000.0)], name="events.out.tfevents.1.a")
    write_raw(run, [scalar_event("kl", 3, 7.0, 1000.0)], name="events.out.tfevents.2.b")
    f = load_both(tmp_path).run_frame("r")
    assert f["value"].tolist() == [5.0]


@pytest.mark.parametrize("double", [False, True])
def test_tf2_tensor_scalars(tmp_path, double):
    write_run(tmp_path / "tf2", {"val/psnr": [(0, 20.5), (1, 21.25)], "kl": [(0, -3.0), (1, -4.0)]},
              tensor_scalars=True)
    if double:
        write_raw(tmp_path / "tf2", [tensor_scalar_event("val/ssim", 1, 0.123456789012, 1.8e9, double=True)],
                  name="events.out.tfevents.9.host.2.0")
    f = load_both(tmp_path).frame
    assert f.query("tag == 'val/psnr'")["value"].tolist() == [20.5, 21.25]
    assert f.query("tag == 'kl'")["value"].tolist() == [3.0, 4.0]  # -KL, flipped
    if double:
        assert f.query("tag == 'val/ssim'")["value"].tolist() == [0.123456789012]  # double kept exactly


def test_add_hparams_subdirectory_belongs_to_parent(tmp_path):
    run = tmp_path / "runs" / "exp1"
    write_run(run, {"loss": [(0, 1.0)]})
    write_raw(run / "1702448066.1234", [hparams_event({"lr": 0.01, "kl_weight": 1e-5, "opt": "adam", "ae": True}),
                                        scalar_event("hp/val_loss", 0, 0.7, 1.7e9)])
    rs = load_both(tmp_path / "runs")
    assert list(rs.runs) == ["exp1"]
    info = rs.runs["exp1"]
    assert info.hparams == {"lr": 0.01, "kl_weight": 1e-5, "opt": "adam", "ae": True}
    assert info.param("kl_weight") == 1e-5
    assert sorted(rs.frame["tag"].astype(str)) == ["hp/val_loss", "loss"]


def test_text_summaries_are_metadata(tmp_path):
    write_raw(tmp_path / "r", [text_event("meta/perceptual_backbone", "vgg16 (stlpips)"), scalar_event("loss", 0, 1.0, 1.7e9)])
    rs = load_both(tmp_path)
    assert rs.runs["r"].texts == {"meta/perceptual_backbone": "vgg16 (stlpips)"}
    assert len(rs.frame) == 1


def test_several_values_in_one_summary(tmp_path):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    vals = [summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in [("a", 1.0), ("b", 2.0), ("c", 3.0)]]
    ev = event_pb2.Event(wall_time=1.7e9, step=4, summary=summary_pb2.Summary(value=vals))
    write_raw(tmp_path / "r", [scalar_event("a", 3, 0.5, 1.6e9), ev, scalar_event("a", 5, 0.25, 1.8e9)])
    f = load_both(tmp_path).frame
    assert list(zip(f["tag"].astype(str), f["step"], f["value"])) == [
        ("a", 3, 0.5), ("a", 4, 1.0), ("a", 5, 0.25), ("b", 4, 2.0), ("c", 4, 3.0)
    ]


@pytest.mark.parametrize(
    "tag", ["", "x", "a" * 8, "a" * 9, "val/ünïcode_κλ", "t" * 120, "t" * 127, "t" * 200, "with space/and\ttab"]
)
@pytest.mark.parametrize("step", [0, 1, 127, 128, 2**21, 2**35, 2**49 - 1, 2**49, 2**62, -1, -(2**40)])
def test_tags_and_steps_of_every_width(tmp_path, tag, step):
    write_raw(tmp_path / "r", [scalar_event(tag, step, 1.5, 1.7e9 + 1), scalar_event("other", step, 2.5, 1.7e9 + 2)])
    f = load_both(tmp_path).frame
    got = f[f["tag"] == tag]
    assert got["step"].tolist() == [step] and got["value"].tolist() == [1.5] and got["wall_time"].tolist() == [1.7e9 + 1]


def test_nested_projects(tmp_path):
    for rel in ["proj_a/vae/version_0", "proj_a/vae/version_1", "proj_a/beta/version_0", "proj_b/run1", "proj_b/deep/er/run2"]:
        write_run(tmp_path / rel, {"loss": [(0, 1.0)]})
    rs = load_both(tmp_path)
    assert sorted(rs.runs) == sorted(
        ["proj_a/vae/version_0", "proj_a/vae/version_1", "proj_a/beta/version_0", "proj_b/run1", "proj_b/deep/er/run2"]
    )
    sub = vaediag.load(tmp_path, run_glob="proj_a/vae/*")
    assert sorted(sub.runs) == ["proj_a/vae/version_0", "proj_a/vae/version_1"]


@pytest.mark.slow
def test_a_thousand_small_runs(tmp_path):
    root = tmp_path / "sweep"
    for i in range(1000):
        write_raw(root / f"trial_{i:04d}", [scalar_event("loss", s, float(i + s), 1.7e9 + s) for s in range(3)]
                  + [scalar_event(f"val_metric_{i % 7}", 2, float(i), 1.7e9 + 3)])
    rs = vaediag.load(root)
    assert len(rs.runs) == 1000 and len(rs.frame) == 4000
    assert rs.run_frame("trial_0420")["value"].tolist() == [420.0, 421.0, 422.0, 420.0]
    pd.testing.assert_frame_equal(rs.frame, vaediag.load(root, engine="python").frame)


def test_non_event_files_are_ignored(tmp_path):
    write_run(tmp_path / "r", {"loss": [(0, 1.0)]})
    (tmp_path / "r" / "events.txt").write_text("not events")
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"\0" * 100)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.md").write_text("hi")
    rs = load_both(tmp_path)
    assert list(rs.runs) == ["r"] and not rs.warnings


def test_checkpoints_folder_inside_a_run_is_not_a_run(tmp_path):
    # python -m train (and Lightning) keep checkpoints beside the run, in version_N/checkpoints/: no event
    # files there, so it is neither a run nor an orphan, and its (big) files are never opened.
    from vaediag.logs import Tail
    from vaediag.logs.discover import discover

    project = tmp_path / "logs" / "proj"
    run = project / "run" / "version_0"
    write_run(run, {"train/loss": [(0, 1.0), (1, 0.5)]}, config={"kl_weight": 1e-7})
    died = project / "run" / "version_1"  # a run that stopped before its first event, checkpoints/ made
    for d in (run, died):
        (d / "checkpoints").mkdir(parents=True)
        with open(d / "checkpoints" / "last.pt", "wb") as fh:
            fh.truncate(3 << 30)  # 3 GiB, sparse: reading it would take long and show up
        (d / "checkpoints" / "epoch=1-step=10.ckpt").write_bytes(b"PK\x03\x04")
    (died / "config.json").write_text("{}")
    root, runs, orphans = discover(project)
    assert [r.run for r in runs] == ["run/version_0"] and orphans == [died]
    assert [f.parent for f in runs[0].event_files] == [run]
    for path in (project, run):
        rs = load_both(path)
        assert len(rs.runs) == 1 and len(rs.frame) == 2
        assert not any("checkpoints" in w for w in rs.warnings), rs.warnings
    assert [f.parent for f in Tail(run).event_files()] == [run]


def test_a_single_event_file_path(tmp_path):
    p = write_run(tmp_path / "version_3", {"loss": [(0, 1.0), (1, 2.0)]})
    rs = vaediag.load(p)
    assert list(rs.runs) == ["version_3"] and len(rs.frame) == 2


def test_orphan_run_folder(tmp_path):
    write_run(tmp_path / "version_0", {"loss": [(0, 1.0)]})
    (tmp_path / "version_1").mkdir()
    (tmp_path / "version_1" / "hparams.yaml").write_text("lr: 0.1\n")
    (tmp_path / "version_2").mkdir()
    (tmp_path / "version_2" / "config.json").write_text(json.dumps({"kl_weight": 1}))
    rs = load_both(tmp_path)
    assert rs.orphans == [tmp_path / "version_1", tmp_path / "version_2"]
    assert any("version_1: run metadata but no event file" in w for w in rs.warnings)


def test_unreadable_metadata_is_a_warning(tmp_path):
    write_run(tmp_path / "r", {"loss": [(0, 1.0)]})
    (tmp_path / "r" / "hparams.yaml").write_text("a: [unclosed\n")
    (tmp_path / "r" / "config.json").write_text("{not json")
    rs = load_both(tmp_path)
    w = rs.runs["r"].warnings
    assert any("hparams.yaml unreadable" in x for x in w) and any("config.json unreadable" in x for x in w)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda p: p / "missing", InputError, r"does not exist; give a run directory"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", InputError, r"is not a TensorBoard event file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", NoRunsError, r"no TensorBoard event files under .*empty"),
    ],
    ids=["missing", "file", "empty-dir"],
)
def test_bad_paths(tmp_path, make, exc, match):
    with pytest.raises(exc, match=match):
        vaediag.load(make(tmp_path))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"run_glob": "nope*"}, r"--run 'nope\*' matches no run \(runs: r\)"),
        ({"steps_per_epoch": 0}, r"steps per epoch must be a positive integer, got 0"),
        ({"engine": "rust"}, r"unknown reader engine 'rust' \(choose numpy, python\)"),
        ({"tags": "/nonexistent/tags.toml"}, r"tags file '/nonexistent/tags.toml' does not exist"),
    ],
)
def test_bad_options(tmp_path, kw, match):
    write_run(tmp_path / "r", {"loss": [(0, 1.0)]})
    with pytest.raises(InputError, match=match):
        vaediag.load(tmp_path, **kw)


def test_unreadable_directory_is_skipped(tmp_path):
    import os

    write_run(tmp_path / "a", {"loss": [(0, 1.0)]})
    locked = tmp_path / "b"
    write_run(locked, {"loss": [(0, 1.0)]})
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    locked.chmod(0)
    try:
        assert list(vaediag.load(tmp_path).runs) == ["a"]
    finally:
        locked.chmod(0o755)


def test_values_nonfinite_are_kept(tmp_path):
    write_raw(tmp_path / "r", [scalar_event("kl", s, v, 1.7e9 + s) for s, v in enumerate([1.0, np.nan, np.inf, -np.inf])])
    f = load_both(tmp_path).frame
    v = f["value"].to_numpy()
    assert v[0] == 1.0 and np.isnan(v[1]) and v[2] == np.inf and v[3] == -np.inf


def test_mixed_tree_same_rows_as_tbparse(tmp_path):
    """Lightning, TestTube (tf/) and plain runs/ layouts side by side: tbparse's rows, our run ids."""
    root = tmp_path / "mixed"
    rng = np.random.default_rng(5)
    for v in range(2):
        write_run(root / "lightning_logs" / f"version_{v}",
                  {"KLD": [(s, float(-rng.random())) for s in range(0, 500, 50)],
                   "val_loss": [(s, float(rng.random())) for s in (99, 199, 299)]},
                  epochs={s: s // 100 for s in range(0, 500, 50)})
    write_run(root / "default" / "version_0" / "tf", {"loss": [(s, float(s)) for s in range(30)]})
    for i in range(3):
        write_run(root / "runs" / "exp", {"Loss/train": [(i * 10 + s, float(rng.random())) for s in range(10)]},
                  t0=1.7e9 + 100 * i, suffix=f".{i}")
    rs = load_both(root)
    assert sorted(rs.runs) == ["default/version_0", "lightning_logs/version_0", "lightning_logs/version_1", "runs/exp"]
    ours = frame_rows(rs.frame)
    kl = ours["tag"] == "KLD"
    ours.loc[kl, "value"] = -ours.loc[kl, "value"]  # flipped by our sign rule; tbparse keeps the logged sign
    ref = tbparse_rows(root)
    ref["dir_name"] = ref["dir_name"].str.replace(r"/tf$", "", regex=True)
    ref = ref.rename(columns={"dir_name": "run"}).sort_values(["run", "tag", "step"], ignore_index=True)
    pd.testing.assert_frame_equal(ours, ref, check_dtype=False)


def test_an_event_file_that_is_a_fifo_is_not_read(tmp_path):
    import os

    write_run(tmp_path / "r", {"loss": [(0, 1.0)]})
    os.mkfifo(tmp_path / "r" / "events.out.tfevents.9.fifo")  # opening it for reading would block forever
    rs = load_both(tmp_path)
    assert len(rs.frame) == 1
    assert any("events.out.tfevents.9.fifo" in w and "not a regular file" in w for w in rs.warnings)


@pytest.mark.slow
def test_many_distinct_tags(tmp_path):
    write_raw(tmp_path / "r", [scalar_event(f"sweep/metric_{i:05d}", i % 7, float(i), 1.7e9 + i) for i in range(20000)])
    rs = load_both(tmp_path)
    assert rs.frame["tag"].nunique() == 20000 and len(rs.frame) == 20000
