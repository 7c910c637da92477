"""TrainConfig: seed defaults, commented fields, unknown keys, value checks, files, the generated CLI."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import yaml

from train.__main__ import build_parser, config_from_args
from train.config import TrainConfig, config_from_dict, load_config_file, parse_layers, save_run_config
from vaediag.errors import ConfigError, InputError, UsageError


def test_defaults_are_the_seeds_final_recipe():
    c = TrainConfig()
    assert (c.kl_weight, c.w_l1, c.w_perceptual, c.w_ssim, c.w_edge, c.center_weight) == (1e-7, 1.0, 1.2, 0.5, 0.1, 3.0)
    assert (c.logdir, c.name, c.project, c.perceptual_weights, c.device) == (
        "logs/ear_teacher", "ear_vae", "ear_teacher", "auto", "auto")
    assert c.layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def test_every_field_has_a_default_and_a_comment():
    for f in fields(TrainConfig):
        assert f.metadata.get("help"), f"{f.name} has no comment"
        assert len(f.metadata["help"]) > 15, f.name


def test_seed_command_parses_as_written():
    argv = "--train-npy data/train.npy --val-npy data/val.npy --epochs 100".split()
    cfg = config_from_args(build_parser().parse_args(argv))
    assert (cfg.train_npy, cfg.val_npy, cfg.epochs) == ("data/train.npy", "data/val.npy", 100)
    assert cfg.kl_weight == 1e-7


def test_all_issue_flags_exist():
    argv = ("--kl-weight 1e-5 --latent-dim 2048 --ae --w-l1 1.0 --w-perceptual 1.2 --w-ssim 0.5 --w-edge 0.1 "
            "--center-weight 3.0 --image-size 128 --batch-size 4 --lr 1e-4 --logdir L --name N --checkpoint-dir C "
            "--device cpu --seed 7 --perceptual-weights none --perceptual-layers relu1_2,relu3_3").split()
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.ae and cfg.latent_dim == 2048 and cfg.image_size == 128 and cfg.layers == ("relu1_2", "relu3_3")
    assert (cfg.kl_weight, cfg.perceptual_weights, cfg.seed, cfg.checkpoint_dir) == (1e-5, "none", 7, "C")


def test_to_argv_round_trips():
    cfg = TrainConfig(kl_weight=3e-6, ae=True, epochs=3, name="x", perceptual_layers="relu2_2")
    assert config_from_args(build_parser().parse_args(cfg.to_argv())) == cfg


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="unknown key.*'kl_wieght'"):
        config_from_dict({"kl_wieght": 1e-5})


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("latent_dim", 4096, "latent_dim 4096 is out of range"),
        ("latent_dim", 0, "latent_dim 0 is out of range"),
        ("image_size", 100, "image_size 100 is not supported"),
        ("device", "tpu", "device 'tpu' is unknown"),
        ("perceptual_layers", "relu9_9", "unknown layer"),
        ("lr", -1.0, "lr must be > 0"),
        ("kl_weight", -1e-7, "kl_weight must be >= 0"),
        ("kl_weight", float("nan"), "kl_weight must be a finite number"),
        ("epochs", 0, "epochs must be >= 1"),
        ("lr_schedule", "step", "lr_schedule 'step' is unknown"),
        ("name", "a/b", "plain directory name"),
        ("batch_size", "8", "batch_size must be an integer"),
        ("ae", 1, "ae must be true or false"),
    ],
)
def test_bad_values_fail_with_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_parse_layers_all_and_order():
    assert parse_layers("all") == parse_layers("relu5_3,relu1_2,relu2_2,relu3_3,relu4_3")
    assert parse_layers(" relu3_3 , relu1_2 ") == ("relu1_2", "relu3_3")


def test_saved_files_load_back(tmp_path):
    cfg = TrainConfig(kl_weight=1e-5, latent_dim=32)
    save_run_config(cfg, tmp_path)
    assert load_config_file(tmp_path / "config.json") == cfg
    assert load_config_file(tmp_path / "hparams.yaml") == cfg
    assert yaml.safe_load((tmp_path / "hparams.yaml").read_text())["kl_weight"] == 1e-5


def test_changed_config_keeps_the_earlier_files(tmp_path):
    save_run_config(TrainConfig(kl_weight=1e-7), tmp_path)
    save_run_config(TrainConfig(kl_weight=1e-7), tmp_path)  # unchanged: nothing moves
    assert not list(tmp_path.glob("*before_resume*"))
    save_run_config(TrainConfig(kl_weight=1e-3), tmp_path)
    assert json.loads((tmp_path / "config.before_resume_1.json").read_text())["kl_weight"] == 1e-7
    assert (tmp_path / "hparams.before_resume_1.yaml").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["kl_weight"] == 1e-3


@pytest.mark.parametrize(
    "name, text, error, match",
    [
        ("c.json", '{"latent_dim": 8, "bogus": 1}', ConfigError, "unknown key.*'bogus'"),
        ("c.json", "{not json", ConfigError, "is not valid JSON"),
        ("c.yaml", "a: [1, 2", ConfigError, "is not valid YAML"),
        ("c.json", "[1, 2]", ConfigError, "must be a mapping"),
    ],
)
def test_bad_config_files(tmp_path, name, text, error, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(error, match=match):
        load_config_file(tmp_path / name)


def test_missing_config_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_config_file(tmp_path / "nope.json")


def test_config_file_then_flags(tmp_path):
    save_run_config(TrainConfig(latent_dim=32, kl_weight=1e-5), tmp_path)
    cfg = config_from_args(build_parser().parse_args(["--config", str(tmp_path / "config.json"), "--kl-weight", "0.5"]))
    assert (cfg.latent_dim, cfg.kl_weight) == (32, 0.5)


def test_config_and_resume_conflict(tmp_path):
    with pytest.raises(UsageError, match="either --resume"):
        config_from_args(build_parser().parse_args(["--config", "a.json", "--resume", "b.pt"]))
