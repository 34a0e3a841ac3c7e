"""Dask wiring only: one summarize task per row block, a tree of merges, seeds by position.

No arithmetic beyond calling the summarizer and Summary methods. Every task is seeded from
``SeedSequence(entropy, spawn_key=(level, index))``, so the result does not depend on the
scheduler or on the order in which tasks run.

Waves. However many chunks X has, no graph holds more than about ``1.2 * WAVE_CHUNKS`` tasks:
per chunk one leaf, which reads its chunk (and weights) inside (:func:`fused_wave`), then the
merges. The chunks are cut into waves of ``split_every**w <= WAVE_CHUNKS`` consecutive chunks,
aligned with the merge tree, and each wave is computed to its subtree's root, which is the tree
node ``(w, wave index)`` with the same seed and cap as in one big graph. The roots are then
merged by the same tree, so the result is bit-identical to a single graph. A wave's tasks refer
to X's own chunk keys ``(X.name, i, 0)``; X's graph is culled to the wave's chunks (dask culls
each layer to given keys, whatever the number of chunks) and each chunk's read is nested in
its leaf. (Tasks as plain tuples would make dask list every key of X at each cull: measured,
a wave of 512 chunks took 1.0-2.5 s at 10^6 chunks against 0.6 s at 10^4.) ``X.blocks[a:b]``
or ``X.to_delayed()`` would cost time in the total number of chunks for every wave (measured:
0.2 s per ``X.blocks`` slice at 10^5 chunks), and one Python ``dask.delayed`` call per chunk
costs far more than one task object.

Small chunks (under :data:`NEST_LEAVES_BELOW_BYTES` on average) are summarized inside their
first-level merge task (the leaves nested in it, named ``leafx<n>-<token>`` so that progress
counts n chunks): a task's own cost in the scheduler outweighs such a chunk's work (measured
on a LocalCluster of 2 workers, 10^4 chunks of 64 x 4: 10-12 s against 33-34 s).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math

import dask
import dask.array
import numpy as np
from dask.base import tokenize
from dask.blockwise import Blockwise
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.layers import ArrayBlockwiseDep
from dask.task_spec import Task, TaskRef

from . import _memory
from ._array import float_dtype, from_host, namespace, to_host
from ._kernels import (
    REFINE_TOP_LEVEL,
    coarsen_refine_keys,
    cosine_distances,
    distance_dtype,
    nearest,
    reduce_refine_groups,
    refine_groups,
    refine_lloyd_stats,
    refine_points,
    transform_sq_distances,
    unit_centers,
    unit_rows,
    value_range,
)
from ._seeds import LEAF_LEVEL, task_seed
from ._summarize import summarize
from ._threads import limit_blas_in_worker
from .summary import Summary, weight_range_problem


def check_block(X, sample_weight, index, row_start, centers=None, metric="euclidean", summed=None):
    """Validate one block inside its task; errors name the chunk. Returns X as float.

    X comes back in the dtype the distance kernels need (:func:`._kernels.distance_dtype`,
    with ``centers`` when given): float64 for float32 values whose squared distances overflow
    float32; values whose squared distances overflow float64 are an error.

    With ``metric="cosine"`` the rows are returned scaled to unit length (the one place
    where they are, inside the chunk's own task), and a row of zero norm, which has no
    direction, is an error naming the chunk and the row.

    ``summed`` says whether the weights go into summary sums (their range then counts, see
    :func:`.summary.weight_range_problem`); by default, when no ``centers`` are given (fit,
    refinement; predict and score pass centers).
    """
    xp = namespace(X)
    if X.dtype != float_dtype(xp, X.dtype):  # integers, bools and float16 compute in float64
        X = xp.astype(X, float_dtype(xp, X.dtype))
    rows = f"chunk {index} (rows {row_start} to {row_start + X.shape[0]})"
    if sample_weight is not None and sample_weight.shape[0]:
        sw = xp.astype(sample_weight, xp.float64)
        if not bool(xp.all(xp.isfinite(sw))) or bool(xp.any(sw < 0)):
            raise ValueError(
                f"sample_weight has negative, NaN or infinite values in {rows}; "
                "sample_weight should be finite and >= 0."
            )
        if centers is None if summed is None else summed:
            _check_weight_range(sw, f" in {rows}")
    if X.shape[0]:
        # NaN and inf show in the extremes (read once for both checks).
        bounds = value_range(X)
        if not (math.isfinite(bounds[0]) and math.isfinite(bounds[1])):
            raise ValueError(
                f"Input contains NaN or infinity in {rows}. Remove or impute those rows, e.g. "
                "X[da.isfinite(X).all(axis=1)] or da.nan_to_num(X), before fitting."
            )
        weight = X.shape[0] if sample_weight is None else float(xp.sum(sw))
        dtype = distance_dtype(X, centers, bounds, weight=weight)
        if dtype is None:
            raise ValueError(_too_large_message(X, centers, bounds, rows, weight))
        if dtype != X.dtype:
            X = xp.astype(X, dtype)
    if metric == "cosine" and X.shape[0]:
        X, zero = unit_rows(X)
        if bool(xp.any(zero)):
            row = row_start + int(xp.argmax(xp.astype(zero, xp.int32)))
            raise ValueError(
                f"metric='cosine': row {row} in {rows} has zero norm, so it has no "
                "direction and no cosine. Drop all-zero rows first, e.g. "
                "X[(X != 0).any(axis=1)], or use metric='euclidean'."
            )
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
):
    """Summarize one row block (a task); cosine: of its rows scaled to unit length."""
    limit_blas_in_worker()
    block = check_block(block, weight_block, index, row_start, metric=metric)
    summary = summarize(
        block,
        size,
        method=method,
        sample_weight=weight_block,
        mini_batch_size=mini_batch_size,
        seed=task_seed(entropy, LEAF_LEVEL, index),
    )
    return summary


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


#: Most chunks in one wave (one graph, one submission): a wave covers ``split_every**w``
#: chunks, the largest such power not above this.
WAVE_CHUNKS = 4096
#: Chunks smaller than this on average are summarized inside their first-level merge task
#: (``split_every`` chunks a task), since a task's own cost in the scheduler outweighs such a
#: chunk's work (64 x 4 chunks: about 0.5 ms against 0.1 ms).
NEST_LEAVES_BELOW_BYTES = 1 << 20
#: Waves computed at the same time on a distributed cluster (local schedulers: one at a time).
WAVES_IN_FLIGHT = 2
#: Retries of a wave's tasks on a distributed cluster (``Client.compute(retries=...)``).
WAVE_RETRIES = 1


def wave_levels(n_blocks, split_every, max_chunks=None):
    """Levels ``w`` of the subtree one wave covers (a wave is ``split_every**w`` chunks).

    0 means one wave computes the whole tree (there are at most ``max_chunks`` chunks).
    """
    max_chunks = WAVE_CHUNKS if max_chunks is None else int(max_chunks)
    split_every = max(2, int(split_every))
    if n_blocks <= max_chunks:
        return 0
    levels = 1
    while split_every ** (levels + 1) <= max_chunks:
        levels += 1
    return levels


class Hooks:
    """What a wave saves and loads: nothing here; :mod:`._checkpoint` overrides it.

    ``token`` enters the task keys, so graphs with other hooks never share keys.
    """

    token = None

    @staticmethod
    def combine(*children, **params):
        """The merge of two or more children's results: :func:`merge` (looked up when called)."""
        return merge(*children, **params)

    def loaded(self, level, index, start, stop):
        """The saved summary of node ``(level, index)`` over chunks [start, stop), or None."""
        return None

    def merge(self, level, index, start, stop, params):
        """The function of merge node ``(level, index)`` (``params``: :func:`merge`'s keywords)."""
        return functools.partial(self.combine, **params)

    def lone_leaf(self, start, stop):
        """None, or a function applied to the lone leaf of a one-chunk array (its root)."""
        return None


def _merge_node(
    dsk, name, hooks, children, *, level, start, stop, span, budget, n_leaves, size, entropy
):
    index = start // span
    params = dict(
        cap=node_cap(budget, stop - start, n_leaves, size),
        level=level,
        index=index,
        entropy=entropy,
    )
    key = (name, level, index)
    args = [TaskRef(c) if isinstance(c, tuple) else c for c in children]
    dsk[key] = Task(key, hooks.merge(level, index, start, stop, params), *args)
    return key


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off while a wave's graph is built (a decorator too).

    A wave allocates tens of thousands of task objects that all live until the wave has run;
    the collector would rescan them again and again (measured on 2 cores: a third of the build
    time of a 4,096-chunk wave, and more as the process holds more objects). A build makes no
    reference cycles, so nothing waits on the collector; it is switched back on (if it was on)
    when the build returns or raises.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@collector_paused()
def wave_graph(
    X,
    sample_weight,
    start,
    stop,
    *,
    levels,
    row_starts,
    size,
    method,
    mini_batch_size,
    split_every,
    budget,
    entropy,
    hooks=None,
    leaf_fn=None,
    metric="euclidean",
):
    """A Delayed Summary of chunks ``[start, stop)`` of X: leaves and ``levels`` merge levels.

    ``start`` is a multiple of ``split_every**levels``; ``levels=0`` merges until one node is
    left (the whole tree: ``start=0``, ``stop`` the number of chunks). Node ``(level, index)``
    covers chunks ``[index * split_every**level, (index + 1) * split_every**level)`` exactly as
    in :func:`tree`, with the same seed and cap. ``row_starts[i]`` is chunk i's first row.
    Returns ``(delayed, n_tasks)``: the tasks of the wave's own layer.

    ``leaf_fn(block, weight_block, index=, row_start=)``, when given, replaces :func:`leaf`
    (and ``hooks.combine`` the merge): the same waves and tree compute another mergeable result.
    """
    hooks = Hooks() if hooks is None else hooks
    split_every = max(2, int(split_every))
    n_leaves = X.numblocks[0]
    weight_name = None if sample_weight is None else sample_weight.name
    token = tokenize(
        X.name,
        weight_name,
        size,
        method,
        mini_batch_size,
        split_every,
        budget,
        entropy,
        hooks.token,
        leaf_fn,
        *([] if metric == "euclidean" else [metric]),
    )
    leaf_name, merge_name = f"leaf-{token}", f"merge-{token}"
    layer = f"wave-{token}-{start}-{levels}"
    if leaf_fn is None:
        params = dict(size=size, method=method, mini_batch_size=mini_batch_size, entropy=entropy)
        if metric != "euclidean":
            params["metric"] = metric
        leaf_fn = functools.partial(leaf, **params)
    dsk = {}

    def leaves(a, b):
        for i in range(a, b):
            weight = None if weight_name is None else TaskRef((weight_name, i))
            dsk[(leaf_name, i)] = Task(
                (leaf_name, i),
                leaf_fn,
                TaskRef((X.name, i, 0)),
                weight,
                index=i,
                row_start=int(row_starts[i]),
            )
        return [(leaf_name, i) for i in range(a, b)]

    if not levels and stop - start == 1:  # one chunk: the leaf is the root
        done = hooks.loaded(1, 0, start, stop)
        if done is not None:
            return dask.delayed(done), 0
        (key,) = leaves(start, stop)
        save = hooks.lone_leaf(start, stop)
        if save is not None:
            dsk[(merge_name, 1, 0)] = Task((merge_name, 1, 0), save, TaskRef(key))
            key = (merge_name, 1, 0)
        return _delayed(key, dsk, layer, X, sample_weight)

    common = dict(budget=budget, n_leaves=n_leaves, size=size, entropy=entropy)
    # Small chunks: each first-level merge summarizes its chunks itself (the leaves nested in
    # it, :func:`fused_wave`), named ``leafx<chunks>-<token>`` so progress counts its chunks.
    nest = small_chunks(X, start, stop)
    span, level, nodes = split_every, 1, []
    for a in range(start, stop, span):
        b = min(a + span, stop)
        done = hooks.loaded(1, a // span, a, b)
        if done is None:
            done = _merge_node(
                dsk,
                f"leafx{b - a}-{token}" if nest else merge_name,
                hooks,
                leaves(a, b),
                level=1,
                start=a,
                stop=b,
                span=span,
                **common,
            )
        nodes.append((done, a, b))
    while not (level == levels or (not levels and len(nodes) == 1)):
        level, span = level + 1, span * split_every
        groups = [nodes[g : g + split_every] for g in range(0, len(nodes), split_every)]
        nodes = [
            (
                _merge_node(
                    dsk,
                    merge_name,
                    hooks,
                    [node for node, _, _ in group],
                    level=level,
                    start=group[0][1],
                    stop=group[-1][2],
                    span=span,
                    **common,
                ),
                group[0][1],
                group[-1][2],
            )
            for group in groups
        ]
    ((root, _, _),) = nodes
    if not isinstance(root, tuple):  # a node loaded from a file
        return dask.delayed(root), 0
    nested = [(leaf_name, i) for i in range(start, stop)] if nest else ()
    return _delayed(root, dsk, layer, X, sample_weight, nested)


def small_chunks(X, start, stop):
    """Whether chunks ``[start, stop)`` of X average under :data:`NEST_LEAVES_BELOW_BYTES`."""
    rows = sum(X.chunks[0][start:stop])
    return rows * X.shape[1] * X.dtype.itemsize < NEST_LEAVES_BELOW_BYTES * max(1, stop - start)


def _delayed(key, dsk, layer, X, sample_weight, nest=()):
    """``(Delayed of key, its number of tasks)``: the wave's tasks with the parts of X's (and
    the weights') graph they need, and the tasks ``nest`` nested in their parents
    (:func:`fused_wave`)."""
    arrays = [X] if sample_weight is None else [X, sample_weight]
    delayed = fused_wave(key, dsk, layer, arrays, nest)
    return delayed, len(delayed.dask)


def fused_wave(key, dsk, layer, arrays, nest=()):
    """A Delayed of ``key`` over the tasks ``dsk``, which read chunks of the dask ``arrays``.

    The arrays' graphs are culled to the chunks ``dsk`` reads (dask culls each layer to
    those keys, whatever the total number of chunks), and each task of ``dsk`` takes in,
    as nested tasks, the chain of tasks that only it needs: a chunk's read (and whatever
    only that read needs) runs inside the leaf that uses it, so a wave gives the scheduler
    one task per chunk plus the merges, as dask's blockwise fusion does for its own
    reductions. The tasks of ``dsk`` named in ``nest`` (the leaves of small chunks) are
    nested in their one dependent too, so one task summarizes and merges several chunks.
    Shared inputs (a zarr array object, a chunk that two tasks read) stay tasks of their
    own. The keys of ``dsk`` keep their names.
    """
    from collections import defaultdict

    from dask._task_spec import convert_legacy_graph

    reads = defaultdict(set)
    for task in dsk.values():
        for dep in task.dependencies:
            if dep not in dsk:
                reads[dep[0] if isinstance(dep, tuple) else dep].add(dep)
    graph = {}
    for array in arrays:
        wanted = reads.get(array.name)
        if wanted:
            graph.update(needed_tasks(array.__dask_graph__(), wanted))
    graph = convert_legacy_graph(graph)
    n_dependents = defaultdict(int)
    for node in (*graph.values(), *dsk.values()):
        for dep in node.dependencies:
            n_dependents[dep] += 1
    inner = {k: dsk[k] for k in nest if k in dsk and n_dependents[k] == 1}
    graph.update(inner)

    def nested(node):  # the node with its single-use inputs inlined
        subs = {
            dep: nested(graph.pop(dep))
            for dep in node.dependencies
            if dep in graph and n_dependents[dep] == 1
        }
        return node.substitute(subs) if subs else node

    graph.update({k: nested(task) for k, task in dsk.items() if k not in inner})
    return Delayed(key, HighLevelGraph.from_collections(layer, graph, dependencies=()), layer=layer)


def needed_tasks(graph, keys):
    """The tasks of the HighLevelGraph ``graph`` (a dask array's) that computing ``keys``
    needs, as a dict.

    What ``HighLevelGraph.cull`` gives, layer by layer (dask's own ``Layer.cull``), but
    without its list of every key of the graph: dask builds that list (and keeps it with the
    array) whenever a layer holds old-style tasks, as a zarr-backed array's one-key layer
    with the zarr array does, only to ask whether names inside those tasks are keys. For
    10^6 chunks it is 126 MB of client memory and 2 s; :class:`_GraphKeys` answers the same
    question from each layer's own shape.
    """
    keys, out = set(keys), {}
    legacy = any(layer.has_legacy_tasks for layer in graph.layers.values())
    known = _GraphKeys(graph) if legacy else set()
    for name in reversed(_layer_order(graph.dependencies)):
        if not keys:
            break
        layer, deps = graph.layers[name].cull(keys, known)
        if deps:
            for key, needs in deps.items():
                keys |= needs
                keys.discard(key)
            out.update(layer)
    return out


def _layer_order(dependencies):
    """Layer names with each after the layers it depends on (no recursion: an array made by
    a long loop of operations has thousands of layers)."""
    waiting = {name: len(deps) for name, deps in dependencies.items()}
    users = {name: [] for name in dependencies}
    for name, deps in dependencies.items():
        for dep in deps:
            users[dep].append(name)
    ready = [name for name, count in waiting.items() if not count]
    order = []
    while ready:
        name = ready.pop()
        order.append(name)
        for user in users[name]:
            waiting[user] -= 1
            if not waiting[user]:
                ready.append(user)
    return order


class _GraphKeys:
    """``key in keys`` over every layer of a HighLevelGraph, without listing its keys: a
    blockwise layer's keys from its name and block counts, a materialized layer's from its
    dict, any other layer's from its own list (made once)."""

    def __init__(self, graph):
        self.layers, self.listed = list(graph.layers.values()), {}

    def __contains__(self, key):
        hash(key)  # an unhashable name raises TypeError, as it would asking a set
        return any(self._in(i, layer, key) for i, layer in enumerate(self.layers))

    def _in(self, i, layer, key):
        if isinstance(layer, Blockwise):
            if not (isinstance(key, tuple) and key and key[0] == layer.output):
                return False
            index = tuple(_block_index(j) for j in key[1:])
            dims = [layer.dims[axis] for axis in layer.output_indices]
            if len(index) != len(dims) or not all(
                j is not None and 0 <= j < n for j, n in zip(index, dims, strict=True)
            ):
                return False
            return layer.output_blocks is None or index in layer.output_blocks
        if isinstance(layer, MaterializedLayer):
            return key in layer.mapping
        if i not in self.listed:
            self.listed[i] = set(layer.get_output_keys())
        return key in self.listed[i]


def _block_index(j):
    """``j`` as a block index where a set of keys would take it for one (``1``, ``1.0``,
    ``True``, numpy integers), else None."""
    try:
        i = int(j.real) if isinstance(j, complex) else int(j)
    except (TypeError, ValueError, OverflowError):
        return None
    return i if i == j else None


def summary_graph(
    X,
    sample_weight,
    *,
    size,
    method,
    mini_batch_size,
    split_every,
    budget,
    entropy,
    metric="euclidean",
):
    """A delayed Summary of the dask array X (row blocks, one column block): one graph.

    ``sample_weight`` is None or a 1-D dask array with X's row chunks. :func:`fit_summary`
    computes the same summary in waves of bounded size.
    """
    graph, _ = wave_graph(
        X,
        sample_weight,
        0,
        X.numblocks[0],
        levels=0,
        row_starts=row_starts(X),
        size=size,
        method=method,
        mini_batch_size=mini_batch_size,
        split_every=split_every,
        budget=budget,
        entropy=entropy,
        metric=metric,
    )
    return graph


def row_starts(X):
    """First row of each chunk of X (and the row count at index ``X.numblocks[0]``)."""
    return RowStarts(X.chunks[0])


class RowStarts:
    """``starts[i]``: the first row of chunk i of row chunks ``chunks`` (a tuple of sizes).

    Kept as the first row of every :attr:`STRIDE`-th chunk, the rows in between added up a
    stride at a time when asked for (waves ask in order), not as one array of a row per chunk:
    for 10^6 chunks that array, and the temporaries that made it, were 24 MB of the client's
    peak memory, against 2 KB here and 32 KB for the stride in use.
    """

    STRIDE = 4096

    def __init__(self, chunks):
        self.chunks, stride = tuple(chunks), self.STRIDE
        marks = [0]
        for a in range(0, len(self.chunks), stride):
            marks.append(marks[-1] + sum(self.chunks[a : a + stride]))
        self.marks, self.cached = marks, (None, None)  # (stride, its first rows): one object,
        # replaced whole, so that threads materializing graphs at once never mix two strides

    def __len__(self):
        return len(self.chunks) + 1

    def __getitem__(self, i):
        n = len(self.chunks)
        i = int(i)
        if not 0 <= i <= n:
            raise IndexError(f"chunk {i} of {n}")
        block, offset = divmod(i, self.STRIDE)
        if offset == 0:
            return self.marks[block]
        cached, firsts = self.cached
        if cached != block:
            sizes = self.chunks[block * self.STRIDE : (block + 1) * self.STRIDE]
            firsts = self.marks[block] + np.cumsum((0, *sizes), dtype=np.int64)
            self.cached = (block, firsts)
        return int(firsts[offset])


def _distributed_client():
    """The distributed Client that ``dask.compute`` would use now, or None."""
    from ._threads import distributed_client

    return distributed_client()


def fit_summary(
    X,
    sample_weight,
    *,
    size,
    method,
    mini_batch_size,
    split_every,
    budget,
    entropy,
    hooks=None,
    on_wave=None,
    leaf_fn=None,
    metric="euclidean",
):
    """The Summary of X, computed in waves of at most :data:`WAVE_CHUNKS` chunks.

    Bit-identical to computing :func:`summary_graph`. ``on_wave(start, stop, n_tasks)`` is
    called as each wave is submitted (tests count graph sizes with it). With ``leaf_fn``
    (see :func:`wave_graph`) and ``hooks.combine``, the same waves compute another result
    (:func:`refine_pass`).
    """
    hooks = Hooks() if hooks is None else hooks
    split_every = max(2, int(split_every))
    n_blocks = X.numblocks[0]
    levels = wave_levels(n_blocks, split_every)
    params = dict(
        levels=levels,
        row_starts=row_starts(X),
        size=size,
        method=method,
        mini_batch_size=mini_batch_size,
        split_every=split_every,
        budget=budget,
        entropy=entropy,
        hooks=hooks,
        leaf_fn=leaf_fn,
        metric=metric,
    )

    def build(index, start, stop):
        graph, n_tasks = wave_graph(X, sample_weight, start, stop, **params)
        if on_wave is not None:
            on_wave(start, stop, n_tasks)
        return graph

    if not levels:  # one wave: the whole tree
        out = []
        run_waves([(0, 0, n_blocks)], build, lambda *wave: out.append(wave[-1]))
        return out[0]

    wave = split_every**levels
    n_waves = -(-n_blocks // wave)
    top = _Top(n_waves, levels, split_every, budget, size, entropy, n_blocks, hooks.combine)
    pending = []
    for index, start in enumerate(range(0, n_blocks, wave)):
        stop = min(start + wave, n_blocks)
        done = hooks.loaded(levels, index, start, stop)
        if done is not None:
            top.add(index, done, stop - start)
        else:
            pending.append((index, start, stop))

    run_waves(pending, build, lambda index, start, stop, root: top.add(index, root, stop - start))
    return top.result()


class _Top:
    """The tree above the wave roots, merged here as the roots arrive.

    Node ``(level, index)`` is merged as soon as all its children are in, with the cap and
    seed :func:`tree` gives it, so the result is :func:`tree`'s, bit for bit; the client
    holds at most ``split_every - 1`` waiting nodes per level (not one root per wave).
    """

    def __init__(self, n_roots, level, split_every, budget, size, entropy, n_leaves, combine):
        self.split_every, self.budget, self.size = split_every, budget, size
        self.combine = combine
        self.entropy, self.n_leaves, self.level = entropy, n_leaves, level
        self.counts, count = {}, n_roots
        while count > 1:
            self.counts[level] = count
            count, level = -(-count // split_every), level + 1
        self.nodes = {}

    def add(self, index, summary, covered):
        """Wave root ``index`` (over ``covered`` chunks) is in; merge what it completes."""
        level, s = self.level, self.split_every
        self.nodes[level, index] = (summary, covered)
        while level in self.counts:
            group = index // s
            siblings = range(group * s, min(group * s + s, self.counts[level]))
            if any((level, i) not in self.nodes for i in siblings):
                return
            children = [self.nodes.pop((level, i)) for i in siblings]
            covered = sum(c for _, c in children)
            level, index = level + 1, group
            summary = self.combine(
                *[child for child, _ in children],
                cap=node_cap(self.budget, covered, self.n_leaves, self.size),
                level=level,
                index=index,
                entropy=self.entropy,
            )
            self.nodes[level, index] = (summary, covered)

    def result(self):
        ((summary, _),) = self.nodes.values()
        return summary


def run_waves(pending, build, collect):
    """Compute the waves ``pending`` (``(index, start, stop)`` each) and hand each result on.

    ``build(index, start, stop)`` gives a wave's Delayed; ``collect(index, start, stop,
    result)`` receives its result. Local schedulers: one wave at a time, in order. A
    distributed client: at most :data:`WAVES_IN_FLIGHT` submitted at once, results in the
    order they finish (``collect`` must not depend on that order); the wait looks every
    :data:`._memory.RESTART_POLL_SECONDS` at the nannies' memory restarts of the workers and
    ends (the waves cancelled) with :class:`._memory.WorkersRestartedError` when a worker too
    small for the library or a task is restarted again and again (:class:`._memory.RestartWatch`).
    """
    client = _distributed_client()
    if client is None:
        for index, start, stop in pending:
            (result,) = dask.compute(build(index, start, stop))
            collect(index, start, stop, result)
        return
    from distributed import TimeoutError as WaitTimeout
    from distributed import wait

    watch = _memory.RestartWatch(client)
    pending = list(pending)
    running = {}
    try:
        while pending or running:
            while pending and len(running) < WAVES_IN_FLIGHT:
                index, start, stop = pending.pop(0)
                future = client.compute(build(index, start, stop), retries=WAVE_RETRIES)
                running[future] = (index, start, stop)
            try:
                done = wait(
                    list(running),
                    timeout=_memory.RESTART_POLL_SECONDS,
                    return_when="FIRST_COMPLETED",
                ).done
            except WaitTimeout:
                watch.check()
                continue
            for future in done:
                index, start, stop = running.pop(future)
                result = future.result()
                future.release()
                collect(index, start, stop, result)
    finally:
        if running:  # an error or a stop: the cluster stops computing the other waves
            client.cancel(list(running))


def block_waves(n_blocks):
    """``(index, start, stop)`` of consecutive chunk ranges of at most :data:`WAVE_CHUNKS`."""
    wave = max(1, int(WAVE_CHUNKS))
    return [(i, a, min(a + wave, n_blocks)) for i, a in enumerate(range(0, n_blocks, wave))]


# ---------------------------------------------------------------------- refinement pass
# A refinement pass (``refine_passes``) groups every row by its nearest, second- and
# third-nearest center and a band of its margin between the first two
# (:func:`._kernels.refine_groups`); the groups' sums are
# added by key in the summary's tree and waves (:func:`fit_summary` with another leaf and
# merge), so the order of additions is fixed and the result bit-identical on every scheduler.
# Nothing is random: no seeds are drawn. A node with more than ``cap`` groups merges
# neighbouring bands (a coarser level) until it has at most ``cap``; the nearest center always
# stays in the key, so the exact Lloyd step and cost never lose anything.


class RefineStats:
    """Groups of a refinement pass over some chunks (host numpy): ``keys``, ``weights``,
    ``offsets``, ``sq`` as :func:`._kernels.refine_groups` gives them, the coarsening
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
        """The groups as weighted points: :func:`._kernels.refine_points`."""
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


def refine_leaf(block, weight_block, *, index, row_start, centers):
    """One chunk's :func:`._kernels.refine_groups` for ``centers`` (a task), on the host and
    coarsened to at most :func:`refine_cap` groups."""
    limit_blas_in_worker()
    block = check_block(block, weight_block, index, row_start)
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


def refine_merge(*children, cap=None, level=None, index=None, entropy=None):
    """The children's groups added by key in their order, at the coarsest of their levels and
    then coarser until at most ``cap`` groups are left (a task; :func:`merge`'s keywords are
    accepted and unused: nothing is drawn).

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
    """:class:`RefineStats` added by key in their order, within their cap."""
    first = stats[0]
    top = max(c.level for c in stats)
    keys = [coarsen_refine_keys(c.keys, top, c.k) if top > c.level else c.keys for c in stats]
    arrays = reduce_refine_groups(
        np.concatenate(keys),
        *(np.concatenate([c.arrays[i] for c in stats]) for i in (1, 2, 3)),
    )
    return _within_cap(RefineStats(*arrays, level=top, k=first.k, cap=first.cap))


class RefineHooks(Hooks):
    """Hooks of a refinement pass: its merge is :func:`refine_merge`; nothing is saved.

    :mod:`._checkpoint` subclasses it to save and load each range's stats.
    """

    combine = staticmethod(refine_merge)


def refine_pass(X, sample_weight, centers, *, split_every, hooks=None, on_wave=None):
    """The merged :class:`RefineStats` of every row of X for ``centers`` (host).

    One read of X in the waves and tree of :func:`fit_summary` (bounded graphs, a fixed order
    of additions). ``centers`` is a small (k, d) array (numpy or the chunks' array type).
    """
    hooks = RefineHooks() if hooks is None else hooks
    return fit_summary(
        X,
        sample_weight,
        size=1,
        method="refine",
        mini_batch_size=1,
        split_every=split_every,
        budget=2,
        entropy=0,
        hooks=hooks,
        on_wave=on_wave,
        leaf_fn=functools.partial(refine_leaf, centers=centers),
    )


# ---------------------------------------------------------------------- predict side
# Labels, distances and the weighted squared-distance sum of rows to fitted centers: one
# map_blocks layer over X each (X's array type kept through ``meta``), lazy for the caller.
# What runs over all chunks runs in waves of at most WAVE_CHUNKS chunks, as the fit does
# (:func:`run_waves`): the squared-distance sum (``score``, ``evaluate``) and the labels
# written to zarr (:func:`store_in_waves`, region writes).


def predict_block(block, weights, centers, what, metric="euclidean", index=0, row_start=0):
    """What :func:`nearest_blocks` computes, for one block (a task); errors name the chunk.

    ``weights`` is None or the block's sample weights (1-D; only for
    ``"weighted_sq_distances"``); they are checked like the fit's. ``index`` and
    ``row_start`` (the chunk's index and first row) only name the chunk in errors. With
    ``metric="cosine"`` (unit centers) the rows are scaled to unit length first, the nearest
    center is the one of highest cosine, ``"distances"`` are ``1 - cos`` and the
    ``"sq_distances"`` are the cosine distances to the nearest center (``||u - c||^2 / 2`` for
    unit u and c).
    """
    xp = namespace(block)
    c = centers if type(centers) is type(block) else from_host(to_host(centers), block)
    # As scikit-learn's: float32 distances only for float32 rows and float32 centers.
    single = block.dtype == xp.float32 and c.dtype == xp.float32
    out_dtype = xp.float32 if single else xp.float64
    block = check_block(block, weights, index, row_start, c, metric)
    cosine = metric == "cosine"
    if cosine:  # unit length in the block's dtype, as the rows
        c = unit_centers(xp.astype(c, block.dtype), xp.astype(c, block.dtype))
    if what == "distances":
        if cosine:
            return xp.astype(cosine_distances(block, c), out_dtype)
        return xp.astype(xp.sqrt(transform_sq_distances(block, c)), out_dtype)
    labels, dist = nearest(block, c)
    if what == "labels":
        return xp.astype(labels, xp.int32)
    if cosine:
        dist = dist / 2.0
    if weights is not None:
        return dist * xp.astype(weights, xp.float64)
    return dist


def nearest_blocks(X, centers, what, sample_weight=None, metric="euclidean"):
    """Per-block results for the rows of X and ``centers``, as a lazy dask array.

    ``what`` is ``"labels"`` (int32, as scikit-learn's), ``"distances"`` to every center (X's
    float dtype), ``"sq_distances"`` to the nearest center (float64) or
    ``"weighted_sq_distances"`` (the same times ``sample_weight``, a 1-D dask array with X's
    row chunks). ``metric="cosine"``: of highest cosine, cosine distances (``1 - cos``).

    One blockwise layer over X. Each task learns its chunk's index and first row (for its
    error messages) from dask's lazily generated block ids and :class:`RowStartDep`, not from
    ``block_info``, which dask builds as a dict with an entry per chunk when the array is made
    (about 1 KB of client memory per chunk: 1 GB for the labels of an array of 10^6 chunks).
    """
    from dask.layers import ArrayBlockIdDep

    row_chunks = (X.chunks[0],)
    where = [ArrayBlockIdDep(row_chunks), "i", RowStartDep(row_chunks), "i"]
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
        _predict_task,
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
        concatenate=True,
        align_arrays=False,
        token="predict_block",  # the CLI's progress bar counts tasks by this name
        **extra,
    )


class RowStartDep(ArrayBlockwiseDep):
    """The first row of each row chunk, as a blockwise argument (:class:`RowStarts`).

    dask's own ``ArraySliceDep`` keeps the offsets of every chunk, in a cache that outlives
    the array (8 MB for an array of 10^6 chunks); this keeps a row per 4,096 chunks.
    """

    def __init__(self, chunks):
        super().__init__(chunks)
        self.starts = RowStarts(chunks[0])

    def __getitem__(self, idx):
        return self.starts[idx[0]]

    def __dask_tokenize__(self):  # the chunks, not the stride cached by the last look-up
        return type(self).__name__, self.chunks


def _predict_task(block, weights, centers, block_id, row_start, *, what, metric):
    """:func:`predict_block` with the chunk's index from dask's block id."""
    index, row_start = int(block_id[0]), int(row_start)
    return predict_block(block, weights, centers, what, metric, index, row_start)


def sq_distance_part(block, weights, centers, *, index, row_start, metric="euclidean"):
    """``(sum of weighted squared distances to the nearest center, total weight)`` of one
    block, as floats (a task); ``weights`` None or the block's 1-D weights. For
    ``metric="cosine"`` the distances are ``1 - cos``."""
    where = dict(index=index, row_start=row_start)
    if weights is None:
        dist = predict_block(block, None, centers, "sq_distances", metric, **where)
        return float(to_host(namespace(dist).sum(dist))), float(block.shape[0])
    xp = namespace(weights)
    dist = predict_block(block, weights, centers, "weighted_sq_distances", metric, **where)
    return float(to_host(xp.sum(dist))), float(to_host(xp.sum(xp.astype(weights, xp.float64))))


def add_parts(*parts):
    """Sums of the ``(total, weight)`` parts, each exactly rounded (``math.fsum``)."""
    return math.fsum(p[0] for p in parts), math.fsum(p[1] for p in parts)


@collector_paused()
def block_wave(name, arrays, starts, start, stop, func, combine, **params):
    """A Delayed of ``combine`` over ``func`` applied to chunks ``[start, stop)`` of ``arrays``.

    ``arrays``: dask arrays with the same row chunks and one column block (or None, passed as
    None); ``starts``: their :func:`row_starts`; ``func(*blocks, index=i, row_start=r,
    **params)`` is one task per chunk, named ``name``. Built as the fit's waves are: one
    layer of tasks that refer to the arrays' own chunk keys, so dask culls their graphs to
    the wave's chunks.
    """
    token = tokenize(name, [None if a is None else a.name for a in arrays], func, params)
    part, top = f"{name}-{token}", f"{name}-wave-{token}"
    dsk = {}
    for i in range(start, stop):
        refs = [None if a is None else TaskRef((a.name, i) + (0,) * (a.ndim - 1)) for a in arrays]
        row_start = int(starts[i])
        dsk[(part, i)] = Task((part, i), func, *refs, index=i, row_start=row_start, **params)
    dsk[(top, start)] = Task(
        (top, start), combine, *[TaskRef((part, i)) for i in range(start, stop)]
    )
    return fused_wave((top, start), dsk, f"{top}-{start}", [a for a in arrays if a is not None])


def weighted_sq_distance_sum(X, centers, sample_weight=None, metric="euclidean"):
    """``(sum of weighted squared distances to the nearest center, total weight)``, computed.

    ``sample_weight`` is None or a 1-D dask array with X's row chunks (each chunk checked in
    its task: finite and >= 0). Computed in waves of at most :data:`WAVE_CHUNKS` chunks (one
    graph each, :func:`run_waves`); the per-wave sums are added in wave order, so the result
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


def store_block(block, *, index, row_start, target):
    """Write one block to rows ``[row_start, row_start + len(block))`` of the zarr array
    ``target`` (a task); returns the rows written."""
    target[row_start : row_start + block.shape[0]] = to_host(block)
    return block.shape[0]


def store_in_waves(arr, target):
    """Write the 1-D dask array ``arr`` into the zarr array ``target`` of the same shape, in
    waves of at most :data:`WAVE_CHUNKS` chunks (:func:`run_waves`), each chunk a region write.

    ``target``'s chunks must be ``arr``'s (all chunks of one size but the last), so no two tasks
    write the same zarr chunk. Returns the number of rows written.
    """
    written, starts = [0], row_starts(arr)

    def build(index, start, stop):
        return block_wave(
            "store_labels", [arr], starts, start, stop, store_block, _total, target=target
        )

    def collect(index, start, stop, rows):
        written[0] += rows

    run_waves(block_waves(arr.numblocks[0]), build, collect)
    return written[0]


def _total(*counts):
    return sum(counts)
