"""The refinement pass's kernels: a block's rows in groups, the groups' sums, the exact step.

A pass from given centers puts each row in a group by its nearest centers and the band of
its margin between the nearest two (:func:`refine_groups`); the groups' sums, added up by key
over the blocks (:func:`reduce_refine_groups`, coarsened when too many:
:func:`coarsen_refine_keys`), give the exact Lloyd step and cost (:func:`refine_lloyd_stats`,
:func:`lloyd_step_centers`) and the weighted points of a Lloyd run over the groups
(:func:`refine_points`). Pure array maths (see :mod:`._distances` for the preconditions).
"""

from __future__ import annotations

import math

import numpy as np

from ._array import as_weights, device, is_numpy, namespace, segment_sum
from ._distances import GROUP_SUM_ELEMENTS, arange_into, nearest, nearest_top, thread_workspace
from ._indicator import indicator_sums
from ._seeding import _unique

#: Bands of a row's margin between its nearest and second-nearest center (:func:`refine_groups`).
REFINE_BANDS = 64
#: Coarsening levels of :func:`coarsen_refine_keys`: 1 to 6 merge neighbouring bands, 7 drops
#: the third-nearest center, :data:`REFINE_TOP_LEVEL` the second (only the nearest is left).
REFINE_TOP_LEVEL = 8


def refine_key_span(k):
    """How many keys :func:`refine_groups` has per nearest center (``k * k * bands``)."""
    return int(k) * int(k) * REFINE_BANDS


def refine_groups(X, centers, sample_weight=None, *, cap=None):
    """One block's share of a refinement pass from ``centers``: its rows in groups.

    A row's group is its nearest center j, its second- and third-nearest l and m, and the
    band ``floor(REFINE_BANDS * sqrt((d_l - d_j) / (d_l + d_j)))`` of its squared distances d
    (fine near the border of j and l, coarse inside). Returns ``(keys, weights, offsets,
    sq)``: the sorted distinct keys ``((j * k + l) * k + m) * REFINE_BANDS + band`` (int64),
    each group's total weight, the weighted sum of its rows minus its weight times center j
    (float64, (G, d)) and the weighted sum of its rows' squared distances to j. Added up by
    key over blocks, they give an exact Lloyd step and the exact cost of ``centers``
    (:func:`refine_lloyd_stats`), and the groups' centroids carry a Lloyd run on far fewer
    points than rows (Voronoi cells are convex: a group's centroid stays nearest its center).
    With ``cap`` (numpy rows), the keys are first taken to the finest level of
    :func:`coarsen_refine_keys` that leaves at most ``cap`` groups (or the top level), the
    sums made at that level, and the level is returned as a fifth value (0 on other arrays,
    whose groups the caller coarsens): summing the rows into the fine groups and then those
    into coarser ones cost MNIST's leaf 0.35 s of its 0.95 s for (groups x 784) arrays it
    then threw away. Precondition: one namespace and device;
    ``k**3 * REFINE_BANDS < 2**63``.
    """
    xp = namespace(X, centers)
    k = centers.shape[0]
    # On the host the per-row arrays are work buffers of the thread: the next task finds
    # their pages mapped (:func:`._distances.thread_workspace`), the same numbers. Arrays
    # whose lives do not overlap share a buffer (one name): the second and third nearest
    # centers and distances, the ratio and the band, once used, hold the sort's keys,
    # ranks and groups, the weights of one, the float64 distances and their weighted
    # values (see :func:`_sorted_groups`, :func:`_group_sums`, :func:`_sq_to_centers`).
    work = thread_workspace("refine") if is_numpy(xp) else None
    (labels, second, third), (d1, d2, d3) = nearest_top(X, centers, 3, work=work)
    del d3
    if is_numpy(xp):  # the same numbers in place: two (n,) temporaries instead of a dozen
        n = X.shape[0]
        ratio = np.subtract(d2, d1, out=work.take("ratio", (n,), np.float64))
        d2 += d1
        ratio /= np.maximum(d2, 1e-300, out=d2)
        np.sqrt(np.clip(ratio, 0.0, 1.0, out=ratio), out=ratio)
        band = work.take("band", (n,), np.int64)
        np.floor(np.multiply(ratio, REFINE_BANDS, out=ratio), out=ratio)
        np.copyto(band, ratio, casting="unsafe")
        np.minimum(band, REFINE_BANDS - 1, out=band)
        keys = np.multiply(labels, k, out=work.take("keys", (n,), np.int64))
        keys += second
        for factor, term in ((k, third), (REFINE_BANDS, band)):
            keys *= factor
            keys += term
    else:
        ratio = (d2 - d1) / xp.maximum(d2 + d1, 1e-300)
        band = xp.astype(xp.floor(REFINE_BANDS * xp.sqrt(xp.clip(ratio, 0.0, 1.0))), xp.int64)
        band = xp.minimum(band, REFINE_BANDS - 1)
        keys = ((labels * k + second) * k + third) * REFINE_BANDS + band
    # Only the keys, the labels and d1 are used below: a task's peak is smaller without
    # the rest (48 bytes a row).
    del second, third, d2, ratio, band
    order, level = None, 0
    if is_numpy(xp):
        # One stable sort of the keys gives the distinct keys, each row's group and the rows
        # in order of group for their sums (a unique, a search of every key and a second sort
        # took a quarter of the leaf).
        order, distinct, group, level = _sorted_groups(keys, k, cap, work)
    else:
        distinct = xp.sort(_unique(xp, keys))  # unique_values need not be sorted
        group = xp.searchsorted(distinct, keys)
    if work is not None and sample_weight is None:
        w = work.take("top_dists2", (X.shape[0],), np.float64)
        w.fill(1.0)
    else:
        w = as_weights(sample_weight, X)
    n_groups = distinct.shape[0]
    weights = segment_sum(w, group, n_groups)
    # Sums of the rows less their center's share: the rows far from zero lose float64's
    # last digits here, not the groups' errors (``sq`` is computed relative to the centers).
    if is_numpy(xp):
        offsets = _group_sums(X, None if sample_weight is None else w, group, n_groups, order, work)
    else:
        rows = xp.astype(X, xp.float64)
        if sample_weight is not None:
            rows = rows * w[:, None]
        offsets = segment_sum(rows, group, n_groups)
    nearest_of_group = distinct // refine_key_span(k)
    centers64 = xp.astype(centers, xp.float64)
    if is_numpy(xp):
        # The keys are sorted, so each center's groups are one run: subtracted in place, run
        # by run (the same numbers; two (groups x d) temporaries fewer, 200 MB for MNIST).
        runs = list(_center_runs(nearest_of_group, k))
        share = np.empty((max((r.stop - r.start for _, r in runs), default=0), X.shape[1]))
        for j, run in runs:
            part = share[: run.stop - run.start]
            offsets[run] -= np.multiply.outer(weights[run], centers64[j], out=part)
    else:
        offsets = offsets - weights[:, None] * xp.take(centers64, nearest_of_group, axis=0)
    if X.dtype != xp.float64:
        # Float32 rows: their distances came from a float32 expansion (labels and bands need
        # no more); the cost needs float64 differences, or it falls below the exact cost.
        d1 = _sq_to_centers(X, centers64, labels, work=work)
    wd1 = w * d1 if work is None else np.multiply(w, d1, out=work.take("ratio", d1.shape, d1.dtype))
    out = (distinct, weights, offsets, segment_sum(wd1, group, n_groups))
    return out if cap is None else (*out, level)


def _sq_to_centers(X, centers, labels, block=16384, work=None):
    """Squared distances (float64) of the rows of X to ``centers[labels]`` (float64 centers),
    from float64 differences, a row block at a time (numpy: in buffers of ``work`` when
    given, the result too, valid until its next use)."""
    xp = namespace(X, centers)
    if is_numpy(xp):  # the same numbers into buffers made once (no fresh pages per block)
        n = X.shape[0]
        block = min(block, max(256, GROUP_SUM_ELEMENTS // max(X.shape[1], 1)))  # rows apart
        shape = (min(block, n), X.shape[1])
        if work is None:
            out, diff_buf, gather_buf = np.empty(n), np.empty(shape), np.empty(shape)
        else:
            out = work.take("top_dists1", (n,), np.float64)
            diff_buf = work.take("sq_diff", shape, np.float64)
            gather_buf = work.take("sq_gather", shape, np.float64)
        for start in range(0, n, block):
            stop = min(start + block, n)
            diff = diff_buf[: stop - start]
            diff[...] = X[start:stop]
            # mode="clip" (the labels are in range): "raise" would buffer ``out`` every call.
            gather = gather_buf[: stop - start]
            diff -= np.take(centers, labels[start:stop], axis=0, out=gather, mode="clip")
            np.multiply(diff, diff, out=diff)
            np.sum(diff, axis=1, out=out[start:stop])
        return out
    parts = []
    for start in range(0, X.shape[0], block):
        stop = min(start + block, X.shape[0])
        diff = xp.astype(X[start:stop, ...], xp.float64)
        diff = diff - xp.take(centers, labels[start:stop], axis=0)
        parts.append(xp.sum(diff * diff, axis=1))
    if not parts:
        return xp.zeros((0,), dtype=xp.float64, device=device(X))
    return xp.concat(parts)


def _center_runs(nearest_center, k):
    """``(j, slice)`` of each center j among ``k`` that has groups, for sorted host
    ``nearest_center`` (each center's groups are then one run)."""
    bounds = np.searchsorted(nearest_center, np.arange(k + 1))
    for j in np.flatnonzero(np.diff(bounds)):
        yield int(j), slice(int(bounds[j]), int(bounds[j + 1]))


#: Most values (rows x features) :func:`_group_sums` takes to float64 at once (32 MiB).
GROUP_SUM_WHOLE_ELEMENTS = 1 << 22


def _sorted_groups(keys, k=None, cap=None, work=None):
    """``(order, distinct, group, level)`` of host int64 :func:`refine_groups` ``keys`` (of
    ``k`` centers): the stable order that sorts them, the sorted distinct keys, each key's
    index among them, and the level of :func:`coarsen_refine_keys` they were taken to. With
    ``cap``, the finest level with at most ``cap`` distinct keys (or the top one); a
    coarser level maps sorted keys to sorted keys, so the order of the first sort serves
    every level. ``work`` (a :class:`._distances.Workspace`): the per-row temporaries and
    ``group`` in its buffers (valid until its next use), the same numbers."""
    n = keys.shape[0]
    if work is None:
        return _sorted_groups_in(keys, k, cap, n, _FreshArrays())
    return _sorted_groups_in(keys, k, cap, n, work)


class _FreshArrays:
    """A stand-in for a :class:`._distances.Workspace` that makes every array fresh."""

    def take(self, name, shape, dtype):
        return np.empty(shape, dtype=dtype)


def _sorted_groups_in(keys, k, cap, n, work):
    """:func:`_sorted_groups` with its per-row arrays from ``work``."""
    if n and int(keys.max()) < np.iinfo(np.int64).max // n:
        # Each key with its row appended is distinct, so any sort gives the stable order:
        # numpy's default sort of int64 took 2 ms on a 100,000-row chunk, its stable one 7.
        appended = np.multiply(keys, n, out=work.take("top_labels1", (n,), np.int64))
        appended += arange_into(work.take("top_labels2", (n,), np.int64))
        order = np.argsort(appended)
        del appended
    else:
        order = np.argsort(keys, kind="stable")
    ranked = np.take(keys, order, out=work.take("top_labels2", (n,), np.int64), mode="clip")
    first = work.take("first", (n,), bool)
    first[:1] = True
    np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
    level = 0
    while cap is not None and level < REFINE_TOP_LEVEL and np.count_nonzero(first) > cap:
        level += 1
        ranked = coarsen_refine_keys(ranked, level, k)
        np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
    group = work.take("band", (n,), np.int64)
    index = np.cumsum(first, out=work.take("top_labels1", (n,), np.int64))
    index -= 1
    group[order] = index
    return order, ranked[first], group, level


def _group_sums(X, w, group, n_groups, order=None, work=None):
    """Float64 sums (weighted by ``w`` unless None) of the numpy rows of X by ``group``
    (``order``: the stable order of ``group``, when the caller has it).

    The rows are added in order of group by a sparse (groups x rows) indicator. Rows of at
    most :data:`GROUP_SUM_WHOLE_ELEMENTS` values are taken to float64 at once (a 100,000 x
    32 chunk in 6 ms instead of 12); larger ones go a cache-sized block at a time, each
    block gathered, taken to float64 and added into its (contiguous) range of groups, so no
    float64 copy of X is made (for MNIST one would be 440 MB, and its allocation took most
    of a refinement leaf). Both add each group's rows in the same order (a group cut by a
    block's end gets two partial sums added: the last digit can differ between the two).
    ``work`` (a :class:`._distances.Workspace`): the float64 rows in its buffers, and the
    indicator taken column by column (:func:`._indicator.indicator_sums`, no sort), the same
    numbers.
    """
    from scipy import sparse

    n, d = X.shape
    if work is not None and n * d <= GROUP_SUM_WHOLE_ELEMENTS:
        rows = work.take("rows64", (n, d), np.float64)
        rows[...] = X
        if w is None:
            w = work.take("top_dists2", (n,), np.float64)
            w.fill(1.0)
        return indicator_sums(group, w, n_groups, rows, work, "group_sums").copy()
    if order is None:  # else the stable order of the groups, given
        order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    data = np.ones(n) if w is None else w[order]
    if n * d <= GROUP_SUM_WHOLE_ELEMENTS:
        indptr = np.searchsorted(sorted_group, np.arange(int(n_groups) + 1))
        indicator = sparse.csr_matrix((data, order, indptr), shape=(int(n_groups), n))
        return np.asarray(indicator @ X.astype(np.float64))
    out = np.zeros((int(n_groups), d))
    step = max(256, GROUP_SUM_ELEMENTS // max(d, 1))
    for start in range(0, n, step):
        idx = order[start : start + step]
        block = X[idx].astype(np.float64)
        g = sorted_group[start : start + step]
        # The block's groups are one range: a (range x block) indicator adds them in order.
        local = g - g[0]
        span = int(local[-1]) + 1
        indptr = np.searchsorted(local, np.arange(span + 1))
        indicator = sparse.csr_matrix(
            (data[start : start + step], np.arange(idx.shape[0]), indptr),
            shape=(span, idx.shape[0]),
        )
        out[g[0] : g[0] + span] += indicator @ block
    return out


def coarsen_refine_keys(keys, level, k):
    """:func:`refine_groups` keys at a coarser ``level`` (host int64): levels 1 to 6 merge
    ``2**level`` neighbouring bands, 7 drops the third-nearest center, 8 the second."""
    if level >= REFINE_TOP_LEVEL - 1:
        span = refine_key_span(k) // (1 if level >= REFINE_TOP_LEVEL else int(k))
        return keys // span * span
    band = keys % REFINE_BANDS
    return keys - band + ((band >> level) << level)


def reduce_refine_groups(keys, weights, offsets, sq):
    """Groups of equal key added up, in the order given (host numpy; sorted distinct keys)."""
    distinct, group = np.unique(keys, return_inverse=True)
    n = distinct.shape[0]
    return (
        distinct,
        segment_sum(weights, group, n),
        segment_sum(offsets, group, n),
        segment_sum(sq, group, n),
    )


def refine_lloyd_stats(keys, weights, offsets, sq, centers):
    """``(sums, weights, cost)`` of the exact Lloyd step from ``centers`` (host numpy, the
    centers the groups were made from): per center the weighted sum and weight of the rows
    nearest it, and the weighted cost of all rows."""
    k = centers.shape[0]
    nearest_center = keys // refine_key_span(k)
    mass = segment_sum(weights, nearest_center, k)
    sums = segment_sum(offsets, nearest_center, k) + mass[:, None] * centers
    return sums, mass, float(math.fsum(sq))


def refine_points(keys, weights, offsets, sq, centers, origin=None, dtype=None):
    """The groups as weighted points for a Lloyd run: ``(centroids, weights, sse)`` of the
    groups with weight (host numpy); ``sse`` is each group's own squared error, so for any
    centers the groups' cost plus ``sse.sum()`` bounds the rows' cost from above.

    With ``origin``, the centroids are given relative to it; with ``dtype``, in that type.
    Sorted keys (as merged groups keep them) make each center's groups one run, which gets
    its center added in place: one (groups x d) array is made instead of the five (a mask's
    copy, the mean offsets, a gather of the centers, the shifted and cast copies) that took
    MNIST's refinement at k=50 0.4 s of its 1.5 s.
    """
    k = centers.shape[0]
    heavy = weights > 0
    if not np.all(heavy):
        keys, weights, offsets, sq = keys[heavy], weights[heavy], offsets[heavy], sq[heavy]
    points = offsets / weights[:, None]
    sse = np.maximum(sq - np.einsum("ij,ij->i", offsets, points), 0.0)
    shift = centers if origin is None else centers - origin
    nearest_center = keys // refine_key_span(k)
    if np.all(nearest_center[1:] >= nearest_center[:-1]):
        for j, run in _center_runs(nearest_center, k):
            points[run] += shift[j]
    else:
        points += shift[nearest_center]
    if dtype is not None:
        points = points.astype(dtype, copy=False)
    return points, weights, sse


def lloyd_step_centers(sums, weights, centers, candidates, candidate_weights):
    """Centers after a Lloyd step from merged :func:`refine_lloyd_stats`; a center without rows
    is re-seeded.

    A center with weight is the weighted mean of its rows. The centers with none take, in
    their order, the ``candidates`` (e.g. the summary's group centroids, weighted by
    ``candidate_weights``) of largest weighted squared distance to the nearest kept center
    (distinct, ties by index, so the choice is deterministic). Returns ``(centers float64,
    number re-seeded)``. Precondition: ``weights`` not all zero; one namespace.
    """
    xp = namespace(sums)
    centers = xp.astype(centers, xp.float64)
    kept = weights > 0
    new = xp.where(kept[:, None], sums / xp.maximum(weights, 1e-300)[:, None], centers)
    empty = xp.nonzero(~kept)[0]
    n_empty = int(empty.shape[0])
    if not n_empty:
        return new, 0
    heavy = candidate_weights > 0  # a weightless group has no centroid
    cand = xp.astype(candidates[heavy, ...], xp.float64)
    _, dist = nearest(cand, new[kept, ...])
    score = xp.astype(candidate_weights[heavy], xp.float64) * dist
    order = xp.argsort(-score, stable=True)
    picks = xp.take(order, xp.arange(n_empty, device=device(order)) % order.shape[0])
    fill = segment_sum(xp.take(cand, picks, axis=0), empty, centers.shape[0])
    return xp.where(kept[:, None], new, fill), n_empty
