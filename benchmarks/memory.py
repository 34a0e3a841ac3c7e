"""Peak memory of a one-pass fit of a zarr store larger than memory is meant to be.

Writes a zarr store (default 32M x 64 float32, 8 GB) with ``dask-streamkm make-data``, then runs
``dask-streamkm fit`` on it with the threaded scheduler and the store's own chunks in a
subprocess, polling the resident memory of that process and all its children with psutil.
The store is removed afterwards unless ``--keep``.

Run::

    python benchmarks/memory.py                    # 32M x 64, 8 GB on disk under /tmp
    python benchmarks/memory.py --rows 4000000     # a smaller store

``--table parquet`` measures tables instead: it writes a Parquet dataset of ``--gigabytes``
(float64, ``--features`` columns, files of 128 MiB written one at a time), then fits it in
three subprocesses: read with ``dask.dataframe.read_parquet`` (a dask DataFrame of one
partition per file, dask's default here), the same with ``split_row_groups=True`` (a
partition per row group), and as a dask array (``dask_streamkm.io.open_array``, row groups
as chunks). ``--table generated`` fits a
lazily generated dask DataFrame (``dd.from_dask_array`` of random chunks) of that size: its
partition lengths are unknown to dask, so they are counted in one extra pass first::

    python benchmarks/memory.py --table parquet --gigabytes 4 --features 8
    python benchmarks/memory.py --table generated --gigabytes 1.3 --features 8
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, os.path.dirname(__file__))

from _common import run_measured  # noqa: E402

#: The fits of ``--table``: a dask DataFrame read by dask, the same files as a dask array,
#: a generated dask DataFrame. ``{path}``, ``{k}``, ``{rows}``, ``{features}``: the run's.
TABLE_FITS = {
    "dataframe": ("import dask.dataframe as dd\nX = dd.read_parquet({path!r})\n"),
    "dataframe-row-groups": (
        "import dask.dataframe as dd\nX = dd.read_parquet({path!r}, split_row_groups=True)\n"
    ),
    "array": ("from dask_streamkm.io import open_array\nX = open_array({path!r})\n"),
    "generated": (
        "import dask.array as da, dask.dataframe as dd\n"
        "x = da.random.default_rng(0).normal(size=({rows}, {features}), chunks=(500_000, -1))\n"
        "X = dd.from_dask_array(x, columns=[f'c{{i}}' for i in range({features})])\n"
    ),
}
TABLE_FIT_TAIL = (
    "import time\n"
    "from dask_streamkm import StreamingKMeans\n"
    "t0 = time.perf_counter()\n"
    "km = StreamingKMeans({k}, random_state=0).fit(X)\n"
    "print(type(X).__name__, km.n_rows_seen_, round(time.perf_counter() - t0, 1), flush=True)\n"
)


def write_parquet(path, gigabytes, features, file_bytes=128 * 2**20, seed=0):
    """A Parquet dataset of about ``gigabytes`` of float64 rows of a 20-blob mixture, written
    one file at a time (memory: one file). Returns the number of rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    rows_per_file = file_bytes // (8 * features)
    n_files = max(1, round(gigabytes * 1e9 / file_bytes))
    centers = np.random.default_rng(seed).normal(scale=5.0, size=(20, features))
    names = [f"c{i}" for i in range(features)]
    for i in range(n_files):
        rng = np.random.default_rng([seed, i])
        data = centers[rng.integers(0, 20, rows_per_file)]
        data += rng.standard_normal(data.shape)
        table = pa.table(dict(zip(names, data.T, strict=True)))
        pq.write_table(table, path / f"part-{i:05d}.parquet", row_group_size=rows_per_file // 4)
    return n_files * rows_per_file


def table_main(args):
    """``--table``: peak RSS of fitting tables (see the module docstring)."""
    workdir = Path(tempfile.mkdtemp(prefix="dask-streamkm-memory-"))
    path = workdir / "table"
    rows = int(args.gigabytes * 1e9) // (8 * args.features)
    results = {
        "table": args.table,
        "features": args.features,
        "k": args.k,
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.machine()}",
        "date": datetime.date.today().isoformat(),
    }
    try:
        if args.table == "parquet":
            t0 = time.perf_counter()
            rows = write_parquet(path, args.gigabytes, args.features)
            results["write_seconds"] = round(time.perf_counter() - t0, 1)
            fits = ("dataframe", "dataframe-row-groups", "array")
        else:
            fits = ("generated",)
        results.update(rows=rows, gigabytes=round(rows * args.features * 8 / 1e9, 2))
        print(f"{rows:,} x {args.features} float64 ({results['gigabytes']} GB)", flush=True)
        for name in fits:
            code = (TABLE_FITS[name] + TABLE_FIT_TAIL).format(
                path=str(path), k=args.k, rows=rows, features=args.features
            )
            rc, seconds, peak, out, err = run_measured([sys.executable, "-c", code])
            if rc:
                sys.exit(f"{name} fit failed: {err.strip()}")
            results[f"{name}_seconds"] = round(seconds, 1)
            results[f"{name}_peak_mb"] = round(peak / 2**20)
            print(f"{name}: {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB ({out.strip()})")
        if args.table == "parquet":
            ratio = results["dataframe_peak_mb"] / results["array_peak_mb"]
            results["dataframe_over_array_peak"] = round(ratio, 2)
        print(json.dumps(results))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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
    parser.add_argument(
        "--table",
        choices=("parquet", "generated"),
        default=None,
        help="measure a table instead of a zarr store (see the module docstring)",
    )
    parser.add_argument("--gigabytes", type=float, default=4.0, help="size of --table data")
    args = parser.parse_args(argv)
    if args.table:
        return table_main(args)

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
            "--chunks",  # the store's own chunks
            str(args.chunks),
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
