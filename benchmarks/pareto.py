"""Time against cost, per case: our settings beside the peers a user would reach for.

For each case of ``quality.py`` (default: ``--suite public``) every method fits the same rows,
the methods taking turns in each of ``--repeat`` rounds (default 2); the table gives each
method's best wall time and its cost over all rows as a ratio to the case's cached
``KMeans(n_init=10)`` reference (fewer restarts where the case says so). Methods:

- ours: ``StreamingKMeans`` defaults; preset fast (``summary_size=4 k, n_init=1``);
  ``refine_passes=1``. Every row is counted in the summary.
- ``MiniBatchKMeans(batch_size=4096, n_init=3)``; ``KMeans(n_init=1)``;
- ``faiss.Kmeans(niter=25)`` with 256 and 2048 rows per centroid (``max_points_per_centroid``);
- ``SuperKMeans`` (pip ``superkmeans``) with its defaults and with ``sampling_fraction=1.0``
  and no cap on rows per cluster.

A peer that trains on a sample of the rows on a case is marked "sampling" there. Per case it
prints the checks of the suite's targets: is any peer both faster (below 0.9x our defaults'
time) and better (ratio lower by more than 0.0005)? and our time over MiniBatchKMeans'.
With ``--out DIR`` it writes one time-vs-ratio figure per case (``pareto-CASE.png``), the
table (``pareto.md``) and the rows (``pareto.json``).

    python benchmarks/pareto.py --out pareto-out                  # the public suite
    python benchmarks/pareto.py --cases glove-k500 mnist-k10 --out pareto-out
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import dask  # noqa: E402
import sklearn  # noqa: E402
from _common import exact_cost, reference  # noqa: E402

from dask_streamkm import StreamingKMeans  # noqa: E402

CORES = os.cpu_count() or 1
#: A peer dominates our defaults when it takes below this share of our time ...
FASTER = 0.9
#: ... and its ratio to the reference is lower than ours by more than this.
BETTER = 0.0005


# --------------------------------------------------------------------------- the methods


def _ours(**params):
    def fit(X, k, seed):
        with dask.config.set(scheduler="threads", num_workers=CORES):
            # The in-memory array as a user passes it (chunked at 100,000 rows).
            model = StreamingKMeans(n_clusters=k, random_state=seed, **params).fit(X)
        return model.cluster_centers_, X.shape[0]

    return fit


def _ours_fast(X, k, seed):
    return _ours(summary_size=4 * k, n_init=1)(X, k, seed)


def _minibatch(X, k, seed):
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(n_clusters=k, batch_size=4096, n_init=3, random_state=seed).fit(X)
    return model.cluster_centers_, X.shape[0]


def _kmeans1(X, k, seed):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit(X).cluster_centers_, X.shape[0]


def _faiss(rows_per_centroid):
    def fit(X, k, seed):
        import faiss

        km = faiss.Kmeans(
            X.shape[1], k, niter=25, seed=seed, max_points_per_centroid=rows_per_centroid
        )
        km.train(np.ascontiguousarray(X, dtype=np.float32))
        return km.centroids, min(X.shape[0], rows_per_centroid * k)

    return fit


def _superkmeans(every_row):
    def fit(X, k, seed):
        from superkmeans import SuperKMeans

        data = np.ascontiguousarray(X, dtype=np.float32)
        params = (
            {"sampling_fraction": 1.0, "max_points_per_cluster": X.shape[0]} if every_row else {}
        )
        model = SuperKMeans(n_clusters=k, dimensionality=X.shape[1], seed=seed, **params)
        centers = model.train(data)
        # Its flat mode (up to 100,000 rows) trains on a sample, 256 rows per cluster at most;
        # ``sampled_indices`` is None where no sampling was applied.
        sampled = model.sampled_indices
        return np.asarray(centers), X.shape[0] if sampled is None else len(sampled)

    return fit


#: (key, label, module needed or None, fit) in the order they run; ``fit(X, k, seed)``
#: returns (centers, rows trained on).
METHODS = [
    ("ours", "ours (defaults)", None, _ours()),
    ("ours_fast", "ours preset fast", None, _ours_fast),
    ("ours_r1", "ours refine_passes=1", None, _ours(refine_passes=1)),
    ("minibatch", "MiniBatchKMeans(4096, n_init=3)", None, _minibatch),
    ("faiss256", "faiss niter=25, 256/centroid", "faiss", _faiss(256)),
    ("faiss2048", "faiss niter=25, 2048/centroid", "faiss", _faiss(2048)),
    ("kmeans1", "KMeans(n_init=1)", None, _kmeans1),
    ("superkmeans", "SuperKMeans defaults", "superkmeans", _superkmeans(False)),
    ("superkmeans_all", "SuperKMeans sampling_fraction=1.0", "superkmeans", _superkmeans(True)),
]
OURS = ("ours", "ours_fast", "ours_r1")


def available(methods, only=None):
    """The methods to run and, for each left out, why (a module that cannot be imported)."""
    run, skipped = [], {}
    for key, label, module, fit in methods:
        if only is not None and key not in only:
            continue
        if module is not None and importlib.util.find_spec(module) is None:
            skipped[key] = f"{label}: left out, `import {module}` fails (pip install {module})"
            continue
        run.append((key, label, fit))
    return run, skipped


# --------------------------------------------------------------------------- one case


def run_case(name, case, *, repeat, seed, only=None):
    """Every method on one case; rows of {key, label, seconds (best), ratio, sampling}."""
    title, load, k, ref_n_init = case
    X = load()
    ref = reference(name, X, k, True, n_init=ref_n_init)
    run, skipped = available(METHODS, only)
    times = {key: [] for key, _, _ in run}
    costs, rows_used = {}, {}
    for _ in range(repeat):
        for key, _, fit in run:
            t0 = time.perf_counter()
            centers, used = fit(X, k, seed)
            times[key].append(time.perf_counter() - t0)
            if key not in costs:
                costs[key] = exact_cost(X, centers)
                rows_used[key] = used
    rows = [
        {
            "key": key,
            "label": label,
            "seconds": min(times[key]),
            "runs": times[key],
            "ratio": costs[key] / ref["inertia"],
            "sampling": rows_used[key] < X.shape[0],
            "rows": int(rows_used[key]),
        }
        for key, label, _ in run
    ]
    return {
        "case": name,
        "title": title,
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "k": k,
        "ref_n_init": ref_n_init,
        "ref_cached": bool(ref.get("cached")),
        "rows": rows,
        "skipped": skipped,
    }


def checks(result):
    """The targets' checks on one case: the peers that dominate our defaults (faster below
    ``FASTER`` x our time and better by more than ``BETTER``), and our time over
    MiniBatchKMeans' (None when either did not run)."""
    by_key = {r["key"]: r for r in result["rows"]}
    ours = by_key.get("ours")
    if ours is None:
        return [], None
    dominating = [
        r["label"]
        for r in result["rows"]
        if r["key"] not in OURS
        and r["seconds"] < FASTER * ours["seconds"]
        and r["ratio"] < ours["ratio"] - BETTER
    ]
    mbk = by_key.get("minibatch")
    return dominating, (ours["seconds"] / mbk["seconds"] if mbk else None)


def case_table(result):
    """The markdown table of one case and its checks' lines."""
    ref = f"KMeans(n_init={result['ref_n_init']})"
    lines = [
        f"### {result['case']}: {result['title']}, {result['n']:,} x {result['d']}, "
        f"k={result['k']} (reference {ref})",
        "",
        "| method | best s | ratio to reference | rows trained on |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        label = r["label"] + (" (sampling)" if r["sampling"] else "")
        lines.append(f"| {label} | {r['seconds']:.2f} | {r['ratio']:.4f} | {r['rows']:,} |")
    lines.append("")
    lines.extend(result["skipped"].values())
    dominating, vs_mbk = checks(result)
    lines.append(
        f"peers faster (< {FASTER}x our time) and better (ratio lower by > {BETTER}): "
        + (", ".join(dominating) if dominating else "none")
    )
    if vs_mbk is not None:
        lines.append(f"our time / MiniBatchKMeans' time: {vs_mbk:.2f} (target <= 1.5)")
    return "\n".join(lines)


def figure(result, path):
    """One time (log) against ratio scatter of the case's methods, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    ratios = sorted(r["ratio"] for r in result["rows"])
    # Outliers (a peer stuck in a poor basin) would flatten the others: they sit at the top
    # edge, their ratio in the legend.
    top = min(ratios[-1], ratios[0] + max(0.05, 3 * (ratios[len(ratios) // 2] - ratios[0])))
    for i, r in enumerate(result["rows"]):
        ours = r["key"] in OURS
        color = f"C{i % 10}"
        label = r["label"] + (" (sampling)" if r["sampling"] else "")
        ax.scatter(
            r["seconds"],
            min(r["ratio"], top),
            s=70 if ours else 45,
            marker="o" if ours else ("^" if r["sampling"] else "s"),
            facecolors="none" if r["sampling"] else color,
            edgecolors=color,
            linewidths=1.5,
            label=f"{label}: {r['seconds']:.2f} s, {r['ratio']:.4f}",
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel("wall time, s (best of the rounds)")
    ax.set_ylabel(f"cost / KMeans(n_init={result['ref_n_init']})")
    ax.set_title(f"{result['case']}: {result['n']:,} x {result['d']}, k={result['k']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_line():
    return (
        f"{platform.machine()}, {CORES} cores, python {platform.python_version()}, "
        f"sklearn {sklearn.__version__}, "
        f"{datetime.now(UTC).isoformat(timespec='minutes')}, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )


def main(argv=None):
    import quality

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None, choices=list(quality.CASES))
    parser.add_argument("--suite", choices=list(quality.SUITES), default="public")
    parser.add_argument("--methods", nargs="*", default=None, choices=[m[0] for m in METHODS])
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best time is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder for the figures, pareto.md and pareto.json")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat should be at least 1 (got {args.repeat}); use --repeat 2")
    names = args.cases if args.cases else quality.SUITES[args.suite]
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results, text = [], []
    for name in names:
        result = run_case(
            name, quality.CASES[name], repeat=args.repeat, seed=args.seed, only=args.methods
        )
        results.append(result)
        text.append(case_table(result))
        print(text[-1] + "\n", flush=True)
        if out is not None:
            figure(result, out / f"pareto-{name}.png")
    footer = f"machine: {machine_line()}; best of {args.repeat} rounds, seed {args.seed}"
    print(footer)
    if out is not None:
        (out / "pareto.md").write_text("\n\n".join(text) + f"\n\n{footer}\n")
        (out / "pareto.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
