"""
Out of core: k-means over a zarr store, labels written back to disk
===================================================================

Data larger than memory usually lives in chunked files. This example writes a synthetic data
set to a zarr store chunk by chunk, fits :class:`~dask_streamkm.StreamingKMeans` in one pass
over the store, writes the label of every row to a second store, then folds in a new batch
of data with ``partial_fit`` (reading only the new batch) and saves the model.

At no point is the whole array in memory: each task holds one chunk. Run it as
``python examples/out_of_core_zarr.py`` (4 million rows, 512 MB on disk in a temporary
directory) or with ``--small``; ``--dir PATH`` keeps the stores in PATH.
"""

# %%
# Settings
# --------
import argparse
import os
import tempfile
import time

import dask.array as da
import numpy as np

from dask_streamkm import StreamingKMeans
from dask_streamkm.datasets import make_mixture

parser = argparse.ArgumentParser(description="k-means over a zarr store")
parser.add_argument("--small", action="store_true", help="a small data set, for a quick run")
parser.add_argument("--dir", default=None, help="where to write the stores (default: a temp dir)")
args, _ = parser.parse_known_args()
n_rows, chunk_rows, k = (40_000, 10_000, 10) if args.small else (4_000_000, 250_000, 50)
tmp = None if args.dir else tempfile.TemporaryDirectory()
folder = args.dir or tmp.name
os.makedirs(folder, exist_ok=True)

# %%
# Write a data set to zarr, one chunk at a time
# ---------------------------------------------
# ``to_zarr`` runs one task per chunk: each generates its rows and writes them. The store's
# chunks hold whole rows (all 32 features), which is what a row-wise pass wants.
store = os.path.join(folder, "day1.zarr")
X_lazy = make_mixture(n_rows, 32, k, chunks=chunk_rows, random_state=0)
start = time.perf_counter()
da.to_zarr(X_lazy, store, overwrite=True)
print(
    f"wrote {n_rows:,} x 32 float32 to {os.path.basename(store)} "
    f"in {time.perf_counter() - start:.1f} s"
)

# %%
# Fit in one pass over the store
# ------------------------------
# ``da.from_zarr`` maps each zarr chunk to a Dask chunk; the fit reads each once.
X = da.from_zarr(store)
start = time.perf_counter()
km = StreamingKMeans(n_clusters=k, random_state=0).fit(X)
seconds = time.perf_counter() - start
print(
    f"fit: {seconds:.1f} s ({n_rows / seconds:,.0f} rows/s), "
    f"cost bound per row {km.inertia_ / n_rows:.4f}"
)

# %%
# Labels back to disk
# -------------------
# ``labels_`` is a lazy Dask array with X's chunks, so writing it is one more pass, chunk by
# chunk, straight into a store of int64 labels.
labels_store = os.path.join(folder, "day1_labels.zarr")
km.labels_.to_zarr(labels_store, overwrite=True)
labels = da.from_zarr(labels_store)
sizes = np.bincount(labels.compute(), minlength=k)
print(f"labels written; largest cluster {sizes.max():,} rows, smallest {sizes.min():,}")

# %%
# A new batch: partial_fit reads only the new data
# ------------------------------------------------
# The model keeps its summary; ``partial_fit`` summarizes the new store, merges the two
# summaries and solves again. The new batch here comes from another mixture (as when the
# data drifts); ``half_life`` would let the older data fade.
store2 = os.path.join(folder, "day2.zarr")
da.to_zarr(
    make_mixture(n_rows // 4, 32, k, chunks=chunk_rows, random_state=1), store2, overwrite=True
)
km.partial_fit(da.from_zarr(store2))
print(
    f"after partial_fit: {km.n_rows_seen_:,} rows seen, summary of {km.summary_.n_groups:,} groups"
)

# %%
# Save the model next to the data
# -------------------------------
# The model file holds the centers and the summary; ``StreamingKMeans.load`` gets it back,
# ready to ``predict``, ``refit`` or ``partial_fit`` again.
model_path = km.save(os.path.join(folder, "model.npz"))
print(f"model: {os.path.getsize(model_path) / 2**20:.1f} MiB")
again = StreamingKMeans.load(model_path)
assert np.array_equal(again.cluster_centers_, km.cluster_centers_)

if tmp is not None:
    tmp.cleanup()
