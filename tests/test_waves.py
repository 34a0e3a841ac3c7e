"""Waves: a fit over many chunks never puts more than a bounded number of tasks in one graph,
and gives the summary and centers of the one-graph tree, bit for bit, on every scheduler."""

import dask
import dask.array as da
import numpy as np
import pytest
from _helpers import GraphSizes, summary_graph

from dask_streamkm import StreamingKMeans, _graph, _waves

PARAMS = dict(size=16, method="stream", mini_batch_size=64, budget=200, entropy=7)


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(100 * 40, 3)) + rng.integers(0, 4, size=(100 * 40, 1)) * 8
    w = rng.random(len(X)) + 0.1
    return da.from_array(X, chunks=(40, -1)), da.from_array(w, chunks=(40,))


def _same(a, b):
    for field in ("weights", "linear_sums", "square_sums"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.n_seen == b.n_seen


@pytest.mark.parametrize("split_every", [2, 3, 8])
@pytest.mark.parametrize("weighted", [False, True])
def test_waves_equal_the_one_graph_tree(data, monkeypatch, split_every, weighted):
    X, w = data
    w = w if weighted else None
    (one,) = dask.compute(summary_graph(X, w, split_every=split_every, **PARAMS), scheduler="sync")
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 9)
    waves = []
    with dask.config.set(scheduler="sync"), GraphSizes() as sizes:
        got = _graph.fit_summary(
            X,
            w,
            _graph.SummaryParams(split_every=split_every, **PARAMS),
            on_wave=lambda a, b, n: waves.append((a, b, n)),
        )
    _same(got, one)
    wave = split_every ** _waves.wave_levels(100, split_every, 9)
    assert wave <= 9
    assert [(a, b) for a, b, _ in waves] == [(a, min(a + wave, 100)) for a in range(0, 100, wave)]
    # Each graph: a wave's leaves (each with its chunk and weights read inside) and merges.
    assert max(sizes.sizes) <= 2 * 9 + 2
    assert len(sizes.sizes) == len(waves)


@pytest.mark.parametrize("nested", [False, True])
def test_largest_graph_of_a_fit_stays_bounded_with_many_chunks(monkeypatch, nested):
    # 3,000 chunks of 8 rows: with waves of at most 64 chunks, no graph passes ~3 x 64 tasks.
    rng = np.random.default_rng(0)
    X = da.from_array(rng.normal(size=(24_000, 2)), chunks=(8, -1))
    params = dict(n_clusters=3, summary_size=8, split_every=4, random_state=0)
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 64)
    # Chunks of 128 bytes are summarized inside their first-level merge unless told otherwise.
    monkeypatch.setattr(_waves, "NEST_LEAVES_BELOW_BYTES", 1 << 20 if nested else 0)
    with dask.config.set(scheduler="sync"), GraphSizes() as sizes:
        km = StreamingKMeans(**params).fit(X)
    assert len(sizes.sizes) == -(-3000 // 64)
    # 64 leaves, each reading its chunk inside (fused), and 16 + 4 + 1 merges; nested, the
    # 16 first-level merges read and summarize their 4 chunks each.
    assert max(sizes.sizes) == (0 if nested else 64) + 16 + 4 + 1
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 10**9)
    with dask.config.set(scheduler="sync"), GraphSizes() as sizes:
        ref = StreamingKMeans(**params).fit(X)
    # one graph: a leaf per chunk (nested: none) and the whole tree of merges
    assert sizes.sizes[0] == (0 if nested else 3000) + 750 + 188 + 47 + 12 + 3 + 1
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_


def test_waves_on_threads_and_a_local_cluster_give_the_same_centers(data, monkeypatch):
    distributed = pytest.importorskip("distributed")
    X, w = data
    params = dict(n_clusters=4, summary_size=16, merge_budget=100, split_every=2, random_state=1)
    with dask.config.set(scheduler="sync"):
        ref = StreamingKMeans(**params).fit(X, sample_weight=w)
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 8)
    monkeypatch.setattr(_waves, "WAVES_IN_FLIGHT", 3)
    with dask.config.set(scheduler="threads"):
        threads = StreamingKMeans(**params).fit(X, sample_weight=w)
    np.testing.assert_array_equal(threads.cluster_centers_, ref.cluster_centers_)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(_Submissions())
        km = StreamingKMeans(**params).fit(X, sample_weight=w)
        counts = client.run_on_scheduler(_submitted)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_
    # one submission per wave of 8 chunks, none over ~4 x 8 tasks
    assert len(counts) == -(-100 // 8)
    assert max(counts) <= 4 * 8 + 2


def _rows_of(block, weight_block, *, index, row_start, rows):
    """A leaf of the rows reduction: its chunk's ``(index, first row, rows)`` (the rows it
    holds, which are the rows the engine says the chunk declares)."""
    assert block.shape[0] == rows
    return [(index, row_start, block.shape[0])]


def _joined(*children, cap, level, index, entropy):
    """The combine of the rows reduction: the children's rows in order, and this node."""
    return [row for child in children for row in child] + [(level, index, cap, entropy, None)]


@pytest.mark.parametrize("wave_chunks", [10**9, 9])
def test_the_engine_computes_any_reduction_spec_in_the_same_tree(monkeypatch, wave_chunks):
    # A reduction that only lists its chunks and nodes: every chunk once, in order, with its
    # first row; each node's keywords from the spec's cap and seed rules, in waves or not.
    chunks = (3, 0, 5, 1, 7, 2, 2, 4, 6, 1, 3)
    X = da.from_array(np.zeros((sum(chunks), 2)), chunks=(chunks, -1))
    spec = _waves.Reduction(
        leaf=_rows_of,
        combine=_joined,
        token="rows",
        cap=lambda covered, n_leaves: (covered, n_leaves),
        entropy=5,
    )
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", wave_chunks)
    with dask.config.set(scheduler="sync"):
        out = _waves.reduce_in_waves(X, None, spec, split_every=3)
    starts = np.concatenate([[0], np.cumsum(chunks)[:-1]]).tolist()
    assert [row for row in out if len(row) == 3] == list(
        zip(range(len(chunks)), starts, chunks, strict=True)
    )
    nodes = sorted(row[:4] for row in out if len(row) == 5)
    # 11 chunks, fan-in 3: nodes (1, 0..3), (2, 0..1), (3, 0); each its chunks' count.
    assert nodes == [
        (1, 0, (3, 11), 5),
        (1, 1, (3, 11), 5),
        (1, 2, (3, 11), 5),
        (1, 3, (2, 11), 5),
        (2, 0, (9, 11), 5),
        (2, 1, (2, 11), 5),
        (3, 0, (11, 11), 5),
    ]


try:
    from distributed.diagnostics.plugin import SchedulerPlugin
except ImportError:  # pragma: no cover
    SchedulerPlugin = object


class _Submissions(SchedulerPlugin):
    """Tasks per graph submitted to the scheduler."""

    name = "count-submissions"

    def __init__(self):
        self.seen = []

    def update_graph(self, scheduler, *, keys=None, tasks=None, **kwargs):
        self.seen.append(len(tasks or ()))


def _submitted(dask_scheduler=None):
    return list(dask_scheduler.plugins[_Submissions.name].seen)
