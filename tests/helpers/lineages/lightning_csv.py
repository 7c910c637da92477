"""Lightning's ``CSVLogger``: the ``metrics.csv`` it writes for a sequence of ``log_metrics`` calls.

Sources read (Lightning-AI/pytorch-lightning, installed here as lightning 2.6):
- src/lightning/fabric/loggers/csv_logs.py ``_ExperimentWriter``: ``log_metrics`` appends
  ``{**metrics, "step": step}`` (tensors through ``.item()``) to a buffer; ``save`` records the keys never seen
  before (``_record_new_keys``: the key list is kept SORTED), and when there are new keys and the file exists,
  rewrites the whole file under the wider header (``_rewrite_with_new_header``: ``csv.DictReader`` then
  ``csv.DictWriter``), then appends the buffered rows with ``csv.DictWriter`` (missing keys blank, rows ending
  ``\\r\\n``, the file opened with ``newline=""``). ``CSVLogger.log_metrics`` saves every
  ``flush_logs_every_n_steps`` (100) steps by itself.
- src/lightning/pytorch/trainer/connectors/logger_connector/logger_connector.py ``log_metrics``: calls
  ``logger.log_metrics(metrics, step)`` and then ``logger.save()`` for every logger, so under a Trainer every
  call is written at once (``flush_every=None`` here); ``epoch`` is an int (``trainer.current_epoch``).
- src/lightning/pytorch/loggers/csv_logs.py ``ExperimentWriter.log_hparams``: ``hparams.yaml`` in the same
  folder (``save_hparams_to_yaml``); no ``hp_metric`` (that is TensorBoardLogger's).
- ``CSVLogger.log_dir``: ``<save_dir>/<name>/version_<N>`` (name defaults to ``lightning_logs``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

__all__ = ["CsvLoggerWriter", "write_csv_logger"]


class CsvLoggerWriter:
    """``_ExperimentWriter`` for one ``metrics.csv``; ``after_save(path)`` is called after each save (tests
    that tail the file look at it there)."""

    def __init__(self, path: Path, *, after_save=None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.metrics: list[dict] = []
        self.metrics_keys: list[str] = []
        self.after_save = after_save

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        # Tensor.item() of a float32 tensor (self.log makes one); epoch is the trainer's int.
        row = {k: (int(v) if k == "epoch" and float(v).is_integer() else float(np.float32(v))) for k, v in metrics.items()}
        row["step"] = int(step)
        self.metrics.append(row)

    def save(self) -> None:
        if not self.metrics:
            return
        current = set().union(*self.metrics)
        new_keys = current - set(self.metrics_keys)
        self.metrics_keys.extend(new_keys)
        self.metrics_keys.sort()
        exists = self.path.is_file()
        if new_keys and exists:
            with open(self.path, newline="") as fh:
                old = list(csv.DictReader(fh))
            with open(self.path, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=self.metrics_keys)
                w.writeheader()
                w.writerows(old)
        with open(self.path, "a" if exists else "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.metrics_keys)
            if not exists:
                w.writeheader()
            w.writerows(self.metrics)
        self.metrics = []
        if self.after_save is not None:
            self.after_save(self.path)


def write_csv_logger(run_dir: Path, calls: Iterable[tuple[Mapping[str, float], int]], *,
                     flush_every: int | None = None, after_save=None) -> Path:
    """Write ``run_dir/metrics.csv`` for ``calls`` (``(metrics, step)`` in order). ``flush_every=None``: saved after
    every call (a Trainer's logger connector); an int: CSVLogger's own ``flush_logs_every_n_steps`` cadence."""
    writer = CsvLoggerWriter(Path(run_dir) / "metrics.csv", after_save=after_save)
    for metrics, step in calls:
        writer.log_metrics(metrics, step)
        if flush_every is None or (step + 1) % flush_every == 0:
            writer.save()
    writer.save()  # finalize()
    return writer.path
