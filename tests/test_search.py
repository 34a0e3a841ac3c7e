"""The final solve's polish on the groups' spread (dask_streamkm._search)."""

import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm import _search as S
from dask_streamkm.estimator import solve_summary
from dask_streamkm.summary import Summary


def _cost(X, centers):
    d = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return float(d.min(1).sum())


def _grouped(X, rows_per_group, rng):
    """A summary of X whose groups are runs of nearby rows (sorted along a random direction
    inside coarse cells), as a leaf's groups are: compact, some straddling any border."""
    order = np.lexsort((X @ rng.normal(size=X.shape[1]), np.round(X[:, 0] * 2)))
    labels = np.empty(X.shape[0], dtype=np.int64)
    labels[order] = np.arange(X.shape[0]) // rows_per_group
    return Summary.from_points(X, labels=labels, n_groups=int(labels.max()) + 1)


@pytest.fixture
def blob():
    """One round cloud of 4,000 rows in 2-d: k-means on it has no separated groups, so
    borders cut through many groups."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(4000, 2))


def test_spread_lloyd_is_lloyd_on_points_without_spread():
    rng = np.random.default_rng(1)
    P = rng.normal(size=(300, 3))
    w = rng.uniform(0.5, 2.0, size=300)
    start = P[:4].copy()
    got = S.spread_lloyd(P, w, np.zeros(300), start, n_iter=1)
    labels = ((P[:, None, :] - start[None]) ** 2).sum(-1).argmin(1)
    want = np.stack([np.average(P[labels == j], axis=0, weights=w[labels == j]) for j in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_spread_lloyd_keeps_the_first_moment(blob):
    summary = _grouped(blob, 40, np.random.default_rng(2))
    P, w = summary.centroids, summary.weights
    spread = S.group_spread(w, summary.group_sse, 2)
    start = P[:: summary.n_groups // 6][:6]
    centers = S.spread_lloyd(P, w, spread, start, n_iter=1)
    i1, i2, _, p, _, _, _, _ = S._border_split(P, w, spread, start)
    mass = np.bincount(i1, w * (1 - p), 6) + np.bincount(i2, w * p, 6)
    np.testing.assert_allclose(mass @ centers, w @ P, rtol=1e-9)
    assert (p > 0.05).sum() > 10  # groups do straddle borders here


def test_spread_cost_exact_for_points_and_close_for_groups(blob):
    rng = np.random.default_rng(3)
    centers = blob[rng.choice(4000, 8, replace=False)]
    points = S.spread_cost(blob, np.ones(4000), np.zeros(4000), np.zeros(4000), centers)
    assert points == pytest.approx(_cost(blob, centers), rel=1e-9)
    summary = _grouped(blob, 40, rng)
    spread = S.group_spread(summary.weights, summary.group_sse, 2)
    args = (summary.centroids, summary.weights, spread, summary.group_sse, centers)
    model = S.spread_cost(*args)
    bound = summary.cost_bound(centers)
    true = _cost(blob, centers)
    assert abs(model - true) < abs(bound - true)  # closer to the rows' cost than the bound


def test_polish_lowers_the_cost_of_a_converged_solve_on_groups(blob):
    summary = _grouped(blob, 40, np.random.default_rng(4))
    before = summary.solve(6, n_init=3, seed=0)[0]
    after = S.polish_summary(summary, before)
    assert after is not before
    assert _cost(blob, after) < _cost(blob, before) * (1 - 1e-4)


def test_polish_leaves_separated_groups_alone():
    rng = np.random.default_rng(5)
    means = rng.normal(scale=100.0, size=(5, 3))
    X = np.concatenate([m + rng.normal(size=(400, 3)) for m in means])
    summary = _grouped(X, 20, rng)
    centers = summary.solve(5, n_init=3, seed=0)[0]
    assert S.polish_summary(summary, centers) is centers


def test_solve_summary_polishes_and_is_reproducible(blob):
    summary = _grouped(blob, 40, np.random.default_rng(6))
    a = solve_summary(summary, 6, n_init=3, max_iter=300, tol=1e-4, seed=7)
    b = solve_summary(summary, 6, n_init=3, max_iter=300, tol=1e-4, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    plain = summary.solve(6, n_init=3, max_iter=300, tol=1e-4, seed=7)[0]
    assert _cost(blob, a[0]) < _cost(blob, plain)
    assert a[1] == pytest.approx(summary.cost_bound(a[0]), rel=1e-12)
    assert a[1] >= _cost(blob, a[0]) * (1 - 1e-12)  # still a bound


def test_truncated_solve_is_not_polished(blob):
    summary = _grouped(blob, 40, np.random.default_rng(8))
    a = solve_summary(summary, 6, n_init=1, max_iter=1, tol=1e-4, seed=7)
    plain = summary.solve(6, n_init=1, max_iter=1, tol=1e-4, seed=7)
    np.testing.assert_array_equal(a[0], plain[0])


def test_fit_bound_stays_a_bound(blob):
    model = StreamingKMeans(n_clusters=6, random_state=0, summary_size=100).fit(blob)
    assert model.inertia_ >= _cost(blob, model.cluster_centers_) * (1 - 1e-9)


def _two_nearest_reference(P, centers):
    """Ten-line numpy reference: the two nearest centers by float64 differences."""
    d = ((P[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")[:, :2]
    rows = np.arange(P.shape[0])
    return order[:, 0], d[rows, order[:, 0]], order[:, 1], d[rows, order[:, 1]]


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_two_nearest_matches_the_reference(offset):
    """The two nearest centers and their squared distances, against the differences; rows on
    a border (the same distance to two centers) get the same pair."""
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(40, 8)) * 3.0 + offset
    P = centers[rng.integers(0, 40, size=5000)] + rng.normal(size=(5000, 8))
    P[:50] = (centers[0] + centers[1]) / 2  # on a border: two nearest at the same distance
    i1, d1, i2, d2 = S._two_nearest(P, centers)
    r1, e1, r2, e2 = _two_nearest_reference(P, centers)
    np.testing.assert_allclose(d1, e1, rtol=1e-9, atol=1e-12 * max(offset, 1.0) ** 2)
    np.testing.assert_allclose(d2, e2, rtol=1e-9, atol=1e-12 * max(offset, 1.0) ** 2)
    assert np.array_equal(np.sort([i1, i2], 0), np.sort([r1, r2], 0))
    assert np.array_equal(i1[50:], r1[50:])


def test_two_nearest_blocks_side_by_side_match_in_turn():
    """The row blocks of the polish's distances run side by side from the main thread and in
    turn from any other: the same numbers bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    P = rng.normal(size=(3 * S.BLOCK_ROWS + 17, 5))
    centers = rng.normal(size=(9, 5))
    main = S._two_nearest(P, centers)
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(S._two_nearest, P, centers).result()
    for a, b in zip(main, other, strict=True):
        np.testing.assert_array_equal(a, b)
