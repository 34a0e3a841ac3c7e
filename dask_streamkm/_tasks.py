"""The per-chunk task functions: check a block, summarize it, merge summaries, predict, store.

Each runs inside one task on one in-memory block (or on a few small results) and is pure: its
output depends only on its arguments, seeds included (:mod:`._seeds`), so a graph gives the
same result on every scheduler. Graphs of them are built by :mod:`._waves` (the summary's
reduction in :mod:`._graph`, the refinement's in :mod:`._refine`); errors name the chunk.
"""

from __future__ import annotations

import math

import numpy as np

from ._array import float_dtype, from_host, is_numpy, namespace, to_host
from ._distances import (
    assigned_sq_distances,
    begin_task,
    cosine_distances,
    distance_dtype,
    nearest,
    thread_workspace,
    transform_sq_distances,
    unit_centers,
    unit_rows,
    value_range,
)
from ._seeds import LEAF_LEVEL, task_seed
from ._summarize import summarize
from ._threads import limit_blas_in_worker
from .summary import Summary, weight_range_problem


def check_block(
    X, sample_weight, index, row_start, centers=None, metric="euclidean", summed=None, rows=None
):
    """Validate one block inside its task; errors name the chunk. Returns X as float.

    ``rows``: the rows the array declares for this chunk (None: not checked). A block of
    other rows (a ``map_blocks`` function that drops or adds rows, with the array's chunks
    left as they were) is an error, not a silent shift of every later row's label; so is a
    block of other columns than ``centers``.

    X comes back in the dtype the distance kernels need (:func:`._distances.distance_dtype`,
    with ``centers`` when given): float64 for float32 values whose squared distances overflow
    float32; values whose squared distances overflow float64 are an error.

    With ``metric="cosine"`` the rows are returned scaled to unit length (the one place
    where they are, inside the chunk's own task; before the dtype check, so rows of any
    finite length are accepted), and a row of zero norm, which has no direction, is an
    error naming the chunk and the row.

    ``summed`` says whether the weights go into summary sums (their range then counts, see
    :func:`.summary.weight_range_problem`); by default, when no ``centers`` are given (fit,
    refinement; predict and score pass centers).
    """
    if rows is not None and X.shape[0] != rows:
        raise ValueError(
            f"chunk {index} of the array holds {X.shape[0]} rows where its chunks declare "
            f"{rows} (rows {row_start} to {row_start + rows}): a block that does not match "
            "the array's chunks, as map_blocks makes when its function returns other rows "
            "than it was told. Pass map_blocks the chunks the function returns (chunks=...)."
        )
    if centers is not None and X.ndim == 2 and X.shape[1] != centers.shape[1]:
        raise ValueError(
            f"chunk {index} of the array holds {X.shape[1]} columns where the model has "
            f"{centers.shape[1]} features (rows {row_start} onwards): a block that does not "
            "match the array's chunks. Pass map_blocks the chunks its function returns."
        )
    xp = namespace(X)
    if X.dtype != float_dtype(xp, X.dtype):  # integers, bools and float16 compute in float64
        X = xp.astype(X, float_dtype(xp, X.dtype))
    where = f"chunk {index} (rows {row_start} to {row_start + X.shape[0]})"
    if sample_weight is not None and sample_weight.shape[0]:
        sw = xp.astype(sample_weight, xp.float64)
        if not bool(xp.all(xp.isfinite(sw))) or bool(xp.any(sw < 0)):
            raise ValueError(
                f"sample_weight has negative, NaN or infinite values in {where}; "
                "sample_weight should be finite and >= 0."
            )
        if centers is None if summed is None else summed:
            _check_weight_range(sw, f" in {where}")
    if X.shape[0]:
        # NaN and inf show in the extremes (read once for both checks).
        bounds = value_range(X)
        if not (math.isfinite(bounds[0]) and math.isfinite(bounds[1])):
            raise ValueError(
                f"Input contains NaN or infinity in {where}. Remove or impute those rows, e.g. "
                "X[da.isfinite(X).all(axis=1)] or da.nan_to_num(X), first."
            )
        if metric == "cosine":
            # Scaled to unit length first (without overflow or underflow): the distances
            # are those of unit rows, so values near 1e300 have a cosine too.
            X, zero = unit_rows(X)
            if bool(xp.any(zero)):
                row = row_start + int(xp.argmax(xp.astype(zero, xp.int32)))
                raise ValueError(
                    f"metric='cosine': row {row} in {where} has zero norm, so it has no "
                    "direction and no cosine. Drop all-zero rows first, e.g. "
                    "X[(X != 0).any(axis=1)], or use metric='euclidean'."
                )
            bounds = (-1.0, 1.0)  # unit rows (no pass over them)
        weight = X.shape[0] if sample_weight is None else float(xp.sum(sw))
        dtype = distance_dtype(X, centers, bounds, weight=weight)
        if dtype is None:
            raise ValueError(_too_large_message(X, centers, bounds, where, weight))
        if dtype != X.dtype:
            X = xp.astype(X, dtype)
    return X


def _check_weight_range(sw, where):
    """Raise ValueError when the positive weights of ``sw`` (float64) are out of range."""
    xp = namespace(sw)
    positive = sw > 0
    if not bool(xp.any(positive)):
        return
    largest = float(xp.max(sw))
    smallest = float(xp.min(xp.where(positive, sw, largest)))
    problem = weight_range_problem(smallest, largest, where)
    if problem is not None:
        raise ValueError(problem)


def _too_large_message(X, centers, bounds, rows, weight):
    """The error for squared distances (or their weighted sums) that overflow float64."""
    largest = max(abs(bounds[0]), abs(bounds[1]))
    if centers is not None:
        largest = max(largest, float(np.max(np.abs(to_host(centers)))))
    top = f"{float(np.finfo(np.float64).max):.3g}"
    if distance_dtype(X, centers, bounds) is not None:
        return (
            f"sample_weight times the squared values of X overflow float64 in {rows} (values "
            f"up to {largest:.3g}, total weight {weight:.3g}; float64 holds up to {top}). "
            "Rescale X or sample_weight first, e.g. divide sample_weight by its largest value."
        )
    scale = 10.0 ** int(np.floor(np.log10(largest)))
    fitted = " and the fitted model" if centers is not None else ""
    return (
        f"X has values too large for float64 in {rows} (up to {largest:.3g}"
        f"{' with the centers' if centers is not None else ''}): their squared distances "
        f"overflow float64, whose largest value is {top}. Rescale X{fitted} first, e.g. "
        f"divide it by a constant such as X / {scale:.0e}."
    )


def leaf(
    block,
    weight_block,
    *,
    index,
    row_start,
    size,
    method,
    mini_batch_size,
    entropy,
    metric="euclidean",
    rows=None,
):
    """Summarize one row block (a task); cosine: of its rows scaled to unit length.
    ``rows``: the chunk's declared rows (:func:`check_block`)."""
    limit_blas_in_worker()
    begin_task("leaf")
    block = check_block(block, weight_block, index, row_start, metric=metric, rows=rows)
    summary = summarize(
        block,
        size,
        method=method,
        sample_weight=weight_block,
        mini_batch_size=mini_batch_size,
        seed=task_seed(entropy, LEAF_LEVEL, index),
    )
    return summary


def merge(*children, cap, level, index, entropy):
    """Union of children's summaries, reduced to ``cap`` groups when it holds more."""
    limit_blas_in_worker()
    union = Summary.merge(*children)
    if union.n_groups > cap:
        union = union.reduce(cap, seed=task_seed(entropy, level, index))
    return union


def predict_block(
    block,
    weights,
    centers,
    what,
    metric="euclidean",
    index=0,
    row_start=0,
    scratch=False,
    rows=None,
):
    """What :func:`._graph.nearest_blocks` computes, for one block (a task); errors name the chunk.

    ``weights`` is None or the block's sample weights (1-D; only for
    ``"weighted_sq_distances"``); they are checked like the fit's. ``index`` and
    ``row_start`` (the chunk's index and first row) only name the chunk in errors. With
    ``metric="cosine"`` (unit centers) the rows are scaled to unit length first, the nearest
    center is the one of highest cosine, ``"distances"`` are ``1 - cos`` and the
    ``"sq_distances"`` are the cosine distances to the nearest center (``||u - c||^2 / 2`` for
    unit u and c). ``scratch``: the nearest centers and distances of numpy blocks go to work
    buffers of the thread (:func:`._distances.thread_workspace`), for a caller that only
    reduces the result (it is valid until the thread's next task).
    """
    xp = namespace(block)
    begin_task("predict")
    c = centers if type(centers) is type(block) else from_host(to_host(centers), block)
    # As scikit-learn's: float32 distances only for float32 rows and float32 centers.
    single = block.dtype == xp.float32 and c.dtype == xp.float32
    out_dtype = xp.float32 if single else xp.float64
    block = check_block(block, weights, index, row_start, c, metric, rows=rows)
    cosine = metric == "cosine"
    if cosine:  # unit length in the block's dtype, as the rows
        c = unit_centers(xp.astype(c, block.dtype), xp.astype(c, block.dtype))
    if what == "distances":
        if cosine:
            return xp.astype(cosine_distances(block, c), out_dtype)
        return xp.astype(xp.sqrt(transform_sq_distances(block, c)), out_dtype)
    out = None
    if (scratch or what == "labels") and is_numpy(xp):  # labels: returned as an int32 copy
        work, n = thread_workspace("predict"), block.shape[0]
        out = work.take("labels", (n,), np.int64), work.take("dist", (n,), np.float64)
    labels, dist = nearest(block, c, out=out)
    if what == "labels":
        return xp.astype(labels, xp.int32)
    if cosine:
        dist = dist / 2.0
    else:  # summed by score: from the differences, exact also for rows far from the others
        dist = assigned_sq_distances(block, c, labels, out=dist)
    if weights is not None:
        return dist * xp.astype(weights, xp.float64)
    return dist


def predict_task(block, weights, centers, block_id, row_start, rows, *, what, metric):
    """:func:`predict_block` with the chunk's index from dask's block id, its first row and
    declared rows from :class:`._waves.RowStartDep` and :class:`._waves.RowCountDep`;
    ``block``: the list of the chunk's one column block (the blockwise layer does not
    concatenate the contracted feature axis, which would copy the chunk)."""
    (block,) = block
    index, row_start = int(block_id[0]), int(row_start)
    return predict_block(block, weights, centers, what, metric, index, row_start, rows=int(rows))


def sq_distance_part(block, weights, centers, *, index, row_start, metric="euclidean", rows=None):
    """``(sum of weighted squared distances to the nearest center, total weight)`` of one
    block, as floats (a task); ``weights`` None or the block's 1-D weights. For
    ``metric="cosine"`` the distances are ``1 - cos``."""
    where = dict(index=index, row_start=row_start, rows=rows)
    if weights is None:
        dist = predict_block(block, None, centers, "sq_distances", metric, **where, scratch=True)
        return float(to_host(namespace(dist).sum(dist))), float(block.shape[0])
    xp = namespace(weights)
    dist = predict_block(
        block, weights, centers, "weighted_sq_distances", metric, **where, scratch=True
    )
    return float(to_host(xp.sum(dist))), float(to_host(xp.sum(xp.astype(weights, xp.float64))))


def add_parts(*parts):
    """Sums of the ``(total, weight)`` parts, each exactly rounded (``math.fsum``)."""
    return math.fsum(p[0] for p in parts), math.fsum(p[1] for p in parts)


def store_block(block, *, index, row_start, target, rows=None):
    """Write one block to rows ``[row_start, row_start + len(block))`` of the zarr array
    ``target`` (a task); returns the rows written. A block of other rows than the chunk's
    declared ``rows`` is an error (it would write over its neighbours' rows)."""
    if rows is not None and block.shape[0] != rows:
        raise ValueError(
            f"chunk {index} of the labels holds {block.shape[0]} rows where its chunks declare "
            f"{rows} (rows {row_start} to {row_start + rows}); nothing of it was written."
        )
    target[row_start : row_start + block.shape[0]] = to_host(block)
    return block.shape[0]


def add_counts(*counts):
    """The sum of the counts (the rows each :func:`store_block` wrote)."""
    return sum(counts)
