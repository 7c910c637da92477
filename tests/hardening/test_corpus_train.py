"""Corpus rows: doors of the training core (`python -m train`): --config, --resume, divergence, full disks.

Rows that only parse their input run in well under a second (torch is imported only once training
starts); rows that train use a tiny model on a few real crops built inside the case's directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corpus import Case, params, run_case


def _config(text: str | bytes, name: str = "c.yaml"):
    def build(tmp: Path) -> list[str]:
        p = tmp / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return ["--config", str(p)]
    return build


def _fifo(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "c.json")
    return ["--config", str(tmp / "c.json")]


_BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
         + "".join(f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi")))

CONFIG_CASES = [
    Case("train-config-missing", lambda t: ["--config", str(t / "nope.json")], 2,
         r"^Error: config file .*nope\.json.* does not exist$", program="train"),
    Case("train-config-fifo", _fifo, 2, r"^Error: config file .*c\.json.* is a FIFO", program="train", timeout=20),
    Case("train-config-dev-zero", lambda t: ["--config", "/dev/zero"], 2,
         r"^Error: config file '/dev/zero' is a character device", program="train", timeout=20),
    Case("train-config-directory", lambda t: ["--config", str(t)], 2, r"^Error: config file .* is a directory",
         program="train"),
    Case("train-config-huge", _config(b"{" + b" " * (1 << 20) + b"}", "c.json"), 2,
         r"^Error: config file .* the limit is 65,536", program="train", timeout=20),
    Case("train-config-billion-laughs", _config(_BOMB), 2, r"^Error: config file .* uses a YAML alias \(\*a at line 2\)",
         program="train", timeout=20),
    Case("train-config-deep-yaml", _config("- " * 5000 + "x\n"), 2, r"^Error: config file .* nests more than 8 levels",
         program="train", timeout=20),
    Case("train-config-deep-flow-yaml", _config("a: " + "[" * 5000 + "]" * 5000), 2,
         r"^Error: config file .* not valid YAML: exceeded maximum nesting depth", program="train", timeout=20),
    Case("train-config-deep-json", _config("[" * 30000 + "]" * 30000, "c.json"), 2,
         r"^Error: config file .* nested too deeply", program="train", timeout=20),
    Case("train-config-bad-json", _config("{not json", "c.json"), 2, r"^Error: config file .* is not valid JSON",
         program="train"),
    Case("train-config-python-tag", _config("!!python/object/apply:os.system ['true']\n"), 2,
         r"^Error: config file .* is not valid YAML: could not determine a constructor", program="train"),
    Case("train-config-not-utf8", _config(b'{"name": "\xff"}', "c.json"), 2, r"^Error: config file .* is not UTF-8",
         program="train"),
    Case("train-config-unknown-key", _config("kl_wieght: 0.1\n"), 2, r"^Error: config file .* unknown key\(s\) 'kl_wieght'",
         program="train"),
    Case("train-config-nul-in-name", _config('{"name": "a\\u0000b"}', "c.json"), 2,
         r"^Error: config file .*c\.json: name must be text without NUL", program="train"),
    Case("train-config-huge-int", _config('{"lr": 1' + "0" * 400 + "}", "c.json"), 2,
         r"^Error: config file .*c\.json: lr must be a finite number, got an integer of 401 digits", program="train"),
]

CASES = CONFIG_CASES


@pytest.mark.parametrize("case", params(CASES))
def test_corpus_train(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)
