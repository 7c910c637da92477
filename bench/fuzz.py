"""Fuzz the reader with mutated real event files (``python -m bench fuzz [--cases N] [--seed S]``).

Sources: the event files of tests/fixtures/realworld (Lightning + AntixK logs; the 1 MB one is cut to
its first 64 KiB to keep cases fast) and one generated Lightning-style file. Mutations: bit flips,
truncations, inserted and deleted bytes, huge or random length fields (with and without a valid length
CRC), duplicated and shifted blocks, and files of pure noise. For every case:

* ``vaediag.load`` (numpy engine) must return or raise a ``VaediagError``; anything else is a failure;
* no case may take longer than ``--case-timeout`` seconds (a hang) - checked with an alarm;
* the numpy engine must equal the reference engine (``engine="python"``) on frame, warnings and file
  stats (every ``--compare-every``-th case, the reference being slower);
* reading the file in random small chunks (as a tail does) must give exactly the rows of one read;
* the process's peak RSS must stay bounded (a corrupt length must never be allocated).

Exit status 1 when any case failed; the failing inputs are kept under bench/_data/fuzz_failures/.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import signal
import struct
import tempfile
import time
import traceback
from pathlib import Path

from vaediag.logs.records import masked_crc

__all__ = ["mutate", "main"]

ROOT = Path(__file__).resolve().parent.parent
REALWORLD = ROOT / "tests" / "fixtures" / "realworld"
FAILURES = Path(__file__).resolve().parent / "_data" / "fuzz_failures"


def _offsets(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos + 12 <= len(data):
        out.append(pos)
        pos += 16 + struct.unpack_from("<Q", data, pos)[0]
    return out or [0]


def mutate(data: bytes, rng: random.Random, offsets: list[int]) -> tuple[str, bytes]:
    """One random mutation of an event file; returns (kind, bytes)."""
    b = bytearray(data)
    kind = rng.choice(["flip", "flip", "truncate", "insert", "delete", "length", "length", "block", "noise", "multi"])
    if kind == "noise":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randint(0, 4096)))
    steps = rng.randint(2, 5) if kind == "multi" else 1
    for _ in range(steps):
        k = rng.choice(["flip", "truncate", "insert", "delete", "length", "block"]) if kind == "multi" else kind
        if not b:
            break
        if k == "flip":
            for _ in range(rng.randint(1, 16)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif k == "truncate":
            del b[rng.randrange(len(b)) :]
        elif k == "insert":
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        elif k == "delete":
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 200)]
        elif k == "length":
            start = rng.choice(offsets)
            if start + 12 > len(b):
                continue
            n = rng.choice([2**64 - 1, 2**63, 2**40, 2**32 - 1, 2**31, len(b) * 2, rng.randrange(2**20), 0, 1])
            head = struct.pack("<Q", n)
            b[start : start + 8] = head
            if rng.random() < 0.7:  # a length that passes its CRC: only the file size may bound it
                b[start + 8 : start + 12] = struct.pack("<I", masked_crc(head))
        else:
            i, j = rng.randrange(len(b)), rng.randrange(len(b))
            b[i:i] = b[j : j + rng.randint(1, 2000)]
    return kind, bytes(b)


class _Hang(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise _Hang()


def _sources() -> list[tuple[str, bytes]]:
    out = []
    for f in sorted(REALWORLD.rglob("events.out.tfevents.*")):
        data = f.read_bytes()
        if len(data) > 40:
            out.append((f.relative_to(REALWORLD).as_posix(), data[: 64 << 10]))
    from bench.gen import write_scalar_records

    import numpy as np

    tags = ["loss", "KLD", "val_KLD", "epoch", "lr-Adam", "train/perceptual"] * 50
    steps = np.repeat(np.arange(50, dtype=np.int64) * 37, 6)
    out.append(("generated", write_scalar_records(tags, steps, np.linspace(-3, 3, 300), 1.7e9 + np.arange(300.0)).tobytes()))
    return out


def _chunked_equals_whole(path: Path, rng: random.Random) -> bool:
    import numpy as np

    from vaediag.logs.decode import TagRegistry
    from vaediag.logs.events import EventMeta
    from vaediag.logs.stream import FileCursor

    whole, pieces = FileCursor(path), FileCursor(path)
    r1, r2 = TagRegistry(), TagRegistry()
    a = whole.read(r1, EventMeta())
    b = pieces.read(r2, EventMeta(), chunk=rng.choice([1, 13, 64, 500, 4096]))
    return (
        [r1.names[c] for c in a.codes] == [r2.names[c] for c in b.codes]
        and np.array_equal(a.steps, b.steps)
        and np.array_equal(a.values, b.values, equal_nan=True)
        and np.array_equal(a.wall_times, b.wall_times)
        and (whole.records, whole.bad_crc, whole.truncated_bytes()) == (pieces.records, pieces.bad_crc, pieces.truncated_bytes())
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--compare-every", type=int, default=3, help="compare with the reference engine every N cases")
    ap.add_argument("--case-timeout", type=float, default=10.0)
    args = ap.parse_args(argv)

    import pandas as pd

    import vaediag
    from vaediag.errors import VaediagError

    rng = random.Random(args.seed)
    sources = [(name, data, _offsets(data)) for name, data in _sources()]
    signal.signal(signal.SIGALRM, _alarm)
    tmp = Path(tempfile.mkdtemp(prefix="vaediag-fuzz-"))
    run = tmp / "run"
    run.mkdir()
    target = run / "events.out.tfevents.1700000000.fuzz.1.0"
    vaediag.load(REALWORLD)  # warm up (imports, tables) before measuring memory
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts: dict[str, int] = {}
    failures: list[str] = []
    slowest = 0.0
    compared = chunked = raised = 0
    t_start = time.perf_counter()
    try:
        for case in range(args.cases):
            name, data, offs = sources[case % len(sources)]
            kind, mutated = mutate(data, rng, offs)
            counts[kind] = counts.get(kind, 0) + 1
            target.write_bytes(mutated)
            t = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.case_timeout)
            problem = None
            try:
                rs = vaediag.load(run)
                if case % args.compare_every == 0:
                    ref = vaediag.load(run, engine="python")
                    compared += 1
                    pd.testing.assert_frame_equal(rs.frame, ref.frame)
                    assert rs.warnings == ref.warnings, (rs.warnings, ref.warnings)
                    assert [vars(f) for f in rs.runs["run"].files] == [vars(f) for f in ref.runs["run"].files]
                if case % 5 == 0:
                    chunked += 1
                    assert _chunked_equals_whole(target, rng), "chunked read differs from whole read"
            except VaediagError:
                raised += 1
            except _Hang:
                problem = f"hang (> {args.case_timeout} s)"
            except Exception:  # noqa: BLE001 - the point of a fuzzer: any other exception is a finding
                problem = traceback.format_exc(limit=6)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - t)
            if problem:
                FAILURES.mkdir(parents=True, exist_ok=True)
                keep = FAILURES / f"case{case:06d}_{kind}.tfevents"
                keep.write_bytes(mutated)
                failures.append(f"case {case} ({name}, {kind}) -> {keep}: {problem.strip().splitlines()[-1]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"fuzz: {args.cases:,} cases from {len(sources)} real/generated files in {elapsed:.1f} s "
        f"(slowest case {slowest * 1e3:.0f} ms); mutations: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    print(
        f"  {compared:,} compared with the reference engine, {chunked:,} chunked-vs-whole reads, "
        f"{raised:,} raised a VaediagError; peak RSS {rss0:.0f} -> {rss1:.0f} MB"
    )
    if rss1 > rss0 + 200:
        failures.append(f"peak RSS grew by {rss1 - rss0:.0f} MB: an allocation follows a corrupt length?")
    for f in failures[:20]:
        print("  FAIL", f)
    print(f"  {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
