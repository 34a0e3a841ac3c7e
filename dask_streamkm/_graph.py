"""The summary's reduction and the predict side's graphs, over the wave engine.

Dask wiring only: the graphs come from :mod:`._waves`, the tasks from :mod:`._tasks`. The
summary of X is a tree reduction (:func:`fit_summary`): one summarize task per row block, a
tree of merges, each node's cap from its share of the merge budget and its seed from
``SeedSequence(entropy, spawn_key=(level, index))`` (:mod:`._seeds`), so the result does not
depend on the scheduler or on the order in which tasks run. Its parameters travel as one
frozen value, :class:`SummaryParams`.
"""

from __future__ import annotations

import dataclasses
import functools

import dask.array
import numpy as np
from dask.base import tokenize

from ._tasks import add_counts, add_parts, leaf, merge, predict_task, sq_distance_part, store_block
from ._waves import (
    Reduction,
    RowCountDep,
    RowStartDep,
    block_wave,
    block_waves,
    reduce_in_waves,
    row_starts,
    run_waves,
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


@dataclasses.dataclass(frozen=True)
class SummaryParams:
    """The parameters of a fit's summary, one value (normalized, tokenized once).

    ``size`` groups a leaf keeps, the leaf ``method`` and its ``mini_batch_size``, the merge
    tree's fan-in ``split_every``, the merge ``budget`` (most groups a node keeps, see
    :func:`node_cap`), the SeedSequence ``entropy`` every task's seed derives from, and the
    ``metric`` (cosine: leaves summarize rows scaled to unit length).
    """

    size: int
    method: str
    mini_batch_size: int
    split_every: int
    budget: int
    entropy: object
    metric: str = "euclidean"

    def __post_init__(self):
        entropy = self.entropy
        if isinstance(entropy, list):  # a partial_fit batch's [entropy, rows seen]
            entropy = tuple(entropy)
        for name, value in (
            ("size", int(self.size)),
            ("mini_batch_size", int(self.mini_batch_size)),
            ("split_every", max(2, int(self.split_every))),
            ("budget", int(self.budget)),
            ("entropy", entropy),
        ):
            object.__setattr__(self, name, value)

    @functools.cached_property
    def token(self):
        """A hash of every field (it enters the task keys)."""
        return tokenize(*dataclasses.astuple(self))

    def node_cap(self, covered, n_leaves):
        """The cap rule: :func:`node_cap` with this budget and leaf size."""
        return node_cap(self.budget, covered, n_leaves, self.size)

    def keywords(self, *names):
        """The fields ``names`` as keywords, and ``metric`` when it is not euclidean (a cosine
        run's tasks and files differ; euclidean ones are as before the metric existed)."""
        out = {name: getattr(self, name) for name in names}
        if self.metric != "euclidean":
            out["metric"] = self.metric
        return out

    def reduction(self):
        """The summary as a :class:`._waves.Reduction`: :func:`._tasks.leaf` per chunk (with
        the fields it uses) and :func:`._tasks.merge` with this cap and seed rule."""
        leaf_params = self.keywords("size", "method", "mini_batch_size", "entropy")
        return Reduction(
            leaf=functools.partial(leaf, **leaf_params),
            combine=merge,
            token=self.token,
            cap=self.node_cap,
            entropy=self.entropy,
        )


def fit_summary(X, sample_weight, params, *, checkpoint=None, on_wave=None):
    """The Summary of X for :class:`SummaryParams` ``params``, computed in waves
    (:func:`._waves.reduce_in_waves`).

    ``sample_weight`` is None or a 1-D dask array with X's row chunks. ``checkpoint``: None or
    a :class:`._checkpoint.Checkpoint`, whose files of finished chunk ranges are loaded (their
    chunks not read) and which saves those of the others; the summary is the same, bit for bit.
    ``on_wave(start, stop, n_tasks)`` is called as each wave is submitted.
    """
    hooks = None if checkpoint is None else checkpoint.summary_hooks(X, sample_weight, params)
    return reduce_in_waves(
        X,
        sample_weight,
        params.reduction(),
        split_every=params.split_every,
        hooks=hooks,
        on_wave=on_wave,
    )


# ---------------------------------------------------------------------- predict side
# Labels, distances and the weighted squared-distance sum of rows to fitted centers: one
# map_blocks layer over X each (X's array type kept through ``meta``), lazy for the caller.
# What runs over all chunks runs in waves of at most WAVE_CHUNKS chunks, as the fit does
# (:func:`._waves.run_waves`): the squared-distance sum (``score``, ``evaluate``) and the labels
# written to zarr (:func:`store_in_waves`, region writes).


def nearest_blocks(X, centers, what, sample_weight=None, metric="euclidean"):
    """Per-block results for the rows of X and ``centers``, as a lazy dask array.

    ``what`` is ``"labels"`` (int32, as scikit-learn's), ``"distances"`` to every center (X's
    float dtype), ``"sq_distances"`` to the nearest center (float64) or
    ``"weighted_sq_distances"`` (the same times ``sample_weight``, a 1-D dask array with X's
    row chunks). ``metric="cosine"``: of highest cosine, cosine distances (``1 - cos``).

    One blockwise layer over X. Each task learns its chunk's index and first row (for its
    error messages) from dask's lazily generated block ids and :class:`._waves.RowStartDep`,
    not from ``block_info``, which dask builds as a dict with an entry per chunk when the array
    is made (about 1 KB of client memory per chunk: 1 GB for the labels of an array of 10^6
    chunks).
    """
    from dask.layers import ArrayBlockIdDep

    row_chunks = (X.chunks[0],)
    where = [
        ArrayBlockIdDep(row_chunks),
        "i",
        RowStartDep(row_chunks),
        "i",
        RowCountDep(row_chunks),
        "i",
    ]
    weights = [None, None] if sample_weight is None else [sample_weight, "i"]
    # The output keeps X's array type (numpy, cupy...) through ``meta``.
    if what == "distances":
        single = X.dtype == np.float32 and centers.dtype == np.float32
        dtype = np.dtype(np.float32 if single else np.float64)
        out, extra, meta = "ik", {"new_axes": {"k": centers.shape[0]}}, X._meta.astype(dtype)
    else:
        dtype = np.dtype(np.int32 if what == "labels" else np.float64)
        out, extra, meta = "i", {}, X._meta.astype(dtype).reshape((0,))
    return dask.array.blockwise(
        predict_task,
        out,
        X,
        "ij",
        *weights,
        centers,
        None,
        *where,
        what=what,
        metric=metric,
        dtype=dtype,
        meta=meta.reshape((0,) * len(out)),
        # X's one column chunk reaches the task as a list of it (dask's concatenation of the
        # contracted feature axis copies even a lone block: a copy of every chunk per task).
        concatenate=False,
        align_arrays=False,
        token="predict_block",  # the CLI's progress bar counts tasks by this name
        **extra,
    )


def weighted_sq_distance_sum(X, centers, sample_weight=None, metric="euclidean"):
    """``(sum of weighted squared distances to the nearest center, total weight)``, computed.

    ``sample_weight`` is None or a 1-D dask array with X's row chunks (each chunk checked in
    its task: finite and >= 0). Computed in waves of at most :data:`._waves.WAVE_CHUNKS` chunks (one
    graph each, :func:`._waves.run_waves`); the per-wave sums are added in wave order, so the result
    does not depend on the scheduler. ``score`` and SageMaker's ``evaluate`` use this.
    ``metric="cosine"``: sums of ``1 - cos``.
    """
    parts, starts, arrays = {}, row_starts(X), [X, sample_weight]

    def build(index, start, stop):
        return block_wave(
            "predict_block-sum",
            arrays,
            starts,
            start,
            stop,
            sq_distance_part,
            add_parts,
            centers=centers,
            metric=metric,
        )

    run_waves(
        block_waves(X.numblocks[0]),
        build,
        lambda index, start, stop, result: parts.__setitem__(index, result),
    )
    return add_parts(*(parts[i] for i in sorted(parts)))


def store_in_waves(arr, target):
    """Write the 1-D dask array ``arr`` into the zarr array ``target`` of the same shape, in
    waves of at most :data:`._waves.WAVE_CHUNKS` chunks (:func:`._waves.run_waves`), each
    chunk a region write.

    ``target``'s chunks must be ``arr``'s (all chunks of one size but the last), so no two tasks
    write the same zarr chunk. Returns the number of rows written.
    """
    written, starts = [0], row_starts(arr)

    def build(index, start, stop):
        return block_wave(
            "store_labels", [arr], starts, start, stop, store_block, add_counts, target=target
        )

    def collect(index, start, stop, rows):
        written[0] += rows

    run_waves(block_waves(arr.numblocks[0]), build, collect)
    return written[0]
