"""The final solve's last step on the groups' spread: a Lloyd run that lets a group straddle two
centers.

A summary's group is its rows' weight W, mean mu and squared error SSE. Lloyd on the group
means moves each group whole to its nearest center, so the solve's fixed point is that of the
means, not of the rows: on word embeddings (400k x 50, 32 rows a group, k=500) ten Lloyd
iterations on all rows from the one pass's centers lowered the cost by 1.8 %, and Lloyd on
the groups from those centers gave back 1.3 % of it, whatever the start. Here a group's rows
are taken as spread about mu with variance ``SSE / (W d)`` in every direction; along the
normal of the border between its two nearest centers, the share ``p = Phi(-h / s)`` beyond the
border (at distance h from mu) goes to the second center, with its conditional mean. The
centers move to the means of the shares (:func:`spread_lloyd`). The same model gives the
expected cost of any centers (:func:`spread_cost`), which decides whether the moved centers
are kept. Well separated groups (h >> s) do not straddle: there the run is Lloyd's.

Preconditions for everything here: host numpy float arrays, positive weights, k >= 2.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from scipy import sparse
from scipy.special import ndtr

from ._distances import Workspace
from ._pool import SMALL_VALUES, map_calls

#: Iterations of :func:`spread_lloyd` after the final solve (each one assignment of the
#: groups to their two nearest centers). On word embeddings (400k x 50, 32 rows a group),
#: from the one pass's centers: k=500, 5 iterations gave 0.33 % lower cost on all rows, 10
#: gave 0.37 %, 20 gave 0.40 %; k=100, 0.23 % with 5 and 0.24 % with 10.
SPREAD_ITER = 5

#: The polished centers are kept only when they lower the expected cost by more than this
#: fraction: where no group straddles a border (separated clusters) the solve's centers stay
#: as they are, not moved by rounding (the solve's distances are float32).
MIN_GAIN = 1e-5

#: Rows of the group-by-center distance matrix computed at once.
BLOCK_ROWS = 2048


def _two_nearest(P, centers):
    """Each row's nearest and second-nearest center: (i1, d1, i2, d2), squared distances
    (float64, from the expansion ``|x|^2 + |c|^2 - 2 x.c``; two argmins per row block). The
    blocks run side by side (:func:`._pool.map_calls`, one BLAS thread each) for at most
    :data:`._pool.SMALL_VALUES` values: each block's numbers are the same either way. Each
    thread keeps one block buffer for the call (with glibc's mmap threshold fixed, as
    distributed's nanny sets it, a fresh block each was most of the polish's page faults);
    at most one per thread is alive, as before.
    """
    m, k = P.shape[0], centers.shape[0]
    buffers, lock = {}, threading.Lock()
    c_sq = np.einsum("ij,ij->i", centers, centers)
    # -2 c: the product is -2 x.c exactly (a power of two), one pass less over each block.
    scaled_t = (centers * -2.0).T
    i1 = np.empty(m, dtype=np.int64)
    i2 = np.empty(m, dtype=np.int64)
    d1 = np.empty(m)
    d2 = np.empty(m)

    def block_of(start):
        block = P[start : start + BLOCK_ROWS]
        with lock:
            out = buffers.get(threading.get_ident())
        if out is None:
            out = np.empty((min(BLOCK_ROWS, m), k))
            with lock:
                buffers[threading.get_ident()] = out
        D = np.matmul(block, scaled_t, out=out[: block.shape[0]])
        D += c_sq[None, :]
        D += np.einsum("ij,ij->i", block, block)[:, None]
        stop = start + block.shape[0]
        i1[start:stop], d1[start:stop] = _pop_smallest(D)
        i2[start:stop], d2[start:stop] = _pop_smallest(D)

    starts = range(0, m, BLOCK_ROWS)
    if len(starts) > 1 and m * P.shape[1] <= SMALL_VALUES:
        map_calls([functools.partial(block_of, start) for start in starts], parallel=True)
    else:
        for start in starts:
            block_of(start)
    np.maximum(d1, 0.0, out=d1)
    np.maximum(d2, 0.0, out=d2)
    return i1, d1, i2, d2


def _pop_smallest(D):
    """Each row's smallest entry of D, (column, value), which is then set to +inf in D: two
    argmins over a block's rows took a third to a half of the time of one ``argpartition``
    (20,000 x 32 groups: 8 ms against 21 ms at k=100, 40 against 107 ms at k=500)."""
    rows = np.arange(D.shape[0])
    column = np.argmin(D, axis=1)
    value = D[rows, column]
    D[rows, column] = np.inf
    return column, value


def _border_split(P, w, spread, centers, work=None):
    """For every group: its two nearest centers, the unit normal u of their border (toward
    the second), the share p beyond the border and ``s phi(h / s)`` (the mean offset along u
    of the rows beyond it, times p), and the squared distance to the nearest. ``work``: a
    :class:`._distances.Workspace` shared by the calls of one polish; ``u`` is then its
    buffer, valid until the next call."""
    work = Workspace() if work is None else work
    i1, d1, i2, d2 = _two_nearest(P, centers)
    diff = np.take(centers, i2, axis=0, out=work.take("diff", P.shape, np.float64))
    diff -= np.take(centers, i1, axis=0, out=work.take("first", P.shape, np.float64))
    norm = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    u = np.divide(diff, np.maximum(norm, 1e-300)[:, None], out=diff)
    h = (d2 - d1) / (2.0 * np.maximum(norm, 1e-300))
    with np.errstate(over="ignore"):  # a group far from the border for its spread: a = inf
        a = np.where(spread > 0, h / np.maximum(spread, 1e-300), np.inf)
    p = ndtr(-a)
    tail = spread * np.exp(-0.5 * np.minimum(a, 40.0) ** 2) / np.sqrt(2.0 * np.pi)
    return i1, i2, u, p, tail, h, norm, d1


def group_spread(weights, group_sse, n_features):
    """The rows' standard deviation about their group's mean in one direction:
    ``sqrt(SSE / (W d))``."""
    return np.sqrt(np.maximum(group_sse, 0.0) / (weights * int(n_features)))


def spread_cost(P, w, spread, sse, centers, work=None):
    """Expected cost of the groups' rows to their nearest centers under the spread model:
    ``SSE + W d1`` less what the rows beyond the border to the second center save,
    ``2 W |c2 - c1| (s phi(h / s) - h p)``."""
    return _split_cost(w, sse, _border_split(P, w, spread, centers, work))


def _split_cost(w, sse, split):
    """:func:`spread_cost` from the centers' :func:`_border_split`."""
    _, _, _, p, tail, h, norm, d1 = split
    saved = 2.0 * w * norm * np.maximum(tail - h * p, 0.0)
    return float(np.sum(sse) + np.sum(w * d1) - np.sum(saved))


def spread_lloyd(P, w, spread, centers, n_iter=SPREAD_ITER, split=None, work=None):
    """``n_iter`` Lloyd steps on groups that straddle the border of their two nearest centers.

    Each step sends the share ``p`` of a group's weight beyond the border to the second
    center, at the mean ``mu + u s phi(a) / p``, and the rest to the nearest (the group's first
    moment is kept); each center moves to the mean of what it received (a center that
    received nothing stays). ``split``: the :func:`_border_split` of ``centers`` when the
    caller has it; ``work``: as :func:`_border_split`'s. Returns the centers (float64).
    """
    P = np.asarray(P, dtype=np.float64)
    centers = np.array(centers, dtype=np.float64)
    k = centers.shape[0]
    m = P.shape[0]
    rows = np.arange(m)
    work = Workspace() if work is None else work
    for step in range(int(n_iter)):
        first = step == 0 and split is not None
        i1, i2, u, p, tail, _, _, _ = split if first else _border_split(P, w, spread, centers, work)
        shift = np.multiply((w * tail)[:, None], u, out=work.take("shift", u.shape, np.float64))
        near = sparse.csr_matrix((w * (1.0 - p), (i1, rows)), shape=(k, m))
        far = sparse.csr_matrix((w * p, (i2, rows)), shape=(k, m))
        sums = near @ P + far @ P
        sums += sparse.csr_matrix((np.ones(m), (i2, rows)), shape=(k, m)) @ shift
        sums -= sparse.csr_matrix((np.ones(m), (i1, rows)), shape=(k, m)) @ shift
        mass = np.bincount(i1, w * (1.0 - p), k) + np.bincount(i2, w * p, k)
        moved = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], centers)
        if np.array_equal(moved, centers):
            break
        centers = moved
    return centers


def polish_on_spread(P, w, sse, centers, n_iter=SPREAD_ITER):
    """The centers after :func:`spread_lloyd`, if their expected cost under the spread model
    (:func:`spread_cost`) is lower than that of ``centers`` by more than :data:`MIN_GAIN`;
    else None. P are the groups'
    means relative to any origin the centers share."""
    P = np.asarray(P, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    sse = np.asarray(sse, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    if centers.shape[0] < 2 or P.shape[0] <= centers.shape[0]:
        return None
    spread = group_spread(w, sse, P.shape[1])
    # The polish's work buffers, let go when it returns (none kept by the thread).
    work = Workspace()
    split = _border_split(P, w, spread, centers, work)
    before = _split_cost(w, sse, split)
    moved = spread_lloyd(P, w, spread, centers, n_iter, split, work)
    if spread_cost(P, w, spread, sse, moved, work) < before * (1.0 - MIN_GAIN):
        return moved
    return None


def polish_summary(summary, centers):
    """:func:`polish_on_spread` of a summary's groups (host numpy summaries; others, and
    summaries with no more groups than centers, give ``centers`` back, the same object)."""
    from ._array import is_numpy, namespace

    if not is_numpy(namespace(summary.weights)) or summary.n_groups <= centers.shape[0]:
        return centers
    origin = 0.0 if summary.origin is None else summary.origin
    moved = polish_on_spread(
        summary._relative_centroids, summary.weights, summary.group_sse, centers - origin
    )
    return centers if moved is None else moved + origin
