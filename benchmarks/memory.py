"""Peak memory of a one-pass fit of a zarr store larger than memory is meant to be.

Writes a zarr store (default 32M x 64 float32, 8 GB) with ``dask-streamkm make-data``, then runs
``dask-streamkm fit`` on it with the threaded scheduler and the store's own chunks in a
subprocess, polling the resident memory of that process and all its children with psutil.
The store is removed afterwards unless ``--keep``.

Run::

    python benchmarks/memory.py                    # 32M x 64, 8 GB on disk under /tmp
    python benchmarks/memory.py --rows 4000000     # a smaller store
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def tree_rss(proc):
    """Resident bytes of a process and all its children (0 for those that just ended)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(cmd, interval=0.05):
    """Run ``cmd``; returns (exit status, seconds, peak tree RSS in bytes, stdout, stderr)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        proc, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                peak = max(peak, tree_rss(proc))
            except psutil.Error:
                pass
            time.sleep(interval)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return child.returncode, seconds, peak, out.read(), err.read()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32_000_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--components", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=100_000, help="rows per stored chunk")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--store", default=None, help="zarr store (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="fit an existing --store")
    parser.add_argument("--keep", action="store_true", help="keep the store")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="dask-streamkm-memory-"))
    store = Path(args.store) if args.store else workdir / "data.zarr"
    cli = [sys.executable, "-m", "dask_streamkm.cli"]
    results = {
        "rows": args.rows,
        "features": args.features,
        "gigabytes": args.rows * args.features * 4 / 1e9,
        "chunks": args.chunks,
        "k": args.k,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "machine": f"{platform.system()} {platform.machine()}",
        "date": datetime.date.today().isoformat(),
    }
    try:
        if not args.reuse:
            make = [
                *cli,
                "make-data",
                str(store),
                "--rows",
                str(args.rows),
                "--features",
                str(args.features),
                "--components",
                str(args.components),
                "--chunks",
                str(args.chunks),
                "--quiet",
                "--overwrite",
            ]
            rc, seconds, peak, out, err = run_measured(make)
            if rc:
                sys.exit(f"make-data failed: {err.strip()}")
            results.update(make_data_seconds=round(seconds, 1), make_data_peak_mb=peak / 2**20)
            print(f"make-data: {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB", flush=True)
        fit = [
            *cli,
            "fit",
            str(store),
            "--k",
            str(args.k),
            "--scheduler",
            "threads",
            "--quiet",
            "--out",
            str(workdir / "model.npz"),
        ]
        rc, seconds, peak, out, err = run_measured(fit)
        if rc:
            sys.exit(f"fit failed: {err.strip()}")
        print(out, end="")
        results.update(
            fit_command=" ".join(["dask-streamkm", *fit[3:]]),
            fit_seconds=round(seconds, 1),
            fit_peak_mb=round(peak / 2**20),
        )
        print(
            f"fit: {seconds:.1f} s wall (process included), peak RSS of the process tree "
            f"{peak / 2**20:.0f} MiB"
        )
        print(json.dumps(results))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            if args.store and not args.reuse:
                shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    main()
