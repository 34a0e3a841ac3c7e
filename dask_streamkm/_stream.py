"""Streams: a ``partial_fit`` batch folded into the running summary in milliseconds.

A batch is not summarized and solved from scratch. Its rows are compared once with the current
centers (:func:`._distances.nearest_two`: one GEMM per row block, the best two by ``argmax``)
and put in groups keyed by their nearest center j, their second-nearest l, a band of
how close they lie to the border of j and l (:func:`batch_groups`, the refinement pass's keys
with two centers and :data:`STREAM_BANDS` bands) and a shell of how far they lie from j
(:data:`STREAM_SHELLS`, :func:`stream_keys`): near the borders, where a later solve moves
rows between centers, the groups are small. Groups of equal key are added up across batches
(:class:`_Pending`), so the groups made since the last global solve are bounded by the keys
the data reaches (at most ``k * (k - 1) * KEY_SPAN``), however many batches come, besides
the rows far from every center, which keep groups of their own (:func:`far_rows`).

The centers are updated from running sums: each center keeps the weight, linear sum and square
sum of the summary's groups assigned to it (the groups of the last global solve by their
nearest center then, each batch's rows by their nearest center when they came). Every center
is the mean of its part, as Lloyd's step, and the bound ``sum_j SS_j - 2 c_j . S_j + W_j
||c_j||^2`` of that assignment costs ``k * d`` operations: an upper bound of the summary's
bound for the same centers (which gives each group its nearest center), so of the rows' cost.

A global solve runs when it pays (:meth:`Stream.due`): when the rows folded since the last
one reach the rows it saw (the rows seen doubled; with ``half_life``, at least every
:data:`SOLVE_HALF_LIVES` ``* half_life`` rows, the window that still weighs), when the
running bound per unit weight rose by :data:`DRIFT` since then (once an eighth of those
rows came; by :data:`JUMP_DRIFT` at any call), when the summary outgrows the merge budget,
and on request (``refit()``). With the doubling rule the solves' total cost is at most twice
the last one's.

Most of those solves are warm (:func:`warm_solve`): from the current centers, a swap search
that stops at its first step finding no swap that lowers the cost, then at most
:data:`WARM_MAX_ITER` Lloyd iterations over the summary's groups (:func:`bounded_lloyd`: only
the groups whose nearest center may have changed are compared with every center again): two
or three distance passes over the groups (about one group per 12 rows at k=100) and a few
per cent of one per iteration, so with the doubling rule the warm solves cost less than
folding the rows did. A summary over the merge budget is first re-keyed
(:func:`rekey`: its groups added up by the key of their centroid for the current centers, as
a batch's rows are; one distance pass over the groups), then, if still over it, reduced as a
fit's merge is; its centers are kept and the solve is warm. With ``half_life``, a warm
solve's summary is the archive (the groups of the last solve, decayed since by at least a
quarter) re-keyed for the current centers and the groups folded since
(:meth:`Stream.warm_summary`): in dask-ml's ``Incremental`` over 40 blocks of 100,000 x 32 at
k=100 with ``half_life=100_000`` (a warm solve every two blocks) the warm solves took 0.6 s
instead of 1.95 s and the stream 6.5 s instead of 8.0 s, for a weighted cost of 0.9881 of
``fit``'s with the decay weights instead of 0.9890 (2 cores, shared, 2026-12-06); 100 calls
of 4,096 rows: 1.0042, 1.0012, 1.0115 of it over three draws instead of 1.0037, 1.0010,
1.0114. A due solve is the full one
(restarts, swap search and Ward start, as ``fit``) when the bound per unit weight rose by
:data:`FULL_DRIFT` (the data moved too far for a start from the current centers), when the
summary holds no more groups than clusters, and when the rows folded since the last full
solve reach :data:`FULL_ROWS_PER_GROUP` per group of the summary, counting at least
:data:`FULL_MIN_GROUPS_PER_CLUSTER` per cluster (:func:`full_solve_due`). Between them, once
the rows seen reach :data:`RESOLVE_GROWTH` times those at the last full solve or re-solve, a
due warm solve is a re-solve (:func:`resolve_due`): it runs a second time from a fresh start
(:func:`fresh_start`) and keeps the run of lower cost, so that the basin chosen on a stream's
first batch can be left. A due warm solve is a re-solve too once the bound per unit weight
exceeds its value after the last full solve or re-solve by :data:`RESOLVE_DRIFT`
(:func:`drifted`): data that drift a little between the doublings.

Which rule holds for the full solve, and why: by rows per group, because both costs grow
with them. Folding costs about 0.5 microseconds per row at k=100, 32 features (one BLAS
thread; 0.7 with the per-call work of 4,096-row batches), a full solve about 12 to 20 per
group of the summary (Lloyd to convergence and the spread step on every group) plus a part
that does not grow with the groups (restarts, Ward start and swap search on a coarse copy:
about that of 380 groups per cluster). One full solve costs what folding 30 to 40 rows per
group does, so with 100 rows per group (at least 600 groups per cluster counted: a
re-keyed summary holds about 200, and the fixed part is then most of the solve) the full
solves add at most about a third to the work of folding, whatever the batch size. A larger
share kept dask-ml's ``Incremental`` (40 blocks of 100,000 rows) from staying within 1.5
times ``fit``; between full solves the warm ones keep the centers in their basin. A first
batch's full solve gets the restarts its rows pay for at :data:`FIRST_ROWS_PER_GROUP` per
group and :data:`FIRST_ROWS_PER_CLUSTER` per cluster (:func:`first_restarts`): its basin
is the stream's until the next full one or the re-solve. The units are rows and groups,
never seconds: the same calls give the same centers on every machine.

``half_life`` decay is applied lazily: the stored groups carry one common scale (its base-2
logarithm), applied to them when it falls below ``2 ** DECAY_APPLY_LOG2`` or when the summary
is read, so that a call's cost does not depend on the summary's size. The running sums of the
centers are decayed at every call (they are ``k`` rows).

Measured on 100 calls of 4,096 rows of the 32-feature Zipf mixture at k=100 (final centers'
cost over ``fit``'s on all the rows, one seed): with full solves at every doubling, 8 bands
1.0018, 16 bands 0.9983, 32 bands 0.9953 (with 1.5 times the groups of 16); a growth of 4
instead of 2 (three global solves fewer) gave 1.0077 (8 bands) and 1.0047 (16 bands). With
16 bands and the warm solves (one full solve, the first, with 3 restarts): 0.9982 with at
most 10 Lloyd iterations (1.0014 with ``half_life=100_000``), 1.0000 with 5 (1.0022) at about
half the solves' time, 1.0001 with 3; the spread is that of the basins the solves land in.
With the full solves by 100 rows per group and the summary over the budget re-keyed (one
full solve in 100 calls, the first), three draws of the data (seeds 0, 1, 2) gave 0.9990,
0.9978, 1.0058 with at most 5 Lloyd iterations and 1.0006, 0.9976, 1.0058 with 10
(``half_life=100_000``, a solve at least every half-life: 1.0037, 0.9970, 1.0098 and
1.0060, 0.9967, 1.0104; every two half-lives, seed 0: 1.0048): the draw decides, not the
iterations, so a warm solve takes 5. The swap search
rarely finds a swap there (it stops after one step) but moves a center whose part decayed
away in a drifting stream with ``half_life``, which Lloyd's steps leave in place. The keyed
groups are finest near the centers they were made from, so the solves must come often
enough to re-key the stream around good centers.

A batch whose rows lie far from the summary's origin (:func:`far_from`) is not folded: sums
around that origin would lose the rows' spread; the estimator summarizes it as a chunk.

Host (numpy) batches and models, metric "euclidean"; the estimator keeps the full solve per
call for device arrays and cosine.
"""

from __future__ import annotations

import warnings
import zlib

import dask
import dask.core
import numpy as np
from array_api_compat import is_numpy_array
from dask.core import flatten

from . import _distances, _lloyd, _refine_kernels, _runner
from ._array import namespace, segment_sum
from ._indicator import indicator_sums
from ._seeding import kmeans_plusplus
from ._tasks import check_block
from ._threads import blas_limits
from .summary import ORIGIN_NEAR, Summary

#: A global solve when the rows seen reach this multiple of the rows of the last one.
SOLVE_GROWTH = 2.0
#: With ``half_life``, a global solve at the latest once the rows folded since the last one
#: reach this many half-lives (the rows of the last solve then weigh a quarter; every call
#: moves the centers to their parts' means meanwhile). One half-life solved at every call
#: of dask-ml's ``Incremental`` over blocks of ``half_life`` rows: 40 blocks of 100,000 x 32
#: at k=100 took 1.25 times the CPU of two, for a cost 0.1 % higher. Four took 0.92 times
#: the CPU of two (10 warm solves instead of 20, costs 0.9934 and 0.9922 of ``fit`` with
#: the decay weights; 2 cores, shared), but a drifting stream's centers then wait up to
#: four half-lives for the solve that moves a center off a regime that decayed away.
SOLVE_HALF_LIVES = 2.0
#: Bands of the distance ratio between the nearest and second-nearest center in a key.
STREAM_BANDS = 16
#: Shells of a row's cost to its nearest center in a key, a factor 4 apart around the
#: stream's mean cost per unit weight (:func:`stream_keys`).
STREAM_SHELLS = 4
#: Keys per pair of centers.
KEY_SPAN = STREAM_BANDS * STREAM_SHELLS
#: A global solve when the running bound per unit weight exceeds its value after the last
#: global solve by this fraction (and :data:`DRIFT_MIN_FRACTION` of its rows came since).
DRIFT = 0.05
#: The drift rule waits for this fraction of the rows of the last global solve.
DRIFT_MIN_FRACTION = 0.125
#: A scheduled solve is a full one (restarts) when the bound per unit weight rose by this
#: fraction since the last solve: the data moved too far for a start from the current centers.
FULL_DRIFT = 0.25
#: Before :data:`DRIFT_MIN_FRACTION` of the rows came, a warm solve (a re-solve, by
#: :data:`RESOLVE_DRIFT`) when the bound per unit weight rose by this fraction since the last
#: solve: a few batches in a region no center serves. Why: rows sorted by a feature (60,000
#: rows of 12 groups in 30 batches of 2,000 at k=12) brought a new group every few batches;
#: waiting for an eighth of the rows left the centers after the last call at 3.68 times the
#: cost of ``fit`` on the rows (``inertia_`` said so; ``refit()`` gave 1.00). A batch of
#: rows drawn from the data as a whole does not raise the bound by a quarter (a 4,096-row
#: batch after 40,000 rows would cost 3.7 times the rows' mean), so such streams are
#: unchanged.
JUMP_DRIFT = 0.25
#: A solve is the full one once the rows folded since the last full solve reach this many
#: per group of the summary: a full solve costs what folding 30 to 40 rows per group does (a
#: fold about 0.5 microsecond per row at k=100, 32 features; a full solve about 20 per
#: group), so full solves add at most about a third to the work of the stream.
FULL_ROWS_PER_GROUP = 100
#: ...counting at least this many groups per cluster: the restarts, Ward start and swap
#: search on the solve's coarse copy cost about what the per-group steps do on 380 groups
#: per cluster (at k=100, 32 features: 0.5 s on 3,125 groups, 0.85 s on 34,000), so on a
#: small summary (a stream re-keyed, about 200 groups per cluster) a full solve costs what
#: folding 35 x (200 + 380), about 20,000 rows per cluster, does: a third of the folding
#: since is 600 groups per cluster at 100 rows per group. With 300, dask-ml's
#: ``Incremental`` over 40 blocks of 100,000 x 32 at k=100 with ``half_life=100_000``
#: (re-keyed at every warm solve) ran a second full solve (0.85 s) and took 7.0 s instead of
#: 5.5 s, for weighted costs of 0.9881 and 0.9882 of ``fit``'s on two draws of the data
#: against 0.9892 and 0.9861 with 600 (2 cores, shared, 2026-12-07).
FULL_MIN_GROUPS_PER_CLUSTER = 600
#: A first batch's full solve gets ``n_init`` restarts times its rows over this many per
#: group of its summary (:func:`first_restarts`). The first solve's basin is the stream's
#: until the next full solve, which can be millions of rows away: with 100 (the rule's
#: constant) dask-ml's ``Incremental`` over 6 blocks of 2,000 rows at k=8 ended 3 % above
#: ``fit`` on 2 of 10 block orders, with 25 within 0.05 % (the others alike).
FIRST_ROWS_PER_GROUP = 25
#: ... and at most ``n_init`` times its rows over this many per cluster: a batch of few rows
#: per cluster chooses no better basin with more restarts, and each costs about as much as
#: summarizing it (at k=100, 32 features, a 4,096-row first batch, 41 rows a cluster: 14 ms
#: a restart against 20 ms for its summary; one restart instead of three gave the same final
#: centers after 1, 4, 10 and 100 calls on five draws of the Zipf mixture, the Ward start
#: winning). Restarts of a first batch of 250 rows a cluster (k=8, 2,000 rows) are still
#: bounded by the rule per group only.
FIRST_ROWS_PER_CLUSTER = 400
#: Reasons of :meth:`Stream.due` that call for the full solve rather than a warm one.
FULL_REASONS = ("far",)
#: Candidates of a warm solve's swap search per cluster at most (the full solve's: 10).
WARM_SWAPS_PER_CLUSTER = 2
#: Lloyd iterations of a warm solve at most (10 gave the same costs within the draws'
#: spread, at twice the warm solves' time).
WARM_MAX_ITER = 5
#: Rows whose float64 distances :func:`batch_groups` computes at a time.
EXACT_BLOCK_ROWS = 16_384
#: Lazy decay is applied to the stored groups once their scale falls below 2 ** this.
DECAY_APPLY_LOG2 = -32.0


class HalfLifeDecayWarning(UserWarning):
    """Groups of an older summary decayed below what float64 holds and were dropped."""


#: Decayed groups lighter than this are dropped: below it float64 loses digits (subnormals)
#: and the centroids ``linear_sums / weights`` turn into noise or NaN.
MIN_DECAYED_WEIGHT = np.finfo(np.float64).tiny / np.finfo(np.float64).eps


def decay(summary, n_new_rows, half_life):
    """``summary`` decayed by ``2 ** (-n_new_rows / half_life)``: (summary, groups dropped).

    A factor below the smallest normal float64 is applied as two equal halves, so it does not
    vanish. Groups whose decayed weight falls
    below :data:`MIN_DECAYED_WEIGHT` (decided in log space) are dropped rather than kept as
    noise: their mass is negligible next to any batch of rows.
    """
    xp = namespace(summary.weights)
    log2_factor = -float(n_new_rows) / float(half_life)
    if log2_factor >= np.log2(np.finfo(np.float64).tiny):
        scaled = summary.scaled(2.0**log2_factor)
    else:
        half = 2.0 ** (log2_factor / 2.0)
        scaled = summary.scaled(half).scaled(half)
    with np.errstate(divide="ignore"):
        keep = xp.log2(summary.weights) + log2_factor >= np.log2(MIN_DECAYED_WEIGHT)
    dropped = summary.n_groups - int(xp.sum(xp.astype(keep, xp.int64)))
    if not dropped:
        return scaled, 0
    kept = Summary(
        xp.where(keep, scaled.weights, 0.0),
        xp.where(keep[:, None], scaled.linear_sums, 0.0),
        xp.where(keep, scaled.square_sums, 0.0),
        summary.n_seen,
        scaled.origin,
    )
    return kept.drop_empty(), dropped


def warn_dropped(dropped, n_rows, half_life, stacklevel):
    """A :class:`HalfLifeDecayWarning` for ``dropped`` groups decayed over ``n_rows`` rows."""
    warnings.warn(
        f"half_life={half_life!r}: {dropped} group(s) of the older summary decayed by "
        f"2 ** (-{n_rows:g} / {half_life!r}) below what float64 holds and were dropped; their "
        "weight was negligible next to the newer rows. Use a larger half_life to keep older "
        "data.",
        HalfLifeDecayWarning,
        stacklevel=stacklevel + 1,
    )


def batch_groups(
    X, centers, origin, sample_weight=None, check_far=True, spread=0.0, outlier=np.inf, scale=None
):
    """A batch's rows in groups by their two nearest ``centers`` and band, with their sums.

    Returns ``(keys, weights, sums, squares)``: the sorted distinct keys of
    :func:`stream_keys` (int64: j nearest, l second nearest, the band of ``(d_l - d_j) /
    (d_l + d_j)`` and the shell of ``d_j`` for the mean cost ``scale``), each group's total
    weight, its weighted sum of
    ``x - origin`` and of ``||x - origin||^2`` (float64), groups of zero weight left out.
    Sums and squares are taken of the rows moved to ``origin`` in float64
    (:func:`_group_moments`), so rows far from zero keep their digits. A second value holds
    each row's nearest center and its squared distances to its two nearest, ``(j, d_j,
    d_l)``, for :func:`host_labels`. None
    when the rows lie far from ``origin`` (:func:`far_from`, at least by the summary's
    ``spread``; unchecked without ``check_far``). A row whose cost to its nearest center
    (weighted) exceeds ``outlier`` gets a key of its own (:func:`far_rows`); the keys are
    then shifted by :func:`serial_bits` (far rows' serials below).
    Preconditions: host numpy X
    (n >= 1, checked finite), float64 ``centers`` (k, d) and ``origin`` (d,).
    """
    k = centers.shape[0]
    first, second, d1, d2 = _distances.nearest_two(X, centers.astype(X.dtype))
    bits = serial_bits(k)
    keys = stream_keys(first, second, d1, d2, k, scale) << bits
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    far = far_rows(d1, w, outlier) if bits else ()
    if len(far):
        keys[far] += row_serials(X[far], bits)
    order, distinct, group, _ = _refine_kernels._sorted_groups(keys)
    n_groups = distinct.shape[0]
    weights = (
        np.bincount(group, minlength=n_groups).astype(np.float64)
        if w is None
        else np.bincount(group, weights=w, minlength=n_groups)
    )
    linear, squares = _group_moments(X, w, weights, group, order, origin)
    keep = weights > 0
    if not np.all(keep):
        distinct, weights, linear, squares = (
            distinct[keep],
            weights[keep],
            linear[keep],
            squares[keep],
        )
    parts = (distinct, weights, linear, squares)
    if check_far and far_from(parts, spread):
        return None
    return parts, (first, d1, d2)


#: A row whose cost to its nearest center is at least this share of the running summary's
#: cost bound gets a key of its own in a fold (:func:`far_rows`)...
OUTLIER_SHARE = 0.01
#: ...the costliest this many rows of a batch at most (the others keyed as usual).
FAR_ROWS_PER_BATCH = 64
#: Bits of a key below its centers, band and shell (:func:`serial_bits`): a far row's serial.
#: 16 keep a batch's keys times its rows within int64 up to k of a few thousand (the sort's
#: fast path, :func:`._refine_kernels._sorted_groups`).
SERIAL_BITS = 16


def serial_bits(k):
    """Bits under a stream key (:func:`stream_keys`) for far rows' serials
    (:data:`SERIAL_BITS`, fewer where the keys of ``k`` centers would not leave room in
    int64)."""
    return max(0, min(SERIAL_BITS, 62 - int(k * k * KEY_SPAN).bit_length()))


def far_rows(d1, w, outlier):
    """The rows (indices, at most :data:`FAR_ROWS_PER_BATCH`, costliest first) whose cost to
    their nearest center, ``d1`` (times the weight ``w`` unless None), exceeds ``outlier``
    (:meth:`Stream.outlier_cost`).

    Why: a fold keys a row by its two nearest centers and band, so a row far from every
    center joined the rows near the border of those two, and the group's error then held
    the far row's whole cost, which no solve can take back (on 400,123 standardized lab
    readings, two of them 281 deviations out, the stream of 4,096-row batches at k=10 ended
    at 1.22 times ``KMeans(n_init=10)``'s cost, against 1.0002 for ``fit``). With a key of
    its own (:func:`row_serials`) a far row stays a group of its own, as in a chunk's leaf."""
    if not np.isfinite(outlier) or d1.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    cost = d1 if w is None else d1 * w
    far = np.flatnonzero(cost > outlier)
    if far.shape[0] > FAR_ROWS_PER_BATCH:
        far = far[np.argsort(-cost[far], kind="stable")[:FAR_ROWS_PER_BATCH]]
    return far


def row_serials(rows, bits):
    """Serials in ``[1, 2 ** bits)`` of ``rows`` (CRC-32 of each row's bytes): equal rows get
    one serial, and so one group; others one each, but for a chance of about ``2 ** -bits``
    per pair of far rows of one key."""
    rows = np.ascontiguousarray(rows)
    span = (1 << bits) - 1
    return np.array([1 + zlib.crc32(row.tobytes()) % span for row in rows], dtype=np.int64)


def _group_moments(X, w, weights, group, order, origin):
    """Each group's weighted sum of ``x - origin`` and of ``||x - origin||^2`` (float64),
    for :func:`batch_groups`.

    The rows are taken to float64 and moved to ``origin`` there (X's values are exact in
    float64), so the squares are those of the rows' own deviations, rows far from zero
    included; with :data:`._refine_kernels.GROUP_SUM_WHOLE_ELEMENTS` values at most, the
    rows and their squared norms are one (n, d + 1) block in the thread's kept buffer and
    one indicator product adds up both (no float32 round trip, no per-group moves).
    ``weights``: each group's total weight (one per group). Preconditions: as
    :func:`batch_groups`; ``group`` in ``[0, len(weights))``, ``order`` its stable order."""
    n, d = X.shape
    n_groups = weights.shape[0]
    work = _distances.thread_workspace("stream")
    if n * (d + 1) <= _refine_kernels.GROUP_SUM_WHOLE_ELEMENTS:
        rows = work.take("moments", (n, d + 1), np.float64)
        moved = np.subtract(X, origin, out=rows[:, :d])
        rows[:, d] = np.einsum("ij,ij->i", moved, moved)
        if w is None:
            w = work.take("moments:ones", (n,), np.float64)
            w.fill(1.0)
        out = indicator_sums(group, w, n_groups, rows, work, "moments:sums")
        return out[:, :d].copy(), out[:, d].copy()
    # A large block: its float64 rows a block at a time (memory bounded by the block).
    exact = np.empty(n)
    for start in range(0, n, EXACT_BLOCK_ROWS):
        moved = np.subtract(X[start : start + EXACT_BLOCK_ROWS], origin)
        exact[start : start + EXACT_BLOCK_ROWS] = np.einsum("ij,ij->i", moved, moved)
    squares = np.bincount(group, weights=exact if w is None else w * exact, minlength=n_groups)
    sums = _refine_kernels._group_sums(X, w, group, n_groups, order, work=work)
    return sums - weights[:, None] * origin, squares


def stream_keys(first, second, d1, d2, k, scale=None):
    """Keys ``((j * k + l) * STREAM_BANDS + band) * STREAM_SHELLS + shell`` (int64) of points
    of nearest center ``first`` (j) and second-nearest ``second`` (l) at squared distances
    ``d1`` and ``d2``: ``band`` is ``floor(STREAM_BANDS * sqrt((d2 - d1) / (d2 + d1)))``, how
    near the border of j and l a point lies, and ``shell`` ``floor(log4(d1 / scale)) + 2``
    clipped to ``[0, STREAM_SHELLS)``, how far from j (0 without a positive ``scale``, the
    mean cost per unit weight).

    Why the shells: without them the points deep in j's cell went into one group per l, a
    wedge from the center to the border, which a later solve's border could cut; rows
    folded with early centers kept such groups. Streams of 4,096-row batches against
    ``fit``, medians over seeds 0-2, on six real tables of R packages in their own row
    order, GeoNames cities shuffled and a Student-t(3) sample, k from 10 to 100 (2 cores,
    2026-12-07): median of the eight 1.0279 -> 1.0229, six lower and two equal, with 5-20 %
    more groups and the same time a call."""
    ratio = (d2 - d1) / np.maximum(d2 + d1, 1e-300)
    band = np.minimum(
        np.floor(STREAM_BANDS * np.sqrt(np.clip(ratio, 0.0, 1.0))).astype(np.int64),
        STREAM_BANDS - 1,
    )
    keys = ((first * k + second) * STREAM_BANDS + band) * STREAM_SHELLS
    if scale is not None and np.isfinite(scale) and scale > 0:
        with np.errstate(divide="ignore"):
            level = np.floor(np.log2(np.asarray(d1, dtype=np.float64) / scale) / 2.0)
        keys += np.clip(level + STREAM_SHELLS // 2, 0, STREAM_SHELLS - 1).astype(np.int64)
    return keys


def rekey(summary, centers, outlier=np.inf, scale=None):
    """The summary's groups added up by the key of their centroid for ``centers``
    (:func:`stream_keys`, with shells for the mean cost ``scale``, none without): a summary
    of at most the keys its groups reach (``k * (k - 1) * KEY_SPAN`` at most, or ``k * (k -
    1) * STREAM_BANDS`` without ``scale``, besides far groups), its CF rows summed exactly,
    ``n_seen`` kept. A summary over the merge budget is re-keyed without shells (a
    reduction: with them, a small budget at a few centers was exceeded again at once, a
    global solve every few calls). The archive of a warm solve with ``half_life`` is
    re-keyed with them (without, the 100-call stream's cost rose from 0.9948 to 1.0097 of
    ``fit``'s on one draw).

    The reduction of a stream's summary over the merge budget: the groups merge as a
    batch's rows do when folded, finest near the borders of the current centers, where a
    solve moves weight between centers. One distance pass over the groups instead of
    :meth:`.Summary.reduce`'s seeding of half the budget: in dask-ml's ``Incremental`` over
    40 blocks of 100,000 x 32 at k=100, the call over the budget (45,000 groups, re-keyed
    to 9,700) took 0.2 s with its warm solve, against 1.6 s reduced to half the budget
    and solved warm (2 cores, shared). Groups of a cost above ``outlier`` to their nearest
    center keep their place (:func:`far_rows`, all of them). Preconditions: host float64
    ``centers`` (k >= 1, d) and summary."""
    origin = np.zeros(summary.n_features) if summary.origin is None else summary.origin
    points = summary._relative_centroids
    rel = np.asarray(centers, dtype=np.float64) - origin
    (first, second), (d1, d2) = _distances.nearest_top(points, rel, 2)
    keys = stream_keys(first, second, d1, d2, rel.shape[0], scale)
    if np.isfinite(outlier):
        far = np.flatnonzero(d1 * summary.weights > outlier)
        keys[far] = int(keys.max()) + 1 + np.arange(far.shape[0])
    distinct, group = np.unique(keys, return_inverse=True)
    return summary.group_by(group, distinct.shape[0])


def far_from(parts, spread=0.0):
    """True when the mean of a batch's keyed groups (:func:`batch_groups`, sums relative to
    the origin) lies more than ``ORIGIN_NEAR`` root-mean-square deviations from the origin:
    sums around it lose the rows' spread to cancellation (as :func:`.summary.chunk_origin`
    decides for a chunk). From the groups' totals, in float64, without another pass over the
    rows: the spread ``SS / W - ||S / W||^2`` loses about three of float64's digits at the
    threshold, the float32 rows' own seven were kept by the squares taken in float64 around
    the origin. Groups of no weight are never far.

    ``spread``: the mean squared deviation of the summary's rows (:func:`parts_spread`), the
    least spread the batch is judged by. A batch of one row, or of equal rows, has none of
    its own (its groups' errors are zero whatever the origin): judged by its own spread alone,
    every such batch was far, and each ``partial_fit`` of one row summarized and solved in
    full. Rows within ``ORIGIN_NEAR`` deviations of the summary's spread are as near the
    origin as the summary's own rows."""
    _, weights, sums, squares = parts
    total = float(np.sum(weights))
    if total <= 0:
        return False
    mean = np.sum(sums, axis=0) / total
    offset = float(np.dot(mean, mean))
    own = float(np.sum(squares)) / total - offset
    return offset > ORIGIN_NEAR**2 * max(own, float(spread))


def parts_spread(weights, sums, squares):
    """The mean squared deviation of a summary's rows from their mean, from its sums by part
    (the centers' ``weights``, ``sums`` of ``x - origin`` and ``squares``, :class:`Stream`'s):
    ``SS / W - ||S / W||^2``, at least 0 (0 without weight). k rows instead of every group (3
    ms a solve on 22,000 groups at k=100); the origin lies among the rows (:func:`far_from`'s
    test), so the difference keeps the digits a lower bound for that test needs."""
    total = float(np.sum(weights))
    if not total > 0:
        return 0.0
    mean = np.sum(sums, axis=0) / total
    return max(float(np.sum(squares)) / total - float(mean @ mean), 0.0)


def merge_groups(parts):
    """Keyed groups of several blocks (:func:`batch_groups` results) added up by key."""
    keys = np.concatenate([p[0] for p in parts])
    distinct, group = np.unique(keys, return_inverse=True)
    n = distinct.shape[0]
    return (
        distinct,
        segment_sum(np.concatenate([p[1] for p in parts]), group, n),
        segment_sum(np.concatenate([p[2] for p in parts]), group, n),
        segment_sum(np.concatenate([p[3] for p in parts]), group, n),
    )


class _Pending:
    """Keyed groups added up across batches, in arrays grown by doubling (private state).

    ``keys`` are sorted, ``slots[i]`` the row of ``keys[i]`` in the arrays; new keys take the
    next rows, so a batch's sums are added in place: no copy of the groups per call.
    """

    def __init__(self, n_features):
        self.keys = np.empty(0, dtype=np.int64)
        self.slots = np.empty(0, dtype=np.int64)
        self.n = 0
        self.weights = np.zeros(0)
        self.sums = np.zeros((0, n_features))
        self.squares = np.zeros(0)

    def _reserve(self, n):
        if n <= self.weights.shape[0]:
            return
        size = max(n, 2 * self.weights.shape[0], 64)
        for name in ("weights", "sums", "squares"):
            old = getattr(self, name)
            new = np.zeros((size,) + old.shape[1:])
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def add(self, keys, weights, sums, squares, scale):
        """Add sorted distinct ``keys``' groups, each multiplied by ``scale``."""
        pos = np.searchsorted(self.keys, keys)
        found = pos < self.keys.shape[0]
        found[found] = self.keys[pos[found]] == keys[found]
        slot = np.empty(keys.shape[0], dtype=np.int64)
        slot[found] = self.slots[pos[found]]
        fresh = np.flatnonzero(~found)
        slot[fresh] = self.n + np.arange(fresh.shape[0])
        self._reserve(self.n + fresh.shape[0])
        if fresh.shape[0]:
            self.keys = np.insert(self.keys, pos[fresh], keys[fresh])
            self.slots = np.insert(self.slots, pos[fresh], slot[fresh])
            self.n += int(fresh.shape[0])
        if scale != 1.0:  # (no decay yet, or none: the batch's sums as they are, exactly)
            weights, sums, squares = scale * weights, scale * sums, scale * squares
        self.weights[slot] += weights
        self.sums[slot] += sums
        self.squares[slot] += squares

    def scale(self, factor):
        self.weights[: self.n] *= factor
        self.sums[: self.n] *= factor
        self.squares[: self.n] *= factor

    def summary(self, origin):
        """The groups as a Summary (copies, in slot order), rows seen not counted."""
        n = self.n
        return Summary(
            self.weights[:n].copy(), self.sums[:n].copy(), self.squares[:n].copy(), 0, origin
        ).drop_empty()


class Stream:
    """What ``partial_fit`` keeps between calls (private, mutable state of one estimator).

    ``archive``: the summary of the last global solve (in stored units); ``pending``: the
    keyed groups folded since; both times ``2 ** log2_scale`` are the decayed values.
    ``weights``, ``sums``, ``squares``: the running sums of each center's part (decayed,
    relative to ``origin``).
    """

    def __init__(self, summary, centers, labels=None):
        self.archive = summary
        self.origin = (
            np.zeros(summary.n_features)
            if summary.origin is None
            else np.asarray(summary.origin, dtype=np.float64)
        )
        self.pending = _Pending(summary.n_features)
        self.log2_scale = 0.0
        self.rows = int(summary.n_seen)
        self.rows_at_solve = self.rows
        self.rows_since = 0
        centers = np.asarray(centers, dtype=np.float64)
        k = centers.shape[0]
        if labels is None:
            labels, _ = _distances.nearest(summary._relative_centroids, centers - self.origin)
        self.weights = segment_sum(summary.weights, labels, k)
        self.sums = segment_sum(summary.linear_sums, labels, k)
        self.squares = segment_sum(summary.square_sums, labels, k)
        self.bound_at_solve = self.per_weight(centers)
        # The least spread a batch is judged by in far_from (a batch of one row has none).
        self.spread = parts_spread(self.weights, self.sums, self.squares)
        self._summary = summary

    @property
    def n_groups(self):
        return self.archive.n_groups + self.pending.n

    def per_weight(self, centers):
        """The running bound (:meth:`bound`) for ``centers`` per unit of the (decayed) weight
        folded so far: what the drift rules compare (:meth:`due`, :func:`drifted`)."""
        return self.bound(centers) / max(float(np.sum(self.weights)), 1e-300)

    def outlier_cost(self):
        """The cost of one row beyond which it gets a key of its own in a fold
        (:func:`far_rows`): :data:`OUTLIER_SHARE` of the cost bound of the rows folded so
        far, at the last solve's bound per unit weight."""
        return OUTLIER_SHARE * self.bound_at_solve * float(np.sum(self.weights))

    def fold(self, parts, n_rows, half_life):
        """Fold a batch's keyed groups (:func:`batch_groups`) of ``n_rows`` rows in, after
        decaying what came before by ``half_life``; returns the groups dropped by decay."""
        dropped = 0
        if half_life is not None:
            factor = 2.0 ** (-float(n_rows) / float(half_life))
            self.weights, self.sums, self.squares = (
                self.weights * factor,
                self.sums * factor,
                self.squares * factor,
            )
            self.log2_scale -= float(n_rows) / float(half_life)
            if self.log2_scale < DECAY_APPLY_LOG2:
                dropped = self._apply_decay(half_life)
        keys, weights, sums, squares = parts
        inverse = 2.0 ** (-self.log2_scale)
        self.pending.add(keys, weights, sums, squares, inverse)
        # The keys are sorted, so each center's groups are one run: its sums by reduceat.
        k = self.weights.shape[0]
        nearest_center = (keys >> serial_bits(k)) // (k * KEY_SPAN)
        starts = np.flatnonzero(np.r_[True, nearest_center[1:] != nearest_center[:-1]])
        if starts.shape[0]:
            at = nearest_center[starts]
            self.weights = self.weights.copy()
            self.sums = self.sums.copy()
            self.squares = self.squares.copy()
            self.weights[at] += np.add.reduceat(weights, starts)
            self.sums[at] += np.add.reduceat(sums, starts, axis=0)
            self.squares[at] += np.add.reduceat(squares, starts)
        self.rows += int(n_rows)
        self.rows_since += int(n_rows)
        self._summary = None
        return dropped

    def _apply_decay(self, half_life):
        """Apply the lazy scale to the stored groups; returns the groups dropped."""
        self.archive, dropped = decay(self.archive, -self.log2_scale, 1.0)
        self.pending.scale(2.0**self.log2_scale)
        self.log2_scale = 0.0
        return dropped

    def centers(self, previous):
        """Each center at the mean of its part (``previous`` where the part is empty)."""
        previous = np.asarray(previous, dtype=np.float64)
        kept = self.weights > 0
        means = self.origin + self.sums / np.maximum(self.weights, 1e-300)[:, None]
        return np.where(kept[:, None], means, previous)

    def bound(self, centers):
        """Upper bound on the cost of every summarized row to ``centers`` (each part to its
        center): ``sum_j SS_j - 2 (c_j - o) . S_j + W_j ||c_j - o||^2``, at least 0."""
        rel = np.asarray(centers, dtype=np.float64) - self.origin
        total = (
            np.sum(self.squares)
            - 2.0 * np.einsum("ij,ij->", rel, self.sums)
            + np.dot(self.weights, np.einsum("ij,ij->i", rel, rel))
        )
        return max(float(total), 0.0)

    def due(self, centers, budget, half_life):
        """Why a global solve is due now, or None: "budget" and "far" (the bound per unit
        weight rose by :data:`FULL_DRIFT`) call for the full solve (:data:`FULL_REASONS`),
        "rows", "drift" and "jump" (the bound per unit weight rose by :data:`JUMP_DRIFT`
        before :data:`DRIFT_MIN_FRACTION` of the rows came) for a warm one
        (:func:`warm_solve`)."""
        window = self.rows_at_solve
        if half_life is not None:
            window = min(window, SOLVE_HALF_LIVES * half_life)
        if self.n_groups > budget:
            return "budget"
        rows = self.rows_since >= (SOLVE_GROWTH - 1.0) * window
        per_weight = self.per_weight(centers)
        if not rows and self.rows_since < DRIFT_MIN_FRACTION * window:
            # Few rows since the last solve: a warm solve only for a jump (JUMP_DRIFT).
            return "jump" if per_weight > (1.0 + JUMP_DRIFT) * self.bound_at_solve else None
        if per_weight > (1.0 + FULL_DRIFT) * self.bound_at_solve:
            return "far"
        if rows:
            return "rows"
        return "drift" if per_weight > (1.0 + DRIFT) * self.bound_at_solve else None

    def warm_summary(self, centers, half_life):
        """The summary a warm solve from ``centers`` runs on: :meth:`summary`, where with
        ``half_life`` the groups of the last global solve (the archive, which decayed by at
        least the factor of the rows folded since) are first added up by their key for
        ``centers`` (:func:`rekey`), as a batch's rows are; the groups folded since are kept
        as they are. Without ``half_life`` the summary itself."""
        if half_life is None or self.archive.n_groups <= self.pending.n:
            return self.summary()
        archive = rekey(self.archive, centers, self.outlier_cost(), self.bound_at_solve)
        merged = archive.merge(self.pending.summary(self.archive.origin))
        merged = Summary(
            merged.weights, merged.linear_sums, merged.square_sums, self.rows, merged.origin
        )
        if self.log2_scale:
            merged, _ = decay(merged, -self.log2_scale, 1.0)
        return merged

    def summary(self):
        """The summary of every row folded so far, decayed (a new Summary, cached until the
        next fold)."""
        if self._summary is None:
            merged = self.archive.merge(self.pending.summary(self.archive.origin))
            merged = Summary(
                merged.weights, merged.linear_sums, merged.square_sums, self.rows, merged.origin
            )
            if self.log2_scale:
                merged, _ = decay(merged, -self.log2_scale, 1.0)
            self._summary = merged
        return self._summary


def full_solve_due(rows_since_full, n_groups, n_clusters):
    """True when a due solve is the full one: the rows folded since the last full solve
    reach :data:`FULL_ROWS_PER_GROUP` per group of the summary, counting at least
    :data:`FULL_MIN_GROUPS_PER_CLUSTER` groups per cluster."""
    groups = max(int(n_groups), FULL_MIN_GROUPS_PER_CLUSTER * int(n_clusters))
    return rows_since_full >= FULL_ROWS_PER_GROUP * groups


def first_restarts(summary, n_init, n_clusters=1):
    """Restarts of a first batch's full solve: ``n_init`` times the batch's rows over
    :data:`FIRST_ROWS_PER_GROUP` per group of its summary, and at most ``n_init`` times its
    rows over :data:`FIRST_ROWS_PER_CLUSTER` per cluster, between 1 and ``n_init``."""
    share = n_init * summary.n_seen // max(FIRST_ROWS_PER_GROUP * summary.n_groups, 1)
    share = min(share, n_init * summary.n_seen // (FIRST_ROWS_PER_CLUSTER * max(n_clusters, 1)))
    return int(min(max(share, 1), n_init))


def warm_solve(summary, centers, *, max_iter, tol, seed, fresh=False):
    """A scheduled solve from ``centers`` over the summary's groups: ``(centers, labels,
    n_iter)``, labels the groups' nearest centers as the solve's last assignment found them.

    A swap search (:func:`._lloyd.local_search`: a step draws ``SWAP_TRIALS`` candidates by
    D^2 sampling and makes the one swap of a candidate for a center that lowers the cost most)
    that stops at its first step finding no such swap, or after ``WARM_SWAPS_PER_CLUSTER * k``
    candidates (:func:`._lloyd.local_search` with ``until_no_swap``); then at most
    ``min(max_iter, WARM_MAX_ITER)`` weighted Lloyd iterations on the group centroids, keeping
    the centers of lowest cost seen (:func:`bounded_lloyd`, from the search's last
    assignment). The summary's bound never rises above that of ``centers``, and the solve
    costs two distance passes over the groups where no swap pays, one more per swap, and
    per Lloyd iteration one over the groups near a border, instead of the full solve's
    hundreds. The swaps move a center whose part has decayed or drifted away to where the
    weight is, which Lloyd's steps cannot. The centroids are centered and their distances
    taken in float32 unless they overflow it.

    With ``fresh`` (a re-solve, :func:`resolve_due`), the same search and Lloyd run a second
    time from a start that does not come from ``centers`` (:func:`fresh_start`, on a coarse
    copy of the groups), and the run of lower cost on the groups is kept (``centers``' on a
    tie): a basin chosen when the stream had seen few rows can be left, which the swaps and
    Lloyd's steps from it cannot do. A solve in float32 whose rounding was not small against
    the cost it found (:func:`._distances.float32_resolves`) runs again in float64, from the
    same draws. Preconditions: host float64 ``centers`` (k, d),
    ``summary`` of more than k groups, positive total weight.
    """
    origin = np.zeros(summary.n_features) if summary.origin is None else summary.origin
    centroids, w = summary._relative_centroids, summary.weights  # a fresh array: ours
    mean = (w @ centroids) / np.sum(w)
    centroids -= mean
    start = np.asarray(centers, dtype=np.float64) - origin - mean
    iterations = max(1, min(int(max_iter), WARM_MAX_ITER))
    dtype = _distances.centered_dtype(centroids)
    while True:
        points = centroids.astype(dtype)
        rng = np.random.default_rng(seed)
        x_sq = _distances.row_norms_sq(points)
        best = _warm_run(points, w, x_sq, start, rng, iterations, tol)
        if fresh:
            other = fresh_start(points, w, start.shape[0], rng, tol)
            if other is not None:
                run = _warm_run(points, w, x_sq, other, rng, iterations, tol)
                best = run if run[3] < best[3] else best
        if dtype == np.float64 or _distances.float32_resolves(
            x_sq, points.shape[1], best[3] / float(np.sum(w))
        ):
            break
        dtype = np.float64  # float32 too coarse for the cost found: again in float64
    out, labels, n_iter, _ = best
    return out + origin + mean, labels, n_iter


def _warm_run(points, w, x_sq, start, rng, iterations, tol):
    """:func:`warm_solve`'s search and Lloyd from ``start`` on centered ``points``:
    ``(centers, labels, n_iter, cost)``, the cost that of the groups' centroids."""
    start, _, near = _lloyd.local_search(
        points,
        start,
        rng,
        w,
        -(-WARM_SWAPS_PER_CLUSTER * start.shape[0] // _runner.SWAP_TRIALS),
        x_sq,
        lloyd_steps=0,
        n_trials=_runner.SWAP_TRIALS,
        until_no_swap=True,
        return_nearest=True,
    )
    found = bounded_lloyd(
        points, start, w, max_iter=iterations, tol=tol, nearest=near, return_cost=True
    )
    if found is None:  # a center without groups: Lloyd's steps re-seed it
        found = _lloyd.lloyd(
            points, start, w, max_iter=iterations, tol=tol, keep_best=True, fixed_origin=True
        )
        found = found[0], found[1], found[3], found[2]
    return found


#: A due solve is a re-solve (:func:`warm_solve` with ``fresh``) once the rows seen reach
#: this multiple of the rows at the last full solve or re-solve (:func:`resolve_due`).
RESOLVE_GROWTH = 16


def resolve_due(rows, rows_at_resolve):
    """True when a due warm solve is a re-solve: the rows seen reach :data:`RESOLVE_GROWTH`
    times those at the last full solve or re-solve.

    Why: the first full solve of a stream chooses its basin on its first batch (at k=100, a
    4,096-row batch is 41 rows a cluster), and the warm solves keep it: on 100 calls of 4,096
    rows of the 32-feature Zipf mixture (three draws) the final centers cost 1.0069, 1.0017
    and 1.0092 times ``fit``'s; a swap search of 63 steps from the stream's centers at every
    warm solve gave 1.0049, 1.0017, 1.0069; a full solve once at 16 times the first batch's
    rows gave 0.9971, 1.0002, 0.9957, with one restart or ten alike (its Ward start won). A
    re-solve costs about five warm solves (the fresh start on a coarse copy, a second search
    and Lloyd run: 85 ms against 16 ms on the 10,800 groups of that stream at 65,536 rows,
    one BLAS thread, 2 cores, shared), and the geometric schedule leaves 15 R rows of
    folding before the re-solve at 16 R."""
    return rows >= RESOLVE_GROWTH * rows_at_resolve


#: A due warm solve is a re-solve once the bound per unit weight exceeds its value after the
#: last full solve or re-solve by this fraction (:func:`drifted`).
RESOLVE_DRIFT = 0.25


def drifted(per_weight, at_resolve):
    """True when a due warm solve is a re-solve because the data moved: the running bound
    per unit weight ``per_weight`` exceeds ``at_resolve``, its value after the last full
    solve or re-solve, by :data:`RESOLVE_DRIFT`.

    Why: the warm solves follow data that drift a little between due solves, each from the
    centers of the last, so the rise never reaches :data:`FULL_DRIFT` at once while the basin
    chosen before the data moved is kept. Streams of 4,096-row batches of real tables in
    their own row order, final cost over ``fit``'s, seeds 0-2 (2 cores, 2026-12-07): R's
    gss_wages at k=20 (wages by year) 1.0389 / 1.0663 / 1.0576 -> 1.0089 / 1.0271 / 1.0141,
    simdat at k=20 1.0208 / 1.0256 / 1.0381 -> 1.0187 / 1.0319 / 1.0131; movielens,
    Fertility, check_times and InstInnovation (no such rise) and the stream benchmark's
    mixture unchanged."""
    return per_weight > (1.0 + RESOLVE_DRIFT) * at_resolve


#: The Ward start of a re-solve (:func:`fresh_start`) runs on a coarse copy of this many
#: points per cluster, at least :data:`FRESH_MIN_WARD_POINTS` and at most the full solve's
#: ``WARD_POINTS``: Ward's merges cost about the square of the points (at k=100 on 10,800
#: groups the fresh start took 118 ms with 1,000 points and 51 ms with 500; the stream's
#: costs over three draws 0.9974 / 1.0017 / 0.9947 and 0.9973 / 1.0017 / 0.9943 of ``fit``).
FRESH_WARD_POINTS_PER_CLUSTER = 5
FRESH_MIN_WARD_POINTS = 500


def fresh_start(points, w, k, rng, tol):
    """A start for ``k`` centers that does not come from the stream's centers, from a coarse
    copy of the weighted ``points`` (:func:`._runner.coarsen`), as the full solve's: its Ward
    start where k is small enough for one (:func:`._runner._ward_run`, on
    :data:`FRESH_WARD_POINTS_PER_CLUSTER` points per cluster), else one restart of k-means++
    and Lloyd on ``COARSE_POINTS_PER_CLUSTER * k`` points (at least ``MIN_COARSE_POINTS``).
    None when the coarse copy holds fewer distinct points than clusters."""
    ward = k * _runner.WARD_POINTS_PER_CLUSTER <= _runner.WARD_POINTS
    n_coarse = (
        min(max(FRESH_WARD_POINTS_PER_CLUSTER * k, FRESH_MIN_WARD_POINTS), _runner.WARD_POINTS)
        if ward
        else max(_runner.COARSE_POINTS_PER_CLUSTER * k, _runner.MIN_COARSE_POINTS)
    )
    if points.shape[0] > n_coarse:
        P, wp = _runner.coarsen(points, n_coarse, rng, w)
        P = P.astype(points.dtype)
    else:
        P, wp = points, w
    if P.shape[0] < k:
        return None
    if ward:
        run = _runner._ward_run(P, wp, k, rng, tol)
        return None if run is None else run[1]
    p_sq = _distances.row_norms_sq(P)
    idx = kmeans_plusplus(P, k, rng, wp, p_sq, _runner.restart_trials(k))
    return _lloyd.lloyd(
        P, P[idx], wp, max_iter=_runner.RESTART_MAX_ITER, tol=tol, fixed_origin=True
    )[0]


def bounded_lloyd(points, centers, weights, *, max_iter, tol, nearest=None, return_cost=False):
    """Weighted Lloyd iterations from ``centers`` that compare with every center only the
    points whose nearest center may have changed: ``(centers, labels, n_iter)`` as
    :func:`._lloyd.lloyd` with ``keep_best`` gives them (the centers of lowest cost seen, the
    starting ones included, and their assignment; stops when the total squared shift is
    below ``tol`` times the mean per-feature variance), or None when a center has no
    points (the caller runs :func:`._lloyd.lloyd`, which re-seeds it), for one center and
    for weights that are not all positive.

    Each point keeps an upper bound on its distance to its center and a lower bound on
    those to the others (Hamerly, "Making k-means even faster", SDM 2010): after a step
    that moves center j by ``m_j``, the first grows by ``m_j`` and the second shrinks by the
    largest move of another center; only points whose bounds come within
    :data:`RELABEL_MARGIN` of crossing are compared with every center again (in a warm
    solve, where the centers move little, a few per cent). The cost of each assignment is
    taken from the centers' moments (``sum_j Q_j - 2 c_j . S_j + W_j ||c_j||^2``, float64),
    so a step costs about one pass over the moved points instead of a distance pass over
    all. ``nearest``: the points' :func:`._distances.nearest2` for ``centers`` when the
    caller has it; with ``return_cost`` a fourth value gives the returned centers' cost.
    Preconditions: host ``points`` (n, d) float32 or float64 centered near
    their weighted mean, float64 ``centers`` (k, d), ``weights`` (n,)."""
    k, d = centers.shape
    if k < 2 or not np.all(weights > 0):
        return None
    # The float64 rows and weighted rows in the thread's kept buffers (no fresh pages).
    work = _distances.thread_workspace("bounded_lloyd")
    rows = work.take("rows", points.shape, np.float64)
    rows[...] = points
    x_sq = np.einsum("ij,ij->i", rows, rows, out=work.take("x_sq", (rows.shape[0],), np.float64))
    weighted = np.multiply(
        rows, weights[:, None], out=work.take("weighted", rows.shape, np.float64)
    )
    total = float(np.sum(weights))
    # sum_j Q_j: every point's weighted square, whatever its center.
    squares = float(np.einsum("i,i->", weights, x_sq))
    threshold = tol * squares / total / d
    labels, d1, d2 = _distances.nearest2(points, centers) if nearest is None else nearest
    upper, lower = np.sqrt(d1), np.sqrt(d2)
    running = _lloyd._running_sums(weighted, weights, labels, k)

    def cost(c, sums, mass):
        total = squares - 2.0 * np.einsum("ij,ij->", c, sums)
        return max(float(total + mass @ np.einsum("ij,ij->i", c, c)), 0.0)

    if np.any(running[2] <= 0):
        return None
    best = (cost(centers, running[1], running[2]), centers, labels)
    n_iter = 0
    while n_iter < max_iter:
        n_iter += 1
        _, sums, mass, _ = running
        if np.any(mass <= 0):
            return None
        step = sums / mass[:, None]
        moves = np.sqrt(np.einsum("ij,ij->i", step - centers, step - centers))
        shift = float(np.sum(moves**2))
        others = other_moves(moves)
        upper += moves[labels]
        lower -= others[labels]
        unsure = np.flatnonzero(upper >= lower * (1.0 - RELABEL_MARGIN))
        if unsure.shape[0]:
            unsure = still_unsure(
                unsure, rows[unsure], labels, upper, lower, moves, others, step, x_sq[unsure]
            )
        if unsure.shape[0]:
            (first, _), (n1, n2) = _distances.nearest_top(points[unsure], step, 2)
            labels = labels.copy()  # the running sums hold the previous labels
            labels[unsure] = first
            upper[unsure], lower[unsure] = np.sqrt(n1), np.sqrt(n2)
        centers = step
        running = _lloyd._running_sums(weighted, weights, labels, k, running)
        inertia = cost(centers, running[1], running[2])
        if inertia < best[0]:
            best = (inertia, centers, labels)
        if shift <= threshold:
            break
    return (best[1], best[2], n_iter) + ((best[0],) if return_cost else ())


def other_moves(moves):
    """For a point of center j, the largest move of another center (``moves``: each
    center's): Hamerly's lower bound on its distances to the other centers falls by it."""
    top = int(np.argmax(moves))
    others = np.full(moves.shape[0], moves[top])
    if moves.shape[0] > 1:
        others[top] = np.max(np.delete(moves, top))
    return others


def still_unsure(unsure, rows, labels, upper, lower, moves, others, centers, x_sq=None):
    """Of the points ``unsure``, whose bounds came within :data:`RELABEL_MARGIN` of crossing
    after the centers moved (by ``moves``; ``others``: :func:`other_moves`) to ``centers``,
    those that stay unsure once their distance to their own center is taken exactly
    (Hamerly's tightening: most keep their label) and then, where a few centers moved far
    (:func:`_far_movers`), their distances to those (:func:`_far_movers_bound`). ``rows``:
    the unsure points' float64 coordinates, in the frame of ``centers`` (float64);
    ``x_sq``: their squared norms (taken here where None); ``upper``, ``lower``: the bounds
    of all the points (``labels`` their centers), updated in place at ``unsure``."""
    own = labels[unsure]
    gap = rows - centers[own]
    upper[unsure] = np.sqrt(np.einsum("ij,ij->i", gap, gap))
    keep = upper[unsure] >= lower[unsure] * (1.0 - RELABEL_MARGIN)
    unsure, rows, own = unsure[keep], rows[keep], own[keep]
    far = _far_movers(moves) if unsure.shape[0] else None
    if far is not None:
        x_sq = np.einsum("ij,ij->i", rows, rows) if x_sq is None else x_sq[keep]
        before = lower[unsure] + others[own]
        lower[unsure] = _far_movers_bound(rows, x_sq, own, before, centers, far)
        unsure = unsure[upper[unsure] >= lower[unsure] * (1.0 - RELABEL_MARGIN)]
    return unsure


#: :func:`_far_movers_bound` takes the distances to this many centers of largest move
#: exactly (at most one in 16 of the centers) when they moved more than twice the next one.
FAR_MOVERS = 8


def _far_movers(moves):
    """``(far, rest)``: the centers of the largest moves (at most :data:`FAR_MOVERS`, one in
    16 centers) and the largest move of the others, when those moves exceed twice ``rest``;
    else None."""
    n_far = min(FAR_MOVERS, moves.shape[0] // 16)
    if n_far == 0:
        return None
    order = np.argsort(-moves, kind="stable")
    rest = moves[order[n_far]]
    return (order[:n_far], rest) if moves[order[0]] > 2.0 * rest else None


def _far_movers_bound(rows, x_sq, labels, before, step, far):
    """Lower bounds on the distances of ``rows`` (float64, squared norms ``x_sq``) to every
    center other than their own (``labels``) after the centers moved to ``step``, from
    ``before``, the bounds before the move, and ``far`` (:func:`_far_movers`).

    Hamerly's bound shrinks by the largest move of another center, so one center that moves
    far (a swapped one, brought to the mean of its new points) sends every point to a full
    comparison. Here the far centers' distances are taken exactly (float64, one small
    product, transposed so that the minimum runs along rows) and the bound shrinks by the
    largest move of the others only."""
    far, rest = far
    c = step[far]
    # (far centers, rows): squared distances, a point's own center left out.
    d_far = c @ rows.T
    d_far *= -2.0
    d_far += x_sq[None, :]
    d_far += np.einsum("ij,ij->i", c, c)[:, None]
    d_far[far[:, None] == labels[None, :]] = np.inf
    nearest_far = np.sqrt(np.maximum(np.min(d_far, axis=0), 0.0))
    return np.minimum(before - rest, nearest_far)


def streams(centers, X, metric):
    """True when a batch X (a dask array) is folded by this module: a host (numpy) model
    and batch, metric "euclidean"; other batches are summarized and solved as before.
    With X None: whether the model's batches can be (the model's side alone)."""
    host = X is None or isinstance(X._meta, np.ndarray)
    return metric == "euclidean" and is_numpy_array(centers) and host


def host_blocks(arrays):
    """The numpy blocks of in-memory dask arrays (one array or a tuple), in order, by dask's
    plain recursive getter: no graph optimization or ordering (a 4,096-row batch in 0.1 ms
    instead of 1 ms with the synchronous scheduler and 4 ms through ``compute``)."""
    arrays = arrays if isinstance(arrays, tuple) else (arrays,)
    graph = {}
    for a in arrays:
        graph.update(a.__dask_graph__())
    keys = [key for a in arrays for key in flatten(a.__dask_keys__())]
    return list(dask.core.get(graph, keys))


def block_groups(
    block,
    weights,
    centers,
    origin,
    index=0,
    row_start=0,
    rows=None,
    spread=0.0,
    outlier=np.inf,
    scale=None,
):
    """:func:`batch_groups` of one block, checked first (errors name the chunk; ``rows``: its
    declared rows; ``spread``: the summary's, for :func:`far_from`; ``outlier``: for
    :func:`far_rows`; ``scale``: for :func:`stream_keys`; a task)."""
    block = check_block(block, weights, index, row_start, centers, summed=True, rows=rows)
    if block.shape[0] == 0:
        d = centers.shape[1]
        return np.empty(0, np.int64), np.zeros(0), np.zeros((0, d)), np.zeros(0)
    out = batch_groups(block, centers, origin, weights, spread=spread, outlier=outlier, scale=scale)
    return None if out is None else out[0]


def batch_parts(X, sample_weight, centers, origin, lazy, spread=0.0, outlier=np.inf, scale=None):
    """The keyed groups of the batch X (a dask array; ``sample_weight`` None or a dask array
    of its row chunks) for ``centers`` (float64), and what :func:`host_labels` needs (None
    for lazy input). In memory: on this thread; lazy input: one task per chunk on the
    current scheduler (memory bounded by a chunk). ``(None, None)`` when rows lie far from
    ``origin`` (:func:`far_from`, at least by the summary's ``spread``): the caller
    summarizes the batch with its own origin. Rows of a cost above ``outlier`` get keys of
    their own (:func:`far_rows`); ``scale`` is the keys' mean cost (:func:`stream_keys`)."""
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(np.int64)
    if lazy:
        xs = X.to_delayed().ravel()
        ws = [None] * len(xs) if sample_weight is None else sample_weight.to_delayed().ravel()
        task = dask.delayed(block_groups, pure=True)
        parts = dask.compute(
            *[
                task(
                    xs[i],
                    ws[i],
                    centers,
                    origin,
                    i,
                    int(starts[i]),
                    int(X.chunks[0][i]),
                    spread,
                    outlier,
                    scale,
                )
                for i in range(len(xs))
            ]
        )
        if any(part is None for part in parts):
            return None, None
        return (parts[0] if len(parts) == 1 else merge_groups(parts)), None
    blocks = host_blocks(X if sample_weight is None else (X, sample_weight))
    xs = blocks[: X.numblocks[0]]
    ws = [None] * len(xs) if sample_weight is None else blocks[X.numblocks[0] :]
    xs = [
        check_block(xs[i], ws[i], i, int(starts[i]), centers, summed=True) for i in range(len(xs))
    ]
    X = xs[0] if len(xs) == 1 else np.concatenate(xs)
    w = None if sample_weight is None else (ws[0] if len(ws) == 1 else np.concatenate(ws))
    return checked_parts(X, w, centers, origin, spread, outlier, scale)


def host_parts(X, centers, origin, spread=0.0, outlier=np.inf, scale=None):
    """:func:`batch_parts` of a numpy batch X of one chunk's rows at most (unweighted), without
    a dask array: checked as its one chunk (errors name chunk 0), then folded."""
    block = check_block(X, None, 0, 0, centers, summed=True)
    return checked_parts(block, None, centers, origin, spread, outlier, scale)


def checked_parts(X, w, centers, origin, spread=0.0, outlier=np.inf, scale=None):
    """:func:`batch_parts` of a checked in-memory batch X (weights ``w`` or None)."""
    if X.shape[0] <= FOLD_PIECE_ROWS:
        out = batch_groups(X, centers, origin, w, spread=spread, outlier=outlier, scale=scale)
        return (None, None) if out is None else (out[0], (X, out[1]))
    return pieces_groups(X, w, centers, origin, spread, outlier, scale)


#: An in-memory batch of more rows is folded in equal pieces of at most this many rows, one
#: task each on the current scheduler (a 100,000-row block of dask-ml's ``Incremental`` on
#: every core instead of one).
FOLD_PIECE_ROWS = 32_768


def pieces_groups(X, w, centers, origin, spread=0.0, outlier=np.inf, scale=None):
    """:func:`batch_parts` of a checked in-memory batch X (weights ``w`` or None) in
    ``ceil(n / FOLD_PIECE_ROWS)`` equal pieces of rows, one task each; the groups added up by
    key in the pieces' order. The pieces depend on the rows only, so the result is the same
    on every scheduler and number of cores."""
    bounds = np.linspace(0, X.shape[0], -(-X.shape[0] // FOLD_PIECE_ROWS) + 1).astype(np.int64)
    task = dask.delayed(batch_groups, pure=True)
    tasks = [
        task(
            X[a:b],
            centers,
            origin,
            None if w is None else w[a:b],
            check_far=False,
            outlier=outlier,
            scale=scale,
        )
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    with blas_limits(len(tasks)):
        outs = dask.compute(*tasks)
    parts = merge_groups([out[0] for out in outs])
    if far_from(parts, spread):
        return None, None
    near = tuple(np.concatenate([out[1][i] for out in outs]) for i in range(3))
    return parts, (X, near)


#: :func:`relabel` computes again the rows whose two nearest centers' distances differ by less
#: than this fraction of the second one beyond what the centers' moves explain.
RELABEL_MARGIN = 1e-3


def host_labels(near, previous, centers):
    """Labels (int32) of an in-memory batch for ``centers`` (as ``predict`` gives them),
    from its rows' nearest of the ``previous`` centers (:func:`batch_parts`).

    A row stays with its center j when ``r_j + |move_j| + max |move| < r_l (1 - margin)``
    (r: distances to the previous nearest two; the triangle inequality); the other rows,
    near a border, are compared with every center again."""
    X, (first, d1, d2) = near
    moves = np.sqrt(np.sum((np.asarray(centers, np.float64) - previous) ** 2, axis=1))
    r1, r2 = np.sqrt(d1), np.sqrt(d2)
    unsure = np.flatnonzero(r1 + moves[first] + moves.max() >= r2 * (1.0 - RELABEL_MARGIN))
    labels = first.astype(np.int32)
    if unsure.shape[0]:
        # X was checked (and cast) by batch_parts: predict_block's nearest, without its check.
        labels[unsure] = _distances.nearest(X[unsure], centers)[0]
    return labels
