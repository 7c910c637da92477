"""The Lightning callback on real Lightning fits: it reads what the module logged through the logger's files,
decides with the watchdog's policies, changes the module's weight, journals, logs, stops, resumes.

Each fit is a tiny MLP VAE on 256 structured 32-value vectors (a few seconds on one CPU thread).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")  # in the [dev] extra: CI has it

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from torch import nn  # noqa: E402

import vaediag  # noqa: E402
from vaediag.errors import InputError, UsageError  # noqa: E402
from vaediag.integrations.lightning import KLWatchdogCallback  # noqa: E402
from vaediag.terms import DECISION_TEXT_TAG, WATCHDOG_KL_WEIGHT_TAG, WATCHDOG_PENALTY_SHARE_TAG  # noqa: E402
from vaediag.watch import Decision, Policy, read_journal  # noqa: E402
from vaediag.watch.lock import RunLock, RunLockedError  # noqa: E402

pytestmark = pytest.mark.slow


class TinyVAE(L.LightningModule):
    """The VAE a user writes: MSE summed over values + kl_weight x KL summed over latent dims, batch means."""

    def __init__(self, kl_weight: float = 1.0, latent: int = 4, log_kl: bool = True, kl_tag: str = "kl",
                 grad_share: bool = False):
        super().__init__()
        torch.manual_seed(0)  # the same initial weights in every test, whatever ran before
        self.kl_weight, self.ae_mode = kl_weight, False
        self.log_kl, self.kl_tag, self.grad_share = log_kl, kl_tag, grad_share
        self.enc = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, 64), nn.ReLU(), nn.Linear(64, 32))

    def _step(self, x, split):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu if self.ae_mode else mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = ((self.dec(z) - x) ** 2).sum(1).mean()
        kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
        logged = {f"{split}_recon": recon}
        if self.log_kl:
            logged[f"{split}_{self.kl_tag}"] = kl
        self.log_dict(logged, on_step=False, on_epoch=True)
        if split == "train":  # what the module trained with, in its own logs
            self.log("train_kl_weight", float(self.kl_weight), on_step=False, on_epoch=True)
        if self.grad_share and split == "train":  # what the callback measures the gradient share from
            self.loss_terms, self.latent_head = {"recon": recon, "kl": self.kl_weight * kl}, (mu, logvar)
        return recon + self.kl_weight * kl

    def training_step(self, batch, _):
        return self._step(batch[0], "train")

    def validation_step(self, batch, _):
        self._step(batch[0], "val")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.tanh(torch.randn(256, 4, generator=gen) @ torch.randn(4, 32, generator=gen))  # 4 latent factors
    ds = torch.utils.data.TensorDataset(x)
    return (torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(192)), batch_size=32, shuffle=True,
                                        generator=gen),
            torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(192, 256)), batch_size=64))


def _fit(tmp_path: Path, module, callback, *, epochs: int = 4, logger="tb", ckpt_path=None, checkpoint=False,
         val: bool = True, **trainer_args):
    torch.set_num_threads(1)
    L.seed_everything(0, workers=False)
    lg = (TensorBoardLogger(tmp_path, name="vae") if logger == "tb"
          else CSVLogger(tmp_path, name="vae") if logger == "csv" else logger)
    trainer = L.Trainer(max_epochs=epochs, logger=lg, accelerator="cpu", devices=1, enable_checkpointing=checkpoint,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[callback], num_sanity_val_steps=0 if not val else 2,
                        limit_val_batches=None if val else 0, **trainer_args)
    train, val_loader = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "does not have many workers", ...
        trainer.fit(module, train, val_loader if val else None, ckpt_path=ckpt_path)
    return trainer


def _decisions(run_dir: Path) -> list[dict]:
    return [r for r in read_journal(run_dir / "watchdog.jsonl") if r.get("event") == "decision"]


@pytest.mark.parametrize("logger", ["tb", "csv"])
def test_a_heavy_kl_weight_is_cut_and_the_module_trains_with_the_new_one(tmp_path, logger):
    """kl_weight 1 on a 4-factor VAE: the penalty is most of the loss, the ladder at epoch 2 cuts it, the
    module's attribute changes, and the decision is journalled (via lightning) and logged, with either logger."""
    module = TinyVAE(kl_weight=1.0)
    cb = KLWatchdogCallback("ladder", reduce_at=2, ae_at=10, stop_at=10)
    trainer = _fit(tmp_path, module, cb, epochs=4, logger=logger)
    run_dir = Path(trainer.logger.log_dir)

    recs = _decisions(run_dir)
    assert [r["epoch"] for r in recs] == [0, 1, 2, 3]
    assert recs[0]["action"] == "keep" and recs[0]["metrics"]["kl_weight"] == 1.0
    cut = recs[1]
    assert cut["action"] == "set_kl_weight" and cut["applied"] is True and cut["via"] == "lightning"
    assert cut["kl_weight"] < 1.0 and "after epoch 2" in cut["reason"]
    assert module.kl_weight == pytest.approx(cut["kl_weight"])  # the module trains with the decided weight
    frame = vaediag.load(run_dir).frame
    own = frame[frame["tag"] == "train_kl_weight"].sort_values("step")["value"].tolist()
    assert own[:3] == pytest.approx([1.0, 1.0, cut["kl_weight"]])  # epoch 3 trained with the cut (its own log)
    assert [r["event"] for r in read_journal(run_dir / "watchdog.jsonl")][0] == "start"
    assert not (run_dir / "watchdog.lock").exists()  # released at teardown
    # A LightningModule's run is judged as check judges it: the generic profile (no config.json of our trainer);
    # the cut is the penalty share's, which that profile keeps.
    (judged,) = [r for r in read_journal(run_dir / "watchdog.jsonl") if r["event"] == "profile"]
    assert judged["profile"] == "generic" and judged["via"] == "lightning"
    assert {r["profile"] for r in recs} == {"generic"} and cut["reason"].startswith("penalty 1 x ")

    weights = frame[frame["tag"] == WATCHDOG_KL_WEIGHT_TAG].sort_values("step")["value"].tolist()
    assert weights[:3] == pytest.approx([1.0, 1.0, cut["kl_weight"]], rel=1e-6)  # what each epoch trained with
    shares = frame[frame["tag"] == WATCHDOG_PENALTY_SHARE_TAG]["value"].tolist()
    m0 = recs[0]["metrics"]
    assert shares[0] == pytest.approx(m0["kl_weight"] * m0["kl"] / m0["recon"], rel=1e-5)
    if logger == "tb":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
        acc.Reload()
        texts = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors(DECISION_TEXT_TAG + "/text_summary")]
        assert any("set_kl_weight (applied)" in t for t in texts), texts


def test_the_same_fit_gives_the_same_decisions_with_either_logger(tmp_path):
    a = _fit(tmp_path / "a", TinyVAE(kl_weight=1.0), KLWatchdogCallback("ladder", reduce_at=2, ae_at=3), epochs=3,
             logger="tb")
    b = _fit(tmp_path / "b", TinyVAE(kl_weight=1.0), KLWatchdogCallback("ladder", reduce_at=2, ae_at=3), epochs=3,
             logger="csv")
    da, db = _decisions(Path(a.logger.log_dir)), _decisions(Path(b.logger.log_dir))
    assert [(r["action"], r["kl_weight"]) for r in da] == [(r["action"], r["kl_weight"]) for r in db]
    assert da[1]["action"] == "set_kl_weight"


def test_switch_to_ae_sets_the_module_flag_and_stop_ends_training(tmp_path):
    class StopAfterThree(Policy):
        name = "stop_after_three"
        requires = ("kl",)

        def _propose(self, epoch, m):
            if epoch == 1:
                return Decision("switch_to_ae", epoch, 0.0, "ae", "test: autoencoder now"), {}
            if epoch == 2:
                return Decision("stop", epoch, self.kl_weight, self.mode, "test: stop now"), {}
            return Decision("keep", epoch, self.kl_weight, self.mode, "test: keep"), {}

    module = TinyVAE(kl_weight=0.1)
    trainer = _fit(tmp_path, module, KLWatchdogCallback(StopAfterThree()), epochs=10)
    assert module.ae_mode is True and module.kl_weight == 0.0
    assert trainer.current_epoch == 3  # stopped cleanly after the third epoch, not at max_epochs
    recs = _decisions(Path(trainer.logger.log_dir))
    assert [r["action"] for r in recs] == ["keep", "switch_to_ae", "stop"]
    assert recs[2]["applied"] is True and recs[2]["via"] == "lightning"


def test_dry_run_changes_nothing_and_says_so(tmp_path):
    module = TinyVAE(kl_weight=1.0)
    trainer = _fit(tmp_path, module, KLWatchdogCallback("ladder", reduce_at=2, dry_run=True), epochs=3)
    assert module.kl_weight == 1.0
    cut = _decisions(Path(trainer.logger.log_dir))[1]
    assert cut["action"] == "set_kl_weight" and cut["applied"] is False and cut["note"] == "dry run"


def test_resume_restores_the_decided_weight_and_does_not_decide_twice(tmp_path):
    module = TinyVAE(kl_weight=1.0)
    first = _fit(tmp_path, module, KLWatchdogCallback("ladder", reduce_at=2, ae_at=10), epochs=3, checkpoint=True)
    cut = module.kl_weight
    assert cut < 1.0
    ckpt = next(Path(first.logger.log_dir).glob("checkpoints/*.ckpt"))
    fresh = TinyVAE(kl_weight=1.0)  # the constructor's weight: the callback's state must win
    # The same logger version: the resumed fit appends to the same run, as a user resuming a run does.
    lg = TensorBoardLogger(tmp_path, name="vae", version=0)
    cb = KLWatchdogCallback("ladder", reduce_at=2, ae_at=10)
    _fit(tmp_path, fresh, cb, epochs=5, logger=lg, ckpt_path=ckpt)
    assert fresh.kl_weight == pytest.approx(cut)
    lines = read_journal(Path(lg.log_dir) / "watchdog.jsonl")
    assert [r["epoch"] for r in lines if r.get("event") == "decision"] == [0, 1, 2, 3, 4]  # epochs 1-3 once
    resume = [r for r in lines if r.get("event") == "resume"]
    assert len(resume) == 1 and resume[0]["kl_weight"] == pytest.approx(cut)


def test_a_missing_attribute_lists_the_float_attributes(tmp_path):
    with pytest.raises(UsageError, match=r"no attribute 'beta' to steer; its float attributes: kl_weight"):
        _fit(tmp_path, TinyVAE(), KLWatchdogCallback(kl_weight_attr="beta"), epochs=1)


def test_no_readable_logger_is_a_clear_error(tmp_path):
    from lightning.pytorch.loggers.logger import DummyLogger

    with pytest.raises(UsageError, match=r"give the Trainer a TensorBoardLogger or CSVLogger \(it has DummyLogger\)"):
        _fit(tmp_path, TinyVAE(), KLWatchdogCallback(), epochs=1, logger=DummyLogger())


def test_an_unmapped_kl_tag_names_itself_and_tags_maps_it(tmp_path):
    with pytest.raises(InputError, match=r"needs metric\(s\) kl .*logged tags no term names: .*val_divergence"):
        _fit(tmp_path / "a", TinyVAE(kl_tag="divergence"), KLWatchdogCallback(), epochs=1)
    run_dir = tmp_path / "a" / "vae" / "version_0"
    assert not (run_dir / "watchdog.lock").exists()  # released although Lightning skips teardown on an error
    assert read_journal(run_dir / "watchdog.jsonl")[-1]["event"] == "exit"
    again = _fit(tmp_path / "a", TinyVAE(), KLWatchdogCallback(), epochs=1,  # the same run, in the same process
                 logger=TensorBoardLogger(tmp_path / "a", name="vae", version=0))
    assert _decisions(Path(again.logger.log_dir))[0]["metrics"]["kl"] > 0
    trainer = _fit(tmp_path / "b", TinyVAE(kl_tag="divergence"),
                   KLWatchdogCallback(tags={"val_divergence": "kl", "train_divergence": "kl"}), epochs=1)
    assert _decisions(Path(trainer.logger.log_dir))[0]["metrics"]["kl"] > 0


def test_a_second_watchdog_on_the_run_is_refused(tmp_path):
    run_dir = tmp_path / "vae" / "version_0"
    run_dir.mkdir(parents=True)
    with RunLock.acquire(run_dir, mode="test"):
        with pytest.raises(RunLockedError, match="already watched by another watchdog"):
            _fit(tmp_path, TinyVAE(), KLWatchdogCallback(), epochs=1,
                 logger=TensorBoardLogger(tmp_path, name="vae", version=0))
    assert not (run_dir / "watchdog.jsonl").exists()  # refused before writing anything


def test_a_fit_without_validation_is_decided_on_its_train_means(tmp_path):
    module = TinyVAE(kl_weight=1.0)
    trainer = _fit(tmp_path, module, KLWatchdogCallback("ladder", reduce_at=2), epochs=3, val=False)
    recs = _decisions(Path(trainer.logger.log_dir))
    assert [r["epoch"] for r in recs] == [0, 1, 2] and recs[1]["action"] == "set_kl_weight"
    assert module.kl_weight == pytest.approx(recs[1]["kl_weight"])
    assert recs[2]["metrics"]["kl_weight"] == pytest.approx(recs[1]["kl_weight"])  # epoch 3 trained with it


def test_bad_arguments_fail_at_construction():
    with pytest.raises(UsageError, match="unknown policy 'pid'"):
        KLWatchdogCallback("pid")
    with pytest.raises(UsageError, match="kl_weight_attr must be an attribute name"):
        KLWatchdogCallback(kl_weight_attr="kl weight")
    with pytest.raises(UsageError, match="maps to unknown term 'klx'"):
        KLWatchdogCallback(tags={"my_kl": "klx"})
    with pytest.raises(UsageError):
        KLWatchdogCallback("ladder", reduce_at=0)
    with pytest.raises(UsageError, match="policy 'geco' has no parameter 'profile'"):
        KLWatchdogCallback("geco", profile="seed")
    with pytest.raises(UsageError, match="profile must be one of auto, seed, generic, got 'seeds'"):
        KLWatchdogCallback(profile="seeds")
    assert KLWatchdogCallback(profile="seed").policy.judged_by == "seed"
    json.dumps(KLWatchdogCallback().state_dict())  # the checkpoint state is plain data


def test_profile_seed_applies_the_seeds_kl_limit_to_a_lightning_run(tmp_path):
    """profile="seed": the seed's "KL < 500" judges the module's run (a limit of 1 stands in for it at this
    scale, through a rules file, as check --profile seed --rules would); the default, generic, does not cut for
    it. The penalty-share rule is switched off (max_share none) so only the KL limit can act."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[kl]\ntarget = [0.1, 1.0]\n")
    kw = dict(reduce_at=2, ae_at=10, stop_at=10, max_share=None, rules=str(rules))
    seed = _fit(tmp_path / "seed", TinyVAE(kl_weight=1e-3), KLWatchdogCallback("ladder", profile="seed", **kw),
                epochs=3)
    recs = _decisions(Path(seed.logger.log_dir))
    assert recs[1]["action"] == "set_kl_weight" and " > 1 after epoch 2" in recs[1]["reason"], recs[1]["reason"]
    assert recs[1]["reason"].endswith("[seed profile]")
    generic = _fit(tmp_path / "generic", TinyVAE(kl_weight=1e-3), KLWatchdogCallback("ladder", **kw), epochs=3)
    assert {r["action"] for r in _decisions(Path(generic.logger.log_dir))} == {"keep"}


def test_gradient_share_is_logged_at_its_cadence_and_checked(tmp_path, capsys):
    """A module that leaves its weighted terms and (mu, logvar) gets the gradient share logged every
    grad_share_every steps (6 steps an epoch here), and `vaediag check` reports it beside the value share."""
    from vaediag.cli import main

    trainer = _fit(tmp_path, TinyVAE(kl_weight=1e-3, grad_share=True),
                   KLWatchdogCallback("ladder", grad_share_every=4), epochs=3)
    run_dir = Path(trainer.logger.log_dir)
    frame = vaediag.load(run_dir).frame
    share = frame[frame["tag"] == "train/grad_share/kl"]
    assert share["step"].tolist() == [0, 4, 8, 12, 16]  # 18 steps, every 4th
    both = frame[frame["tag"].isin(["train/grad_share/kl", "train/grad_share/recon"])]
    sums = both.groupby("step")["value"].sum()
    assert sums.to_numpy() == pytest.approx(1.0)  # shares of one step add up to 1
    assert main(["check", str(run_dir)]) in (0, 1)
    out = capsys.readouterr().out
    assert "of the gradient at the encoder head" in " ".join(out.split())


def test_a_module_without_terms_gets_one_note_and_no_gradient_share(tmp_path):
    trainer = _fit(tmp_path, TinyVAE(), KLWatchdogCallback(grad_share_every=2), epochs=2)
    run_dir = Path(trainer.logger.log_dir)
    notes = [r["text"] for r in read_journal(run_dir / "watchdog.jsonl") if r.get("event") == "note"]
    assert len(notes) == 1 and "no gradient share" in notes[0]
    assert not vaediag.load(run_dir).frame["tag"].str.startswith("train/grad_").any()


def test_validating_every_other_epoch_applies_only_the_latest_decision(tmp_path):
    """check_val_every_n_epoch=2: two epochs complete at each validation; both are judged and journalled,
    only the latest one's change reaches the module, the other is journalled as superseded."""
    class CutEveryEpoch(Policy):
        name = "cut_every_epoch"
        requires = ("kl",)

        def _propose(self, epoch, m):
            return Decision("set_kl_weight", epoch, self.kl_weight / 2, "vae", f"test: halve after {epoch + 1}"), {}

    module = TinyVAE(kl_weight=1.0)
    trainer = _fit(tmp_path, module, KLWatchdogCallback(CutEveryEpoch()), epochs=4, check_val_every_n_epoch=2)
    recs = _decisions(Path(trainer.logger.log_dir))
    assert [(r["epoch"], r["applied"]) for r in recs] == [(0, False), (1, True), (2, False), (3, True)]
    assert recs[0]["note"].startswith("superseded by the decision after epoch 2")
    assert recs[1]["kl_weight"] == 0.5 and recs[3]["kl_weight"] == 0.25  # not 0.25 and 0.0625: one cut each time
    assert module.kl_weight == 0.25


def test_step_based_validation_is_decided_too(tmp_path):
    """check_val_every_n_epoch=None with val_check_interval in steps: validations are not at epoch ends (6 steps an
    epoch, a validation every 5: never at an epoch end), and the epochs still get their decisions."""
    trainer = _fit(tmp_path, TinyVAE(kl_weight=1.0), KLWatchdogCallback("ladder", reduce_at=2), epochs=4,
                   check_val_every_n_epoch=None, val_check_interval=5)
    recs = _decisions(Path(trainer.logger.log_dir))
    assert [r["epoch"] for r in recs] == sorted({r["epoch"] for r in recs}) and len(recs) >= 3
    assert any(r["action"] == "set_kl_weight" for r in recs)
