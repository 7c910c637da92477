"""Corpus rows: the files vaediag writes (report -o and its plots) and the text it prints (terminal,
markdown, usage errors, library warnings).

Each row runs the real command in a child process; the framework checks the exit code, one stderr line
(or none), no hang, and that nothing under the case's directory changed (symlinks keep their targets,
devices stay devices, event files keep their bytes).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from corpus import Case, params, run_case, unix_socket
from tbwrite import epoch_map, epoch_series, write_run

# A run whose terms the report can plot (KL and reconstruction on train and val).
_SERIES = {
    "train/kl": epoch_series([900.0, 700.0, 600.0]),
    "train/recon": epoch_series([0.3, 0.2, 0.15]),
    "val/kl": epoch_series([950.0, 720.0, 610.0]),
    "val/recon": epoch_series([0.32, 0.22, 0.16]),
}

# Cursor up, erase line, retitle the terminal (OSC ... BEL), a C1 CSI: what must never act.
_ESC_NAME = "run\x1b[1A\x1b[2K\x1b]0;pwned\x07\x9b"
_ESC_SHOWN = re.escape(r"run\x1b[1A\x1b[2K\x1b]0;pwned\x07\x9b")  # as printed on a terminal
_ESC_MD = re.escape(r"run\\x1b\[1A\\x1b\[2K\\x1b\]0;pwned\\x07\\x9b")  # the same, escaped for markdown
_NO_ESC = r"(?s)\A(?!.*[\x1b\x07\x9b])"  # stdout holds no raw escape byte anywhere


def _run(tmp: Path, name: str | bytes = "run", series=None) -> Path:
    """A run under tmp/logs; ``name`` may be bytes that are not UTF-8 (written, then renamed)."""
    staging = tmp / "logs" / "_staging"
    write_run(staging, series or _SERIES, epochs=epoch_map(3))
    target = os.path.join(os.fsencode(tmp / "logs"), name if isinstance(name, bytes) else os.fsencode(name))
    os.rename(os.fsencode(staging), target)
    return Path(os.fsdecode(target))


def _event(run: Path) -> Path:
    return next(run.glob("events.out.tfevents.*"))


def _logs(tmp: Path) -> str:
    _run(tmp)
    return str(tmp / "logs")


def _report(tmp: Path, out: str | Path, *extra: str) -> list[str]:
    return ["report", _logs(tmp), "-o", str(out), *extra]


# --------------------------------------------------------------------------------------------------
# Destinations that are inputs: never written over, --force or not


def _onto_event_file(tmp: Path) -> list[str]:
    run = _run(tmp)
    return ["report", str(tmp / "logs"), "-o", str(_event(run)), "--force"]


def _onto_event_file_given(tmp: Path) -> list[str]:
    ev = _event(_run(tmp))
    return ["report", str(ev), "-o", str(ev), "--force"]


def _onto_hparams(tmp: Path) -> list[str]:
    run = _run(tmp)
    (run / "hparams.yaml").write_text("kl_weight: 0.001\n")
    return ["report", str(tmp / "logs"), "-o", str(run / "hparams.yaml"), "--force"]


def _beside_given_event_file(tmp: Path) -> list[str]:
    run = _run(tmp)
    (run / "config.json").write_text('{"kl_weight": 0.001}\n')
    return ["report", str(_event(run)), "-o", str(run / "config.json"), "--force"]


def _onto_hard_link(tmp: Path) -> list[str]:
    run = _run(tmp)
    os.link(_event(run), tmp / "copy.md")  # the same file under a name outside the tree
    return ["report", str(tmp / "logs"), "-o", str(tmp / "copy.md"), "--force"]


def _onto_link_to_event(tmp: Path) -> list[str]:
    run = _run(tmp)
    (tmp / "latest.md").symlink_to(_event(run))
    return ["report", str(tmp / "logs"), "-o", str(tmp / "latest.md"), "--force"]


def _onto_rules_file(tmp: Path) -> list[str]:
    (tmp / "rules.toml").write_text("")
    return [*_report(tmp, tmp / "rules.toml", "--force"), "--rules", str(tmp / "rules.toml")]


def _onto_targets_file(tmp: Path) -> list[str]:
    (tmp / "t.toml").write_text("[targets.kl]\nterm = 'kl'\nmax = 500\n")
    return [*_report(tmp, tmp / "t.toml", "--force"), "--targets", str(tmp / "t.toml")]


# --------------------------------------------------------------------------------------------------
# Streams and special files: written into, never replaced; refused when they cannot take a report


def _link(tmp: Path, name: str, to: str) -> Path:
    (tmp / name).symlink_to(to)
    return tmp / name


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe")
    return tmp / "pipe"


def _existing(tmp: Path, name: str = "r.md", text: str = "my notes\n") -> Path:
    (tmp / name).write_text(text)
    return tmp / name


def _plot_is_link(tmp: Path) -> list[str]:
    _existing(tmp)
    (tmp / "r_files").mkdir()
    (tmp / "precious.txt").write_text("keep me\n")
    (tmp / "r_files" / "quality.png").symlink_to(tmp / "precious.txt")
    return _report(tmp, tmp / "r.md", "--force")


def _plot_is_fifo(tmp: Path) -> list[str]:
    _existing(tmp)
    (tmp / "r_files").mkdir()
    os.mkfifo(tmp / "r_files" / "kl_weight.png")
    return _report(tmp, tmp / "r.md", "--force")


# --------------------------------------------------------------------------------------------------
# Text that reaches a terminal or markdown


def _esc_run(tmp: Path, command: str, *extra: str) -> list[str]:
    _run(tmp, _ESC_NAME)
    return [command, str(tmp / "logs"), *extra]


def _esc_tag(tmp: Path, command: str, *extra: str) -> list[str]:
    _run(tmp, series={**_SERIES, "train/odd\x1b[2K\x1b]0;t\x07": epoch_series([1.0, 2.0, 3.0])})
    return [command, str(tmp / "logs"), *extra]


def _div_path(tmp: Path) -> list[str]:
    run = _run(tmp, "evil\n<div>\n")
    return ["report", str(run), "-o", "-"]


def _watch_esc(tmp: Path) -> list[str]:
    run = _run(tmp, _ESC_NAME)
    return ["watch", "--follow", str(run), "--idle", "0.5", "--poll", "0.1", "--no-live"]


_REPORT_FILES = ("r.md", "r_files", "r_files/*")

CASES = [
    # Inputs are never outputs.
    Case("report-o-event-file-force", _onto_event_file, 2,
         r"^Error: '.*events\.out\.tfevents[^']*' is inside '.*logs', a log tree this command reads; vaediag "
         r"never replaces a file there, even with --force"),
    Case("report-o-its-own-input-event-file", _onto_event_file_given, 2,
         r"^Error: '.*events\.out\.tfevents[^']*' is one of the files this command reads; .*even with --force"),
    Case("report-o-hparams-in-tree-force", _onto_hparams, 2, r"^Error: '.*hparams\.yaml' is inside '.*logs', a log tree"),
    Case("report-o-config-beside-the-given-event-file", _beside_given_event_file, 2,
         r"^Error: '.*config\.json' is inside '.*logs/run', a log tree this command reads"),
    Case("report-o-hard-link-to-event-file", _onto_hard_link, 2,
         r"^Error: '.*copy\.md' is one of the files this command reads \(the same file as '.*events\.out"),
    Case("report-o-symlink-to-event-file", _onto_link_to_event, 2, r"^Error: '.*latest\.md' is inside '.*logs'"),
    Case("report-o-rules-file-force", _onto_rules_file, 2, r"^Error: '.*rules\.toml' is one of the files this command reads"),
    Case("report-o-targets-file-force", _onto_targets_file, 2, r"^Error: '.*t\.toml' is one of the files this command reads"),
    Case("report-new-file-inside-tree-is-fine", lambda t: _report(t, t / "logs" / "run" / "r.md"), 0, "",
         stdout=r"^Wrote .*/logs/run/r\.md \(1 run; plots in", may_create=("logs/run/r.md", "logs/run/r_files*")),
    # Streams: written into, with or without --force; the node (and a link to it) stays as it was.
    Case("report-o-devnull-link", lambda t: _report(t, _link(t, "null", "/dev/null")), 0,
         r"^Wrote the report into .*null \(1 run\); no plots: a stream takes the markdown alone"),
    Case("report-o-devnull-link-force", lambda t: _report(t, _link(t, "null", "/dev/null"), "--force"), 0,
         r"^Wrote the report into .*null \(1 run\); no plots"),
    # The real /dev/null without --force only: were the guard ever to regress, the old code refuses this
    # one ("already exists") instead of replacing the device for every process on the machine.
    Case("report-o-devnull", lambda t: _report(t, "/dev/null"), 0, r"^Wrote the report into /dev/null",
         watch=lambda t: [Path("/dev/null")]),
    Case("report-o-stdout-link", lambda t: _report(t, _link(t, "out", "/dev/stdout")), 0,
         r"^Wrote the report into .*out \(1 run\)", stdout=r"\A# VAE training report: logs\n"),
    Case("report-o-stdout-link-force", lambda t: _report(t, _link(t, "out", "/dev/stdout"), "--force"), 0,
         r"^Wrote the report into .*out", stdout=r"\A# VAE training report: logs\n"),
    Case("report-o-dash", lambda t: _report(t, "-"), 0, r"^Wrote the report into standard output \(1 run\)",
         stdout=r"\A# VAE training report: logs\n(?![\s\S]*## Curves)"),
    Case("report-o-fifo-without-reader", lambda t: _report(t, _fifo(t)), 2,
         r"^Error: '.*pipe' is a FIFO with no reader; start the reader first", timeout=30),
    Case("report-o-fifo-without-reader-force", lambda t: _report(t, _fifo(t), "--force"), 2,
         r"is a FIFO with no reader", timeout=30),
    Case("report-o-socket", lambda t: _report(t, unix_socket(t / "sock"), "--force"), 2,
         r"^Error: '.*sock' is a socket; vaediag writes a regular file, or into a character device or FIFO"),
    # Links and files in the way.
    Case("report-o-dangling-link", lambda t: _report(t, _link(t, "r.md", str(t / "nowhere" / "x.md")), "--force"), 2,
         r"^Error: '.*r\.md' is a symbolic link to '.*nowhere/x\.md', which does not exist"),
    Case("report-o-link-loop", lambda t: _report(t, _link(t, "r.md", "r.md"), "--force"), 2,
         r"^Error: '.*r\.md' is a symbolic link that cannot be followed"),
    Case("report-o-link-to-existing-report-no-force", lambda t: _report(t, _link(t, "latest.md", str(_existing(t)))),
         2, r"^Error: '.*latest\.md' already exists; pass --force"),
    Case("report-o-existing-no-force", lambda t: _report(t, _existing(t)), 2,
         r"^Error: '.*r\.md' already exists; pass --force to overwrite it or choose another -o$"),
    Case("report-o-directory", lambda t: (t / "d").mkdir() or _report(t, t / "d"), 2,
         r"^Error: (-o )?'.*d' is a directory; give a file name such as"),
    Case("report-o-under-a-file", lambda t: _report(t, _existing(t, "f") / "r.md"), 2,
         r"^Error: cannot write '.*f/r\.md': '.*f' is a file, not a directory"),
    Case("report-plots-folder-is-a-file", lambda t: _existing(t, "r_files") and _report(t, t / "r.md"), 2,
         r"^Error: cannot write the plots: '.*r_files' exists and is not a directory"),
    Case("report-plots-folder-exists-no-force", lambda t: (t / "r_files").mkdir() or _report(t, t / "r.md"), 2,
         r"^Error: '.*r_files' already exists; pass --force"),
    Case("report-force-plot-is-a-link", _plot_is_link, 2,
         r"^Error: '.*r_files/quality\.png' is a symbolic link \(to '.*precious\.txt'\); vaediag replaces only "
         r"regular files there"),
    Case("report-force-plot-is-a-fifo", _plot_is_fifo, 2,
         r"^Error: '.*r_files/kl_weight\.png' is a FIFO \(named pipe\), not a regular file", timeout=30),
    # Text: escape sequences in a run name or a tag show as escapes, on a terminal and in markdown.
    Case("check-escape-sequences-in-run-name", lambda t: _esc_run(t, "check"), 0, "",
         stdout=_NO_ESC + r".*" + _ESC_SHOWN + r"  · "),
    Case("check-escape-sequences-in-tag", lambda t: _esc_tag(t, "check"), 0, "",
         stdout=_NO_ESC + r".*unmapped_tags: .*train/odd\\x1b\[2K\\x1b\]0;t\\x07"),
    Case("check-json-escape-sequences-in-run-name", lambda t: _esc_run(t, "check", "--json"), 0, "",
         stdout=_NO_ESC + r'.*"run": "run\\u001b\[1A'),
    Case("report-escape-sequences-in-run-name", lambda t: _esc_run(t, "report", "-o", "-"), 0, r"^Wrote the report",
         stdout=_NO_ESC + r".*\| R1 \| " + _ESC_MD + r" \| 3 \|"),
    Case("report-escape-sequences-in-tag", lambda t: _esc_tag(t, "report", "-o", "-"), 0, r"^Wrote the report",
         stdout=_NO_ESC + r".*" + re.escape(r"train/odd\\x1b\[2K\\x1b\]0;t\\x07")),
    Case("report-newline-and-div-in-path", _div_path, 0, r"^Wrote the report into standard output",
         # The path stays on the generated line, inside its code span: no raw HTML block can start.
         stdout=r"from `[^`\n]*/logs/evil\\n<div>\\n`\._\n"),
    Case("watch-follow-escape-sequences-in-run-name", _watch_esc, 0, "",
         stdout=_NO_ESC + r".*journal .*" + _ESC_SHOWN + r"/watchdog\.jsonl", may_create=("logs/*/watchdog.jsonl",)),
    # A run directory whose name is not UTF-8: shown with the byte as an escape.
    Case("check-non-utf8-run-name", lambda t: _run(t, b"run\xff") and ["check", str(t / "logs")], 0, "",
         stdout=r"run\\xff  ·  3 completed epochs"),
    Case("report-non-utf8-run-name", lambda t: _run(t, b"run\xff\xfe") and ["report", str(t / "logs"), "-o",
                                                                           str(t / "r.md")], 0, "",
         stdout=r"^Wrote .*r\.md \(1 run; plots in", may_create=_REPORT_FILES),
    Case("report-dollar-math-in-run-name", lambda t: _run(t, "a$\\frac$") and ["report", str(t / "logs"), "-o",
                                                                              str(t / "r.md")], 0, "",
         stdout=r"^Wrote ", may_create=_REPORT_FILES),
    # Library warnings stay off stderr (matplotlib has no glyph for these characters).
    Case("report-cjk-run-name-no-library-warnings", lambda t: _run(t, "実験") and ["report", str(t / "logs"), "-o",
                                                                                 str(t / "r.md")], 0, "",
         stdout=r"^Wrote ", may_create=_REPORT_FILES),
    # Usage errors: one line and where the help is.
    Case("usage-check-without-path", lambda t: ["check"], 2,
         r"^Error: the following arguments are required: PATH; see vaediag check --help$"),
    Case("usage-check-unknown-option", lambda t: ["check", str(t), "--bogus"], 2,
         r"^Error: unrecognized arguments: --bogus; see vaediag check --help$"),
    Case("usage-check-bad-kl-weight", lambda t: ["check", str(t), "--kl-weight", "x"], 2,
         r"^Error: argument --kl-weight: must be a number like 1e-5, got 'x'; see vaediag check --help$"),
    Case("usage-check-bad-profile", lambda t: ["check", str(t), "--profile", "\x1b[2Kx"], 2,
         r"^Error: argument --profile: invalid choice: '\\x1b\[2Kx' .*; see vaediag check --help$"),
    Case("usage-report-without-path", lambda t: ["report"], 2,
         r"^Error: the following arguments are required: PATH; see vaediag report --help$"),
    Case("usage-report-o-without-value", lambda t: ["report", str(t), "-o"], 2,
         r"^Error: argument -o/--output: expected one argument; see vaediag report --help$"),
    Case("usage-report-bad-latent-dim", lambda t: ["report", str(t), "--latent-dim", "x"], 2,
         r"^Error: argument --latent-dim: must be a positive integer, got 'x'; see vaediag report --help$"),
    Case("usage-train-unknown-option", lambda t: ["train", "--bogus"], 2,
         r"^Error: unrecognized arguments: --bogus; see vaediag train --help$", timeout=120),
    Case("usage-unknown-command", lambda t: ["nope"], 2,
         r"^Error: argument COMMAND: invalid choice: 'nope' .*; see vaediag --help$"),
    Case("usage-no-command", lambda t: [], 2, r"^Error: the following arguments are required: COMMAND; see vaediag --help$"),
    Case("help-is-unchanged", lambda t: ["check", "--help"], 0, "", stdout=r"\Ausage: vaediag check \[-h\]"),
    # Messages that carry a user's path: one line, escapes shown.
    Case("check-missing-path-with-escapes", lambda t: ["check", str(t / "nope\x1b[2K\nx")], 2,
         r"^Error: path '.*nope\\x1b\[2K\\nx' does not exist"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_corpus_outputs(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)
