"""vaediag.watch.control: a half-written or malformed control file is never applied; the loop's side of
the contract (tests/helpers/fakerun.py)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from vaediag.errors import ControlFileError
from vaediag.watch.control import REASON_MAX_CHARS, Control, read_control, reason_line, write_control


def test_every_prefix_of_a_control_file_is_rejected(tmp_path):
    text = Control(seq=3, kl_weight=1e-7, mode="vae", reason="kl = 1535 > 500", issued_at="t").to_json() + "\n"
    f = tmp_path / "control.json"
    for n in range(len(text.rstrip())):
        f.write_text(text[:n])
        with pytest.raises(ControlFileError):
            read_control(f)
    f.write_text(text)
    assert read_control(f).seq == 3


@pytest.mark.parametrize("content,match", [
    ('{"seq": 1}', r"missing key\(s\) \['kl_weight'\]"),
    ('{"seq": 1, "kl_weight": -1}', r"finite and >= 0"),
    ('{"seq": 1, "kl_weight": 1e-3, "mode": "gan"}', r"mode 'gan' is unknown"),
    ('{"seq": 1, "kl_weight": 1e-3, "stop": true}', r"unknown key"),
    ('[1, 2]', r"must hold a JSON object"),
])
def test_malformed_control_files(tmp_path, content, match):
    (tmp_path / "control.json").write_text(content)
    with pytest.raises(ControlFileError, match=match):
        read_control(tmp_path)


@pytest.mark.parametrize("reason, shown", [
    ("kl = 1535 > 500 at epoch 10", "kl = 1535 > 500 at epoch 10"),
    ("two\nlines,\ttabs  and\x00 a NUL", "two lines, tabs and a NUL"),
    ("", ""),
    ("r" * 5000, "r" * (REASON_MAX_CHARS - 1) + "\u2026"),
])
def test_control_reason_is_optional_and_shown_as_one_bounded_line(tmp_path, reason, shown):
    write_control(tmp_path, Control(seq=1, kl_weight=1e-3, reason=reason))
    assert reason_line(read_control(tmp_path).reason) == shown
    (tmp_path / "control.json").write_text('{"seq": 2, "kl_weight": 0.001}')  # a file from before the field
    assert read_control(tmp_path).reason == "" and reason_line("") == ""


def test_control_module_doctests():
    import doctest

    import vaediag.watch.control

    assert doctest.testmod(vaediag.watch.control).failed == 0


def test_reader_never_sees_a_partial_control_file(tmp_path):
    stop, seen, bad = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                c = read_control(tmp_path)
            except ControlFileError as exc:
                bad.append(exc.message)
            else:
                if c is not None:
                    seen.append(c.seq)

    t = threading.Thread(target=reader)
    t.start()
    for seq in range(1, 201):
        write_control(tmp_path, Control(seq=seq, kl_weight=10.0 ** -(seq % 8), reason="r" * 2000))
    stop.set()
    t.join()
    assert bad == [] and seen == sorted(seen)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_fake_loop_ignores_half_written_control(tmp_path):
    """The loop side of the contract, with the shared reader: a torn file changes nothing, a whole one does."""
    import fakerun

    run = tmp_path / "logs"
    (run / "version_0").mkdir(parents=True)
    (run / "version_0" / "control.json").write_text('{"seq": 1, "kl_weight": 1e-')  # torn
    ckpt = tmp_path / "c.pt"
    ckpt.write_text(json.dumps({"run_dir": str(run / "version_0"), "epoch": 0, "step": 0, "last_seq": 0}))
    fakerun.train(logdir=run, epochs=1, kl_weight=1e-2, resume=str(ckpt), ckpt_path=ckpt, epoch_seconds=0.0)
    assert json.loads(ckpt.read_text())["kl_weight"] == 1e-2
