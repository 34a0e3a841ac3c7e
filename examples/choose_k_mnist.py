"""
Choosing k on MNIST from one pass
=================================

The elbow method fits k-means for a range of k and looks for the k after which one more
cluster stops paying off. Done naively it reads the data once per k. With a summary it reads
the data once: :func:`dask_streamkm.elbow` builds one summary sized for the largest k and
solves the small weighted problem for every k.

Here on MNIST (70,000 handwritten digits of 28 x 28 pixels, read offline as described in
``dask_streamkm.datasets.load_mnist``), for k from 2 to 20. The curve is saved as a PNG
(``--out``, default ``choose_k_mnist.png``). ``--small`` uses 3,000 images and k up to 8.
"""

# %%
# Settings and data
# -----------------
import argparse
import time

import dask.array as da
import numpy as np
from sklearn.metrics import adjusted_rand_score

from dask_streamkm import elbow
from dask_streamkm.datasets import load_mnist

parser = argparse.ArgumentParser(description="elbow on MNIST")
parser.add_argument("--small", action="store_true", help="3,000 images, k up to 8")
parser.add_argument("--out", default="choose_k_mnist.png", help="where to save the plot")
args, _ = parser.parse_known_args()

X, y = load_mnist()
if args.small:
    X, y = X[:3000], y[:3000]
k_range = range(2, 9) if args.small else range(2, 21)
# Chunks of 10,000 images stand in for files that do not fit in memory together.
X = da.from_array(X, chunks=(min(10_000, X.shape[0] // 2), -1))
print(f"MNIST: {X.shape[0]:,} images x {X.shape[1]} pixels in {X.numblocks[0]} chunks")

# %%
# One pass, every k
# -----------------
# The summary is sized for the largest k (``max(5 * k, 256, min(chunk rows / 32, 100 * k))``
# groups per chunk), so every smaller k is solved from a summary at least as detailed as a
# separate fit would use. On 784 features the solves, not the read, are the main cost: each k
# runs ``n_init`` restarts of k-means++ and Lloyd on the summary, so three restarts per k (the
# estimator's "auto" is 10 at these k) keep the whole curve to a few minutes on a laptop.
start = time.perf_counter()
result = elbow(X, k_range, random_state=0, n_init=3)
print(
    f"elbow for k = {k_range.start}..{k_range.stop - 1}: {time.perf_counter() - start:.1f} s "
    f"(one read: {result.summary_seconds:.1f} s, {len(result.k)} solves: "
    f"{result.seconds.sum():.1f} s)"
)
print(result.to_string())

# %%
# The curve
# ---------
# The suggested k is the knee of the log-cost curve: the point farthest below the straight
# line from the first to the last point. On real data the curve bends gently, so read the
# knee as a hint, not a verdict.
ax = result.plot(args.out, title=f"MNIST ({X.shape[0]:,} images): elbow from one pass")
print(f"plot saved to {args.out}")

# %%
# How do the clusters compare with the digit labels?
# --------------------------------------------------
# The model built for the elbow keeps its summary, so a model for any k in the range is one
# ``refit`` away, with no read of the data. k-means on raw pixels does not recover the ten
# digits exactly (several digits come in more than one style, and 4 / 9 mix); the adjusted
# Rand index measures the agreement (1 = the same partition, 0 = chance).
for k in sorted({min(10, k_range.stop - 1), result.suggested_k or 10}):
    model = result.model.refit(n_clusters=k, n_init=3)
    labels = model.predict(X).compute()
    print(
        f"k={k:>2}: adjusted Rand index against the digit labels = "
        f"{adjusted_rand_score(y, labels):.3f}"
    )
    sizes = np.bincount(labels, minlength=k)
    print(f"       cluster sizes {sizes.min():,} to {sizes.max():,}")
