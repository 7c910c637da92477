"""One run, two logs, one diagnosis: a run read from its metrics log (Lightning's metrics.csv, HF's
trainer_state.json) is judged as when it is read from its event files: the same finding ids and statuses,
the same recommendations. Once with the lineage generators (tests/helpers/lineages), once with a real LightningModule
trained for two epochs under Lightning's own TensorBoardLogger and CSVLogger at once."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vaediag
from lineages import write_hf_trainer, write_lightning
from vaediag.diagnose import diagnose


def _judged(d):
    return ([(f.id, f.status, f.severity) for f in d.findings],
            [(r.action, r.params, r.command) for r in d.recommendations], d.epochs, d.model)


def _same_moment(log: Path, frame: pd.DataFrame) -> None:
    """Give a log that records no time the modification time of the last event of the other log, so that "the
    run ended: nothing written for an hour" is judged on the same moment for both."""
    t = float(np.nanmax(frame["wall_time"].to_numpy()))
    os.utime(log, (t, t))


@pytest.mark.parametrize("regress_after", [None, 4])
def test_lightning_csv_and_event_file_same_diagnosis(tmp_path, regress_after):
    tb = write_lightning(tmp_path / "tb", epochs=8, regress_after=regress_after)
    cv = write_lightning(tmp_path / "csv", epochs=8, regress_after=regress_after, logger="csv")
    a = vaediag.load(tb.run_dir)
    _same_moment(cv.notes["log_file"], a.frame)
    b = vaediag.load(cv.run_dir)
    (da,), (db,) = diagnose(a), diagnose(b)
    assert _judged(da) == _judged(db)
    assert da.finished[0] and db.finished[0]
    assert "no event for" in da.finished[1] and "no write to metrics.csv for" in db.finished[1]


def test_hf_trainer_state_and_event_file_same_diagnosis(tmp_path):
    tb = write_hf_trainer(tmp_path / "tb", regress_after=6)
    js = write_hf_trainer(tmp_path / "js", regress_after=6, tensorboard=False, trainer_state=True)
    (da,) = diagnose(vaediag.load(tb.run_dir))
    (db,) = diagnose(vaediag.load(js.notes["output_dir"]))
    # The event file holds float32 values, the JSON the float64s they came from: the same judgement, numbers
    # equal to float32 precision.
    fa, ra, *rest_a = _judged(da)
    fb, rb, *rest_b = _judged(db)
    assert fa == fb and rest_a == rest_b and [r[0] for r in ra] == [r[0] for r in rb] != []
    for (_, pa, ca), (_, pb, cb) in zip(ra, rb):
        assert pa.keys() == pb.keys() and ca == cb
        for k in pa:
            assert pa[k] == (pytest.approx(pb[k], rel=1e-5) if isinstance(pa[k], float) else pb[k]), k
    assert db.to_dict()["source"] == {"kind": "hf_trainer_state", "label": "HF Trainer state",
                                      "files": ["trainer_state.json"]}


# ------------------------------------------------------------------------------------------ a real Lightning run

_MODULE = '''
import torch
from torch import nn
import lightning as L


class TinyVAE(L.LightningModule):
    """A VAE as users write one: MSE summed over pixels + beta * KL summed over latent dims, both batch means."""

    def __init__(self, dim: int = 16, latent_dim: int = 4, beta: float = 0.5, lr: float = 1e-2):
        super().__init__()
        self.save_hyperparameters()
        self.enc = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 2 * latent_dim))
        self.dec = nn.Sequential(nn.Linear(latent_dim, 32), nn.ReLU(), nn.Linear(32, dim))

    def _terms(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = ((self.dec(z) - x) ** 2).sum(-1).mean()
        kl = (-0.5 * (1 + logvar - mu ** 2 - logvar.exp()).sum(-1)).mean()
        return recon, kl, recon + self.hparams.beta * kl

    def training_step(self, batch, batch_idx):
        recon, kl, loss = self._terms(batch[0])
        self.log_dict({"train/loss": loss, "train/kl": kl, "train/recon": recon}, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        recon, kl, loss = self._terms(batch[0])
        self.log_dict({"val/loss": loss, "val/kl": kl, "val/recon": recon})

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
'''


@pytest.mark.slow
def test_a_real_lightning_run_logged_by_both_loggers(tmp_path):
    """Lightning's own TensorBoardLogger and CSVLogger receive the same log_metrics calls of a real two-epoch
    fit: the two logs read into the same rows (hp_metric is TensorBoard's; the CSV has no wall time) and
    are diagnosed alike."""
    import lightning as L  # in the [dev] extra: a broken install fails here, it is not skipped
    import torch
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    ns: dict = {}
    exec(compile(_MODULE, "tiny_vae", "exec"), ns)  # noqa: S102 (the module text is the test's own)
    torch.set_num_threads(1)
    L.seed_everything(0, workers=False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=gen)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:192]), batch_size=32, shuffle=True,
                                        generator=gen)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[192:]), batch_size=32)
    loggers = [TensorBoardLogger(tmp_path / "tb", name="vae"), CSVLogger(tmp_path / "csv", name="vae")]
    trainer = L.Trainer(max_epochs=2, logger=loggers, log_every_n_steps=2, accelerator="cpu", devices=1,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "does not have many workers", ...
        trainer.fit(ns["TinyVAE"](), train, val)

    tb_dir, csv_dir = tmp_path / "tb" / "vae" / "version_0", tmp_path / "csv" / "vae" / "version_0"
    assert (csv_dir / "metrics.csv").is_file() and (csv_dir / "hparams.yaml").is_file()
    a, b = vaediag.load(tb_dir), vaediag.load(csv_dir)
    assert b.runs["version_0"].source == "lightning_csv" and not b.warnings and not a.warnings
    cols = ["tag", "term", "split", "step", "epoch", "value"]
    fa = a.frame[a.frame["tag"] != "hp_metric"][cols].astype({"tag": str, "term": str, "split": str})
    fb = b.frame[cols].astype({"tag": str, "term": str, "split": str})
    pd.testing.assert_frame_equal(fa.reset_index(drop=True), fb.reset_index(drop=True))
    assert set(fb["tag"]) >= {"train/loss_step", "train/loss_epoch", "val/kl", "epoch"}
    assert sorted(set(fb["epoch"].dropna())) == [0.0, 1.0]
    assert b.runs["version_0"].param("beta") == 0.5 and a.runs["version_0"].param("beta") == 0.5
    (da,), (db,) = diagnose(a), diagnose(b)
    assert _judged(da) == _judged(db)
    assert da.epochs == db.epochs == 2 and not math.isnan(db.metrics["kl"])
