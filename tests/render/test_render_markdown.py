"""vaediag.render.markdown: escaping that a CommonMark parser reads back as the text, tables, link paths, slugs."""

from __future__ import annotations

import pytest

import report_md as md
from vaediag.render.markdown import escape, link_path, slug, table


@pytest.mark.parametrize(
    "raw, escaped",
    [
        ("ear_vae/version_0", "ear_vae/version_0"),  # intraword underscores cannot format: left readable
        ("_private_", r"\_private\_"),
        ("a|b", r"a\|b"),
        ("*x*", r"\*x\*"),
        ("`code`", r"\`code\`"),
        ("[l](u)", r"\[l\](u)"),
        ("<script>", "&lt;script>"),
        ("KL < 500", "KL < 500"),
        ("&amp;", "&amp;amp;"),
        ("R&D", "R&amp;D"),
        ("~~s~~", r"\~\~s\~\~"),
        ("$x$", r"\$x\$"),
        ("back\\slash", "back\\\\slash"),
        # Control characters and undecodable bytes show as visible escapes (a newline can never start a
        # block, the file holds no terminal escape sequence); the backslash itself is escaped for markdown.
        ("two\nlines\ttab", r"two\\nlines\\ttab"),
        ("x\n<div>", r"x\\n&lt;div>"),
        ("run\x1b[2K\x9b", r"run\\x1b\[2K\\x9b"),
        ("run\udcff", r"run\\xff"),
    ],
)
def test_escape(raw, escaped):
    from vaediag.sanitize import visible

    assert escape(raw) == escaped
    # And a CommonMark parser shows the text as it is (control characters as their escapes), in a table
    # cell too.
    (t,) = md.tables(table(["h"], [[escape(raw)]]))
    assert t.rows == [[visible(raw)]]


def test_table_rejects_wrong_cell_counts():
    with pytest.raises(ValueError, match="table row 0 has 1 cells, header has 2"):
        table(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="align 'lx'"):
        table(["a", "b"], [], align="lx")


def test_link_path_and_slug():
    assert link_path("a b|c_files/x.png") == "a%20b%7Cc_files/x.png"
    assert slug("odd project|x*") == "odd-project-x" and slug("***") == "report"
