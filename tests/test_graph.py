"""Graph layer: the same summary totals over chunkings and split_every values."""

import dask
import dask.array as da
import numpy as np
import pytest
from _helpers import summary_graph

from dask_streamkm import StreamingKMeans, _graph, _tasks, _waves
from dask_streamkm._graph import SummaryParams

N, D = 2000, 3

CHUNKINGS = {
    "one block": (N,),
    "uneven": (700, 13, 900, 387),
    "tiny block": (1, 1999),
    "empty block": (600, 0, 1400),
    "empty first and last": (0, 1000, 1000, 0),
    "many blocks": (100,) * 20,
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)) + rng.integers(0, 5, size=(N, 1)) * 10
    w = rng.random(N) * 2
    return X, w


def run_graph(X, w, chunks, split_every, budget=10_000, size=64, method="stream"):
    Xd = da.from_array(X, chunks=(chunks, D))
    wd = None if w is None else da.from_array(w, chunks=(chunks,))
    g = summary_graph(
        Xd,
        wd,
        size=size,
        method=method,
        mini_batch_size=256,
        split_every=split_every,
        budget=budget,
        entropy=0,
    )
    (s,) = dask.compute(g, scheduler="sync")
    return s


@pytest.mark.parametrize("chunks", list(CHUNKINGS.values()), ids=list(CHUNKINGS))
@pytest.mark.parametrize("split_every", [2, 3, 8])
@pytest.mark.parametrize("weighted", [False, True])
def test_totals_over_chunkings(data, chunks, split_every, weighted):
    X, w = data
    w = w if weighted else None
    s = run_graph(X, w, chunks, split_every)
    total = N if w is None else w.sum()
    ww = np.ones(N) if w is None else w
    assert s.n_seen == N
    np.testing.assert_allclose(s.total_weight, total, rtol=1e-12)
    np.testing.assert_allclose(s.linear_sums.sum(0), ww @ X, rtol=1e-10)
    np.testing.assert_allclose(s.square_sums.sum(), ww @ (X**2).sum(1), rtol=1e-12)
    n_leaves = sum(1 for c in chunks if c)
    assert s.n_groups <= 64 * n_leaves


@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_budget_reduces_and_conserves(data, split_every):
    X, _ = data
    s = run_graph(X, None, CHUNKINGS["many blocks"], split_every, budget=100, size=64)
    assert s.n_groups <= 100
    assert s.n_seen == N
    np.testing.assert_allclose(s.total_weight, N)
    np.testing.assert_allclose(s.linear_sums.sum(0), X.sum(0), rtol=1e-10)


def tree(nodes, *, split_every, budget, size, entropy, level=1):
    """Merge delayed summaries ``split_every`` at a time until one is left (one delayed call
    per merge, each with the cap and seed of a summary's node: :meth:`SummaryParams.reduction`
    as the waves use it)."""
    params = SummaryParams(size, "stream", 1, split_every, budget, entropy)
    covered, n_leaves = [1] * len(nodes), len(nodes)
    while len(nodes) > 1:
        groups = range(0, len(nodes), params.split_every)
        next_covered = [sum(covered[i : i + params.split_every]) for i in groups]
        nodes = [
            dask.delayed(_tasks.merge, pure=True)(
                *nodes[i : i + params.split_every],
                **params.reduction().keywords(level, i // params.split_every, c, n_leaves),
            )
            for i, c in zip(groups, next_covered, strict=True)
        ]
        covered = next_covered
        level += 1
    return nodes[0]


def test_tree_fan_in(monkeypatch):
    nodes = [dask.delayed(i) for i in range(10)]
    seen = []

    def spy(*children, **kw):
        seen.append((kw["level"], kw["index"], len(children), kw["cap"]))
        return children[0]

    monkeypatch.setattr(_tasks, "merge", spy)
    out = tree(nodes, split_every=3, budget=100, size=4, entropy=0)
    dask.compute(out, scheduler="sync")
    # 10 leaves -> 4 nodes (3, 3, 3, 1) -> 2 nodes (3, 1) -> 1 node (2); each node's cap is
    # its share of the budget (100 * leaves / 10), at least one leaf's size (4).
    assert sorted(seen) == [
        (1, 0, 3, 30),
        (1, 1, 3, 30),
        (1, 2, 3, 30),
        (1, 3, 1, 10),
        (2, 0, 3, 90),
        (2, 1, 1, 10),
        (3, 0, 2, 100),
    ]


def test_summary_params_are_one_normalized_frozen_value():
    import dataclasses

    params = SummaryParams(
        size=np.int64(16),
        method="stream",
        mini_batch_size=64.0,
        split_every=1,
        budget=200,
        entropy=[7, 12],
    )
    assert (params.size, params.split_every, params.entropy) == (16, 2, (7, 12))
    assert type(params.size) is int and type(params.mini_batch_size) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.size = 8
    same = SummaryParams(16, "stream", 64, 2, 200, (7, 12))
    assert same == params and hash(same) == hash(params) and same.token == params.token
    cosine = dataclasses.replace(params, metric="cosine")
    assert cosine.token != params.token
    # A leaf gets only the fields it uses; the metric only when it is not euclidean.
    assert params.keywords("size", "entropy") == {"size": 16, "entropy": (7, 12)}
    assert cosine.keywords("size") == {"size": 16, "metric": "cosine"}
    assert params.reduction().keywords(2, 1, 40, 160) == dict(
        cap=max(-(-200 * 40 // 160), 16), level=2, index=1, entropy=(7, 12)
    )


def test_node_cap():
    assert _graph.node_cap(50_000, 8, 160, 3125) == 3125  # share 2,500 < one leaf
    assert _graph.node_cap(50_000, 64, 160, 3125) == 20_000
    assert _graph.node_cap(50_000, 160, 160, 3125) == 50_000
    assert _graph.node_cap(10, 1, 3, 1) == 4  # rounds up


def test_merges_stay_bounded_with_many_chunks(monkeypatch):
    # 64 chunks of 100 rows, 64 groups each, budget 400: no union may grow with the number
    # of chunks (at most max(budget, split_every * size) groups), the root keeps <= budget.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6400, 3))
    unions = []
    merge = _tasks.merge

    def spy(*children, **kw):
        unions.append(sum(c.n_groups for c in children))
        return merge(*children, **kw)

    monkeypatch.setattr(_graph, "merge", spy)  # the summary's combine, looked up per fit
    s = run_graph(X, None, (100,) * 64, 4, budget=400, size=64)
    assert len(unions) == 16 + 4 + 1
    assert max(unions) <= max(400, 4 * 64)
    assert s.n_groups <= 400
    np.testing.assert_allclose(s.total_weight, 6400)
    np.testing.assert_allclose(s.linear_sums.sum(0), X.sum(0), rtol=1e-10)


@pytest.mark.parametrize("chunks", list(CHUNKINGS.values()), ids=list(CHUNKINGS))
def test_estimator_over_chunkings(data, chunks):
    X, w = data
    Xd = da.from_array(X, chunks=(chunks, D))
    km = StreamingKMeans(5, random_state=0, summary_size=64).fit(Xd, sample_weight=w)
    assert km.n_rows_seen_ == N
    np.testing.assert_allclose(km.summary_.total_weight, w.sum(), rtol=1e-12)
    labels = km.labels_.compute()
    assert labels.shape == (N,)
    # five well-separated bands at 0, 10, ..., 40 in every feature
    got = np.sort(km.cluster_centers_.mean(axis=1))
    np.testing.assert_allclose(got, np.arange(5) * 10, atol=0.5)


def test_nan_in_chunk_is_reported_with_its_index(data):
    X, _ = data
    X = X.copy()
    X[1500, 1] = np.nan
    with pytest.raises(ValueError, match=r"chunk 2 \(rows 1300 to 2000\)"):
        run_graph(X, None, (700, 600, 700), 8)


# ---------------------------------------------------------------------- seeds by position
def _counts_of_groups(summary):
    """How often each distinct group (weight and linear sums) occurs in a summary."""
    rows = np.column_stack([summary.weights, summary.linear_sums])
    return np.unique(rows, axis=0, return_counts=True)[1]


def test_leaves_with_identical_data_get_different_seeds():
    # Two chunks holding the same rows: with one seed for every leaf their summaries would be
    # the same groups twice. The merge budget keeps the union, so both leaves are in summary_.
    A = np.random.default_rng(0).normal(size=(600, 3))
    X = da.from_array(np.concatenate([A, A]), chunks=(600, 3))
    km = StreamingKMeans(2, summary_size=40, merge_budget=1000, random_state=0).fit(X)
    assert km.summary_.n_groups > 40
    assert np.any(_counts_of_groups(km.summary_) == 1), "both leaves were seeded alike"


def test_merges_with_identical_children_get_different_seeds():
    # Chunks of 50 rows with summary_size=64 come back exactly, whatever their seed, so the
    # two first-level merges get the same 100 groups (A and B) and reduce them to 64; the root
    # keeps both halves (budget 128). With one seed for every merge the halves would be equal.
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(50, 3)), rng.normal(size=(50, 3)) + 3.0
    X = da.from_array(np.concatenate([A, B, A, B]), chunks=(50, 3))
    km = StreamingKMeans(2, summary_size=64, merge_budget=128, split_every=2, random_state=0).fit(X)
    assert km.summary_.n_groups > 64
    np.testing.assert_allclose(km.summary_.total_weight, 200)
    assert np.any(_counts_of_groups(km.summary_) == 1), "both merges were seeded alike"


@pytest.mark.parametrize("was_on", [True, False])
def test_graph_builds_pause_the_collector_and_give_it_back(was_on):
    import gc

    seen = []

    @_waves.collector_paused()
    def build(fail):
        seen.append(gc.isenabled())
        if fail:
            raise RuntimeError("build failed")

    # the waves' own builders are wrapped
    assert hasattr(_waves.wave_graph, "__wrapped__") and hasattr(_waves.block_wave, "__wrapped__")
    try:
        gc.enable() if was_on else gc.disable()
        build(False)
        assert gc.isenabled() is was_on
        with pytest.raises(RuntimeError, match="build failed"):
            build(True)
        assert gc.isenabled() is was_on
    finally:
        gc.enable()
    assert seen == [False, False]


@pytest.mark.parametrize("n_chunks", [0, 1, 7, 4095, 4096, 4097, 9000])
def test_row_starts_match_the_cumulative_row_counts(n_chunks, monkeypatch):
    # A small stride too, so that chunk ranges cross several strides.
    rng = np.random.default_rng(n_chunks)
    chunks = tuple(int(c) for c in rng.integers(0, 9, n_chunks))
    expected = np.concatenate([[0], np.cumsum(chunks, dtype=np.int64)])
    for stride in (4096, 3):
        monkeypatch.setattr(_waves.RowStarts, "STRIDE", stride)
        starts = _waves.RowStarts(chunks)
        order = rng.permutation(n_chunks + 1)
        assert len(starts) == n_chunks + 1
        assert [starts[i] for i in order] == expected[order].tolist()
        with pytest.raises(IndexError):
            starts[n_chunks + 1]


def test_predict_errors_name_the_rows_of_uneven_chunks():
    X = np.random.default_rng(0).normal(size=(1000, 3))
    km = StreamingKMeans(3, random_state=0).fit(X)
    bad = X.copy()
    bad[420] = np.nan
    Xd = da.from_array(bad, chunks=((100, 300, 50, 550), 3))
    for lazy in (km.predict(Xd), km.transform(Xd)):
        with pytest.raises(ValueError, match=r"chunk 2 \(rows 400 to 450\)"):
            lazy.compute()


def _arrays_of_many_kinds(tmp_path):
    import zarr

    from dask_streamkm.io import open_array

    data = np.arange(4000 * 3, dtype=float).reshape(4000, 3)
    zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(100, 3), dtype="f8")[:] = data
    stored = open_array(str(tmp_path / "a.zarr"), chunks=100)
    inline = da.from_array(data, chunks=100)
    return {
        "zarr": stored,
        "zarr, sliced and shifted": stored[::2] * 2 + 1,
        "numpy": inline,
        "numpy, rechunked": inline.rechunk((300, 3)),
        "two arrays": stored + inline,
    }


def test_needed_tasks_are_what_dasks_cull_keeps(tmp_path):
    from dask._task_spec import convert_legacy_graph
    from dask.utils import ensure_dict

    for name, X in _arrays_of_many_kinds(tmp_path).items():
        graph = X.__dask_graph__()
        keys = {(X.name, i, 0) for i in range(1, min(4, X.numblocks[0]))}
        ours = convert_legacy_graph(_waves.needed_tasks(graph, keys))
        dasks = convert_legacy_graph(ensure_dict(graph.cull(keys)))
        assert set(ours) == set(dasks), name
        assert len(ours) < len(convert_legacy_graph(ensure_dict(graph))), name
        values = dask.get(ours, sorted(keys))
        expected = [X.blocks[key[1]].compute() for key in sorted(keys)]
        for got, want in zip(values, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_fit_over_a_zarr_store_does_not_list_every_key_of_its_graph(tmp_path, monkeypatch):
    # dask's own cull keeps a set of every key of the array's graph (126 MB at 10^6 chunks)
    # when a layer holds old-style tasks, as a zarr-backed array's does.
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 8)
    X = _arrays_of_many_kinds(tmp_path)["zarr"]
    graph = X.__dask_graph__()
    assert any(layer.has_legacy_tasks for layer in graph.layers.values())
    StreamingKMeans(3, random_state=0).fit(X)
    assert not hasattr(graph, "_all_external_keys")
    graph.cull({(X.name, 0, 0)})  # what dask's cull does
    assert len(graph._all_external_keys) == X.numblocks[0] + 1


def test_graph_keys_answer_as_a_set_of_the_graphs_keys_would(tmp_path):
    for name, X in _arrays_of_many_kinds(tmp_path).items():
        graph = X.__dask_graph__()
        every = set(graph.get_all_external_keys())
        known = _waves._GraphKeys(graph)
        n = X.numblocks[0]
        probes = [
            *sorted(every, key=str)[:50],
            (X.name, n, 0),
            (X.name, -1, 0),
            (X.name, 0),
            (X.name, 0, 0, 0),
            (X.name, np.int64(1), 0),
            (X.name, 1.0, 0),
            (X.name, 1.5, 0),
            (X.name, True, 0),
            (X.name, "1", 0),
            (X.name, float("nan"), 0),
            "not a key",
            3,
        ]
        for probe in probes:
            assert (probe in known) == (probe in every), (name, probe)
        for unhashable in ([X.name, 0, 0], (np.arange(3), 0), np.arange(3)):
            with pytest.raises(TypeError):
                unhashable in known  # noqa: B015


def test_needed_tasks_of_an_array_of_thousands_of_layers():
    X = da.ones((40, 2), chunks=10)
    for _ in range(1500):  # more layers than Python's recursion limit
        X = X + 1
    keys = {(X.name, 1, 0)}
    got = _waves.needed_tasks(X.__dask_graph__(), keys)
    assert 1500 < len(got) < 1600  # one chunk's chain, not the four chunks'
    np.testing.assert_array_equal(dask.get(got, (X.name, 1, 0)), np.full((10, 2), 1501.0))
