"""The shared real logs (tests/fixtures/realworld): run ids, row counts, terms, splits, signs, metadata,
and row-for-row agreement with tbparse, for both reader engines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import vaediag
from logs_helpers import frame_rows, tbparse_rows

YT = "YitongTseo+prot_2_face/logs"
CM = "carmesaure+constellationProject/logs"
SK = "sarahkorb+VAE-for-Medical-Image-Generation"

# run id -> rows after dedup (every run with an event file, including header-only ones).
EXPECTED_ROWS = {
    f"{YT}/ConditionalVAE/version_2": 1,
    f"{YT}/DFCVAE/version_6": 1,
    f"{YT}/DFCVAE/version_8": 2083,
    f"{YT}/DFCVAE/version_9": 219,
    f"{YT}/VanillaVAE/version_3": 20849,
    f"{CM}/BetaVAE/version_0": 66,
    f"{CM}/BetaVAE/version_1": 338,
    f"{CM}/VanillaVAE/version_0": 338,
    f"{SK}/logs/VanillaVAE/version_1": 0,
    f"{SK}/logs/VanillaVAE/version_2": 1,
    f"{SK}/runs/vae_gan_1": 0,
}
# Runs whose KLD is logged as -KL (VanillaVAE, DFCVAE lineage) and so gets flipped; BetaVAE logs +KL.
FLIPPED = [f"{YT}/DFCVAE/version_8", f"{YT}/DFCVAE/version_9", f"{YT}/VanillaVAE/version_3", f"{CM}/VanillaVAE/version_0"]
NOT_FLIPPED = [f"{CM}/BetaVAE/version_0", f"{CM}/BetaVAE/version_1"]


@pytest.fixture(scope="module", params=["numpy", "python"])
def loaded(request, realworld):
    return vaediag.load(realworld, engine=request.param)


@pytest.fixture(scope="module")
def tbparse_reference(realworld):
    return tbparse_rows(realworld)


def test_run_ids_and_row_counts(loaded):
    assert sorted(loaded.runs) == sorted(EXPECTED_ROWS)
    counts = loaded.frame.groupby("run", observed=False).size().to_dict()
    assert counts == EXPECTED_ROWS
    assert len(loaded.frame) == 23896


def test_run_without_event_file_is_reported(loaded, realworld):
    assert loaded.orphans == [realworld / YT / "DFCVAE" / "version_7"]
    assert loaded.warnings == [f"{YT}/DFCVAE/version_7: run metadata but no event file (the run died before logging?); skipped"]


def test_header_only_runs_have_no_scalars(loaded):
    vg = loaded.runs[f"{SK}/runs/vae_gan_1"]
    assert len(vg.event_files) == 8 and vg.n_scalars == 0 and not vg.warnings
    assert all(f.size == 40 and f.records == 1 for f in vg.files)
    assert loaded.run_frame(f"{SK}/runs/vae_gan_1").empty


def test_same_rows_as_tbparse(loaded, tbparse_reference):
    """Every scalar tbparse reads is in our frame with the same step, value and wall_time, and no more."""
    ours = frame_rows(loaded.frame)
    # Undo our sign normalisation for the comparison: tbparse keeps values as logged.
    for run in FLIPPED:
        sel = (ours["run"] == run) & ours["tag"].isin(["KLD", "val_KLD"])
        ours.loc[sel, "value"] = -ours.loc[sel, "value"]
    ref = tbparse_reference.rename(columns={"dir_name": "run"})
    assert len(ours) == len(ref) == 23896
    pd.testing.assert_frame_equal(ours, ref, check_dtype=False)


@pytest.mark.parametrize(
    "tag, term, split",
    [
        ("KLD", "kl", "train"),
        ("Reconstruction_Loss", "recon", "train"),
        ("loss", "loss", "train"),
        ("val_KLD", "kl", "val"),
        ("val_Reconstruction_Loss", "recon", "val"),
        ("val_loss", "loss", "val"),
        ("lr-Adam", "lr", "other"),
        ("epoch", "epoch", "other"),
        ("hp_metric", "hp_metric", "other"),
    ],
)
def test_antixk_tags_resolve(loaded, tag, term, split):
    rows = loaded.frame[loaded.frame["tag"] == tag]
    assert len(rows) > 0
    assert set(rows["term"].astype(str)) == {term}
    assert set(rows["split"].astype(str)) == {split}


@pytest.mark.parametrize("run", FLIPPED)
def test_negative_kl_is_flipped_with_a_note(loaded, run):
    info = loaded.runs[run]
    kl = loaded.run_frame(run).query("term == 'kl'")
    assert (kl["value"] >= 0).all() and (kl["value"] > 0).any()
    assert any("'KLD'" in n and "sign flipped" in n for n in info.notes)
    assert any("'val_KLD'" in n and "sign flipped" in n for n in info.notes)


@pytest.mark.parametrize("run", NOT_FLIPPED)
def test_positive_kl_is_kept(loaded, run):
    kl = loaded.run_frame(run).query("term == 'kl'")
    assert (kl["value"] > 0).all()
    assert not loaded.runs[run].notes


def test_epochs_are_aligned_from_the_epoch_tag(loaded):
    f = loaded.run_frame(f"{YT}/VanillaVAE/version_3")
    assert not f["epoch"].isna().any()
    val = f.query("tag == 'val_loss'")
    assert val["epoch"].tolist() == list(range(len(val)))  # one val point per epoch, epochs 0..n-1
    ep = f.query("tag == 'epoch'")
    np.testing.assert_array_equal(ep["epoch"].to_numpy(), ep["value"].to_numpy())


def test_frame_dtypes_and_order(loaded):
    f = loaded.frame
    assert list(f.columns) == ["run", "tag", "term", "split", "step", "epoch", "value", "wall_time"]
    assert [str(t) for t in f.dtypes] == ["category"] * 4 + ["int64", "float64", "float64", "float64"]
    key = f[["run", "tag", "step"]].astype({"run": str, "tag": str})
    assert key.equals(key.sort_values(["run", "tag", "step"], ignore_index=True))
    assert not f.duplicated(["run", "tag", "step"]).any()


def test_engines_agree(realworld):
    a = vaediag.load(realworld, engine="numpy")
    b = vaediag.load(realworld, engine="python")
    pd.testing.assert_frame_equal(a.frame, b.frame)
    assert a.warnings == b.warnings
    for run in a.runs:
        x, y = a.runs[run], b.runs[run]
        assert (x.notes, x.warnings, x.hparams, x.n_scalars) == (y.notes, y.warnings, y.hparams, y.n_scalars)
        assert [(f.records, f.scalars, f.truncated_bytes) for f in x.files] == [
            (f.records, f.scalars, f.truncated_bytes) for f in y.files
        ]


def test_one_project_root_gives_relative_ids(realworld):
    rs = vaediag.load(realworld / "carmesaure+constellationProject" / "logs")
    assert sorted(rs.runs) == ["BetaVAE/version_0", "BetaVAE/version_1", "VanillaVAE/version_0"]


def test_run_dir_itself(realworld):
    rs = vaediag.load(realworld / CM / "BetaVAE" / "version_1")
    assert list(rs.runs) == ["version_1"] and len(rs.frame) == 338
