"""Scale: a fit over 10^3 to 10^6 tiny chunks against dask's own ``X.sum(axis=0)``.

One run, one table. Each array is a lazily generated mixture (``make_mixture``) of chunks of
64 rows x 4 features; for each size, in a fresh process each (so that the peak RSS is that of
one computation): the seconds to build the array, the fit's seconds and peak client RSS,
the seconds our own graphs took to build (all waves together), the largest graph one wave
submitted, and dask's ``X.sum(axis=0).compute()`` on the same array with its peak RSS.
``StreamingKMeans(n_clusters=4, summary_size=64, random_state=0)``: a chunk of 64 rows is
returned as its rows, so the fit measures the wiring, not the maths.

    python benchmarks/scale.py                       # 1e3, 1e4, 1e5 threads; 3e4 on 2 workers
    python benchmarks/scale.py --sizes 1000 1000000 --cluster-sizes 100000
    python benchmarks/scale.py --sizes 1000 10000 --fit-only-sizes 1000000 --cluster-sizes
    python benchmarks/scale.py --sizes 1000 10000 --cluster-sizes --repeat 3   # medians of 3
    python benchmarks/scale.py --sizes --cluster-sizes --build-only-sizes 1000 1000000
    python benchmarks/scale.py --sizes --cluster-sizes --rate 250 16 --repeat 2

``--build-only-sizes``: a second table, every wave graph of a fit built and dropped (nothing
computed), for the generated array and for an empty zarr store of as many stored chunks.

``--rate MB CHUNKS``: the per-core rate on chunks of real size, the input of the 1 PB model
(:func:`_pb_model`). ``CHUNKS`` chunks of about ``MB`` megabytes of 64 float32 features,
generated lazily inside their tasks as a read would bring them, ``StreamingKMeans(n_clusters=20,
random_state=0)``, on the threaded scheduler and on a ``LocalCluster`` of 2 worker processes of
one thread (distributed's default worker environment), each in a fresh process, against Dask's
``X.sum(axis=0)`` on the same array. CPU seconds are those of the client and every worker
process; the fit's CPU less the sum's is the summary's own work per row (the generation, a
stand-in for the read, taken out); the table ends with what those rates make of 1 PB.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

ROWS, FEATURES = 64, 4
#: The rate rows: features, k and the bytes of the 1 PB model (1 GB chunks of d = 64 float32).
RATE_FEATURES, RATE_K = 64, 20
PB_BYTES, PB_CHUNK_BYTES = 1e15, 1e9


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scheduler(cluster):
    """A Client of a LocalCluster of 2 worker processes x 1 thread, or None (the threaded
    scheduler, set as the default)."""
    import dask

    if not cluster:
        dask.config.set(scheduler="threads")
        return None
    from distributed import Client, LocalCluster

    return Client(
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    )


def _one(n_chunks, what, cluster):
    """Run one measurement in this process; print a JSON line."""

    from dask_streamkm import StreamingKMeans, _waves
    from dask_streamkm.datasets import make_mixture

    t0 = time.perf_counter()
    X = make_mixture(n_chunks * ROWS, FEATURES, 8, chunks=ROWS, random_state=0)
    out = {"n_chunks": n_chunks, "what": what, "array_s": time.perf_counter() - t0}
    client = _scheduler(cluster)
    base = _peak_mib()
    t0 = time.perf_counter()
    if what == "sum":
        X.sum(axis=0).compute()
    else:
        build = {"s": 0.0, "waves": 0, "largest": 0}
        wave_graph = _waves.wave_graph

        def timed(*args, **kwargs):
            start = time.perf_counter()
            graph, n_tasks = wave_graph(*args, **kwargs)
            build["s"] += time.perf_counter() - start
            build["waves"] += 1
            build["largest"] = max(build["largest"], n_tasks)
            return graph, n_tasks

        _waves.wave_graph = timed
        StreamingKMeans(n_clusters=4, summary_size=64, random_state=0).fit(X)
        out.update(build_s=build["s"], waves=build["waves"], largest_wave_tasks=build["largest"])
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = _peak_mib()
    out["rss_before_mib"] = base
    if client is not None:
        client.close()
    print(json.dumps(out), flush=True)


def _process_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rate_one(megabytes, n_chunks, what, cluster):
    """One rate measurement in this process (fit or sum of chunks of real size); a JSON line."""

    from dask_streamkm import StreamingKMeans
    from dask_streamkm.datasets import make_mixture

    rows = int(megabytes * 1e6 // (RATE_FEATURES * 4))
    X = make_mixture(rows * n_chunks, RATE_FEATURES, 1000, chunks=rows, random_state=0)
    client = _scheduler(cluster)

    def cpu():
        workers = client.run(_process_cpu) if client is not None else {}
        return _process_cpu() + sum(workers.values())

    # Warm up imports and pools (in the workers too) on a small array of the same shape.
    small = make_mixture(4 * 10_000, RATE_FEATURES, 1000, chunks=10_000, random_state=1)
    StreamingKMeans(n_clusters=RATE_K, random_state=0).fit(small)
    small.sum(axis=0).compute()
    cpu0, t0 = cpu(), time.perf_counter()
    if what == "rate-fit":
        StreamingKMeans(n_clusters=RATE_K, random_state=0).fit(X)
    else:
        X.sum(axis=0).compute()
    out = {"what": what, "seconds": time.perf_counter() - t0, "cpu_seconds": cpu() - cpu0}
    out.update(rows=X.shape[0], chunk_bytes=rows * RATE_FEATURES * 4, n_chunks=n_chunks)
    if client is not None:
        client.close()
    print(json.dumps(out), flush=True)


def _duration(seconds):
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _pb_model(core_seconds_per_byte, label):
    """One line of the 1 PB model: core-seconds for PB_BYTES at this rate, on 10^2-10^4 cores."""
    total = core_seconds_per_byte * PB_BYTES
    per_chunk = core_seconds_per_byte * PB_CHUNK_BYTES
    spans = ", ".join(f"{_duration(total / n)} on {n:,} cores" for n in (100, 1_000, 10_000))
    return (
        f"- {label}: {per_chunk:.1f} core-seconds per 1 GB chunk, {total:.2g} core-seconds "
        f"for 1 PB: {spans}"
    )


def _rate_table(megabytes, n_chunks, repeat):
    print(
        "\n| scheduler | chunks x MB | fit s | sum s | fit rows/s per core (wall) "
        "| fit CPU s | sum CPU s | rows/s per core, fit CPU less sum CPU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rates = {}
    for cluster in (False, True):
        fits, totals = [], []
        for _ in range(max(1, repeat)):
            fits.append(_run(megabytes, "rate-fit", cluster, n_chunks))
            totals.append(_run(megabytes, "rate-sum", cluster, n_chunks))
        fit, total = _median(fits), _median(totals)
        own = fit["cpu_seconds"] - total["cpu_seconds"]
        name = "2 workers x 1 thread" if cluster else "threads"
        rates[name] = (fit, own)
        print(
            f"| {name} | {n_chunks} x {fit['chunk_bytes'] / 1e6:.0f} | {fit['seconds']:.1f} "
            f"| {total['seconds']:.1f} | {fit['rows'] / (2 * fit['seconds']):,.0f} "
            f"| {fit['cpu_seconds']:.1f} | {total['cpu_seconds']:.1f} "
            f"| {fit['rows'] / own:,.0f} |",
            flush=True,
        )
    print(f"\n1 PB of d = {RATE_FEATURES} float32 in 1 GB chunks, k = {RATE_K}, at these rates:")
    for name, (fit, own) in rates.items():
        nbytes = fit["rows"] * RATE_FEATURES * 4
        print(_pb_model(own / nbytes, f"{name}, the summary's own work (CPU)"))
        print(_pb_model(2 * fit["seconds"] / nbytes, f"{name}, the fit's wall time x 2 cores"))


class _Captured(Exception):
    pass


def _build_only(n_chunks, source):
    """Build (and drop) every wave graph a fit of the array would compute; print a JSON line.

    ``source="zarr"``: an empty zarr store of ``n_chunks`` stored chunks of 64 x 4 on local
    disk (metadata only, nothing is read), opened with ``open_array``: a zarr-backed dask
    array has a one-key layer with the zarr array besides its reads, unlike the generated one.
    """
    import tempfile

    import zarr

    from dask_streamkm import StreamingKMeans, _waves
    from dask_streamkm.datasets import make_mixture
    from dask_streamkm.io import open_array

    if source == "zarr-dask-cull":  # for comparison: Dask's HighLevelGraph.cull in the waves
        from dask.utils import ensure_dict

        _waves.needed_tasks = lambda graph, keys: ensure_dict(graph.cull(keys))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        if source.startswith("zarr"):
            path = f"{folder}/tiny.zarr"
            zarr.create_array(
                path, shape=(n_chunks * ROWS, FEATURES), chunks=(ROWS, FEATURES), dtype="f4"
            )
            X = open_array(path, chunks=ROWS)
        else:
            X = make_mixture(n_chunks * ROWS, FEATURES, 8, chunks=ROWS, random_state=0)
        out = {"n_chunks": n_chunks, "what": source, "array_s": time.perf_counter() - t0}
        wave_graph, captured = _waves.wave_graph, {}

        def capture(*args, **kwargs):
            captured.update(args=args, kwargs=kwargs)
            raise _Captured

        _waves.wave_graph = capture
        try:
            StreamingKMeans(n_clusters=4, summary_size=64, random_state=0).fit(X)
        except _Captured:
            pass
        _waves.wave_graph = wave_graph
        (X, weights, start, stop), kwargs = captured["args"], captured["kwargs"]
        wave = stop - start
        t0 = time.perf_counter()
        for start in range(0, n_chunks, wave):
            graph = wave_graph(X, weights, start, min(start + wave, n_chunks), **kwargs)
            del graph
        out.update(build_s=time.perf_counter() - t0, waves=-(-n_chunks // wave))
        out["peak_rss_mib"] = _peak_mib()
    print(json.dumps(out), flush=True)


def _run(n_chunks, what, cluster, rate_chunks=None):
    cmd = [sys.executable, __file__, "--one", str(n_chunks), what]
    if rate_chunks is not None:
        cmd = [sys.executable, __file__, "--rate-one", str(n_chunks), str(rate_chunks), what]
    if cluster:
        cmd.append("--cluster")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _median(runs):
    """Field by field median of the measurements of one size (its own median for each)."""
    out = dict(runs[0])
    for field, value in runs[0].items():
        if isinstance(value, float):
            out[field] = statistics.median(run[field] for run in runs)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--cluster-sizes", type=int, nargs="*", default=[30_000])
    parser.add_argument(
        "--fit-only-sizes",
        type=int,
        nargs="*",
        default=[],
        help="sizes (threads) where only the fit runs: Dask's sum of 10^6 tiny chunks takes "
        "about half an hour here",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="fit and sum run alternately this many times per size; the table gives medians",
    )
    parser.add_argument(
        "--build-only-sizes",
        type=int,
        nargs="*",
        default=[],
        help="sizes where every wave graph of a fit is built and dropped, nothing computed "
        "(a second table: build time per chunk and client memory)",
    )
    parser.add_argument(
        "--build-source",
        choices=("mixture", "zarr", "zarr-dask-cull"),
        nargs="+",
        default=["mixture", "zarr"],
        help="arrays of the build-only table: the generated mixture and/or an empty zarr store "
        "(zarr-dask-cull: the zarr store with Dask's own HighLevelGraph.cull in each wave, "
        "for comparison)",
    )
    parser.add_argument(
        "--rate",
        nargs=2,
        type=int,
        metavar=("MB", "CHUNKS"),
        help="a third table: the fit's rate per core on CHUNKS chunks of about MB megabytes "
        "(64 float32 features, k=20) on threads and on 2 workers, and the 1 PB model it makes",
    )
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--rate-one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--cluster", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rate_one:
        megabytes, n_chunks, what = args.rate_one
        _rate_one(float(megabytes), int(n_chunks), what, args.cluster)
        return
    if args.one:
        if args.one[1] in ("fit", "sum"):
            _one(int(args.one[0]), args.one[1], args.cluster)
        else:
            _build_only(int(args.one[0]), args.one[1])
        return
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    header = (
        "| scheduler | chunks | array s | build s (per chunk us) | waves | largest wave "
        "| fit s | sum s | fit / sum | fit peak RSS MiB | sum peak RSS MiB |"
    )
    runs = (
        [(n, False, True) for n in args.sizes]
        + [(n, False, False) for n in args.fit_only_sizes]
        + [(n, True, True) for n in args.cluster_sizes]
    )
    if runs:
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
    for n, cluster, with_sum in runs:
        fits, totals = [], []
        for _ in range(max(1, args.repeat)):
            fits.append(_run(n, "fit", cluster))
            if with_sum:
                totals.append(_run(n, "sum", cluster))
        fit, total = _median(fits), _median(totals) if totals else None
        sums = (
            f"{total['seconds']:.1f} | {fit['seconds'] / total['seconds']:.2f}"
            if total
            else "not run | -"
        )
        sum_rss = f"{total['peak_rss_mib']:.0f}" if total else "-"
        print(
            f"| {'2 workers' if cluster else 'threads'} | {n:,} | {fit['array_s']:.2f} "
            f"| {fit['build_s']:.2f} ({1e6 * fit['build_s'] / n:.0f}) | {fit['waves']} "
            f"| {fit['largest_wave_tasks']:,} | {fit['seconds']:.1f} | {sums} "
            f"| {fit['peak_rss_mib']:.0f} | {sum_rss} |",
            flush=True,
        )
    if args.build_only_sizes:
        print("\n| array | chunks | array s | build s (per chunk us) | waves | peak RSS MiB |")
        print("|---|---:|---:|---:|---:|---:|")
    for source in args.build_source if args.build_only_sizes else ():
        for n in args.build_only_sizes:
            runs = [_run(n, source, False) for _ in range(max(1, args.repeat))]
            one = _median(runs)
            print(
                f"| {source} | {n:,} | {one['array_s']:.2f} | {one['build_s']:.2f} "
                f"({1e6 * one['build_s'] / n:.0f}) | {one['waves']} | {one['peak_rss_mib']:.0f} |",
                flush=True,
            )
    if args.rate:
        _rate_table(*args.rate, args.repeat)


if __name__ == "__main__":
    main()
