r"""The report's Reconstructions section: each run's logged pictures at the epochs that matter.

For every run that logs image summaries (ours: ``val/recon_grid``, inputs in the top row over their
reconstructions in the bottom row; a foreign run: the tag :func:`vaediag.logs.images.picture_tag` picks,
the same one ``vaediag check`` names), the report shows the picture

- at the run's **final** epoch (its latest picture),
- at each **watchdog decision** D*n* (from ``watchdog.jsonl``): the latest picture at or before the
  decision's epoch ("before D1") and the first one after it ("after D1", from the epoch the change
  applies to),
- at each **milestone** epoch of the rules (10, 30, 60 by default) the run reached,

and beside each such picture, the other runs' pictures logged at the same epoch: one table per epoch,
one column per run. An epoch is the tidy frame's (:class:`vaediag.logs.images.StepEpochs`: the epoch of
the run's scalars at the picture's step); within an epoch the picture at the latest step counts.

Lazy and bounded: the section reads pictures only when the report is written to a file (a stream or
``plots=False`` gets one line and reads none), reads each run's image records once
(:func:`vaediag.logs.images.iter_images`, one event file at a time) and keeps only the bytes of the
pictures it embeds. A report embeds at most :data:`MAX_PICTURES`: each run's final picture first, then
the watchdog decisions, the milestones and the other runs at the same epoch, in run order; what was found
beyond that is counted and said. The bytes are written as logged (PNG from torch; JPEG or GIF from some
writers) to ``NAME_files/recon-R<n>-<run slug>-epoch<NNNN>.<ext>``: the R-number keeps names unique,
the slug keeps them safe for any run id (only ``A-Za-z0-9._-``), and :data:`PICTURE_NAME` recognises
them again (``--force`` removes a stale one only when the old report linked it and it still starts with
an image signature).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from vaediag.render.markdown import code_span, escape, link_path, slug, table

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.logs.images import LoggedImage, StepEpochs

__all__ = ["MAX_PICTURES", "PICTURE_NAME", "COLUMNS", "RunPictures", "Picture", "Gallery", "collect",
           "section", "text_only_section", "is_picture_name"]

#: The most pictures one report embeds (about 2 MB of PNG for the trainer's 64 px grids).
MAX_PICTURES = 48
#: Pictures per table row; more runs at one epoch continue in another table below.
COLUMNS = 4
#: The names this module gives picture files (and the only picture files --force may remove).
PICTURE_NAME = re.compile(r"recon-R[0-9]+-[A-Za-z0-9._-]*\.(?:png|jpg|gif)")

# Moment kinds, in order of priority for the cap.
_FINAL, _DECISION, _MILESTONE, _SAME_EPOCH = range(4)


def is_picture_name(name: str) -> bool:
    return PICTURE_NAME.fullmatch(name) is not None


@dataclass
class RunPictures:
    """What the section needs to know about one run (no pictures read yet)."""

    run: str
    label: str  # R1, R2 ...
    tag: str  # the image tag shown (picture_tag's choice)
    count: int  # images logged under it (the scalar read counted them)
    latest_step: int
    files: Sequence[Path]
    epochs: "StepEpochs"
    decisions: Sequence[tuple[int, int]] = ()  # (D-number, epoch index of the decision)
    milestones: Sequence[int] = ()  # epoch indexes (0-based) of the milestones the run reached
    found: int = 0  # images decoded under the tag while reading (0 after reading: none was readable)


@dataclass
class _Moment:
    """A picture the report wants: how it is chosen, and the best candidate so far."""

    how: str  # latest | at | before | after
    epoch: int | None
    kind: int
    roles: list[str] = field(default_factory=list)
    keep: bool = False  # within the cap: its bytes are kept
    key: tuple | None = None
    image: "LoggedImage | None" = None  # kept only when ``keep``
    ident: tuple | None = None

    def offer(self, img: "LoggedImage", epoch: int | None) -> None:
        if self.how == "latest":
            key = (img.step, img.wall_time)
        elif epoch is None:
            return
        elif self.how == "at":
            if epoch != self.epoch:
                return
            key = (img.step, img.wall_time)
        elif self.how == "before":
            if epoch > self.epoch:
                return
            key = (epoch, img.step, img.wall_time)
        else:  # after
            if epoch < self.epoch:
                return
            key = (-epoch, img.step, img.wall_time)
        if self.key is None or key > self.key:  # ties: the first seen (a TF2 tensor's first image)
            self.key = key
            self.ident = _ident(img)
            self.image = img if self.keep else None


def _ident(img: "LoggedImage") -> tuple:
    return (str(img.file), img.step, img.wall_time, img.tag)


@dataclass
class Picture:
    """One embedded picture: whose, when, why, and its file."""

    run: str
    label: str
    tag: str
    epoch: int | None
    step: int
    roles: list[str]
    kind: int
    name: str
    data: bytes


@dataclass
class Gallery:
    """The section's content: the runs with pictures and the pictures embedded."""

    runs: list[RunPictures]
    pictures: list[Picture]
    left_out: int = 0  # pictures found for the epochs shown beyond the cap
    limit: int = MAX_PICTURES

    @property
    def files(self) -> dict[str, bytes]:
        return {p.name: p.data for p in self.pictures}


def _moments(runs: Sequence[RunPictures]) -> list[tuple[RunPictures, _Moment]]:
    """Every picture the report wants, in priority order (final, decisions, milestones, same epoch)."""
    own: dict[int, dict[tuple[str, int | None], _Moment]] = {}
    nominal: list[int] = []  # epochs other runs are shown at
    for i, r in enumerate(runs):
        ms: dict[tuple[str, int | None], _Moment] = {}

        def want(how: str, epoch: int | None, kind: int, role: str) -> None:
            m = ms.setdefault((how, epoch), _Moment(how, epoch, kind))
            m.kind = min(m.kind, kind)
            if role and role not in m.roles:
                m.roles.append(role)

        want("latest", None, _FINAL, "final")
        last = r.epochs(r.latest_step)
        if last is not None:
            nominal.append(last)
        for n, e in r.decisions:
            want("before", e, _DECISION, f"before D{n}")
            want("after", e + 1, _DECISION, f"after D{n}")
            nominal += [e, e + 1]
        for e in r.milestones:
            want("at", e, _MILESTONE, "milestone")
            nominal.append(e)
        own[i] = ms
    for i, r in enumerate(runs):
        last = r.epochs(r.latest_step)
        if last is None:
            continue
        for e in sorted(set(nominal)):
            if e <= last and ("at", e) not in own[i]:
                own[i][("at", e)] = _Moment("at", e, _SAME_EPOCH)
    out = [(r, m) for i, r in enumerate(runs) for m in own[i].values()]
    order = {id(r): i for i, r in enumerate(runs)}
    out.sort(key=lambda p: (p[1].kind, order[id(p[0])], -1 if p[1].epoch is None else p[1].epoch))
    return out


def collect(runs: Sequence[RunPictures], *, limit: int | None = None) -> Gallery:
    """Read each run's pictures once and keep those the report shows (at most ``limit``, default
    :data:`MAX_PICTURES`)."""
    from vaediag.logs.images import iter_images

    limit = MAX_PICTURES if limit is None else limit
    moments = _moments(runs)
    for m in moments[:limit]:
        m[1].keep = True
    by_run: dict[int, list[_Moment]] = {}
    for r, m in moments:
        by_run.setdefault(id(r), []).append(m)
    pictures: list[Picture] = []
    names: set[str] = set()
    extra: dict[tuple, tuple[bool, int | None]] = {}  # found beyond the cap: (has a reason, epoch)
    for r in runs:
        mine = by_run.get(id(r), [])
        r.found = 0
        for img in iter_images(r.files, tags=[r.tag]):
            r.found += 1
            e = r.epochs(img.step)
            for m in mine:
                m.offer(img, e)
        seen: dict[tuple, Picture] = {}
        for m in mine:
            if m.ident is None:
                continue
            if not m.keep:
                had = extra.get(m.ident, (False, None))[0]
                extra[m.ident] = (had or bool(m.roles), r.epochs(m.ident[1]))
                continue
            p = seen.get(m.ident)
            if p is None:
                img = m.image
                e = r.epochs(img.step)
                p = Picture(run=r.run, label=r.label, tag=img.tag, epoch=e, step=img.step, roles=[], kind=m.kind,
                            name=_file_name(r, e, img, names), data=img.data)
                seen[m.ident] = p
                pictures.append(p)
            p.kind = min(p.kind, m.kind)
            p.roles += [x for x in m.roles if x not in p.roles]
        for ident in seen:
            extra.pop(ident, None)
    # Another run's picture stands beside one that has a reason to be shown, never alone.
    shown = {p.epoch for p in pictures if p.roles}
    pictures = [p for p in pictures if p.roles or p.epoch in shown]
    wanted = shown | {e for why, e in extra.values() if why}
    left_out = sum(1 for why, e in extra.values() if why or e in wanted)
    return Gallery(runs=list(runs), pictures=pictures, left_out=left_out, limit=limit)


def _file_name(r: RunPictures, epoch: int | None, img: "LoggedImage", taken: set[str]) -> str:
    base = f"recon-{r.label}-{slug(r.run)[:60].strip('.-')}-" + (f"epoch{epoch + 1:04d}" if epoch is not None
                                                                 else f"step{img.step}")
    name = base + img.suffix
    n = 1
    while name in taken:
        n += 1
        name = f"{base}-{n}{img.suffix}"
    taken.add(name)
    return name


def _tags_line(runs: Sequence[RunPictures], lead: str = "Pictures shown") -> str:
    parts = [f"{r.label} {code_span(r.tag)} ({r.count} logged)" for r in runs]
    return f"{lead}: " + ", ".join(parts) + "."


_INTRO = ("What each model makes of its inputs, before any number. Our trainer's grid (`val/recon_grid`) "
          "shows inputs in the top row over their reconstructions in the bottom row; a foreign run's picture "
          "is shown as it logged it. Each run at its final epoch, at each watchdog decision (the epoch before "
          "it and the first epoch after it; D-numbers as in Watchdog decisions) and at each milestone epoch "
          "it reached; runs with a picture at the same epoch stand side by side.")


def section(gallery: Gallery, files_dir: str) -> list[str]:
    """The markdown of the section (empty when no run logs pictures)."""
    if not gallery.runs:
        return []
    lines = ["## Reconstructions", "", _INTRO, "", _tags_line(gallery.runs), ""]
    groups: dict[int | None, list[Picture]] = {}
    for p in gallery.pictures:
        groups.setdefault(p.epoch, []).append(p)
    order = {r.label: i for i, r in enumerate(gallery.runs)}
    for epoch in sorted(groups, key=lambda e: (e is None, e if e is not None else 0)):
        pics = sorted(groups[epoch], key=lambda p: (order.get(p.label, 0), p.step))
        roles: list[str] = []
        for p in pics:
            roles += [x for x in p.roles if x not in roles]
        if epoch is None:
            title = "### Latest pictures (the logs give no epoch)"
        else:
            title = f"### Epoch {epoch + 1}" + (f": {', '.join(roles)}" if roles else "")
        lines += [title, ""]
        for k in range(0, len(pics), COLUMNS):
            chunk = pics[k:k + COLUMNS]
            header = [f"{p.label}: {escape(p.run)}" for p in chunk]
            images = [f"![{escape(f'{p.label} {p.run}: {p.tag} at {_when(p)}')}]({link_path(f'{files_dir}/{p.name}')})"
                      for p in chunk]
            captions = [escape(" · ".join([f"step {p.step}", *p.roles])) for p in chunk]
            lines += [table(header, [images, captions], align="c" * len(chunk)), ""]
    for r in gallery.runs:
        if r.found == 0:
            lines += [f"{r.label} logs {r.count} image(s) as {code_span(r.tag)}, but none could be read (damaged "
                      f"records or an unreadable event file).", ""]
    if gallery.left_out:
        lines += [f"{gallery.left_out} more picture(s) fit these epochs but are not embedded: a report embeds at "
                  f"most {gallery.limit} (each run's final picture first, then watchdog decisions, milestones and "
                  f"other runs at the same epoch). TensorBoard's Images tab shows every one.", ""]
    return lines


def text_only_section(runs: Sequence[RunPictures]) -> list[str]:
    """The section of a report written without figures (a stream, ``plots=False``): no picture is read."""
    if not runs:
        return []
    return ["## Reconstructions", "", _tags_line(runs, "Runs that log pictures")[:-1] + "; this text-only report "
            "embeds none (a stream or a report without plots takes the markdown alone): write it to a file "
            "(`-o report.md`) to see them.", ""]


def _when(p: Picture) -> str:
    return f"epoch {p.epoch + 1}" if p.epoch is not None else f"step {p.step}"
