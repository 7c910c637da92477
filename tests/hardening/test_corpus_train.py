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
    # Usage errors: one line and where the help is, as vaediag's own commands (argparse printed its 26-line
    # usage block and "python -m train: error: ...").
    Case("train-usage-unknown-option", lambda t: ["--bogus"], 2,
         r"^Error: unrecognized arguments: --bogus; see python -m train --help$", program="train"),
    Case("train-usage-bad-value", lambda t: ["--lr", "x"], 2,
         r"^Error: argument --lr: invalid float value: 'x'; see python -m train --help$", program="train"),
    Case("train-usage-missing-value", lambda t: ["--epochs"], 2,
         r"^Error: argument --epochs: expected one argument; see python -m train --help$", program="train"),
    # A flag or value that carries escape sequences or a newline: shown as visible escapes, on one line.
    Case("train-usage-escapes-in-unknown-option", lambda t: ["--b\x1b]0;pwned\x07\n\x9b"], 2,
         r"^Error: unrecognized arguments: --b\\x1b\]0;pwned\\x07\\n\\x9b; see python -m train --help$",
         program="train"),
    Case("train-help-is-unchanged", lambda t: ["--help"], 0, "", program="train", stdout=r"\Ausage: python -m train "),
    Case("train-config-huge-int", _config('{"lr": 1' + "0" * 400 + "}", "c.json"), 2,
         r"^Error: config file .*c\.json: lr must be a finite number, got an integer of 401 digits", program="train"),
]



def _resume(damage):
    """A run directory and checkpoint laid out as the trainer does; ``damage(payload, tmp)`` edits a copy."""

    def build(tmp: Path) -> list[str]:
        import torch
        from trainhelp import make_run_and_checkpoint

        _, _, payload = make_run_and_checkpoint(tmp)
        damage(payload, tmp)
        torch.save(payload, tmp / "damaged.pt")
        return ["--resume", str(tmp / "damaged.pt"), "--epochs", "3"]
    return build


def _victim(payload, tmp):
    (tmp / "victim").mkdir()
    (tmp / "victim" / "config.json").write_text("{}")
    payload["run_dir"] = str(tmp / "victim")


def _not_a_checkpoint(kind):
    def build(tmp: Path) -> list[str]:
        p = tmp / "last.pt"
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "garbage":
            p.write_bytes(b"PK\x03\x04 not a zip at all" * 100)
        elif kind == "pickle":  # a classic pickle that would run code: weights_only refuses it
            p.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
        return ["--resume", str(p)]
    return build


RESUME_CASES = [
    Case("train-resume-missing", _not_a_checkpoint("missing"), 2, r"^Error: checkpoint .*last\.pt' does not exist",
         program="train"),
    Case("train-resume-fifo", _not_a_checkpoint("fifo"), 2, r"^Error: checkpoint .*last\.pt' is not a regular file",
         program="train", timeout=30),
    Case("train-resume-dev-zero", lambda t: ["--resume", "/dev/zero"], 2,
         r"^Error: checkpoint '/dev/zero' is not a regular file", program="train", timeout=30),
    Case("train-resume-garbage", _not_a_checkpoint("garbage"), 2, r"^Error: checkpoint .* cannot be loaded with "
         r"weights_only=True", program="train"),
    Case("train-resume-code-pickle", _not_a_checkpoint("pickle"), 2, r"^Error: checkpoint .* cannot be loaded with "
         r"weights_only=True", program="train"),
    Case("train-resume-no-state", _resume(lambda pl, t: pl.pop("state")), 2,
         r"^Error: checkpoint .*damaged\.pt is incomplete: the loop's counters \('state'\) is missing",
         program="train"),
    Case("train-resume-no-config", _resume(lambda pl, t: pl.pop("config")), 2,
         r"^Error: checkpoint .* is incomplete: the run's config \('config'\) is missing", program="train"),
    Case("train-resume-wrong-weights", _resume(lambda pl, t: pl["model"].update({next(iter(pl["model"])): pl["model"][
        next(iter(pl["model"]))][:1]})), 2, r"^Error: checkpoint .* does not fit the \w+ model of its own config",
         program="train"),
    Case("train-resume-run-dir-elsewhere", _resume(_victim), 2,
         r"^Error: checkpoint .* names run directory '.*victim', which is not a run directory of this trainer",
         program="train"),
    Case("train-resume-run-dir-relative", _resume(lambda pl, t: pl.update(run_dir="logs/proj/run/version_0")), 2,
         r"^Error: checkpoint .* which is not an absolute path", program="train"),
    Case("train-resume-bad-counter", _resume(lambda pl, t: pl["state"].update(epoch=-1)), 2,
         r"^Error: checkpoint .* is damaged: the loop's epoch is '-1'", program="train"),
]



def _data_door(flag: str, kind: str):
    """Real tiny data, with the file behind ``flag`` replaced by a FIFO or a device."""

    def build(tmp: Path) -> list[str]:
        from trainhelp import tiny_argv, tiny_data

        npy = tiny_data(tmp / "data")
        target = {"fifo": str(tmp / "door"), "device": "/dev/zero"}[kind]
        if kind == "fifo":
            os.mkfifo(target)
        return [*tiny_argv(tmp, npy, image_size=32), f"--{flag}", target]
    return build


DATA_CASES = [
    Case("train-data-fifo", _data_door("train-npy", "fifo"), 2, r"^Error: train data .*door' is not a regular file",
         program="train", timeout=60),
    Case("train-data-device", _data_door("val-npy", "device"), 2,
         r"^Error: val data '/dev/zero' is not a regular file", program="train", timeout=60),
    Case("train-perceptual-weights-fifo", _data_door("perceptual-weights", "fifo"), 2,
         r"^Error: perceptual weights .*door' are not a regular file", program="train", timeout=60),
    Case("train-perceptual-weights-device", _data_door("perceptual-weights", "device"), 2,
         r"^Error: perceptual weights '/dev/zero' are not a regular file", program="train", timeout=60),
]



def _dir_is_a_file(flag: str):
    def build(tmp: Path) -> list[str]:
        from trainhelp import tiny_argv, tiny_data

        npy = tiny_data(tmp / "data")
        (tmp / "a_file").write_text("not a directory")
        return [*tiny_argv(tmp, npy, image_size=32), f"--{flag}", str(tmp / "a_file")]
    return build


DATA_CASES += [
    Case("train-logdir-is-a-file", _dir_is_a_file("logdir"), 2,
         r"^Error: cannot create the run's directories under .*a_file: Not a directory \(.*a_file/run\); "
         r"choose another --logdir or --checkpoint-dir$", program="train", timeout=60),
    Case("train-checkpoint-dir-is-a-file", _dir_is_a_file("checkpoint-dir"), 2,
         r"^Error: cannot create the run's directories under .*: Not a directory \(.*a_file/proj/run\)",
         program="train", timeout=60, may_create=("logs", "logs/proj", "logs/proj/run")),  # parents, no version
    # The same refusal for a --name with an escape sequence and a newline: one line, the escapes visible.
    Case("train-logdir-is-a-file-name-with-escapes", lambda t: [*_dir_is_a_file("logdir")(t), "--name", "n\x1b[2K\nx"],
         2, r"^Error: cannot create the run's directories under .*a_file: Not a directory \(.*a_file/n\\x1b\[2K\\nx\)",
         program="train", timeout=60),
]

CASES = CONFIG_CASES


@pytest.mark.parametrize("case", params(CASES))
def test_corpus_train(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)


@pytest.mark.slow  # each imports torch in the child (a few seconds on a busy machine)
@pytest.mark.parametrize("case", params(RESUME_CASES + DATA_CASES))
def test_corpus_train_torch_inputs(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)


# Rows that train a few steps (torch, the perceptual trunk, a tiny model on 32 px random images).

def _diverging(**flags):
    def build(tmp: Path) -> list[str]:
        from trainhelp import tiny_argv, tiny_data

        npy = tiny_data(tmp / "data")
        return tiny_argv(tmp, npy, **{"epochs": 2, "image_size": 32, **flags})
    return build


_TRAINED = ("logs", "logs/*", "ckpt", "ckpt/*")

TRAINING_CASES = [
    Case("train-diverges-lr-1e30", _diverging(lr=1e30), 3,
         r"^Error: training diverged at step 1: loss nan \(every term nan; kl_weight 1e-07, lr .*\); no checkpoint "
         r"was saved \(the run diverged in its first epoch\); logged in .*version_0; try a lower --lr or --kl-weight$",
         program="train", timeout=180, may_create=_TRAINED),
    Case("train-diverges-kl-weight-1e308", _diverging(kl_weight=1e308), 3,
         r"^Error: training diverged at step 0: loss inf \(kl_weighted inf; kl_weight 1e\+308, lr .*\); no checkpoint",
         program="train", timeout=180, may_create=_TRAINED),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", params(TRAINING_CASES))
def test_corpus_train_training(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)
