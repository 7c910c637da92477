"""Notes: facts the reader found about a run's data, as data (``RunInfo.facts``, ``Tail.facts``).

Code decides on a note's :class:`NoteKind`, ``tag`` and ``count``, never on its words: ``message`` is the
text renderers show (``RunInfo.notes`` lists it), written from the note's fields by the constructor of its
kind below, the one place that words each kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["Note", "NoteKind"]


class NoteKind(str, Enum):
    """What a note is about (a string enum: ``NoteKind.POST_FIT_EVAL == "post_fit_eval"``)."""

    KL_SIGN_FLIPPED = "kl_sign_flipped"  # a KL series logged as -KL was negated
    KL_SIGN_CONTRADICTED = "kl_sign_contradicted"  # the tail: later values contradict an earlier flip
    POST_FIT_EVAL = "post_fit_eval"  # val rows after fit (trainer.validate()) read as other
    SPLIT_FROM_CADENCE = "split_from_cadence"  # a tag without a split marker read as val from its steps
    SPLIT_FROM_SIBLING = "split_from_sibling"  # ... from a train-marked tag of the same term (a guess)
    STEP_MINUS_ONE = "step_minus_one"  # rows at a negative step: epoch -1
    TAGS_NOT_READ = "tags_not_read"  # tags no term names past the reader's limit: counted, not read
    TEXT_COLUMNS = "text_columns"  # a metrics log's columns without numbers, ignored
    PROJECT_CONFIG = "project_config"  # parameters from latent-diffusion's project config
    PROJECT_CONFIG_IGNORED = "project_config_ignored"  # a project config that could not be read

    def __str__(self) -> str:
        return self.value


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'s' if k != 1 else ''}"


@dataclass(frozen=True)
class Note:
    """A structured fact about a run's data.

    ``kind``: a :class:`NoteKind` (its value is accepted too); ``tag``: the tag concerned, where there is
    one; ``count``: the rows (or scalars) concerned, where that is a number; ``message``: the text shown.
    """

    kind: NoteKind
    tag: str | None
    message: str
    count: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", NoteKind(self.kind))

    def __str__(self) -> str:
        return self.message

    # One constructor per kind: the wording of each, from the fields.

    @classmethod
    def kl_sign_flipped(cls, tag: str, values: int, *, so_far: bool) -> "Note":
        """``values`` finite values of ``tag`` are <= 0 (``so_far``: in the polls read yet)."""
        where = f"({_n(values, 'value')} so far)" if so_far else f"throughout ({_n(values, 'value')})"
        return cls(NoteKind.KL_SIGN_FLIPPED, tag, f"{tag!r} is <= 0 {where}: logged as -KL, sign flipped", values)

    @classmethod
    def kl_sign_contradicted(cls, tag: str, positive: int) -> "Note":
        return cls(NoteKind.KL_SIGN_CONTRADICTED, tag,
                   f"{tag!r} was read as -KL but now has positive values; sign kept flipped", positive)

    @classmethod
    def split_from_sibling(cls, tag: str, points: int) -> "Note":
        return cls(NoteKind.SPLIT_FROM_SIBLING, tag,
                   f"tag {tag!r} has no split marker and the run marks no val tag; its term is logged as train "
                   f"under another name and {tag!r} once per epoch: read as val (a guess; --tags overrides it)",
                   points)

    @classmethod
    def split_from_cadence(cls, tag: str, points: int) -> "Note":
        return cls(NoteKind.SPLIT_FROM_CADENCE, tag,
                   f"tag {tag!r} has no split marker; logged once per epoch at the val steps: read as val", points)

    @classmethod
    def step_minus_one(cls, tag: str, rows: int) -> "Note":
        return cls(NoteKind.STEP_MINUS_ONE, tag,
                   f"{tag!r}: {_n(rows, 'value')} at a negative step (an evaluation before training): kept, at "
                   "epoch -1", rows)

    @classmethod
    def post_fit_eval(cls, tags: list[str], rows: int, epochs: list[int]) -> "Note":
        """``rows`` val rows of ``tags`` at ``epochs`` past the last training epoch (tag: the one, if one)."""
        return cls(NoteKind.POST_FIT_EVAL, tags[0] if len(tags) == 1 else None,
                   f"{_n(rows, 'val value')} ({', '.join(map(repr, tags))}) logged after the last training epoch at "
                   f"epoch {', '.join(map(str, epochs))} without a training step (a trainer.validate()/test() "
                   "after fit): read as other, not a training epoch", rows)

    @classmethod
    def tags_not_read(cls, tags: int, scalars: int, *, limit: int) -> "Note":
        return cls(NoteKind.TAGS_NOT_READ, None,
                   f"{tags:,} more tag{'s' if tags != 1 else ''} that no term names {'were' if tags != 1 else 'was'} "
                   f"not read ({scalars:,} scalars): vaediag reads at most {limit:,} such tags per load", scalars)

    @classmethod
    def text_columns(cls, file: str, columns: list[str]) -> "Note":
        """Columns of the metrics log ``file`` that hold no number, ignored (sorted; eight are named)."""
        shown = ", ".join(repr(c) for c in columns[:8]) + (f" and {len(columns) - 8} more" if len(columns) > 8 else "")
        return cls(NoteKind.TEXT_COLUMNS, None,
                   f"{file}: column{'s' if len(columns) != 1 else ''} without numbers ignored: {shown}", len(columns))
