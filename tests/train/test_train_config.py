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


# --- hostile config files (issue 10): one line, quickly, nothing read that is not a small regular file ---


_BOMB = "\n".join([f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")])


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("c.yaml", 'a: &a ["lol", "lol", "lol"]\n' + _BOMB, r"uses a YAML alias \(\*a at line 2\)"),
        ("c.yaml", "kl_weight: &w 0.1\nw_l1: *w\n", r"uses a YAML alias \(\*w at line 2\)"),
        ("c.yaml", "- " * 40 + "x\n", "nests more than 8 levels deep"),
        ("c.yaml", "a: " + "[" * 2000 + "]" * 2000, "not valid YAML: exceeded maximum nesting depth"),
        ("c.json", "[" * 30000 + "]" * 30000, "nested too deeply"),
        ("c.json", "0", "must be a mapping"),
        ("c.yaml", "false", "must be a mapping"),
        ("c.yaml", "1: 2\nb: 3\n", r"unknown key\(s\) 'b', 1"),
        ("c.json", '{"kl_weight": 1' + "0" * 400 + "}", "kl_weight must be a finite number, got an integer of 401 digits"),
        ("c.json", '{"name": "a\\u0000b"}', "name must be text without NUL"),
        ("c.json", '{"logdir": "\\ud800"}', "logdir must be text without NUL characters or lone surrogates"),
        ("c.json", '{"name": "' + "n" * 300 + '"}', "must be a plain directory name"),
        ("c.json", '{"seed": -1}', "seed must be in 0..2"),
        ("c.json", '{"train_npy": [' + "1, " * 500 + '1]}', r"train_npy must be a string, got \[1, 1, .*\.\.\.$"),
    ],
)
def test_hostile_config_files_are_refused_with_one_line(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match) as exc:
        load_config_file(tmp_path / name)
    assert "\n" not in exc.value.message and len(exc.value.message) < 300


@pytest.mark.parametrize("make, match", [
    (lambda p: __import__("os").mkfifo(p), "is a FIFO"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_text("{" + " " * (1 << 17) + "}"), "131,074 bytes; the limit is 65,536"),
    (lambda p: p.write_bytes(b'{"name": "\xff"}'), "is not UTF-8"),
])
def test_config_file_that_is_not_a_small_text_file(tmp_path, make, match):
    make(tmp_path / "c.json")
    with pytest.raises(InputError, match=match):
        load_config_file(tmp_path / "c.json")


def test_config_file_from_a_device_is_refused():
    with pytest.raises(InputError, match="'/dev/zero' is a character device"):
        load_config_file("/dev/zero")


def test_empty_yaml_config_is_the_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("# nothing set\n")
    assert load_config_file(tmp_path / "c.yaml") == TrainConfig()


# Property tests: whatever a config file holds, loading it gives a config or one ConfigError/InputError line.

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_FIELD_NAMES = [f.name for f in fields(TrainConfig)]
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_configs = st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=8), _values, max_size=6)


def _load_or_refuse(path):
    try:
        cfg = load_config_file(path)
    except (ConfigError, InputError) as exc:
        assert exc.message and "\n" not in exc.message and len(exc.message) < 400, exc.message
        return None
    assert isinstance(cfg, TrainConfig)
    return cfg


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_configs, as_yaml=st.booleans())
def test_any_mapping_in_a_config_file_loads_or_is_refused_with_one_line(tmp_path, data, as_yaml):
    p = tmp_path / ("c.yaml" if as_yaml else "c.json")
    try:
        text = yaml.safe_dump(data) if as_yaml else json.dumps(data)
    except (ValueError, yaml.YAMLError):
        return  # not representable (e.g. NaN in strict JSON is fine, but some floats are not in YAML)
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    cfg = _load_or_refuse(p)
    if cfg is not None:  # what loads, saves and loads back the same
        saved = tmp_path / "saved"
        saved.mkdir(exist_ok=True)
        save_run_config(cfg, saved)
        assert load_config_file(saved / "config.json") == cfg
        assert load_config_file(saved / "hparams.yaml") == cfg


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300), as_yaml=st.booleans())
def test_any_text_in_a_config_file_loads_or_is_refused_with_one_line(tmp_path, text, as_yaml):
    p = tmp_path / ("c.yaml" if as_yaml else "c.json")
    p.write_bytes(text.encode("utf-8", "surrogatepass"))
    _load_or_refuse(p)


def test_a_run_config_from_before_the_arch_field_loads_as_the_model_it_trained(tmp_path):
    """`python -m train --config <old run>/config.json` (the form of check's next command) trains the model that
    run trained: the flat model with the perceptual term on every step; a hand-written config gets the defaults."""
    import json

    from train.config import load_config_file

    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("arch", "perceptual_every")}
    old["perceptual_backbone"] = "ST-LPIPS shift-tolerant VGG16"  # what the trainer fills in: a run wrote this file
    (tmp_path / "run.json").write_text(json.dumps(old))
    cfg = load_config_file(tmp_path / "run.json")
    assert (cfg.arch, cfg.perceptual_every) == ("flat", 1)
    (tmp_path / "mine.json").write_text(json.dumps({"kl_weight": 1e-6}))
    mine = load_config_file(tmp_path / "mine.json")
    assert (mine.arch, mine.perceptual_every) == (TrainConfig().arch, TrainConfig().perceptual_every) == ("resnet", 4)
