"""Stream benchmark: ``partial_fit`` side by side with MiniBatchKMeans, and dask-ml's Incremental.

In ONE process, on a Zipf mixture (``make_mixture(n, 32, 1000)``, float32, as the speed and
quality benchmarks):

1. **Batches.** ``--calls`` batches of ``--batch`` rows (default 100 x 4,096) are fed in turn to
   ``StreamingKMeans(k, random_state=0).partial_fit`` and to
   ``MiniBatchKMeans(k, batch_size=batch, n_init=1, random_state=0).partial_fit``; the two
   streams take turns for ``--repeat`` rounds. Each row gives the median over the rounds of
   the milliseconds per call (the whole stream's wall time over the calls: the global solves
   amortized), the median call (a fold without a global solve), the slowest call, and the
   exact cost (float64) of the final centers on all the
   rows over that of ``StreamingKMeans(k, random_state=0).fit`` on all the rows (the numpy
   array, in its default 100,000-row chunks), and over MiniBatchKMeans' stream.
2. **Incremental.** ``dask_ml.wrappers.Incremental(StreamingKMeans(k, random_state=0),
   shuffle_blocks=False).fit(Y)`` (the blocks in their order, so that the run repeats and the
   decay weights below follow it) on a dask array of ``--blocks`` blocks of ``--block-rows`` rows
   (default 40 x 100,000, the issue's case; ``Y`` persisted first), against ``StreamingKMeans(k,
   random_state=0).fit(Y)``, taking turns for ``--repeat`` rounds; the table gives the median
   times, their ratio and the cost ratio. Skipped with a line when dask-ml is not installed.
   With ``--seeds 0,1,2`` the batches table is made for each draw of the data
   (``make_mixture(..., random_state=seed)``), and the targets table gives the median ms per
   call over the draws and the worst cost ratio.
3. **With half_life.** Both again with ``half_life=--half-life`` rows (default 100,000): the
   reference is then ``fit`` with the rows' decay weights (row i of a batch ending at row e
   weighs ``2 ** (-(n - e) / half_life)``), and every cost is the weighted cost.

    python benchmarks/stream.py                      # all four tables
    python benchmarks/stream.py --quick              # small sizes: checks the script
    python benchmarks/stream.py --no-incremental --repeat 3
    python benchmarks/stream.py --no-incremental --repeat 3 --seeds 0,1,2
    python benchmarks/stream.py --file-order --seeds 0,1,2      # real tables in row order

``--file-order`` runs only streams of real tables in their own row order (the R tables of
``quality.py --suite tables``, names to pick some): per case the final cost over ``fit``'s
(seed 0, all rows), the same after one ``refit()`` at the end, and MiniBatchKMeans' stream of
the same batches, medians over ``--seeds`` (the seeds of both streams).

The tables are printed as Markdown with the machine line of ``speed.py`` and the date; a last
table puts the issue's targets side by side (without and with ``half_life``). The time target
(5 ms a call) was set where MiniBatchKMeans took 2 ms; the targets table also gives the ratio
of the two streams' times measured side by side (median over the rounds and draws), which
carries across machines and loads where the milliseconds do not.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import dask  # noqa: E402
import dask.array as da  # noqa: E402
from _common import exact_cost  # noqa: E402
from sklearn.cluster import MiniBatchKMeans  # noqa: E402
from speed import machine, machine_line  # noqa: E402

from dask_streamkm import StreamingKMeans  # noqa: E402
from dask_streamkm.datasets import make_mixture  # noqa: E402


def decay_weights(n_rows, batch, half_life):
    """Each row's weight after a stream of ``batch``-row calls with ``half_life``."""
    if half_life is None:
        return None
    ends = np.minimum((np.arange(n_rows) // batch + 1) * batch, n_rows)
    return 2.0 ** (-(n_rows - ends) / half_life)


def run_stream(make, X, batch):
    """(seconds in all, slowest call, median call, model) of one stream of ``batch``-row
    calls."""
    model, calls = make(), []
    t0 = time.perf_counter()
    for start in range(0, X.shape[0], batch):
        t = time.perf_counter()
        model.partial_fit(X[start : start + batch])
        calls.append(time.perf_counter() - t)
    return time.perf_counter() - t0, max(calls), statistics.median(calls), model


def batches_table(X, k, batch, repeat, half_life, seed=0):
    n_calls = -(-X.shape[0] // batch)
    w = decay_weights(X.shape[0], batch, half_life)
    ours = lambda: StreamingKMeans(k, random_state=0, half_life=half_life)  # noqa: E731
    mbk = lambda: MiniBatchKMeans(k, batch_size=batch, n_init=1, random_state=0)  # noqa: E731
    times = {"ours": [], "mbk": []}
    for _ in range(repeat):
        for name, make in (("ours", ours), ("mbk", mbk)):
            seconds, slowest, median, model = run_stream(make, X, batch)
            times[name].append((seconds, slowest, median))
            if name == "ours":
                ours_model = model
            else:
                mbk_model = model
    t = time.perf_counter()
    fit = StreamingKMeans(k, random_state=0).fit(X, sample_weight=w)
    fit_seconds = time.perf_counter() - t
    ref = exact_cost(X, fit.cluster_centers_, weights=w)
    c_ours = exact_cost(X, ours_model.cluster_centers_, weights=w)
    c_mbk = exact_cost(X, mbk_model.cluster_centers_, weights=w)
    title = f"{n_calls} calls of {batch:,} rows, k={k}, {X.shape[1]} features" + (
        f", half_life={half_life:,}" if half_life else ""
    )
    title += f", data seed {seed}"
    print(f"\n### Batches: {title}\n")
    print(
        "| stream | ms per call, amortized | median call ms | slowest call s | cost / fit "
        "| cost / MBK stream |"
    )
    print("|---|---|---|---|---|---|")
    for name, label, c in (
        ("ours", "StreamingKMeans.partial_fit", c_ours),
        ("mbk", "MiniBatchKMeans.partial_fit", c_mbk),
    ):
        ms = statistics.median(t[0] for t in times[name]) / n_calls * 1e3
        slow = statistics.median(t[1] for t in times[name])
        mid = statistics.median(t[2] for t in times[name]) * 1e3
        print(f"| {label} | {ms:.1f} | {mid:.1f} | {slow:.2f} | {c / ref:.4f} | {c / c_mbk:.4f} |")
    weighted = " with the decay weights" if w is not None else ""
    pairs = zip(times["ours"], times["mbk"], strict=True)
    ratio = statistics.median(a[0] / b[0] for a, b in pairs)
    print(
        f"\nReference: StreamingKMeans.fit{weighted} on all {X.shape[0]:,} rows "
        f"({fit_seconds:.1f} s). Groups in the stream's summary at the end: "
        f"{ours_model.summary_.n_groups:,}. Ratio of ms per call, ours / MBK (median of the "
        f"rounds' ratios): {ratio:.2f}."
    )
    return {
        "ms": statistics.median(t[0] for t in times["ours"]) / n_calls * 1e3,
        "mbk_ms": statistics.median(t[0] for t in times["mbk"]) / n_calls * 1e3,
        "cost_fit": c_ours / ref,
        "cost_mbk": c_ours / c_mbk,
        "ratio": ratio,
    }


def incremental_table(k, blocks, block_rows, repeat, half_life):
    try:
        from dask_ml.wrappers import Incremental
    except ImportError:
        print("\n(dask-ml is not installed: no Incremental table; pip install dask-ml)")
        return None
    n = blocks * block_rows
    Y = make_mixture(n, 32, 1000, chunks=block_rows, random_state=1).persist()
    w = decay_weights(n, block_rows, half_life)
    wd = None if w is None else da.from_array(w, chunks=(block_rows,))
    times = {"inc": [], "fit": []}
    for _ in range(repeat):
        t = time.perf_counter()
        # Blocks in their order: the decay weights of the reference follow it, and the run is
        # the same every time (dask-ml shuffles the blocks, unseeded, by default).
        inc = Incremental(
            StreamingKMeans(k, random_state=0, half_life=half_life), shuffle_blocks=False
        ).fit(Y)
        times["inc"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fit = StreamingKMeans(k, random_state=0).fit(Y, sample_weight=wd)
        times["fit"].append(time.perf_counter() - t)
    X = Y.compute()
    ours = exact_cost(X, inc.estimator_.cluster_centers_, weights=w)
    ratio = ours / exact_cost(X, fit.cluster_centers_, weights=w)
    title = f"{blocks} blocks of {block_rows:,} x 32, k={k}" + (
        f", half_life={half_life:,}" if half_life else ""
    )
    ti, tf = statistics.median(times["inc"]), statistics.median(times["fit"])
    print(f"\n### dask-ml Incremental: {title}\n")
    print(
        "| Incremental(StreamingKMeans).fit s | StreamingKMeans.fit s | time ratio | cost ratio |"
    )
    print("|---|---|---|---|")
    print(f"| {ti:.1f} | {tf:.1f} | {ti / tf:.2f} | {ratio:.4f} |")
    if w is not None:
        print("\nThe fit is given the rows' decay weights; costs are weighted.")
    return {"time_ratio": ti / tf, "cost_ratio": ratio}


def file_order_table(batch, seeds, names=None):
    """Streams of ``batch``-row calls over real tables in their own row order (the R tables
    of ``quality.py --suite tables``): for each case and seed, the final centers' cost over
    that of ``fit`` (seed 0) on all the rows, the same after one :meth:`refit` at the end
    of the stream, and MiniBatchKMeans' stream in the same order; medians over the seeds."""
    from quality import TABLE_CASES

    print(f"\n### File order: {batch:,}-row batches of real tables in their row order\n")
    print(
        "| case | rows x features | k | calls | ms per call | stream / fit (worst) "
        "| stream + refit / fit | refit s | MBK stream / fit |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    summary = {"stream": [], "refit": [], "mbk": []}
    for name, (_, load, k, _) in TABLE_CASES.items():
        if names and name not in names:
            continue
        X = np.ascontiguousarray(load())
        ref = exact_cost(X, StreamingKMeans(k, random_state=0).fit(X).cluster_centers_)
        rows = {"stream": [], "refit": [], "mbk": [], "ms": [], "refit_s": []}
        for seed in seeds:
            ours = functools.partial(StreamingKMeans, k, random_state=seed)
            seconds, _, _, model = run_stream(ours, X, batch)
            rows["ms"].append(seconds / -(-X.shape[0] // batch) * 1e3)
            rows["stream"].append(exact_cost(X, model.cluster_centers_) / ref)
            t = time.perf_counter()
            model.refit()
            rows["refit_s"].append(time.perf_counter() - t)
            rows["refit"].append(exact_cost(X, model.cluster_centers_) / ref)
            mbk = functools.partial(
                MiniBatchKMeans, k, batch_size=batch, n_init=1, random_state=seed
            )
            rows["mbk"].append(exact_cost(X, run_stream(mbk, X, batch)[3].cluster_centers_) / ref)
        med = {key: statistics.median(values) for key, values in rows.items()}
        for key in summary:
            summary[key].append(med[key])
        print(
            f"| {name} | {X.shape[0]:,} x {X.shape[1]} | {k} | {-(-X.shape[0] // batch)} "
            f"| {med['ms']:.1f} | {med['stream']:.4f} ({max(rows['stream']):.4f}) "
            f"| {med['refit']:.4f} | {med['refit_s']:.2f} | {med['mbk']:.4f} |"
        )
    print(
        "\nMedians over the cases of their medians over seeds "
        f"{', '.join(map(str, seeds))}: stream / fit "
        f"{statistics.median(summary['stream']):.4f} (worst case "
        f"{max(summary['stream']):.4f}), with one refit at the end "
        f"{statistics.median(summary['refit']):.4f} ({max(summary['refit']):.4f}), "
        f"MiniBatchKMeans' stream {statistics.median(summary['mbk']):.4f}."
    )


def over_seeds(tables):
    """One batches result from those of several data seeds: the first seed's costs, the
    median ms per call over the seeds, and the worst cost ratio to ``fit``."""
    out = dict(tables[0])
    for key in ("ms", "mbk_ms", "ratio"):
        out[key] = statistics.median(t[key] for t in tables)
    out["cost_fit_worst"] = max(t["cost_fit"] for t in tables)
    return out


def targets_table(results):
    """The issue's targets side by side: one column per half_life setting."""
    cols = list(results)
    print("\n### Targets\n")
    print("| measure | target | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    rows = (
        ("partial_fit ms per call, amortized", "<= 5", "batches", "ms", "{:.1f}"),
        ("MiniBatchKMeans ms per call, amortized", "(2)", "batches", "mbk_ms", "{:.1f}"),
        ("... ours / MiniBatchKMeans, side by side", "(5 / 2)", "batches", "ratio", "{:.2f}"),
        ("stream cost / fit on all rows", "<= 1.002", "batches", "cost_fit", "{:.4f}"),
        ("... worst over the data seeds", "<= 1.002", "batches", "cost_fit_worst", "{:.4f}"),
        ("stream cost / MiniBatchKMeans stream", "< 1", "batches", "cost_mbk", "{:.4f}"),
        ("Incremental time / fit time", "<= 1.5", "incremental", "time_ratio", "{:.2f}"),
        ("Incremental cost / fit cost", "", "incremental", "cost_ratio", "{:.4f}"),
    )
    for label, target, part, key, fmt in rows:
        values = [fmt.format(results[c][part][key]) if results[c].get(part) else "-" for c in cols]
        print(f"| {label} | {target} | " + " | ".join(values) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--blocks", type=int, default=40)
    p.add_argument("--block-rows", type=int, default=100_000)
    p.add_argument("--half-life", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument(
        "--seeds", default="0", help="data seeds of the batches table, comma-separated (0,1,2)"
    )
    p.add_argument("--no-incremental", action="store_true")
    p.add_argument("--no-half-life", action="store_true")
    p.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    p.add_argument(
        "--file-order",
        nargs="*",
        metavar="CASE",
        help="only the streams of real tables in their row order (quality.py's table cases; "
        "all without names), seeds from --seeds",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.k, a.batch, a.calls, a.blocks, a.block_rows, a.half_life = 10, 512, 20, 4, 5_000, 4_000
    dask.config.set(scheduler="threads")
    print(machine_line(machine()))
    seeds = [int(seed) for seed in a.seeds.split(",")]
    if a.file_order is not None:
        file_order_table(a.batch, seeds, a.file_order)
        return
    draws = {
        seed: make_mixture(a.batch * a.calls, 32, 1000, chunks=a.batch, random_state=seed).compute()
        for seed in seeds
    }
    results = {}
    for half_life in (None,) if a.no_half_life else (None, a.half_life):
        column = "no half_life" if half_life is None else f"half_life={half_life:,}"
        tables = [
            batches_table(X, a.k, a.batch, a.repeat, half_life, seed) for seed, X in draws.items()
        ]
        results[column] = {"batches": over_seeds(tables)}
        if not a.no_incremental:
            results[column]["incremental"] = incremental_table(
                a.k, a.blocks, a.block_rows, a.repeat, half_life
            )
    targets_table(results)


if __name__ == "__main__":
    main()
