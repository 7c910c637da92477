"""`vaediag watch --follow` on runs logged without event files: Lightning's metrics.csv (appended while the
watchdog follows) and HF's trainer_state.json decide as the same run's event file does."""

from __future__ import annotations

import threading
from pathlib import Path

from lineages import write_hf_trainer, write_lightning
from lineages.lightning_csv import write_csv_logger
from vaediag.watch import supervisor as sup
from vaediag.watch.journal import read_journal
from vaediag.watch.policies import make_policy


def _decisions(run_dir: Path) -> list[tuple]:
    return [(r["epoch"], r["action"], r.get("kl_weight"), r.get("replayed", False))
            for r in read_journal(run_dir) if r["event"] == "decision"]


def _follow(run_dir: Path, **kw) -> int:
    policy = make_policy("ladder", kl_weight=1.0, reduce_at=1, target_kl=20.0, max_factor=10.0)
    return sup.Follower(run_dir, policy, idle=kw.pop("idle", 0.3), poll=0.05, **kw).run()


def test_follow_a_lightning_csv_run_decides_as_its_event_file(tmp_path):
    tb = write_lightning(tmp_path / "tb", epochs=6, unprefixed_val=False, post_fit_validate=False,
                         post_fit_test=False)
    cv = write_lightning(tmp_path / "csv", epochs=6, unprefixed_val=False, post_fit_validate=False,
                         post_fit_test=False, logger="csv")
    assert _follow(tb.run_dir) == 0 and _follow(cv.run_dir) == 0
    a, b = _decisions(tb.run_dir), _decisions(cv.run_dir)
    assert a == b and len(a) == 6 and any(d[1] == "set_kl_weight" for d in a)


def test_follow_a_csv_that_grows_while_followed(tmp_path):
    """The CSVLogger writes its rows (and rewrites its header when the first val row arrives) while the
    watchdog follows: every epoch is decided once, live ones after the history."""
    ref = write_lightning(tmp_path / "ref", epochs=5, unprefixed_val=False, post_fit_validate=False,
                          post_fit_test=False, logger="csv")
    import csv

    with open(ref.notes["log_file"], newline="") as fh:
        calls = [({k: (int(v) if k == "epoch" else float(v)) for k, v in r.items() if v != "" and k != "step"},
                  int(r["step"])) for r in csv.DictReader(fh)]
    run = tmp_path / "live" / "version_0"
    cut = next(i for i, (m, _) in enumerate(calls) if m.get("epoch") == 2)
    write_csv_logger(run, calls[:cut])
    done = threading.Event()

    def more():
        import time

        time.sleep(0.3)
        write_csv_logger_append(run, calls[cut:])
        done.set()

    threading.Thread(target=more, daemon=True).start()
    assert _follow(run, idle=1.0) == 0 and done.is_set()
    ds = _decisions(run)
    assert [d[0] for d in ds] == [0, 1, 2, 3, 4]
    assert ds[0][3] and not ds[-1][3]  # history replayed, then live


def write_csv_logger_append(run: Path, calls) -> None:
    """More calls to the same CSVLogger (its key list is the file's header)."""
    from lineages.lightning_csv import CsvLoggerWriter

    w = CsvLoggerWriter(run / "metrics.csv")
    with open(w.path, newline="") as fh:
        w.metrics_keys = fh.readline().strip().split(",")
    for m, step in calls:
        w.log_metrics(m, step)
        w.save()


def test_follow_an_hf_trainer_state(tmp_path):
    tb = write_hf_trainer(tmp_path / "tb", epochs=5, steps_per_epoch=20)
    js = write_hf_trainer(tmp_path / "js", epochs=5, steps_per_epoch=20, tensorboard=False, trainer_state=True)
    assert _follow(tb.run_dir) == 0 and _follow(js.notes["output_dir"]) == 0
    a, b = _decisions(tb.run_dir), _decisions(js.notes["output_dir"])
    assert [(e, act) for e, act, _, _ in a] == [(e, act) for e, act, _, _ in b] and len(a) == 5
