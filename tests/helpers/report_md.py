"""Helpers for the report tests: parse a report with a real CommonMark + GFM-table parser (markdown-it-py,
which rich already depends on) and check its tables, links and text."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]  # cell text as rendered (inline markdown resolved), one list per row
    heading: str  # the section heading the table sits under


def parse(text: str):
    return _MD.parse(text)


def headings(text: str, level: int = 2) -> list[str]:
    toks = parse(text)
    out = []
    for i, t in enumerate(toks):
        if t.type == "heading_open" and t.tag == f"h{level}":
            out.append(_inline_text(toks[i + 1]))
    return out


def _inline_text(tok) -> str:
    """The visible text of an inline token (what a reader sees)."""
    parts = []
    for c in tok.children or []:
        if c.type in ("text", "code_inline"):
            parts.append(c.content)
        elif c.type == "softbreak":
            parts.append(" ")
    return "".join(parts)


def tables(text: str) -> list[Table]:
    """Every table of the document as the parser sees it (cells as rendered text)."""
    toks = parse(text)
    out: list[Table] = []
    heading = ""
    cur: Table | None = None
    row: list[str] | None = None
    in_head = False
    for i, t in enumerate(toks):
        if t.type == "heading_open":
            heading = _inline_text(toks[i + 1])
        elif t.type == "table_open":
            cur = Table(header=[], rows=[], heading=heading)
        elif t.type == "thead_open":
            in_head = True
        elif t.type == "thead_close":
            in_head = False
        elif t.type == "tr_open":
            row = []
        elif t.type in ("th_open", "td_open"):
            row.append(_inline_text(toks[i + 1]))
        elif t.type == "tr_close":
            if in_head:
                cur.header = row
            else:
                cur.rows.append(row)
        elif t.type == "table_close":
            out.append(cur)
            cur = None
    return out


_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def raw_table_blocks(text: str) -> list[list[str]]:
    """Consecutive lines starting with '|' (raw GFM table blocks)."""
    blocks, cur = [], []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return blocks


def raw_cells(line: str) -> int:
    """Number of cells of a raw table line (unescaped pipes, minus the two borders)."""
    return len(_UNESCAPED_PIPE.findall(line)) - 1


def image_links(text: str) -> list[str]:
    """Targets of every image in the document."""
    out = []
    for t in parse(text):
        for c in t.children or []:
            if c.type == "image":
                out.append(c.attrs["src"])
    return out


def visible_text(text: str) -> str:
    """The document's rendered text without tags (entities resolved)."""
    return html.unescape(re.sub(r"<[^>]+>", "", _MD.render(text)))


def rendered(text: str) -> str:
    return _MD.render(text)


def png_text_chunks(data: bytes) -> list[bytes]:
    """Keys of the tEXt/iTXt/zTXt chunks of a PNG (metadata)."""
    assert data.startswith(PNG_MAGIC)
    pos = 8
    keys = []
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if kind in (b"tEXt", b"iTXt", b"zTXt"):
            keys.append(body.split(b"\0", 1)[0])
        pos += 12 + n
    return keys


def without_generated(text: str, prefix: str) -> str:
    lines = text.splitlines(keepends=True)
    hits = [ln for ln in lines if ln.startswith(prefix)]
    assert len(hits) == 1, f"expected one generated line, found {len(hits)}"
    return "".join(ln for ln in lines if not ln.startswith(prefix))


def files_of(md_path: Path) -> dict[str, bytes]:
    d = md_path.with_name(md_path.stem + "_files")
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.is_dir() else {}
