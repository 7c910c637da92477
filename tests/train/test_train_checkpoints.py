"""Where checkpoints go: beside their run by default, under an explicit --checkpoint-dir on request, and
where they already were for runs checkpointed in the older layout (checkpoints/<project>/<name>/version_N).

Version numbers come from the log tree alone: no checkpoint tree makes a fresh logdir skip versions, two
logdirs of the same basename never share a version's checkpoints, and nothing is ever written into
another run's checkpoint directory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from train.__main__ import main as train_main
from train.config import TrainConfig, config_from_dict
from train.loop import load_checkpoint
from train.rundir import new_version_dirs
from trainhelp import ckpt_of, make_run_and_checkpoint, run_of, tiny_argv, tiny_data, tiny_overrides


def _digest(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _old_tree(root: Path, project: str = "proj", name: str = "run", versions=range(5)) -> dict[str, str]:
    """A checkpoint tree of the older layout, root/<project>/<name>/version_N/last.pt for each N."""
    for v in versions:
        d = root / project / name / f"version_{v}"
        d.mkdir(parents=True)
        (d / "last.pt").write_bytes(f"someone's checkpoint {v}".encode())
    return _digest(root)


def _cfg(logdir: Path, **kw) -> TrainConfig:
    return TrainConfig(logdir=str(logdir), name="run", **kw)


# --- no training: the directories a new run claims --------------------------------------------------


def test_default_is_beside_the_run_and_round_trips():
    cfg = TrainConfig()
    assert cfg.checkpoint_dir == "" and "--checkpoint-dir" not in cfg.to_argv()
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["checkpoint_dir"] == ""
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    explicit = cfg.replace(checkpoint_dir="/big/ckpt")
    argv = explicit.to_argv()
    assert argv[argv.index("--checkpoint-dir") + 1] == "/big/ckpt"
    from train.__main__ import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args(argv)) == explicit
    assert config_from_args(build_parser().parse_args(["--checkpoint-dir", ""])) == cfg  # '' = beside the run
    assert "beside the run" in build_parser().format_help()


def test_fresh_logdir_starts_at_version_0_beside_an_old_checkpoint_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = _old_tree(tmp_path / "checkpoints")  # versions 0-4 of the older layout, in the working directory
    run_dir, ckpt_dir, note = new_version_dirs(_cfg(Path("logs/proj")))
    assert run_dir == (tmp_path / "logs" / "proj" / "run" / "version_0").resolve()
    assert ckpt_dir == run_dir / "checkpoints" and ckpt_dir.is_dir() and note is None
    assert _digest(tmp_path / "checkpoints") == old
    run_dir, ckpt_dir, _ = new_version_dirs(_cfg(Path("logs/proj")))
    assert (run_dir.name, ckpt_dir) == ("version_1", run_dir / "checkpoints")


def test_two_logdirs_with_the_same_basename_share_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = new_version_dirs(_cfg(tmp_path / "exp_a" / "logs"))
    b = new_version_dirs(_cfg(tmp_path / "exp_b" / "logs"))
    assert a[0].name == b[0].name == "version_0"  # each logdir numbers its own runs
    assert a[1] == a[0] / "checkpoints" and b[1] == b[0] / "checkpoints" and a[1] != b[1]
    assert not (tmp_path / "checkpoints").exists()  # nothing in the working directory


def test_explicit_checkpoint_dir_takes_the_runs_version_and_never_enters_another_runs(tmp_path):
    disk = tmp_path / "disk2"
    old = _old_tree(disk, project="logs", versions=[0, 1, 2, 3, 4])  # another tree already under DIR
    run_dir, ckpt_dir, note = new_version_dirs(_cfg(tmp_path / "exp_a" / "logs", checkpoint_dir=str(disk)))
    assert run_dir.name == "version_0"  # the checkpoint tree does not push the fresh logdir's numbers on
    assert ckpt_dir == (disk / "logs" / "run" / "version_0_2").resolve() and ckpt_dir.is_dir()
    assert note == (f"warning: checkpoint directory {(disk / 'logs' / 'run' / 'version_0').resolve()} already "
                    "exists (another run's: a logdir of the same name 'logs' sharing --checkpoint-dir, or older "
                    f"runs); it is left alone and this run's checkpoints go to {ckpt_dir}")
    # A second logdir of the same basename sharing DIR: its version_0 goes to the next free name.
    run_b, ckpt_b, note_b = new_version_dirs(_cfg(tmp_path / "exp_b" / "logs", checkpoint_dir=str(disk)))
    assert run_b.name == "version_0" and ckpt_b.name == "version_0_3" and "version_0_3" in note_b
    assert _digest(disk) == old  # every file that was there is as it was
    # No collision: DIR/<project>/<name>/version_N, no note.
    run_c, ckpt_c, note_c = new_version_dirs(_cfg(tmp_path / "exp_c" / "proj", checkpoint_dir=str(disk)))
    assert ckpt_c == (disk / "proj" / "run" / "version_0").resolve() and note_c is None
    assert not (run_c / "checkpoints").exists()


# --- training ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_keeps_its_checkpoint_beside_it(tmp_path, npy, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    old = _old_tree(tmp_path / "checkpoints")  # an old tree with versions 0-4 in the working directory
    assert train_main(tiny_argv(tmp_path, npy)) == 0
    out = capsys.readouterr().out
    ckpt = ckpt_of(tmp_path).resolve()
    assert f"run directory: {run_of(tmp_path).resolve()}\n" in out
    assert f"checkpoint {ckpt}" in out  # the done line names it
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]
    payload = load_checkpoint(ckpt)
    assert payload["run_dir"] == str(run_of(tmp_path).resolve()) and payload["config"]["checkpoint_dir"] == ""
    assert yaml.safe_load((run_of(tmp_path) / "hparams.yaml").read_text())["checkpoint_dir"] == ""
    assert _digest(tmp_path / "checkpoints") == old
    # --resume continues it in place: the same last.pt, nothing new in the working directory.
    assert train_main(["--resume", str(ckpt), "--epochs", "2"]) == 0
    assert load_checkpoint(ckpt)["state"]["epoch"] == 2
    assert sorted(p.name for p in (tmp_path / "logs" / "proj" / "run").iterdir()) == ["version_0"]
    assert _digest(tmp_path / "checkpoints") == old


def test_explicit_checkpoint_dir_trains_there_without_overwriting(tmp_path, capsys):
    npy = tiny_data(tmp_path / "data")
    disk = tmp_path / "disk2"
    old = _old_tree(disk, versions=[0])
    argv = tiny_argv(tmp_path, npy, image_size=32, perceptual_weights="none", checkpoint_dir=str(disk))
    assert train_main(argv) == 0
    out, err = capsys.readouterr()
    taken = (disk / "proj" / "run" / "version_0").resolve()
    ckpt = taken.parent / "version_0_2" / "last.pt"
    assert f"checkpoint directory {taken} already exists" in err and str(ckpt.parent) in err
    assert f"checkpoint {ckpt}" in out and load_checkpoint(ckpt)["run_dir"] == str(run_of(tmp_path).resolve())
    assert not (run_of(tmp_path) / "checkpoints").exists()
    assert {k: v for k, v in _digest(disk).items() if k in old} == old
    assert train_main(argv) == 0  # the next run: version_1 in the logs and under DIR alike, said in one line
    out = capsys.readouterr().out
    assert f"checkpoints: {taken.parent / 'version_1'}\n" in out
    assert (taken.parent / "version_1" / "last.pt").is_file() and run_of(tmp_path, 1).is_dir()


@pytest.mark.slow
def test_a_checkpoint_of_the_old_layout_resumes_into_its_run_and_stays_where_it_is(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir, ckpt, _ = make_run_and_checkpoint(tmp_path, old_layout=True)
    assert ckpt == (tmp_path / "checkpoints" / "proj" / "run" / "version_0" / "last.pt").resolve()
    config_before = (run_dir / "config.json").read_text()
    assert train_main(["--resume", str(ckpt), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"resumed {ckpt} at step 2" in out and f"checkpoint {ckpt}" in out
    payload = load_checkpoint(ckpt)
    assert payload["state"]["global_step"] == 4 and payload["run_dir"] == str(run_dir)
    assert payload["config"]["checkpoint_dir"] == "checkpoints"  # its config as it was, but for the epochs
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt"]
    assert not (run_dir / "checkpoints").exists()  # not moved, not copied
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["version_0"]  # no new version
    assert json.loads((run_dir / "config.before_resume_1.json").read_text()) == json.loads(config_before)
    # A --checkpoint-dir given with --resume does not move a run's checkpoint either; the line says so, and
    # the run's config keeps saying where its checkpoints are.
    assert train_main(["--resume", str(ckpt), "--epochs", "3", "--checkpoint-dir", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert f"--checkpoint-dir is for new runs: a resumed run keeps saving beside its checkpoint, {ckpt}\n" in out
    assert "overrides: epochs 2 -> 3" in out and "checkpoint_dir" not in out.split("overrides:")[1].splitlines()[0]
    payload = load_checkpoint(ckpt)
    assert payload["state"]["epoch"] == 3 and payload["config"]["checkpoint_dir"] == "checkpoints"
    assert json.loads((run_dir / "config.json").read_text())["checkpoint_dir"] == "checkpoints"
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("layout", ["new", "old"])
def test_a_new_run_after_old_ones_takes_the_next_version_of_the_log_tree(tmp_path, monkeypatch, layout):
    monkeypatch.chdir(tmp_path)
    make_run_and_checkpoint(tmp_path, old_layout=layout == "old")  # version_0 of the logs, in either layout
    if layout == "old":
        _old_tree(tmp_path / "checkpoints", versions=[7])  # a stray higher version of the old tree
    cfg = TrainConfig(**tiny_overrides(tmp_path, (Path("t"), Path("v"))))
    run_dir, ckpt_dir, note = new_version_dirs(cfg)
    assert run_dir.name == "version_1" and ckpt_dir == run_dir / "checkpoints" and note is None
