"""
Semantic deduplication: cosine k-means on embeddings, then near-duplicates per cluster
======================================================================================

Deduplicating a corpus by meaning starts from embeddings (one unit vector per document) and
looks for pairs of very high cosine similarity. Comparing every pair is ``n^2``; the usual
trick is to cluster the vectors by cosine first and compare pairs only within each cluster,
which divides the work by about the number of clusters.

This example clusters unit vectors with ``StreamingKMeans(metric="cosine")`` (one pass over
the data, spherical k-means), then lists the pairs above a cosine threshold inside each
cluster with blocked dask computations: each task compares two blocks of at most ``BLOCK``
rows of one cluster, so no ``n x n`` matrix is ever built. The data are synthetic
"embeddings" with planted near-duplicates, so the result can be checked.

Run it as ``python examples/embeddings_dedup.py`` (200,000 vectors) or with ``--small``
(20,000 vectors, a few seconds).
"""

# %%
# Settings
# --------
import argparse
import time

import dask
import dask.array as da
import numpy as np

from dask_streamkm import StreamingKMeans

parser = argparse.ArgumentParser(description="semantic deduplication with cosine k-means")
parser.add_argument("--small", action="store_true", help="a small data set, for a quick run")
args, _ = parser.parse_known_args()
n_rows = 20_000 if args.small else 200_000
n_features, n_topics, n_clusters = 64, 40, 40
#: Pairs with a cosine at least this high are reported as near-duplicates.
THRESHOLD = 0.95
#: Rows per block of the pair search (each task holds a BLOCK x BLOCK similarity block).
BLOCK = 2_000

# %%
# Data: unit vectors around topics, with planted near-duplicates
# --------------------------------------------------------------
# Each vector is a topic direction plus noise, scaled to unit length (cosines between rows of
# one topic are about 0.5). One row in fifty is a near-copy of an earlier row (a little noise
# added: cosine about 0.99), as when a document is reposted with a few words changed.
rng = np.random.default_rng(0)
topics = rng.normal(size=(n_topics, n_features))
topics /= np.linalg.norm(topics, axis=1, keepdims=True)
weights = 1.0 / np.arange(1, n_topics + 1)  # some topics far larger than others
topic = rng.choice(n_topics, size=n_rows, p=weights / weights.sum())
E = topics[topic] + rng.normal(size=(n_rows, n_features)) / np.sqrt(n_features)
copies = rng.choice(np.arange(1, n_rows), size=n_rows // 50, replace=False)
sources = rng.integers(0, copies)  # each copy repeats an earlier row
E[copies] = E[sources] + 0.1 * rng.normal(size=(copies.size, n_features)) / np.sqrt(n_features)
E /= np.linalg.norm(E, axis=1, keepdims=True)
X = da.from_array(E.astype(np.float32), chunks=(n_rows // 10, -1))
print(f"{n_rows:,} unit vectors x {n_features} in {X.numblocks[0]} chunks")

# %%
# Cluster by cosine in one pass
# -----------------------------
# ``metric="cosine"``: rows are scaled to unit length inside each chunk's task, the summary
# keeps sums of unit vectors, and the final solve is spherical k-means, so the centers are
# unit vectors and ``inertia_`` is the sum of ``1 - cos`` of the rows to their centers.
start = time.perf_counter()
km = StreamingKMeans(n_clusters=n_clusters, metric="cosine", random_state=0).fit(X)
labels = km.labels_.compute()
print(
    f"fit: {time.perf_counter() - start:.2f} s; mean 1 - cos to the center: "
    f"{km.inertia_ / n_rows:.4f}"
)
sizes = np.bincount(labels, minlength=n_clusters)
print(f"cluster sizes: {sizes.min():,} to {sizes.max():,} rows")


# %%
# Near-duplicate pairs within each cluster, block by block
# --------------------------------------------------------
# A cluster's rows are cut into blocks of at most ``BLOCK`` rows; one dask task per pair of
# blocks (a block with itself, and each pair of different blocks) computes their cosines and
# keeps the pairs above the threshold. Each task holds one ``BLOCK x BLOCK`` block; the work is
# the sum over clusters of ``n_c^2 / 2``, about ``n^2 / (2 k)`` for balanced clusters.
def similar_pairs(a, b, rows_a, rows_b, threshold, same):
    """Pairs (row, row, cosine) of blocks a and b (unit rows) with a cosine >= threshold."""
    cos = a @ b.T
    if same:  # a block against itself: each pair once
        cos = np.triu(cos, k=1)
    i, j = np.nonzero(cos >= threshold)
    return np.stack([rows_a[i], rows_b[j]], axis=1), cos[i, j]


tasks = []
for c in range(n_clusters):
    members = np.flatnonzero(labels == c)
    blocks = [members[s : s + BLOCK] for s in range(0, members.size, BLOCK)]
    rows = [X[idx] for idx in blocks]  # lazy: a block is read when its tasks run
    for p in range(len(blocks)):
        for q in range(p, len(blocks)):
            task = dask.delayed(similar_pairs)(
                rows[p], rows[q], blocks[p], blocks[q], THRESHOLD, p == q
            )
            tasks.append(task)
start = time.perf_counter()
found = dask.compute(*tasks)
pairs = np.concatenate([f[0] for f in found])
cosines = np.concatenate([f[1] for f in found])
print(
    f"{len(tasks)} block tasks, {time.perf_counter() - start:.2f} s: "
    f"{len(pairs):,} pairs with cosine >= {THRESHOLD}"
)
for (i, j), cos in list(zip(pairs, cosines, strict=True))[:3]:
    print(f"  rows {i:>7,} and {j:>7,}: cosine {cos:.4f}")

# %%
# Check against the planted copies
# --------------------------------
# Every planted copy and its source should be found: they are so close that they fall in one
# cluster. (A pair split by a cluster boundary would be missed; the search could be widened by
# also comparing each row with its second-nearest cluster.)
found_set = {tuple(sorted(p)) for p in pairs.tolist()}
planted = {tuple(sorted(p)) for p in zip(sources.tolist(), copies.tolist(), strict=True)}
close = {p for p in planted if float(E[p[0]] @ E[p[1]]) >= THRESHOLD}
recall = len(close & found_set) / max(len(close), 1)
print(f"planted pairs above the threshold: {len(close):,}; found: {recall:.1%}")
duplicates = np.unique(pairs.max(axis=1))
print(f"rows to drop (the later row of each pair): {duplicates.size:,} of {n_rows:,}")
