"""Where the one pass loses at large k: the summary's resolution, and what its statistics know.

The final solve moves each group of the summary whole, so a group that straddles the borders
of the final centers costs what Lloyd on its rows would still gain. Three measurements on a
case of ``quality.py`` (default GloVe 50d, 100,000 words, k=500), ratios to the case's cached
``KMeans`` reference, single-thread CPU seconds (``process_time`` with one BLAS/OpenMP thread
and ``os.cpu_count`` forced to 1, so that a shared machine's load does not enter):

- ``sizes``: fits with ``summary_size`` = each size (0: "auto"), each beside
  ``MiniBatchKMeans(batch_size=4096, n_init=3)``: the ratio and the CPU time over its;
- ``straddle``: for a tree-leaf summary of one size and its solve: the share of rows whose
  nearest final center is not their group's, how many of those go to the group's second
  nearest center, and the cost of Lloyd on every row from the solve's centers (what the
  rows would still give);
- ``models``: centers moved by Lloyd steps on the groups taken as spread out (isotropic
  Gaussian of the group's own spread, each group's K directions among its t nearest
  centers) against the two-nearest split of ``_search.polish_summary``, and the cosine
  between each model's first step and the first Lloyd step on the rows.

    python benchmarks/resolution.py sizes --case glove-k500 --sizes 0 20000 25000 30000 \
        --seeds 0 1 2
    python benchmarks/resolution.py straddle --case glove-k500 --size 10000
    python benchmarks/resolution.py models --case glove-k500 --size 10000

Run it with ``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1`` (the script forces one core for the
library's own thread choices).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.cpu_count = lambda: 1  # the library's threads and restarts on one core: CPU time = work

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _common import CHUNK_ROWS, exact_cost, reference_path  # noqa: E402
from quality import CASES  # noqa: E402


def load_case(name):
    """(X, k, reference cost) of a ``quality.py`` case whose reference is cached."""
    _, load, k, ref_n_init = CASES[name]
    path = reference_path(name, ref_n_init)
    if not path.exists():
        raise SystemExit(f"no cached reference for {name}: run quality.py --cases {name} first")
    return load(), k, json.loads(path.read_text())["inertia"]


def sizes(name, sizes_, seeds):
    import dask
    import dask.array as da
    from sklearn.cluster import MiniBatchKMeans

    from dask_streamkm import StreamingKMeans

    X, k, ref = load_case(name)
    Xd = da.from_array(X, chunks=(CHUNK_ROWS, -1))
    for seed in seeds:
        t0 = time.process_time()
        mbk = MiniBatchKMeans(n_clusters=k, batch_size=4096, n_init=3, random_state=seed).fit(X)
        t_mbk = time.process_time() - t0
        ratio = exact_cost(X, mbk.cluster_centers_) / ref
        print(f"{name} seed {seed} MiniBatchKMeans: {ratio:.4f}")
        for size in sizes_:
            t0 = time.process_time()
            with dask.config.set(scheduler="sync"):
                model = StreamingKMeans(
                    n_clusters=k, random_state=seed, summary_size=size or "auto"
                ).fit(Xd)
            t = time.process_time() - t0
            ratio = exact_cost(X, model.cluster_centers_) / ref
            print(
                f"{name} seed {seed} groups {model.summary_.n_groups}: {ratio:.4f}, "
                f"CPU {t:.2f} s = {t / t_mbk:.2f} x MiniBatchKMeans",
                flush=True,
            )


def leaf_summary(X, size, seed):
    """A tree-leaf summary of X (as the fit's leaf) and each row's group."""
    from dask_streamkm._tree import tree_labels
    from dask_streamkm.summary import Summary

    labels, n_groups = tree_labels(X, size, None, np.random.default_rng(seed))
    _, group = np.unique(labels, return_inverse=True)
    return Summary.from_points(X, None, labels=labels, n_groups=n_groups), group


def straddle(name, size, seed):
    from dask_streamkm._distances import nearest
    from dask_streamkm._lloyd import lloyd
    from dask_streamkm._runner import solve_summary
    from dask_streamkm._search import _two_nearest

    X, k, ref = load_case(name)
    summary, group = leaf_summary(X, size, seed)
    centers, _, _ = solve_summary(summary, k, n_init="auto", max_iter=300, tol=1e-4, seed=seed)
    own, dist = nearest(X.astype(np.float64), centers)
    first, _, second, _ = _two_nearest(np.asarray(summary.centroids), centers)
    off = own != first[group]
    to_second = off & (own == second[group])
    print(f"{name}: {summary.n_groups} groups, solve {exact_cost(X, centers) / ref:.4f}")
    print(f"rows off their group's center {off.mean():.4f}", end=" ")
    print(f"(to its second nearest {to_second.mean():.4f})")
    print(f"groups with a row off {np.bincount(group, off).astype(bool).mean():.4f}")
    rows_with_groups = np.sum((X - centers[first[group]]) ** 2)
    print(f"cost with every row on its group's center {rows_with_groups / ref:.4f}")
    for n_iter in (1, 3, 10):
        moved, _, _, _ = lloyd(X, centers, None, max_iter=n_iter, tol=0.0)
        print(f"Lloyd on every row, {n_iter} iterations: {exact_cost(X, moved) / ref:.4f}")


def gaussian_lloyd(P, w, spread, centers, n_dirs, n_near, n_iter, rng):
    """Lloyd steps on groups taken as isotropic Gaussians: each group's weight is split over
    ``n_dirs`` antithetic orthonormal directions (norm sqrt(d), shared by all groups, drawn
    again each step), each going to the nearest of the group's ``n_near`` nearest centers;
    a center moves to the mean of what it received (the offsets included)."""
    from scipy import sparse

    m, d = P.shape
    k = centers.shape[0]
    origin = w @ P / w.sum()
    P, centers = P - origin, centers - origin
    p_sq = np.einsum("ij,ij->i", P, P)
    rows = np.arange(m)
    for _ in range(n_iter):
        n_blocks = -(-n_dirs // 2 // d)
        blocks = [np.linalg.qr(rng.standard_normal((d, d)))[0].T for _ in range(n_blocks)]
        half = np.concatenate(blocks)[: n_dirs // 2] * np.sqrt(d)
        Z = np.concatenate([half, -half])
        D = p_sq[:, None] - 2.0 * P @ centers.T + np.einsum("ij,ij->i", centers, centers)
        near = np.argpartition(D, n_near - 1, axis=1)[:, :n_near]
        zc = (Z @ centers.T)[:, near].transpose(1, 0, 2)  # (m, dirs, near)
        score = np.take_along_axis(D, near, 1)[:, None, :] - 2.0 * spread[:, None, None] * zc
        to = np.take_along_axis(near, np.argmin(score, axis=2), 1).ravel()
        share = np.repeat(w / Z.shape[0], Z.shape[0])
        sums = sparse.csr_matrix((share, (to, np.repeat(rows, Z.shape[0]))), shape=(k, m)) @ P
        offset = np.repeat(w * spread / Z.shape[0], Z.shape[0])
        cols = np.tile(np.arange(Z.shape[0]), m)
        sums += sparse.csr_matrix((offset, (to, cols)), shape=(k, Z.shape[0])) @ Z
        mass = np.bincount(to, share, k)
        centers = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], centers)
    return centers + origin


def models(name, size, seed):
    from dask_streamkm._lloyd import lloyd
    from dask_streamkm._search import group_spread, polish_summary

    X, k, ref = load_case(name)
    summary, _ = leaf_summary(X, size, seed)
    centers, _, _ = summary.solve(k, n_init="auto", seed=seed)
    P, w = np.asarray(summary.centroids), np.asarray(summary.weights)
    spread = group_spread(w, np.asarray(summary.group_sse), X.shape[1])
    step, _, _, _ = lloyd(X, centers, None, max_iter=1, tol=0.0)
    true_step = (step - centers).ravel()

    def show(label, moved, seconds):
        s = (moved - centers).ravel()
        cos = s @ true_step / max(np.linalg.norm(s) * np.linalg.norm(true_step), 1e-300)
        ratio = exact_cost(X, moved) / ref
        print(f"{label}: {ratio:.4f} ({seconds:.2f} s CPU), first step cos {cos:.2f}")

    ratio = exact_cost(X, centers) / ref
    print(f"{name}: {summary.n_groups} groups, solve without the polish {ratio:.4f}")
    show("Lloyd on every row, one step", step, 0.0)
    t0 = time.process_time()
    polished = polish_summary(summary, centers)
    show("two-nearest split (polish_summary)", polished, time.process_time() - t0)
    for n_dirs, n_near, n_iter in ((64, 16, 1), (64, 16, 10)):
        t0 = time.process_time()
        rng = np.random.default_rng(seed)
        moved = gaussian_lloyd(P, w, spread, centers, n_dirs, n_near, n_iter, rng)
        label = f"Gaussian groups, {n_dirs} directions, {n_near} nearest, {n_iter} steps"
        show(label, moved, time.process_time() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("sizes", "straddle", "models"))
    parser.add_argument("--case", default="glove-k500", choices=list(CASES))
    parser.add_argument("--sizes", nargs="*", type=int, default=[0, 20000, 25000, 30000])
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    args = parser.parse_args(argv)
    if args.what == "sizes":
        sizes(args.case, args.sizes, args.seeds)
    elif args.what == "straddle":
        straddle(args.case, args.size, args.seeds[0])
    else:
        models(args.case, args.size, args.seeds[0])


if __name__ == "__main__":
    main()
