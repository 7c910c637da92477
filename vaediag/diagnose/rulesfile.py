# Over 450 lines on purpose: one job (the rules file read and validated); the default file is the schema, and a bad value's message quotes its line, so the schema checks and the TOML line locator they report through stay together.
"""Load the rules file (``vaediag/rules/default.toml``, or a user's file merged over it) into :class:`Rules`.

The default file is also the schema: a user file may only use keys the default has, with values of the
same type (an int where the default has an int, a number where it has a float, a pair of numbers where it
has a pair). ``[[milestones]]`` and ``success.criteria`` are lists of criteria checked one by one. Every
mistake raises :class:`~vaediag.errors.RulesError` naming the file, the line and the key::

    rules file my.toml, line 7: [penalty] key 'max_rato' is unknown (choose warn_ratio, fail_ratio)
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaediag.errors import InputError, RulesError
from vaediag.safeio import read_text
from vaediag.structured import loads_toml, short_repr
from vaediag.terms import CANONICAL_TERMS

__all__ = ["DEFAULT_RULES_PATH", "Criterion", "Milestone", "Rules", "load_rules", "CRITERION_KINDS"]

DEFAULT_RULES_PATH = Path(__file__).resolve().parent.parent / "rules" / "default.toml"
CRITERION_KINDS = ("bounds", "baseline", "stable", "converged")
_CRITERION_KEYS = ("term", "min", "max", "better_than_baseline", "stable", "tolerance", "check", "id", "label")
_MILESTONE_KEYS = ("epoch", "title", "criteria")
_SUCCESS_KEYS = ("judge_after", "criteria")
_LIST_TABLES = ("milestones", "success")
# String settings and their allowed values.
_CHOICES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("recommend", "on_collapse"): ("reduce_kl_weight", "increase_kl_weight"),
    ("profiles", "default"): ("auto", "seed", "generic"),
}

# Numeric settings whose meaning bounds them beyond "a finite number >= 0" (every number's rule). One
# table, judged when a rules file is loaded (a test holds the defaults to it too), so a value that makes
# no sense (a cut by 0, 0.5 or 1, a fraction above 1, a window of 0 epochs) fails with one line naming
# the key, the value and the range, instead of a ZeroDivisionError, a doubled weight or a no-op later:
#   (section, key) -> (low, low included, high or None, high included, what the value is)
_RANGES: dict[tuple[str, ...], tuple[float, bool, float | None, bool, str]] = {
    ("kl", "expected"): (0, False, None, False, "the KL (nats) a plan assumes"),
    ("penalty", "warn_ratio"): (0, False, None, False, "a share of the reconstruction loss"),
    ("penalty", "fail_ratio"): (0, False, None, False, "a share of the reconstruction loss"),
    ("gradient", "kl_share_warn"): (0, True, 1, True, "a share of the gradient, at most 1"),
    ("collapse", "active_fraction_min"): (0, True, 1, True, "a fraction of the latent dimensions"),
    ("divergence", "window"): (1, True, None, False, "epochs"),
    ("lr", "vanished_ratio"): (0, True, 1, True, "a fraction of the first learning rate"),
    ("converged", "window"): (1, True, None, False, "epochs of recent history"),
    ("converged", "min_delta"): (0, True, 1, True, "a relative improvement"),
    ("blurry", "min_grad_similarity"): (0, True, 1, True, "a gradient similarity, at most 1"),
    ("blurry", "max_sharpness"): (0, False, None, False, "a sharpness ratio"),
    ("dead_model", "min_spread"): (0, True, 1, True, "a fraction of the inputs' spread"),
    ("recommend", "kl_reduce_factor"): (1, False, None, False, "kl_weight is divided by it: 1 would not cut it, "
                                                               "below 1 would raise it"),
    ("recommend", "max_reduce_factor"): (1, False, None, False, "the largest cut"),
    ("recommend", "kl_increase_factor"): (1, False, None, False, "kl_weight is multiplied by it: 1 would not "
                                                                 "raise it, below 1 would lower it"),
    ("recommend", "latent_factor"): (2, True, None, False, "the latent size is multiplied by it"),
    ("recommend", "max_latent_dim"): (1, True, None, False, "a latent size"),
}
# Pairs that must be ordered: (section, low key, high key, strictly, what breaks otherwise).
_ORDERED: tuple[tuple[str, str, str, bool, str], ...] = (
    ("penalty", "warn_ratio", "fail_ratio", False, "a penalty share would fail before it warns"),
    ("blurry", "min_sharpness", "max_sharpness", True, "every sharpness ratio would be blurry or suspicious"),
    ("recommend", "kl_reduce_factor", "max_reduce_factor", False, "the cut would exceed its own cap"),
)
_INT_MAX = 2**63  # TOML integers are 64-bit; Python's are not (and a larger one overflows float())


def _value(v: Any) -> str:
    """A user's value for a message: repr, bounded in length and depth."""
    return short_repr(v)


def _range_text(low: float, low_in: bool, high: float | None, high_in: bool) -> str:
    if high is None:
        return f"{'>=' if low_in else '>'} {low:g}"
    if low_in and high_in:
        return f"{low:g} to {high:g}"
    return f"{'>=' if low_in else '>'} {low:g} and {'<=' if high_in else '<'} {high:g}"


@dataclass(frozen=True)
class Criterion:
    """One checklist item.

    ``kind`` is ``bounds`` (one side strict: ``value < max`` or ``value > min``; a band includes its
    ends: ``min <= value <= max``), ``baseline`` (better
    than the baseline run at the same epoch, "better" from :data:`vaediag.terms.TERM_INFO`), ``stable``
    (relative spread over the last ``window`` epochs at most ``tolerance``) or ``converged`` (the
    converged rule holds). ``id`` is the finding key; ``label`` the text shown in tables.
    """

    id: str
    label: str
    kind: str
    term: str | None = None
    min: float | None = None
    max: float | None = None
    window: int | None = None
    tolerance: float | None = None

    @property
    def threshold(self) -> float | tuple[float, float] | None:
        if self.min is not None and self.max is not None:
            return (self.min, self.max)
        return self.max if self.max is not None else self.min


@dataclass(frozen=True)
class Milestone:
    """Criteria judged after ``epoch`` completed epochs (the logs' epoch index ``epoch - 1``)."""

    epoch: int
    title: str
    criteria: tuple[Criterion, ...]

    @property
    def rule(self) -> str:
        """The findings' rule id: ``milestone_10``."""
        return f"milestone_{self.epoch}"


@dataclass(frozen=True)
class Rules:
    """Validated rules: thresholds per section, the milestones and the success criteria.

    ``section(name)`` returns a section's scalar thresholds as a dict whose keys are the keyword
    arguments of that family's ``check_*`` function.
    """

    data: dict[str, Any]
    milestones: tuple[Milestone, ...]
    success: tuple[Criterion, ...]
    success_judge_after: int
    source: str = "default"

    def section(self, name: str) -> dict[str, Any]:
        if name not in self.data or not isinstance(self.data[name], dict):
            raise KeyError(f"no rules section {name!r}")
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in self.data[name].items() if not isinstance(v, dict)}

    def get(self, dotted: str) -> Any:
        """A value by dotted key: ``rules.get("recommend.recipe")``."""
        node: Any = self.data
        for part in dotted.split("."):
            node = node[part]
        return copy.deepcopy(node)


# --------------------------------------------------------------------------------------------------
# Locating a key's line (tomllib gives no positions for valid documents).

_HEADER = re.compile(r"^\s*\[(\[)?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _headers(lines: list[str]) -> list[tuple[int, tuple[str, ...], int | None]]:
    """(line index, table path, array index or None) of each table header."""
    out = []
    counts: dict[tuple[str, ...], int] = {}
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if not m:
            continue
        path = tuple(p.strip().strip('"') for p in m.group(2).split("."))
        if m.group(1):  # [[array]]
            n = counts.get(path, 0)
            counts[path] = n + 1
            out.append((i, path, n))
        else:
            out.append((i, path, None))
    return out


def _key_re(key: str) -> re.Pattern[str]:
    k = re.escape(key)
    return re.compile(rf'(^|[\s{{,])("{k}"|\'{k}\'|{k})\s*=')


def _locate(text: str, path: tuple[Any, ...]) -> int | None:
    """1-based line of the last component of ``path`` (e.g. ``("milestones", 1, "criteria", 2, "max")``)."""
    lines = text.splitlines()
    headers = _headers(lines)
    # The table: longest header prefix of path (with an array index where the header is [[...]]).
    names = [p for p in path if isinstance(p, str)]
    start, end = 0, len(lines)
    rest: list[Any] = list(path)
    best = None
    for hi, (i, hpath, idx) in enumerate(headers):
        n = len(hpath)
        if tuple(names[:n]) != hpath:
            continue
        if idx is not None:
            # path must carry the same array index right after the header's names
            pos = _index_after(path, n)
            if pos is None or path[pos] != idx:
                continue
        if best is None or n >= len(best[1]):
            nxt = headers[hi + 1][0] if hi + 1 < len(headers) else len(lines)
            best = (i, hpath, idx, nxt)
    if best is not None:
        start, hpath, idx, end = best
        consumed = len(hpath) + (1 if idx is not None else 0)
        rest = list(path)[consumed:]
        if not rest:
            return start + 1
        start += 1
    line = start
    pending_index: int | None = None
    for comp in rest:
        if isinstance(comp, int):
            pending_index = comp
            continue
        pat = _key_re(comp)
        if pending_index is not None:
            # the n-th inline table after the array's key
            seen = -1
            found = None
            for j in range(line, end):
                seen += lines[j].count("{")
                if seen >= pending_index and "{" in lines[j]:
                    found = j
                    break
            if found is None:
                return line + 1
            line = found
            pending_index = None
        hit = next((j for j in range(line, end) if pat.search(lines[j])), None)
        if hit is None:
            return line + 1 if line < len(lines) else None
        line = hit
    if pending_index is not None:
        seen = -1
        for j in range(line, end):
            seen += lines[j].count("{")
            if seen >= pending_index and "{" in lines[j]:
                return j + 1
    return line + 1


def _index_after(path: tuple[Any, ...], n_names: int) -> int | None:
    names = 0
    for pos, p in enumerate(path):
        if isinstance(p, str):
            names += 1
            if names == n_names:
                return pos + 1 if pos + 1 < len(path) and isinstance(path[pos + 1], int) else None
    return None


# --------------------------------------------------------------------------------------------------
# Validation.


class _Checker:
    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text

    def fail(self, path: tuple[Any, ...], what: str) -> RulesError:
        line = _locate(self.text, path) if self.text else None
        where = f", line {line}" if line else ""
        return RulesError(f"rules file {self.source}{where}: {_show(path)} {what}")

    def number(self, path: tuple[Any, ...], v: Any, *, integer: bool = False) -> float | int:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            kind = "an integer" if integer else "a number"
            raise self.fail(path, f"must be {kind}, got {_value(v)}")
        if integer and not isinstance(v, int):
            raise self.fail(path, f"must be an integer, got {_value(v)}")
        if isinstance(v, int) and abs(v) >= _INT_MAX:
            raise self.fail(path, f"must be a finite number >= 0 below 2**63, got {_value(v)}")
        if not math.isfinite(v) or v < 0:
            raise self.fail(path, f"must be a finite number >= 0, got {_value(v)}")
        rng = _RANGES.get(tuple(p for p in path if isinstance(p, str)))
        if rng is not None:
            low, low_in, high, high_in, what = rng
            if v < low or (v == low and not low_in) or (high is not None and (v > high or (v == high and not high_in))):
                raise self.fail(path, f"is {v!r}; allowed: {_range_text(low, low_in, high, high_in)} ({what})")
        return v

    def ordered(self, user: dict[str, Any], data: dict[str, Any]) -> None:
        """The pairs of :data:`_ORDERED` hold in the merged ``data``; blames the key the user's file set."""
        for section, lo_key, hi_key, strict, why in _ORDERED:
            lo, hi = data[section][lo_key], data[section][hi_key]
            if lo < hi or (lo == hi and not strict):
                continue
            mine = user.get(section) if isinstance(user.get(section), dict) else {}
            key, other = (lo_key, hi_key) if lo_key in mine and hi_key not in mine else (hi_key, lo_key)
            if key == hi_key:
                rel = f"{'above' if strict else 'at least'} {other}"
            else:
                rel = f"{'below' if strict else 'at most'} {other}"
            raise self.fail((section, key), f"is {data[section][key]!r}; allowed: {rel} "
                                            f"({data[section][other]!r}), else {why}")

    def like(self, path: tuple[Any, ...], v: Any, default: Any) -> Any:
        """``v`` validated against the type of the default value."""
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise self.fail(path, f"must be true or false, got {_value(v)}")
            return v
        if isinstance(default, int):
            return self.number(path, v, integer=True)
        if isinstance(default, float):
            return float(self.number(path, v))
        if isinstance(default, str):
            if not isinstance(v, str):
                raise self.fail(path, f"must be a string, got {_value(v)}")
            choices = _CHOICES.get(tuple(p for p in path if isinstance(p, str)))
            if choices and v not in choices:
                raise self.fail(path, f"is {_value(v)}; choose {', '.join(choices)}")
            return v
        if isinstance(default, list):
            if not isinstance(v, list) or len(v) != len(default):
                raise self.fail(path, f"must be a list of {len(default)} numbers, got {_value(v)}")
            out = [float(self.number(path, x)) for x in v]
            if len(out) == 2 and out[0] >= out[1]:
                raise self.fail(path, f"must be [low, high] with low < high, got {_value(v)}")
            return out
        raise self.fail(path, f"has an unsupported value {v!r}")  # pragma: no cover - schema is ours

    def merge(self, path: tuple[Any, ...], base: dict[str, Any], user: Any) -> dict[str, Any]:
        if not isinstance(user, dict):
            raise self.fail(path, f"must be a table, got {_value(user)}")
        out = dict(base)
        for key, v in user.items():
            p = path + (key,)
            if key not in base:
                choices = ", ".join(base)
                raise self.fail(p, f"is unknown (choose {choices})")
            if isinstance(base[key], dict):
                out[key] = self.merge(p, base[key], v)
            else:
                out[key] = self.like(p, v, base[key])
        return out

    def criterion(self, path: tuple[Any, ...], c: Any, taken: set[str]) -> Criterion:
        if not isinstance(c, dict):
            raise self.fail(path, f"must be an inline table like {{ term = \"kl\", max = 500.0 }}, got {_value(c)}")
        unknown = [k for k in c if k not in _CRITERION_KEYS]
        if unknown:
            raise self.fail(path + (unknown[0],), f"is unknown (choose {', '.join(_CRITERION_KEYS)})")
        for k in ("id", "label", "check", "term"):
            if k in c and not isinstance(c[k], str):
                raise self.fail(path + (k,), f"must be a string, got {_value(c[k])}")
        term = c.get("term")
        if term is not None and term not in CANONICAL_TERMS:
            raise self.fail(path + ("term",), f"unknown term {_value(term)} (choose {', '.join(CANONICAL_TERMS)})")
        lo = float(self.number(path + ("min",), c["min"])) if "min" in c else None
        hi = float(self.number(path + ("max",), c["max"])) if "max" in c else None
        if lo is not None and hi is not None and lo >= hi:
            raise self.fail(path + ("max",), f"must be above min ({lo}), got {hi}")
        kind, default_id, default_label = self.criterion_kind(path, c, term, lo, hi)
        if "tolerance" in c and kind != "stable":
            raise self.fail(path + ("tolerance",), "only goes with stable")
        tol = float(self.number(path + ("tolerance",), c["tolerance"])) if "tolerance" in c else None
        cid = c.get("id", default_id)
        if not re.fullmatch(r"[a-z0-9_]+", cid):
            raise self.fail(path + ("id",), f"must be lower-case letters, digits and _, got {_value(cid)}")
        if cid in taken:
            raise self.fail(path, f"repeats id {_value(cid)}: give one of them an id = \"...\"")
        taken.add(cid)
        return Criterion(
            id=cid,
            label=c.get("label", default_label),
            kind=kind,
            term=term,
            min=lo,
            max=hi,
            window=int(c["stable"]) if kind == "stable" else None,
            tolerance=tol,
        )

    def criterion_kind(self, path: tuple[Any, ...], c: dict, term: str | None, lo: float | None,
                       hi: float | None) -> tuple[str, str, str]:
        """A criterion's kind (converged, baseline, stable or bounds), its default id and its default label."""
        if "check" in c:
            if c["check"] != "converged":
                raise self.fail(path + ("check",), f"unknown check {_value(c['check'])} (choose converged)")
            if len(set(c) - {"check", "id", "label"}):
                extra = sorted(set(c) - {"check", "id", "label"})[0]
                raise self.fail(path + (extra,), "does not go with check = \"converged\"")
            return "converged", "converged", "Converged"
        if term is None:
            raise self.fail(path, "needs a term (or check = \"converged\")")
        if "better_than_baseline" in c:
            if c["better_than_baseline"] is not True:
                raise self.fail(path + ("better_than_baseline",), "must be true")
            if lo is not None or hi is not None or "stable" in c:
                raise self.fail(path + ("better_than_baseline",), "does not go with min, max or stable")
            return "baseline", f"{term}_vs_baseline", f"{term} better than baseline"
        if "stable" in c:
            window = self.number(path + ("stable",), c["stable"], integer=True)
            if window < 2:
                raise self.fail(path + ("stable",), f"must be at least 2 epochs, got {window}")
            if "tolerance" not in c:
                raise self.fail(path + ("stable",), "needs a tolerance (relative spread, e.g. 0.2)")
            if lo is not None or hi is not None:
                raise self.fail(path + ("stable",), "does not go with min or max (use two criteria)")
            return "stable", f"{term}_stable", f"{term} stable over {window} epochs"
        if lo is None and hi is None:
            raise self.fail(path, f"needs min, max, better_than_baseline or stable for term {term!r}")
        return "bounds", term, _bounds_label(term, lo, hi)

    def criteria(self, path: tuple[Any, ...], items: Any) -> tuple[Criterion, ...]:
        if not isinstance(items, list) or not items:
            raise self.fail(path, "must be a non-empty list of criteria")
        taken: set[str] = set()
        return tuple(self.criterion(path + (i,), c, taken) for i, c in enumerate(items))

    def milestones(self, items: Any) -> tuple[Milestone, ...]:
        if not isinstance(items, list):
            raise self.fail(("milestones",), "must be written as [[milestones]] tables")
        out = []
        seen: set[int] = set()
        for i, m in enumerate(items):
            p: tuple[Any, ...] = ("milestones", i)
            if not isinstance(m, dict):
                raise self.fail(p, "must be a [[milestones]] table")
            unknown = [k for k in m if k not in _MILESTONE_KEYS]
            if unknown:
                raise self.fail(p + (unknown[0],), f"is unknown (choose {', '.join(_MILESTONE_KEYS)})")
            if "epoch" not in m:
                raise self.fail(p, "needs an epoch (completed epochs, e.g. epoch = 10)")
            epoch = int(self.number(p + ("epoch",), m["epoch"], integer=True))
            if epoch < 1:
                raise self.fail(p + ("epoch",), f"must be at least 1, got {epoch}")
            if epoch in seen:
                raise self.fail(p + ("epoch",), f"repeats epoch {epoch}")
            seen.add(epoch)
            title = m.get("title", f"After epoch {epoch}")
            if not isinstance(title, str):
                raise self.fail(p + ("title",), f"must be a string, got {_value(title)}")
            if "criteria" not in m:
                raise self.fail(p, "needs criteria = [ ... ]")
            out.append(Milestone(epoch=epoch, title=title, criteria=self.criteria(p + ("criteria",), m["criteria"])))
        return tuple(sorted(out, key=lambda m: m.epoch))


def _bounds_label(term: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{term} {lo:g}-{hi:g}"
    if hi is not None:
        return f"{term} < {hi:g}"
    return f"{term} > {lo:g}"


def _show(path: tuple[Any, ...]) -> str:
    """``("milestones", 0, "criteria", 1, "max")`` -> ``[milestones #1] criteria #2 key 'max'``."""
    comps: list[str] = []
    for p in path:
        if isinstance(p, int):
            comps[-1] += f" #{p + 1}"
        else:
            comps.append(str(p) if len(str(p)) <= 60 else str(p)[:57] + "...")
    if not comps:
        return "the document"
    head, rest = comps[0], comps[1:]
    if not rest:
        return f"[{head}]"
    if isinstance(path[-1], str):
        rest[-1] = f"key {_value(rest[-1])}"
    return f"[{head}] " + " ".join(rest)


def _read(path: Path) -> tuple[dict[str, Any], str]:
    """The parsed document and its text. Read through :mod:`vaediag.safeio` (a FIFO, ``/dev/zero`` or a
    file over 1 MiB is refused at once) and parsed by :mod:`vaediag.structured` (any parser failure,
    nesting too deep for it included, is one RulesError line)."""
    text = read_text(path, what="rules file", missing_ok=True)
    if text is None:
        raise InputError(f"rules file {str(path)!r} does not exist; pass a TOML file (see vaediag/rules/default.toml)")
    return loads_toml(text, where=f"rules file {path}", error=RulesError), text


_DEFAULT_CACHE: tuple[dict[str, Any], str] | None = None


def _default() -> tuple[dict[str, Any], str]:
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = _read(DEFAULT_RULES_PATH)
    return copy.deepcopy(_DEFAULT_CACHE[0]), _DEFAULT_CACHE[1]


def load_rules(path: str | os.PathLike[str] | None = None) -> Rules:
    """The default rules, or a user file merged over them.

    Args:
        path: a TOML file with the shape of ``vaediag/rules/default.toml`` (any subset of its keys), or
            None for the defaults.

    Raises:
        InputError: the file is missing or unreadable.
        RulesError: TOML syntax, an unknown key, a wrong type or an invalid criterion (names line and key).
    """
    base, base_text = _default()
    scalars = {k: v for k, v in base.items() if k not in _LIST_TABLES}
    # Values the user file leaves to the defaults are judged (and located) in the default file.
    default = _Checker(str(DEFAULT_RULES_PATH), base_text)
    if path is None:
        user: dict[str, Any] = {}
        checker = default
        source = "default"
    else:
        p = Path(path)
        user, text = _read(p)
        checker = _Checker(str(p), text)
        source = str(p)

    for key in user:
        if key not in base:
            raise checker.fail((key,), f"is an unknown table (choose {', '.join(base)})")
    data = checker.merge((), scalars, {k: v for k, v in user.items() if k not in _LIST_TABLES})
    checker.ordered(user, data)

    ms_checker = checker if "milestones" in user else default
    milestones = ms_checker.milestones(user.get("milestones", base["milestones"]))

    success = dict(base["success"])
    s_checker = default
    if "success" in user:
        if not isinstance(user["success"], dict):
            raise checker.fail(("success",), "must be a table")
        for k in user["success"]:
            if k not in _SUCCESS_KEYS:
                raise checker.fail(("success", k), f"is unknown (choose {', '.join(_SUCCESS_KEYS)})")
        success.update(user["success"])
        s_checker = checker
    judge_after = int(s_checker.number(("success", "judge_after"), success["judge_after"], integer=True))
    crit_checker = checker if "success" in user and "criteria" in user["success"] else default
    criteria = crit_checker.criteria(("success", "criteria"), success["criteria"])

    data["milestones"] = [
        {"epoch": m.epoch, "title": m.title, "criteria": [c.__dict__.copy() for c in m.criteria]} for m in milestones
    ]
    data["success"] = {"judge_after": judge_after, "criteria": [c.__dict__.copy() for c in criteria]}
    return Rules(data=data, milestones=milestones, success=criteria, success_judge_after=judge_after, source=source)
