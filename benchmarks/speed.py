"""Speed benchmark: StreamingKMeans side by side with the CPU k-means peers, on the same data.

In ONE process, on the same in-memory float32 data, each method is timed in turn:

- ``StreamingKMeans(n_clusters=k, random_state=0)`` (defaults) and the preset "preset fast",
  ``StreamingKMeans(n_clusters=k, random_state=0, summary_size=4*k, n_init=1)`` (the README's
  named faster setting), both fitted on a dask array of 100,000-row chunks with the threaded
  scheduler on all cores;
- ``sklearn.cluster.KMeans(n_init=10)``, the reference (``n_init=3`` on the k=500 case, to keep
  the run short; the table says so);
- ``sklearn.cluster.MiniBatchKMeans(batch_size=4096)``, its default fit;
- ``dask_ml.cluster.KMeans(n_clusters=k, random_state=0)`` on the same dask array;
- ``faiss.Kmeans(d, k, niter=25, seed=0).train(X)`` (its defaults otherwise: faiss trains on a
  sample of at most 256 rows per centroid), and, as an extra row for reference, the same with
  ``max_points_per_centroid`` large enough that faiss trains on every row.

Each row gives the wall time of the fit, the peak memory (a background thread samples the
process's RSS with psutil every 10 ms; the figure is the peak minus the RSS just before the
method started), the exact inertia of the returned centers on all rows (float64, in row blocks)
and its ratio to the reference's. Peers that are not installed are skipped with a line saying
so. The floor is one blocked pass of distances from every row to k centers (k random rows) with
argmin, ``dask_streamkm._distances.nearest`` on the float32 data with BLAS threads = cores (best
of 3). It is timed again at the start of every round of fits (``--repeat``: each round fits
every method once), and a method's multiple of the floor is the median over the rounds of its
fit's time over that round's floor, so that a slow spell of a shared machine falls on both.

The scaling table fits ``StreamingKMeans(n_clusters=100, random_state=0)`` on
``make_mixture(n, 32, 1000, chunks=100_000)`` left lazy (generated chunk by chunk inside the
fit, never computed first) for n = 1M, 4M, 16M, and checks that time grows linearly (16M within
1.3x of 16 x the 1M time) and that peak memory stays flat (16M within 1.2x of 1M).

    python benchmarks/speed.py                      # both cases and the scaling table
    python benchmarks/speed.py --cases 1m32 --no-scaling
    python benchmarks/speed.py --cases --scaling    # only the scaling table
    python benchmarks/speed.py --skip-reference     # no sklearn KMeans; ratios to the best row
    python benchmarks/speed.py --quick              # 20k rows, k=10, every peer: checks the script
    python benchmarks/speed.py --json speed.json    # also write every measurement as JSON

Every table is printed as Markdown with the machine (cores, RAM, CPU model), the library
versions and the date.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import psutil  # noqa: E402
import sklearn  # noqa: E402
from _common import PeakRSS, exact_cost, trim_heap  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

import dask_streamkm  # noqa: E402
from dask_streamkm import StreamingKMeans  # noqa: E402
from dask_streamkm._distances import nearest  # noqa: E402
from dask_streamkm.datasets import make_mixture  # noqa: E402

CHUNK_ROWS = 100_000
CORES = os.cpu_count() or 1
MIB = 1 << 20

#: name -> (title, n_samples, n_features, random_state, k, reference n_init)
CASES = {
    "1m32": ("1M x 32 mixture, 1000 components, shuffled", 1_000_000, 32, 0, 100, 10),
    "500k64": ("500k x 64 mixture, 1000 components, shuffled", 500_000, 64, 1, 500, 3),
}
#: Issue 13's aims for the defaults, in multiples of the floor.
FLOOR_AIMS = {"1m32": 10, "500k64": 12}
SCALING_ROWS = (1_000_000, 4_000_000, 16_000_000)
QUICK_ROWS, QUICK_K, QUICK_CHUNK = 20_000, 10, 5_000
QUICK_SCALING_ROWS = (10_000, 40_000, 160_000)


# --------------------------------------------------------------------------- measuring


def floor_seconds(X, k, repeat=3, seed=0):
    """Best-of-``repeat`` time of one blocked distances + argmin pass of X to k random rows."""
    rng = np.random.default_rng(seed)
    centers = np.ascontiguousarray(X[rng.choice(X.shape[0], size=k, replace=False)])
    best = float("inf")
    with threadpool_limits(CORES):
        for _ in range(repeat):
            t0 = time.perf_counter()
            nearest(X, centers)
            best = min(best, time.perf_counter() - t0)
    return best


def floor_multiple(seconds, floors):
    """Median over the rounds of a fit's time over the floor timed at the start of its round
    (``seconds[i]`` and ``floors[i]`` from round i); the median time over the median floor
    when a method did not run in every round."""
    if len(seconds) != len(floors):
        return float(np.median(seconds)) / float(np.median(floors))
    return float(np.median(np.asarray(seconds) / np.asarray(floors)))


# --------------------------------------------------------------------------- the methods


def _streaming(preset, **extra):
    def fit(X, Xd, k):
        params = {"summary_size": 4 * k, "n_init": 1} if preset else dict(extra)
        with dask.config.set(scheduler="threads", num_workers=CORES):
            return StreamingKMeans(n_clusters=k, random_state=0, **params).fit(Xd).cluster_centers_

    return fit


def _sklearn_kmeans(n_init):
    def fit(X, Xd, k):
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, n_init=n_init, random_state=0).fit(X).cluster_centers_

    return fit


def _minibatch(X, Xd, k):
    from sklearn.cluster import MiniBatchKMeans

    return MiniBatchKMeans(n_clusters=k, batch_size=4096, random_state=0).fit(X).cluster_centers_


def _dask_ml(X, Xd, k):
    from dask_ml.cluster import KMeans

    with dask.config.set(scheduler="threads", num_workers=CORES):
        return np.asarray(KMeans(n_clusters=k, random_state=0).fit(Xd).cluster_centers_)


def _faiss(every_row):
    def fit(X, Xd, k):
        import faiss

        extra = {"max_points_per_centroid": -(-X.shape[0] // k) + 1} if every_row else {}
        km = faiss.Kmeans(X.shape[1], k, niter=25, seed=0, **extra)
        km.train(np.ascontiguousarray(X, dtype=np.float32))
        return km.centroids

    return fit


def methods(ref_n_init, skip_reference):
    """(key, label, module needed or None, fit function) in the order they run."""
    rows = [
        ("ours", "StreamingKMeans (defaults)", None, _streaming(False)),
        (
            "ours_fast",
            "StreamingKMeans preset fast (summary_size=4k, n_init=1)",
            None,
            _streaming(True),
        ),
        (
            "ours_stream",
            'StreamingKMeans method="stream" (the streaming leaf, the default before 2026-11-29)',
            None,
            _streaming(False, method="stream"),
        ),
    ]
    if not skip_reference:
        rows.append(
            (
                "reference",
                f"sklearn KMeans(n_init={ref_n_init}) [reference]",
                None,
                _sklearn_kmeans(ref_n_init),
            )
        )
    rows += [
        ("minibatch", "sklearn MiniBatchKMeans(batch_size=4096)", None, _minibatch),
        ("dask_ml", "dask_ml.cluster.KMeans", "dask_ml", _dask_ml),
        ("faiss", "faiss.Kmeans(niter=25) [samples 256 rows per centroid]", "faiss", _faiss(False)),
        ("faiss_all", "faiss.Kmeans(niter=25), every row [extra]", "faiss", _faiss(True)),
    ]
    return rows


def run_case(name, *, quick, skip_reference, chunk_rows, only=None, repeat=1):
    title, n, d, seed, k, ref_n_init = CASES[name]
    if quick:
        n, k = QUICK_ROWS, QUICK_K
        title += f" (quick: {n:,} rows)"
    X = make_mixture(n, d, 1000, chunks=chunk_rows, random_state=seed).compute()
    Xd = da.from_array(X, chunks=(chunk_rows, -1))
    rows = []
    chosen = [m for m in methods(ref_n_init, skip_reference) if only is None or m[0] in only]
    # Repeats take turns (the floor, one fit of each method, then again), so a slow spell of a
    # shared machine falls on every method and on the floor it is divided by; the wall time
    # is the median, the multiple of the floor the median of each round's fit / floor.
    times = {key: [] for key, *_ in chosen}
    floors = []
    for _ in range(repeat - 1):
        floors.append(floor_seconds(X, k))
        for key, _label, module, fit in chosen:
            if module is None or importlib.util.find_spec(module) is not None:
                t0 = time.perf_counter()
                fit(X, Xd, k)
                times[key].append(time.perf_counter() - t0)
    floors.append(floor_seconds(X, k))
    floor = float(np.median(floors))
    print(f"[{name}] {n:,} x {d}, k={k}: floor {floor:.3f} s", file=sys.stderr, flush=True)
    for key, label, module, fit in chosen:
        row = {"key": key, "method": label}
        if module is not None and importlib.util.find_spec(module) is None:
            row["skipped"] = f"{module} is not installed"
            print(f"[{name}] skipped {label}: {row['skipped']}", flush=True)
            rows.append(row)
            continue
        try:
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                centers = fit(X, Xd, k)
                times[key].append(time.perf_counter() - t0)
                row["seconds"] = float(np.median(times[key]))
                row["repeats"] = len(times[key])
        except Exception as exc:  # a peer broken by a version clash must not end the run
            row["failed"] = f"{type(exc).__name__}: {exc}"[:200]
            print(f"[{name}] {label} failed: {row['failed']}", flush=True)
            rows.append(row)
            continue
        row["peak_mib"] = mem.increase / MIB
        row["inertia"] = exact_cost(X, centers)
        print(
            f"[{name}] {label}: {row['seconds']:.2f} s, inertia {row['inertia']:.6g}",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    done = [r for r in rows if "inertia" in r]
    ref = next((r for r in done if r["key"] == "reference"), None)
    base = ref["inertia"] if ref else min(r["inertia"] for r in done)
    for r in done:
        r["ratio"] = r["inertia"] / base
        r["floor_multiple"] = floor_multiple(times[r["key"]], floors)
    return {
        "case": name,
        "title": title,
        "n": n,
        "d": d,
        "k": k,
        "chunk_rows": chunk_rows,
        "reference": f"KMeans(n_init={ref_n_init})" if ref else "best inertia in this run",
        "floor_seconds": floor,
        "floor_rounds": floors,
        "rows": rows,
    }


def run_scaling(rows_list, k, chunk_rows):
    out = []
    for n in rows_list:
        X = make_mixture(n, 32, 1000, chunks=chunk_rows, random_state=0)  # lazy, never computed
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            with dask.config.set(scheduler="threads", num_workers=CORES):
                StreamingKMeans(n_clusters=k, random_state=0).fit(X)
            seconds = time.perf_counter() - t0
        out.append(
            {
                "n": n,
                "k": k,
                "seconds": seconds,
                "seconds_per_million": seconds / (n / 1e6),
                "peak_rss_mib": mem.peak / MIB,
                "peak_increase_mib": mem.increase / MIB,
            }
        )
        print(
            f"[scaling] n={n:,}: {seconds:.2f} s, peak RSS {mem.peak / MIB:.0f} MiB "
            f"(+{mem.increase / MIB:.0f})",
            file=sys.stderr,
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- reporting


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dask": dask.__version__,
        "scikit-learn": sklearn.__version__,
        "dask_streamkm": getattr(dask_streamkm, "__version__", "?"),
    }
    for module in ("dask_ml", "faiss"):
        if importlib.util.find_spec(module) is not None:
            try:
                versions[module] = getattr(__import__(module), "__version__", "?")
            except Exception as exc:  # noqa: BLE001 - a broken peer is reported, not fatal
                versions[module] = f"import failed ({type(exc).__name__})"
        else:
            versions[module] = "not installed"
    blas = sorted(
        {
            f"{i.get('internal_api')} {i.get('version')}"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        }
    )
    return {
        "cores": CORES,
        "ram_gib": psutil.virtual_memory().total / (1 << 30),
        "cpu": model,
        "versions": versions,
        "blas": blas,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
    }


def machine_line(m):
    libs = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (
        f"Machine: {m['cores']} cores, {m['ram_gib']:.1f} GiB RAM, {m['cpu']}; "
        f"BLAS: {', '.join(m['blas']) or '?'}; {libs}; date {m['date']}."
    )


def _secs(seconds):
    return f"{seconds:.2f}" if seconds >= 1 else f"{seconds:.3f}"


def _speedup(rows, fast, slow):
    a, b = rows.get(fast), rows.get(slow)
    if a and b and "seconds" in a and "seconds" in b:
        return b["seconds"] / a["seconds"]
    return None


def print_case(case, m):
    print(f"\n### {case['case']}: {case['title']}, k={case['k']}\n")
    print(
        f"Data: {case['n']:,} x {case['d']} float32 in memory; dask array of "
        f"{case['chunk_rows']:,}-row chunks, threaded scheduler, {CORES} workers. "
        f"Reference for the ratio: {case['reference']}."
    )
    print(
        f"Floor: one blocked pass of distances to k={case['k']} centers with argmin "
        f"(`_distances.nearest`, float32, {CORES} BLAS threads, best of 3, timed at the start "
        f"of each round of fits): median {case['floor_seconds']:.3f} s "
        f"({', '.join(f'{f:.3f}' for f in case.get('floor_rounds', []))}); x floor is the "
        "median of each round's fit / floor.\n"
    )
    print("| method | wall s | x floor | peak memory MiB | inertia | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in case["rows"]:
        if "inertia" not in r:
            why = r.get("skipped") or r.get("failed")
            print(f"| {r['method']} | {'skipped' if 'skipped' in r else 'failed'}: {why} | | | | |")
            continue
        wall = _secs(r["seconds"])
        if r.get("repeats", 1) > 1:
            wall += f" (median of {r['repeats']})"
        print(
            f"| {r['method']} | {wall} | {r['floor_multiple']:.1f} | "
            f"{r['peak_mib']:.0f} | {r['inertia']:.6g} | {r['ratio']:.4f} |"
        )
    print(
        "\nPeak memory: highest RSS of this process (psutil, sampled every 10 ms by a "
        "background thread) minus its RSS just before the method started; the input array "
        "is already in memory and not counted."
    )
    by_key = {r["key"]: r for r in case["rows"]}
    ref_label = case["reference"]
    lines = []
    for key, label in (("ours", "defaults"), ("ours_fast", "preset fast")):
        for peer, peer_label in (
            ("reference", f"sklearn {ref_label}"),
            ("dask_ml", "dask-ml KMeans"),
        ):
            s = _speedup(by_key, key, peer)
            if s is not None:
                lines.append(f"StreamingKMeans {label} vs {peer_label}: {s:.1f}x faster")
    ours = by_key.get("ours", {})
    if "ratio" in ours:
        lines.append(
            f"StreamingKMeans defaults: ratio {ours['ratio']:.4f} (target <= 1.01), "
            f"{ours['floor_multiple']:.1f}x the floor "
            f"(aim <= {FLOOR_AIMS.get(case['case'], 10)}x)"
        )
    old = by_key.get("ours_stream", {})
    if "ratio" in ours and "ratio" in old:
        lines.append(
            f'defaults (tree leaf) against method="stream": '
            f"{old['seconds'] / ours['seconds']:.2f}x as fast, "
            f"ratio {ours['ratio']:.4f} against {old['ratio']:.4f}"
        )
    s_ref, s_dml = _speedup(by_key, "ours", "reference"), _speedup(by_key, "ours", "dask_ml")
    if s_ref is not None:
        lines.append(f"target 15x vs sklearn reference: {'met' if s_ref >= 15 else 'NOT met'}")
    if s_dml is not None:
        lines.append(f"target 10x vs dask-ml: {'met' if s_dml >= 10 else 'NOT met'}")
    for peer in ("reference", "minibatch", "dask_ml", "faiss", "faiss_all"):
        p = by_key.get(peer, {})
        if "inertia" not in p:
            continue
        winners = [
            label
            for key, label in (("ours", "defaults"), ("ours_fast", "preset fast"))
            if "inertia" in by_key.get(key, {})
            and by_key[key]["seconds"] < p["seconds"]
            and by_key[key]["inertia"] <= p["inertia"]
        ]
        verdict = (
            f"beaten (faster and at least as accurate) by {' and '.join(winners)}"
            if winners
            else "NOT beaten on both time and accuracy by either setting"
        )
        lines.append(f"{p['method']}: {verdict}")
    print()
    for line in lines:
        print(f"- {line}")
    print(f"\n{machine_line(m)}")


def print_scaling(rows, m, chunk_rows):
    print(
        f"\n### scaling: StreamingKMeans(n_clusters={rows[0]['k']}, random_state=0) on "
        f"make_mixture(n, 32, 1000, chunks={chunk_rows:,}) left lazy\n"
    )
    print("| n | wall s | s per 1M rows | peak RSS MiB | peak RSS above start MiB |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['seconds']:.2f} | {r['seconds_per_million']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_increase_mib']:.0f} |"
        )
    first, last = rows[0], rows[-1]
    factor = last["n"] / first["n"]
    t_ratio = last["seconds"] / (factor * first["seconds"])
    rss_ratio = last["peak_rss_mib"] / first["peak_rss_mib"]
    inc_ratio = last["peak_increase_mib"] / max(first["peak_increase_mib"], 1e-9)
    print(
        f"\n- time: n={last['n']:,} took {t_ratio:.2f}x of {factor:g} x the n={first['n']:,} "
        f"time: {'within' if t_ratio <= 1.3 else 'NOT within'} 1.3x"
    )
    print(
        f"- memory: peak RSS at n={last['n']:,} is {rss_ratio:.2f}x that at n={first['n']:,}: "
        f"{'within' if rss_ratio <= 1.2 else 'NOT within'} 1.2x (above the RSS at the start "
        f"of each fit: {inc_ratio:.2f}x, {'within' if inc_ratio <= 1.2 else 'NOT within'} 1.2x)"
    )
    print(
        "- Peak RSS: highest RSS of this process (psutil, sampled every 10 ms) during the fit; "
        "the data are generated inside the fit, chunk by chunk."
    )
    print(f"\n{machine_line(m)}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases",
        nargs="*",
        default=list(CASES),
        choices=list(CASES),
        help="side-by-side cases to run (none: only the scaling table)",
    )
    parser.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the scaling table (default: yes)",
    )
    parser.add_argument(
        "--scaling-rows",
        default=None,
        help="comma-separated n for the scaling table (default 1M,4M,16M)",
    )
    parser.add_argument(
        "--skip-reference",
        action="store_true",
        help="no sklearn KMeans; ratios are to the best inertia in the run",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROWS:,} rows, k={QUICK_K}, {QUICK_CHUNK:,}-row chunks, every "
        "peer; scaling on 10k/40k/160k rows: checks the script, not speed",
    )
    parser.add_argument(
        "--methods",
        nargs="*",
        default=None,
        choices=[key for key, *_ in methods(3, False)],
        help="only these rows of the side-by-side table (default: all)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="fit each method this many times, taking turns; wall times are medians",
    )
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat should be at least 1 (got {args.repeat}); use --repeat 3")

    chunk_rows = QUICK_CHUNK if args.quick else CHUNK_ROWS
    if args.scaling_rows:
        scaling_rows = [int(float(v)) for v in args.scaling_rows.split(",")]
    else:
        scaling_rows = list(QUICK_SCALING_ROWS if args.quick else SCALING_ROWS)
    m = machine()
    for module in ("dask_ml", "faiss"):
        if importlib.util.find_spec(module) is None:
            print(
                f"{module} is not installed: its rows are skipped "
                "(pip install 'dask-streamkm[bench]')",
                flush=True,
            )
    result = {"machine": m, "quick": args.quick, "cases": [], "scaling": None}

    def save():
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=1)

    print(f"\n## Speed: StreamingKMeans and CPU peers, one process\n\n{machine_line(m)}")
    for name in args.cases:
        case = run_case(
            name,
            quick=args.quick,
            skip_reference=args.skip_reference,
            chunk_rows=chunk_rows,
            only=args.methods,
            repeat=args.repeat,
        )
        result["cases"].append(case)
        save()
        print_case(case, m)
        sys.stdout.flush()
    if args.scaling:
        trim_heap()
        k = QUICK_K if args.quick else 100
        result["scaling"] = run_scaling(scaling_rows, k, chunk_rows)
        save()
        print_scaling(result["scaling"], m, chunk_rows)


if __name__ == "__main__":
    main()
