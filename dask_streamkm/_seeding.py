"""Seeding on in-memory blocks: weighted greedy k-means++ and D^2 sampling in rounds.

Pure array maths (see :mod:`._distances` for the preconditions). Random numbers come from a
host ``numpy.random.Generator`` so that numpy and cupy runs on the same seed make the same
choices.
"""

from __future__ import annotations

import math

import numpy as np

from ._array import as_weights, clip_negative, device, is_numpy, namespace, segment_sum
from ._distances import OVERFLOW_MARGIN, Workspace, nearest, row_norms_sq, sq_distances


def unit_weights(w):
    """``(w / scale, scale)`` with ``scale`` the largest weight: sums of the scaled weights in
    float32 neither vanish nor overflow, whatever the weights' range (for sums that only rank
    or are scaled back)."""
    xp = namespace(w)
    scale = max(float(xp.max(w)), 1e-300) if w.shape[0] else 1.0
    return w / scale, scale


def potential_weights(w, x_sq, dtype):
    """The weights (:func:`unit_weights`, at most 1) by which the seeding sums the rows'
    squared distances to a candidate into its potential (a product with them; potentials
    only rank the candidates), in ``dtype``, or in float64 where the float32 sums could
    overflow: the weights' total times the largest squared distance between two rows (at
    most 4 times the largest squared norm ``x_sq``, times ``OVERFLOW_MARGIN``) beyond
    float32's range.

    Why: the rows' distances are kept in float32 where each of them fits, but a sum over n
    rows is up to n times larger: rows of values near 2**55 (each squared distance within
    float32's range) made every candidate's potential ``inf``, and the seeding took the first
    candidate at every step instead of the best (the choices differed from those of the same
    rows scaled to 1, which a power of two leaves exact)."""
    xp = namespace(w)
    unit = unit_weights(w)[0]
    if dtype == xp.float32 and x_sq.shape[0]:
        largest = 4.0 * float(xp.max(x_sq)) * OVERFLOW_MARGIN
        if not float(xp.sum(unit)) * largest <= float(xp.finfo(xp.float32).max):
            dtype = xp.float64
    return xp.astype(unit, dtype)


def _weighted_choice(xp, cumulative, rng, size=1):
    """Indices drawn with probability proportional to the increments of ``cumulative``."""
    total = float(cumulative[-1])
    u = rng.random(size) * total
    u = xp.asarray(u, dtype=cumulative.dtype, device=device(cumulative))
    idx = xp.searchsorted(cumulative, u, side="right")
    return xp.minimum(idx, cumulative.shape[0] - 1)


def _candidate_distances(X, cand_rows, x_sq, closest, work):
    """``minimum(sq_distances(X, cand_rows, x_sq), closest[:, None])`` (host numpy, rows and
    ``x_sq`` of one float dtype), the same numbers in three passes over the block instead of
    five: the candidates are scaled by -2 before the product (exact: a power of two), then
    the clip at 0 and at ``closest`` (never negative), as two in-place ufuncs (``np.clip``
    with a column of bounds took twice their time on 1,863 x 24 blocks)."""
    c_sq = row_norms_sq(cand_rows)
    cand_rows *= -2.0
    dtype = np.result_type(X, cand_rows, x_sq, c_sq)
    out = work.take("d_cand", (X.shape[0], cand_rows.shape[0]), X.dtype)
    d = np.matmul(X, cand_rows.T, out=out if out.dtype == dtype else None)
    d = d.astype(dtype, copy=False)
    d += x_sq[:, None]
    d += c_sq[None, :]
    clip_negative(d)
    return np.minimum(d, closest[:, None], out=d)


def kmeans_plusplus(X, n_clusters, rng, sample_weight=None, x_sq=None, n_local_trials=None):
    """Weighted greedy k-means++ seeding (Arthur & Vassilvitskii 2007; sklearn's greedy variant).

    Returns the indices (int64, on X's device) of ``n_clusters`` rows of X. Rows of zero
    weight are never chosen. Precondition: at least one row has positive weight.
    """
    xp = namespace(X)
    n = X.shape[0]
    dev = device(X)
    w = as_weights(sample_weight, X)
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    if x_sq is None:
        x_sq = row_norms_sq(X)
    # The distances stay in X's dtype (float32 halves the passes over the n x trials block);
    # the draws sum in float64, the potentials in X's dtype (they only rank the candidates,
    # so the weights are scaled to at most 1 first: no underflow in float32, and float64
    # weights where the sums could overflow it: potential_weights).
    x_sq = xp.astype(x_sq, X.dtype)
    w_x = potential_weights(w, x_sq, X.dtype)
    chosen = [int(_weighted_choice(xp, xp.cumulative_sum(w), rng)[0])]
    closest = sq_distances(X, X[chosen[0] : chosen[0] + 1, ...], x_sq)[:, 0]
    pot = float(xp.sum(w * closest))
    # numpy: the per-step arrays go to buffers of this call, made once (with glibc's mmap
    # threshold fixed, as distributed's nanny sets it, each was fresh pages at every step).
    work = Workspace() if is_numpy(xp) else None
    for _ in range(1, n_clusters):
        if work is not None:
            weighted = work.take("weighted", (n,), np.result_type(w, closest))
            weighted = np.multiply(w, closest, out=weighted)
        else:
            weighted = w * closest
        if pot <= 0.0:
            # All remaining mass sits on chosen points: pick unchosen positive-weight rows.
            # Zero the chosen rows with a segment sum (array-API arrays have no index assignment).
            hits = segment_sum(
                xp.ones((len(chosen),), dtype=xp.float64, device=dev),
                xp.asarray(chosen, dtype=xp.int64, device=dev),
                n,
            )
            weighted = xp.where(hits > 0, 0.0, xp.astype(w > 0, xp.float64))
            if float(xp.sum(weighted)) <= 0.0:
                weighted = xp.ones((n,), dtype=xp.float64, device=dev)
        if work is not None:
            cumulative = work.take("cumulative", (n,), weighted.dtype)
            cumulative = np.cumsum(weighted, out=cumulative)
        else:
            cumulative = xp.cumulative_sum(weighted)
        cand = _weighted_choice(xp, cumulative, rng, n_local_trials)
        # One pass to the minimum, and the potentials as one matrix-vector product.
        if work is not None:
            d_cand = _candidate_distances(X, np.take(X, cand, axis=0), x_sq, closest, work)
        else:
            d_cand = sq_distances(X, xp.take(X, cand, axis=0), x_sq)
            d_cand = xp.minimum(d_cand, closest[:, None])
        pots = xp.matmul(w_x, d_cand)
        best = int(xp.argmin(pots))
        chosen.append(int(cand[best]))
        if work is not None:  # its own buffer: d_cand's is written again at the next step
            closest = work.take("closest", (n,), d_cand.dtype)
            closest[...] = d_cand[:, best]
        else:
            closest = d_cand[:, best]
        pot = float(pots[best])
    return xp.asarray(chosen, dtype=xp.int64, device=dev)


def d2_sample(X, n_centers, rng, sample_weight=None, rounds=5, return_labels=False, work=None):
    """Fast D^2 seeding in a few rounds (k-means|| style oversampling, Bahmani et al. 2012).

    Picks about ``n_centers`` distinct rows: each round draws its share of rows with
    probability proportional to weight x squared distance to the rows chosen so far.
    Cheaper than sequential k-means++ for the many centers of a summary. With
    ``return_labels`` also each row's nearest chosen row (an index into the returned
    rows) and its squared distance to it, found on the way: the rounds' distances are one
    pass over X in all. ``work``: the task's :class:`Workspace` (host).
    """
    xp = namespace(X)

    def nearest_of(rows):
        return nearest(X, xp.take(X, rows, axis=0), work=work)

    w = as_weights(sample_weight, X)
    idx, labels, dist = _d2_rounds(xp, w, n_centers, rng, rounds, nearest_of)
    return (idx, labels, dist) if return_labels else idx


def _d2_rounds(xp, w, n_centers, rng, rounds, nearest_of):
    """The rounds of :func:`d2_sample`; ``nearest_of(rows)`` gives each row's nearest among the
    rows ``rows`` (an index into ``rows``) and its squared distance to it (float64, (n,)).
    Returns the distinct chosen rows (sorted), each row's nearest of them (an index into
    them; the first of equally near ones) and its squared distance to it."""
    first = _weighted_choice(xp, xp.cumulative_sum(w), rng, 1)
    chosen = first
    labels, closest = nearest_of(first)
    rounds = max(1, min(rounds, n_centers - 1))
    remaining = n_centers - 1
    for r in range(rounds):
        take = remaining // (rounds - r)
        remaining -= take
        if take <= 0:
            continue
        weighted = w * closest
        if float(xp.sum(weighted)) <= 0.0:
            break
        new = _unique(xp, _weighted_choice(xp, xp.cumulative_sum(weighted), rng, take))
        new_labels, new_closest = nearest_of(new)
        nearer = new_closest < closest
        labels = xp.where(nearer, new_labels + chosen.shape[0], labels)
        closest = xp.where(nearer, new_closest, closest)
        chosen = xp.concat([chosen, new])
    idx = _unique(xp, chosen)
    return idx, xp.searchsorted(idx, xp.take(chosen, labels, axis=0)), closest


def _unique(xp, x):
    """Sorted distinct values: ``np.unique`` for numpy (array_api_compat's ``unique_values``
    inspects a signature on every call, which cost a third of a small merge)."""
    return np.unique(x) if is_numpy(xp) else xp.unique_values(x)
