"""
Quickstart: one-pass k-means on a Dask array
============================================

:class:`~dask_streamkm.StreamingKMeans` reads each chunk of a Dask array once, keeps a small
weighted summary of it, merges the summaries and solves k-means on the merged summary. This
example fits a synthetic mixture, looks at the model, checks its cost, saves it, hands it to
scikit-learn and solves it again for another k without reading the data.

Run it as ``python examples/quickstart.py`` (two million rows, under a minute on a laptop) or
``python examples/quickstart.py --small`` (a few seconds).
"""

# %%
# Settings
# --------
import argparse
import os
import tempfile
import time

import numpy as np

from dask_streamkm import StreamingKMeans
from dask_streamkm.datasets import make_mixture

parser = argparse.ArgumentParser(description="dask_streamkm quickstart")
parser.add_argument("--small", action="store_true", help="a small data set, for a quick run")
args, _ = parser.parse_known_args()
n_rows = 20_000 if args.small else 2_000_000

# %%
# Data: a lazy Dask array
# -----------------------
# ``make_mixture`` builds a Gaussian mixture of 10 components in 16 dimensions, chunk by
# chunk: nothing is generated until a chunk is read, so the array can be far larger than
# memory. Any Dask array works the same way (``da.from_zarr``, ``da.from_array``...).
X = make_mixture(n_rows, 16, 10, chunks=n_rows // 10, random_state=0)
print(f"X: {X.shape[0]:,} rows x {X.shape[1]} features in {X.numblocks[0]} chunks")

# %%
# Fit in one pass
# ---------------
# ``inertia_`` is an upper bound on the sum of squared distances of the rows to their
# centers, computed from the summary alone: no second read of the data.
start = time.perf_counter()
km = StreamingKMeans(n_clusters=10, random_state=0).fit(X)
print(f"fit: {time.perf_counter() - start:.2f} s, summary of {km.summary_.n_groups} groups")
print(f"cost bound (inertia_): {km.inertia_:.6g}")

# %%
# Predict, lazily
# ---------------
# For Dask input, ``labels_`` and ``predict`` return lazy Dask arrays; nothing is read until
# they are computed (or written out, e.g. with ``labels.to_zarr(...)``).
labels = km.predict(X)
sizes = np.bincount(labels.compute(), minlength=10)
print("cluster sizes:", sizes.tolist())

# %%
# The exact cost, and SageMaker's test metrics
# --------------------------------------------
# ``evaluate`` makes one pass and returns what SageMaker's k-means reports for test data:
# ``ssd`` (sum of squared distances) and ``msd`` (their mean). The exact ``ssd`` is at most
# the bound above.
metrics = km.evaluate(X)
print(f"exact ssd: {metrics['ssd']:.6g} (bound / exact = {km.inertia_ / metrics['ssd']:.4f})")
print(f"msd: {metrics['msd']:.4f}")

# %%
# Save, load, and hand over to scikit-learn
# -----------------------------------------
# A model file is a plain ``.npz`` with JSON metadata (no pickle), and it keeps the summary:
# a loaded model can ``refit`` for another k or ``partial_fit`` more data.
# ``to_sklearn()`` returns a fitted ``sklearn.cluster.KMeans`` that predicts the same labels.
with tempfile.TemporaryDirectory() as tmp:
    path = km.save(os.path.join(tmp, "model.npz"))
    loaded = StreamingKMeans.load(path)
# The model keeps X's dtype (float32) through the file, and so does the KMeans: it predicts
# rows of that dtype, like a KMeans fitted on float32 data.
sample = X[:5000].compute()
sk = loaded.to_sklearn()
same = np.array_equal(sk.predict(sample), km.predict(sample))
print(f"loaded model and sklearn KMeans predict the same labels: {same}")

# %%
# Another k without reading the data
# ----------------------------------
# The summary answers for any k up to the one it was sized for; ``refit`` only re-runs the
# small final solve. :func:`dask_streamkm.elbow` does this for a whole range of k.
for k in (5, 8, 10):
    print(f"k={k:>2}: cost bound {loaded.refit(n_clusters=k).inertia_:.6g}")
