"""The lineage fixtures themselves: exact tags, the logged arithmetic on every row, the step/epoch structure.

Read back with TensorBoard's EventAccumulator (one file at a time), never with vaediag.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lineages import (write_antixk, write_hf_trainer, write_latent_diffusion, write_lightning, write_pl_bolts,
                      write_plain_loop, write_vqvae, write_wandb_export)

F32 = np.float32


def read(path: Path) -> dict[str, list[tuple[int, float]]]:
    ea = EventAccumulator(str(path), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def only(truth) -> dict[str, list[tuple[int, float]]]:
    (f,) = truth.event_files
    return read(f)


def by_step(rows) -> dict[int, float]:
    out = {}
    for s, v in rows:
        assert s not in out, f"two rows at step {s}"
        out[s] = v
    return out


def aligned(d, *tags):
    """Values of several tags at their common steps, as float32 arrays."""
    maps = [by_step(d[t]) for t in tags]
    steps = sorted(set.intersection(*(set(m) for m in maps)))
    assert steps, tags
    return [np.array([m[s] for s in steps], dtype=np.float32) for m in maps]


def close(a, b, rtol=1e-6, atol=0.0):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------------ pl_bolts

def test_pl_bolts(tmp_path):
    tr = write_pl_bolts(tmp_path, epochs=4, steps_per_epoch=100, log_every_n_steps=50, kl_coeff=0.1)
    d = only(tr)
    assert set(d) == {"train_recon_loss", "train_kl", "train_loss", "val_recon_loss", "val_kl", "val_loss",
                      "epoch", "hp_metric"}
    rec, kl, loss = aligned(d, "train_recon_loss", "train_kl", "train_loss")
    assert np.array_equal(loss, kl + rec)                                   # float32, bit for bit
    vr, vk, vl = aligned(d, "val_recon_loss", "val_kl", "val_loss")
    close(vl, vk + vr, rtol=1e-5)
    assert [s for s, _ in d["train_loss"]] == [49 + 50 * i for i in range(8)]
    assert [s for s, _ in d["val_loss"]] == [99, 199, 299, 399]
    assert len(d["epoch"]) == 8 + 4 and d["hp_metric"] == [(0, -1.0)]
    ep = {}
    for s, v in d["epoch"]:
        ep.setdefault(s, set()).add(v)
    assert all(ep[(e + 1) * 100 - 1] == {float(e)} for e in range(4))
    assert (tr.run_dir / "hparams.yaml").read_text().count("kl_coeff: 0.1") == 1
    assert tr.kl_convention == "weighted" and tr.epochs == 4 and tr.final["kl"] == d["val_kl"][-1][1]


def test_pl_bolts_regress(tmp_path):
    tr = write_pl_bolts(tmp_path, epochs=8, steps_per_epoch=50, log_every_n_steps=10, regress_after=4)
    d = only(tr)
    val = [v for _, v in d["val_recon_loss"]]
    assert 2.0 <= val[-1] / val[3] <= 3.0
    train = by_step(d["train_recon_loss"])
    early = np.mean([v for s, v in train.items() if 150 <= s < 200])
    late = np.mean([v for s, v in train.items() if s >= 350])
    assert 2.0 <= late / early <= 3.0


# ------------------------------------------------------------------------------------------------ Lightning

def test_lightning_names_and_post_fit_rows(tmp_path):
    E, N = 5, 40
    tr = write_lightning(tmp_path, epochs=E, steps_per_epoch=N, log_every_n_steps=10, beta=2.0)
    d = only(tr)
    assert set(d) == {"train/loss_step", "train/kl_step", "train/recon_step", "train/loss_epoch", "train/kl_epoch",
                      "train/recon_epoch", "kl", "recon", "loss", "test_kl", "test_recon", "test_loss", "epoch",
                      "hp_metric"}
    r, k, lo = aligned(d, "train/recon_step", "train/kl_step", "train/loss_step")
    assert np.array_equal(lo, r + F32(2.0) * k)
    r, k, lo = aligned(d, "train/recon_epoch", "train/kl_epoch", "train/loss_epoch")
    close(lo, r + F32(2.0) * k, rtol=1e-5)
    r, k, lo = aligned(d, "recon", "kl", "loss")
    close(lo, r + F32(2.0) * k, rtol=1e-5)
    for t in ("train/loss_epoch", "train/kl_epoch", "train/recon_epoch"):
        assert [s for s, _ in d[t]] == [(e + 1) * N - 1 for e in range(E)]
    # validation during fit at (e+1)*N-1, then trainer.validate() after fit at step E*N with epoch == E
    assert [s for s, _ in d["loss"]] == [(e + 1) * N - 1 for e in range(E)] + [E * N]
    assert [s for s, _ in d["test_loss"]] == [E * N]
    assert {v for s, v in d["epoch"] if s == E * N} == {float(E)}
    assert d["hp_metric"] == [(0, -1.0)] * 3                                    # fit, validate, test
    assert [r["epoch"] for r in tr.notes["post_fit_rows"]] == [E, E]
    assert tr.tags["val_total"] == "loss" and tr.epochs == E


def test_lightning_prefixed_val(tmp_path):
    tr = write_lightning(tmp_path, epochs=2, steps_per_epoch=20, unprefixed_val=False, post_fit_validate=False,
                         post_fit_test=False)
    d = only(tr)
    assert {"val/kl", "val/recon", "val/loss"} <= set(d) and "loss" not in d and "test_loss" not in d
    assert d["hp_metric"] == [(0, -1.0)]


# ------------------------------------------------------------------------------------------------ AntixK / VQ

def test_antixk_matches_realworld_tag_set(tmp_path, realworld):
    tr = write_antixk(tmp_path, epochs=3, steps_per_epoch=120)
    d = only(tr)
    real = read(next((realworld / "carmesaure+constellationProject/logs/VanillaVAE/version_0").glob("events.*")))
    assert set(d) == set(real)
    r, kld, lo = aligned(d, "Reconstruction_Loss", "KLD", "loss")
    assert (kld < 0).all()
    assert np.array_equal(lo, r + F32(0.00025) * (-kld))
    vr, vk, vl = aligned(d, "val_Reconstruction_Loss", "val_KLD", "val_loss")
    close(vl, vr - vk, rtol=1e-5)                                              # validation weight 1.0
    assert [s for s, _ in d["lr-Adam"]] == [0, 120, 240]
    assert [s for s, _ in d["val_loss"]] == [119, 239, 359]
    assert (tr.run_dir / "hparams.yaml").read_text().strip() == "{}"
    assert "kld_weight: 0.00025" in (tmp_path / "configs" / "vae.yaml").read_text()


def test_vqvae(tmp_path):
    tr = write_vqvae(tmp_path, epochs=4, steps_per_epoch=100)
    d = only(tr)
    assert set(d) == {"loss", "Reconstruction_Loss", "VQ_Loss", "val_loss", "val_Reconstruction_Loss",
                      "val_VQ_Loss", "lr-Adam", "epoch", "hp_metric"}
    r, vq, lo = aligned(d, "Reconstruction_Loss", "VQ_Loss", "loss")
    assert np.array_equal(lo, r + vq)
    vr, vv, vl = aligned(d, "val_Reconstruction_Loss", "val_VQ_Loss", "val_loss")
    close(vl, vr + vv, rtol=1e-5)
    assert [v for _, v in d["lr-Adam"]] == [pytest.approx(0.005), 0.0, 0.0, 0.0]   # ExponentialLR(gamma=0.0)
    assert tr.kl_weight is None and tr.kl_convention is None and not any("KL" in t for t in d)


# ------------------------------------------------------------------------------------------------ latent-diffusion

def test_latent_diffusion(tmp_path):
    E, N = 3, 100
    tr = write_latent_diffusion(tmp_path, epochs=E, steps_per_epoch=N, disc_start=160, kl_weight=1e-6)
    d = only(tr)
    ae = {"total_loss", "logvar", "kl_loss", "nll_loss", "rec_loss", "d_weight", "disc_factor", "g_loss"}
    disc = {"disc_loss", "logits_real", "logits_fake"}
    assert set(d) == ({f"train/{k}" for k in ae | disc} | {f"val/{k}" for k in ae | disc}
                      | {"aeloss_step", "aeloss_epoch", "discloss_step", "discloss_epoch", "lr-Adam", "lr-Adam-1",
                         "epoch"})
    nll, kl, dw, df, g, tot, rec, lv = aligned(d, *(f"train/{k}" for k in (
        "nll_loss", "kl_loss", "d_weight", "disc_factor", "g_loss", "total_loss", "rec_loss", "logvar")))
    close(tot, (nll + F32(1e-6) * kl) + (dw * df) * g, rtol=1e-6)
    P = 3 * 256 * 256
    close(nll, F32(P) * (rec / np.exp(lv) + lv), rtol=1e-5)
    steps = [s for s, _ in d["train/disc_factor"]]
    assert [v for _, v in d["train/disc_factor"]] == [0.0 if s < 160 else 1.0 for s in steps]
    assert all(v > 0 for _, v in d["train/d_weight"])                          # computed even before disc_start
    assert aligned(d, "aeloss_step", "train/total_loss")[0].tolist() == aligned(d, "train/total_loss")[0].tolist()
    vn, vk, vt = aligned(d, "val/nll_loss", "val/kl_loss", "val/total_loss")
    close(vt, vn + F32(1e-6) * vk, rtol=1e-5)
    assert all(v == 0.0 for _, v in d["val/d_weight"])
    assert [s for s, _ in d["aeloss_epoch"]] == [(e + 1) * N - 1 for e in range(E)]
    assert tr.latent_dim == 4 * 32 * 32 and tr.run_dir.parts[-3:] == ("testtube", "version_0", "tf")
    assert "kl_weight: 1.0e-06" in Path(tr.notes["config"]).read_text()


# ------------------------------------------------------------------------------------------------ HF Trainer

@pytest.mark.parametrize("epoch_round", [None, 2])
def test_hf_trainer(tmp_path, epoch_round):
    E, N = 12, 37
    tr = write_hf_trainer(tmp_path, epochs=E, steps_per_epoch=N, logging_steps=10, beta=0.5, epoch_round=epoch_round)
    d = only(tr)
    assert set(d) == {"train/loss", "train/grad_norm", "train/learning_rate", "train/kl", "train/recon",
                      "train/epoch", "eval/loss", "eval/kl", "eval/recon", "eval/runtime", "eval/samples_per_second",
                      "eval/steps_per_second", "train/train_runtime", "train/train_samples_per_second",
                      "train/train_steps_per_second", "train/total_flos", "train/train_loss"}
    r, k, lo = aligned(d, "train/recon", "train/kl", "train/loss")
    close(lo, r + F32(0.5) * k, rtol=1e-6, atol=tr.identity_atol)              # HF rounds loss to 4 decimals
    assert np.all(np.abs(lo * 1e4 - np.round(lo * 1e4)) < 1e-2 * np.maximum(1, lo))
    vr, vk, vl = aligned(d, "eval/recon", "eval/kl", "eval/loss")
    close(vl, vr + F32(0.5) * vk, rtol=1e-5)
    assert [s for s, _ in d["eval/loss"]] == [N * (e + 1) for e in range(E)]
    ep = [v for _, v in d["train/epoch"]]
    assert max(ep) == E and ep[-1] == E and any(v != int(v) for v in ep)      # fractional, ends at 12.0
    assert sorted({v for s, v in d["train/epoch"] if s in {N * (e + 1) for e in range(E)}}) == [float(e + 1)
                                                                                               for e in range(E)]
    if epoch_round == 2:
        assert all(abs(v * 100 - round(v * 100)) < 1e-3 for v in ep)
    assert d["train/train_loss"][0][0] == E * N and tr.epochs == E


# ------------------------------------------------------------------------------------------------ plain loop

def test_plain_loop(tmp_path):
    tr = write_plain_loop(tmp_path, epochs=6, steps_per_epoch=50, log_every=5, beta=1e-3, d_latent=64,
                          val_step_minus_one=True)
    d = only(tr)
    val_tags = {"val/loss", "val/kl", "val/recon_l1", "val/recon_loss/grey", "val/recon_loss/colour", "val/psnr"}
    assert set(d) == {"train/recon_l1", "train/kl", "train/loss"} | val_tags
    r, k, lo = aligned(d, "train/recon_l1", "train/kl", "train/loss")
    assert np.array_equal(lo, r + F32(1e-3) * k)
    vr, vk, vl, g, c = aligned(d, "val/recon_l1", "val/kl", "val/loss", "val/recon_loss/grey", "val/recon_loss/colour")
    assert np.array_equal(vl, vr + F32(1e-3) * vk)
    close(vr, (F32(40) * g + F32(216) * c) / F32(256), rtol=1e-6)
    assert sorted(t for t, rows in d.items() if rows[0][0] == -1) == sorted(val_tags)   # six values at step -1
    assert [s for s, _ in d["val/loss"]] == [-1] + [50 * (e + 1) for e in range(6)]
    assert 20 < d["val/psnr"][-1][1] < 30
    assert '"d_latent": 64' in (tr.run_dir / "config.json").read_text()


def test_plain_loop_dead_and_regress(tmp_path):
    dead = only(write_plain_loop(tmp_path / "dead", epochs=5, steps_per_epoch=20, dead=True))
    assert all(11.5 < v < 12.5 for _, v in dead["val/psnr"])
    rec = [v for _, v in dead["train/recon_l1"]]
    assert max(rec) / min(rec) < 1.1
    reg = only(write_plain_loop(tmp_path / "reg", epochs=8, steps_per_epoch=20, regress_after=4))
    val = [v for _, v in reg["val/recon_l1"]]
    assert 2.0 <= val[-1] / val[3] <= 3.0


def test_plain_loop_restart_counter(tmp_path):
    tr = write_plain_loop(tmp_path, epochs=4, steps_per_epoch=20, restart_counter=True, restart_epochs=2)
    assert len(tr.event_files) == 2 and all(f.parent == tr.run_dir for f in tr.event_files)
    first, second = (read(f) for f in tr.event_files)
    assert first["train/loss"][0][0] == 0 and second["train/loss"][0][0] == 0
    assert [s for s, _ in first["val/loss"]] == [20, 40, 60, 80]
    assert [s for s, _ in second["val/loss"]] == [20, 40]
    assert tr.epochs == 2 and tr.final["total"] == second["val/loss"][-1][1]
    ea = EventAccumulator(str(tr.run_dir), size_guidance={"scalars": 0})       # the folder: both runs, interleaved
    ea.Reload()
    assert [e.step for e in ea.Scalars("val/loss")] == [20, 40, 60, 80, 20, 40]


# ------------------------------------------------------------------------------- metrics logs (not event files)

def _csv_rows(path: Path) -> tuple[list[str], list[dict]]:
    import csv

    with open(path, newline="") as fh:
        r = csv.DictReader(fh)
        return list(r.fieldnames or []), list(r)


def test_lightning_csv_is_the_same_log_metrics_calls_as_the_event_file(tmp_path):
    """CSVLogger: one row per log_metrics call, sorted header, a step column, blanks where a call did not log a
    key, rows ending \\r\\n; the values and steps are the TensorBoard lineage's, bit for bit (float32)."""
    tb = write_lightning(tmp_path / "tb", epochs=4, steps_per_epoch=30)
    cv = write_lightning(tmp_path / "csv", epochs=4, steps_per_epoch=30, logger="csv")
    path = cv.notes["log_file"]
    assert path == cv.run_dir / "metrics.csv" and not list(cv.run_dir.glob("events.*"))
    assert (cv.run_dir / "hparams.yaml").is_file()
    raw = path.read_bytes()
    assert raw.endswith(b"\r\n") and raw.count(b"\r\n") == raw.count(b"\n")
    header, rows = _csv_rows(path)
    assert header == sorted(header) and "step" in header and "epoch" in header and "hp_metric" not in header
    events = only(tb)
    got: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k != "step" and v != "":
                got.setdefault(k, []).append((int(r["step"]), float(v)))
    assert set(got) == set(events) - {"hp_metric"}
    for tag, pts in got.items():
        assert [(s, float(F32(v))) for s, v in pts] == [(s, v) for s, v in events[tag]], tag
    # One row per call: a call that logs the val metrics logs nothing else but its epoch.
    val_rows = [r for r in rows if r["kl"] != ""]
    assert all(r["train/kl_step"] == "" and r["epoch"] != "" for r in val_rows)


def test_lightning_csv_header_rewrite_keeps_every_row(tmp_path):
    """A save that brings a new key rewrites the file under the wider header: the old rows are all still
    there, blank in the new columns (what a tail has to notice)."""
    from lineages.lightning_csv import write_csv_logger

    seen = []
    path = write_csv_logger(tmp_path, [({"a": 1.0, "epoch": 0}, 0), ({"a": 2.0, "epoch": 0}, 1),
                                       ({"b": 3.0, "epoch": 0}, 1), ({"a": 4.0, "epoch": 1}, 2)],
                            after_save=lambda p: seen.append(p.read_bytes()))
    assert seen[0].startswith(b"a,epoch,step\r\n") and seen[2].startswith(b"a,b,epoch,step\r\n")
    assert seen[2].startswith(b"a,b,epoch,step\r\n1.0,,0,0\r\n2.0,,0,1\r\n,3.0,0,1\r\n")
    header, rows = _csv_rows(path)
    assert header == ["a", "b", "epoch", "step"] and len(rows) == 4


def test_hf_trainer_state_is_the_log_history_the_callbacks_saw(tmp_path):
    """trainer_state.json: sorted keys, indent 2, log_history = each log dict + step, at each epoch checkpoint
    (the last two kept) and in output_dir (save_state); the keys, renamed as rewrite_logs does, and the values
    are the TensorBoard lineage's (float32 there)."""
    import json

    tb = write_hf_trainer(tmp_path / "tb", epochs=4, steps_per_epoch=20, logging_steps=5)
    js = write_hf_trainer(tmp_path / "js", epochs=4, steps_per_epoch=20, logging_steps=5, tensorboard=False,
                          trainer_state=True)
    out = js.notes["output_dir"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-60", "checkpoint-80", "trainer_state.json"]
    text = (out / "trainer_state.json").read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert doc["global_step"] == 80 and doc["num_train_epochs"] == 4 and doc["epoch"] == 4.0
    hist = doc["log_history"]
    assert all("step" in h and "epoch" in h for h in hist)
    assert len(json.loads((out / "checkpoint-60" / "trainer_state.json").read_text())["log_history"]) < len(hist)
    assert hist[-1].keys() >= {"train_loss", "train_runtime", "total_flos"}
    events = only(tb)
    got: dict[str, list[tuple[int, float]]] = {}
    for h in hist:
        for k, v in h.items():
            if k == "step":
                continue
            tag = "eval/" + k[5:] if k.startswith("eval_") else "train/" + k
            got.setdefault(tag, []).append((h["step"], float(F32(v))))
    assert got == {t: [(s, v) for s, v in pts] for t, pts in events.items()}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_wandb_exports(tmp_path, fmt):
    import csv
    import json

    tr = write_wandb_export(tmp_path, fmt=fmt, epochs=3, steps_per_epoch=20, log_every=5)
    path = tr.notes["path"]
    rows = tr.notes["rows"]
    assert [r["_step"] for r in rows] == list(range(len(rows))) == list(range(3 * 4 + 3))
    if fmt == "csv":
        with open(path, newline="") as fh:
            table = list(csv.reader(fh))
        assert table[0][0] == "" and table[0][1:4] == ["_runtime", "_step", "_timestamp"]
        assert [r[0] for r in table[1:]] == [str(i) for i in range(len(rows))]  # pandas' index column
        val = table[0].index("val/kl")
        assert sum(1 for r in table[1:] if r[val] != "") == 3  # blank where a call did not log it
    else:
        lines = path.read_text().splitlines()
        assert [json.loads(x) for x in lines] == rows and all("_timestamp" in json.loads(x) for x in lines)
    v = [r for r in rows if "val/loss" in r]
    assert all(abs(r["val/loss"] - (r["val/recon"] + 0.01 * r["val/kl"])) < 1e-6 for r in v)
