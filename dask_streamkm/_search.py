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

import numpy as np
from scipy import sparse
from scipy.special import ndtr

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
    """Each row's nearest and second-nearest center: (i1, d1, i2, d2), squared distances.

    The candidates come from float32 products (half the time of float64 ones at thousands
    of groups and hundreds of centers); the squared distances of each row to its three
    nearest candidates are then taken in float64 from the differences, and the two nearest
    kept. A row is sure of them when the second is nearer than the fourth candidate's float32
    distance less twice the bound on the float32 error (:func:`_float32_error`); the few rows
    that are not sure, and k < 4, are done in float64 throughout (:func:`_two_nearest_exact`).
    """
    m, k = P.shape[0], centers.shape[0]
    c_sq_max = float(np.max(np.einsum("ij,ij->i", centers, centers)))
    x_sq_all = np.einsum("ij,ij->i", P, P)
    # |x|^2 + |c|^2 - 2 x.c is at most 2 (|x|^2 + |c|^2): float32 holds it below a quarter
    # of its largest value.
    fits = m == 0 or float(np.max(x_sq_all)) + c_sq_max < float(np.finfo(np.float32).max) / 4
    if k < 4 or not fits:
        return _two_nearest_exact(P, centers)
    C32 = centers.astype(np.float32)
    c_sq32 = np.einsum("ij,ij->i", C32, C32)
    i1 = np.empty(m, dtype=np.int64)
    i2 = np.empty(m, dtype=np.int64)
    d1 = np.empty(m)
    d2 = np.empty(m)
    unsure = []
    for start in range(0, m, BLOCK_ROWS):
        block = P[start : start + BLOCK_ROWS]
        b32 = block.astype(np.float32)
        D = b32 @ C32.T
        D *= -2.0
        D += c_sq32[None, :]
        x_sq = x_sq_all[start : start + BLOCK_ROWS]
        D += x_sq.astype(np.float32)[:, None]
        four = np.argpartition(D, 3, axis=1)[:, :4]
        rows = np.arange(block.shape[0])
        fourth = D[rows, four[:, 3]].astype(np.float64)
        cand = four[:, :3]
        exact = np.empty(cand.shape)
        for j in range(3):
            diff = block - centers[cand[:, j]]
            exact[:, j] = np.einsum("ij,ij->i", diff, diff)
        order = np.argsort(exact, axis=1, kind="stable")[:, :2]
        first = cand[rows, order[:, 0]]
        second = cand[rows, order[:, 1]]
        second_d = exact[rows, order[:, 1]]
        stop = start + block.shape[0]
        i1[start:stop], i2[start:stop] = first, second
        d1[start:stop], d2[start:stop] = exact[rows, order[:, 0]], second_d
        error = _float32_error(P.shape[1], x_sq, c_sq_max)
        unsure.append(start + np.flatnonzero(~(second_d < fourth - 2.0 * error)))
    unsure = np.concatenate(unsure)
    if unsure.size:
        i1[unsure], d1[unsure], i2[unsure], d2[unsure] = _two_nearest_exact(P[unsure], centers)
    return i1, d1, i2, d2


def _float32_error(n_features, x_sq, c_sq_max):
    """A bound on the error of a squared distance ``|x|^2 + |c|^2 - 2 x.c`` computed in
    float32 from float64 rows x and centers c (rounding of the inputs, the d-term products
    and sums, and underflow): ``(2 d + 8) (eps (|x|^2 + max |c|^2) + tiny)``."""
    info = np.finfo(np.float32)
    terms = 2 * int(n_features) + 8
    return terms * (float(info.eps) * (x_sq + c_sq_max) + float(info.tiny))


def _two_nearest_exact(P, centers):
    """:func:`_two_nearest` in float64 throughout (squared distances from the expansion)."""
    m = P.shape[0]
    c_sq = np.einsum("ij,ij->i", centers, centers)
    i1 = np.empty(m, dtype=np.int64)
    i2 = np.empty(m, dtype=np.int64)
    d1 = np.empty(m)
    d2 = np.empty(m)
    for start in range(0, m, BLOCK_ROWS):
        block = P[start : start + BLOCK_ROWS]
        D = c_sq[None, :] - 2.0 * (block @ centers.T)
        D += np.einsum("ij,ij->i", block, block)[:, None]
        rows = np.arange(block.shape[0])
        two = np.argpartition(D, 1, axis=1)[:, :2]
        a, b = two[:, 0], two[:, 1]
        swap = D[rows, b] < D[rows, a]
        first, second = np.where(swap, b, a), np.where(swap, a, b)
        i1[start : start + block.shape[0]] = first
        i2[start : start + block.shape[0]] = second
        d1[start : start + block.shape[0]] = np.maximum(D[rows, first], 0.0)
        d2[start : start + block.shape[0]] = np.maximum(D[rows, second], 0.0)
    return i1, d1, i2, d2


def _border_split(P, w, spread, centers):
    """For every group: its two nearest centers, the unit normal u of their border (toward
    the second), the share p beyond the border and ``s phi(h / s)`` (the mean offset along u
    of the rows beyond it, times p), and the squared distance to the nearest."""
    i1, d1, i2, d2 = _two_nearest(P, centers)
    diff = centers[i2] - centers[i1]
    norm = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    u = diff / np.maximum(norm, 1e-300)[:, None]
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


def spread_cost(P, w, spread, sse, centers):
    """Expected cost of the groups' rows to their nearest centers under the spread model:
    ``SSE + W d1`` less what the rows beyond the border to the second center save,
    ``2 W |c2 - c1| (s phi(h / s) - h p)``."""
    _, _, _, p, tail, h, norm, d1 = _border_split(P, w, spread, centers)
    saved = 2.0 * w * norm * np.maximum(tail - h * p, 0.0)
    return float(np.sum(sse) + np.sum(w * d1) - np.sum(saved))


def spread_lloyd(P, w, spread, centers, n_iter=SPREAD_ITER):
    """``n_iter`` Lloyd steps on groups that straddle the border of their two nearest centers.

    Each step sends the share ``p`` of a group's weight beyond the border to the second
    center, at the mean ``mu + u s phi(a) / p``, and the rest to the nearest (the group's first
    moment is kept); each center moves to the mean of what it received (a center that
    received nothing stays). Returns the centers (float64).
    """
    P = np.asarray(P, dtype=np.float64)
    centers = np.array(centers, dtype=np.float64)
    k = centers.shape[0]
    m = P.shape[0]
    rows = np.arange(m)
    for _ in range(int(n_iter)):
        i1, i2, u, p, tail, _, _, _ = _border_split(P, w, spread, centers)
        shift = (w * tail)[:, None] * u
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
    moved = spread_lloyd(P, w, spread, centers, n_iter)
    before = spread_cost(P, w, spread, sse, centers)
    if spread_cost(P, w, spread, sse, moved) < before * (1.0 - MIN_GAIN):
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
