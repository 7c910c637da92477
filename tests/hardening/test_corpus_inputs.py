"""Corpus rows: bad inputs given to `check` and `report` by name (paths, event files, rules files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus import Case, params, run_case
from tbwrite import epoch_map, epoch_series, write_run


def _run(tmp: Path, name: str = "run") -> Path:
    d = tmp / "logs" / name
    write_run(d, {"train/loss": epoch_series([0.5, 0.4, 0.3]), "val/loss": epoch_series([0.6, 0.5, 0.4])},
              epochs=epoch_map(3))
    return d


def _event_file(run: Path) -> Path:
    return next(run.glob("events.out.tfevents.*"))


def _truncated(tmp: Path) -> list[str]:
    run = _run(tmp)
    f = _event_file(run)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return ["check", str(run)]


def _garbage(tmp: Path) -> list[str]:
    d = tmp / "logs" / "run"
    d.mkdir(parents=True)
    (d / "events.out.tfevents.1.host").write_bytes(b"not an event file at all" * 10)
    return ["check", str(d)]


def _rules(tmp: Path, text: str) -> list[str]:
    run = _run(tmp)
    (tmp / "rules.toml").write_text(text)
    return ["check", str(run), "--rules", str(tmp / "rules.toml")]


CASES = [
    Case("check-missing-path", lambda t: ["check", str(t / "nope")], 2, r"^Error: .*nope.* does not exist"),
    Case("check-empty-dir", lambda t: (t / "empty").mkdir() or ["check", str(t / "empty")], 2,
         r"^Error: .*no TensorBoard event file"),
    Case("report-missing-path", lambda t: ["report", str(t / "nope"), "-o", str(t / "r.md")], 2,
         r"^Error: .*does not exist"),
    Case("check-garbage-event-file", _garbage, 2, r"^Error: ",
         known_bug="issue 10: an unreadable only input exits 0 with a warning"),
    Case("rules-malformed-toml", lambda t: _rules(t, "[penalty\nx = "), 2, r"^Error: .*rules\.toml"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_corpus_inputs(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)
