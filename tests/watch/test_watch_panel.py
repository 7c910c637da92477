"""vaediag.watch.panel: the live panel and the status line show the numbers; the penalty share."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from vaediag.watch.panel import WatchStatus, penalty_share, render_panel, status_line


def test_panel_shows_the_numbers():
    s = WatchStatus(policy="ladder", run_dir="logs/ear_teacher/ear_vae/version_2", pid=42, child_state="running",
                    epoch=9, kl=1535.0, recon=0.111, psnr=23.9, kl_weight=1e-5, last_action="set_kl_weight",
                    last_reason="kl = 1535 > 500 after epoch 10: kl_weight 1e-05 -> 1e-06",
                    last_applied="applied: control seq 1", decisions=10, changes=1)
    con = Console(file=io.StringIO(), width=100)
    con.print(render_panel(s))
    out = con.file.getvalue()
    for text in ("version_2", "pid 42", "10 completed", "1535", "13.83%", "23.90 dB", "1e-05", "set_kl_weight",
                 "applied: control seq 1", "kl = 1535 > 500 after epoch 10"):
        assert text in out
    assert status_line(s).startswith("watch: epoch 10  kl 1535  share 13.83%  psnr 23.90  kl_weight 1e-05  -> set_kl_weight")


@pytest.mark.parametrize("w,kl,recon,expected", [(1e-5, 1500.0, 0.111, 0.1351), (None, 1.0, 1.0, None),
                                                 (1e-5, 1500.0, 0.0, None), (1e-7, 300.0, 0.111, 2.7e-4)])
def test_penalty_share(w, kl, recon, expected):
    got = penalty_share(w, kl, recon)
    assert got == (pytest.approx(expected, rel=1e-2) if expected is not None else None)
