"""The wave engine: a tree reduction over the row chunks of a dask array, in bounded graphs.

Dask wiring only, no arithmetic: what a leaf and a merge compute comes from a
:class:`Reduction` (leaf, combine, cap rule, seed rule, token), and what is saved and loaded
from :class:`Hooks` (:mod:`._checkpoint` plugs in there). The summary's reduction is in
:mod:`._graph`, the refinement's in :mod:`._refine`; the per-chunk task functions in
:mod:`._tasks`. Every node's keywords depend on its place in the tree only, so the result
does not depend on the scheduler or on the order in which tasks run.

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
import dataclasses
import functools
import gc
from collections.abc import Callable
from typing import Any

import dask
import numpy as np
from dask.base import tokenize
from dask.blockwise import Blockwise
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.layers import ArrayBlockwiseDep
from dask.task_spec import Task, TaskRef

from . import _memory
from ._distances import release_thread_workspaces
from ._threads import distributed_client

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


@dataclasses.dataclass(frozen=True)
class Reduction:
    """What a tree reduction computes (a spec of :func:`reduce_in_waves`).

    ``leaf(block, weight_block, *, index, row_start, rows)`` is one chunk's task
    (``weight_block`` None without weights; ``rows`` the chunk's declared rows);
    ``combine(*children, **keywords)`` merges two or more results, in a task inside a wave
    and on the client above the waves. Its keywords at node
    ``(level, index)`` over ``covered`` of the ``n_leaves`` chunks (:meth:`keywords`): the cap
    rule ``cap(covered, n_leaves)`` as ``cap=`` when ``cap`` is given, and the seed rule's
    ``level=, index=, entropy=`` when ``entropy`` is not None (the combine draws from
    :func:`._seeds.task_seed`). ``token`` is what the results depend on besides the arrays
    and ``split_every``; it enters the task keys.
    """

    leaf: Callable
    combine: Callable
    token: str
    cap: Callable | None = None
    entropy: Any = None

    def keywords(self, level, index, covered, n_leaves):
        """``combine``'s keywords at node ``(level, index)`` over ``covered`` chunks."""
        out = {}
        if self.cap is not None:
            out["cap"] = self.cap(covered, n_leaves)
        if self.entropy is not None:
            out.update(level=level, index=index, entropy=self.entropy)
        return out

    def node(self, level, index, covered, n_leaves):
        """The function of node ``(level, index)``: ``combine`` with its :meth:`keywords`."""
        keywords = self.keywords(level, index, covered, n_leaves)
        return functools.partial(self.combine, **keywords) if keywords else self.combine


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
    """What a wave saves and loads: nothing here; :mod:`._checkpoint` plugs in its own.

    ``token`` enters the task keys, so graphs with other hooks never share keys.
    """

    token = None

    def loaded(self, level, index, start, stop):
        """The saved result of node ``(level, index)`` over chunks [start, stop), or None."""
        return None

    def merge(self, level, index, start, stop, node):
        """The function of merge node ``(level, index)``; ``node`` is the reduction's
        (:meth:`Reduction.node`)."""
        return node

    def lone_leaf(self, start, stop):
        """None, or a function applied to the lone leaf of a one-chunk array (its root)."""
        return None


def _merge_node(dsk, name, spec, hooks, children, *, level, start, stop, span, n_leaves):
    index = start // span
    node = spec.node(level, index, stop - start, n_leaves)
    key = (name, level, index)
    args = [TaskRef(c) if isinstance(c, tuple) else c for c in children]
    dsk[key] = Task(key, hooks.merge(level, index, start, stop, node), *args)
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
    spec,
    split_every,
    hooks=None,
):
    """A Delayed result of the reduction ``spec`` over chunks ``[start, stop)`` of X: leaves
    and ``levels`` merge levels.

    ``start`` is a multiple of ``split_every**levels``; ``levels=0`` merges until one node is
    left (the whole tree: ``start=0``, ``stop`` the number of chunks). Node ``(level, index)``
    covers chunks ``[index * split_every**level, (index + 1) * split_every**level)`` exactly as
    in a tree that merges ``split_every`` nodes at a time from the leaves up, with the same
    keywords (:meth:`Reduction.keywords`). ``row_starts[i]`` is chunk i's first row. Returns
    ``(delayed, n_tasks)``: the tasks of the wave's own layer.
    """
    hooks = Hooks() if hooks is None else hooks
    split_every = max(2, int(split_every))
    n_leaves = X.numblocks[0]
    weight_name = None if sample_weight is None else sample_weight.name
    token = tokenize(X.name, weight_name, spec.token, split_every, hooks.token)
    leaf_name, merge_name = f"leaf-{token}", f"merge-{token}"
    layer = f"wave-{token}-{start}-{levels}"
    dsk = {}

    def leaves(a, b):
        for i in range(a, b):
            weight = None if weight_name is None else TaskRef((weight_name, i))
            dsk[(leaf_name, i)] = Task(
                (leaf_name, i),
                spec.leaf,
                TaskRef((X.name, i, 0)),
                weight,
                index=i,
                row_start=int(row_starts[i]),
                rows=int(row_starts[i + 1]) - int(row_starts[i]),
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

    common = dict(n_leaves=n_leaves)
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
                spec,
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
                    spec,
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


class RowCountDep(ArrayBlockwiseDep):
    """The declared rows of each row chunk, as a blockwise argument (the chunks' own sizes:
    nothing kept per chunk)."""

    def __getitem__(self, idx):
        return self.chunks[0][idx[0]]

    def __dask_tokenize__(self):
        return type(self).__name__, self.chunks


def reduce_in_waves(X, sample_weight, spec, *, split_every, hooks=None, on_wave=None):
    """The reduction ``spec`` of X's row chunks, computed in waves of at most
    :data:`WAVE_CHUNKS` chunks.

    Bit-identical to computing the one graph of :func:`wave_graph` over all chunks
    (``levels=0``). ``sample_weight`` is None or a 1-D dask array with X's row chunks.
    ``hooks`` load and save nodes (:class:`Hooks`; :mod:`._checkpoint`'s). ``on_wave(start,
    stop, n_tasks)`` is called as each wave is submitted (tests count graph sizes with it).
    """
    hooks = Hooks() if hooks is None else hooks
    split_every = max(2, int(split_every))
    n_blocks = X.numblocks[0]
    levels = wave_levels(n_blocks, split_every)
    params = dict(
        levels=levels, row_starts=row_starts(X), spec=spec, split_every=split_every, hooks=hooks
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
    top = _Top(spec, n_waves, levels, split_every, n_blocks)
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

    Node ``(level, index)`` is merged as soon as all its children are in, with the keywords
    it has in the one-graph tree, so the result is that tree's, bit for bit; the client
    holds at most ``split_every - 1`` waiting nodes per level (not one root per wave).
    """

    def __init__(self, spec, n_roots, level, split_every, n_leaves):
        self.spec, self.split_every = spec, split_every
        self.n_leaves, self.level = n_leaves, level
        self.counts, count = {}, n_roots
        while count > 1:
            self.counts[level] = count
            count, level = -(-count // split_every), level + 1
        self.nodes = {}

    def add(self, index, result, covered):
        """Wave root ``index`` (over ``covered`` chunks) is in; merge what it completes."""
        level, s = self.level, self.split_every
        self.nodes[level, index] = (result, covered)
        while level in self.counts:
            group = index // s
            siblings = range(group * s, min(group * s + s, self.counts[level]))
            if any((level, i) not in self.nodes for i in siblings):
                return
            children = [self.nodes.pop((level, i)) for i in siblings]
            covered = sum(c for _, c in children)
            level, index = level + 1, group
            node = self.spec.node(level, index, covered, self.n_leaves)
            result = node(*[child for child, _ in children])
            self.nodes[level, index] = (result, covered)

    def result(self):
        ((result, _),) = self.nodes.values()
        return result


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

    client = distributed_client()
    if client is None:
        try:
            for index, start, stop in pending:
                (result,) = dask.compute(build(index, start, stop))
                collect(index, start, stop, result)
        finally:  # the idle threads of a local scheduler keep no work buffers between passes
            release_thread_workspaces()
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
    except Exception as exc:
        if client.status == "running":
            raise
        raise _client_lost(client, exc) from exc
    finally:
        if running:  # an error or a stop: the cluster stops computing the other waves
            _cancel_quietly(client, list(running))
        _release_worker_buffers(client)


def _client_lost(client, exc):
    """The error of a pass whose client was closed, or lost its scheduler, while it ran (a
    ConnectionError, so the command line prints it as one line): what happened and the fix,
    not the cancelled futures' own error."""
    return ConnectionError(
        f"the Dask client was closed or lost its scheduler while the pass ran (client status "
        f"{client.status!r}; {type(exc).__name__}); the pass's results are lost. Start the "
        "scheduler and client again and rerun the fit (with checkpoint=..., the chunk ranges "
        "finished before are not read again)."
    )


def _cancel_quietly(client, futures):
    """Cancel the waves still running after an error or a stop. Best effort: a client that
    is closed or has lost its scheduler has nothing left to cancel, and an error here must
    not hide the pass's own error."""
    try:
        client.cancel(futures)
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def _release_worker_buffers(client):
    """Let the workers' threads go of their kept work buffers once a pass ends (as a local
    pass does in this process), so that a worker holds no memory of ours between fits. Best
    effort: a worker that is gone or unreachable holds nothing of ours either, and an error
    here must not hide the pass's own result or error."""
    try:
        client.run(release_thread_workspaces)
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def block_waves(n_blocks):
    """``(index, start, stop)`` of consecutive chunk ranges of at most :data:`WAVE_CHUNKS`."""
    wave = max(1, int(WAVE_CHUNKS))
    return [(i, a, min(a + wave, n_blocks)) for i, a in enumerate(range(0, n_blocks, wave))]


@collector_paused()
def block_wave(name, arrays, starts, start, stop, func, combine, **params):
    """A Delayed of ``combine`` over ``func`` applied to chunks ``[start, stop)`` of ``arrays``.

    ``arrays``: dask arrays with the same row chunks and one column block (or None, passed as
    None); ``starts``: their :func:`row_starts`; ``func(*blocks, index=i, row_start=r,
    rows=n, **params)`` (n: the chunk's declared rows) is one task per chunk, named
    ``name``. Built as the fit's waves are: one layer of tasks that refer to the arrays' own
    chunk keys, so dask culls their graphs to the wave's chunks.
    """
    token = tokenize(name, [None if a is None else a.name for a in arrays], func, params)
    part, top = f"{name}-{token}", f"{name}-wave-{token}"
    dsk = {}
    for i in range(start, stop):
        refs = [None if a is None else TaskRef((a.name, i) + (0,) * (a.ndim - 1)) for a in arrays]
        row_start, rows = int(starts[i]), int(starts[i + 1]) - int(starts[i])
        dsk[(part, i)] = Task(
            (part, i), func, *refs, index=i, row_start=row_start, rows=rows, **params
        )
    dsk[(top, start)] = Task(
        (top, start), combine, *[TaskRef((part, i)) for i in range(start, stop)]
    )
    return fused_wave((top, start), dsk, f"{top}-{start}", [a for a in arrays if a is not None])
