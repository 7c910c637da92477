"""The output-path guard (vaediag.outputs) and report writing: what the corpus rows cannot show alone.

Concurrent writers (two real processes), the replacement of a report and its plots with --force (only
vaediag's own stale plots go), a link followed to the report it names, a FIFO with a reader, our own
stdout redirected to a file, and a report vaediag wrote inside a log tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from corpus import ROOT
from tbwrite import epoch_map, epoch_series, write_run
from vaediag.errors import UsageError
from vaediag.outputs import NEW, REPLACE, STREAM, Inputs, plan_output, write_output

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = {"loss_terms.png", "loss_terms_weighted.png", "quality.png", "penalty_share.png", "kl_weight.png"}


def _logs(tmp: Path, name: str = "run", epochs: int = 3) -> Path:
    series = {"train/kl": epoch_series([900.0, 700.0, 600.0][:epochs]),
              "train/recon": epoch_series([0.3, 0.2, 0.15][:epochs])}
    write_run(tmp / "logs" / name, series, epochs=epoch_map(epochs))
    return tmp / "logs"


def _vaediag(*argv: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "vaediag.cli", *argv], env=env, stdin=subprocess.DEVNULL,
                            stdout=kw.pop("stdout", subprocess.PIPE), stderr=subprocess.PIPE, **kw)


def _title(md: Path) -> str:
    return md.read_text(encoding="utf-8").splitlines()[0]


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------------------------------
# New files: no window for clobbering


@pytest.mark.slow
def test_two_concurrent_reports_to_one_new_file(tmp_path):
    """Two real processes, one new report: one writes it, the other says "already exists" (never a silent
    overwrite), whichever way they interleave; the report on disk is the winner's, plots and all."""
    logs = _logs(tmp_path)
    out = tmp_path / "r.md"
    for attempt in range(2):
        if out.exists():
            out.unlink()
            for p in (tmp_path / "r_files").iterdir():
                p.unlink()
            (tmp_path / "r_files").rmdir()
        procs = {t: _vaediag("report", str(logs), "-o", str(out), "--title", t) for t in ("A", "B")}
        done = {t: (p.wait(timeout=120), p.stdout.read().decode(), p.stderr.read().decode()) for t, p in procs.items()}
        for p in procs.values():
            p.stdout.close(), p.stderr.close()
        winners = [t for t, (rc, _, _) in done.items() if rc == 0]
        losers = [t for t, (rc, _, _) in done.items() if rc != 0]
        assert len(winners) == 1 and len(losers) == 1, done
        rc, _, err = done[losers[0]]
        assert rc == 2 and err.count("\n") == 1 and "r.md' already exists" in err, err
        assert _title(out) == f"# {winners[0]}"
        assert {p.name for p in (tmp_path / "r_files").iterdir()} == PLOTS
        assert _leftovers(tmp_path) == []


def test_a_name_taken_between_plan_and_write_is_not_replaced(tmp_path):
    """The race itself, made certain: the name appears after the plan; the write refuses, the other
    writer's bytes stay, and no temporary file is left."""
    out = tmp_path / "r.md"
    dest = plan_output(out)
    assert dest.mode == NEW
    out.write_text("the other process's report\n")
    with pytest.raises(UsageError, match=r"'.*r\.md' already exists \(another process wrote it meanwhile\)"):
        write_output(dest, b"mine\n")
    assert out.read_text() == "the other process's report\n" and _leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# --force: atomic replacement, no stale plots, never a user's file


@pytest.mark.slow
def test_force_removes_only_the_old_reports_own_plots(tmp_path):
    import vaediag
    from vaediag.render.report import diagnose_runs, write_report

    logs = _logs(tmp_path)
    rs = vaediag.load(logs)
    out = tmp_path / "r.md"
    write_report(rs, diagnose_runs(rs), out)
    fdir = tmp_path / "r_files"
    assert {p.name for p in fdir.iterdir()} == PLOTS
    (fdir / "notes.txt").write_text("mine\n")  # a user's files in the plots folder
    (fdir / "mine.png").write_bytes(PNG + b"user")
    write_report(rs, diagnose_runs(rs), out, force=True, plots=False)  # the new report has no plots
    assert "## Curves" not in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in fdir.iterdir()) == ["mine.png", "notes.txt"]  # no stale plot, no user file lost
    assert (fdir / "notes.txt").read_text() == "mine\n"


@pytest.mark.slow
def test_force_keeps_plots_the_new_report_writes_again(tmp_path):
    logs = _logs(tmp_path)
    out = tmp_path / "r.md"
    for title in ("one", "two"):
        p = _vaediag("report", str(logs), "-o", str(out), "--force", "--title", title)
        assert p.wait(timeout=120) == 0, p.stderr.read()
        p.stdout.close(), p.stderr.close()
    assert _title(out) == "# two" and {p.name for p in (tmp_path / "r_files").iterdir()} == PLOTS
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "r_files") == []


@pytest.mark.slow
def test_force_through_a_symlink_replaces_the_report_it_names(tmp_path):
    """latest.md -> 2024-05.md: the link stays a link; the report it points to is replaced, with its plots
    beside it (its links in the markdown name 2024-05_files)."""
    logs = _logs(tmp_path)
    real = tmp_path / "2024-05.md"
    real.write_text("old report\n")
    (tmp_path / "latest.md").symlink_to(real.name)
    p = _vaediag("report", str(logs), "-o", str(tmp_path / "latest.md"), "--force", "--title", "new")
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert f"Wrote {real.resolve()} " in p.stdout.read().decode()
    p.stdout.close(), p.stderr.close()
    assert os.readlink(tmp_path / "latest.md") == real.name
    text = real.read_text(encoding="utf-8")
    assert text.startswith("# new\n") and "](2024-05_files/loss_terms.png)" in text
    assert {x.name for x in (tmp_path / "2024-05_files").iterdir()} == PLOTS
    assert not (tmp_path / "latest_files").exists()


@pytest.mark.slow
def test_a_report_inside_the_log_tree_it_reads(tmp_path):
    """A new report inside the tree is fine, and --force may replace it (vaediag wrote it); any other
    file there is never replaced."""
    logs = _logs(tmp_path)
    out = logs / "run" / "report.md"
    for extra in ((), ("--force",)):
        p = _vaediag("report", str(logs), "-o", str(out), *extra)
        assert p.wait(timeout=120) == 0, p.stderr.read()
        p.stdout.close(), p.stderr.close()
    notes = logs / "run" / "notes.md"
    notes.write_text("# my notes\n")
    p = _vaediag("report", str(logs), "-o", str(notes), "--force")
    assert p.wait(timeout=120) == 2
    assert "a log tree this command reads" in p.stderr.read().decode()
    p.stdout.close(), p.stderr.close()
    assert notes.read_text() == "# my notes\n"


# --------------------------------------------------------------------------------------------------
# Streams


@pytest.mark.slow
def test_a_fifo_with_a_reader_gets_the_markdown(tmp_path):
    logs = _logs(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:  # blocks until the writer opens it
            got.append(fh.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    p = _vaediag("report", str(logs), "-o", str(fifo))
    # The writer opens without blocking; the reader may not have opened yet: then it is refused, and
    # a second try (the reader is waiting by now) must succeed.
    rc = p.wait(timeout=120)
    err = p.stderr.read().decode()
    p.stdout.close(), p.stderr.close()
    if rc == 2 and "no reader" in err:
        p = _vaediag("report", str(logs), "-o", str(fifo))
        rc = p.wait(timeout=120)
        err = p.stderr.read().decode()
        p.stdout.close(), p.stderr.close()
    reader.join(timeout=30)
    assert rc == 0, err
    assert got and got[0].startswith(b"# VAE training report: logs\n")
    assert err.startswith("Wrote the report into ") and "no plots" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["logs", "pipe"]  # nothing else written


@pytest.mark.slow
def test_dev_stdout_redirected_to_a_file_writes_through_the_redirection(tmp_path):
    """`vaediag report logs -o /dev/stdout > r.md`: no --force needed, the file gets the markdown."""
    logs = _logs(tmp_path)
    out = tmp_path / "r.md"
    with open(out, "wb") as fh:
        p = _vaediag("report", str(logs), "-o", "/dev/stdout", stdout=fh)
        assert p.wait(timeout=120) == 0, p.stderr.read()
        p.stderr.close()
    assert out.read_bytes().startswith(b"# VAE training report: logs\n")
    assert not (tmp_path / "r_files").exists()


# --------------------------------------------------------------------------------------------------
# The guard's decisions, one by one


def test_plan_output_decisions(tmp_path):
    logs = _logs(tmp_path)
    inputs = Inputs([logs, tmp_path / "missing.toml", None])
    assert plan_output("-").mode == STREAM and plan_output("-").fd == 1
    with pytest.raises(UsageError, match="not possible here"):
        plan_output("-", allow_stream=False)
    assert plan_output(tmp_path / "new.md", inputs=inputs).mode == NEW
    assert plan_output(logs / "run" / "new.md", inputs=inputs).mode == NEW  # new, inside a tree: fine
    (tmp_path / "old.md").write_text("x")
    assert plan_output(tmp_path / "old.md", force=True, inputs=inputs).mode == REPLACE
    d = plan_output("/dev/null", inputs=inputs)
    assert d.mode == STREAM and d.kind == "a character device"
    with pytest.raises(UsageError, match="is a character device, not a regular file"):
        plan_output("/dev/null", allow_stream=False)
    (tmp_path / "l.md").symlink_to("old.md")
    with pytest.raises(UsageError, match=r"is a symbolic link \(to 'old\.md'\)"):
        plan_output(tmp_path / "l.md", force=True, follow_links=False)
    d = plan_output(tmp_path / "l.md", force=True)
    assert d.mode == REPLACE and d.path == (tmp_path / "old.md").resolve()


def test_a_path_with_escape_sequences_is_shown_escaped(tmp_path):
    (tmp_path / "a\x1b[2K\n.md").write_text("x")
    with pytest.raises(UsageError) as exc:
        plan_output(tmp_path / "a\x1b[2K\n.md")
    assert "a\\x1b[2K\\n.md' already exists" in exc.value.message and "\x1b" not in exc.value.message


def test_a_full_disk_while_writing_a_new_reports_plots_leaves_nothing_behind(tmp_path, monkeypatch):
    """ENOSPC on the third plot of a new report: one line, no markdown and no half-filled NAME_files/ left,
    so the same command works once there is room again (a leftover folder made the retry say 'exists')."""
    import errno

    import vaediag
    from vaediag.diagnose import diagnose
    from vaediag.errors import InputError
    from vaediag.render.report import files as report_files
    from vaediag.render.report import write_report

    logs = _logs(tmp_path)
    rs = vaediag.load(logs)
    out = tmp_path / "out" / "r.md"
    real, calls = report_files.atomic_write, []

    def full(path, data, *a, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, *a, **kw)

    monkeypatch.setattr(report_files, "atomic_write", full)
    with pytest.raises(InputError, match="No space left on device"):
        write_report(rs, diagnose(rs), out)
    assert len(calls) == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
    monkeypatch.setattr(report_files, "atomic_write", real)
    write_report(rs, diagnose(rs), out)
    assert (tmp_path / "out" / "r_files").is_dir() and out.is_file()
