"""Per-epoch views of one run's rows of the tidy frame: the table every rule reads.

:func:`epoch_table` pivots the long frame (one row per logged scalar) into one row per epoch and one
column per canonical term. Column names:

* ``val_<term>``: the val value of that epoch (the last one logged in the epoch, in step order).
* ``train_<term>``: the mean of the train values logged in that epoch (per-step logging averages out
  the batch noise, like Lightning's ``on_epoch=True``). NaN rows are skipped by the mean; a non-finite
  value is still reported by the ``nonfinite`` rule, which reads the raw frame.
* ``<term>``: ``val_<term>`` where the epoch has a val value, else ``train_<term>`` (val preferred).
* Bookkeeping terms (``kl_weight``, ``lr``, ``control_seq``, ``ae_mode``) have only ``<term>``: the last
  value logged in the epoch on any split, carried forward to later epochs that log none (a weight or a
  learning rate holds until it is changed).

Loss and metric terms are those of :data:`vaediag.terms.CANONICAL_TERMS` other than bookkeeping; rows of
split ``other`` (``test/...``), rows with no canonical term and rows with no epoch (NaN: no alignment
possible; pass ``--steps-per-epoch``) are left out. The index is the 0-based epoch index, named ``epoch``.

    >>> import vaediag                                        # doctest: +SKIP
    >>> rs = vaediag.load("logs/ear_teacher")                 # doctest: +SKIP
    >>> t = epoch_table(rs.run_frame("ear_vae/version_0"))    # doctest: +SKIP
    >>> t.loc[9, ["kl", "val_psnr", "train_recon"]]           # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from vaediag.terms import BOOKKEEPING_TERMS, CANONICAL_TERMS, STATE_TERMS, tag_aggregation, tag_group

__all__ = [
    "VALUE_TERMS",
    "STATE_TERMS",
    "epoch_table",
    "completed_epochs",
    "latest_metrics",
    "value_at",
    "choose_tags",
    "values_present",
]

# Loss and metric terms: measured per epoch, on train and/or val.
VALUE_TERMS: tuple[str, ...] = tuple(t for t in CANONICAL_TERMS if t not in BOOKKEEPING_TERMS)

_VALUE_SET = frozenset(VALUE_TERMS)
_STATE_SET = frozenset(STATE_TERMS)


def choose_tags(pairs: "pd.DataFrame") -> tuple[set[str], list[str]]:
    """Which tags feed each (term, split) of the epoch table, and notes on the choices.

    ``pairs`` has columns ``tag``, ``term``, ``split`` (one row per distinct tag). Several tags that map to one
    (term, split) are never averaged blindly:

    * Lightning's ``X_step`` / ``X_epoch`` pair (``on_step=True, on_epoch=True``) is one metric logged twice:
      the ``_epoch`` tag (the epoch's mean as Lightning computed it) is used, the ``_step`` tag left out.
    * Group tags (``val/recon_loss/grey`` and ``val/recon_loss/colour``) are parts of one metric: used when no
      ungrouped tag exists (their values are averaged per epoch, and a note says so), else left out.
    * Otherwise the first tag in name order is used and the others are named in a note.
    """
    keep: set[str] = set()
    notes: list[str] = []
    for (term, split), g in pairs.groupby(["term", "split"], sort=True):
        tags = sorted(map(str, g["tag"]))
        if len(tags) == 1:
            keep.add(tags[0])
            continue
        aggs = {t: tag_aggregation(t) for t in tags}
        epoch_tags = [t for t in tags if aggs[t] == "epoch"]
        if epoch_tags:
            dropped = [t for t in tags if aggs[t] == "step"]
            tags = [t for t in tags if aggs[t] != "step"]
            if dropped:
                notes.append(f"{split} {term}: {', '.join(dropped)} (per step) and {', '.join(epoch_tags)} (per "
                             "epoch) are one metric logged twice; the per-epoch tag is used")
            if len(tags) == 1:
                keep.add(tags[0])
                continue
        groups = {t: tag_group(t) for t in tags}
        plain = [t for t in tags if groups[t] is None]
        if plain:
            keep.add(plain[0])
            if len(tags) > 1:
                notes.append(f"{split} {term}: several tags map to it ({', '.join(tags)}); {plain[0]} is used")
        else:
            keep.update(tags)
            notes.append(f"{split} {term}: no overall tag, only groups ({', '.join(tags)}); their mean is used")
    return keep, notes


def _columns(rf: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``rf`` that the epoch table uses, as plain columns (no categoricals); one tag per
    (term, split) as :func:`choose_tags` picks. Rows before training (epoch < 0) are left out."""
    if len(rf) == 0:
        return pd.DataFrame({"term": [], "split": [], "epoch": [], "step": [], "value": []})
    ok = rf["epoch"].notna().to_numpy() & rf["term"].notna().to_numpy() & (rf["epoch"].to_numpy() >= 0)
    sub = rf.loc[ok, ["tag", "term", "split", "epoch", "step", "value"]]
    if len(sub):
        pairs = sub[["tag", "term", "split"]].astype(object).drop_duplicates()
        if pairs.duplicated(["term", "split"]).any():
            keep, _ = choose_tags(pairs)
            sub = sub[sub["tag"].astype(object).isin(keep).to_numpy()]
    return pd.DataFrame(
        {
            "term": sub["term"].astype(object).to_numpy(),
            "split": sub["split"].astype(object).to_numpy(),
            "epoch": np.floor(sub["epoch"].to_numpy()).astype(np.int64),
            "step": sub["step"].to_numpy(),
            "value": sub["value"].to_numpy(dtype=np.float64),
        }
    )


def _tables(rf: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, present): the epoch table and a same-shaped bool frame, True where a value was logged."""
    d = _columns(rf)
    is_value = d["term"].isin(_VALUE_SET).to_numpy()
    is_state = d["term"].isin(_STATE_SET).to_numpy()
    split = d["split"].to_numpy()

    pieces: dict[str, pd.Series] = {}
    logged: dict[str, pd.Series] = {}  # name -> epochs (index) where a row was logged

    def add(prefix: str, wide: pd.DataFrame, counts: pd.DataFrame) -> None:
        for term in wide.columns:
            name = f"{prefix}{term}"
            pieces[name] = wide[term]
            logged[name] = counts[term].notna() & (counts[term] > 0)

    train = d[is_value & (split == "train")]
    if len(train):
        g = train.groupby(["epoch", "term"], sort=True)["value"]
        add("train_", g.mean().unstack("term"), g.size().unstack("term"))
    val = d[is_value & (split == "val")]
    if len(val):
        last = _val_last(val)
        wide = last.pivot(index="epoch", columns="term", values="value")
        add("val_", wide, last.assign(n=1).pivot(index="epoch", columns="term", values="n"))
    state = d[is_state]
    if len(state):
        last = state.sort_values(["term", "step"], kind="stable").drop_duplicates(["term", "epoch"], keep="last")
        wide = last.pivot(index="epoch", columns="term", values="value")
        add("", wide, last.assign(n=1).pivot(index="epoch", columns="term", values="n"))

    if not pieces:
        empty = pd.DataFrame(index=pd.Index([], dtype=np.int64, name="epoch"))
        return empty, empty.astype(bool)
    table = pd.DataFrame(pieces).sort_index()
    table.index = table.index.astype(np.int64)
    table.index.name = "epoch"
    # Presence: a val/train cell is present where a row was logged (even a NaN one).
    present = pd.DataFrame(
        {name: m.reindex(table.index, fill_value=False).astype(bool) for name, m in logged.items()},
        index=table.index,
    )

    _merge_splits(table, present)
    return table, present


def _val_last(val: pd.DataFrame) -> pd.DataFrame:
    """Each val (term, epoch)'s rows at its last step; group tags logged together at that step are averaged.

    Last value per (epoch, term) in step order; a NaN val point is kept (it is news), and averages to NaN only
    when every tag in its group is NaN.
    """
    last = val.sort_values(["term", "epoch", "step"], kind="stable")
    at_last = last["step"].to_numpy() == last.groupby(["term", "epoch"])["step"].transform("max").to_numpy()
    last = last[at_last]
    if last.duplicated(["term", "epoch"]).any():  # group tags logged together: their mean
        last = last.groupby(["term", "epoch"], as_index=False, sort=False).agg(
            value=("value", lambda v: v.mean() if v.notna().any() else np.nan), step=("step", "max"))
    return last


def _merge_splits(table: pd.DataFrame, present: pd.DataFrame) -> None:
    """In place: each value term's bare column (val where logged, else train); state terms carried forward."""
    for term in VALUE_TERMS:
        v, t = f"val_{term}", f"train_{term}"
        if v in table and t in table:
            table[term] = np.where(present[v], table[v], table[t])
            present[term] = present[v] | present[t]
        elif v in table:
            table[term] = table[v]
            present[term] = present[v]
        elif t in table:
            table[term] = table[t]
            present[term] = present[t]
    for term in STATE_TERMS:
        if term in table:
            present[term] = present[term].cummax()  # carried forward from its first value on
            table[term] = table[term].ffill()


def epoch_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch, one column per canonical term of one run (column names: module docstring).

    Args:
        frame: the rows of ONE run of the tidy frame (``RunSet.run_frame(run)``).

    Returns:
        A DataFrame indexed by the 0-based epoch index (``epoch``), float64 columns ``<term>``,
        ``val_<term>``, ``train_<term>`` and the bookkeeping terms. Empty when nothing aligns to epochs.

    Raises:
        ValueError: ``frame`` holds more than one run.
    """
    if len(frame) and frame["run"].nunique() > 1:
        runs = sorted(map(str, frame["run"].unique()))[:3]
        raise ValueError(f"epoch_table takes one run's rows; got several ({', '.join(runs)} ...)")
    return _tables(frame)[0]


def completed_epochs(frame: pd.DataFrame) -> int:
    """Completed epochs of one run: last val epoch index + 1; without val rows, last epoch index + 1.

    A val point closes an epoch, so train steps of an epoch still running do not count; a run that logs
    no val split counts every epoch it has train rows for.
    """
    if len(frame) == 0:
        return 0
    d = _columns(frame)
    d = d[d["term"].isin(_VALUE_SET)]
    if len(d) == 0:
        return 0
    val = d[d["split"] == "val"]
    src = val if len(val) else d
    return int(src["epoch"].max()) + 1


def latest_metrics(table: pd.DataFrame, present: pd.DataFrame | None = None, *, epochs: int | None = None) -> dict[str, float]:
    """Latest value of each canonical-term column (``<term>``, not ``val_``/``train_``).

    The latest epoch where the term was logged, among completed epochs (``epochs``) when it was logged
    in one; a NaN logged there stays NaN (it is news, not a gap). Values are rounded to 7 significant
    figures: event files hold float32, so ``23.899999618530273`` was logged as 23.9.
    """
    if present is None:
        present = table.notna()
    out: dict[str, float] = {}
    for term in list(VALUE_TERMS) + list(STATE_TERMS):
        if term not in table:
            continue
        mask = present[term].to_numpy()
        if epochs is not None and epochs > 0:
            done = mask & (table.index.to_numpy() < epochs)
            if done.any():
                mask = done
        if not mask.any():
            continue
        i = np.flatnonzero(mask)[-1]
        v = float(table[term].iloc[i])
        out[term] = float(f"{v:.7g}") if np.isfinite(v) else v
    return out


def value_at(table: pd.DataFrame, column: str, epoch: int) -> tuple[float, int] | None:
    """``(value, epoch)`` of ``column`` at ``epoch`` or the latest epoch before it that has a value."""
    if column not in table:
        return None
    s = table[column].loc[: epoch]
    s = s[s.notna()]
    if len(s) == 0:
        return None
    return float(s.iloc[-1]), int(s.index[-1])


def values_present(col: pd.Series) -> set[str]:
    """The distinct non-null values of a column, as strings; read off the codes of a categorical column
    (the reader's run, tag and term), which costs microseconds where ``unique()`` costs a millisecond."""
    if len(col) == 0:
        return set()
    arr = col.array
    if isinstance(arr, pd.Categorical):
        codes = arr.codes  # (the array itself: .cat.codes builds a Series)
        return {str(v) for v in arr.categories.take(np.unique(codes[codes >= 0])).tolist()}
    return {str(v) for v in col.dropna().unique()}
