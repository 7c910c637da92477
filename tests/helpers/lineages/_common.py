"""Shared pieces of the lineage fixture generators: the Truth record, an ordered event log, smooth curves,
and float32 arithmetic helpers that mimic how torch computes and Lightning aggregates the logged scalars."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

import tbwrite

F32 = np.float32
KL_CONVENTIONS = ("sum", "mean_per_dim", "weighted", None)


@dataclass(frozen=True)
class Truth:
    """What a correct diagnosis of the written run must recover.

    run_dir: folder holding the event file(s). lineage: generator name. kl_weight: the real weight of the KL in
    the training objective (None: no KL term). kl_convention: "sum" (KL summed over latent dims, mean over
    batch), "mean_per_dim" (averaged over dims), "weighted" (the logged KL tag already includes the weight),
    None (no KL). latent_dim: number of latent values per sample. epochs: completed TRAINING epochs.
    tags: role -> exact tag. total_formula: human-readable arithmetic between the tags.
    final: true final values per role (from validation where it is logged; see final_source).
    identity_atol: slack beyond float32 rounding with which total_formula holds on each logged row
    (0 except where the library rounds, e.g. HF rounds the train loss to 4 decimals).
    notes: lineage-specific facts (step of post-fit rows, step -1 rows, event file list, ...).
    """

    run_dir: Path
    lineage: str
    kl_weight: float | None
    kl_convention: str | None
    latent_dim: int
    epochs: int
    tags: Mapping[str, str]
    total_formula: str
    final: Mapping[str, float]
    steps_per_epoch: int
    final_source: str = "val"
    identity_atol: float = 0.0
    event_files: tuple[Path, ...] = ()
    notes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kl_convention not in KL_CONVENTIONS:
            raise ValueError(f"kl_convention {self.kl_convention!r} not in {KL_CONVENTIONS}")


class EventLog:
    """Scalar events in the order a writer emits them (not sorted), with increasing wall times."""

    def __init__(self, t0: float = 1.7e9, dt: float = 0.05):
        self.events = []
        self.t = t0
        self.dt = dt

    def scalar(self, tag: str, step: int, value) -> None:
        self.t += self.dt
        self.events.append(tbwrite.scalar_event(tag, int(step), float(F32(value)), self.t))

    def scalars(self, metrics: Mapping[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.scalar(k, step, v)

    def text(self, tag: str, step: int, text: str) -> None:
        """A text summary the way SummaryWriter.add_text writes it (plugin 'text', string tensor)."""
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

        self.t += self.dt
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
        t = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                                   tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                       dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag + "/text_summary", metadata=meta,
                                                                       tensor=t)])
        self.events.append(event_pb2.Event(wall_time=self.t, step=int(step), summary=summary))

    def write(self, run_dir: Path, suffix: str = "") -> Path:
        return tbwrite.write_events(Path(run_dir), self.events, suffix=suffix)


# ---------------------------------------------------------------- curves (t is in epochs, fractional)

def decay(t, start: float, end: float, tau: float):
    t = np.asarray(t, dtype=np.float64)
    return end + (start - end) * np.exp(-t / tau)


def kl_rise_settle(t, final: float, start_frac: float = 0.05, overshoot: float = 0.35, t_peak: float = 1.0):
    """Rises from start_frac*final, overshoots about (1+overshoot)*final near t_peak, settles to final."""
    t = np.asarray(t, dtype=np.float64)
    rise = 1.0 - (1.0 - start_frac) * np.exp(-3.0 * t / t_peak)
    bump = 1.0 + overshoot * (t / t_peak) * np.exp(1.0 - t / t_peak)
    return final * rise * bump


def regress_factor(t, after: int | None, factor: float = 2.5, ramp: float = 1.0):
    """1 before epoch `after` is done, then ramps to `factor` within `ramp` epochs (a run that gets worse)."""
    t = np.asarray(t, dtype=np.float64)
    if after is None:
        return np.ones_like(t)
    return 1.0 + (factor - 1.0) * np.clip((t - after) / ramp, 0.0, 1.0)


def until(t, after: int | None):
    """Clock for the healthy part of a curve: it stops at epoch `after` so a regression is measured from there."""
    t = np.asarray(t, dtype=np.float64)
    return t if after is None else np.minimum(t, float(after))


def noisy(rng: np.random.Generator, x, sigma: float):
    """Multiplicative log-normal noise (keeps positive curves positive)."""
    x = np.asarray(x, dtype=np.float64)
    return x * np.exp(rng.normal(0.0, sigma, size=x.shape))


# ---------------------------------------------------------------- float32 arithmetic as torch does it

def f32(x):
    return np.asarray(x, dtype=np.float32)


def lightning_epoch_mean(values: Iterable[float], batch_size: int = 1) -> np.float32:
    """_ResultMetric mean reduction: value += v * batch_size (float32), cumulated += batch_size, value / cumulated."""
    acc = F32(0.0)
    n = 0
    bs = F32(batch_size)
    for v in values:
        acc = F32(acc + F32(v) * bs)
        n += batch_size
    return F32(acc / F32(n))


def write_yaml(path: Path, data: Mapping) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_plain(data), sort_keys=False))
    return path


def _plain(x):
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def lightning_train_log_steps(epochs: int, steps_per_epoch: int, log_every_n_steps: int) -> list[int]:
    """Steps at which Lightning writes on_step training metrics: the batch index b (global, 0-based) is logged
    when (b + 1) % log_every_n_steps == 0, at step = _batches_that_stepped = b (incremented after logging)."""
    n = epochs * steps_per_epoch
    return [b for b in range(n) if (b + 1) % log_every_n_steps == 0]


class LightningSim:
    """The order, steps and ``epoch`` values with which Lightning's logger connector writes metrics.

    Read in Lightning-AI/pytorch-lightning src/lightning/pytorch/:
    - trainer/connectors/logger_connector/logger_connector.py ``log_metrics``: when no step is given, adds
      ``epoch = trainer.current_epoch`` to the dict (written after the metrics) and uses
      ``step = fit_loop.epoch_loop._batches_that_stepped``.
    - loops/training_epoch_loop.py ``advance``/``on_advance_end``: on_step metrics of batch b are written before
      ``_batches_that_stepped`` is incremented (step b, every ``log_every_n_steps``); validation at the end of the
      epoch also runs before the increment, so val metrics of epoch e land on step (e+1)*N-1.
    - loops/fit_loop.py ``on_advance_end``: "we manually decrease here because loggers expect that the same step
      is used when logging epoch-end metrics" -> *_epoch train metrics also land on (e+1)*N-1, epoch=e; then
      ``epoch_progress.increment_completed()``, so after fit ``current_epoch == max_epochs``.
    - trainer/trainer.py ``_run`` calls ``_log_hyperparams`` for fit, validate and test alike; the TensorBoard
      logger's ``log_hyperparams`` writes ``hp_metric = -1`` at step 0 each time.
    - callbacks/lr_monitor.py ``LearningRateMonitor.on_train_epoch_start`` (``fit_loop.on_advance_start``, after
      the previous epoch's ``update_lr_schedulers("epoch")``) and ``on_train_batch_start`` call each
      ``logger.log_metrics(latest_stat, step=trainer.fit_loop.epoch_loop._batches_that_stepped)`` directly, not
      the connector's: no ``epoch`` key. At epoch e's start that step is e*N, one past epoch e-1's val rows
      (``epoch_start``); the step variant logs when ``should_update_logs`` (``_batches_that_stepped + 1`` a
      multiple of ``log_every_n_steps``), at the step of that batch's on_step metrics (``batch_start``).
      tests/fixtures/realworld has the epoch layout: ``lr-Adam`` at 782 after ``val_loss`` at 781.
    """

    def __init__(self, log: EventLog, steps_per_epoch: int, log_every_n_steps: int = 50, hp_metric: bool = True):
        self.log = log
        self.N = steps_per_epoch
        self.every = log_every_n_steps
        self.hp_metric = hp_metric
        self.batches_that_stepped = 0
        self.current_epoch = 0
        # Every Logger.log_metrics(metrics, step) call, in order, as any logger receives it (CSVLogger writes
        # one row per call: lightning_csv.write_csv_logger). hp_metric is TensorBoardLogger.log_hyperparams'
        # own scalar, not a log_metrics call: it is not here.
        self.calls: list[tuple[dict, int]] = []

    def _emit(self, metrics: Mapping[str, float], step: int) -> None:
        self.log.scalars(metrics, step)
        self.calls.append((dict(metrics), int(step)))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, add_epoch: bool = True):
        metrics = dict(metrics)
        if not metrics:
            return
        if step is None:
            step = self.batches_that_stepped
            if add_epoch:
                metrics.setdefault("epoch", self.current_epoch)
        self._emit(metrics, step)

    def start(self):
        if self.hp_metric:
            self.log.scalars({"hp_metric": -1.0}, 0)

    def fit(self, epochs: int, *, train_step=None, train_epoch=None, val_epoch=None, epoch_start=None,
            batch_start=None):
        """train_step(g) -> dict of on_step metrics at global batch g; train_epoch(e)/val_epoch(e) -> dicts;
        epoch_start(e) / batch_start(g) -> dicts written directly by a callback (LearningRateMonitor with
        logging_interval "epoch" / "step"; no epoch key; the step variant only when logs update)."""
        self.start()
        for e in range(epochs):
            self.current_epoch = e
            if epoch_start is not None:
                self._emit(epoch_start(e), self.batches_that_stepped)
            for b in range(self.N):
                g = e * self.N + b
                should_log = (self.batches_that_stepped + 1) % self.every == 0
                if batch_start is not None and should_log:
                    self._emit(batch_start(g), self.batches_that_stepped)
                if train_step is not None and should_log:
                    self.log_metrics(train_step(g))
                if b == self.N - 1 and val_epoch is not None:
                    self.log_metrics(val_epoch(e))
                self.batches_that_stepped += 1
            if train_epoch is not None:
                self.batches_that_stepped -= 1
                self.log_metrics(train_epoch(e))
                self.batches_that_stepped += 1
        self.current_epoch = epochs

    def evaluate(self, metrics: Mapping[str, float]) -> tuple[int, int]:
        """trainer.validate()/test() after fit: hp_metric again at step 0, then the epoch-level metrics at
        step=_batches_that_stepped (= epochs*N) with epoch=current_epoch (= max_epochs). Returns (step, epoch)."""
        self.start()
        self.log_metrics(metrics)
        return self.batches_that_stepped, self.current_epoch
