"""
Time and cost against scikit-learn
==================================

How long does a fit take, and how good are its centers? This example fits the same in-memory
Gaussian mixture with :class:`~dask_streamkm.StreamingKMeans` (one pass, and one pass plus a
refinement pass) and with scikit-learn's ``KMeans`` and ``MiniBatchKMeans``, then draws wall
time against cost. The cost of every method is the exact sum of squared distances of all rows
to their nearest center, divided by that of ``KMeans(n_init=10)``: below 1 beats it.

The numbers depend on the machine and on what else runs on it; the benchmarks
(``benchmarks/speed.py``, ``benchmarks/quality.py``) measure the same things at scale, with
more peers. Run it as ``python examples/time_vs_cost.py`` (500,000 rows) or with ``--small``
(20,000 rows); ``--out`` sets where the plot goes (default ``time_vs_cost.png``).
"""

# %%
# Settings and data
# -----------------
import argparse
import time

import dask.array as da
import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin_min

from dask_streamkm import StreamingKMeans
from dask_streamkm.datasets import make_mixture

parser = argparse.ArgumentParser(description="time and cost against scikit-learn")
parser.add_argument("--small", action="store_true", help="20,000 rows, for a quick run")
parser.add_argument("--out", default="time_vs_cost.png", help="where to save the plot")
args, _ = parser.parse_known_args()
n_rows = 20_000 if args.small else 500_000
k = 20

X = make_mixture(n_rows, 16, 100, chunks=n_rows // 10, random_state=0).compute()
X_dask = da.from_array(X, chunks=(n_rows // 10, -1))
print(f"X: {X.shape[0]:,} rows x {X.shape[1]} features, k={k}")


def cost(centers):
    """Exact sum of squared distances of every row to its nearest center."""
    _, distances = pairwise_distances_argmin_min(X, np.asarray(centers, dtype=X.dtype))
    return float(np.sum(distances.astype(np.float64) ** 2))


# %%
# Every method on the same rows
# -----------------------------
# ``StreamingKMeans`` reads the dask array chunk by chunk; the scikit-learn estimators get
# the rows in memory. Each method is timed once, so expect some noise in the times.
methods = {
    "StreamingKMeans()": lambda: StreamingKMeans(k, random_state=0).fit(X_dask),
    "StreamingKMeans(refine_passes=1)": lambda: StreamingKMeans(
        k, refine_passes=1, random_state=0
    ).fit(X_dask),
    "MiniBatchKMeans(batch_size=4096)": lambda: MiniBatchKMeans(
        k, batch_size=4096, random_state=0
    ).fit(X),
    "KMeans(n_init=1)": lambda: KMeans(k, n_init=1, random_state=0).fit(X),
    "KMeans(n_init=10)": lambda: KMeans(k, n_init=10, random_state=0).fit(X),
}
# A first small fit starts the thread pools and loads the BLAS kernels, so that the timings
# below compare the fits and not the start-up.
StreamingKMeans(k, random_state=0).fit(X_dask[: n_rows // 10])
KMeans(k, n_init=1, random_state=0).fit(X[: n_rows // 10])
results = {}
for name, fit in methods.items():
    start = time.perf_counter()
    model = fit()
    seconds = time.perf_counter() - start
    results[name] = (seconds, cost(model.cluster_centers_))

reference = results["KMeans(n_init=10)"][1]
print(f"{'method':<34} {'wall s':>8} {'cost / KMeans(n_init=10)':>26}")
for name, (seconds, value) in results.items():
    print(f"{name:<34} {seconds:>8.2f} {value / reference:>26.4f}")

# %%
# Time against cost
# -----------------
# Lower left is better: fast, and as cheap as the best of ten full k-means runs.
from matplotlib.figure import Figure  # noqa: E402  (only the plot needs matplotlib)

fig = Figure(figsize=(7, 4.2), layout="constrained")
ax = fig.subplots()
for name, (seconds, value) in results.items():
    ours = name.startswith("StreamingKMeans")
    ax.scatter(seconds, value / reference, color="C3" if ours else "C0", s=50, zorder=3)
    ax.annotate(name, (seconds, value / reference), textcoords="offset points", xytext=(5, 4))
ax.set_xscale("log")
ax.margins(x=0.4, y=0.2)
ax.set_xlabel("wall time, s (log scale)")
ax.set_ylabel("cost / cost of KMeans(n_init=10)")
ax.set_title(f"{X.shape[0]:,} x {X.shape[1]} mixture, k={k}")
ax.grid(True, alpha=0.3)
fig.savefig(args.out, dpi=100)
print(f"plot saved to {args.out}")
