"""The sdist and the wheel as a user gets them: built, installed offline into a fresh venv without torch, used.

``python -m build --no-isolation`` builds the sdist and then the wheel *from the sdist*, so a file the sdist
forgets (a rules TOML, an example log, the README the metadata reads) breaks the wheel too. The build runs on
a copy of the checkout's packaging files and packages, as git lists them (tracked, and new files that are
not ignored), so a file that a clean clone would lack is missing here too.

The install never touches the network. Its wheelhouse is filled by ``pip download`` from the package
sources this machine's pip configuration names *on local disk* (``file://`` indexes and find-links
folders; on this project's machines /opt/pypi/simple, /opt/pypi-more/simple and /opt/wheels), with pip's
own configuration switched off so no remote index is ever asked. A dependency those sources lack
(``crc32c`` on this project's machines) is repacked into a wheel from the copy installed in the environment
running the tests: the same files, no network. Where the machine has no local sources at all, every
dependency is repacked that way. Then ``pip install --no-index --find-links WHEELHOUSE`` into a venv made
with ``--without-pip`` (the test's own pip installs into it), and, in that venv, from a folder outside the
checkout: ``vaediag --version``, ``python -m vaediag --version``, ``vaediag examples``, ``check`` and
``report`` on the shipped example logs, and torch, tbparse and the training core's imports absent.

Needs the ``build`` package (the [dev] extra; ``make test`` installs it). On this project's 2-core machine,
shared: the build 3-4 s, the wheelhouse, venv and install 8-9 s, the commands in the venv 25-28 s; 40-55 s in all.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import packaging.tags
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import vaediag
from vaediag.commands.examples import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent
VERSION = vaediag.__version__
# What the build needs from the checkout; tests, docs, bench and scripts are not part of the distribution.
BUILD_INPUTS = ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "vaediag/", "train/")
MAX_WHEEL_BYTES = 2_000_000
EXAMPLE_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "vaediag" / "examples").rglob("*") if p.is_file())


def _run(argv: list, *, timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)


def _source_files() -> list[str]:
    """The files a clean clone (plus new, not ignored files) has under BUILD_INPUTS."""
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        proc = _run([git, "-C", ROOT, "ls-files", "-co", "--exclude-standard", "--", *BUILD_INPUTS], timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [f for f in proc.stdout.splitlines() if (ROOT / f).is_file()]
    return [str(p.relative_to(ROOT)) for top in BUILD_INPUTS for p in ([ROOT / top] if (ROOT / top).is_file()
            else (ROOT / top).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel, built from a copy of the checkout (never in it: no build/ or egg-info there)."""
    try:
        import build  # noqa: F401
    except ImportError:
        pytest.fail("tests/test_wheel.py needs the build package: pip install -e '.[dev]' (make test installs it)")
    tmp = tmp_path_factory.mktemp("dist")
    src, out = tmp / "src", tmp / "out"
    for f in _source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    proc = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"vaediag-{VERSION}-py3-none-any.whl"], wheels
    assert [s.name for s in sdists] == [f"vaediag-{VERSION}.tar.gz"], sdists
    return {"wheel": wheels[0], "sdist": sdists[0]}


# ------------------------------------------------------------------------------------------------
# What the artifacts hold.


def _metadata(text: str) -> tuple[str, list[str]]:
    version = re.search(r"^Version: (.+)$", text, re.M).group(1).strip()
    return version, re.findall(r"^Requires-Dist: (.+)$", text, re.M)


@pytest.mark.slow
def test_the_wheel_holds_the_packages_their_data_and_the_licence(dist):
    with zipfile.ZipFile(dist["wheel"]) as z:
        names = set(z.namelist())
        version, requires = _metadata(z.read(f"vaediag-{VERSION}.dist-info/METADATA").decode())
        example_bytes = {n: z.read(n) for n in names if n.startswith("vaediag/examples/")}
    assert {"vaediag/rules/default.toml", "vaediag/rules/targets.toml", "vaediag/cli.py", "vaediag/__main__.py",
            "vaediag/commands/examples.py", "train/__main__.py", "train/loop.py"} <= names
    assert set(example_bytes) == set(EXAMPLE_FILES)
    assert all(example_bytes[f] == (ROOT / f).read_bytes() for f in EXAMPLE_FILES)
    assert f"vaediag-{VERSION}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "scripts/")) or "__pycache__" in n]
    assert version == VERSION
    plain = {canonicalize_name(Requirement(r).name) for r in requires if Requirement(r).marker is None}
    assert {"numpy", "pandas", "matplotlib", "tensorboard"} <= plain
    assert not plain & {"torch", "tbparse", "lightning", "pytest", "build"}  # extras only
    by_extra = {canonicalize_name(Requirement(r).name): str(Requirement(r).marker) for r in requires
                if Requirement(r).marker is not None}
    assert by_extra["tbparse"] == 'extra == "dev"' and by_extra["build"] == 'extra == "dev"'
    assert by_extra["torch"] == 'extra == "train"'
    size = dist["wheel"].stat().st_size
    assert size < MAX_WHEEL_BYTES, f"the wheel is {size / 1e6:.2f} MB"


@pytest.mark.slow
def test_the_sdist_holds_what_a_build_from_it_needs(dist):
    top = f"vaediag-{VERSION}/"
    with tarfile.open(dist["sdist"]) as t:
        names = {m.name[len(top):] for m in t.getmembers() if m.isfile()}
        version, _ = _metadata(t.extractfile(top + "PKG-INFO").read().decode())
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO", "vaediag/rules/default.toml",
            "vaediag/rules/targets.toml", "vaediag/__init__.py", "train/__main__.py"} <= names
    assert set(EXAMPLE_FILES) <= names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]
    assert version == VERSION


# ------------------------------------------------------------------------------------------------
# The offline wheelhouse.


def _pip_env() -> dict[str, str]:
    """pip with no configuration file and no PIP_* settings: only the sources on its command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def _local_dir(location: str) -> Path | None:
    """``location`` (a path or a URL) as a local folder, or None when it is remote or absent."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        p = Path(unquote(parsed.path))
    elif parsed.scheme in ("", ) or (len(parsed.scheme) == 1 and os.name == "nt"):
        p = Path(location)
    else:
        return None
    return p if p.is_dir() else None


def local_sources() -> tuple[list[Path], list[Path]]:
    """(index folders, find-links folders) on local disk that this environment's pip configuration names."""
    proc = _run([sys.executable, "-m", "pip", "config", "list"], timeout=60)
    indexes: list[Path] = []
    links: list[Path] = []
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        option = key.rsplit(".", 1)[-1]
        for location in value.strip().strip("'\"").split():
            d = _local_dir(location)
            if d is None:
                continue
            target = indexes if option in ("index-url", "extra-index-url") else links if option == "find-links" else None
            if target is not None and d not in target:
                target.append(d)
    return indexes, links


def _requirement_closure(requires: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The distributions installed here that ``requires`` (Requires-Dist lines, no extra) pulls in."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [(Requirement(r), ()) for r in requires]
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            found[name] = d = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{req.name}, a dependency of vaediag, is not installed where the tests run")
        todo += [(Requirement(r), tuple(req.extras)) for r in d.requires or ()]
    return found


def _on_disk(name: str, indexes: list[Path], links: list[Path]) -> bool:
    stem = re.sub(r"[-_.]+", "_", name).lower() + "-"
    return (any((i / name).is_dir() for i in indexes)
            or any(re.sub(r"[-_.]+", "_", f.name.split("-", 1)[0]).lower() + "-" == stem
                   for d in links for f in d.iterdir()))


def repack(d: importlib.metadata.Distribution, dest: Path) -> Path:
    """A wheel of an installed distribution: its files as installed (scripts outside the site folder and
    byte code left out; pip writes scripts from entry_points.txt), with a new RECORD."""
    name = canonicalize_name(d.metadata["Name"]).replace("-", "_")
    version = d.version
    info = f"{name}-{version}.dist-info"
    wheel_meta = d.read_text("WHEEL") or "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    tags = [t.strip() for t in re.findall(r"^Tag: (.+)$", wheel_meta, re.M)] or ["py3-none-any"]
    here = {str(t) for t in packaging.tags.sys_tags()}  # it was installed here: one of its tags fits
    out = dest / f"{name}-{version}-{next((t for t in tags if t in here), tags[0])}.whl"
    skip_info = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    record = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for f in d.files or ():
            parts = f.parts
            if ".." in parts or "__pycache__" in parts or f.suffix == ".pyc":
                continue
            if parts[0].endswith(".dist-info"):
                if parts[-1] in skip_info:
                    continue
                arc = "/".join((info, *parts[1:]))
            else:
                arc = "/".join(parts)
            data = Path(d.locate_file(f)).read_bytes()
            z.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return out


def fill_wheelhouse(wheel: Path, house: Path) -> str:
    """Every wheel ``wheel`` needs, in ``house``, without the network; says where they came from."""
    house.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        _, requires = _metadata(z.read(f"vaediag-{VERSION}.dist-info/METADATA").decode())
    closure = _requirement_closure(requires)
    indexes, links = local_sources()
    if indexes or links:
        missing = sorted(n for n in closure if not _on_disk(n, indexes, links))
        for n in missing:
            repack(closure[n], house)
        index_args = ["--index-url", indexes[0].as_uri(), *[a for i in indexes[1:] for a in ("--extra-index-url", i.as_uri())]] \
            if indexes else ["--no-index"]
        proc = _run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", house, "--only-binary", ":all:",
                     *index_args, *[a for d in (*links, house) for a in ("--find-links", d)], wheel],
                    timeout=600, env=_pip_env())
        if proc.returncode == 0:
            return (f"pip download from {', '.join(map(str, indexes + links))}"
                    + (f"; repacked from this environment: {', '.join(missing)}" if missing else ""))
        print(f"pip download from the local sources failed, repacking every dependency:\n{proc.stderr[-2000:]}")
    for n, d in closure.items():
        repack(d, house)
    return f"repacked from this environment: {', '.join(sorted(closure))}"


# ------------------------------------------------------------------------------------------------
# Install and use.


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("venv")
    where = fill_wheelhouse(dist["wheel"], tmp / "wheelhouse")
    print(f"wheelhouse: {where}")
    env_dir = tmp / "env"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", env_dir], timeout=120)
    assert proc.returncode == 0, proc.stderr
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    proc = _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile", "--no-index",
                 "--find-links", tmp / "wheelhouse", dist["wheel"]], timeout=900, env=_pip_env())
    assert proc.returncode == 0, f"offline install failed ({where}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PATH=str(bindir) + os.pathsep + env.get("PATH", ""), PYTHONNOUSERSITE="1", VIRTUAL_ENV=str(env_dir))
    work = tmp / "work"  # outside the checkout: nothing of it on sys.path
    work.mkdir()
    return {"python": python, "env": env, "work": work, "bindir": bindir}


def _in_venv(venv: dict, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return _run(list(argv), timeout=timeout, cwd=venv["work"], env=venv["env"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_wheel_installs_offline_without_torch_and_check_and_report_work(venv):
    py = str(venv["python"])
    where = _in_venv(venv, py, "-c", "import vaediag, sys; print(vaediag.__file__); print(sys.prefix)")
    assert where.returncode == 0, where.stderr
    module_file, prefix = where.stdout.split()
    assert Path(module_file).is_relative_to(prefix) and not Path(module_file).is_relative_to(ROOT)

    for argv in (["vaediag", "--version"], [py, "-m", "vaediag", "--version"]):
        v = _in_venv(venv, *argv)
        assert (v.returncode, v.stdout, v.stderr) == (0, f"vaediag {VERSION}\n", ""), argv

    listing = _in_venv(venv, "vaediag", "examples")
    assert listing.returncode == 0 and not listing.stderr, listing.stderr
    examples = _in_venv(venv, "vaediag", "examples", "--path").stdout.strip()
    assert Path(examples).is_relative_to(prefix) and all(run in listing.stdout for run in EXAMPLES)
    assert f"vaediag check {shlex.quote(examples)}" in listing.stdout

    check = _in_venv(venv, "vaediag", "check", examples)
    assert check.returncode == 1, check.stdout[-2000:] + check.stderr  # both runs fail a success criterion
    assert "Traceback" not in check.stdout + check.stderr
    text = " ".join(check.stdout.split())  # rich wraps lines at the terminal width
    assert "2 runs checked: 2 fail" in text
    assert "fixed_kl/version_0 · 6 completed epochs" in text and "watched/version_0 · 16 completed epochs" in text
    assert "Effective KL penalty = 0.01 × 1.41 = 0.014" in text
    assert "kl_collapse: posterior collapse at epoch 6" in text and "only 0 of 2048 latent units active" in text
    js = _in_venv(venv, "vaediag", "check", examples, "--json")
    runs = {r["run"]: r for r in json.loads(js.stdout)["runs"]}
    assert set(runs) == set(EXAMPLES)
    assert runs["watched/version_0"]["metrics"]["psnr"] == pytest.approx(22.3029, abs=1e-3)

    report = venv["work"] / "out" / "r.md"
    rep = _in_venv(venv, "vaediag", "report", examples, "-o", str(report))
    assert rep.returncode == 0 and "Traceback" not in rep.stderr, rep.stdout[-2000:] + rep.stderr
    md = report.read_text(encoding="utf-8")
    assert "2 runs: R1 fixed_kl/version_0, R2 watched/version_0." in md
    assert "| D2 | 3 | switch_to_ae | 0 | ae |" in md  # the watchdog's decisions, from watchdog.jsonl
    pictures = sorted(p.name for p in (report.parent / "r_files").glob("recon-*.png"))
    assert "recon-R2-watched-version_0-epoch0016.png" in pictures and "quality.png" in os.listdir(report.parent / "r_files")

    copy = venv["work"] / "mine"
    assert _in_venv(venv, "vaediag", "examples", "--copy", str(copy)).returncode == 0
    assert _in_venv(venv, "vaediag", "check", str(copy), "--json").returncode == 1
    again = _in_venv(venv, "vaediag", "examples", "--copy", str(copy))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr

    # No torch here, and nothing above needed it; the training commands say what to install, in one line.
    probe = _in_venv(venv, py, "-c", "import importlib.util as u, importlib.metadata as m, json; print(json.dumps("
                     "[{n: u.find_spec(n) is not None for n in ('torch', 'tbparse', 'lightning', 'vaediag', 'train')},"
                     " sorted(d.metadata['Name'].lower() for d in m.distributions())]))")
    importable, installed = json.loads(probe.stdout)
    assert importable == {"torch": False, "tbparse": False, "lightning": False, "vaediag": True, "train": True}
    assert "vaediag" in installed and not {"torch", "tbparse", "lightning", "pytest"} & set(installed), installed
    for cmd in (["vaediag", "train", "--epochs", "1"], ["vaediag", "demo", "--epochs", "1"]):
        t = _in_venv(venv, *cmd)
        assert t.returncode == 2 and t.stderr.count("\n") == 1 and "pip install 'vaediag[train]'" in t.stderr, cmd
