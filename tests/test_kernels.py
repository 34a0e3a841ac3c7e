"""Kernels against ten-line numpy references, and the weight properties of the final solve."""

import os
import warnings

import numpy as np
import pytest
from _helpers import nearest as ref_nearest
from _helpers import sq_distances as ref_sq_distances
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from dask_streamkm import Summary, _array, _distances, _lloyd, _refine_kernels, _runner, _seeding
from dask_streamkm._summarize import summarize


# ---------------------------------------------------------------------- numpy references
def ref_centers_from_labels(X, labels, k, w):
    sums = np.zeros((k, X.shape[1]))
    mass = np.zeros(k)
    for i, lab in enumerate(labels):
        sums[lab] += w[i] * X[i]
        mass[lab] += w[i]
    return sums, mass


def ref_lloyd_step(X, C, w):
    labels, _ = ref_nearest(X, C)
    sums, mass = ref_centers_from_labels(X, labels, len(C), w)
    new = C.copy()
    nz = mass > 0
    new[nz] = sums[nz] / mass[nz, None]
    return new


def _data(rng, n=500, d=5, m=17, dtype=np.float64):
    X = rng.normal(size=(n, d)).astype(dtype)
    C = rng.normal(size=(m, d)).astype(dtype)
    return X, C


# ---------------------------------------------------------------------- kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sq_distances_matches_reference(rng, dtype):
    X, C = _data(rng, dtype=dtype)
    got = _distances.sq_distances(X, C)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, ref_sq_distances(X, C), rtol=rtol, atol=rtol)
    assert np.all(got >= 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 7, 300, 20_000])  # 20_000 rows spans several row blocks
def test_nearest_matches_reference(rng, dtype, n):
    X, C = _data(rng, n=n, m=40, dtype=dtype)
    labels, dist = _distances.nearest(X, C)
    ref_labels, ref_dist = ref_nearest(X, C.astype(np.float64))
    assert labels.dtype == np.int64 and dist.dtype == np.float64
    assert labels.shape == (n,) and dist.shape == (n,)
    if dtype == np.float64:
        np.testing.assert_array_equal(labels, ref_labels)
    else:  # ties at float32 precision may differ: the chosen center must be as close
        d_chosen = ref_sq_distances(X, C)[np.arange(n), labels]
        np.testing.assert_allclose(d_chosen, ref_dist, rtol=1e-4, atol=1e-4)
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(dist, ref_dist, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("m", [5, 60, 200])  # fewer centers than features: not augmented
def test_nearest_with_more_features_than_centers_matches_reference(rng, m):
    X = rng.normal(size=(3_000, 100)) + 50.0
    C = X[rng.choice(3_000, m, replace=False)] + rng.normal(size=(m, 100)) * 0.1
    labels, dist = _distances.nearest(X, C)
    ref_labels, ref_dist = ref_nearest(X, C)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, d, m", [(0, 4, 9), (1, 4, 9), (700, 3, 50), (5_000, 31, 32)])
def test_two_nearest_are_the_generic_blocks_numbers(rng, dtype, n, d, m):
    # Two nearest of host rows to more centers than features come from nearest_two; its
    # numbers are the generic path's (the first two of three nearest), bit for bit.
    X = (rng.normal(size=(n, d)) * 30.0 + 1e3).astype(dtype)
    C = rng.normal(size=(m, d)) * 30.0 + 1e3
    (a1, a2), (e1, e2) = _distances.nearest_top(X, C, 2)
    (b1, b2, _), (f1, f2, _) = _distances.nearest_top(X, C, 3)
    for got, want in ((a1, b1), (a2, b2), (e1, f1), (e2, f2)):
        np.testing.assert_array_equal(got, want)
    assert a1.dtype == np.int64 and e1.dtype == np.float64 and a1.shape == (n,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 50), (2 * _array.CLIP_BLOCK + 17,), (40, 30, 90)])
def test_clip_negative_is_numpys_maximum_bit_for_bit(rng, dtype, shape):
    special = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-45, -1e-45, -1e-40])
    x = rng.normal(size=shape).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.choice(flat.shape[0], size=min(flat.shape[0], 9), replace=False)] = special[
        : min(flat.shape[0], 9)
    ].astype(dtype)
    want = np.maximum(x, 0.0)
    got = x.copy()
    assert _array.clip_negative(got) is got
    bits = np.uint32 if dtype == np.float32 else np.uint64
    assert np.array_equal(got.view(bits), want.view(bits))  # NaN and the sign of zero too
    # A view that is not C-ordered is clipped in place as well.
    y = x.copy()
    view = y[..., ::2] if y.ndim > 1 else y[::2]
    _array.clip_negative(view)
    expect = x.copy()
    np.maximum(
        expect[..., ::2] if x.ndim > 1 else expect[::2],
        0.0,
        out=expect[..., ::2] if x.ndim > 1 else expect[::2],
    )
    assert np.array_equal(y.view(bits), expect.view(bits))


def test_shifted_centers_are_kept_for_equal_centers_only(rng):
    C = rng.normal(size=(50, 8)) + 1e4
    first = _distances._shifted_centers(C, np.float32)
    again = _distances._shifted_centers(C.copy(), np.float32)
    assert again[0] is first[0] and again[1] is first[1]  # kept: equal values
    assert not again[1].flags.writeable  # no caller can change what is kept
    fresh = _distances._shift_centers(C, np.float32)
    for kept, made in zip(first, fresh, strict=True):
        np.testing.assert_array_equal(kept, made)
    moved = C.copy()
    moved[3, 2] += 1e-3
    other = _distances._shifted_centers(moved, np.float32)
    assert other[1] is not first[1]
    np.testing.assert_array_equal(other[1], _distances._shift_centers(moved, np.float32)[1])
    # Another dtype is another result.
    wide = _distances._shifted_centers(moved, np.float64)
    assert wide[1].dtype == np.float64


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("d", [3, 40, 3_000])  # 3,000 features: a block of 256 rows
def test_group_sums_match_the_float64_segment_sums(rng, weighted, d):
    X = (rng.normal(size=(5_000, d)) * 1e3 + 1e5).astype(np.float32)
    group = rng.integers(0, 700, size=5_000)
    w = rng.random(5_000) if weighted else None
    rows = X.astype(np.float64) * (1.0 if w is None else w[:, None])
    ref = np.zeros((700, d))
    np.add.at(ref, group, rows)
    got = _refine_kernels._group_sums(X, w, group, 700)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-6)


def test_group_sums_at_once_and_by_blocks_are_the_same_sums(rng, monkeypatch):
    X = (rng.normal(size=(3_000, 20)) * 1e3 + 1e5).astype(np.float32)
    group = rng.integers(0, 400, size=3_000)
    w = rng.random(3_000)
    at_once = _refine_kernels._group_sums(X, w, group, 400)
    monkeypatch.setattr(_refine_kernels, "GROUP_SUM_WHOLE_ELEMENTS", 0)
    monkeypatch.setattr(_refine_kernels, "GROUP_SUM_ELEMENTS", 256 * 20)  # blocks of 256 rows
    by_blocks = _refine_kernels._group_sums(X, w, group, 400)
    # The same rows in the same order; a group cut by a block's end adds two partial sums.
    np.testing.assert_allclose(by_blocks, at_once, rtol=1e-15, atol=0)


@pytest.mark.parametrize("offset", [0, 2**62])  # 2**62: the keys with their rows overflow
@pytest.mark.parametrize("n", [0, 1, 2, 10_000])
def test_sorted_groups_are_numpys_unique_and_stable_order(rng, n, offset):
    keys = rng.integers(0, 50_000, size=n) * 64 + rng.integers(0, 3, size=n) + offset
    order, distinct, group, level = _refine_kernels._sorted_groups(keys)
    ref_distinct, ref_group = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(distinct, ref_distinct)
    np.testing.assert_array_equal(group, ref_group.reshape(-1))
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    assert level == 0


def test_sorted_groups_within_a_cap_take_the_finest_level_that_fits(rng):
    k = 6
    keys = _refine_kernels.refine_key_span(k) * rng.integers(0, k, 5_000) + rng.integers(
        0, 3_000, 5_000
    )
    for cap in (10**6, 2_000, 300, 50, 6):
        order, distinct, group, level = _refine_kernels._sorted_groups(keys, k, cap)
        coarse = _refine_kernels.coarsen_refine_keys(keys, level, k) if level else keys
        ref_distinct, ref_group = np.unique(coarse, return_inverse=True)
        np.testing.assert_array_equal(distinct, ref_distinct)
        np.testing.assert_array_equal(group, ref_group.reshape(-1))
        assert distinct.shape[0] <= cap or level == _refine_kernels.REFINE_TOP_LEVEL
        finer = _refine_kernels.coarsen_refine_keys(keys, level - 1, k) if level > 1 else keys
        assert level == 0 or np.unique(finer).shape[0] > cap
    assert level > 0


def test_refine_groups_within_a_cap_are_the_coarsened_groups(rng):
    X = rng.normal(size=(3_000, 5)).astype(np.float32)
    C = X[:7].astype(np.float64)
    w = rng.random(3_000)
    fine = _refine_kernels.refine_groups(X, C, w)
    keys, weights, offsets, sq, level = _refine_kernels.refine_groups(X, C, w, cap=200)
    assert level > 0 and keys.shape[0] <= 200
    ref = _refine_kernels.reduce_refine_groups(
        _refine_kernels.coarsen_refine_keys(fine[0], level, 7), *fine[1:]
    )
    np.testing.assert_array_equal(keys, ref[0])
    for got, want in zip((weights, offsets, sq), ref[1:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-9)


def test_d2_sample_labels_are_each_rows_nearest_chosen_row(rng):
    X = rng.normal(size=(4_000, 6))
    w = rng.random(4_000)
    idx, labels, dist = _seeding.d2_sample(
        X, 300, np.random.default_rng(1), sample_weight=w, return_labels=True
    )
    np.testing.assert_array_equal(idx, _seeding.d2_sample(X, 300, np.random.default_rng(1), w))
    ref_labels, ref_dist = ref_nearest(X, X[idx])
    d_chosen = ref_sq_distances(X, X[idx])[np.arange(4_000), labels]
    np.testing.assert_allclose(d_chosen, ref_dist, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-9, atol=1e-9)
    assert np.mean(labels == ref_labels) > 0.999


@pytest.mark.parametrize("scale", [1e-60, 1e40])
def test_kmeans_plusplus_picks_the_same_rows_for_weights_of_any_scale(rng, scale):
    # The candidates' potentials are summed in the rows' float32: weights beyond its range
    # must neither vanish nor overflow there.
    X = rng.normal(size=(3_000, 8)).astype(np.float32)
    w = rng.random(3_000) + 0.5
    ref = _seeding.kmeans_plusplus(X, 40, np.random.default_rng(3), w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _seeding.kmeans_plusplus(X, 40, np.random.default_rng(3), w * scale)
    np.testing.assert_array_equal(got, ref)


def test_nearest_exact_point_is_zero_distance(rng):
    C = rng.normal(size=(10, 3)) * 100
    labels, dist = _distances.nearest(C, C)
    np.testing.assert_array_equal(labels, np.arange(10))
    np.testing.assert_allclose(dist, 0.0, atol=1e-8)
    assert np.all(dist >= 0)


def test_nearest_centers_of_other_dtype(rng):
    X, C = _data(rng, dtype=np.float32)
    labels, _ = _distances.nearest(X, C.astype(np.float64))
    ref_labels, _ = ref_nearest(X, C.astype(np.float32).astype(np.float64))
    assert np.mean(labels == ref_labels) > 0.99


def test_centers_from_labels_matches_reference(rng):
    X, _ = _data(rng)
    labels = rng.integers(0, 9, size=len(X))
    labels[labels == 4] = 5  # label 4 empty
    w = rng.random(len(X))
    sums, mass = _lloyd.centers_from_labels(X, labels, 10, w)
    ref_sums, ref_mass = ref_centers_from_labels(X, labels, 10, w)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mass, ref_mass, rtol=1e-12)
    assert mass[4] == 0 and mass[9] == 0
    sums1, mass1 = _lloyd.centers_from_labels(X, labels, 10)
    ref1, refm1 = ref_centers_from_labels(X, labels, 10, np.ones(len(X)))
    np.testing.assert_allclose(sums1, ref1, atol=1e-12)
    np.testing.assert_allclose(mass1, refm1)


def test_lloyd_one_iteration_matches_reference(rng):
    X, C = _data(rng, m=6)
    w = rng.random(len(X)) + 0.1
    centers, labels, inertia, n_iter = _lloyd.lloyd(X, C, sample_weight=w, max_iter=1, tol=0.0)
    expected = ref_lloyd_step(X, C, w)
    assert n_iter == 1
    np.testing.assert_allclose(centers, expected, rtol=1e-10, atol=1e-12)
    ref_labels, ref_dist = ref_nearest(X, expected)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(inertia, np.sum(w * ref_dist), rtol=1e-10)


@pytest.mark.parametrize("shift", [0.0, 1e6])
def test_lloyd_with_a_fixed_origin_takes_the_same_steps(rng, shift):
    X, C = _data(rng, m=6)
    X, C = X + shift, C + shift
    w = rng.random(len(X)) + 0.1
    for max_iter in (1, 20):
        moving = _lloyd.lloyd(X, C, sample_weight=w, max_iter=max_iter, tol=0.0)
        fixed = _lloyd.lloyd(X, C, sample_weight=w, max_iter=max_iter, tol=0.0, fixed_origin=True)
        np.testing.assert_allclose(fixed[0], moving[0], rtol=1e-12, atol=1e-9)
        np.testing.assert_array_equal(fixed[1], moving[1])
        assert fixed[2] == pytest.approx(moving[2], rel=1e-9)
    np.testing.assert_allclose(fixed[0] - shift, ref_lloyd_step(X, fixed[0], w) - shift, atol=1e-6)


def test_lloyd_converges_to_fixed_point(rng):
    X, C = _data(rng, m=4)
    centers, labels, inertia, n_iter = _lloyd.lloyd(X, C, max_iter=300, tol=0.0)
    assert n_iter < 300
    np.testing.assert_allclose(ref_lloyd_step(X, centers, np.ones(len(X))), centers, atol=1e-12)


def test_lloyd_reseeds_empty_cluster(rng):
    X = rng.normal(size=(200, 2))
    C = np.array([[0.0, 0.0], [1e6, 1e6], [0.5, 0.5]])  # center 1 gets no rows
    centers, labels, _, _ = _lloyd.lloyd(X, C, max_iter=1, tol=0.0)
    assert np.all(np.abs(centers) < 100), "an empty cluster must be re-seeded at a data row"
    assert len(np.unique(labels)) == 3


def test_running_sums_follow_the_labels_and_empty_centers_exactly(rng):
    Xw = rng.normal(size=(300, 4)) * 1e3
    w = rng.random(300) + 0.1
    first = rng.integers(0, 5, size=300)
    running = _lloyd._running_sums(Xw, w, first, 6)
    assert running[3][5] == 0  # center 5 never had rows
    second = first.copy()
    second[second == 2] = 4  # center 2 loses all its rows
    second[:40] = rng.integers(0, 2, size=40)
    labels, sums, mass, count = _lloyd._running_sums(Xw, w, second, 6, running)
    assert labels is second
    np.testing.assert_allclose(sums, _array.segment_sum(Xw, second, 6), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(mass, np.bincount(second, w, minlength=6), rtol=1e-12)
    np.testing.assert_array_equal(count, np.bincount(second, minlength=6))
    assert mass[2] == 0.0 and not np.any(sums[2])  # exactly, not a rounding residue


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_incremental_lloyd_takes_the_same_steps(rng, dtype):
    X = np.concatenate(
        [rng.normal(size=(400, 3)) + 6 * rng.integers(0, 5, (1, 3)) for _ in range(5)]
    )
    X = X.astype(dtype)
    w = rng.random(len(X)) + 0.1
    # a duplicate (empty from the start) and a far center: re-seeds on the way
    C = np.concatenate([X[:5], X[:1], np.full((1, 3), 100.0)]).astype(np.float64)
    for max_iter in (1, 3, 100):
        full = _lloyd.lloyd(X, C, w, max_iter=max_iter, tol=1e-6, keep_best=True, fixed_origin=True)
        inc = _lloyd.lloyd(
            X,
            C,
            w,
            max_iter=max_iter,
            tol=1e-6,
            keep_best=True,
            fixed_origin=True,
            incremental=True,
        )
        np.testing.assert_allclose(inc[0], full[0], rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(inc[1], full[1])
        assert inc[2] == pytest.approx(full[2], rel=1e-10)
        assert inc[3] == full[3]
    assert full[3] > 3  # the long run moved rows between centers many times


def test_incremental_lloyd_with_weightless_rows_sums_all_rows(rng):
    X, C = _data(rng, m=6)
    w = rng.random(len(X))
    w[::7] = 0.0  # a center's mass could otherwise be a rounding residue of zero weights
    full = _lloyd.lloyd(X, C, w, max_iter=20, tol=0.0)
    inc = _lloyd.lloyd(X, C, w, max_iter=20, tol=0.0, incremental=True)
    np.testing.assert_array_equal(inc[0], full[0])


@pytest.mark.parametrize("seed", range(3))
def test_over_relaxed_lloyd_gets_further_in_the_same_iterations_on_one_blob(seed):
    # Ten centers started in a corner of one Gaussian blob: Lloyd's steps shrink long before
    # the centers have spread over it.
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3_000, 2))
    C = rng.normal(size=(10, 2)) * 0.1 + [1.5, 0.0]
    for max_iter in (5, 10):
        plain = _lloyd.lloyd(X, C, max_iter=max_iter, tol=0.0, keep_best=True)
        longer = _lloyd.lloyd(X, C, max_iter=max_iter, tol=0.0, keep_best=True, relax=1.9)
        assert longer[3] <= max_iter
        assert longer[2] < plain[2] * 0.99
        _, ref_dist = ref_nearest(X, longer[0])
        assert longer[2] == pytest.approx(ref_dist.sum(), rel=1e-9)


@pytest.mark.parametrize("incremental", [False, True])
def test_over_relaxed_lloyd_takes_the_plain_step_on_separate_clusters(rng, incremental):
    # One plain step puts each center at its cluster's mean; a step 1.9 times as long would
    # overshoot and then circle the means (cost falling by 0.81 a step), so the bound on the
    # plain step's cost turns it back.
    X = np.concatenate(
        [rng.normal(size=(500, 2)) * 0.1 + m for m in ([0, 0], [10, 0], [0, 10], [10, 10])]
    )
    C = np.array([[2.0, 1], [8, 1], [1, 8], [9, 9]])
    plain = _lloyd.lloyd(X, C, max_iter=1, tol=0.0)
    for max_iter in (2, 5, 10):
        longer = _lloyd.lloyd(X, C, max_iter=max_iter, tol=0.0, relax=1.9, incremental=incremental)
        np.testing.assert_allclose(longer[0], plain[0], atol=1e-12)
        assert longer[2] == pytest.approx(plain[2], rel=1e-9)
        # the longer step turned back, the plain one, then a step of zero: converged
        assert longer[3] == min(max_iter, 3)


@pytest.mark.parametrize("seed", range(5))
def test_lloyd_keep_best_never_costs_more_with_more_iterations(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(150, 3)).astype(np.float32)
    w = rng.random(len(X)) + 0.1
    # duplicated and far starting centers: empty clusters are re-seeded on the way
    C = np.concatenate([X[:3], X[:3], np.full((2, 3), 50.0)]).astype(np.float64)
    costs = []
    for max_iter in range(1, 12):
        centers, labels, inertia, n_iter = _lloyd.lloyd(
            X, C, w, max_iter=max_iter, tol=0.0, keep_best=True
        )
        assert n_iter <= max_iter
        _, ref_dist = ref_nearest(X, centers)
        np.testing.assert_allclose(inertia, np.sum(w * ref_dist), rtol=1e-5)
        np.testing.assert_array_equal(labels, ref_nearest(X, centers)[0])
        costs.append(inertia)
    assert np.all(np.diff(costs) <= 0), costs
    _, start_dist = ref_nearest(X, C)
    assert costs[0] <= np.sum(w * start_dist)


# ---------------------------------------------------------------------- seeding
@pytest.mark.parametrize("seed", range(5))
def test_kmeans_plusplus_distinct_and_zero_weight_never_seeds(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, 3))
    w = rng.random(300)
    zero = rng.choice(300, size=150, replace=False)
    w[zero] = 0.0
    X[zero] += 50.0  # far away: D^2 sampling would love them if weight were ignored
    idx = _seeding.kmeans_plusplus(X, 20, np.random.default_rng(seed), sample_weight=w)
    assert idx.dtype == np.int64 and idx.shape == (20,)
    assert len(np.unique(idx)) == 20
    assert np.all(w[idx] > 0)


def test_kmeans_plusplus_distinct_with_duplicates():
    # 6 distinct points, many copies: seeding 6 centers must give 6 distinct points.
    X = np.repeat(np.arange(6.0)[:, None] * np.ones((1, 2)), 20, axis=0)
    for seed in range(5):
        idx = _seeding.kmeans_plusplus(X, 6, np.random.default_rng(seed))
        assert len(np.unique(X[idx], axis=0)) == 6


def test_kmeans_plusplus_exactly_positive_rows():
    X = np.arange(20.0).reshape(10, 2)
    w = np.zeros(10)
    w[[1, 4, 7]] = 1.0
    idx = _seeding.kmeans_plusplus(X, 3, np.random.default_rng(0), sample_weight=w)
    assert sorted(idx.tolist()) == [1, 4, 7]


def test_d2_sample_zero_weight_never_seeds(rng):
    X = rng.normal(size=(400, 3))
    w = np.ones(400)
    w[:200] = 0.0
    X[:200] += 100
    idx = _seeding.d2_sample(X, 50, np.random.default_rng(1), sample_weight=w)
    assert len(np.unique(idx)) == len(idx)
    assert np.all(idx >= 200)


# ---------------------------------------------------------------------- final solve
@pytest.mark.parametrize("seed", range(3))
def test_weighted_kmeans_close_to_sklearn(seed):
    X, _ = make_blobs(n_samples=2000, centers=8, n_features=4, cluster_std=1.5, random_state=seed)
    w = np.random.default_rng(seed).random(len(X)) * 3
    centers, inertia, _ = _runner.weighted_kmeans(X, 8, np.random.default_rng(seed), w, n_init=10)
    ref = KMeans(8, n_init=10, random_state=seed).fit(X, sample_weight=w)
    # our inertia is the inertia of the returned centers
    _, d = ref_nearest(X, centers)
    np.testing.assert_allclose(inertia, np.sum(w * d), rtol=1e-9)
    assert inertia <= 1.01 * ref.inertia_


def _solve(X, k, w=None, seed=0):
    """Sorted centers and cost of the weighted solve."""
    centers, inertia, _ = _runner.weighted_kmeans(X, k, np.random.default_rng(seed), w, n_init=3)
    return centers[np.lexsort(centers.T[::-1])], inertia


def _solve_centers(X, k, w=None, seed=0):
    return _solve(X, k, w, seed)[0]


def test_weight_n_equals_n_repeated_rows(rng):
    X = rng.normal(size=(60, 3))
    reps = rng.integers(1, 4, size=60)
    a, cost_a = _solve(X, 4, reps.astype(float))
    b, cost_b = _solve(np.repeat(X, reps, axis=0), 4)
    # The same solution: equal costs, and centers equal up to the rounding of the sums that
    # reach them (the final Lloyd keeps its start when a step does not lower the cost, and
    # the two starts differ in the last digits).
    assert cost_a == pytest.approx(cost_b, rel=1e-13)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-10)


def test_unit_weights_equal_none(rng):
    X = rng.normal(size=(200, 3))
    np.testing.assert_array_equal(_solve_centers(X, 5, np.ones(200)), _solve_centers(X, 5))


def test_scaled_weights_change_nothing(rng):
    X = rng.normal(size=(200, 3))
    w = rng.random(200) + 0.5
    np.testing.assert_allclose(
        _solve_centers(X, 5, w), _solve_centers(X, 5, 8.0 * w), rtol=1e-9, atol=1e-12
    )


def test_zero_weight_rows_do_not_move_centers(rng):
    X = rng.normal(size=(200, 2))
    w = np.ones(200)
    w[:20] = 0.0
    X[:20] = 1000.0  # would grab a center if seeded or counted
    centers = _solve_centers(X, 3, w)
    assert np.all(np.abs(centers) < 10)
    np.testing.assert_allclose(centers, _solve_centers(X[20:], 3), atol=1e-10)


# ---------------------------------------------------------------------- summarizer weights
@pytest.mark.parametrize("method", ["lloyd", "stream"])
def test_summarizer_unit_weights_equal_none(rng, method):
    X = rng.normal(size=(3000, 4))
    a = summarize(X, 64, method=method, seed=3, mini_batch_size=500)
    b = summarize(X, 64, method=method, sample_weight=np.ones(3000), seed=3, mini_batch_size=500)
    np.testing.assert_allclose(a.weights, b.weights)
    np.testing.assert_allclose(a.linear_sums, b.linear_sums)


@pytest.mark.parametrize("method", ["lloyd", "stream"])
def test_summarizer_scaled_weights_scale_summary(rng, method):
    X = rng.normal(size=(3000, 4))
    w = rng.random(3000) + 0.5
    a = summarize(X, 64, method=method, sample_weight=w, seed=3, mini_batch_size=500)
    b = summarize(X, 64, method=method, sample_weight=4.0 * w, seed=3, mini_batch_size=500)
    np.testing.assert_allclose(4.0 * a.weights, b.weights, rtol=1e-9)
    np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", ["lloyd", "stream"])
def test_summarizer_zero_weight_never_seeds(rng, method):
    X = rng.normal(size=(3000, 3))
    w = np.ones(3000)
    w[:300] = 0.0
    X[:300] += 1000.0
    s = summarize(X, 50, method=method, sample_weight=w, seed=0, mini_batch_size=500)
    assert np.all(np.abs(s.centroids) < 100)
    np.testing.assert_allclose(s.total_weight, 2700.0)
    assert s.n_seen == 3000


@pytest.mark.parametrize("method", ["lloyd", "stream"])
def test_summarizer_weight_n_close_to_n_repeated_rows(rng, method):
    # Summaries are randomized, so weighted and repeated data only agree in quality:
    # the solved cost of both on the repeated data stays within a few percent.
    X, _ = make_blobs(n_samples=1500, centers=5, n_features=3, random_state=1)
    reps = rng.integers(1, 4, size=len(X))
    Xr = np.repeat(X, reps, axis=0)
    sw = summarize(X, 60, method=method, sample_weight=reps.astype(float), seed=0)
    sr = summarize(Xr, 60, method=method, seed=0)
    np.testing.assert_allclose(sw.total_weight, sr.total_weight)
    costs = []
    for s in (sw, sr):
        centers, _, _ = s.solve(5, n_init=3, seed=0)
        costs.append(ref_nearest(Xr, centers)[1].sum())
    assert max(costs) <= 1.02 * min(costs)


def test_summary_from_points_weight_n_equals_repeated_rows(rng):
    X = rng.normal(size=(30, 3))
    reps = rng.integers(1, 4, size=30)
    labels = np.repeat(np.arange(30) % 7, 1)
    a = Summary.from_points(X, reps.astype(float), labels=labels, n_groups=7)
    b = Summary.from_points(np.repeat(X, reps, axis=0), labels=np.repeat(labels, reps), n_groups=7)
    np.testing.assert_allclose(a.weights, b.weights)
    np.testing.assert_allclose(a.linear_sums, b.linear_sums, atol=1e-12)
    np.testing.assert_allclose(a.square_sums, b.square_sums, atol=1e-12)


# ---------------------------------------------------------------------- neighbours and local search
@pytest.mark.parametrize("m", [2, 7, 3000])
def test_nearest_other_matches_reference(rng, m):
    C = rng.normal(size=(m, 5))
    labels, dist = _distances.nearest_other(C)
    D = ref_sq_distances(C, C)
    np.fill_diagonal(D, np.inf)
    np.testing.assert_array_equal(labels, D.argmin(1))
    np.testing.assert_allclose(dist, D.min(1), rtol=1e-9, atol=1e-9)


def test_nearest2_matches_reference(rng):
    X = rng.normal(size=(500, 4))
    C = rng.normal(size=(9, 4))
    labels, d1, d2 = _distances.nearest2(X, C)
    D = np.sort(ref_sq_distances(X, C), axis=1)
    np.testing.assert_array_equal(labels, ref_sq_distances(X, C).argmin(1))
    np.testing.assert_allclose(d1, D[:, 0], atol=1e-9)
    np.testing.assert_allclose(d2, D[:, 1], atol=1e-9)


def test_score_blocks_tile_the_rows_with_one_block_size(rng, monkeypatch):
    monkeypatch.setattr(_distances, "BLOCK_ELEMENTS", 1)  # the smallest blocks: 256 rows
    X = rng.normal(size=(700, 3))
    C = X[::70]
    # A block (and its norms) is a view of a work buffer, valid until the next one: copied.
    blocks = [(a, b, blk.copy(), sq.copy()) for a, b, blk, sq in _distances._score_blocks(X, C)]
    assert [(a, b) for a, b, _, _ in blocks] == [(0, 256), (256, 512), (512, 700)]
    # scores and row norms on coordinates relative to the centers' mean
    Xs, Cs = X - C.mean(0), C - C.mean(0)
    scores = np.concatenate([blk for _, _, blk, _ in blocks])
    np.testing.assert_allclose(scores, Xs @ Cs.T - 0.5 * (Cs**2).sum(1)[None, :], atol=1e-12)
    x_sq = np.concatenate([sq for _, _, _, sq in blocks])
    np.testing.assert_allclose(x_sq, (Xs**2).sum(1), atol=1e-12)


def _check_nearest_kernels(X, C, atol):
    """nearest, nearest2 (rows of X to C) and nearest_other (rows of C) against the reference."""
    D = ref_sq_distances(X, C)
    first_two = np.sort(D, axis=1)[:, :2]
    labels, dist = _distances.nearest(X, C)
    np.testing.assert_array_equal(labels, D.argmin(1))
    np.testing.assert_allclose(dist, first_two[:, 0], atol=atol)
    labels2, d1, d2 = _distances.nearest2(X, C)
    np.testing.assert_array_equal(labels2, labels)
    np.testing.assert_allclose(np.column_stack([d1, d2]), first_two, atol=atol)
    other, d_other = _distances.nearest_other(C)
    ref = ref_sq_distances(C, C) + np.diag(np.full(len(C), np.inf))
    np.testing.assert_array_equal(other, ref.argmin(1))
    np.testing.assert_allclose(d_other, ref.min(1), atol=atol)


def test_nearest_kernels_stitch_many_blocks(rng, monkeypatch):
    monkeypatch.setattr(_distances, "BLOCK_ELEMENTS", 1)
    X = rng.normal(size=(700, 3))
    _check_nearest_kernels(X, X[::70], atol=1e-9)
    _check_nearest_kernels(X[:50], X[:600], atol=1e-9)  # 600 centers: blocks of 256 centers


@pytest.mark.parametrize("slab_elements", [1, 4 * 256 * 4 + 5])
def test_nearest_kernels_stitch_slabs_of_blocks(rng, monkeypatch, slab_elements):
    # Blocks of 256 rows, shifted in slabs of one block (fewer elements than a block) or of
    # four blocks (4 features with the trailing 1); the last slab and block are shorter.
    monkeypatch.setattr(_distances, "BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(_distances, "SLAB_ELEMENTS", slab_elements)
    X = rng.normal(size=(2_700, 3)) + 50.0  # far from zero: a slab not shifted shows
    blocks = [(a, b) for a, b, _, _ in _distances._score_blocks(X, X[::90])]
    assert blocks == [(a, min(a + 256, 2_700)) for a in range(0, 2_700, 256)]
    _check_nearest_kernels(X, X[::90], atol=1e-9)
    (labels, _, third), (d1, _, d3) = _distances.nearest_top(X, X[::90], 3)
    D = ref_sq_distances(X, X[::90])
    np.testing.assert_array_equal(third, np.argsort(D, axis=1, kind="stable")[:, 2])
    np.testing.assert_allclose(d3, np.sort(D, axis=1)[:, 2], atol=1e-9)


def test_few_centers_and_wide_rows_make_slab_sized_blocks(rng, monkeypatch):
    # Two centers allow blocks of all 3,000 rows; 7 features (8 with the 1) and slabs of
    # 2,400 elements cap them at 300 rows. Rows already prepared are not copied: one block.
    monkeypatch.setattr(_distances, "SLAB_ELEMENTS", 2_400)
    X = rng.normal(size=(3_000, 7)) + 50.0
    C = X[[0, 1]]
    assert [(a, b) for a, b, _, _ in _distances._score_blocks(X, C)] == [
        (a, a + 300) for a in range(0, 3_000, 300)
    ]
    _check_nearest_kernels(X, X[:2], atol=1e-9)
    prepared = _distances.prepared_rows(X, X.mean(0))
    assert [(a, b) for a, b, _, _ in _distances._score_blocks(X, C, prepared)] == [(0, 3_000)]
    np.testing.assert_array_equal(
        _distances.nearest(X, C, prepared)[0], _distances.nearest(X, C)[0]
    )


@pytest.mark.parametrize("n_trials", [1, 16])
def test_local_search_moves_a_center_off_a_shared_blob(n_trials):
    # Four tight blobs, k=4, but the start puts two centers on blob 0 and one between blobs 2, 3.
    gen = np.random.default_rng(1)
    means = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    X = np.concatenate([m + 0.1 * gen.normal(size=(50, 2)) for m in means])
    start = np.array([[-0.05, 0.0], [0.05, 0.0], [20.0, 0.0], [10.0, 20.0]])
    before = ref_sq_distances(X, start).min(1).sum()
    centers, accepted = _lloyd.local_search(
        X, start, np.random.default_rng(0), n_steps=50, n_trials=n_trials
    )
    after = ref_sq_distances(X, centers).min(1).sum()
    assert accepted >= 1
    assert after < 0.2 * before


@pytest.mark.parametrize("n_trials", [1, 8])
def test_local_search_never_raises_the_cost(rng, n_trials):
    X = rng.normal(size=(400, 3))
    w = rng.uniform(0.0, 2.0, size=400)
    start = X[:6]
    before = (w * ref_sq_distances(X, start).min(1)).sum()
    centers, _ = _lloyd.local_search(
        X, start, np.random.default_rng(3), sample_weight=w, n_steps=30, n_trials=n_trials
    )
    after = (w * ref_sq_distances(X, centers).min(1)).sum()
    assert after <= before * (1 + 1e-12)


def test_local_search_trials_find_the_best_swap_of_the_step():
    # One step with every row a candidate must make the single best swap there is.
    gen = np.random.default_rng(5)
    X = gen.normal(size=(60, 2))
    start = X[:3].copy()
    centers, accepted = _lloyd.local_search(
        X, start, np.random.default_rng(0), n_steps=1, n_trials=2000
    )
    best = min(
        ref_sq_distances(X, np.where(np.arange(3)[:, None] == i, X[p], start)).min(1).sum()
        for p in range(60)
        for i in range(3)
    )
    assert accepted == 1
    np.testing.assert_allclose(ref_sq_distances(X, centers).min(1).sum(), best, rtol=1e-9)


def test_coarsen_keeps_weight_and_mean(rng):
    X = rng.normal(size=(3000, 4))
    w = rng.uniform(0.0, 2.0, size=3000)
    P, wp = _runner.coarsen(X, 200, np.random.default_rng(0), w)
    assert P.shape[0] <= 200 and P.shape == (wp.shape[0], 4)
    assert np.all(wp > 0)
    np.testing.assert_allclose(wp.sum(), w.sum(), rtol=1e-12)
    np.testing.assert_allclose(wp @ P, w @ X, rtol=1e-9, atol=1e-9)


def test_coarsen_to_many_points_groups_as_a_leaf(rng):
    # From TREE_COARSEN_POINTS coarse points on, the rows are grouped by the leaf's tree (a
    # few hundred distances a row, not two per point): its groups' means, weight and mean kept.
    from dask_streamkm._tree import tree_labels

    X = rng.normal(size=(30_000, 6)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, size=30_000)
    n_points = _runner.TREE_COARSEN_POINTS
    P, wp = _runner.coarsen(X, n_points, np.random.default_rng(0), w)
    assert P.shape[0] <= n_points and np.all(wp > 0)
    np.testing.assert_allclose(wp.sum(), w.sum(), rtol=1e-12)
    np.testing.assert_allclose(wp @ P, w @ X.astype(np.float64), rtol=1e-6, atol=1e-3)
    labels, n_labels = tree_labels(X, n_points, w, np.random.default_rng(0))
    mass = np.bincount(labels, weights=w, minlength=n_labels)
    sums = np.stack(
        [np.bincount(labels, weights=w * X[:, j], minlength=n_labels) for j in range(6)], 1
    )
    np.testing.assert_allclose(P, sums[mass > 0] / mass[mass > 0, None], rtol=1e-6, atol=1e-6)


def test_weighted_kmeans_coarse_level_close_to_sklearn():
    # 20 * k is far below the rows, so the restarts run on coarse points and Lloyd finishes
    # on every row; the result must match a full multi-restart k-means.
    X, _ = make_blobs(n_samples=20_000, centers=30, n_features=5, cluster_std=2.0, random_state=4)
    w = np.random.default_rng(4).random(len(X)) + 0.5
    centers, inertia, _ = _runner.weighted_kmeans(X, 25, np.random.default_rng(0), w, n_init=5)
    ref = KMeans(25, n_init=10, random_state=0).fit(X, sample_weight=w)
    assert inertia <= 1.01 * ref.inertia_


# ---------------------------------------------------------------------- float32 far from the origin
def _far_blobs(shift, n=2000, d=4, seed=0):
    """Five blobs (spread ~20, noise 1) shifted by ``shift``, as float32, and their means."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-20, 20, size=(5, d))
    X = (means[rng.integers(0, 5, n)] + rng.normal(size=(n, d)) + shift).astype(np.float32)
    return X, means + shift


@pytest.mark.parametrize("shift", [1e4, 1e5, 1e6])
def test_nearest_kernels_on_float32_far_from_the_origin(shift):
    # float32 rows 1e5 from the origin: ||x||^2 ~ 4e10, whose float32 rounding (~2e3) is larger
    # than the distances; on coordinates relative to the centers the results are float64's.
    X, means = _far_blobs(shift)
    C = (means + np.random.default_rng(1).normal(scale=0.5, size=means.shape)).astype(np.float32)
    _check_nearest_kernels(X, C, atol=1e-2)  # distances are about 4 and up
    np.testing.assert_allclose(_distances.sq_distances(X, C), ref_sq_distances(X, C), atol=1e-2)


@pytest.mark.parametrize("shift", [1e5, 1e6])
def test_weighted_kmeans_on_float32_far_from_the_origin(shift):
    X, _ = _far_blobs(shift)
    centered = X.astype(np.float64) - shift
    rng = np.random.default_rng(0)
    centers, cost, _ = _runner.weighted_kmeans(X, 5, rng, n_init=3)
    ref_centers, ref_cost, _ = _runner.weighted_kmeans(
        centered, 5, np.random.default_rng(0), n_init=3
    )
    true = ref_nearest(X, centers)[1].sum()
    assert cost == pytest.approx(true, rel=1e-4)
    assert true <= 1.01 * ref_cost


@pytest.mark.parametrize("m", [1, 2, 5])
def test_nearest_top_three_in_order_with_the_last_repeated_for_few_centers(rng, m):
    X = rng.normal(size=(300, 4)) + 1e5
    C = X[rng.choice(300, m, replace=False)] + rng.normal(size=(m, 4)) * 0.1
    (labels, dists) = _distances.nearest_top(X, C, 3)
    d = ref_sq_distances(X, C)
    order = np.argsort(d, axis=1, kind="stable")
    for j in range(3):
        col = order[:, min(j, m - 1)]
        np.testing.assert_array_equal(labels[j], col)
        np.testing.assert_allclose(dists[j], d[np.arange(300), col], rtol=1e-6, atol=1e-6)


def test_restarts_side_by_side_give_the_runs_in_turn(monkeypatch):
    """From the main thread the restarts run on several threads; from any other thread in
    turn. Each has its own generator, so both give the same centers bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6)) + rng.integers(0, 8, size=(3000, 1)) * 3.0
    w = rng.random(3000) + 0.5

    def solve():
        return _runner.weighted_kmeans(X, 12, np.random.default_rng(5), w, n_init=4)

    assert X.shape[0] * X.shape[1] < _runner.PARALLEL_VALUES  # small: lower the bar
    monkeypatch.setattr(_runner, "PARALLEL_VALUES", 1)

    main = solve()
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(solve).result()
    np.testing.assert_array_equal(main[0], other[0])
    assert main[1] == other[1]
    # A different seed gives other restarts (the seed reaches them).
    assert not np.array_equal(
        main[0], _runner.weighted_kmeans(X, 12, np.random.default_rng(6), w)[0]
    )


def test_ward_start_and_final_probes_run_beside_the_restarts(monkeypatch):
    """From the main thread the Ward start runs in the restarts' pool (on a generator spawned
    up front) and the two final probes side by side; from any other thread all run in turn,
    with the same centers bit for bit."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(6000, 6)) + rng.integers(0, 30, size=(6000, 1)) * 3.0
    w = rng.random(6000) + 0.5
    seen = []
    ward_run, lloyd = _runner._ward_run, _runner.lloyd

    def spy(name, function):
        def call(*args, **kwargs):
            if name == "ward" or kwargs.get("keep_best"):  # the final runs keep their best
                seen.append((name, threading.current_thread() is threading.main_thread()))
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(_runner, "_ward_run", spy("ward", ward_run))
    monkeypatch.setattr(_runner, "lloyd", spy("final", lloyd))
    monkeypatch.setattr(_runner, "PARALLEL_VALUES", 1)

    def solve():
        return _runner.weighted_kmeans(X, 10, np.random.default_rng(3), w, n_init=4)

    main = solve()
    beside = list(seen)
    seen.clear()
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(solve).result()
    if (os.cpu_count() or 1) >= 2:
        # The Ward start and both probes off the main thread; the winner goes on in it.
        assert beside[:3] == [("ward", False), ("final", False), ("final", False)]
    assert [name for name, _ in seen] == [name for name, _ in beside]
    assert not any(in_main for _, in_main in seen)  # all on the one calling thread
    np.testing.assert_array_equal(main[0], other[0])
    assert main[1] == other[1] and main[2] == other[2]


def test_one_seed_object_gives_every_solve_the_same_centers():
    """A SeedSequence passed to several solves (the elbow passes one to every k) gives each
    the same centers whatever was solved from it before: the Ward start's generator is the
    seed's first child, not a new spawn each time (spawning counts children in the seed)."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]], dtype=float)
    X = rng.permutation(np.concatenate([c + rng.standard_normal((500, 3)) for c in centers]))
    summary = Summary.from_points(X)
    seed = np.random.SeedSequence(0, spawn_key=(2**32 - 1, 0))

    def solve(k):
        return _runner.solve_summary(summary, k, n_init=10, max_iter=300, tol=1e-4, seed=seed)

    first = solve(5)
    for k in (2, 3, 4, 6):
        solve(k)
    # Five more solves of k=5 from the same seed object (their Ward starts drew other
    # children, and reached other basins, when each solve spawned one).
    for _ in range(5):
        again = solve(5)
        np.testing.assert_array_equal(first[0], again[0])
        assert first[1] == again[1]
    # The same generator as the first spawn of a fresh seed: fits keep their centers.
    fresh = np.random.SeedSequence(0, spawn_key=(2**32 - 1, 0))
    spawned = np.random.default_rng(fresh).spawn(1)[0].random(4)
    np.testing.assert_array_equal(
        _runner.first_child(np.random.default_rng(seed)).random(4), spawned
    )


# ---------------------------------------------------------------------- Ward start
def test_ward_labels_match_scipy_ward_on_unit_weights(rng):
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score

    X = rng.normal(size=(400, 5))
    labels = _lloyd.ward_labels(X, 9)
    expected = fcluster(linkage(X, "ward"), 9, "maxclust")
    assert sorted(np.unique(labels)) == list(range(9))
    assert adjusted_rand_score(labels, expected) == 1.0


def test_ward_labels_numpy_merges_match_the_array_api_ones(rng):
    """The merges on numpy (stale rows written back in one call) give the labels of an
    array-API namespace (written back row by row) bit for bit, on weighted rows with many
    ties to break."""
    xps = pytest.importorskip("array_api_strict")
    X = rng.normal(size=(300, 4)) + rng.integers(0, 12, size=(300, 1)) * 4.0
    X[150:180] = X[:30]  # duplicate rows: equal merge costs
    w = rng.random(300) + 0.2
    got = _lloyd.ward_labels(X, 11, w)
    generic = _lloyd.ward_labels(xps.asarray(X), 11, xps.asarray(w))
    np.testing.assert_array_equal(got, np.asarray(generic))


def _ward_cost(X, labels, w):
    cost = 0.0
    for label in np.unique(labels):
        rows, weights = X[labels == label], w[labels == label]
        mean = weights @ rows / weights.sum()
        cost += weights @ np.sum((rows - mean) ** 2, axis=1)
    return cost


@pytest.mark.parametrize("case", range(12))
def test_ward_labels_rounds_give_the_one_at_a_time_merges(case):
    """The numpy merges go in rounds of mutual nearest pairs; the array-API path merges one
    pair a step. The same labels on weighted rows of many shapes and cluster counts; on
    rows of small integers (many equal costs, where either order is a valid Ward) the same
    Ward cost."""
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(case)
    n, d = int(rng.integers(2, 160)), int(rng.integers(1, 12))
    k = int(rng.integers(1, n + 1))
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=d)
    X += rng.integers(0, 6, size=(n, 1)) * 5.0
    w = rng.uniform(0.05, 3.0, size=n)
    got = _lloyd.ward_labels(X, k, w)
    np.testing.assert_array_equal(
        got, np.asarray(_lloyd.ward_labels(xps.asarray(X), k, xps.asarray(w)))
    )
    ties = np.round(X[:, :2])
    got = _lloyd.ward_labels(ties, k, w)
    generic = np.asarray(_lloyd.ward_labels(xps.asarray(ties), k, xps.asarray(w)))
    assert np.unique(got).shape[0] == np.unique(generic).shape[0] == k
    assert _ward_cost(ties, got, w) == pytest.approx(
        _ward_cost(ties, generic, w), rel=1e-12, abs=1e-12
    )


def test_ward_labels_weight_two_equals_a_repeated_row(rng):
    X = rng.normal(size=(200, 4))
    w = np.ones(200)
    w[:40] = 2.0
    weighted = _lloyd.ward_labels(X, 7, w)
    repeated = _lloyd.ward_labels(np.vstack([X, X[:40]]), 7)[:200]
    # The same partition of the 200 rows (labels may be numbered differently).
    pairs = set(zip(weighted.tolist(), repeated.tolist(), strict=True))
    assert len(pairs) == 7


def test_local_search_until_no_swap_equals_one_step_at_a_time(rng):
    # A warm solve's swap search: one call that stops at the first step without a swap gives
    # the centers of one-step calls made until one accepts none, and the final nearest two.
    means = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    X = np.concatenate([m + rng.normal(size=(100, 2)) for m in means])
    w = rng.uniform(0.5, 2.0, size=X.shape[0])
    start = np.array([[-0.5, 0.0], [0.5, 0.0], [20.0, 0.0], [10.0, 20.0]])
    steps, centers = 0, start
    gen = np.random.default_rng(7)
    while steps < 20:
        steps += 1
        centers, accepted = _lloyd.local_search(X, centers, gen, w, 1, n_trials=4)
        if not accepted:
            break
    out, accepted, (labels, d1, d2) = _lloyd.local_search(
        X,
        start,
        np.random.default_rng(7),
        w,
        20,
        n_trials=4,
        until_no_swap=True,
        return_nearest=True,
    )
    assert accepted >= 1
    np.testing.assert_array_equal(out, centers)
    ref_labels, ref_d1, ref_d2 = _distances.nearest2(X, out)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(d1, ref_d1)
    np.testing.assert_array_equal(d2, ref_d2)
