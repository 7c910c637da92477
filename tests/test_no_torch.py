"""The analysis layer never imports torch: `import vaediag.cli` and `vaediag check` leave it out of sys.modules
(and optuna, which only vaediag.integrations.optuna imports).

Run in a fresh interpreter, because the test process itself may have imported torch for other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import io, json, sys, contextlib
import vaediag.cli
after_import = sorted(m for m in ("torch", "matplotlib", "train", "optuna") if m in sys.modules)
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = vaediag.cli.main(["check", sys.argv[1], "--json"])
runs = len(json.loads(out.getvalue())["runs"])
after_check = sorted(m for m in ("torch", "matplotlib", "train", "optuna") if m in sys.modules)
print(json.dumps({"after_import": after_import, "after_check": after_check, "rc": rc, "runs": runs}))
"""


@pytest.mark.slow
def test_cli_and_check_do_not_import_torch(realworld):
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(realworld)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["after_import"] == [], got
    assert got["after_check"] == [], got  # no torch, no training core, no matplotlib, no optuna for `check`
    assert got["rc"] in (0, 1) and got["runs"] >= 10
