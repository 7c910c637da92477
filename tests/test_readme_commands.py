"""Every command in the README runs verbatim after `make demo`.

The README's ```bash and ```python blocks are what a newcomer copies. Each line of a bash block (a command,
its `# comment` left to the shell) is run with bash, each python block as one program. Each `## ` section of
the README is one test: its commands run in README order (a later command may use an earlier one's output)
in a copy of a directory where the demo has run: `data/demo/`, `logs/demo/demo/version_0` and
`reports/demo/` exist, as after `make demo` in a fresh clone. So every section works on its own after the
demo, as a reader who jumps to it would run it, and the sections run in parallel under pytest-xdist. The
demo runs once per session (`vaediag demo --epochs 2`: the demo's own data, model and watchdog; two epochs
instead of the default so the setup takes a minute, not three), shared by xdist's workers, with the
repository's `scripts/`, `bench/`, `tests/` and `examples/` beside it.

A block the test cannot run (the installs, `make test` itself, a 100-epoch training) is preceded by
``<!-- not run by tests/test_readme_commands.py: REASON -->``; the reason is required and shown here, and
there are few such blocks (:data:`MAX_SKIPPED`). A command passes when it prints no traceback and exits
with the code its line states (``# ... exit 2`` in its comment), else 0; ``vaediag check`` may also exit 1,
its verdict that a check fails (how the two-epoch run is judged is not the README's point).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*not run by tests/test_readme_commands\.py:\s*(?P<reason>[^>]*?)\s*-->\s*$")
EXIT = re.compile(r"#.*\bexit (?P<code>\d+)\b")
MAX_SKIPPED = 5


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str  # "bash" or "python"
    commands: tuple[str, ...]  # bash: one per line; python: the whole block
    skip: str | None  # the stated reason, or None when the block runs
    section: str = ""  # the `## ` heading the block is under ("" before the first)


def readme_blocks(text: str) -> list[Block]:
    """The ```bash and ```python blocks of ``text``, each with its commands and the skip reason before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        lang = lines[i].strip()[3:]
        if lines[i].strip().startswith("```") and lang in ("bash", "python"):
            start = i
            prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            m = SKIP.search(prev)
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            if lang == "python":
                cmds = ("\n".join(body),)
            else:
                cmds = tuple(ln.strip() for ln in body if ln.strip() and not ln.strip().startswith("#"))
            blocks.append(Block(start + 1, lang, cmds, m.group("reason") if m else None, section))
        elif lines[i].strip().startswith("```") and lines[i].strip() != "```":  # another language: skip its body
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                i += 1
        i += 1
    return blocks


def expected_exit(command: str) -> set[int]:
    m = EXIT.search(command)
    if m:
        return {int(m.group("code"))}
    return {0, 1} if command.startswith("vaediag check") else {0}


def test_the_block_parser_reads_skips_reasons_and_exit_codes():
    text = ("intro\n```bash\nvaediag check logs/demo   # a tree\n# a comment line\n\nvaediag x  # exit 1 here\n```\n"
            "<!-- not run by tests/test_readme_commands.py: needs the network -->\n\n```bash\npip install x\n```\n"
            "## Python\n```python\nprint(1)\n```\n```toml\n[x]\n```\n")
    a, b, c = readme_blocks(text)
    assert a == Block(2, "bash", ("vaediag check logs/demo   # a tree", "vaediag x  # exit 1 here"), None)
    assert b == Block(10, "bash", ("pip install x",), "needs the network")
    assert c == Block(14, "python", ("print(1)",), None, "Python")
    assert [expected_exit(c) for c in a.commands] == [{0, 1}, {1}]


def test_the_readme_skips_few_blocks_and_says_why():
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    skipped = [b for b in blocks if b.skip is not None]
    assert sum(len(b.commands) for b in blocks if b.skip is None) >= 10, "the README shows commands a test runs"
    assert all(b.skip for b in skipped), "a skipped block states its reason"
    assert len(skipped) <= MAX_SKIPPED, [(b.line, b.skip) for b in skipped]
    first_screen = "\n".join(README.read_text(encoding="utf-8").splitlines()[:40])
    assert "vaediag check path/to/your/logs" in first_screen


def _build_after_demo(d: Path) -> dict:
    """Make ``d`` what a fresh clone is after `make demo` (a two-epoch demo); return the environment to run in."""
    for sub in ("scripts", "bench", "tests", "train", "vaediag", "examples"):
        shutil.copytree(ROOT / sub, d / sub, ignore=shutil.ignore_patterns("__pycache__", "_data", "*.npy"))
    for f in ("pyproject.toml", "Makefile", "README.md"):
        shutil.copy2(ROOT / f, d / f)
    env = _env(d)
    proc = subprocess.run(["vaediag", "demo", "--epochs", "2", "--no-live"], cwd=d, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (d / "logs" / "demo" / "demo" / "version_0").is_dir() and (d / "reports" / "demo" / "report.md").is_file()
    return env


def _env(d: Path) -> dict:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": str(d),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}  # (1 under xdist: tests/conftest.py)
    env.pop("VAEDIAG_RUN_DIR_FILE", None)
    env.pop("VAEDIAG_WATCHDOG_PID", None)
    return env


@pytest.fixture(scope="session")
def after_demo(tmp_path_factory) -> Path:
    """The directory after `make demo`, built once per session: under xdist, by the first worker that needs
    it (a file lock in the session's shared temporary folder), the others wait for it and reuse it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # not under xdist
        d = tmp_path_factory.mktemp("after-demo")
        _build_after_demo(d)
        return d
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # one folder per session, above each worker's own
    d, failed = shared / "after-demo", shared / "after-demo.failed"
    with FileLock(str(shared / "after-demo.lock")):
        if failed.is_file():  # another worker's build failed: its error, at once, not a second build
            pytest.fail(failed.read_text(encoding="utf-8"), pytrace=False)
        if not (d / ".built").is_file():
            shutil.rmtree(d, ignore_errors=True)  # a half-built one (a worker that was killed): build it again
            d.mkdir()
            try:
                _build_after_demo(d)
            except BaseException as exc:
                failed.write_text(f"the demo before the README's commands failed: {exc}"[:20000], encoding="utf-8")
                raise
            (d / ".built").touch()
    return d


def _sections() -> dict[str, list[tuple[int, list[str], str]]]:
    """The runnable commands of each `## ` section, in README order: (README line, argv, command)."""
    out: dict[str, list[tuple[int, list[str], str]]] = {}
    for b in readme_blocks(README.read_text(encoding="utf-8")):
        if b.skip is None:
            out.setdefault(b.section, []).extend(
                (b.line, ["bash", "-c", c] if b.lang == "bash" else [sys.executable, "-c", c], c) for c in b.commands)
    return out


def test_the_readme_is_split_into_sections_that_each_run_commands():
    sections = _sections()
    assert len(sections) >= 5, list(sections)
    assert sum(len(c) for c in sections.values()) == sum(
        len(b.commands) for b in readme_blocks(README.read_text(encoding="utf-8")) if b.skip is None)


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("section", list(_sections()))
def test_every_readme_command_runs_verbatim_after_make_demo(after_demo, section, tmp_path):
    d = tmp_path / "clone"
    shutil.copytree(after_demo, d, symlinks=True, ignore=shutil.ignore_patterns(".built"))
    env = _env(d)
    failures = []
    for line, argv, cmd in _sections()[section]:  # in README order: a later command may use an earlier one's output
        proc = subprocess.run(argv, cwd=d, env=env, capture_output=True, text=True, timeout=600)
        want = expected_exit(cmd)
        out = proc.stdout + proc.stderr
        if proc.returncode not in want or "Traceback (most recent call last)" in out:
            failures.append(f"README line {line}: {cmd!r} exited {proc.returncode} (want {sorted(want)}):\n{out[-1500:]}")
    assert not failures, "\n\n".join(failures)
