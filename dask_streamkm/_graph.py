"""Dask wiring only: one summarize task per row block, a tree of merges, seeds by position.

No arithmetic beyond calling the summarizer and Summary methods. Public dask API only:
``to_delayed`` for the blocks, ``dask.delayed`` for the tasks, one ``compute`` by the caller.
Every task is seeded from ``SeedSequence(entropy, spawn_key=(level, index))``, so the result
does not depend on the scheduler or on the order in which tasks run.
"""

from __future__ import annotations

import dask
import dask.array
import numpy as np

from ._array import float_dtype, from_host, namespace, to_host
from ._kernels import nearest, sq_distances
from ._seeds import LEAF_LEVEL, task_seed
from ._summarize import summarize
from ._threads import limit_blas_in_worker
from .summary import Summary


def check_block(X, sample_weight, index, row_start):
    """Validate one block inside its task; errors name the chunk. Returns X as float."""
    xp = namespace(X)
    if not xp.isdtype(X.dtype, "real floating"):
        X = xp.astype(X, float_dtype(xp, X.dtype))
    rows = f"chunk {index} (rows {row_start} to {row_start + X.shape[0]})"
    if X.shape[0] and not bool(xp.all(xp.isfinite(X))):
        raise ValueError(
            f"Input contains NaN or infinity in {rows}. Remove or impute those rows, e.g. "
            "X[da.isfinite(X).all(axis=1)] or da.nan_to_num(X), before fitting."
        )
    if sample_weight is not None and sample_weight.shape[0]:
        sw = xp.astype(sample_weight, xp.float64)
        if not bool(xp.all(xp.isfinite(sw))) or bool(xp.any(sw < 0)):
            raise ValueError(
                f"sample_weight has negative, NaN or infinite values in {rows}; "
                "sample_weight should be finite and >= 0."
            )
    return X


def leaf(block, weight_block, *, index, row_start, size, method, mini_batch_size, entropy):
    """Summarize one row block (a task)."""
    limit_blas_in_worker()
    block = check_block(block, weight_block, index, row_start)
    return summarize(
        block,
        size,
        method=method,
        sample_weight=weight_block,
        mini_batch_size=mini_batch_size,
        seed=task_seed(entropy, LEAF_LEVEL, index),
    )


def node_cap(budget, covered, n_leaves, size):
    """Groups a tree node over ``covered`` of the ``n_leaves`` leaves may keep.

    Its share of the budget (``budget * covered / n_leaves``), but never less than one
    leaf's ``size``. Every node's union of children then holds at most about ``budget``
    groups (memory does not grow with the number of chunks), the root keeps at most
    ``budget``, and each reduce shrinks a union by the fan-in at most, so the merges cost a
    small, fixed fraction of the leaves' work however many chunks there are.
    """
    share = -(-int(budget) * int(covered) // max(int(n_leaves), 1))
    return int(max(share, int(size)))


def merge(*children, cap, level, index, entropy):
    """Union of children's summaries, reduced to ``cap`` groups when it holds more."""
    limit_blas_in_worker()
    union = Summary.merge(*children)
    if union.n_groups > cap:
        union = union.reduce(cap, seed=task_seed(entropy, level, index))
    return union


def tree(nodes, *, split_every, budget, size, entropy, level=1, covered=None):
    """Merge delayed summaries ``split_every`` at a time until one is left.

    ``covered[i]`` is the number of leaves under ``nodes[i]`` (1 each by default); each
    merge keeps at most :func:`node_cap` groups.
    """
    split_every = max(2, int(split_every))
    covered = [1] * len(nodes) if covered is None else list(covered)
    n_leaves = sum(covered)
    while len(nodes) > 1:
        groups = range(0, len(nodes), split_every)
        next_covered = [sum(covered[i : i + split_every]) for i in groups]
        nodes = [
            dask.delayed(merge, pure=True)(
                *nodes[i : i + split_every],
                cap=node_cap(budget, c, n_leaves, size),
                level=level,
                index=i // split_every,
                entropy=entropy,
            )
            for i, c in zip(groups, next_covered, strict=True)
        ]
        covered = next_covered
        level += 1
    return nodes[0]


def leaf_tasks(X, sample_weight, *, size, method, mini_batch_size, entropy):
    """One delayed summarize task per row block of X (nothing runs until computed)."""
    blocks = X.to_delayed()[:, 0]
    weights = [None] * len(blocks) if sample_weight is None else list(sample_weight.to_delayed())
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])])
    return [
        dask.delayed(leaf, pure=True)(
            block,
            weight,
            index=i,
            row_start=int(starts[i]),
            size=size,
            method=method,
            mini_batch_size=mini_batch_size,
            entropy=entropy,
        )
        for i, (block, weight) in enumerate(zip(blocks, weights, strict=True))
    ]


def summary_graph(X, sample_weight, *, size, method, mini_batch_size, split_every, budget, entropy):
    """A delayed Summary of the dask array X (row blocks, one column block).

    ``sample_weight`` is None or a 1-D dask array with X's row chunks.
    """
    leaves = leaf_tasks(
        X,
        sample_weight,
        size=size,
        method=method,
        mini_batch_size=mini_batch_size,
        entropy=entropy,
    )
    return tree(leaves, split_every=split_every, budget=budget, size=size, entropy=entropy)


# ---------------------------------------------------------------------- predict side
# Labels, distances and the weighted squared-distance sum of rows to fitted centers: one
# map_blocks layer over X each (X's array type kept through ``meta``), computed by the caller.


def predict_block(block, weights, centers, what, block_info=None):
    """What :func:`nearest_blocks` computes, for one block (a task); errors name the chunk.

    ``weights`` is None or the block's sample weights as a column (only for
    ``"weighted_sq_distances"``); they are checked like the fit's.
    """
    xp = namespace(block)
    index, row_start = 0, 0
    if block_info and 0 in block_info:  # name the chunk in the NaN / inf error
        index = block_info[0]["chunk-location"][0]
        row_start = block_info[0]["array-location"][0][0]
    weights = None if weights is None else weights[:, 0]
    block = check_block(block, weights, index, row_start)
    c = centers if type(centers) is type(block) else from_host(to_host(centers), block)
    if what == "distances":
        return xp.sqrt(sq_distances(block, xp.astype(c, block.dtype)))
    labels, dist = nearest(block, c)
    if what == "labels":
        return xp.astype(labels, xp.int32)
    if weights is not None:
        return dist * xp.astype(weights, xp.float64)
    return dist


def nearest_blocks(X, centers, what, sample_weight=None):
    """Per-block results for the rows of X and ``centers``, as a lazy dask array.

    ``what`` is ``"labels"`` (int32, as scikit-learn's), ``"distances"`` to every center (X's
    float dtype), ``"sq_distances"`` to the nearest center (float64) or
    ``"weighted_sq_distances"`` (the same times ``sample_weight``, a 1-D dask array with X's
    row chunks).
    """
    # The output keeps X's array type (numpy, cupy...) through ``meta``.
    meta = X._meta
    if what == "distances":
        dtype = np.dtype(np.float32 if X.dtype == np.float32 else np.float64)
        return X.map_blocks(
            predict_block,
            None,
            centers,
            what,
            chunks=(X.chunks[0], (centers.shape[0],)),
            dtype=dtype,
            meta=meta.astype(dtype).reshape((0, 0)),
        )
    dtype = np.int32 if what == "labels" else np.float64
    arrays = [X] if sample_weight is None else [X, sample_weight[:, None]]
    return dask.array.map_blocks(
        predict_block,
        *arrays,
        *([None] if sample_weight is None else []),
        centers,
        what,
        drop_axis=1,
        chunks=(X.chunks[0],),
        dtype=dtype,
        meta=meta.astype(dtype).reshape((0,)),
    )


def weighted_sq_distance_sum(X, centers, sample_weight=None):
    """Lazy ``(sum of weighted squared distances to the nearest center, total weight)``.

    ``sample_weight`` is None or a 1-D dask array with X's row chunks (each chunk checked in
    its task: finite and >= 0). Computed together, both sums share one read of X. ``score``
    and SageMaker's ``evaluate`` use this.
    """
    if sample_weight is None:
        return nearest_blocks(X, centers, "sq_distances").sum(), X.shape[0]
    weighted = nearest_blocks(X, centers, "weighted_sq_distances", sample_weight)
    return weighted.sum(), sample_weight.sum()
