"""The Summary type: invariants, cost bound, merge, reduce, save/load."""

import zipfile

import numpy as np
import pytest
from _helpers import by_row, true_cost

from dask_streamkm import Summary, _runner
from dask_streamkm import summary as summary_module


def grouped(rng, n=400, d=3, n_groups=20, weighted=True):
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 5)
    labels = rng.integers(0, n_groups, size=n)
    w = rng.random(n) * 3 if weighted else None
    return X, w, labels, Summary.from_points(X, w, labels=labels, n_groups=n_groups)


def test_fields_are_float64(rng):
    X = rng.normal(size=(10, 3)).astype(np.float32)
    s = Summary.from_points(X)
    for arr in (s.weights, s.linear_sums, s.square_sums):
        assert arr.dtype == np.float64
    assert s.weights.shape == (10,) and s.linear_sums.shape == (10, 3)
    assert s.square_sums.shape == (10,)
    assert s.n_groups == 10 and s.n_features == 3 and s.n_seen == 10


def test_from_points_one_group_per_row(rng):
    X = rng.normal(size=(12, 4))
    w = rng.random(12) + 0.1
    s = Summary.from_points(X, w)
    got_x, got_w = by_row(s.centroids, s.weights)
    ref_x, ref_w = by_row(X, w)
    np.testing.assert_allclose(got_x, ref_x, rtol=1e-12)
    np.testing.assert_allclose(got_w, ref_w)
    np.testing.assert_allclose(s.group_sse, 0.0, atol=1e-10)


def test_from_points_duplicates_share_a_group_and_order_is_free(rng):
    X = rng.normal(size=(8, 3))
    w = rng.integers(0, 5, size=8).astype(float)
    w[0] = 2.0
    repeated = np.repeat(X, w.astype(int), axis=0)
    a = Summary.from_points(X, w)
    b = Summary.from_points(repeated[rng.permutation(len(repeated))])
    c = Summary.from_points(X[::-1], w[::-1])
    assert a.n_groups == int(np.sum(w > 0))
    for f in ("weights", "linear_sums", "square_sums"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        np.testing.assert_array_equal(getattr(a, f), getattr(c, f))
    np.testing.assert_allclose(a.group_sse, 0.0, atol=1e-12)


def test_from_points_drops_zero_weight_rows(rng):
    X = rng.normal(size=(10, 2))
    w = np.ones(10)
    w[[2, 5]] = 0
    s = Summary.from_points(X, w)
    assert s.n_groups == 8 and s.n_seen == 10
    np.testing.assert_allclose(by_row(s.centroids)[0], by_row(X[w > 0])[0])


def test_centroids_and_group_sse_match_direct_computation(rng):
    X, w, labels, s = grouped(rng)
    assert s.n_groups == 20
    for g in range(20):
        rows = labels == g
        mu = np.average(X[rows], axis=0, weights=w[rows])
        np.testing.assert_allclose(s.weights[g], w[rows].sum(), rtol=1e-12)
        np.testing.assert_allclose(s.centroids[g], mu, rtol=1e-9, atol=1e-12)
        sse = np.sum(w[rows] * ((X[rows] - mu) ** 2).sum(axis=1))
        np.testing.assert_allclose(s.group_sse[g], sse, rtol=1e-8)


def test_empty_labels_are_dropped(rng):
    X = rng.normal(size=(30, 2))
    labels = rng.choice([0, 3, 7], size=30)
    s = Summary.from_points(X, labels=labels, n_groups=9)
    assert s.n_groups == 3
    np.testing.assert_allclose(s.total_weight, 30)


@pytest.mark.parametrize("seed", range(20))
def test_cost_bound_upper_bounds_true_cost(seed):
    rng = np.random.default_rng(seed)
    X, w, _, s = grouped(rng, n_groups=int(rng.integers(1, 40)), weighted=bool(seed % 2))
    for k in (1, 3, 10):
        centers = rng.normal(size=(k, X.shape[1])) * 3
        bound = s.cost_bound(centers)
        assert bound >= true_cost(X, centers, w) * (1 - 1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_cost_bound_exact_for_single_row_groups(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 5))
    w = rng.random(200) + 0.1
    s = Summary.from_points(X, w)
    centers = rng.normal(size=(7, 5))
    np.testing.assert_allclose(s.cost_bound(centers), true_cost(X, centers, w), rtol=1e-10)


def test_cost_bound_exact_when_groups_share_nearest_center(rng):
    centers = np.array([[0.0, 0.0], [100.0, 0.0]])
    X = np.concatenate([rng.normal(size=(50, 2)), rng.normal(size=(50, 2)) + [100, 0]])
    labels = np.repeat([0, 1], 50)
    s = Summary.from_points(X, labels=labels, n_groups=2)
    np.testing.assert_allclose(s.cost_bound(centers), true_cost(X, centers), rtol=1e-10)


def test_cost_bound_of_empty_summary_is_zero():
    assert Summary.empty(3).cost_bound(np.zeros((2, 3))) == 0.0


def test_merge_concatenates_and_conserves(rng):
    parts = [grouped(rng, n_groups=n)[3] for n in (5, 12, 1)]
    merged = parts[0].merge(parts[1], parts[2])
    assert merged.n_groups == sum(p.n_groups for p in parts)
    assert merged.n_seen == sum(p.n_seen for p in parts)
    np.testing.assert_allclose(merged.total_weight, sum(p.total_weight for p in parts))
    np.testing.assert_allclose(merged.linear_sums.sum(0), sum(p.linear_sums.sum(0) for p in parts))


def test_merge_classmethod_form_equals_method_form(rng):
    a, b = grouped(rng)[3], grouped(rng)[3]
    m1, m2 = Summary.merge(a, b), a.merge(b)
    for f in ("weights", "linear_sums", "square_sums"):
        np.testing.assert_array_equal(getattr(m1, f), getattr(m2, f))
    assert m1.n_seen == m2.n_seen


def test_merge_with_empty_keeps_n_seen(rng):
    a = grouped(rng)[3]
    e = Summary.empty(a.n_features)
    m = e.merge(a, e)
    np.testing.assert_array_equal(m.weights, a.weights)
    assert m.n_seen == a.n_seen
    assert Summary.merge(e, e).n_groups == 0


def test_merge_and_cost_bound_refuse_other_features_naming_them(rng):
    s3 = Summary.from_points(rng.normal(size=(20, 3)))
    s2 = Summary.from_points(rng.normal(size=(20, 2)))
    # Both were numpy's broadcasting or concatenation errors.
    with pytest.raises(ValueError, match=r"cannot merge summaries of \[3, 2\] features"):
        s3.merge(s2)
    with pytest.raises(
        ValueError, match=r"centers has shape \(4, 2\); cost_bound needs .* \(n_clusters, 3\)"
    ):
        s3.cost_bound(np.zeros((4, 2)))


def test_merge_does_not_mutate(rng):
    a, b = grouped(rng)[3], grouped(rng)[3]
    wa = a.weights.copy()
    a.merge(b)
    np.testing.assert_array_equal(a.weights, wa)


@pytest.mark.parametrize("size", [1, 5, 40, 399])
def test_reduce_conserves_and_bounds_size(rng, size):
    X, w, _, _ = grouped(rng, n_groups=1)
    s = Summary.from_points(X, w)
    r = s.reduce(size, seed=0)
    assert r.n_groups <= size
    assert r.n_seen == s.n_seen
    np.testing.assert_allclose(r.total_weight, s.total_weight, rtol=1e-12)
    np.testing.assert_allclose(r.linear_sums.sum(0), s.linear_sums.sum(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r.square_sums.sum(), s.square_sums.sum(), rtol=1e-12)
    # reducing only loses information: the bound never drops below the true cost
    centers = rng.normal(size=(4, 3))
    assert r.cost_bound(centers) >= s.cost_bound(centers) * (1 - 1e-12)


def test_reduce_returns_self_when_small(rng):
    s = grouped(rng)[3]
    assert s.reduce(s.n_groups) is s


def test_scaled(rng):
    s = grouped(rng)[3]
    h = s.scaled(0.25)
    np.testing.assert_allclose(h.weights, 0.25 * s.weights)
    np.testing.assert_allclose(h.centroids, s.centroids)
    np.testing.assert_allclose(h.group_sse, 0.25 * s.group_sse, atol=1e-9)


@pytest.mark.parametrize("factor", [-0.5, float("nan"), float("inf"), -float("inf"), "2"])
def test_scaled_refuses_a_factor_that_is_not_finite_and_non_negative(rng, factor):
    # A negative or NaN factor gave negative or NaN weights without a word.
    s = grouped(rng)[3]
    with pytest.raises(ValueError, match=r"factor=.* should be a finite number >= 0"):
        s.scaled(factor)


def test_scaled_by_zero_leaves_groups_of_zero_weight(rng):
    # What a decay whose factor underflows passes: the groups weigh 0 and drop_empty
    # removes them.
    s = grouped(rng)[3]
    z = s.scaled(0.0)
    assert z.n_groups == s.n_groups and z.total_weight == 0.0
    assert z.drop_empty().n_groups == 0 and z.n_seen == s.n_seen


def test_solve_returns_centers_and_bound(rng):
    X = np.concatenate([rng.normal(size=(100, 2)) + c for c in ([0, 0], [20, 0], [0, 20])])
    s = Summary.from_points(X)
    centers, bound, n_iter = s.solve(3, n_init=3, seed=0)
    assert centers.shape == (3, 2) and n_iter >= 1
    np.testing.assert_allclose(bound, s.cost_bound(centers), rtol=1e-9)
    np.testing.assert_allclose(bound, true_cost(X, centers), rtol=1e-9)


def test_solve_of_a_summary_without_rows_names_the_fix(rng):
    # numpy's "zero-size array to reduction operation minimum" came out of the seeding.
    with pytest.raises(ValueError, match=r"holds no rows \(n_groups=0.*Summary.from_points"):
        Summary.empty(3).solve(2)
    # Every weight zero: a float division by zero came out.
    zero = Summary.from_points(rng.normal(size=(10, 3))).scaled(0.0)
    with pytest.raises(ValueError, match=r"zero for every group.*positive weight"):
        zero.solve(2)
    # Solved once merged with a summary that holds rows.
    merged = Summary.empty(3).merge(Summary.from_points(rng.normal(size=(10, 3))))
    assert merged.solve(2, n_init=1, seed=0)[0].shape == (2, 3)


@pytest.mark.parametrize("n_clusters", [0, 4])
def test_solve_for_clusters_outside_the_groups_names_the_fix(n_clusters):
    s = Summary.from_points(np.eye(3))
    with pytest.raises(ValueError, match=rf"n_clusters={n_clusters} should be >= 1 and <= .*=3"):
        s.solve(n_clusters)


# ---------------------------------------------------------------------- files
@pytest.mark.parametrize("seed", range(20))
def test_solve_max_iter_bounds_n_iter_and_more_iterations_above_the_cap_never_cost_more(seed):
    # max_iter bounds every Lloyd run and n_iter counts those of the final run on all groups.
    # From RESTART_MAX_ITER on, the restarts and the swap search no longer depend on it and
    # the final Lloyd keeps its best centers: a larger max_iter never costs more there.
    X = np.random.default_rng(0).normal(size=(100, 10))
    s = Summary.from_points(X)
    for max_iter in range(1, 21):
        centers, bound, n_iter = s.solve(8, n_init=1, max_iter=max_iter, seed=seed)
        assert 1 <= n_iter <= max_iter
        assert bound == pytest.approx(((X[:, None] - centers[None]) ** 2).sum(2).min(1).sum())
    costs = [
        s.solve(8, n_init=1, max_iter=max_iter, seed=seed)[1]
        for max_iter in (
            _runner.RESTART_MAX_ITER,
            _runner.RESTART_MAX_ITER + 1,
            2 * _runner.RESTART_MAX_ITER,
        )
    ]
    assert np.all(np.diff(costs) <= 0), costs


def test_save_load_round_trip(rng, tmp_path):
    s = grouped(rng)[3]
    path = s.save(tmp_path / "s.npz")
    t = Summary.load(path)
    for f in ("weights", "linear_sums", "square_sums"):
        np.testing.assert_array_equal(getattr(t, f), getattr(s, f))
    assert t.n_seen == s.n_seen
    # no pickle inside: every member loads with allow_pickle=False
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) >= {"weights", "linear_sums", "square_sums", "n_seen"}
        for name in data.files:
            assert data[name].dtype != object


def test_save_load_empty(tmp_path):
    s = Summary.empty(4)
    t = Summary.load(s.save(tmp_path / "e.npz"))
    assert t.n_groups == 0 and t.n_features == 4


def test_load_newer_format_version(rng, tmp_path):
    s = grouped(rng)[3]
    path = tmp_path / "new.npz"
    np.savez(
        path,
        format_version=np.int64(summary_module.FORMAT_VERSION + 1),
        weights=s.weights,
        linear_sums=s.linear_sums,
        square_sums=s.square_sums,
        n_seen=np.int64(1),
    )
    newer = summary_module.FORMAT_VERSION + 1
    with pytest.raises(ValueError, match=rf"format version {newer}.*Upgrade dask_streamkm"):
        Summary.load(path)


def test_load_truncated_file(rng, tmp_path):
    path = grouped(rng)[3].save(tmp_path / "s.npz")
    data = open(path, "rb").read()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a .*summary file"):
        Summary.load(bad)


def test_load_non_summary_file(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(ValueError, match="not a dask_streamkm summary file"):
        Summary.load(other)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a .*summary file"):
        Summary.load(text)


def test_load_model_file_says_where_its_summary_is(rng, tmp_path):
    from dask_streamkm import StreamingKMeans

    StreamingKMeans(2, random_state=0).fit(rng.normal(size=(50, 2))).save(tmp_path / "m.npz")
    # It said "... summary file: 'format_version'" (a KeyError's text).
    with pytest.raises(ValueError, match=r"has no member .*StreamingKMeans.load\(path\).summary_"):
        Summary.load(tmp_path / "m.npz")


def test_load_pickled_member_rejected(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(
        path,
        format_version=np.int64(1),
        weights=np.array([object()], dtype=object),
        linear_sums=np.zeros((1, 1)),
        square_sums=np.zeros(1),
        n_seen=np.int64(1),
    )
    with pytest.raises(ValueError, match="summary file"):
        Summary.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="missing.npz.*No such file"):
        Summary.load(tmp_path / "missing.npz")


def test_saved_file_is_plain_zip(rng, tmp_path):
    path = grouped(rng)[3].save(tmp_path / "s.npz")
    with zipfile.ZipFile(path) as z:
        assert all(name.endswith(".npy") for name in z.namelist())


def test_distinct_rows_match_numpy_unique():
    from dask_streamkm.summary import _distinct_rows

    rng = np.random.default_rng(0)
    for t in range(300):
        n, d = int(rng.integers(2, 80)), int(rng.integers(1, 5))
        X = rng.integers(-2, 3, size=(n, d)) * rng.choice([1.0, 0.5, -0.0])
        if t % 2:
            X = rng.normal(size=(n, d))
            X[rng.integers(0, n, size=n // 3)] = X[0]
        _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
        got_first, got_inverse = _distinct_rows(X)
        np.testing.assert_array_equal(got_first, first)
        np.testing.assert_array_equal(got_inverse, inverse.reshape(-1))


def test_from_points_names_bad_input():
    # The public constructor checks what the fit's tasks check before they call it: a 1-D X
    # was an IndexError, NaN rows and negative weights gave a summary of NaN or no groups.
    X = np.arange(12.0).reshape(6, 2)
    with pytest.raises(ValueError, match="2-D rows"):
        Summary.from_points(np.arange(6.0))
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        Summary.from_points(bad)
    with pytest.raises(ValueError, match="negative, NaN or infinite"):
        Summary.from_points(X, sample_weight=np.array([1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"one weight per row, shape \(6,\)"):
        Summary.from_points(X, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, n_groups\)"):
        Summary.from_points(X, labels=np.array([0, 1, 2, 0, 1, 3]), n_groups=3)
    with pytest.raises(ValueError, match=r"one label per row"):
        Summary.from_points(X, labels=np.zeros(4, dtype=np.int64), n_groups=1)
    # Valid input is unchanged, checked or not.
    a = Summary.from_points(X, labels=np.array([0, 1, 2, 0, 1, 2]), n_groups=3)
    b = Summary.from_points(X, labels=np.array([0, 1, 2, 0, 1, 2]), n_groups=3, check=False)
    np.testing.assert_array_equal(a.linear_sums, b.linear_sums)


def test_merge_reduce_and_cost_bound_refuse_bad_arguments_by_name():
    rng = np.random.default_rng(0)
    summary = Summary.from_points(rng.normal(size=(200, 3)))
    with pytest.raises(TypeError, match="Summary.merge takes Summary objects, got ndarray"):
        summary.merge(rng.normal(size=(10, 3)))  # was an AttributeError on n_features
    for size in (0, -3, 2.5, True):  # 0 gave one group without a word
        with pytest.raises(ValueError, match=rf"size={size!r} should be an integer >= 1"):
            summary.reduce(size)
    assert summary.reduce(np.int64(20), seed=0).n_groups <= 20
    centers = np.zeros((2, 3))
    centers[1, 0] = np.nan  # was a NaN bound
    with pytest.raises(ValueError, match="centers hold NaN or infinity"):
        summary.cost_bound(centers)
