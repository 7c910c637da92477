"""vaediag.safeio: regular files only, never blocking, never unbounded."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from vaediag.errors import ControlFileError, InputError
from vaediag.safeio import NotAFileError, read_bytes, read_text


def test_reads_a_regular_file_and_a_link_to_one(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text("x = 1\n")
    (tmp_path / "link.toml").symlink_to(f)
    assert read_text(f, what="rules file") == "x = 1\n"
    assert read_text(tmp_path / "link.toml", what="rules file") == "x = 1\n"


def test_missing(tmp_path: Path) -> None:
    assert read_text(tmp_path / "nope", what="control file", missing_ok=True) is None
    with pytest.raises(InputError, match=r"rules file '.*nope' does not exist"):
        read_text(tmp_path / "nope", what="rules file")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "control.json"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    t = threading.Thread(target=lambda: _capture(result, fifo), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert isinstance(result[0], ControlFileError) and "FIFO" in str(result[0])


def _capture(result: list, path: Path) -> None:
    try:
        read_text(path, what="control file", error=ControlFileError)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        result.append(exc)


def test_devices_and_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotAFileError, match="character device"):
        read_bytes("/dev/zero", what="rules file")
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    with pytest.raises(NotAFileError, match="character device"):
        read_bytes(tmp_path / "zero.toml", what="rules file")
    with pytest.raises(NotAFileError, match="directory"):
        read_bytes(tmp_path, what="rules file")


def test_the_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 2049)
    with pytest.raises(NotAFileError, match="2,049 bytes; the limit is 2,048"):
        read_bytes(big, what="rules file", max_bytes=2048)
    assert len(read_bytes(big, what="rules file", max_bytes=2049)) == 2049


def test_not_utf8(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_bytes(b"x = '\xff'")
    with pytest.raises(InputError, match="not UTF-8"):
        read_text(f, what="rules file")
