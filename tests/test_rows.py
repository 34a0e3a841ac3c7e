"""Lloyd steps on rows held in memory after a fit whose summary is coarse for k (_rows)."""

from __future__ import annotations

import tracemalloc

import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans, _rows
from dask_streamkm.datasets import make_mixture


def _cost(X, centers):
    d = ((X[:, None, :].astype(np.float64) - centers[None, :, :]) ** 2).sum(axis=2)
    return float(d.min(axis=1).sum())


@pytest.fixture(scope="module")
def rows():
    # 30,000 rows at k=60: 500 rows a cluster, a summary of about 50 groups per cluster.
    return make_mixture(30_000, 16, 200, chunks=10_000, random_state=0).compute()


@pytest.mark.parametrize(
    "n, d, k, groups, max_iter, expected",
    [
        (100_000, 50, 500, 10_000, 300, 10),  # GloVe at k=500: 20 groups a cluster
        (100_000, 50, 1000, 10_000, 300, 10),
        (1_000_000, 32, 100, 20_000, 300, 0),  # 200 groups a cluster: fine enough
        (70_000, 784, 10, 1_000, 300, 0),  # MNIST at k=10: the most a leaf keeps
        (70_000, 784, 10, 999, 300, 10),
        (5_000, 8, 10, 5_000, 300, 0),  # every row kept
        (100_000, 50, 500, 500, 300, 0),  # no more groups than clusters
        (100_000, 50, 500, 10_000, 3, 3),  # max_iter bounds the steps
        (10_000_000, 100, 1000, 50_000, 300, 0),  # over the work bound
        (2_000_000, 50, 500, 40_000, 300, 1),
    ],
)
def test_polish_steps(n, d, k, groups, max_iter, expected):
    assert _rows.polish_steps(n, d, k, groups, max_iter) == expected


def test_rows_in_memory_are_polished_and_lazy_rows_are_not(rows):
    X = rows
    lazy = StreamingKMeans(60, random_state=0).fit(da.from_array(X, chunks=(100_000, -1)))
    here = StreamingKMeans(60, random_state=0).fit(X)
    assert here.summary_.n_groups < 100 * 60
    assert _rows.polish_steps(*X.shape, 60, here.summary_.n_groups, 300) > 0
    # The same summary and solve; the in-memory fit goes on with steps on the rows.
    assert lazy.summary_.n_groups == here.summary_.n_groups
    lazy_cost, here_cost = _cost(X, lazy.cluster_centers_), _cost(X, here.cluster_centers_)
    assert here_cost < lazy_cost * 0.999, (here_cost, lazy_cost)
    # Its inertia_ is the rows' cost as score takes it; the lazy fit's is the summary bound.
    np.testing.assert_allclose(here.inertia_, -here.score(X), rtol=1e-9)
    assert lazy.inertia_ >= -lazy.score(X)
    np.testing.assert_array_equal(here.labels_, here.predict(X))
    assert here.labels_.dtype == np.int32 and here.cluster_centers_.dtype == np.float32
    # The in-memory fit is the lazy one's solve followed by the steps.
    steps = _rows.polish_steps(*X.shape, 60, here.summary_.n_groups, 300)
    start = np.asarray(lazy.cluster_centers_, dtype=np.float64)
    again = _rows.rows_lloyd([X], start, n_steps=steps, tol=1e-4)
    np.testing.assert_array_equal(here.cluster_centers_, again[0].astype(np.float32))


@pytest.mark.parametrize("weighted", [False, True])
def test_a_refined_in_memory_fit_is_polished_from_the_refined_centers(rows, weighted):
    X = rows
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=X.shape[0]) if weighted else None
    lazy_w = None if w is None else da.from_array(w, chunks=100_000)
    lazy = StreamingKMeans(60, random_state=0, refine_passes=1).fit(
        da.from_array(X, chunks=(100_000, -1)), sample_weight=lazy_w
    )
    here = StreamingKMeans(60, random_state=0, refine_passes=1).fit(X, sample_weight=w)
    # The lazy fit's refined centers, then the steps on the rows (as without refine_passes).
    steps = _rows.polish_steps(*X.shape, 60, here.summary_.n_groups, 300)
    assert steps > 0
    start = np.asarray(lazy.cluster_centers_, dtype=np.float64)
    again = _rows.rows_lloyd([X], start, w, n_steps=steps, tol=1e-4)
    np.testing.assert_array_equal(here.cluster_centers_, again[0].astype(np.float32))
    assert not np.array_equal(here.cluster_centers_, lazy.cluster_centers_)
    ones = np.ones(X.shape[0]) if w is None else w
    here_cost = -here.score(X, sample_weight=w)
    assert here_cost < -lazy.score(X, sample_weight=w)
    # inertia_, labels_ and cluster_sizes_ are those of the final centers' assignment (the
    # lazy fit's are those of the centers its pass started from).
    np.testing.assert_allclose(here.inertia_, here_cost, rtol=1e-9)
    labels = here.predict(X)
    np.testing.assert_array_equal(here.labels_, labels)
    np.testing.assert_allclose(
        here.cluster_sizes_, np.bincount(labels, weights=ones, minlength=60), rtol=1e-12
    )
    assert lazy.inertia_ >= -lazy.score(X, sample_weight=w) * (1 - 1e-12)


def test_polished_fit_is_the_same_on_one_thread_and_many(rows):
    chunks = [rows[i : i + 10_000] for i in range(0, rows.shape[0], 10_000)]
    start = rows[:: rows.shape[0] // 60][:60].astype(np.float64)
    many = _rows.rows_lloyd(chunks, start, n_steps=6, tol=1e-4, parallel=True)
    one = _rows.rows_lloyd(chunks, start, n_steps=6, tol=1e-4, parallel=False)
    for a, b in zip(many, one, strict=True):
        np.testing.assert_array_equal(a, b)
    # Chunked differently (other blocks, whose float32 sums round otherwise), the same rows
    # reach the same cost; a fit's chunks are the estimator's, so it never meets this.
    whole = _rows.rows_lloyd([rows], start, n_steps=6, tol=1e-4)
    np.testing.assert_allclose(whole[2], many[2], rtol=1e-4)


def test_steps_lower_the_cost_and_keep_the_lowest(rows):
    chunks = [rows]
    start = rows[:60].astype(np.float64)
    costs = [_rows.rows_lloyd(chunks, start, n_steps=s, tol=0.0)[2] for s in (0, 1, 3, 8)]
    assert costs == sorted(costs, reverse=True) and costs[-1] < costs[0]
    centers, labels, cost = _rows.rows_lloyd(chunks, start, n_steps=8, tol=0.0)
    np.testing.assert_allclose(cost, _cost(rows, centers), rtol=1e-5)


def test_weights_count_as_repeated_rows(rows):
    X = rows[:6_000]
    w = np.random.default_rng(1).integers(1, 4, size=X.shape[0]).astype(np.float64)
    start = X[:30].astype(np.float64)
    weighted = _rows.rows_lloyd([X], start, w, n_steps=5, tol=0.0)
    repeated = _rows.rows_lloyd([np.repeat(X, w.astype(int), axis=0)], start, n_steps=5, tol=0.0)
    np.testing.assert_allclose(weighted[0], repeated[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weighted[2], repeated[2], rtol=1e-5)
    # Zero weights: the row is labelled but moves nothing.
    w0 = w.copy()
    w0[::2] = 0.0
    zero = _rows.rows_lloyd([X], start, w0, n_steps=5, tol=0.0)
    kept = _rows.rows_lloyd([X[1::2]], start, w[1::2], n_steps=5, tol=0.0)
    np.testing.assert_allclose(zero[0], kept[0], rtol=1e-6, atol=1e-6)


def test_a_weighted_in_memory_fit_is_polished_with_its_weights(rows):
    X = rows
    w = np.random.default_rng(2).uniform(0.5, 2.0, size=X.shape[0])
    km = StreamingKMeans(60, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(km.inertia_, -km.score(X, sample_weight=w), rtol=1e-9)
    np.testing.assert_array_equal(km.labels_, km.predict(X))


def test_the_steps_allocate_blocks_not_the_data():
    X = make_mixture(200_000, 16, 100, chunks=50_000, random_state=0).compute()
    start = X[:100].astype(np.float64)
    chunks = [X[i : i + 50_000] for i in range(0, X.shape[0], 50_000)]
    _rows.rows_lloyd(chunks, start, n_steps=1, tol=0.0, parallel=False)  # its buffers exist
    tracemalloc.start()
    try:
        _rows.rows_lloyd(chunks, start, n_steps=3, tol=0.0, parallel=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The labels and the two bounds of every row (8 bytes each a row) and a block's
    # temporaries; the rows themselves are 12.8 MB, a float64 copy of them 25.6 MB.
    assert peak < 3 * 8 * X.shape[0] + 8 * _rows.BLOCK_VALUES, peak


def _plain_lloyd(X, centers, n_steps):
    """Lloyd's steps with every row compared with every center at every step (float64)."""
    X = X.astype(np.float64)
    for _ in range(n_steps):
        labels = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        moved = centers.copy()
        for j in range(centers.shape[0]):
            if np.any(labels == j):
                moved[j] = X[labels == j].mean(axis=0)
        centers = moved
    labels = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    return centers, labels


@pytest.mark.parametrize(
    "d, k, bounded",
    [
        (2, 20, True),  # few features: the bounds keep most rows from a comparison
        (64, 30, False),  # uniform rows in 64 dimensions: most blocks compared whole
    ],
)
def test_bounded_steps_are_lloyds_steps(monkeypatch, d, k, bounded):
    rng = np.random.default_rng(5)
    if d == 2:
        X = make_mixture(12_000, d, 40, chunks=12_000, random_state=1).compute()
    else:
        X = rng.uniform(size=(6_000, d))
    X = X.astype(np.float64)
    # From centers near a solution, as a solve gives them: the centers move little.
    start = _plain_lloyd(X, X[rng.choice(X.shape[0], k, replace=False)], 5)[0]
    compared = []
    relabel = _rows._block_relabel

    def counted(block, *args):
        compared.append((relabel(block, *args), block.shape[0]))
        return compared[-1][0]

    monkeypatch.setattr(_rows, "_block_relabel", counted)
    chunks = [X[: X.shape[0] // 2], X[X.shape[0] // 2 :]]
    centers, labels, cost = _rows.rows_lloyd(chunks, start, n_steps=8, tol=0.0)
    want_centers, want_labels = _plain_lloyd(X, start, 8)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(centers, want_centers, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cost, _cost(X, centers), rtol=1e-9)
    again, total = sum(c for c, _ in compared), sum(n for _, n in compared)
    assert len(compared) == 7 * len(chunks)  # the steps between the first and last
    if bounded:
        assert again < 0.5 * total, (again, total)
    else:
        assert again > 0.5 * total, (again, total)


def test_cosine_and_repeated_centers_are_left_as_solved(rows):
    X = rows
    here = StreamingKMeans(60, metric="cosine", random_state=0).fit(X)
    lazy = StreamingKMeans(60, metric="cosine", random_state=0).fit(
        da.from_array(X, chunks=(100_000, -1))
    )
    # The same summary and solve, and no Euclidean steps on the unit rows.
    np.testing.assert_array_equal(here.cluster_centers_, lazy.cluster_centers_)
    assert here.inertia_ == lazy.inertia_
    assert _rows.polish_steps(30_000, 16, 60, 60, 300) == 0


def test_a_summary_size_given_is_the_callers_trade_and_not_polished(rows):
    X = rows
    km = StreamingKMeans(60, summary_size=4 * 60, n_init=1, random_state=0).fit(X)
    # One chunk, as the estimator chunks the in-memory array (100,000 rows a chunk).
    lazy = StreamingKMeans(60, summary_size=4 * 60, n_init=1, random_state=0).fit(
        da.from_array(X, chunks=(100_000, -1))
    )
    np.testing.assert_array_equal(km.cluster_centers_, lazy.cluster_centers_)
    # No steps on the rows, but the assignment that labels them gives their exact cost.
    np.testing.assert_allclose(km.inertia_, -km.score(X), rtol=1e-9)
    assert lazy.inertia_ > km.inertia_ * 1.001  # the lazy fit's: the summary's bound


@pytest.mark.parametrize("weighted", [False, True])
def test_a_fine_summary_is_not_polished_and_its_inertia_is_the_rows_cost(weighted):
    # 40,000 rows at k=4: far more than 100 groups a cluster, so no steps on the rows.
    X = make_mixture(40_000, 8, 30, chunks=40_000, random_state=1).compute()
    w = np.random.default_rng(3).uniform(0.5, 2.0, size=X.shape[0]) if weighted else None
    here = StreamingKMeans(4, random_state=0).fit(X, sample_weight=w)
    lazy = StreamingKMeans(4, random_state=0).fit(
        da.from_array(X, chunks=(100_000, -1)),
        sample_weight=None if w is None else da.from_array(w, chunks=100_000),
    )
    assert _rows.polish_steps(*X.shape, 4, here.summary_.n_groups, 300) == 0
    np.testing.assert_array_equal(here.cluster_centers_, lazy.cluster_centers_)
    exact = -here.score(X, sample_weight=w)
    np.testing.assert_allclose(here.inertia_, exact, rtol=1e-9)
    assert lazy.inertia_ > exact * 1.001, (lazy.inertia_, exact)
    np.testing.assert_array_equal(here.labels_, here.predict(X))
    assert here.labels_.dtype == np.int32
