"""The report's Reconstructions section, on real event files with image summaries.

Our trainer's grids (``val/recon_grid`` at each epoch's last step) and foreign tags, a run under the
watchdog (pictures before and after its decision), two runs side by side, check reading no picture, a
stream taking no picture, --force leaving no stale picture and no user's file lost, a damaged image
record, run ids no file system or markdown likes, and the cap.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

import report_md as md
import tbwrite
from report_runs import run_cli, write_supervised_run
from seedruns import grid_png, write_seed_run
from vaediag.render import pictures
from vaediag.render.report import files_dir_for
from vaediag.terms import RECON_GRID_TAG

T_WATCHED = 1.73e9  # write_supervised_run's start time
T_PLAIN = 1.74e9
PLOTS = {"loss_terms.png", "loss_terms_weighted.png", "quality.png", "penalty_share.png", "kl_weight.png"}


def _section(text: str) -> str:
    return text.split("## Reconstructions", 1)[1].split("\n## ", 1)[0]


def _alts(text: str) -> list[str]:
    return re.findall(r"!\[((?:\\.|[^\]\\])*)\]\(", text)


@pytest.fixture(scope="module")
def pic_tree(tmp_path_factory) -> Path:
    """watched: 40 epochs under the watchdog (one decision after epoch 10) logging our grid; plain: the
    seed's run 1 (its first 40 epochs) logging its pictures as Lightning users do, ``val/reconstructions``."""
    root = tmp_path_factory.mktemp("pictures") / "logs"
    write_supervised_run(root / "watched", grid_tag=RECON_GRID_TAG)
    write_seed_run(root / "plain", "run1", epochs=40, t0=T_PLAIN, grid_tag="val/reconstructions")
    return root


@pytest.fixture(scope="module")
def pic_report(pic_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pictures_out") / "r.md"
    assert run_cli("report", str(pic_tree), "-o", str(out)) == 0
    return out


@pytest.mark.slow
def test_pictures_come_first_side_by_side_before_and_after_the_decision(pic_report, pic_tree):
    text = pic_report.read_text(encoding="utf-8")
    assert md.headings(text, 2)[:2] == ["Reconstructions", "Summary"]  # before any number
    journal = [json.loads(x) for x in (pic_tree / "watched/watchdog.jsonl").read_text().splitlines()]
    (change,) = [r for r in journal if r["action"] != "keep"]
    assert change["epoch"] == 9  # decided after epoch 10: before = epoch 10, after = epoch 11
    sec = _section(text)
    assert md.headings(sec, 3) == ["Epoch 10: before D1, milestone", "Epoch 11: after D1", "Epoch 30: milestone",
                                   "Epoch 40: final"]
    tables = md.tables(sec)
    assert [t.header for t in tables] == [["R1: watched", "R2: plain"]] * 4  # one column per run, same epoch
    assert [t.rows[1] for t in tables] == [["step 19 · before D1 · milestone", "step 19 · milestone"],
                                           ["step 21 · after D1", "step 21"], ["step 59 · milestone"] * 2,
                                           ["step 79 · final"] * 2]
    # The bytes as logged, each from its own epoch (grid_png differs per run and epoch).
    files = md.files_of(pic_report)
    for e in (10, 11, 30, 40):
        assert files[f"recon-R1-watched-epoch{e:04d}.png"] == grid_png(T_WATCHED, e - 1)
        assert files[f"recon-R2-plain-epoch{e:04d}.png"] == grid_png(T_PLAIN, e - 1)
    assert set(files) == PLOTS | {f"recon-R{r}-{n}-epoch{e:04d}.png" for r, n in ((1, "watched"), (2, "plain"))
                                  for e in (10, 11, 30, 40)}
    links = md.image_links(sec)
    assert len(links) == 8 and all((pic_report.parent / link).is_file() for link in links)
    assert _alts(sec)[:2] == ["R1 watched: val/recon_grid at epoch 10", "R2 plain: val/reconstructions at epoch 10"]
    assert "Pictures shown: R1 `val/recon_grid` (40 logged), R2 `val/reconstructions` (40 logged)." in sec


def test_check_reads_no_picture_and_names_the_grid_the_report_shows(pic_tree, monkeypatch, capsys):
    import vaediag.logs.images as images

    def boom(*_a, **_k):
        raise AssertionError("a picture was read")

    monkeypatch.setattr(images, "read_images", boom)
    monkeypatch.setattr(images, "iter_images", boom)
    assert run_cli("check", str(pic_tree), "--json") == 1  # both runs fail checks; none reads a picture
    runs = {r["run"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    pics = {name: [f for f in r["findings"] if f["rule"] == "pictures"][0] for name, r in runs.items()}
    assert pics["watched"]["id"] == f"pictures.{RECON_GRID_TAG}" and pics["plain"]["id"] == "pictures.val/reconstructions"
    (f,) = (pic_tree / "watched").glob("events.out.tfevents.*")
    assert f"the latest at epoch 40 (step 79), in {f.name}" in pics["watched"]["message"]


def test_a_stream_takes_the_markdown_alone_and_reads_no_picture(pic_tree, tmp_path, monkeypatch, capfd):
    import vaediag.logs.images as images

    def boom(*_a, **_k):
        raise AssertionError("a picture was read")

    monkeypatch.setattr(images, "iter_images", boom)
    monkeypatch.setattr(images, "read_images", boom)
    monkeypatch.chdir(tmp_path)
    assert run_cli("report", str(pic_tree), "-o", "-") == 0
    text = capfd.readouterr().out
    sec = _section(text)
    assert "R1 `val/recon_grid` (40 logged), R2 `val/reconstructions` (40 logged); this text-only report" in sec
    assert md.image_links(text) == [] and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_force_rerun_leaves_no_stale_picture_and_keeps_the_users_files(pic_tree, tmp_path, capsys):
    out = tmp_path / "r.md"
    assert run_cli("report", str(pic_tree), "-o", str(out)) == 0
    fdir = files_dir_for(out)
    mine = {"mine.png": md.PNG_MAGIC + b"user", "notes.txt": b"mine\n",
            "recon-R9-mine-epoch0001.png": tbwrite.png_bytes(2, 2)}  # named like ours, but the report never linked it
    for name, data in mine.items():
        (fdir / name).write_bytes(data)
    # Only the watched run now: R2's pictures are stale, R1's are written again.
    assert run_cli("report", str(pic_tree), "-o", str(out), "--force", "--run", "watched") == 0
    left = {p.name: p.read_bytes() for p in fdir.iterdir()}
    assert set(left) == PLOTS | set(mine) | {f"recon-R1-watched-epoch{e:04d}.png" for e in (10, 11, 30, 40)}
    assert all(left[n] == d for n, d in mine.items())
    # A file that is not a picture at a picture's name is refused before anything is written.
    victim = fdir / "recon-R1-watched-epoch0040.png"
    victim.write_text("my notes, not a picture\n")
    before = out.read_bytes()
    capsys.readouterr()
    assert run_cli("report", str(pic_tree), "-o", str(out), "--force", "--run", "watched") == 2
    assert "a file that is not a picture is in the way" in capsys.readouterr().err
    assert victim.read_text() == "my notes, not a picture\n" and out.read_bytes() == before


def _jpeg(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    rgb = np.random.default_rng(seed).integers(0, 256, size=(8, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.slow
def test_foreign_tags_pick_like_check(tmp_path):
    """Lightning's ``val/reconstructions`` (JPEG here, beside ``samples``) and latent-diffusion's
    ``train/reconstruction`` logged mid-epoch (beside ``train/inputs``): each run shows the tag check names."""
    import vaediag
    from vaediag.diagnose import diagnose
    from vaediag.render.report import build_report

    spe = 10
    light = [("val/reconstructions", (e + 1) * spe - 1, _jpeg(e)) for e in range(3)]
    light += [("samples", (e + 1) * spe - 1, tbwrite.png_bytes(4, 4, 100 + e)) for e in range(3)]
    tbwrite.write_run(tmp_path / "lightning_logs" / "version_0",
                      {"val_loss": tbwrite.epoch_series([0.3, 0.2, 0.1], steps_per_epoch=spe),
                       "train_loss": [(s, 0.3 - 0.005 * s) for s in range(3 * spe)]},
                      epochs=tbwrite.epoch_map(3, steps_per_epoch=spe), images=light)
    ldm = [(t, s, tbwrite.png_bytes(4, 8, 10 * s + i)) for s in (3, 8, 13, 18) for i, t in
           enumerate(("train/inputs", "train/reconstruction"))]
    tbwrite.write_run(tmp_path / "ldm" / "version_0",
                      {"train/rec_loss": [(s, 0.2 - 0.005 * s) for s in range(2 * spe)]},
                      epochs=tbwrite.epoch_map(2, steps_per_epoch=spe), t0=1.8e9, images=ldm)
    rs = vaediag.load(tmp_path)
    diags = diagnose(rs)
    keys = {d.run: d.finding("pictures").key for d in diags}
    assert keys == {"lightning_logs/version_0": "val/reconstructions", "ldm/version_0": "train/reconstruction"}
    report = build_report(rs, diags, out_name="r")
    sec = _section(report.markdown)
    assert "R1 `val/reconstructions` (3 logged), R2 `train/reconstruction` (4 logged)" in sec
    pics = {n: d for n, d in report.files.items() if pictures.is_picture_name(n)}
    # Lightning: its final epoch (3) as the JPEG it logged; ldm: epoch 2's last picture (step 18), and
    # beside it at epoch 2 the Lightning run's picture of that epoch.
    assert pics == {"recon-R1-lightning_logs-version_0-epoch0003.jpg": _jpeg(2),
                    "recon-R1-lightning_logs-version_0-epoch0002.jpg": _jpeg(1),
                    "recon-R2-ldm-version_0-epoch0002.png": ldm[7][2]}
    assert md.headings(sec, 3) == ["Epoch 2: final", "Epoch 3: final"]


def _flip_inside(path: Path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = bytes(data).index(needle) + len(needle) // 2
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_a_damaged_image_record_is_skipped(tmp_path):
    """The last grid's record fails its CRC: the final picture is the epoch before it; a run whose one
    "image" is not an image says that none could be read."""
    import vaediag
    from vaediag.diagnose import diagnose
    from vaediag.render.report import build_report

    f = write_seed_run(tmp_path / "torn", "run3", epochs=4, t0=T_PLAIN, grid_tag=RECON_GRID_TAG)
    _flip_inside(f, grid_png(T_PLAIN, 3))
    tbwrite.write_run(tmp_path / "odd", {"val/recon": tbwrite.epoch_series([0.3, 0.2])},
                      epochs=tbwrite.epoch_map(2), t0=1.8e9,
                      images=[(RECON_GRID_TAG, 19, b"not an image, but long enough to be read as one" * 3)])
    rs = vaediag.load(tmp_path)
    report = build_report(rs, diagnose(rs), out_name="r")
    sec = _section(report.markdown)
    pics = {n: d for n, d in report.files.items() if pictures.is_picture_name(n)}
    assert pics == {"recon-R1-torn-epoch0003.png": grid_png(T_PLAIN, 2)}
    assert "step 5 · final" in sec
    assert "R2 logs 1 image(s) as `val/recon_grid`, but none could be read" in sec


@pytest.mark.slow
def test_unsafe_run_ids_make_safe_file_names_and_escaped_text(tmp_path):
    import vaediag
    from vaediag.diagnose import diagnose
    from vaediag.render.report import build_report

    names = [os.fsdecode(b"bad\xff\x1b[2Kname"), "x|y*[z](w)`<b>", "deep/er"]
    for i, name in enumerate(names):
        write_seed_run(tmp_path / f"tmp{i}", "run3", epochs=2, t0=1.7e9 + i * 1e5, grid_tag=RECON_GRID_TAG)
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        os.rename(os.fsencode(tmp_path / f"tmp{i}"), os.fsencode(tmp_path / name))  # TensorBoard's writer wants UTF-8
    rs = vaediag.load(tmp_path)
    report = build_report(rs, diagnose(rs), out_name="odd|out")
    sec = _section(report.markdown)
    pics = [n for n in report.files if pictures.is_picture_name(n)]
    assert sorted(pics) == ["recon-R1-bad-2Kname-epoch0002.png", "recon-R2-x-y-z-w-b-epoch0002.png",
                            "recon-R3-deep-er-epoch0002.png"]
    assert "\x1b" not in report.markdown and "\udcff" not in report.markdown
    assert md.image_links(sec) == [f"odd%7Cout_files/{n}" for n in pics]
    for block in md.raw_table_blocks(sec):
        assert len({md.raw_cells(line) for line in block}) == 1
    assert [t.header for t in md.tables(sec)] == [["R1: bad\\xff\\x1b[2Kname", "R2: x|y*[z](w)`<b>", "R3: deep/er"]]
    assert "<b>" not in md.rendered(sec) and "<em>" not in md.rendered(sec)
    assert _alts(sec)[1] == "R2 x\\|y\\*\\[z\\](w)\\`&lt;b>: val/recon_grid at epoch 2"


def test_a_run_without_epochs_shows_its_latest_picture_by_step(tmp_path):
    import vaediag
    from vaediag.diagnose import diagnose
    from vaediag.render.report import build_report

    tbwrite.write_run(tmp_path / "r", {"loss": [(s, 1.0 / (s + 1)) for s in range(6)]},
                      images=[("reconstruction", s, tbwrite.png_bytes(4, 4, s)) for s in (2, 5)])
    rs = vaediag.load(tmp_path)
    report = build_report(rs, diagnose(rs), out_name="r")
    sec = _section(report.markdown)
    assert md.headings(sec, 3) == ["Latest pictures (the logs give no epoch)"]
    assert {n: d for n, d in report.files.items() if pictures.is_picture_name(n)} == {
        "recon-R1-r-step5.png": tbwrite.png_bytes(4, 4, 5)}


@pytest.mark.slow
def test_the_cap_says_what_was_left_out(pic_tree, monkeypatch):
    import vaediag
    from vaediag.diagnose import diagnose
    from vaediag.render.report import build_report

    monkeypatch.setattr(pictures, "MAX_PICTURES", 3)
    rs = vaediag.load(pic_tree)
    report = build_report(rs, diagnose(rs), out_name="r")
    sec = _section(report.markdown)
    # Each run's final picture first, then the decision's "before"; the other five are counted.
    assert sorted(n for n in report.files if pictures.is_picture_name(n)) == [
        "recon-R1-watched-epoch0010.png", "recon-R1-watched-epoch0040.png", "recon-R2-plain-epoch0040.png"]
    assert "5 more picture(s) fit these epochs but are not embedded: a report embeds at most 3" in sec


@pytest.mark.slow
def test_a_report_inside_the_tree_it_reads_replaces_only_its_own_pictures(tmp_path):
    """Pictures written inside the log tree are vaediag's own, so --force may replace them there; a file of
    the tree under a picture's name that is not one is never replaced."""
    import vaediag
    from vaediag.errors import UsageError
    from vaediag.outputs import Inputs
    from vaediag.render.report import diagnose_runs, write_report

    tree = tmp_path / "logs"
    write_seed_run(tree / "run", "run3", epochs=2, t0=T_PLAIN, grid_tag=RECON_GRID_TAG)
    rs = vaediag.load(tree)
    out = tree / "report.md"
    for _ in range(2):
        write_report(rs, diagnose_runs(rs), out, force=True, inputs=Inputs([tree]))
    pic = files_dir_for(out) / "recon-R1-run-epoch0002.png"
    assert pic.read_bytes() == grid_png(T_PLAIN, 1)
    pic.write_bytes(b"the tree's own notes")
    with pytest.raises(UsageError, match="a log tree this command reads; vaediag never replaces a file there"):
        write_report(rs, diagnose_runs(rs), out, force=True, inputs=Inputs([tree]))
    assert pic.read_bytes() == b"the tree's own notes"
