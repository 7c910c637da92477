"""Corpus rows: bad inputs given to `check` and `report` by name (paths, event files, rules, tags and
targets files) and the metadata files found inside a log tree.

Every row: the documented exit code, one stderr line (or none), an answer within the row's timeout (a FIFO
or ``/dev/zero`` given as a file must never block or be read without bound), and nothing under the case's
directory changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corpus import Case, params, run_case, unix_socket
from tbwrite import epoch_map, epoch_series, write_run


def _run(tmp: Path, name: str = "run") -> Path:
    d = tmp / "logs" / name
    write_run(d, {"train/loss": epoch_series([0.5, 0.4, 0.3]), "val/loss": epoch_series([0.6, 0.5, 0.4])},
              epochs=epoch_map(3))
    return d


def _event_file(run: Path) -> Path:
    return next(run.glob("events.out.tfevents.*"))


def _garbage(tmp: Path) -> list[str]:
    d = tmp / "logs" / "run"
    d.mkdir(parents=True)
    (d / "events.out.tfevents.1.host").write_bytes(b"not an event file at all" * 10)
    return ["check", str(d)]


def _special_event_file(make) -> "callable":
    """``check DIR`` where DIR's only event file is made by ``make(path)`` (a FIFO, a link to a device...)."""

    def build(tmp: Path) -> list[str]:
        d = tmp / "logs" / "run"
        d.mkdir(parents=True)
        make(d / "events.out.tfevents.1.host")
        return ["check", str(d)]

    return build


def _mixed(*extra: str):
    """A tree of a readable run and a run whose only event file is a FIFO: ``check TREE *extra``."""

    def build(tmp: Path) -> list[str]:
        _run(tmp, "a")
        (tmp / "logs" / "b").mkdir()
        os.mkfifo(tmp / "logs" / "b" / "events.out.tfevents.2.host")
        if extra and extra[0] == "report":
            return ["report", str(tmp / "logs"), "-o", str(tmp / "r.md")]
        return ["check", str(tmp / "logs"), *extra]

    return build


def _damaged_length(tmp: Path) -> list[str]:
    """12 epochs; a record a third of the way in claims 2 GB with a length CRC that matches."""
    import struct

    from crc32c import crc32c

    d = tmp / "logs" / "run"
    f = write_run(d, {"train/loss": epoch_series(range(12, 0, -1)), "val/loss": epoch_series(range(13, 1, -1))},
                  epochs=epoch_map(12))
    data = bytearray(f.read_bytes())
    offs, pos = [], 0
    while pos + 12 <= len(data):
        offs.append(pos)
        pos += 16 + struct.unpack_from("<Q", data, pos)[0]
    start = offs[len(offs) // 3]
    head = struct.pack("<Q", 2**31)
    c = crc32c(head)
    data[start : start + 12] = head + struct.pack("<I", (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    f.write_bytes(bytes(data))
    return ["check", str(d)]


def _rules(tmp: Path, text: str) -> list[str]:
    run = _run(tmp)
    (tmp / "rules.toml").write_text(text)
    return ["check", str(run), "--rules", str(tmp / "rules.toml")]


def _tags(tmp: Path, text: str) -> list[str]:
    run = _run(tmp)
    (tmp / "tags.toml").write_text(text)
    return ["check", str(run), "--tags", str(tmp / "tags.toml")]


def _targets(tmp: Path, text: str) -> list[str]:
    run = _run(tmp)
    (tmp / "targets.toml").write_text(text)
    return ["report", str(run), "-o", str(tmp / "r.md"), "--targets", str(tmp / "targets.toml")]


def _fifo(tmp: Path, name: str) -> Path:
    os.mkfifo(tmp / name)
    return tmp / name


def _zero_link(tmp: Path, name: str) -> Path:
    (tmp / name).symlink_to("/dev/zero")
    return tmp / name


def _named(option: str, make) -> "callable":
    """``check RUN <option> <made file>`` (``report RUN -o r.md --targets F`` for targets)."""

    def build(tmp: Path) -> list[str]:
        run = _run(tmp)
        f = make(tmp)
        if option == "--targets":
            return ["report", str(run), "-o", str(tmp / "r.md"), option, str(f)]
        return ["check", str(run), option, str(f)]

    return build


def _meta(name: str, make) -> "callable":
    """``check RUN`` where RUN holds a bad ``name`` (hparams.yaml, config.json) made by ``make(path)``."""

    def build(tmp: Path) -> list[str]:
        run = _run(tmp)
        make(run / name)
        return ["check", str(run)]

    return build


def _metrics_log(name: str, make) -> "callable":
    """``check DIR`` where DIR's only log is ``name`` (metrics.csv, trainer_state.json) made by ``make(path)``."""

    def build(tmp: Path) -> list[str]:
        d = tmp / "logs" / "run"
        d.mkdir(parents=True)
        make(d / name)
        return ["check", str(d)]

    return build


CSV_HEAD = "epoch,step,train/recon_step,val/recon\r\n"
CSV_ROWS = "".join(f"{e},{10 * e + 9},{1.0 / (e + 1)},\r\n{e},{10 * e + 9},,{1.1 / (e + 1)}\r\n" for e in range(4))


def _sparse(size: int):
    def make(path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(CSV_HEAD.encode())
            fh.truncate(size)
    return make


def _csv_among_readable(tmp: Path) -> list[str]:
    _run(tmp, "a")
    (tmp / "logs" / "b").mkdir()
    os.mkfifo(tmp / "logs" / "b" / "metrics.csv")
    return ["check", str(tmp / "logs")]


BOMB = "a: &a {x1: 1, x2: 2, x3: 3, x4: 4, x5: 5, x6: 6, x7: 7, x8: 8, x9: 9}\n" + "".join(
    f"{n}: &{n} {{" + ", ".join(f"k{i}: *{p}" for i in range(9)) + "}\n" for p, n in zip("abcdefgh", "bcdefghi")
)


DEEP_ARRAY = "x = " + "[" * 5000 + "]" * 5000 + "\n"
DEEP_DOTTED = ".".join(["a"] * 3000) + " = 1\n"  # tomllib builds this without recursing; the walk must not


CASES = [
    # Paths.
    Case("check-missing-path", lambda t: ["check", str(t / "nope")], 2, r"^Error: .*nope.* does not exist"),
    Case("check-empty-dir", lambda t: (t / "empty").mkdir() or ["check", str(t / "empty")], 2,
         r"^Error: .*no TensorBoard event file"),
    Case("report-missing-path", lambda t: ["report", str(t / "nope"), "-o", str(t / "r.md")], 2,
         r"^Error: .*does not exist"),
    # Event files that cannot be read at all: the only input -> exit 2; among readable runs -> a warning.
    Case("check-garbage-event-file", _garbage, 2,
         r"^Error: cannot read event file .*: not a TensorBoard event file \(no valid record in its 240 bytes\)$"),
    Case("check-fifo-event-file", _special_event_file(os.mkfifo), 2,
         r"^Error: cannot read event file .*: a FIFO \(named pipe\), not a regular file$", timeout=20),
    Case("check-fifo-event-file-given-by-name",
         lambda t: os.mkfifo(t / "events.out.tfevents.1.h") or ["check", str(t / "events.out.tfevents.1.h")], 2,
         r"^Error: cannot read event file .*: a FIFO \(named pipe\), not a regular file$", timeout=20),
    Case("check-fifo-given-as-path", lambda t: os.mkfifo(t / "runs") or ["check", str(t / "runs")], 2,
         r"^Error: '.*runs' is a FIFO \(named pipe\); give a run directory", timeout=20),
    Case("check-event-file-linked-to-dev-zero", _special_event_file(lambda f: f.symlink_to("/dev/zero")), 2,
         r"^Error: cannot read event file .*: a character device, not a regular file$", timeout=20),
    Case("check-event-file-dangling-link", _special_event_file(lambda f: f.symlink_to(f.parent / "gone")), 2,
         r"^Error: cannot read event file .*: No such file or directory$"),
    Case("report-fifo-event-file", lambda t: _special_event_file(os.mkfifo)(t)[1:2] and
         ["report", str(t / "logs" / "run"), "-o", str(t / "r.md")], 2,
         r"^Error: cannot read event file .*: a FIFO", timeout=20),
    Case("check-unreadable-run-among-readable", _mixed(), 0, "", timeout=20,
         stdout=r"(?s)b: cannot read event file .*b/events\.out\.tfevents\.2\.host: a FIFO.*run skipped"),
    Case("check-json-unreadable-run-among-readable", _mixed("--json"), 0,
         r"^warning: b: cannot read event file .*: a FIFO \(named pipe\), not a regular file; no readable event "
         r"file, run skipped$", timeout=20, stdout=r'"run": "a"'),
    Case("report-unreadable-run-among-readable", _mixed("report"), 0, "", timeout=60,
         may_create=("r.md", "r_files", "r_files/*")),
    # A valid CRC over a 2 GB length mid-file: said (file, byte, bytes), and the 8 epochs after it still read.
    Case("check-damaged-length-mid-file", _damaged_length, 0, "",
         stdout=r"(?s)12 completed epochs.*the record at byte [\d,]+ claims 2,147,483,648 bytes, past.*"
                r"reading resumed at the next valid record"),
    Case("check-event-file-is-a-socket", _special_event_file(unix_socket), 2,
         r"^Error: cannot read event file .*: not a regular file$", timeout=20),
    Case("check-regular-file-not-an-event-file", lambda t: (t / "notes.txt").write_text("x") and
         ["check", str(t / "notes.txt")], 2, r"^Error: '.*notes\.txt' is not a TensorBoard event file; give its directory"),
    Case("check-run-glob-matches-nothing", lambda t: ["check", str(_run(t)), "--run", "zzz*"], 2,
         r"^Error: --run 'zzz\*' matches no run"),
    # Readable but empty: a run that died before logging (a finding, not an error).
    Case("check-empty-event-file", _special_event_file(lambda f: f.write_bytes(b"")), 0, "", stdout=r"no_scalars"),
    # Metrics logs that are not event files (metrics.csv, trainer_state.json): unreadable -> one line, exit 2
    # (a warning among readable runs); damaged -> a log_warning finding, the rest read.
    Case("check-fifo-metrics-csv", _metrics_log("metrics.csv", os.mkfifo), 2,
         r"^Error: cannot read metrics log .*run/metrics\.csv: a FIFO \(named pipe\), not a regular file$", timeout=20),
    Case("check-fifo-metrics-csv-given-by-name",
         lambda t: os.mkfifo(t / "metrics.csv") or ["check", str(t / "metrics.csv")], 2,
         r"^Error: cannot read metrics log .*metrics\.csv.: a FIFO \(named pipe\), not a regular file$", timeout=20),
    Case("check-metrics-csv-linked-to-dev-zero", _metrics_log("metrics.csv", lambda f: f.symlink_to("/dev/zero")), 2,
         r"^Error: cannot read metrics log .*: a character device, not a regular file$", timeout=20),
    Case("check-huge-metrics-csv", _metrics_log("metrics.csv", _sparse((300 << 20))), 2,
         r"^Error: cannot read metrics log .*: 314,572,800 bytes; vaediag reads metrics logs of at most 268,435,456 "
         r"bytes$", timeout=20),
    Case("check-metrics-csv-without-step-column", _metrics_log("metrics.csv", lambda f: f.write_text("a,b\n1,2\n")), 2,
         r"^Error: cannot read metrics log .*: no step column in its header \('a', 'b'; vaediag looks for "),
    Case("check-trainer-state-not-json", _metrics_log("trainer_state.json", lambda f: f.write_text('{"log_history": [')),
         2, r"^Error: cannot read metrics log .*trainer_state\.json: not valid JSON \(.*\); a save cut short\?$"),
    Case("check-metrics-csv-unreadable-among-readable", _csv_among_readable, 0, "", timeout=20,
         stdout=r"(?s)b: cannot read metrics log .*b/metrics\.csv: a FIFO.*run skipped"),
    Case("check-truncated-metrics-csv", _metrics_log("metrics.csv", lambda f: f.write_text(CSV_HEAD + CSV_ROWS + "4,49,0.")),
         0, "", stdout=r"(?s)4 completed epochs.*metrics\.csv: last line incomplete, 7 bytes ignored"),
    Case("check-metrics-csv-row-of-the-wrong-width",
         _metrics_log("metrics.csv", lambda f: f.write_text(CSV_HEAD + CSV_ROWS + "4,49,0.2,,,,\r\n")), 0, "",
         stdout=r"(?s)4 completed epochs.*metrics\.csv: 1 row with the wrong number of fields skipped \(first at line 10\)"),
    Case("check-metrics-csv-nan-strings",
         _metrics_log("metrics.csv", lambda f: f.write_text(CSV_HEAD + CSV_ROWS + "4,49,nan,\r\n4,49,,NaN\r\n")), 1, "",
         stdout=r"nonfinite: train/recon_step is nan from step 49"),
    Case("check-metrics-csv-not-utf8",
         _metrics_log("metrics.csv", lambda f: f.write_bytes((CSV_HEAD + CSV_ROWS).encode() + b"4,49,\xff\xfe,\r\n")), 0,
         "", stdout=r"(?s)metrics\.csv: not UTF-8 text from byte 164; undecodable bytes replaced"),
    Case("report-metrics-csv-run", lambda t: _metrics_log("metrics.csv", lambda f: f.write_text(CSV_HEAD + CSV_ROWS))(t)[1:2]
         and ["report", str(t / "logs" / "run"), "-o", str(t / "r.md")], 0, "", may_create=("r.md", "r_files", "r_files/*")),
    # --rules: missing, a directory, not TOML, an unknown key, a FIFO, /dev/zero, too large, not UTF-8.
    Case("rules-malformed-toml", lambda t: _rules(t, "[penalty\nx = "), 2, r"^Error: .*rules\.toml"),
    Case("rules-missing", _named("--rules", lambda t: t / "nope.toml"), 2, r"^Error: rules file .*nope\.toml.* does not exist"),
    Case("rules-directory", _named("--rules", lambda t: (t / "d").mkdir() or t / "d"), 2,
         r"^Error: rules file .* is a directory"),
    Case("rules-unknown-key", lambda t: _rules(t, "[penalty]\nmax_rato = 0.2\n"), 2,
         r"^Error: rules file .*, line 2: \[penalty\] key 'max_rato' is unknown"),
    Case("rules-fifo", _named("--rules", lambda t: _fifo(t, "rules.toml")), 2,
         r"^Error: rules file .* is a FIFO \(named pipe\), not a regular file", timeout=20),
    Case("rules-dev-zero", _named("--rules", lambda t: Path("/dev/zero")), 2,
         r"^Error: rules file '/dev/zero' is a character device", timeout=20),
    Case("rules-link-to-dev-zero", _named("--rules", lambda t: _zero_link(t, "rules.toml")), 2,
         r"^Error: rules file .* is a character device", timeout=20),
    Case("rules-too-large", lambda t: _rules(t, "# padding\n" * 200_000), 2,
         r"^Error: rules file .* bytes; the limit is 1,048,576"),
    Case("rules-not-utf8", _named("--rules", lambda t: (t / "r.toml").write_bytes(b"\xff\xfe[kl]") and t / "r.toml"), 2,
         r"^Error: rules file .* is not UTF-8 text"),
    # Nesting that makes tomllib recurse out of stack, or that a dotted key builds without recursion.
    Case("rules-deep-array", lambda t: _rules(t, DEEP_ARRAY), 2, r"^Error: rules file .*: nested deeper than 64 levels"),
    Case("rules-deep-inline-table", lambda t: _rules(t, "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"), 2,
         r"^Error: rules file .*: nested deeper than 64 levels"),
    Case("rules-deep-dotted-key", lambda t: _rules(t, DEEP_DOTTED), 2,
         r"^Error: rules file .*: nested deeper than 64 levels"),
    Case("rules-huge-integer", lambda t: _rules(t, "[kl]\ntoo_high_after = 1" + "0" * 5000 + "\n"), 2,
         r"^Error: rules file .*: a value that cannot be converted \(Exceeds the limit \(4300 digits\)"),
    Case("rules-integer-beyond-float", lambda t: _rules(t, "[kl]\nexpected = 1" + "0" * 400 + "\n"), 2,
         r"^Error: rules file .*, line 2: \[kl\] key 'expected' must be a finite number >= 0 below 2\*\*63"),
    Case("rules-nan", lambda t: _rules(t, "[penalty]\nwarn_ratio = nan\n"), 2,
         r"^Error: rules file .*, line 2: \[penalty\] key 'warn_ratio' must be a finite number >= 0, got nan"),
    Case("rules-symlink-loop", _named("--rules", lambda t: (t / "loop.toml").symlink_to(t / "loop.toml") or
                                      t / "loop.toml"), 2,
         r"^Error: cannot read rules file .*loop\.toml': Too many levels of symbolic links$"),
    Case("rules-socket", _named("--rules", lambda t: unix_socket(t / "rules.sock")), 2,
         r"^Error: rules file .* is not a regular file; pass a file$", timeout=20),
    Case("report-rules-fifo", lambda t: ["report", str(_run(t)), "-o", str(t / "r.md"), "--rules",
                                         str(_fifo(t, "rules.toml"))], 2,
         r"^Error: rules file .* is a FIFO", timeout=20),
    # Values that make no sense (ZeroDivisionError, a "cut" that doubles the weight, a weight set to 0).
    Case("rules-reduce-factor-zero", lambda t: _rules(t, "[recommend]\nkl_reduce_factor = 0.0\n"), 2,
         r"^Error: rules file .*, line 2: \[recommend\] key 'kl_reduce_factor' is 0\.0; allowed: > 1"),
    Case("rules-reduce-factor-half", lambda t: _rules(t, "[recommend]\nkl_reduce_factor = 0.5\n"), 2,
         r"^Error: rules file .*, line 2: \[recommend\] key 'kl_reduce_factor' is 0\.5; allowed: > 1"),
    Case("rules-increase-factor-zero", lambda t: _rules(t, "[recommend]\nkl_increase_factor = 0.0\n"), 2,
         r"^Error: rules file .*, line 2: \[recommend\] key 'kl_increase_factor' is 0\.0; allowed: > 1"),
    Case("rules-fraction-above-one", lambda t: _rules(t, "[collapse]\nactive_fraction_min = 1.5\n"), 2,
         r"^Error: .*\[collapse\] key 'active_fraction_min' is 1\.5; allowed: 0 to 1"),
    Case("rules-window-zero", lambda t: _rules(t, "[converged]\nwindow = 0\n"), 2,
         r"^Error: .*\[converged\] key 'window' is 0; allowed: >= 1"),
    Case("rules-warn-above-fail", lambda t: _rules(t, "[penalty]\nwarn_ratio = 0.5\n"), 2,
         r"^Error: .*\[penalty\] key 'warn_ratio' is 0\.5; allowed: at most fail_ratio \(0\.1\)"),
    Case("rules-cut-above-its-cap", lambda t: _rules(t, "[recommend]\nmax_reduce_factor = 5.0\n"), 2,
         r"^Error: .*\[recommend\] key 'max_reduce_factor' is 5\.0; allowed: at least kl_reduce_factor"),
    # hparams.yaml / config.json inside a log tree: skipped with a note on the run, the run still checked.
    Case("meta-hparams-alias-bomb", _meta("hparams.yaml", lambda f: f.write_text(BOMB)), 0, "",
         stdout=r"hparams\.yaml unreadable: its anchors and aliases expand to more than 100,000", timeout=30),
    Case("meta-hparams-cycle", _meta("hparams.yaml", lambda f: f.write_text("a: &a {b: *a}\n")), 0, "",
         stdout=r"hparams\.yaml unreadable: an alias refers to a value that contains it"),
    Case("meta-hparams-fifo", _meta("hparams.yaml", os.mkfifo), 0, "",
         stdout=r"hparams\.yaml unreadable: a FIFO \(named pipe\), not a regular file; ignored", timeout=20),
    Case("meta-config-dev-zero", _meta("config.json", lambda f: f.symlink_to("/dev/zero")), 0, "",
         stdout=r"config\.json unreadable: a character device", timeout=20),
    Case("meta-config-deep", _meta("config.json", lambda f: f.write_text('{"a":' * 900 + "1" + "}" * 900)), 0, "",
         stdout=r"config\.json unreadable: nested deeper than 64 levels"),
    Case("meta-config-very-deep", _meta("config.json", lambda f: f.write_text("[" * 100_000 + "]" * 100_000)), 0, "",
         stdout=r"config\.json unreadable: nested deeper than 64 levels"),
    Case("meta-config-too-large", _meta("config.json", lambda f: f.write_text('{"a": "' + "x" * (2 << 20) + '"}')),
         0, "", stdout=r"config\.json unreadable: 2,097,161 bytes; the limit is 1,048,576"),
    Case("meta-config-malformed", _meta("config.json", lambda f: f.write_text("{not json")), 0, "",
         stdout=r"config\.json unreadable: not valid JSON"),
    # watchdog.jsonl in a run: `check` asks it whether training ended; a 2 GB one was read whole (4.3 GB, 22 s).
    Case("meta-journal-huge-sparse", _meta("watchdog.jsonl", lambda f: os.truncate(f.touch() or f, 2 << 30)), 0, "",
         stdout=r"completed epochs", timeout=20),
    Case("meta-journal-fifo", _meta("watchdog.jsonl", os.mkfifo), 0, "", stdout=r"completed epochs", timeout=20),
    # --tags.
    Case("tags-missing", _named("--tags", lambda t: t / "nope.toml"), 2, r"^Error: tags file .* does not exist"),
    Case("tags-fifo", _named("--tags", lambda t: _fifo(t, "tags.toml")), 2,
         r"^Error: tags file .* is a FIFO", timeout=20),
    Case("tags-dev-zero", _named("--tags", lambda t: Path("/dev/zero")), 2,
         r"^Error: tags file '/dev/zero' is a character device", timeout=20),
    Case("tags-directory", _named("--tags", lambda t: (t / "d").mkdir() or t / "d"), 2,
         r"^Error: tags file .* is a directory"),
    Case("report-tags-dev-zero", lambda t: ["report", str(_run(t)), "-o", str(t / "r.md"), "--tags", "/dev/zero"], 2,
         r"^Error: tags file '/dev/zero' is a character device", timeout=20),
    Case("tags-malformed", lambda t: _tags(t, "[tags\n"), 2, r"^Error: tags file .*tags\.toml: "),
    Case("tags-unknown-term", lambda t: _tags(t, '[tags]\n"a" = "klx"\n'), 2, r"^Error: .*maps to unknown term 'klx'"),
    Case("tags-deep-array", lambda t: _tags(t, "[tags]\n" + DEEP_ARRAY), 2, r"^Error: tags file .*: nested deeper"),
    Case("tags-deep-dotted-key", lambda t: _tags(t, "[tags]\n" + DEEP_DOTTED), 2, r"^Error: tags file .*: nested deeper"),
    # --targets (report): refused before any log is read or anything is written.
    Case("targets-missing", _named("--targets", lambda t: t / "nope.toml"), 2, r"^Error: targets file .* does not exist"),
    Case("targets-fifo", _named("--targets", lambda t: _fifo(t, "targets.toml")), 2,
         r"^Error: targets file .* is a FIFO", timeout=20),
    Case("targets-dev-zero", _named("--targets", lambda t: Path("/dev/zero")), 2,
         r"^Error: targets file '/dev/zero' is a character device", timeout=20),
    Case("targets-not-utf8", _named("--targets", lambda t: (t / "t.toml").write_bytes(b"[targets.kl]\nlabel = '\xff'")
                                     and t / "t.toml"), 2, r"^Error: targets file .* is not UTF-8 text"),
    Case("targets-unknown-key", lambda t: _targets(t, "[targets.kl]\nmin = 1.0\nmaxx = 2.0\n"), 2,
         r"^Error: targets file .*: targets\.kl has unknown key\(s\) \['maxx'\]"),
    Case("targets-malformed", lambda t: _targets(t, "[targets.kl\n"), 2, r"^Error: targets file .*targets\.toml: "),
    Case("targets-deep-array", lambda t: _targets(t, "[targets.kl]\nmin = " + "[" * 5000 + "]" * 5000 + "\n"), 2,
         r"^Error: targets file .*: nested deeper"),
    Case("targets-huge-integer", lambda t: _targets(t, "[targets.kl]\nmin = 1" + "0" * 400 + "\n"), 2,
         r"^Error: targets file .*: targets\.kl\.min must be a number"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_corpus_inputs(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)
