"""frame_from_epochs: metrics a loop hands over in memory become the frame the reader makes of the same log."""

from __future__ import annotations

import math

import numpy as np
import pytest

import vaediag
from tbwrite import write_run
from vaediag.diagnose.engine import diagnose_run
from vaediag.errors import UsageError
from vaediag.logs import frame_from_epochs
from vaediag.logs.frame import COLUMNS

EPOCHS = [
    {"kl": 40.0, "recon": 0.20, "psnr": 14.0, "recon_spread": 0.6, "kl_weight": 1e-3, "train/recon": 0.25},
    {"kl": 35.0, "recon": 0.12, "psnr": 17.5, "recon_spread": 0.8, "kl_weight": 1e-3, "train/recon": 0.15},
    {"kl": 33.0, "recon": 0.10, "psnr": 18.9, "recon_spread": 0.9, "kl_weight": 1e-3, "train/recon": 0.11},
]


def _as_logged(tmp_path):
    """The same values written as a trainer logs them (train values at step 2e, val at 2e + 1, the epoch tag
    at both) to a real event file, read back by vaediag.load."""
    series: dict[str, list] = {}
    for e, metrics in enumerate(EPOCHS):
        for key, v in metrics.items():
            if key == "kl_weight":
                series.setdefault("train/kl_weight", []).append((2 * e, v))
            elif key.startswith("train/"):
                series.setdefault(key, []).append((2 * e, v))
            else:
                series.setdefault(f"val/{key}", []).append((2 * e + 1, v))
    write_run(tmp_path / "run", series, epochs={s: float(s // 2) for s in range(2 * len(EPOCHS))})
    return vaediag.load(tmp_path / "run").frame


def _plain(frame):
    cols = ["tag", "term", "split", "step", "epoch", "value"]
    return frame[cols].astype({"tag": object, "term": object, "split": object}).sort_values(["tag", "step"]) \
        .reset_index(drop=True)


def test_the_frame_equals_the_readers_frame_of_the_same_log(tmp_path):
    mine = frame_from_epochs(EPOCHS, run="run")
    assert tuple(mine.columns) == COLUMNS
    logged = _as_logged(tmp_path)
    assert dict(mine.dtypes.astype(str)) == dict(logged.dtypes.astype(str))
    a, b = _plain(mine), _plain(logged)
    assert a[["tag", "term", "split", "step", "epoch"]].equals(b[["tag", "term", "split", "step", "epoch"]])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6)  # event files hold float32
    # ... and the engine says the same of both
    d_mine, d_logged = diagnose_run(mine, run="run", finished=False), diagnose_run(logged, run="run", finished=False)
    assert d_mine.epochs == d_logged.epochs == 3
    assert [(f.id, f.severity) for f in d_mine.findings] == [(f.id, f.severity) for f in d_logged.findings]


def test_keys_map_to_the_trainers_tags_and_splits():
    f = frame_from_epochs([{"psnr": 20.0, "train/recon": 0.1, "val/kl": 3.0, "lr": 1e-3}])
    rows = {r.tag: (r.term, r.split) for r in f.itertuples()}
    assert rows == {"val/psnr": ("psnr", "val"), "train/recon": ("recon", "train"), "val/kl": ("kl", "val"),
                    "train/lr": ("lr", "train"), "epoch": ("epoch", "other")}


def test_every_epoch_handed_over_is_a_training_epoch_even_with_train_values_only_at_the_start():
    # A loop that hands its constant kl_weight once: later val values are still training epochs, not a
    # validation after fit.
    f = frame_from_epochs([{"recon": 0.3, "kl_weight": 1e-3}, {"recon": 0.2}, {"recon": 0.1}])
    assert set(f.loc[f["tag"] == "val/recon", "split"]) == {"val"}
    assert diagnose_run(f, finished=False).epochs == 3


def test_nan_is_kept_and_none_is_not_measured():
    f = frame_from_epochs({0: {"recon": 0.2, "kl": None}, 1: {"recon": math.nan, "kl": 3.0}})
    recon = f[f["tag"] == "val/recon"]["value"].tolist()
    assert recon[0] == 0.2 and math.isnan(recon[1])
    assert f[f["tag"] == "val/kl"]["epoch"].tolist() == [1.0]
    assert any(x.rule == "nonfinite" and x.severity == "fail" for x in diagnose_run(f, finished=False).findings)


def test_numpy_scalars_and_wall_times():
    f = frame_from_epochs([{"recon": np.float32(0.5)}], wall_times=[1.7e9])
    assert f["value"].tolist()[-1] == 0.5
    assert set(f["wall_time"]) == {1.7e9}
    empty = frame_from_epochs([])
    assert empty.empty and tuple(empty.columns) == COLUMNS


@pytest.mark.parametrize("epochs, message", [
    ([{"klx": 1.0}], "unknown metric 'klx': use a canonical term (loss, recon, perceptual"),
    ([{"test/kl": 1.0}], "unknown split 'test'"),
    ([{"epoch": 1.0}], "unknown metric 'epoch'"),
    ([{"kl": "1.0"}], "epoch 0: metric 'kl' is '1.0', not a number"),
    ([{"kl": [1.0, 2.0]}], "epoch 0: metric 'kl' is [1.0, 2.0], not a number"),
    ([{"recon": 0.1, "val/recon": 0.2}], "epoch 0: 'recon' and 'val/recon' are both val/recon; give it once"),
    ({-1: {"kl": 1.0}}, "epoch -1 is not an epoch index"),
    ({1.5: {"kl": 1.0}}, "epoch 1.5 is not an epoch index"),
    ([[("kl", 1.0)]], "epoch 0: metrics must be a mapping"),
])
def test_mistakes_are_one_line_usage_errors_quoting_the_value(epochs, message):
    with pytest.raises(UsageError) as err:
        frame_from_epochs(epochs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_wall_times_must_cover_the_epochs():
    with pytest.raises(UsageError, match="wall_times has no time for epoch 1"):
        frame_from_epochs([{"kl": 1.0}, {"kl": 2.0}], wall_times=[1.7e9])
