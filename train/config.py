"""The training configuration: one dataclass, every field defaulted and explained.

The whole config travels with the run: ``config.json`` and a Lightning-style ``hparams.yaml`` in the run
directory, and the same dict inside every checkpoint. Loading a dict with a key this dataclass does not
know fails with the key's name, so a typo in a saved config never silently trains with a default.

The command line is generated from the fields (``kl_weight`` -> ``--kl-weight``), so the help text of a
flag is the comment of its field and the two cannot drift apart.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from vaediag.atomic import atomic_write
from vaediag.errors import ConfigError
from vaediag.safeio import read_text

from train.layout import latent_layout

__all__ = [
    "TrainConfig",
    "PERCEPTUAL_LAYERS",
    "ARCHITECTURE_FIELDS",
    "config_from_dict",
    "load_config_file",
    "CONFIG_FILE_MAX",
    "save_run_config",
    "parse_layers",
]

# Layer names of the VGG16 trunk whose activations the perceptual distance compares (LPIPS's choice).
PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")

# Fields that fix the shapes of the model's weights: a resumed run cannot change them.
ARCHITECTURE_FIELDS = ("image_size", "channels", "arch", "latent_dim", "latent_channels", "base_channels")

_DEVICES = ("auto", "cpu", "cuda")
_PRECISIONS = ("fp32", "bf16")
_ARCHS = ("resnet", "flat")
_SCHEDULES = ("constant", "cosine")


def _f(default: Any, help: str, *, cli: bool = True) -> Any:
    """A field with its comment; the comment is also the ``--flag``'s help text."""
    return field(default=default, metadata={"help": help, "cli": cli})


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the seed's final recipe."""

    # --- data --------------------------------------------------------------------------------------
    train_npy: str = _f("data/train.npy", "training images, .npy: (N,H,W), (N,H,W,C) or (N,C,H,W), uint8 or float in [0,1]")
    val_npy: str = _f("data/val.npy", "validation images, same layout rules; must match the training images' shape")
    image_size: int = _f(0, "side length the model trains at (power of 2, 32..256); 0 = the data's own size; "
                            "data of another size is resized on load")
    channels: int = _f(0, "image channels (1 or 3); filled in from the data", cli=False)

    # --- model -------------------------------------------------------------------------------------
    arch: str = _f("resnet", "model: resnet (residual blocks, spatial latent channels x side x side) or flat "
                             "(the seed's conv stack with a flat latent vector; learns one output for every input)")
    latent_dim: int = _f(256, "latent size: the number of latent values (1..2048); resnet lays them out as "
                              "channels x side x side (train/layout.py: 2048 at 64 px = 8 x 16 x 16)")
    latent_channels: int = _f(0, "resnet: channels of the latent map (0 = chosen from latent_dim and image size)")
    base_channels: int = _f(32, "channels of the first conv stage; doubles per stage up to 4x (resnet) or 8x (flat)")
    ae: bool = _f(False, "Option B of the seed: a plain autoencoder (z = mu, KL weight 0)")

    # --- loss weights (the seed's final recipe) ----------------------------------------------------
    kl_weight: float = _f(1e-7, "weight of the KL term (beta)")
    kl_warmup_steps: int = _f(0, "ramp the KL weight linearly from 0 over this many steps (0 = off)")
    w_l1: float = _f(1.0, "weight of the centre-weighted L1 reconstruction term")
    w_perceptual: float = _f(1.2, "weight of the VGG16 perceptual distance")
    w_ssim: float = _f(0.5, "weight of the SSIM loss (1 - SSIM)")
    w_edge: float = _f(0.1, "weight of the edge loss |grad recon - grad x|")
    center_weight: float = _f(3.0, "L1 weight at the image centre relative to the corners (1 = plain L1)")

    # --- perceptual backbone -----------------------------------------------------------------------
    perceptual_weights: str = _f("auto", "VGG16 weights: auto (the trunk shipped in the stlpips-pytorch wheel), "
                                         "PATH (a torchvision-format VGG16 state dict) or none (term off)")
    perceptual_layers: str = _f(",".join(PERCEPTUAL_LAYERS), "comma-separated VGG16 layers to compare "
                                "(" + ", ".join(PERCEPTUAL_LAYERS) + ") or 'all'")
    perceptual_every: int = _f(4, "compute the perceptual term on every Nth step only (global step mod N = 0), "
                                  "weighted N x there so its expected contribution is unchanged (1 = every step)")
    perceptual_backbone: str = _f("", "which backbone ran; filled in at start", cli=False)

    # --- optimisation ------------------------------------------------------------------------------
    epochs: int = _f(100, "epochs to train (a resumed run continues up to this many)")
    batch_size: int = _f(32, "images per step per process")
    lr: float = _f(2e-4, "peak learning rate (Adam)")
    lr_schedule: str = _f("cosine", "learning-rate schedule after warm-up: constant or cosine (decays to min_lr)")
    warmup_steps: int = _f(100, "linear learning-rate warm-up steps")
    min_lr: float = _f(2e-5, "learning rate at the end of the cosine schedule")
    weight_decay: float = _f(0.0, "Adam weight decay")
    grad_clip: float = _f(1.0, "clip the gradient norm to this value (0 = off)")
    seed: int = _f(0, "random seed for weights, sampling and batch order")

    # --- logging and checkpoints -------------------------------------------------------------------
    logdir: str = _f("logs/ear_teacher", "project directory; runs go to LOGDIR/NAME/version_N")
    name: str = _f("ear_vae", "run name inside the project directory")
    checkpoint_dir: str = _f("", "where last.pt goes: empty = beside the run, in LOGDIR/NAME/version_N/checkpoints/; "
                                 "DIR (e.g. another disk) = DIR/<project>/NAME/version_N/ (project = LOGDIR's last "
                                 "part, N = the run's version; version_N_2 when that one is taken)")
    log_every: int = _f(1, "log the train scalars every N steps (1 = every step)")
    grad_share_every: int = _f(100, "every N steps, log each weighted loss term's gradient norm and share at the "
                                    "latent head (mu, logvar) and the KL's cosine with the rest (train/grad_norm/*, "
                                    "train/grad_share/*, train/grad_cos/kl), on the first step of each N that "
                                    "computes every term; one measurement costs about 1.2 average steps (python -m "
                                    "bench grad_share), about 1.2 percent of the training time at 100; 0 = off")
    grid_images: int = _f(8, "validation images shown in the reconstruction grid")
    resume: str = _f("", "checkpoint to resume: same run directory, same step counter")
    device: str = _f("auto", "auto (CUDA when present), cpu or cuda")
    quiet: bool = _f(False, "no progress bar; one line per epoch")

    # --- how the steps run (a resume may change these: they change speed, not the model) -----------
    precision: str = _f("fp32", "fp32, or bf16: the model's and the VGG trunk's forward passes under bfloat16 "
                                "autocast (CUDA or CPU); the loss terms are reduced in fp32; no grad scaler")
    channels_last: bool = _f(False, "model, VGG trunk and input batches in channels_last memory format "
                                    "(faster convolutions on tensor cores; same maths)")
    compile: bool = _f(False, "torch.compile the model for the training steps (validation runs it as is; the "
                              "first steps compile: minutes on a CPU); a compiler failure stops the run in one line")
    sync_every: int = _f(0, "steps between the checks that move the logged losses to the host and let every "
                            "process agree to stop (signal, non-finite loss, failed write); also at each epoch "
                            "end; 0 = 1 on CPU, 20 on CUDA")
    val_feature_cache_mb: int = _f(256, "MiB of the val images' perceptual (VGG) features kept on the val device "
                                        "from the first validation on, so later ones compute them once instead "
                                        "of every epoch (the same numbers); batches past it are computed every "
                                        "epoch; 0 = off, for a run at the edge of its device memory")

    def __post_init__(self) -> None:
        _validate(self)

    # --------------------------------------------------------------------------------------------
    @property
    def project(self) -> str:
        """The project directory's name (``logs/ear_teacher`` -> ``ear_teacher``); names the run's checkpoint
        directory under an explicit ``checkpoint_dir``."""
        return Path(self.logdir).name or "default"

    @property
    def layers(self) -> tuple[str, ...]:
        return parse_layers(self.perceptual_layers)

    def loss_weights(self, kl_weight: float) -> dict[str, float]:
        """Each loss term's weight by canonical term (``terms.LOSS_TERMS``), with the KL weight in effect."""
        return {"recon": self.w_l1, "perceptual": self.w_perceptual, "ssim_loss": self.w_ssim,
                "edge": self.w_edge, "kl": kl_weight}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)

    def to_argv(self) -> list[str]:
        """The ``python -m train`` flags that reproduce this config (fields left at their default are omitted)."""
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.metadata.get("cli", True) or value == f.default:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
            else:
                argv += [flag, repr(value) if isinstance(value, float) else str(value)]
        return argv


def parse_layers(spec: str) -> tuple[str, ...]:
    """``"relu1_2,relu3_3"`` -> ``("relu1_2", "relu3_3")`` in trunk order; ``"all"`` -> every layer."""
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    if names == ["all"]:
        return PERCEPTUAL_LAYERS
    bad = [n for n in names if n not in PERCEPTUAL_LAYERS]
    if bad or not names:
        raise ConfigError(
            f"perceptual_layers {spec!r}: unknown layer(s) {bad or '(none given)'} "
            f"(choose from {', '.join(PERCEPTUAL_LAYERS)} or 'all')"
        )
    return tuple(n for n in PERCEPTUAL_LAYERS if n in names)


def _validate(cfg: TrainConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    for f in fields(cfg):
        value = getattr(cfg, f.name)
        kind = _field_type(f.name)
        if kind is bool:
            need(isinstance(value, bool), f"{f.name} must be true or false, got {_short(value)}")
        elif kind is int:
            need(isinstance(value, int) and not isinstance(value, bool),
                 f"{f.name} must be an integer, got {_short(value)}")
        elif kind is float:
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value),
                 f"{f.name} must be a finite number, got {_short(value)}")
        elif kind is str:
            need(isinstance(value, str), f"{f.name} must be a string, got {_short(value)}")
            need("\0" not in value and _utf8(value),
                 f"{f.name} must be text without NUL characters or lone surrogates, got {_short(value)}")

    size = cfg.image_size
    need(size == 0 or (32 <= size <= 256 and size & (size - 1) == 0),
         f"image_size {size} is not supported (choose 0 = the data's size, or 32, 64, 128, 256)")
    need(cfg.channels in (0, 1, 3), f"channels {cfg.channels} is not supported (choose 1 or 3)")
    need(1 <= cfg.latent_dim <= 2048, f"latent_dim {cfg.latent_dim} is out of range (choose 1..2048)")
    need(4 <= cfg.base_channels <= 256, f"base_channels {cfg.base_channels} is out of range (choose 4..256)")
    need(cfg.arch in _ARCHS, f"arch {cfg.arch!r} is unknown (choose {', '.join(_ARCHS)})")
    need(cfg.perceptual_every >= 1, f"perceptual_every must be >= 1, got {cfg.perceptual_every}")
    need(0 <= cfg.latent_channels <= 256, f"latent_channels {cfg.latent_channels} is out of range (choose 0..256)")
    if cfg.arch == "resnet" and size and 1 <= cfg.latent_dim <= 2048:  # size 0: checked once the data's is known
        try:
            latent_layout(size, cfg.latent_dim, cfg.latent_channels)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    for name in ("kl_weight", "w_l1", "w_perceptual", "w_ssim", "w_edge", "weight_decay", "grad_clip", "min_lr"):
        need(getattr(cfg, name) >= 0, f"{name} must be >= 0, got {getattr(cfg, name)!r}")
    need(cfg.center_weight > 0, f"center_weight must be > 0, got {cfg.center_weight!r}")
    need(cfg.lr > 0, f"lr must be > 0, got {cfg.lr!r}")
    need(0 <= cfg.seed < 2**62, f"seed must be in 0..2**62, got {_short(cfg.seed)}")
    need(cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    for name in ("warmup_steps", "kl_warmup_steps", "grid_images"):
        need(getattr(cfg, name) >= 0, f"{name} must be >= 0, got {getattr(cfg, name)}")
    need(cfg.log_every >= 1, f"log_every must be >= 1, got {cfg.log_every}")
    need(cfg.grad_share_every >= 0, f"grad_share_every must be >= 0 (0 = off), got {cfg.grad_share_every}")
    need(0 <= cfg.val_feature_cache_mb <= 2**20,
         f"val_feature_cache_mb must be in 0..1048576 (0 = off), got {cfg.val_feature_cache_mb}")
    need(cfg.lr_schedule in _SCHEDULES,
         f"lr_schedule {cfg.lr_schedule!r} is unknown (choose {', '.join(_SCHEDULES)})")
    need(cfg.device in _DEVICES, f"device {cfg.device!r} is unknown (choose {', '.join(_DEVICES)})")
    need(cfg.precision in _PRECISIONS, f"precision {cfg.precision!r} is unknown (choose {', '.join(_PRECISIONS)})")
    need(cfg.sync_every >= 0, f"sync_every must be >= 0 (0 = automatic), got {cfg.sync_every}")
    need(bool(cfg.perceptual_weights), "perceptual_weights is empty (choose auto, none or a PATH)")
    need(bool(cfg.name) and "/" not in cfg.name and cfg.name not in (".", "..") and len(os.fsencode(cfg.name)) <= 200,
         f"name {_short(cfg.name)} must be a plain directory name (at most 200 bytes)")
    parse_layers(cfg.perceptual_layers)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")  # a path from argv may carry its non-UTF-8 bytes this way
        return True
    except UnicodeEncodeError:
        return False


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


_TYPES: dict[str, type] = {}


def _field_type(name: str) -> type:
    # Annotations are strings under `from __future__ import annotations`; the defaults carry the type.
    if not _TYPES:
        for f in fields(TrainConfig):
            _TYPES[f.name] = type(f.default) if f.default is not MISSING else str
    return _TYPES[name]


def config_from_dict(data: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
    """Build a config from a dict; an unknown key raises ConfigError naming it."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must be a mapping of field names to values, got {type(data).__name__}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted((k for k in data if k not in known), key=repr)  # YAML keys may be numbers, dates, ...
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        shown = ", ".join(_short(k) for k in unknown[:5]) + more
        raise ConfigError(f"{source}: unknown key(s) {shown} "
                          f"(valid keys are the TrainConfig fields, e.g. kl_weight, latent_dim)")
    values = dict(data)
    for k, v in values.items():  # JSON/YAML give ints for floats written as 1 or 0
        if _field_type(k) is float and isinstance(v, int) and not isinstance(v, bool):
            try:
                values[k] = float(v)
            except OverflowError:
                raise ConfigError(f"{source}: {k} must be a finite number, got an integer of {len(str(v))} "
                                  "digits") from None
    try:
        return TrainConfig(**values)
    except ConfigError as exc:  # say where the bad value came from
        raise ConfigError(f"{source}: {exc.message}") from None


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about values a user may not have meant."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: A training config is about a kilobyte; a file 64 times that is not one (and would cost seconds to parse).
CONFIG_FILE_MAX = 64 * 1024
#: How deeply a config file may nest (a config is a flat mapping; 8 leaves room for hand-written oddities).
CONFIG_MAX_DEPTH = 8


# Config fields a run written before they existed lacks, with the value that run used: every such run trained
# the flat model with the perceptual term on every step. Filled in for what the trainer wrote (a checkpoint's
# config, a run's config.json: they carry ``perceptual_backbone``), never for a config written by hand.
LEGACY_RUN_FIELDS: dict[str, Any] = {"arch": "flat", "perceptual_every": 1}


def load_config_file(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a ``config.json`` or ``hparams.yaml`` written by a run (or by hand).

    The file is read through :func:`vaediag.safeio.read_text` (regular files only, never a blocking open,
    at most :data:`CONFIG_FILE_MAX` bytes). YAML is scanned before it is built: an alias (``*name``, the
    "billion laughs" expansion) or nesting deeper than :data:`CONFIG_MAX_DEPTH` is refused with one line,
    so no config file can make the trainer spend time or memory before it says what is wrong.
    A run's own config.json (it names its ``perceptual_backbone``) written before a field existed gets the
    value that run used (:data:`LEGACY_RUN_FIELDS`), so ``--config`` of an old run trains the same model.
    """
    p = Path(path)
    text = read_text(p, what="config file", max_bytes=CONFIG_FILE_MAX)
    is_yaml = p.suffix in (".yaml", ".yml")
    kind = "YAML" if is_yaml else "JSON"
    try:
        data = _parse_yaml(text, p) if is_yaml else json.loads(text)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"config file {p} is nested too deeply to be a config (a config is a flat mapping "
                          "of field names to values)") from None
    except Exception as exc:  # json or yaml syntax: one line with the parser's message
        raise ConfigError(f"config file {p} is not valid {kind}: {_parser_message(exc)}") from None
    if data is None:  # an empty file (or one holding only comments): the defaults
        data = {}
    if isinstance(data, dict) and "perceptual_backbone" in data:
        data = {**LEGACY_RUN_FIELDS, **data}
    return config_from_dict(data, source=f"config file {p}")


def _parser_message(exc: Exception) -> str:
    """One line from a json or yaml error (YAML's first line is often its context, not the problem)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem:
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{problem}{where}".replace("\n", " ")
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _parse_yaml(text: str, p: Path) -> Any:
    """``yaml.safe_load`` after a scan of the event stream that refuses aliases and deep nesting."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark is not None else "?"
            raise ConfigError(f"config file {p} uses a YAML alias (*{event.anchor} at line {line}); a training "
                              "config takes plain values: write each value out")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > CONFIG_MAX_DEPTH:
                raise ConfigError(f"config file {p} nests more than {CONFIG_MAX_DEPTH} levels deep; a training "
                                  "config is a flat mapping of field names to values")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return yaml.load(text, Loader=loader)


def save_run_config(cfg: TrainConfig, run_dir: str | os.PathLike[str]) -> None:
    """Write ``config.json`` and ``hparams.yaml`` into the run directory, atomically.

    A resumed run whose config changed keeps the earlier files as ``config.before_resume_K.json`` /
    ``hparams.before_resume_K.yaml`` (nothing is overwritten in place without a copy).
    """
    import yaml

    d = Path(run_dir)
    data = cfg.to_dict()
    new_json = json.dumps(data, indent=2) + "\n"
    cfg_path, hp_path = d / "config.json", d / "hparams.yaml"
    if os.path.lexists(cfg_path):
        if read_text(cfg_path, what="config file", max_bytes=CONFIG_FILE_MAX) == new_json:
            return
        k = 1
        while (d / f"config.before_resume_{k}.json").exists():
            k += 1
        os.replace(cfg_path, d / f"config.before_resume_{k}.json")
        if hp_path.exists():
            os.replace(hp_path, d / f"hparams.before_resume_{k}.yaml")
    atomic_write(cfg_path, new_json)
    atomic_write(hp_path, yaml.safe_dump(data, sort_keys=False))
