"""The final solve's restarts run together: one product a step for all of them (host numpy).

A restart of :func:`._runner.weighted_kmeans` is greedy k-means++ on the coarse points
(:func:`._seeding.kmeans_plusplus`) and Lloyd from its seeds (:func:`._lloyd.lloyd` with a
fixed origin). On a coarse copy of a few thousand points each of their steps is a small
product and a dozen small operations, so ten restarts one after another spent most of their
time in Python and numpy's per-call work, and side by side on threads they contended for the
GIL. Here the R restarts take their steps together: each step makes one product per run into
one (R, points, ...) block, and every other operation of the step is one call over that block
(the clips, the argmax, the sums of a Lloyd update), so the per-call work is paid once a step,
not R times.

The numbers are those of the restarts run one by one: every run draws from its own generator
in the same order, each run's product is the same GEMM on the same blocks of rows (OpenBLAS
rounds a column of a wider product differently), the other operations are elementwise or
per run, and the sums of each Lloyd update add each run's rows in their order
(:func:`_sums_by_run`). ``tests/test_restarts.py`` checks this bit for bit against
:func:`._seeding.kmeans_plusplus` and :func:`._lloyd.lloyd`.
"""

from __future__ import annotations

import numpy as np

from ._array import clip_negative, csc_matvecs
from ._distances import block_rows, bulk_origin, prepared_rows, row_norms_sq
from ._lloyd import _lloyd_update, _weighted_variance
from ._seeding import _weighted_choice, potential_weights

#: Values of the (runs, points, candidates) block of the seeding at most (32 MiB of float32):
#: more runs go in several batches (:func:`batches`), so that many restarts (``n_init`` is
#: the user's) on many points never hold more than the runs one by one would, times a bound.
BATCH_ELEMENTS = 1 << 23


def batches(seeds, n_points, n_local_trials, n_clusters):
    """``seeds`` in consecutive batches of runs that take their steps together, each within
    :data:`BATCH_ELEMENTS` (points x the larger of candidates and clusters a run)."""
    per_run = max(int(n_points) * max(int(n_local_trials), int(n_clusters), 1), 1)
    size = max(1, BATCH_ELEMENTS // per_run)
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def batched_kmeans_plusplus(X, n_clusters, rngs, w, x_sq, n_local_trials):
    """:func:`._seeding.kmeans_plusplus` of host numpy X (float rows, weights ``w`` float64
    of positive total, ``x_sq`` the rows' squared norms) for each generator of ``rngs``,
    together: an (R, k) int64 array, row r the indices that run r chooses. None where a
    run's potential reaches zero (fewer distinct rows than clusters): the one-by-one seeding
    handles that."""
    n = X.shape[0]
    runs = len(rngs)
    t = int(n_local_trials)
    x_sq = x_sq.astype(X.dtype, copy=False)
    w_x = potential_weights(w, x_sq, X.dtype)
    chosen = np.empty((runs, n_clusters), dtype=np.int64)
    total = np.cumsum(w)
    chosen[:, 0] = [int(_weighted_choice(np, total, rng)[0]) for rng in rngs]
    # (runs, n): each run's squared distance to its nearest chosen row.
    closest = _distances_to(X, X[chosen[:, 0]].reshape(runs, 1, -1), x_sq)[:, :, 0]
    positive = np.all(np.sum(w * closest, axis=1) > 0.0)
    at_run = np.arange(runs)
    # Every step adds the rows' squared norms to each of its t columns: as an (n, t) block,
    # made once, the addition runs in one contiguous loop (three times faster than one
    # broadcast along the t columns of each row; the same sums).
    x_cols = np.ascontiguousarray(np.broadcast_to(x_sq[:, None], (n, t)))
    d = np.empty((runs, n, t), dtype=X.dtype)
    pots = np.empty((runs, t), dtype=np.result_type(w_x, X.dtype))
    for step in range(1, n_clusters):
        if not positive:
            return None
        cumulative = np.cumsum(closest * w, axis=1)
        cand = np.stack([_weighted_choice(np, cumulative[r], rng, t) for r, rng in enumerate(rngs)])
        # (runs, n, t): every run's candidates, clipped at the run's closest.
        d = _distances_to(X, X[cand], x_cols, out=d)
        np.minimum(d, closest[:, :, None], out=d)
        for r in range(runs):
            pots[r] = w_x @ d[r]
        best = np.argmin(pots, axis=1)
        chosen[:, step] = cand[at_run, best]
        closest = d[at_run, :, best]
        positive = np.all(pots[at_run, best] > 0.0)
    return chosen


def _distances_to(X, C, x_sq, out=None):
    """``||x||^2 - 2 x.c + ||c||^2`` of every row of X to each run's rows of C (R, t, d),
    clipped at 0: (R, n, t) in X's dtype, as :func:`._seeding._candidate_distances` and
    :func:`._distances.sq_distances` compute them for one run (one product a run: the
    rounding of a product may depend on its width; the candidates scaled by -2 first, which
    is exact). ``x_sq``: the rows' squared norms (n,), or those repeated in t columns (n, t)."""
    runs, t, _ = C.shape
    c_sq = row_norms_sq(C.reshape(runs * t, -1)).reshape(runs, 1, t)
    C = C * -2.0
    if out is None:
        out = np.empty((runs, X.shape[0], t), dtype=X.dtype)
    for r in range(runs):
        np.matmul(X, C[r].T, out=out[r])
    out += x_sq[None, :, None] if x_sq.ndim == 1 else x_sq[None]
    out += c_sq
    return clip_negative(out)


def batched_lloyd(X, starts, w, max_iter, tol):
    """:func:`._lloyd.lloyd` of host numpy X (weights ``w`` float64) with ``fixed_origin``
    from each of ``starts`` ((R, k, d) float64), together. Returns a list of R pairs
    ``(inertia, centers)`` as each run alone returns them (``keep_best`` off: the last
    centers and their cost)."""
    n, d = X.shape
    runs, k, _ = starts.shape
    Xf = X.astype(np.float64)
    wsum = float(np.sum(w))
    Xw = Xf * w[:, None]
    mean = np.sum(Xw, axis=0) / wsum
    threshold = tol * (_weighted_variance(Xf, w, mean) / wsum / d)
    origin, rows_aug, rows_sq = prepared_rows(X, bulk_origin(X, mean, w).astype(X.dtype))
    out = [None] * runs
    active = np.arange(runs)
    centers = np.array(starts, dtype=np.float64)
    labels, dist = _assign(rows_aug, rows_sq, origin, centers)
    if max_iter < 1:
        return [(float(np.sum(w * dist[i])), centers[i]) for i in range(runs)]
    n_iter = 0
    while active.shape[0]:
        n_iter += 1
        sums, mass = _sums_by_run(Xw, w, labels, k)
        # Each center to its mean, all runs at once (the same elementwise operations as
        # :func:`._lloyd._lloyd_update`); a run with an empty center takes that function's
        # way, which gives the center a far row.
        new = np.where(mass[:, :, None] > 0, sums / np.maximum(mass, 1e-300)[:, :, None], centers)
        n_empty = np.sum(mass <= 0, axis=1)
        for i in np.flatnonzero(n_empty):
            new[i], n_empty[i] = _lloyd_update(
                Xf, Xw, w, labels[i], dist[i], centers[i], totals=(sums[i], mass[i])
            )
        shift = np.array([np.sum((new[i] - centers[i]) ** 2) for i in range(new.shape[0])])
        centers = new
        labels, dist = _assign(rows_aug, rows_sq, origin, centers)
        inertia = np.sum(w * dist, axis=1)
        done = ((shift <= threshold) & (n_empty == 0)) | (n_iter >= max_iter)
        for i in np.flatnonzero(done):
            out[int(active[i])] = (float(inertia[i]), centers[i])
        keep = np.flatnonzero(~done)
        active, centers, labels, dist = active[keep], centers[keep], labels[keep], dist[keep]
    return out


def _assign(rows_aug, rows_sq, origin, centers):
    """Each run's nearest center of every row and the squared distance to it, as
    :func:`._distances.nearest` with prepared rows gives them (one product a run, on the
    same blocks of rows): ``(labels (R, n) int64, dist (R, n) float64)`` for centers
    (R, k, d) float64."""
    n = rows_aug.shape[0]
    runs, k, d = centers.shape
    dtype = rows_aug.dtype
    shifted = (centers - origin.astype(np.float64)).astype(dtype).reshape(runs * k, d)
    half = -0.5 * row_norms_sq(shifted)
    # A transposed view, as :func:`._distances._augmented` gives it (the same product).
    aug = np.concatenate([shifted, half[:, None]], axis=1).reshape(runs, k, d + 1)
    labels = np.empty((runs, n), dtype=np.int64)
    best = np.empty((runs, n), dtype=dtype)
    step = block_rows(k, n)
    scores = np.empty((runs, min(step, n), k), dtype=dtype)
    for a in range(0, n, step):
        b = min(a + step, n)
        block = scores[:, : b - a]
        for r in range(runs):
            np.matmul(rows_aug[a:b], aug[r].T, out=block[r])
        lab = np.argmax(block, axis=2, out=labels[:, a:b])
        best[:, a:b] = np.take_along_axis(block, lab[:, :, None], axis=2)[:, :, 0]
    best *= 2.0
    np.subtract(rows_sq[None, :], best, out=best)
    return labels, clip_negative(best).astype(np.float64)


def _sums_by_run(Xw, w, labels, k):
    """Each run's weighted sums ((R, k, d) float64) and weights ((R, k)) of the rows by its
    labels ((R, n)): the rows added in their order for every center, as
    :func:`._array.segment_sum` adds them for one run (one kernel call for all runs)."""
    runs, n = labels.shape
    d = Xw.shape[1]
    index = labels + (np.arange(runs) * k)[:, None]
    mass = np.bincount(index.ravel(), weights=np.tile(w, runs), minlength=runs * k)
    if csc_matvecs is None or d <= 8:
        sums = np.stack(
            [
                np.bincount(index.ravel(), weights=np.tile(Xw[:, j], runs), minlength=runs * k)
                for j in range(d)
            ],
            axis=1,
        )
    else:
        sums = np.zeros((runs * k, d), dtype=np.float64)
        csc_matvecs(
            runs * k,
            n,
            d,
            np.arange(0, runs * n + 1, runs, dtype=np.int64),
            np.ascontiguousarray(index.T).ravel(),
            np.ones(runs * n, dtype=np.float64),
            np.ascontiguousarray(Xw).ravel(),
            sums.ravel(),
        )
    return sums.reshape(runs, k, d), mass.reshape(runs, k)
