"""
What the summary looks like
===========================

:class:`~dask_streamkm.StreamingKMeans` never solves k-means on the rows themselves: each chunk
is summarized into weighted groups (their centroids, weights and squared errors), the
summaries are merged, and the final solve runs on the merged groups. On two-dimensional data
all three can be drawn: the rows coloured by their cluster, the groups of the summary as
circles whose area is their weight, and the centers solved from the groups.

Run it as ``python examples/cluster_picture.py`` (200,000 rows) or with ``--small`` (20,000);
``--out`` sets where the picture goes (default ``cluster_picture.png``).
"""

# %%
# A two-dimensional mixture, in chunks
# ------------------------------------
import argparse

import numpy as np

from dask_streamkm import StreamingKMeans
from dask_streamkm.datasets import make_mixture

parser = argparse.ArgumentParser(description="draw a summary and its clusters")
parser.add_argument("--small", action="store_true", help="20,000 rows, for a quick run")
parser.add_argument("--out", default="cluster_picture.png", help="where to save the picture")
args, _ = parser.parse_known_args()
n_rows = 20_000 if args.small else 200_000

X = make_mixture(n_rows, 2, 8, chunks=n_rows // 4, random_state=3)
km = StreamingKMeans(n_clusters=8, random_state=0).fit(X)
summary = km.summary_
print(f"{X.shape[0]:,} rows in {X.numblocks[0]} chunks -> {summary.n_groups:,} groups -> 8 centers")
print(f"total weight of the groups: {float(summary.total_weight):,.0f} (every row counted once)")

# %%
# Rows, groups and centers
# ------------------------
# The groups are dense where the rows are and follow the shape of each cluster; the centers
# are the weighted k-means of the groups. The bound ``inertia_`` is computed from the groups
# alone, and ``score`` reads the rows again for the exact cost.
from matplotlib.figure import Figure  # noqa: E402  (only the picture needs matplotlib)

rows = X[:: max(1, n_rows // 5000)].compute()
labels = km.predict(rows)
centroids = np.asarray(summary.centroids)
weights = np.asarray(summary.weights)

fig = Figure(figsize=(11, 4.6), layout="constrained")
left, right = fig.subplots(1, 2, sharex=True, sharey=True)
left.scatter(rows[:, 0], rows[:, 1], c=labels, cmap="tab10", s=3, alpha=0.5)
left.scatter(*km.cluster_centers_.T, marker="X", s=120, color="black", label="centers")
left.set_title(f"rows (a sample) by cluster, k={km.n_clusters}")
left.legend(loc="best")
right.scatter(
    centroids[:, 0],
    centroids[:, 1],
    s=400 * weights / weights.max(),
    facecolors="none",
    edgecolors="C7",
    label=f"{summary.n_groups:,} groups (area = weight)",
)
right.scatter(*km.cluster_centers_.T, marker="X", s=120, color="black", label="centers")
right.set_title("the summary the centers are solved from")
right.legend(loc="best")
fig.savefig(args.out, dpi=100)
print(f"cost bound {km.inertia_:.6g}, exact cost {-km.score(X):.6g}")
print(f"picture saved to {args.out}")
