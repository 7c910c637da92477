"""Metrics logs that are not event files (vaediag/logs/sources.py): Lightning's metrics.csv, HF's
trainer_state.json, W&B-style CSV/JSONL exports. Same tidy frame as the event files of the same run, found in
mixed trees, damage counted (never a traceback), and tailed without misreading a half-written line.

The fixtures are the lineage generators' (tests/helpers/lineages: written as each library's own logging code writes).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vaediag
from lineages import write_hf_trainer, write_lightning, write_wandb_export
from lineages.lightning_csv import write_csv_logger
from tbwrite import epoch_map, write_run
from vaediag.errors import CorruptLogError, InputError, NoRunsError
from vaediag.logs import Tail
from vaediag.logs import sources as S

COLS = ["tag", "term", "split", "step", "epoch", "value"]


def load_both(path, **kw):
    """Load with both engines, check they agree exactly, return the numpy engine's RunSet."""
    a = vaediag.load(path, engine="numpy", **kw)
    b = vaediag.load(path, engine="python", **kw)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.warnings == b.warnings
    assert {r: (i.notes, i.warnings, i.source, i.source_line) for r, i in a.runs.items()} == {
        r: (i.notes, i.warnings, i.source, i.source_line) for r, i in b.runs.items()}
    return a


def plain(frame: pd.DataFrame, drop_tags=()) -> pd.DataFrame:
    f = frame[~frame["tag"].isin(drop_tags)]
    return pd.DataFrame({c: (f[c].astype(str) if c in ("tag", "term", "split") else f[c]) for c in COLS}).reset_index(
        drop=True)


# ------------------------------------------------------------------------------------------ same frame


def test_lightning_csv_reads_as_its_event_file(tmp_path):
    """The CSVLogger's metrics.csv and the TensorBoardLogger's event file of the same calls give the same rows:
    _step/_epoch pairs at their epochs, the unprefixed val tags read as val by cadence, the post-fit validate
    and test as other; wall_time is NaN (the CSV records none), hp_metric is TensorBoard's own."""
    tb = write_lightning(tmp_path / "tb", epochs=6)
    cv = write_lightning(tmp_path / "csv", epochs=6, logger="csv")
    a = load_both(tb.run_dir)
    b = load_both(cv.run_dir)
    pd.testing.assert_frame_equal(plain(a.frame, ["hp_metric"]), plain(b.frame))
    assert b.frame["wall_time"].isna().all()
    ra, rb = a.runs["version_0"], b.runs["version_0"]
    assert [n for n in rb.notes] == [n for n in ra.notes]  # the same conventions fired (cadence, post-fit)
    assert rb.source == "lightning_csv" and rb.source_files == [cv.run_dir / "metrics.csv"]
    assert rb.source_line == "read from metrics.csv (Lightning CSVLogger)" and ra.source_line == ""
    assert rb.hparams_yaml == ra.hparams_yaml and rb.param("beta") == 1.0  # hparams.yaml beside it
    assert not b.warnings and not rb.warnings


def test_hf_trainer_state_reads_as_its_event_file(tmp_path):
    """trainer_state.json's log_history under the names HF's TensorBoard callback gives them: same tags, steps,
    splits and (fractional) epochs; values equal up to the event file's float32; num_train_epochs a param."""
    tb = write_hf_trainer(tmp_path / "tb", epochs=5, steps_per_epoch=30)
    js = write_hf_trainer(tmp_path / "js", epochs=5, steps_per_epoch=30, tensorboard=False, trainer_state=True)
    a = load_both(tb.run_dir)
    b = load_both(tmp_path / "js")
    assert list(b.runs) == ["vae-out"]  # the output dir (its checkpoints belong to it): one run
    fa, fb = plain(a.frame), plain(b.frame)
    pd.testing.assert_frame_equal(fa.drop(columns="value"), fb.drop(columns="value"))
    np.testing.assert_allclose(fa["value"], fb["value"].astype(np.float32), rtol=0, atol=0)
    info = b.runs["vae-out"]
    assert info.source == "hf_trainer_state" and info.source_files == [js.notes["output_dir"] / "trainer_state.json"]
    assert info.log_params["num_train_epochs"] == 5 and info.param("num_train_epochs") == 5
    assert info.param("latent_dim") is None  # checkpoints' config.json is theirs, not the output dir's


def test_hf_output_without_save_state_reads_the_latest_checkpoint(tmp_path):
    js = write_hf_trainer(tmp_path, epochs=4, steps_per_epoch=20, tensorboard=False, trainer_state=True,
                          save_state=False)
    rs = load_both(js.notes["output_dir"])
    info = rs.runs["vae-out"]
    assert info.source_files == [js.notes["output_dir"] / "checkpoint-80" / "trainer_state.json"]
    assert info.source_line == "read from checkpoint-80/trainer_state.json (HF Trainer state)"
    assert rs.frame["step"].max() == 80 and "train/train_loss" not in set(rs.frame["tag"])  # the summary came later


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_wandb_exports_read_with_their_times(tmp_path, fmt):
    tr = write_wandb_export(tmp_path / "exp", fmt=fmt, epochs=4)
    rs = load_both(tr.run_dir)
    (info,) = rs.runs.values()
    assert info.run == "exp" and info.source == fmt
    f = rs.frame
    assert set(f["tag"]) == {"train/loss", "train/kl", "train/recon", "val/loss", "val/kl", "val/recon", "epoch"}
    val = f[f["tag"] == "val/kl"]
    assert val["split"].eq("val").all() and val["epoch"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert val["step"].tolist() == [r["_step"] for r in tr.notes["rows"] if "val/kl" in r]  # W&B's _step
    assert f["wall_time"].notna().all() and f["wall_time"].min() > 1.7e9  # _timestamp
    assert not rs.warnings and info.notes == []  # _runtime and pandas' index column are bookkeeping, not text


def test_an_export_prefers_the_trainer_step_to_wandbs_counter(tmp_path):
    tr = write_wandb_export(tmp_path / "exp", epochs=3, steps_per_epoch=20, log_every=5,
                            global_step_key="trainer/global_step")
    rs = load_both(tr.run_dir)
    val = rs.frame[rs.frame["tag"] == "val/kl"]
    assert val["step"].tolist() == [19, 39, 59]
    assert "trainer/global_step" not in set(rs.frame["tag"])


def test_timestamps_in_milliseconds_are_seconds(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "m.csv").write_text("step,timestamp,val/kl\n0,1700000000000,3.0\n1,1700000001500,2.0\n")
    f = load_both(tmp_path / "r").frame
    assert f["wall_time"].tolist() == [1.7e9, 1.7e9 + 1.5]


# ------------------------------------------------------------------------------------------ discovery


def test_mixed_tree(tmp_path):
    """Event runs, a CSVLogger run, an HF output dir, an export directory, a folder of several exports, and
    CSVs that are not metrics logs (no step column, nothing a term names) in one tree."""
    root = tmp_path / "logs"
    write_run(root / "tb" / "version_0", {"val/kl": [(9, 3.0), (19, 2.0)]}, epochs=epoch_map(2))
    write_lightning(root / "pl", epochs=3, steps_per_epoch=20, logger="csv")
    write_hf_trainer(root / "hf", epochs=2, steps_per_epoch=20, tensorboard=False, trainer_state=True)
    write_wandb_export(root / "wandb", epochs=2)
    write_wandb_export(root / "sweep", name="a", epochs=2)
    write_wandb_export(root / "sweep", name="b", fmt="jsonl", epochs=2)
    (root / "data").mkdir()
    (root / "data" / "labels.csv").write_text("image,label\nx.png,3\n")
    (root / "data" / "table.csv").write_text("step,colour\n0,red\n")  # a step column but no metric
    rs = load_both(root)
    assert sorted(rs.runs) == ["hf/vae-out", "pl/lightning_logs/version_0", "sweep/a.csv", "sweep/b.jsonl",
                               "tb/version_0", "wandb"]
    kinds = {r: i.source for r, i in rs.runs.items()}
    assert kinds == {"hf/vae-out": "hf_trainer_state", "pl/lightning_logs/version_0": "lightning_csv",
                     "sweep/a.csv": "csv", "sweep/b.jsonl": "jsonl", "tb/version_0": "tensorboard", "wandb": "csv"}
    assert not rs.warnings and not rs.orphans


def test_event_files_win_over_a_metrics_log_in_the_same_directory(tmp_path):
    """Two Lightning loggers given the same save_dir write version_0/ together: the event files are read, the
    metrics.csv is named as not read (no run is counted twice)."""
    tr = write_lightning(tmp_path, epochs=3, steps_per_epoch=20)
    write_csv_logger(tr.run_dir, [({"val/kl": 3.0, "epoch": 0}, 19)])
    rs = load_both(tmp_path)
    (info,) = rs.runs.values()
    assert info.source == "tensorboard" and info.not_read == [tr.run_dir / "metrics.csv"]
    assert info.source_line == "not read: metrics.csv (the run's event files are read)"


def test_an_hf_output_dir_with_tensorboard_runs_is_read_once(tmp_path):
    """report_to=tensorboard writes <output_dir>/runs/<date>_<host>/events...; save_state and the checkpoints
    write trainer_state.json with the same logs: the event files are read, the state file is named."""
    tr = write_hf_trainer(tmp_path, epochs=3, steps_per_epoch=20, trainer_state=True)
    rs = load_both(tmp_path)
    assert list(rs.runs) == ["vae-out/runs/Mar01_12-00-00_host"]
    info = rs.runs["vae-out/runs/Mar01_12-00-00_host"]
    assert info.not_read == [tr.notes["output_dir"] / "trainer_state.json"]
    assert info.source_line == "not read: ../../trainer_state.json (the run's event files are read)"
    assert len(load_both(tr.notes["output_dir"] / "trainer_state.json").frame) == len(rs.frame)  # by name: read


def test_a_log_given_by_name(tmp_path):
    tr = write_lightning(tmp_path, epochs=3, steps_per_epoch=20, logger="csv")
    rs = load_both(tr.run_dir / "metrics.csv")
    assert list(rs.runs) == ["version_0"] and rs.runs["version_0"].hparams_yaml  # its run directory's metadata
    js = write_hf_trainer(tmp_path / "hf", epochs=2, steps_per_epoch=20, tensorboard=False, trainer_state=True)
    assert len(load_both(js.notes["output_dir"] / "checkpoint-20" / "trainer_state.json").frame)
    with pytest.raises(InputError, match=r"is not a TensorBoard event file; give its directory"):
        vaediag.load(_write(tmp_path / "notes.txt", "x"))


def test_a_folder_of_unrelated_files_is_no_run(tmp_path):
    (tmp_path / "labels.csv").write_text("image,label\nx.png,3\n")
    (tmp_path / "notes.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(NoRunsError, match=r"no TensorBoard event files under .*, and no metrics log"):
        vaediag.load(tmp_path)


def test_run_logs_follows_discover(tmp_path):
    from vaediag.logs.discover import run_logs

    js = write_hf_trainer(tmp_path, epochs=3, steps_per_epoch=20, tensorboard=False, trainer_state=True,
                          save_state=False)
    events, src = run_logs(js.notes["output_dir"])
    assert events == [] and src.path == js.notes["output_dir"] / "checkpoint-60" / "trainer_state.json"


# ------------------------------------------------------------------------------------------ damage


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


HEAD = "epoch,step,train/kl_step,val/kl\r\n"


def test_truncated_last_line_is_counted_not_read(tmp_path):
    _write(tmp_path / "r" / "metrics.csv", HEAD + "0,9,3.5,\r\n0,9,,2.5\r\n1,19,3.1")
    rs = load_both(tmp_path / "r")
    assert len(rs.frame) == 3  # epoch x2, train/kl_step, val/kl: the cut row is not read
    assert set(rs.frame["step"]) == {9}
    assert rs.warnings == ["r: metrics.csv: last line incomplete, 8 bytes ignored (a file still being written, or a "
                           "crash)"]


def test_rows_of_the_wrong_width_and_cells_that_are_not_numbers(tmp_path):
    _write(tmp_path / "r" / "metrics.csv",
           HEAD + "0,9,3.5,\r\n0,9,3.5\r\n0,19,oops,\r\n0,19,,2.5,7\r\n1,29,nan,\r\n1,39,NaN,\r\n1,49,inf,-Infinity\r\n"
           "1,,3.0,\r\n")
    rs = load_both(tmp_path / "r")
    f = rs.frame[rs.frame["tag"] == "train/kl_step"]
    assert f["step"].tolist() == [9, 29, 39, 49]
    v = f["value"].to_numpy()
    assert v[0] == 3.5 and np.isnan(v[1]) and np.isnan(v[2]) and v[3] == np.inf  # NaN strings are values
    assert rs.frame[rs.frame["tag"] == "val/kl"]["value"].tolist() == [-np.inf]
    assert rs.warnings == [
        "r: metrics.csv: 2 rows with the wrong number of fields skipped (first at line 3)",
        "r: metrics.csv: 1 row without a whole-number step skipped (first at line 9)",
        "r: metrics.csv: 1 value that is not a number skipped (first in 'train/kl_step' at line 4)",
    ]


def test_text_columns_are_named_not_read(tmp_path):
    _write(tmp_path / "r" / "h.csv", "step,run_name,val/kl\n0,alpha,3.0\n1,alpha,2.0\n")
    rs = load_both(tmp_path / "r")
    assert set(rs.frame["tag"]) == {"val/kl"} and not rs.warnings
    assert rs.runs["r"].notes == ["h.csv: column without numbers ignored: 'run_name'"]


def test_bytes_that_are_not_utf8_are_replaced_and_said(tmp_path):
    _write(tmp_path / "r" / "metrics.csv", HEAD.encode() + b"0,9,3.5,\r\n0,19,\xff\xfe,\r\n0,29,3.0,\r\n")
    rs = load_both(tmp_path / "r")
    assert rs.frame[rs.frame["tag"] == "train/kl_step"]["step"].tolist() == [9, 29]
    assert rs.warnings[0] == ("r: metrics.csv: not UTF-8 text from byte 48; undecodable bytes replaced (cells that "
                              "are no longer numbers are skipped)")


@pytest.mark.parametrize("make, why", [
    (lambda p: _write(p, "a,b\n1,2\n"), r"no step column in its header \('a', 'b'; vaediag looks for trainer/global_step"),
    (lambda p: os.mkfifo(p), r"a FIFO \(named pipe\), not a regular file$"),
    (lambda p: p.symlink_to("/dev/zero"), r"a character device, not a regular file$"),
    (lambda p: _sparse(p, S.MAX_SOURCE_BYTES + 1), r"268,435,457 bytes; vaediag reads metrics logs of at most 268,435,456"),
], ids=["no-step-column", "fifo", "dev-zero", "huge"])
def test_a_metrics_csv_that_cannot_be_read(tmp_path, make, why):
    """The only input: one CorruptLogError line (exit 2). Beside a readable run: that run's warning, skipped.
    Never blocks on a FIFO, never reads a huge file."""
    bad = tmp_path / "logs" / "bad"
    bad.mkdir(parents=True)
    make(bad / "metrics.csv")
    with pytest.raises(CorruptLogError, match=r"^cannot read metrics log .*bad/metrics\.csv: " + why):
        vaediag.load(bad)
    write_lightning(tmp_path / "logs" / "good", epochs=2, steps_per_epoch=20, logger="csv")
    rs = load_both(tmp_path / "logs")
    assert list(rs.runs) == ["good/lightning_logs/version_0"]
    assert len(rs.warnings) == 1 and rs.warnings[0].startswith("bad: cannot read metrics log ")
    assert rs.warnings[0].endswith("; run skipped")


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as fh:
        fh.write(b"step,val/kl\n")
        fh.truncate(size)
    return path


@pytest.mark.parametrize("text, why", [
    ('{"log_history": [{"loss": 1.0, "step": 1}', r"not valid JSON \(.*\); a save cut short\?"),
    ('{"global_step": 3}', r"no log_history list in it"),
])
def test_a_trainer_state_that_cannot_be_read(tmp_path, text, why):
    _write(tmp_path / "out" / "trainer_state.json", text)
    with pytest.raises(CorruptLogError, match=r"^cannot read metrics log .*trainer_state\.json: " + why):
        vaediag.load(tmp_path / "out")


def test_trainer_state_with_nan_and_odd_entries(tmp_path):
    doc = '{"log_history": [{"loss": NaN, "epoch": 0.5, "step": 5}, 7, {"eval_loss": 1.5, "epoch": 1.0, "step": 10},' \
          ' {"loss": 2.0, "epoch": 1.5}], "num_train_epochs": 2}'
    _write(tmp_path / "out" / "trainer_state.json", doc)
    rs = load_both(tmp_path / "out")
    f = rs.frame
    assert np.isnan(f[f["tag"] == "train/loss"]["value"]).all()
    assert f[f["tag"] == "eval/loss"][["split", "epoch"]].values.tolist() == [["val", 0.0]]
    assert rs.warnings == ["out: trainer_state.json: 1 log_history entry that is not an object skipped (first at "
                           "entry 1)",
                           "out: trainer_state.json: 1 row without a whole-number step skipped (first at entry 3)"]


def test_jsonl_lines_that_are_not_objects(tmp_path):
    _write(tmp_path / "r" / "h.jsonl", '{"_step": 0, "val/kl": 3.0}\n[1, 2]\nnot json\n{"_step": 1, "val/kl": "NaN"}\n'
                                       '{"_step": 2, "val/kl": 1.0')
    rs = load_both(tmp_path / "r")
    v = rs.frame[rs.frame["tag"] == "val/kl"]
    assert v["step"].tolist() == [0, 1] and v["value"].iloc[0] == 3.0 and np.isnan(v["value"].iloc[1])
    assert rs.warnings == ["r: h.jsonl: 2 lines that are not a JSON object skipped (first at line 2)",
                           "r: h.jsonl: last line incomplete, 26 bytes ignored (a file still being written, or a crash)"]


def test_empty_and_header_only_logs_are_runs_without_scalars(tmp_path):
    _write(tmp_path / "a" / "metrics.csv", "")
    _write(tmp_path / "b" / "metrics.csv", HEAD)
    rs = load_both(tmp_path)
    assert sorted(rs.runs) == ["a", "b"] and rs.frame.empty and not rs.warnings
    assert all(i.n_scalars == 0 for i in rs.runs.values())


def test_tags_past_the_limit_are_counted(tmp_path, monkeypatch):
    from vaediag.logs import decode

    monkeypatch.setattr(decode, "MAX_UNMAPPED_TAGS", 3)
    cols = [f"sample_{i}" for i in range(6)]
    _write(tmp_path / "r" / "m.csv", "step,val/kl," + ",".join(cols) + "\n" +
           "".join(f"{s},{s}.5," + ",".join("1" for _ in cols) + "\n" for s in range(4)))
    rs = vaediag.load(tmp_path / "r")
    info = rs.runs["r"]
    assert len(info.unmapped_tags) == 3 and info.unmapped_not_read == 3 and info.scalars_not_read == 12
    assert len(rs.frame[rs.frame["tag"] == "val/kl"]) == 4


# ------------------------------------------------------------------------------------------ tail


def _tail_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The polls' rows as one frame, keeping the latest row per (tag, step) as a whole-file read does (a step
    that holds several log calls, e.g. Lightning's epoch value at the val step, comes in several polls)."""
    f = plain(pd.concat([p for p in parts if len(p)], ignore_index=True))
    f = f.drop_duplicates(["tag", "step"], keep="last")
    return f.sort_values(["tag", "step", "epoch"], kind="stable", ignore_index=True)


def test_tail_of_a_csvlogger_run_returns_each_row_once(tmp_path):
    """Polled after every save of a real-layout CSVLogger (each save appends; a save with a new key rewrites
    the whole file): every row comes back exactly once, with the whole-file read's epochs and splits."""
    tr = write_lightning(tmp_path / "ref", epochs=4, steps_per_epoch=20, logger="csv")
    whole = plain(vaediag.load(tr.run_dir).frame).sort_values(["tag", "step", "epoch"], kind="stable",
                                                               ignore_index=True)
    rows = list(_csv_calls(tr.notes["log_file"]))
    run = tmp_path / "live" / "version_0"
    tail = Tail(run)
    assert tail.poll().empty and tail.files() == []
    parts = []
    write_csv_logger(run, rows, after_save=lambda p: parts.append(tail.poll()))
    parts.append(tail.poll())
    assert tail.files() == [run / "metrics.csv"] and tail.source_label == "Lightning CSVLogger"
    got = _tail_frame(parts)
    pd.testing.assert_frame_equal(got.drop(columns="split"), whole.drop(columns="split"))
    assert not tail.warnings


def _csv_calls(path: Path):
    import csv

    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            step = int(r.pop("step"))
            yield {k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if v != ""}, step


def test_tail_holds_back_a_half_written_line(tmp_path):
    run = tmp_path / "r"
    path = _write(run / "metrics.csv", HEAD)
    tail = Tail(run)
    assert tail.poll().empty
    with open(path, "a", newline="") as fh:
        for piece in ("0,9", ",3.", "25,\r"):  # "0,9,3." would read as 3.0; "...25,\r" lacks its \n
            fh.write(piece)
            fh.flush()
            assert tail.poll().empty, piece
        fh.write("\n")
    f = tail.poll()
    assert f[f["tag"] == "train/kl_step"]["value"].tolist() == [3.25]
    assert tail.poll().empty  # nothing twice


def test_tail_of_an_hf_run_follows_its_checkpoints(tmp_path):
    """Checkpoints appear (and old ones go) while the run trains: each poll returns the new log_history
    entries of the latest state file; a state file caught half-written returns nothing until it is whole."""
    ref = write_hf_trainer(tmp_path / "ref", epochs=4, steps_per_epoch=20, tensorboard=False, trainer_state=True)
    whole = plain(vaediag.load(ref.notes["output_dir"]).frame).sort_values(["tag", "step", "epoch"], kind="stable",
                                                                          ignore_index=True)
    state = json.loads((ref.notes["output_dir"] / "trainer_state.json").read_text())
    hist = state["log_history"]
    out = tmp_path / "live" / "vae-out"
    tail = Tail(out)
    parts = [tail.poll()]
    cuts = [i + 1 for i, h in enumerate(hist) if "eval_loss" in h] + [len(hist)]
    for n, k in enumerate(cuts):
        text = json.dumps({**state, "log_history": hist[:k]}, indent=2, sort_keys=True) + "\n"
        where = out / (f"checkpoint-{hist[k - 1]['step']}" if n < len(cuts) - 1 else ".") / "trainer_state.json"
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text(text[: len(text) // 2])  # a save in progress
        assert tail.poll().empty
        where.write_text(text)
        parts.append(tail.poll())
    got = _tail_frame(parts)
    pd.testing.assert_frame_equal(got.drop(columns="split"), whole.drop(columns="split"))
    assert not tail.warnings


def test_tail_of_a_log_that_is_not_one_says_so_once(tmp_path):
    _write(tmp_path / "r" / "metrics.csv", "a,b\n1,2\n")
    tail = Tail(tmp_path / "r")
    assert tail.poll().empty and tail.poll().empty
    assert len(tail.warnings) == 1 and "no step column" in tail.warnings[0]


def test_tail_never_blocks_on_a_fifo(tmp_path):
    (tmp_path / "r").mkdir()
    os.mkfifo(tmp_path / "r" / "metrics.csv")
    done = threading.Event()

    def poll():
        Tail(tmp_path / "r").poll()
        done.set()

    threading.Thread(target=poll, daemon=True).start()
    assert done.wait(10)


def test_committed_source_fixtures_are_what_the_generators_write(tmp_path):
    """tests/fixtures/sources (the README's example of logs that are not event files) is regenerated by
    tests/helpers/lineages/source_fixtures.py: the committed bytes are exactly what it writes."""
    from lineages.source_fixtures import write_all

    committed = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
    fresh = write_all(tmp_path / "sources")
    files = lambda root: {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(committed) - {"README.md"} == files(fresh)
    for rel in files(fresh):
        assert (committed / rel).read_bytes() == (fresh / rel).read_bytes(), rel
    rs = load_both(committed)
    assert sorted((r, i.source) for r, i in rs.runs.items()) == [
        ("hf/vae-out", "hf_trainer_state"), ("lightning/lightning_logs/version_0", "lightning_csv"), ("wandb", "csv")]


def test_pieces_and_batches_read_as_the_whole(tmp_path, monkeypatch):
    """A file is read a piece at a time (TAIL_CHUNK bytes, cut at the last newline) and its rows converted a
    batch at a time, whatever its size: tiny pieces and batches give the frame of one piece."""
    for fmt in ("csv", "jsonl"):
        tr = write_wandb_export(tmp_path / fmt, fmt=fmt, epochs=3)
        whole = vaediag.load(tr.run_dir).frame
        with monkeypatch.context() as m:
            m.setattr(S, "TAIL_CHUNK", 300)  # longer than a line, a small part of the file
            m.setattr(S, "_BATCH_ROWS", 2)
            rs = vaediag.load(tr.run_dir)
        pd.testing.assert_frame_equal(rs.frame, whole)
        assert not rs.warnings


def test_a_line_longer_than_a_piece_is_skipped_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "TAIL_CHUNK", 64)
    _write(tmp_path / "r" / "m.csv", "step,val/kl\n0,1.0\n1," + "9" * 200 + ",1\n2,3.0\n3,4.0\n")
    rs = vaediag.load(tmp_path / "r")
    assert rs.frame["step"].tolist() == [0, 2, 3]
    assert rs.warnings == ["r: m.csv: 1 line(s) longer than 64 bytes skipped"]
