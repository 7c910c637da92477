"""Reader benchmark: vaediag.load against tbparse and TensorBoard's data server, same files, same run.

    python -m bench reader                 # 120k and 6M trees, every engine (tbparse on 6M takes minutes)
    python -m bench.reader --skip-tbparse-big --repeat 3

Each engine runs in a fresh Python subprocess that loads the whole tree into one pandas DataFrame with
CRCs checked, and reports its wall time (from just before the import of the reader to the finished
frame), the rows, and its peak RSS (``getrusage``; for the data server the Rust process is measured too).

* ``vaediag``: ``vaediag.load(path)`` (numpy engine; frame with run/tag/term/split/epoch).
* ``tbparse``: ``tbparse.SummaryReader(path, pivot=False, extra_columns={dir_name, wall_time}).scalars``.
* ``dataserver``: the ``server`` binary of the tensorboard-data-server wheel ("RustBoard"), started with
  ``--reload once --samples-per-plugin scalars=all --checksum --port 0 --port-file F --die-after-stdin``,
  waited on until its load cycle finishes, then read with ``ReadScalars`` over its gRPC API
  (``tensorboard.data.proto``) into a DataFrame (run, tag, step, value, wall_time).

Then the tail: one run of the 6M tree is copied, polled once, one epoch (12 tags x 1,000 steps) is
appended, and one more poll must read exactly the appended bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ENGINES", "run_engine", "main"]

ENGINES = ("vaediag", "tbparse", "dataserver")
ROOT = Path(__file__).resolve().parent.parent


def _peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # KiB on Linux


def _engine_vaediag(path: str) -> dict:
    t0 = time.perf_counter()
    import vaediag
    import vaediag.logs

    t1 = time.perf_counter()
    rs = vaediag.load(path)
    f = rs.frame
    secs = time.perf_counter() - t0
    return {"seconds": secs, "import_seconds": t1 - t0, "rows": len(f), "frame_mb": f.memory_usage(deep=True).sum() / 1e6}


def _engine_tbparse(path: str) -> dict:
    t0 = time.perf_counter()
    from tbparse import SummaryReader

    f = SummaryReader(path, pivot=False, extra_columns={"dir_name", "wall_time"}).scalars
    secs = time.perf_counter() - t0
    return {"seconds": secs, "rows": len(f), "frame_mb": f.memory_usage(deep=True).sum() / 1e6}


def _engine_dataserver(path: str) -> dict:
    t0 = time.perf_counter()
    import tempfile

    import grpc
    import numpy as np
    import pandas as pd
    from tensorboard.data.proto import data_provider_pb2 as dp
    from tensorboard.data.proto import data_provider_pb2_grpc as dpg
    from tensorboard_data_server import server_binary

    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen(
            [server_binary(), "--logdir", path, "--reload", "once", "--samples-per-plugin", "scalars=all",
             "--checksum", "--port", "0", "--port-file", str(port_file), "--die-after-stdin", "-v",
             "--host", "127.0.0.1"],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            for line in proc.stderr:  # the load cycle runs once; its end is logged
                if "Finished load cycle" in line:
                    break
            else:
                raise RuntimeError("data server exited before loading")
            port = int(port_file.read_text())
            opts = [("grpc.max_receive_message_length", -1)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
                stub = dpg.TensorBoardDataProviderStub(ch)
                runs = [r.name for r in stub.ListRuns(dp.ListRunsRequest(experiment_id="")).runs]
                cols: dict[str, list] = {"run": [], "tag": [], "step": [], "value": [], "wall_time": []}
                for run in runs:  # one request per run keeps each gRPC message moderate
                    req = dp.ReadScalarsRequest(
                        experiment_id="",
                        plugin_filter=dp.PluginFilter(plugin_name="scalars"),
                        run_tag_filter=dp.RunTagFilter(runs=dp.RunFilter(names=[run])),
                        downsample=dp.Downsample(num_points=1 << 40),
                    )
                    for r in stub.ReadScalars(req).runs:
                        for t in r.tags:
                            n = len(t.data.step)
                            cols["run"].append(np.full(n, r.run_name, dtype=object))
                            cols["tag"].append(np.full(n, t.tag_name, dtype=object))
                            cols["step"].append(np.asarray(t.data.step, dtype=np.int64))
                            cols["value"].append(np.asarray(t.data.value, dtype=np.float64))
                            cols["wall_time"].append(np.asarray(t.data.wall_time, dtype=np.float64))
            f = pd.DataFrame({k: (np.concatenate(v) if v else []) for k, v in cols.items()})
            f["run"] = f["run"].astype("category")
            f["tag"] = f["tag"].astype("category")
            secs = time.perf_counter() - t0
        finally:
            proc.stdin.close()
            proc.wait(timeout=60)
    return {"seconds": secs, "rows": len(f), "frame_mb": f.memory_usage(deep=True).sum() / 1e6,
            "server_peak_mb": _peak_mb(resource.RUSAGE_CHILDREN)}


def _child(engine: str, path: str) -> None:
    fn = {"vaediag": _engine_vaediag, "tbparse": _engine_tbparse, "dataserver": _engine_dataserver}[engine]
    out = fn(path)
    out["peak_mb"] = _peak_mb()
    print(json.dumps(out))


def run_engine(engine: str, path: Path, *, timeout: float = 1800) -> dict:
    """Run one engine on ``path`` in a fresh interpreter; its JSON report (plus wall time of the process)."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.reader", "--child", engine, str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} failed: {proc.stderr.strip().splitlines()[-1:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - t
    return out


def _bench_tree(name: str, path: Path, engines: list[str], repeat: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for engine in engines:
        runs = [run_engine(engine, path) for _ in range(repeat if engine != "tbparse" else 1)]
        best = min(runs, key=lambda r: r["seconds"])
        best["all_seconds"] = [round(r["seconds"], 3) for r in runs]
        results[engine] = best
    base = results.get("tbparse")
    print(f"\n{name}: {path}")
    print(f"{'engine':<11} {'rows':>10} {'seconds':>9} {'x tbparse':>10} {'process s':>10} {'peak MB':>8} {'frame MB':>9} {'peak/frame':>10}")
    for engine, r in results.items():
        ratio = f"{base['seconds'] / r['seconds']:.1f}x" if base else "-"
        extra = f"  (+ server {r['server_peak_mb']:.0f} MB)" if "server_peak_mb" in r else ""
        if "import_seconds" in r:
            extra += f"  (imports {r['import_seconds']:.2f} s, load {r['seconds'] - r['import_seconds']:.2f} s)"
        print(
            f"{engine:<11} {r['rows']:>10,} {r['seconds']:>9.2f} {ratio:>10} {r['process_seconds']:>10.2f} "
            f"{r['peak_mb']:>8.0f} {r['frame_mb']:>9.0f} {r['peak_mb'] / r['frame_mb']:>10.2f}{extra}"
        )
        if len(r["all_seconds"]) > 1:
            print(f"{'':<11} runs: {r['all_seconds']}")
    return results


def _bench_tail(big: Path) -> dict:
    import numpy as np

    from bench.gen import STEPS_PER_EPOCH, TAGS, write_scalar_records
    from vaediag.logs import Tail

    src = big / "lightning_logs" / "version_0"
    dst = big.parent / "tail_run" / "version_0"
    shutil.rmtree(dst.parent, ignore_errors=True)
    shutil.copytree(src, dst)
    try:
        (event_file,) = dst.glob("events.out.tfevents.*")
        tail = Tail(dst)
        t = time.perf_counter()
        first = tail.poll()
        t_first = time.perf_counter() - t
        read0 = tail.bytes_read
        last_step = int(first["step"].max())
        steps = np.repeat(np.arange(last_step + 1, last_step + 1 + STEPS_PER_EPOCH, dtype=np.int64), len(TAGS))
        tags = list(TAGS) * STEPS_PER_EPOCH
        vals = np.linspace(1.0, 0.5, len(steps))
        walls = 1.8e9 + np.arange(len(steps)) * 1e-3
        body = write_scalar_records(tags, steps, vals, walls)
        with open(event_file, "ab") as fh:
            fh.write(body.tobytes())
        t = time.perf_counter()
        new = tail.poll()
        t_poll = time.perf_counter() - t
        out = {
            "initial_rows": len(first), "initial_bytes": read0, "initial_seconds": t_first,
            "appended_bytes": len(body), "poll_bytes": tail.bytes_read - read0, "poll_rows": len(new),
            "poll_seconds": t_poll,
        }
    finally:
        shutil.rmtree(dst.parent, ignore_errors=True)
    print(
        f"\ntail: first poll {out['initial_rows']:,} rows, {out['initial_bytes'] / 1e6:.1f} MB in "
        f"{out['initial_seconds']:.2f} s; after one epoch appended ({out['appended_bytes']:,} bytes): one poll read "
        f"{out['poll_bytes']:,} bytes, {out['poll_rows']:,} rows in {out['poll_seconds'] * 1e3:.1f} ms"
        f" ({'only the new bytes' if out['poll_bytes'] == out['appended_bytes'] else 'MORE THAN THE NEW BYTES'})"
    )
    return out


def _cold_start(path: Path) -> float:
    """Wall time of a fresh interpreter that imports vaediag and loads ``path`` (start-up included)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import vaediag; vaediag.load({str(path)!r})"], check=True, cwd=ROOT)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench reader", description=__doc__.split("\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ", ".join(ENGINES))
    ap.add_argument("--skip-tbparse-big", action="store_true", help="tbparse takes minutes on 6M scalars")
    ap.add_argument("--only", choices=["small", "big"], help="one tree")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine (best is reported; tbparse runs once)")
    args = ap.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    from bench import gen

    gen.main([] if not args.only else ["--only", args.only])
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        ap.error(f"unknown engine(s) {sorted(unknown)} (choose {', '.join(ENGINES)})")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    report = {}
    for name in ("small", "big"):
        if args.only and name != args.only:
            continue
        eng = [e for e in engines if not (name == "big" and e == "tbparse" and args.skip_tbparse_big)]
        report[name] = _bench_tree(name, gen.DATA / name, eng, args.repeat)
    if not args.only or args.only == "small":
        cs = _cold_start(gen.DATA / "small")
        print(f"\ncold start: python -c 'import vaediag; vaediag.load(small)' took {cs:.2f} s wall")
    if not args.only or args.only == "big":
        report["tail"] = _bench_tail(gen.DATA / "big")
    (gen.DATA / "reader_results.json").write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
