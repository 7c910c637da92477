r"""Text from files and directory names, made safe to show: on a terminal, in markdown, in a plot.

Run directory names, tag names, paths, journal reasons and config values come from files anyone can
write. Printed raw, an escape sequence in a run name can move the cursor up and erase the FAIL line
above it, retitle the terminal (OSC), or ring the bell; a name that is not UTF-8 (``b'run\xff'``,
decoded by Python as a lone surrogate) cannot even be encoded for output or drawn by matplotlib.

:func:`visible` is the one rule: every control character (C0 including newline, tab and carriage
return, DEL, the C1 range with its single-byte CSI ``\x9b``), every bidirectional-override character
(which can make text read backwards), and every lone surrogate (an undecodable byte) is written as a
visible Python-style escape: ``\x1b``, ``\n``, ``\x9b``, ``\u202e``, and ``\xff`` for the undecodable
byte ``0xff``. Everything else, including ordinary non-ASCII text, is kept as is. Backslashes are kept
as typed (so a path ``C:\x`` stays readable); an escape in the output therefore means either that byte
or those typed characters, which is what the eye needs to see that something is odd.

    >>> visible("run\x1b[2K\x07")
    'run\\x1b[2K\\x07'
    >>> visible("caf\xe9 \udcff")
    'café \\xff'
    >>> visible("two\nlines", newlines=True)
    'two\nlines'

The other helpers apply it where text goes: :func:`terminal` (rich console output, the watch panel
and status lines), :func:`plot_text` (matplotlib labels: also ``$`` so a name never becomes math),
and :func:`path_text` (a ``str``, ``bytes`` or ``PathLike`` path). Markdown escaping
(:func:`vaediag.render.markdown.escape` and ``code_span``) calls :func:`visible` first.
"""

from __future__ import annotations

import os
import re

__all__ = ["visible", "terminal", "plot_text", "path_text", "is_clean"]

# C0 controls, DEL, C1 controls; bidi embeddings/overrides/isolates and the marks that steer them;
# the line and paragraph separators; lone surrogates (surrogateescape'd bytes or broken UTF-16).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_UNSAFE_KEEP_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                             "\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape: the undecodable byte itself
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def visible(text: object, *, newlines: bool = False) -> str:
    """``text`` with every control, bidi-override and undecodable character written as a visible escape.

    ``newlines=True`` keeps ``\\n`` as a line break (for multi-line text printed as lines); a carriage
    return is escaped either way, since it can overwrite a line.
    """
    s = text if isinstance(text, str) else str(text)
    pattern = _UNSAFE_KEEP_NL if newlines else _UNSAFE
    if pattern.search(s) is None:  # the common case costs one scan
        return s
    return pattern.sub(_escape_one, s)


def is_clean(text: str) -> bool:
    """True when :func:`visible` would leave ``text`` unchanged."""
    return _UNSAFE.search(text) is None


def terminal(text: object, *, newlines: bool = False) -> str:
    """Text for a terminal: :func:`visible` (rich markup is the caller's business: print it with
    ``markup=False`` or inside a ``rich.text.Text``)."""
    return visible(text, newlines=newlines)


def plot_text(text: object) -> str:
    """Text for a matplotlib label or title: :func:`visible`, and ``$`` escaped so it is never mathtext
    (a run named ``a$\\frac$`` would otherwise stop the drawing with a parse error)."""
    return visible(text).replace("$", r"\$")


def path_text(path: str | bytes | os.PathLike) -> str:
    """A path as text a person can read: decoded like ``os.fsdecode``, then :func:`visible`."""
    return visible(os.fsdecode(os.fspath(path)))
