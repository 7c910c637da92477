"""Report targets ("expected vs actual"): :class:`Target` and the TOML file that lists them.

The default is ``vaediag/rules/targets.toml`` (the seed's "Expected Results (Next Run)" table; its comments
give the shape); ``vaediag report --targets FILE`` replaces it. Reading goes through :mod:`vaediag.safeio`
(as the rules file's does: :mod:`.rulesfile`); every mistake is a :class:`~vaediag.errors.RulesError`
naming the file and the key. Judging a run against a target is :meth:`Target.judge`; the comparison that
applies the targets to each run is :mod:`vaediag.diagnose.compare`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from vaediag.errors import InputError, RulesError
from vaediag.terms import CANONICAL_TERMS, TERM_INFO

__all__ = ["DEFAULT_TARGETS_PATH", "DIRECTIONS", "Target", "load_targets"]

DEFAULT_TARGETS_PATH = Path(__file__).resolve().parent.parent / "rules" / "targets.toml"
DIRECTIONS = ("lower", "higher", "range")
_TARGET_KEYS = {"term", "split", "min", "max", "direction", "label"}



@dataclass(frozen=True)
class Target:
    """One expected result: a canonical term's final value and the range it should land in."""

    name: str
    term: str
    low: float | None
    high: float | None
    direction: str
    label: str
    split: str = "val"

    def judge(self, value: float | None) -> str:
        """``met``, ``low``, ``high``, ``nonfinite`` (NaN or inf: the run diverged) or ``missing``."""
        if value is None:
            return "missing"
        if not math.isfinite(value):
            return "nonfinite"
        if self.direction in ("higher", "range") and self.low is not None and value < self.low:
            return "low"
        if self.direction in ("lower", "range") and self.high is not None and value > self.high:
            return "high"
        return "met"

    @property
    def unit(self) -> str:
        info = TERM_INFO.get(self.term)
        return info.unit if info else ""

    def describe(self) -> str:
        """The target as the seed writes it: ``100-500``, ``30-35 dB``."""
        from vaediag.diagnose.numbers import fmt_value

        lo = fmt_value(self.low, self.term) if self.low is not None else None
        hi = fmt_value(self.high, self.term) if self.high is not None else None
        unit = f" {self.unit}" if self.unit == "dB" else ""
        if lo and hi:
            return f"{lo}-{hi}{unit}"
        return f"≥ {lo}{unit}" if lo else f"≤ {hi}{unit}"


def _default_direction(term: str) -> str:
    info = TERM_INFO.get(term)
    if info is None or info.higher_is_better is None:
        return "range"
    return "higher" if info.higher_is_better else "lower"


def load_targets(path: str | os.PathLike[str] | None = None) -> tuple[Target, ...]:
    """Read a targets TOML file (the default: ``vaediag/rules/targets.toml``, whose comments give the shape).

    Raises:
        InputError: the file does not exist or cannot be read.
        RulesError: malformed TOML (with its line), an unknown key, term, split or direction, or bounds
            that are not numbers or are in the wrong order (each naming the target and key).
    """
    p = DEFAULT_TARGETS_PATH if path is None else Path(path)
    where = "default targets.toml" if path is None else f"targets file {p}"
    from vaediag.safeio import read_text
    from vaediag.structured import loads_toml, short_repr

    # safeio: a FIFO, a device or a file over 1 MiB is refused at once (InputError), never read.
    text = read_text(p, what="targets file", missing_ok=True)
    if text is None:
        raise InputError(f"targets file {str(p)!r} does not exist; pass a TOML file with [targets.NAME] tables")
    data = loads_toml(text, where=where, error=RulesError)
    unknown = sorted(set(data) - {"targets"})
    if unknown:
        raise RulesError(f"{where}: unknown table(s) {short_repr(unknown)} (only [targets.NAME] tables are allowed)")
    tables = data.get("targets", {})
    if not isinstance(tables, dict) or not tables:
        raise RulesError(f"{where}: no [targets.NAME] tables")
    out = []
    for name, spec in tables.items():
        shown = short_repr(name)[1:-1]  # the name in messages, bounded (a table name is a string)
        if not isinstance(spec, dict):
            raise RulesError(f"{where}: targets.{shown} must be a table with term, min and/or max")
        bad = sorted(set(spec) - _TARGET_KEYS)
        if bad:
            raise RulesError(
                f"{where}: targets.{shown} has unknown key(s) {short_repr(bad)} (choose {', '.join(sorted(_TARGET_KEYS))})"
            )
        term = spec.get("term", name)
        if term not in CANONICAL_TERMS:
            raise RulesError(f"{where}: targets.{shown}.term {short_repr(term)} is not a canonical term "
                             f"(e.g. kl, recon, perceptual, psnr, ssim)")
        split = spec.get("split", "val")
        if split not in ("val", "train"):
            raise RulesError(f"{where}: targets.{shown}.split {short_repr(split)} is unknown (choose val, train)")
        bounds = {}
        for key in ("min", "max"):
            v = spec.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or (isinstance(v, int) and abs(v) > 1e300) or not math.isfinite(v)):
                raise RulesError(f"{where}: targets.{shown}.{key} must be a number, got {short_repr(v)}")
            bounds[key] = None if v is None else float(v)
        if bounds["min"] is None and bounds["max"] is None:
            raise RulesError(f"{where}: targets.{shown} needs min, max or both")
        if bounds["min"] is not None and bounds["max"] is not None and bounds["min"] > bounds["max"]:
            raise RulesError(f"{where}: targets.{shown}: min {bounds['min']:g} is above max {bounds['max']:g}")
        direction = spec.get("direction", _default_direction(term))
        if direction not in DIRECTIONS:
            raise RulesError(f"{where}: targets.{shown}.direction {short_repr(direction)} is unknown "
                             f"(choose {', '.join(DIRECTIONS)})")
        label = spec.get("label", TERM_INFO[term].label if term in TERM_INFO else term)
        if not isinstance(label, str):
            raise RulesError(f"{where}: targets.{shown}.label must be a string")
        out.append(Target(name=str(name), term=term, low=bounds["min"], high=bounds["max"],
                          direction=direction, label=label, split=split))
    return tuple(out)
