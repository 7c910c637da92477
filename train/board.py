"""What the trainer writes for TensorBoard's dashboards beside its scalars: the Custom Scalars layout, the
HParams session and the text of each watchdog decision the loop applied.

All of it goes into the run's own event files (never into a sub-directory, which TensorBoard and vaediag's
reader would take for a second run), and none of it is a scalar, so ``vaediag check`` and ``report`` read a
run as before (the reader keeps the session's config values as run metadata; config.json wins over them).

* **Custom Scalars** (:func:`layout_summary`): the charts of :func:`vaediag.terms.board_layout`. The plugin
  matches each chart's tags as regular expressions with ``re.match``, so each tag goes in escaped and
  anchored (``^val/psnr$``; a bare ``val/psnr`` would draw ``val/psnr_grey`` too). TensorBoard shows the
  latest layout of a run, so a resumed run writes it again (with the terms of before and after the resume)
  and the charts still appear once.
* **HParams** (:func:`experiment_summary`, :func:`session_start_summary`, :func:`session_end_summary`): the
  config values (:func:`hparam_values`) at run start, and how the run ended when it ends. The metric columns
  are scalar tags the trainer logs anyway (``terms.HPARAMS_METRIC_TAGS``): TensorBoard shows the last value
  of each, so the final val metrics and kl_weight are never written twice. The protos are built here from
  TensorBoard's own ``api_pb2`` / ``plugin_data_pb2`` rather than with ``torch.utils.tensorboard.summary.
  hparams``, which writes booleans as numbers (it tests ``isinstance(v, (int, float))`` first), sets no start
  or end time and always ends a session with success. A resumed run writes its session start (its config,
  overrides included) and end again, but TensorBoard keeps the *first* of each in a run directory: its
  HParams row shows the config the run started with and its first end status, while the metric columns
  follow the latest scalars (vaediag's reader, and config.json, have the latest config).
* **Decisions** (:func:`decision_text`): one line of text per applied control.json.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from vaediag import terms
from vaediag.watch.control import Control, reason_line

from train.config import TrainConfig

__all__ = [
    "HPARAMS_LEFT_OUT",
    "HPARAM_TEXT_MAX",
    "END_STATUSES",
    "layout_summary",
    "layout_terms",
    "hparam_values",
    "experiment_summary",
    "session_start_summary",
    "session_end_summary",
    "decision_text",
]

# TrainConfig fields the HParams tab leaves out, and why: paths (long, machine-specific, and no setting of
# the model or its training) and how the process runs. Every other field is a column.
HPARAMS_LEFT_OUT: dict[str, str] = {
    "train_npy": "a path",
    "val_npy": "a path",
    "logdir": "a path",
    "checkpoint_dir": "a path",
    "resume": "a path, and which session, not what is trained",
    "device": "where it runs",
    "quiet": "what it prints",
}
#: A string column longer than this is cut (a --perceptual-weights PATH, the backbone's description).
HPARAM_TEXT_MAX = 120
END_STATUSES = ("success", "failure")


def layout_summary(groups: tuple[terms.ChartGroup, ...]) -> Summary:
    """The Custom Scalars layout of ``groups`` as the Summary the plugin reads (tag ``custom_scalars__config__``)."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout(category=[
        layout_pb2.Category(title=g.title, closed=g.closed, chart=[
            layout_pb2.Chart(title=c.title, multiline=layout_pb2.MultilineChartContent(
                tag=[_anchored(t) for t in c.tags]))
            for c in g.charts])
        for g in groups])
    tensor = TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()], tensor_shape=TensorShapeProto())
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    return Summary(value=[Summary.Value(tag=terms.CUSTOM_SCALARS_TAG, tensor=tensor, metadata=meta)])


def layout_terms(session_terms: list[str], changed: dict[str, tuple[Any, Any]],
                 val_grey: Any) -> tuple[list[str], list[str]]:
    """The loss terms and val metrics a run directory holds, for the Custom Scalars layout: this session's
    (``session_terms``, the grey/colour metrics by what ``val_grey``, the val set's grey mask, holds), and after
    a resume that ``changed`` them those of the config it resumed too (a term the resume turned off keeps its
    chart; TensorBoard shows the latest layout of a run)."""
    loss = list(session_terms)
    if "perceptual" not in loss and changed.get("perceptual_weights", ("none",))[0] != "none":
        loss = list(terms.LOSS_TERMS)
    new_val = "val_npy" in changed  # the earlier val set may have held the other kind of image
    has = {"grey": new_val or bool(val_grey.any()), "colour": new_val or bool((~val_grey).any())}
    metrics = [t for t in terms.METRIC_TERMS if has.get(t.rpartition("_")[2], True)]
    return loss, metrics


def _anchored(tag: str) -> str:
    """A regular expression that matches exactly ``tag``."""
    return f"^{re.escape(tag)}$"


def hparam_values(cfg: TrainConfig) -> dict[str, bool | float | str]:
    """The config values the HParams tab shows: every field but :data:`HPARAMS_LEFT_OUT`, numbers as floats
    (the tab's one number type), strings cut to :data:`HPARAM_TEXT_MAX` characters."""
    out: dict[str, bool | float | str] = {}
    for f in fields(cfg):
        if f.name in HPARAMS_LEFT_OUT:
            continue
        v = getattr(cfg, f.name)
        if isinstance(v, bool):
            out[f.name] = v
        elif isinstance(v, (int, float)):
            out[f.name] = float(v)
        else:
            text = str(v)
            out[f.name] = text if len(text) <= HPARAM_TEXT_MAX else text[: HPARAM_TEXT_MAX - 1] + "\u2026"
    return out


def experiment_summary() -> Summary:
    """The HParams columns: the config fields (typed, described by their help text) and the metric tags.

    The same for every run of this trainer: TensorBoard takes the experiment of the first run of a log
    directory that has one, so no run may declare fewer columns than another."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    types = {bool: api_pb2.DATA_TYPE_BOOL, int: api_pb2.DATA_TYPE_FLOAT64, float: api_pb2.DATA_TYPE_FLOAT64,
             str: api_pb2.DATA_TYPE_STRING}
    hparam_infos = [api_pb2.HParamInfo(name=f.name, type=types[type(f.default)], description=f.metadata["help"])
                    for f in fields(TrainConfig) if f.name not in HPARAMS_LEFT_OUT]
    metric_infos = []
    for t in terms.HPARAMS_METRIC_TAGS:
        split, term = t.split("/", 1)
        info = terms.TERM_INFO[term]
        unit = f" ({info.unit})" if info.unit else ""
        last = "last logged step" if split == "train" else "last epoch"
        metric_infos.append(api_pb2.MetricInfo(
            name=api_pb2.MetricName(tag=t), display_name=f"{t}{unit}",
            description=f"{info.label}, {split}, at the {last}",
            dataset_type=api_pb2.DATASET_TRAINING if split == "train" else api_pb2.DATASET_VALIDATION))
    experiment = api_pb2.Experiment(hparam_infos=hparam_infos, metric_infos=metric_infos)
    return _hparams_summary(terms.HPARAMS_EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def session_start_summary(cfg: TrainConfig, *, start_time: float) -> Summary:
    """This run's config values (:func:`hparam_values`), started at ``start_time`` (seconds since the epoch)."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=start_time)
    for k, v in hparam_values(cfg).items():
        if isinstance(v, bool):
            start.hparams[k].bool_value = v
        elif isinstance(v, float):
            start.hparams[k].number_value = v
        else:
            start.hparams[k].string_value = v
    return _hparams_summary(terms.HPARAMS_SESSION_START_TAG,
                            plugin_data_pb2.HParamsPluginData(session_start_info=start))


def session_end_summary(status: str, *, end_time: float) -> Summary:
    """How the run ended: ``success`` (every epoch trained) or ``failure`` (it diverged)."""
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    if status not in END_STATUSES:
        raise ValueError(f"unknown session status {status!r} (choose {', '.join(END_STATUSES)})")
    code = api_pb2.STATUS_SUCCESS if status == "success" else api_pb2.STATUS_FAILURE
    end = plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=end_time)
    return _hparams_summary(terms.HPARAMS_SESSION_END_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))


def _hparams_summary(tag: str, data: Any) -> Summary:
    """A value with plugin metadata only, the way the hparams plugin (and torch, and Lightning) writes it."""
    from tensorboard.plugins.hparams import metadata

    data.version = metadata.PLUGIN_DATA_VERSION
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                  content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def decision_text(control: Control, *, kl_before: float, ae_before: bool, step: int, epoch: int) -> str:
    """One line for the decision text: the seq, what changed, the watchdog's reason (one line, bounded by
    :func:`vaediag.watch.control.reason_line`) and when it was issued.

    >>> text = decision_text(Control(seq=2, kl_weight=1e-4, reason="kl 1535 > 500"), kl_before=1e-7,
    ...                      ae_before=False, step=40, epoch=2)
    >>> for part in text.split("; "):
    ...     print(part)
    control.json seq 2 applied at step 40 (first step of epoch index 2): kl_weight 1e-07 -> 0.0001, mode vae (unchanged)
    reason: kl 1535 > 500
    """
    mode_before = "ae" if ae_before else "vae"
    kl_after = float(control.kl_weight)
    changes = [f"kl_weight {_fmt_number(kl_before)} -> {_fmt_number(kl_after)}" if kl_after != kl_before
               else f"kl_weight {_fmt_number(kl_after)} (unchanged)",
               f"mode {mode_before} -> {control.mode}" if control.mode != mode_before
               else f"mode {control.mode} (unchanged)"]
    reason = reason_line(control.reason) if control.reason else "none given"
    issued = f"; issued {reason_line(control.issued_at, limit=40)}" if control.issued_at else ""
    return (f"control.json seq {control.seq} applied at step {step} (first step of epoch index {epoch}): "
            f"{', '.join(changes)}; reason: {reason}{issued}")


def _fmt_number(v: float) -> str:
    return f"{v:.4g}"
