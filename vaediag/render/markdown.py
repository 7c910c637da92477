r"""Small markdown building blocks for reports: escaping, tables, link targets, file-name slugs.

Everything a report writes from user data (run ids, tag names, finding messages) goes through
:func:`escape`, so a run named ``a|b*c`` or a tag with backticks cannot split a table cell or turn the
rest of a line into bold or code. Numbers are formatted by :mod:`vaediag.diagnose.numbers`, the same
text ``vaediag check`` prints.

    >>> escape("runs/a|b*c [1]")
    'runs/a\\|b\\*c \\[1\\]'
    >>> print(table(["run", "KL"], [[escape("a|b"), "1,535"]], align="lr"))
    | run | KL |
    |:---|---:|
    | a\|b | 1,535 |
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence
from urllib.parse import quote

from vaediag.sanitize import visible

__all__ = ["MISSING", "escape", "code_span", "table", "link_path", "slug"]

# What a cell shows for a value that was not logged (a dash reads as "nothing here", unlike "0").
MISSING = "—"

# CommonMark lets a backslash escape any ASCII punctuation. These are the characters that can open
# emphasis, code, links, strike-through or GitHub math, or split a GFM table cell, anywhere in a line;
# names never start a line in a report, so line-start markers (#, >, -, +) stay as they are.
_SPECIAL = re.compile(r"([\\`*\[\]|~$])")
# An underscore between two letters or digits ("ear_vae", "version_0") can neither open nor close
# emphasis in CommonMark, so only the others are escaped: run ids stay readable in the raw file.
_LOOSE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# "<" opens raw HTML or an autolink only before a letter, "/", "!" or "?"; "&" an entity only before a
# letter or "#". Elsewhere ("KL < 500", "R&D") they stay as typed.
_HTML_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY_OPEN = re.compile(r"&(?=[A-Za-z#])")


def escape(text: object) -> str:
    r"""Escape ``text`` for use anywhere in a markdown line, including inside a table cell.

    Backslash-escapes markdown punctuation, writes ``<`` and ``&`` as entities where they could start an
    HTML tag or an entity (a run named ``<b>`` shows literally), and shows newlines, other control
    characters and undecodable bytes as visible escapes (:func:`vaediag.sanitize.visible`: a newline is
    ``\n``), so a cell stays on one line, a newline can never start a block (a raw HTML ``<div>``, a
    heading) and the file holds no terminal escape sequence.

        >>> print(escape("a|b *c* _d_ ear_vae <b>&amp; x < 5"))
        a\|b \*c\* \_d\_ ear_vae &lt;b>&amp;amp; x < 5
    """
    s = visible(text)
    s = _ENTITY_OPEN.sub("&amp;", s)
    s = _HTML_OPEN.sub("&lt;", s)
    s = _SPECIAL.sub(r"\\\1", s)
    return _LOOSE_UNDERSCORE.sub(r"\\_", s)


def code_span(text: object) -> str:
    """``text`` as an inline code span that shows it exactly (control characters as visible escapes).

    The fence is one backtick longer than the longest backtick run inside, padded with a space when the
    text starts or ends with a backtick (CommonMark), so no text can close the span early; inside a code
    span a backslash is literal, so nothing else needs escaping. Not for table cells (``|`` would split
    the cell there: use :func:`escape`).

        >>> print(code_span("logs/a`b"))
        ``logs/a`b``
    """
    s = visible(text)
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or (s.startswith(" ") and s.endswith(" ") and s.strip()) else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], *, align: str | None = None) -> str:
    """A GitHub-flavoured markdown table. Cells must already be escaped (see :func:`escape`).

    Args:
        header: column titles (escaped markdown).
        rows: one sequence of cell strings per row, each as long as ``header``; an empty cell shows
            :data:`MISSING`.
        align: one letter per column, ``l``, ``r`` or ``c``; default all left.

    Raises:
        ValueError: a row with the wrong number of cells, or a bad ``align`` string (a bug in the caller,
            never bad user input: user text is escaped and cannot add cells).
    """
    n = len(header)
    align = align or "l" * n
    if len(align) != n or set(align) - set("lrc"):
        raise ValueError(f"align {align!r} must have one of l, r, c per column ({n} columns)")
    sep = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep[a] for a in align) + "|"]
    for i, row in enumerate(rows):
        if len(row) != n:
            raise ValueError(f"table row {i} has {len(row)} cells, header has {n}")
        lines.append("| " + " | ".join(c if c.strip() else MISSING for c in row) + " |")
    return "\n".join(lines)


def link_path(relative: str) -> str:
    """A relative file path as a markdown link target (spaces and odd characters percent-encoded)."""
    return quote(relative, safe="/._-")


_SLUG_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str) -> str:
    """A file-name-safe version of ``text``: ``slug("ear teacher|x") == "ear-teacher-x"``."""
    s = _SLUG_BAD.sub("-", text).strip("-.")
    return s or "report"
