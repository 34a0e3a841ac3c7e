"""Elbow benchmark: one summary solved for k = 2..12 against one fit per k.

On the synthetic 1M x 32 Zipf mixture (1000 components, chunks of 100k rows; generated once into
memory so that generation is not timed), it measures

- the wall time of ``elbow(X, range(2, 13))`` against one ``StreamingKMeans(n_clusters=12).fit``
  (target: at most 2x), the better of ``--repeat`` runs each;
- for each k, the cost the elbow reports against a separate ``StreamingKMeans(n_clusters=k)``
  fit: the cost bounds (what both report without another pass) and, with ``--exact`` (on by
  default), the true cost of each set of centers over all rows (target: within 2%).

    python benchmarks/elbow.py                 # about 3 minutes on 2 cores
    python benchmarks/elbow.py --rows 200000   # quicker look
    python benchmarks/elbow.py --k 2:30 --check-k 2,12,20,30 --no-exact --repeat 1

With ``summary_size="auto"`` (``max(5 k, 256, min(chunk rows / 32, 100 k))`` groups per chunk)
the elbow's summary is sized for k = 12 (1,200 groups per 100,000-row chunk), at least as fine
as a separate fit at a smaller k uses; a range up to k = 30 shows the effect of a summary sized
for a larger k than the one solved.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import dask  # noqa: E402
import dask.array as da  # noqa: E402
from _common import exact_cost  # noqa: E402

from dask_streamkm import StreamingKMeans, elbow  # noqa: E402
from dask_streamkm.datasets import make_mixture  # noqa: E402

CHUNK_ROWS = 100_000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--components", type=int, default=1000)
    parser.add_argument("--k", default="2:12", help="START:STOP, both included")
    parser.add_argument(
        "--check-k",
        default=None,
        help="values of k that get a separate fit, comma-separated (default: all)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of fit and elbow")
    parser.add_argument(
        "--no-exact",
        dest="exact",
        action="store_false",
        help="skip the true costs (one extra pass per k and method)",
    )
    args = parser.parse_args(argv)
    start, stop = (int(v) for v in args.k.split(":"))
    ks = list(range(start, stop + 1))

    X = make_mixture(
        args.rows, args.features, args.components, chunks=CHUNK_ROWS, random_state=0
    ).compute()
    X = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    print(
        f"data: synthetic {args.rows:,} x {args.features} Zipf mixture, {args.components} "
        f"components, {X.numblocks[0]} chunks; {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, dask {dask.__version__}"
    )

    fit_times, elbow_times, results = [], [], []
    for _ in range(args.repeat):
        # (wall seconds, CPU seconds of this process): CPU time is less sensitive to other
        # processes on a shared machine.
        t0, c0 = time.perf_counter(), time.process_time()
        StreamingKMeans(n_clusters=ks[-1], random_state=0).fit(X)
        fit_times.append((time.perf_counter() - t0, time.process_time() - c0))
        t0, c0 = time.perf_counter(), time.process_time()
        results.append(elbow(X, ks, random_state=0))
        elbow_times.append((time.perf_counter() - t0, time.process_time() - c0))
    best = min(range(args.repeat), key=lambda i: elbow_times[i][0])
    result = results[best]
    t_fit, t_elbow = min(fit_times), elbow_times[best]

    check = set(ks) if args.check_k is None else {int(v) for v in args.check_k.split(",")}
    rows = []
    for i, k in enumerate(ks):
        if k not in check:
            continue
        t0 = time.perf_counter()
        separate = StreamingKMeans(n_clusters=k, random_state=0).fit(X)
        t_sep = time.perf_counter() - t0
        row = {
            "k": k,
            "elbow_bound": result.cost_bound[i],
            "fit_bound": separate.inertia_,
            "solve_s": result.seconds[i],
            "fit_s": t_sep,
        }
        if args.exact:
            row["elbow_exact"] = exact_cost(X, result.centers[k])
            row["fit_exact"] = exact_cost(X, separate.cluster_centers_)
        rows.append(row)

    print()
    head = f"{'k':>3} {'elbow bound':>12} {'fit bound':>12} {'ratio':>7}"
    if args.exact:
        head += f" {'elbow exact':>12} {'fit exact':>12} {'ratio':>7}"
    head += f" {'solve s':>8} {'fit s':>7}"
    print(head)
    worst = 0.0
    for r in rows:
        ratio_b = r["elbow_bound"] / r["fit_bound"]
        line = f"{r['k']:>3} {r['elbow_bound']:>12.5e} {r['fit_bound']:>12.5e} {ratio_b:>7.4f}"
        worst = max(worst, ratio_b)
        if args.exact:
            ratio_e = r["elbow_exact"] / r["fit_exact"]
            worst = max(worst, ratio_e)
            line += f" {r['elbow_exact']:>12.5e} {r['fit_exact']:>12.5e} {ratio_e:>7.4f}"
        line += f" {r['solve_s']:>8.3f} {r['fit_s']:>7.2f}"
        print(line)
    sum_fits = sum(r["fit_s"] for r in rows)
    print()
    print(
        f"one fit at k={ks[-1]}: {t_fit[0]:.2f} s wall, {t_fit[1]:.2f} s CPU   "
        f"elbow k={ks[0]}..{ks[-1]}: {t_elbow[0]:.2f} s wall, {t_elbow[1]:.2f} s CPU   "
        f"[best of {args.repeat}]"
    )
    print(
        f"elbow / fit: {t_elbow[0] / t_fit[0]:.2f} wall, {t_elbow[1] / t_fit[1]:.2f} CPU "
        "(target <= 2)"
    )
    print(
        f"summary of the elbow: {result.model.summary_.n_groups} groups, built in "
        f"{result.summary_seconds:.2f} s; solves for all k: {result.seconds.sum():.2f} s"
    )
    if len(rows) == len(ks):
        print(
            f"{len(ks)} separate fits: {sum_fits:.1f} s wall ({sum_fits / t_elbow[0]:.1f}x the "
            "elbow)"
        )
    else:
        print(f"separate fits at k = {', '.join(str(r['k']) for r in rows)}: {sum_fits:.1f} s wall")
    print(f"worst cost ratio elbow / separate fit: {worst:.4f} (target <= 1.02)")
    print(f"suggested k: {result.suggested_k}")


if __name__ == "__main__":
    main()
