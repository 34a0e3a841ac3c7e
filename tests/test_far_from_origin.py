"""Guarantees for data far from zero and data whose squares overflow.

Summaries keep their sums relative to an origin near the rows, so the bound ``inertia_`` does
not cancel away; float32 values whose squared distances overflow float32 are computed in
float64, and float64 values whose squared distances overflow are a clear error naming the chunk.
"""

import dask.array as da
import numpy as np
import pytest
from _helpers import nearest, true_cost
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from dask_streamkm import StreamingKMeans, Summary
from dask_streamkm._model_io import ModelFileError
from dask_streamkm._runner import solve_summary
from dask_streamkm.estimator import fitted_solve_seed

SHIFTS = [1e4, 1e5, 1e6, 2e7]


@pytest.fixture(scope="module")
def blobs():
    """Five blobs (spread about 20, noise 1), centered: float64."""
    X, _ = make_blobs(
        n_samples=6000,
        centers=5,
        n_features=4,
        cluster_std=1.0,
        center_box=(-20, 20),
        random_state=0,
    )
    return X - X.mean(axis=0)


def shifted(blobs, shift):
    """The blobs shifted by ``shift`` as float32, and the same float32 rows centered exactly."""
    X = (blobs + shift).astype(np.float32)
    centered = (X.astype(np.float64) - np.float32(shift)).astype(np.float32)
    # The centered copy is the same rows translated (no rounding), so costs compare exactly.
    np.testing.assert_array_equal(centered.astype(np.float64) + np.float32(shift), X)
    return X, centered


def fit(X, **params):
    return StreamingKMeans(5, random_state=0, **params).fit(da.from_array(X, chunks=(2000, -1)))


# ---------------------------------------------------------------------- the summary
def test_group_errors_of_far_rows_do_not_cancel(blobs):
    X, centered = shifted(blobs, 2e7)
    labels = nearest(centered, centered[:5])[0]
    far = Summary.from_points(X, labels=labels, n_groups=5)
    near = Summary.from_points(centered, labels=labels, n_groups=5)
    assert near.origin is None and far.origin is not None
    np.testing.assert_allclose(far.group_sse, near.group_sse, rtol=1e-9)
    np.testing.assert_allclose(far.centroids - np.float32(2e7), near.centroids, atol=1e-6)
    C = near.centroids[:3]
    np.testing.assert_allclose(far.cost_bound(C + np.float32(2e7)), near.cost_bound(C), rtol=1e-9)


def test_rows_near_zero_keep_the_zero_origin_and_their_sums(rng):
    X = rng.normal(size=(300, 3)) + 5.0
    s = Summary.from_points(X, labels=np.arange(300) % 7, n_groups=7)
    assert s.origin is None
    np.testing.assert_allclose(s.linear_sums.sum(0), X.sum(0), rtol=1e-14)
    one = Summary.from_points(X[:1] + 1e9)  # a single row: no spread to judge by
    assert one.origin is None


def test_merge_rebases_summaries_of_different_origins_exactly(rng):
    # Chunks of one data set far from zero (one origin serves rows within about 1e6 x their
    # noise of each other; rows farther apart lose digits of their groups' own errors).
    parts = [rng.normal(size=(200, 3)) + offset for offset in (1e7, 1e7 + 50.0, 1e7 - 30.0)]
    labels = [rng.integers(0, 4, 200) for _ in parts]
    summaries = [
        Summary.from_points(p, labels=lab, n_groups=4) for p, lab in zip(parts, labels, strict=True)
    ]
    assert len({tuple(s.origin) for s in summaries}) == 3
    merged = Summary.merge(*summaries)
    np.testing.assert_allclose(
        merged.centroids, np.concatenate([s.centroids for s in summaries]), rtol=1e-13
    )
    np.testing.assert_allclose(
        merged.group_sse, np.concatenate([s.group_sse for s in summaries]), rtol=1e-6
    )
    X = np.concatenate(parts)
    C = X[rng.choice(len(X), 6, replace=False)]
    assert merged.cost_bound(C) >= true_cost(X, C) * (1 - 1e-12)
    back = merged.rebased(None).rebased(merged.origin)
    np.testing.assert_allclose(back.linear_sums, merged.linear_sums, atol=1e-3)


def test_summary_file_keeps_the_origin_and_reads_version_1(rng, tmp_path):
    X = rng.normal(size=(100, 2)) + 1e8
    s = Summary.from_points(X, labels=np.arange(100) % 5, n_groups=5)
    loaded = Summary.load(s.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(loaded.origin, s.origin)
    np.testing.assert_array_equal(loaded.centroids, s.centroids)
    absolute = s.rebased(None)
    np.savez(
        tmp_path / "v1.npz",
        format_version=np.int64(1),
        weights=absolute.weights,
        linear_sums=absolute.linear_sums,
        square_sums=absolute.square_sums,
        n_seen=np.int64(100),
    )
    old = Summary.load(tmp_path / "v1.npz")
    assert old.origin is None
    np.testing.assert_allclose(old.centroids, s.centroids, rtol=1e-15)


def test_model_file_keeps_the_origin_and_rejects_a_bad_one(blobs, tmp_path):
    X, _ = shifted(blobs, 1e6)
    km = fit(X)
    path = km.save(tmp_path / "m.npz")
    loaded = StreamingKMeans.load(path)
    np.testing.assert_array_equal(loaded.summary_.origin, km.summary_.origin)
    assert loaded.refit().inertia_ == km.refit().inertia_
    with np.load(path) as f:
        arrays = dict(f)
    arrays["summary_origin"] = arrays["summary_origin"][:2]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match="summary_origin has dtype float64 and shape"):
        StreamingKMeans.load(tmp_path / "bad.npz")


# ---------------------------------------------------------------------- the estimator
@pytest.mark.parametrize("shift", SHIFTS)
def test_far_float32_blobs_fit_predict_and_score_as_centered_data(blobs, shift):
    X, centered = shifted(blobs, shift)
    ref = fit(centered)
    km = fit(X)
    X64 = X.astype(np.float64)
    exact = true_cost(X64, km.cluster_centers_)
    ref_cost = true_cost(centered, ref.cluster_centers_)
    if shift <= 1e6:
        assert exact <= 1.01 * ref_cost
    # At 2e7 float32 centers are 2 apart (the noise is 1): the float64 centers of the solve
    # match the centered fit, and the float32 ones cost what the best float32 centers cost.
    C64, _, _ = solve_summary(
        km.summary_, 5, n_init=km._n_init(5), max_iter=300, tol=1e-4, seed=fitted_solve_seed(km)
    )
    assert true_cost(X64, C64) <= 1.01 * ref_cost
    best32 = (ref.cluster_centers_.astype(np.float64) + np.float32(shift)).astype(np.float32)
    assert exact <= 1.01 * true_cost(X64, best32)
    # inertia_, score and evaluate against a float64 computation on the same rows and centers.
    assert km.inertia_ == pytest.approx(exact, rel=1e-4)
    Xd = da.from_array(X, chunks=(2000, -1))
    assert -km.score(Xd) == pytest.approx(exact, rel=1e-4)
    assert km.evaluate(Xd)["ssd"] == pytest.approx(exact, rel=1e-4)
    np.testing.assert_array_equal(km.predict(Xd).compute(), nearest(X64, km.cluster_centers_)[0])


@pytest.mark.parametrize("shift", SHIFTS)
def test_cost_ratio_to_kmeans_far_from_zero_is_the_centered_datas(blobs, shift):
    # The project's cost ratio (ours over scikit-learn's KMeans(n_init=10) on the same rows),
    # far from zero and centered: within 1 %. At 2e7 both answers are float32 centers, and the
    # nearest float32 value to each coordinate of a center is the best float32 center.
    X, centered = shifted(blobs, shift)

    def ratio(rows):
        ours = fit(rows).cluster_centers_
        theirs = KMeans(5, n_init=10, random_state=0).fit(rows).cluster_centers_
        assert ours.dtype == theirs.dtype == np.float32
        rows = rows.astype(np.float64)
        return true_cost(rows, ours) / true_cost(rows, theirs)

    assert ratio(X) == pytest.approx(ratio(centered), rel=0.01)


def test_partial_fit_across_a_jump_keeps_the_bound(blobs):
    km = StreamingKMeans(5, random_state=0)
    first = (blobs[:3000]).astype(np.float32)
    second = (blobs[3000:] + 1e7).astype(np.float32)
    km.partial_fit(first).partial_fit(second)
    X = np.concatenate([first, second]).astype(np.float64)
    assert km.inertia_ >= true_cost(X, km.cluster_centers_) * (1 - 1e-9)
    assert km.inertia_ <= 1.5 * true_cost(X, km.cluster_centers_)


# ---------------------------------------------------------------------- overflow
@pytest.mark.parametrize("scale", [1e20, 1e30])
def test_float32_values_whose_squares_overflow_are_handled_exactly(blobs, scale):
    X = (blobs * (scale / 20)).astype(np.float32)
    km = fit(X)
    assert km.cluster_centers_.dtype == np.float32
    assert np.all(np.isfinite(km.cluster_centers_))
    X64 = X.astype(np.float64)
    labels, dist = nearest(X64, km.cluster_centers_)
    exact = float(dist.sum())
    assert np.isfinite(exact)
    Xd = da.from_array(X, chunks=(2000, -1))
    np.testing.assert_array_equal(km.predict(Xd).compute(), labels)
    assert -km.score(Xd) == pytest.approx(exact, rel=1e-4)
    assert km.inertia_ == pytest.approx(exact, rel=1e-4)
    # The same clustering as the data at scale 1 (the five blobs are found).
    small = fit((blobs / 20).astype(np.float32))
    sizes = np.bincount(small.predict((blobs / 20).astype(np.float32)), minlength=5)
    assert sorted(np.bincount(labels, minlength=5)) == sorted(sizes)
    expected = np.sqrt(((X64[:5, None] - km.cluster_centers_) ** 2).sum(2))
    np.testing.assert_allclose(km.transform(X[:5]), expected, rtol=1e-5)


@pytest.mark.parametrize("power", [-73, 66])  # about 1e-22 and 7e19
@pytest.mark.parametrize("refine_passes", [0, 1])
@pytest.mark.parametrize("n_rows, k", [(1000, 3), (20_000, 20)])  # without and with steps
def test_float32_rows_held_in_memory_whose_squares_overflow_are_handled_exactly(
    power, refine_passes, n_rows, k
):
    # Rows held in memory get Lloyd steps and their last assignment (labels_, the exact
    # inertia_) from the graph's own arrays, and a refinement's groups are scored in X's
    # float type: float32 rows near 1e20 overflowed there (centers at up to 1.07 times the
    # cost, inertia_ 2.2 times it), near 1e-22 underflowed. Scaled by a power of two the rows are
    # the same float32 numbers, so the fit must cost what it costs at scale 1.
    import warnings

    from dask_streamkm import _rows

    X = np.random.default_rng(0).normal(size=(n_rows, 5)).astype(np.float32)
    scale = 2.0**power
    Xs = (X * scale).astype(np.float32)
    assert np.array_equal(Xs.astype(np.float64) / scale, X)
    params = dict(random_state=0, refine_passes=refine_passes)
    base = StreamingKMeans(k, **params).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, underflow or invalid-value warning
        km = StreamingKMeans(k, **params).fit(Xs)
    # The summary of 1,000 rows keeps them all (no steps); of 20,000 it is coarse (steps).
    steps = _rows.polish_steps(n_rows, 5, k, km.summary_.n_groups, km.max_iter)
    assert (steps > 0) == (n_rows == 20_000)
    exact = true_cost(Xs.astype(np.float64), km.cluster_centers_)
    assert np.isfinite(exact) and exact > 0
    assert km.inertia_ == pytest.approx(exact, rel=1e-4)
    assert km.inertia_ / scale**2 == pytest.approx(base.inertia_, rel=1e-4)
    np.testing.assert_allclose(
        km.cluster_centers_ / scale, base.cluster_centers_, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_array_equal(km.labels_, base.labels_)
    np.testing.assert_array_equal(km.predict(Xs), km.labels_)


def test_float64_values_whose_squares_overflow_are_a_clear_error(blobs):
    X = blobs * 1e200
    with pytest.raises(
        ValueError, match=r"too large for float64 in chunk \d \(rows \d+ to \d+\)"
    ) as e:
        fit(X)
    assert "Rescale X" in str(e.value) and "divide it by a constant" in str(e.value)
    km = fit(blobs)
    Xd = da.from_array(np.concatenate([blobs[:2000], X[2000:4000]]), chunks=(2000, -1))
    for method in (km.predict, km.score):
        with pytest.raises(ValueError, match=r"too large for float64 in chunk 1 \(rows 2000"):
            out = method(Xd)
            if hasattr(out, "compute"):
                out.compute()


def test_weights_times_squares_that_overflow_are_a_clear_error(blobs):
    X = blobs * 1e150
    w = np.full(len(X), 1e10)
    with pytest.raises(ValueError, match=r"sample_weight times the squared values of X overflow"):
        StreamingKMeans(5, random_state=0).fit(
            da.from_array(X, chunks=(2000, -1)), sample_weight=da.from_array(w, chunks=2000)
        )


@pytest.mark.parametrize("power", [40, 58])  # 2**58: each distance fits float32, sums do not
def test_seeding_potentials_of_float32_rows_do_not_overflow(blobs, power):
    # The seeding keeps the rows' distances in float32 where each fits and sums them into a
    # candidate's potential; the sum over the rows overflowed near 2**58 and every potential
    # was inf (the first candidate taken at every step). A power of two leaves the float32
    # rows and every distance exact, so the choices must be those of the rows at scale 1.
    from dask_streamkm._distances import distance_dtype, row_norms_sq
    from dask_streamkm._restarts import batched_kmeans_plusplus
    from dask_streamkm._seeding import kmeans_plusplus

    X = (blobs / 20).astype(np.float32)
    Xs = X * np.float32(2.0**power)
    assert distance_dtype(Xs) == np.float32  # each squared distance fits float32
    w = np.ones(X.shape[0])
    for rows in (X, Xs):
        assert np.all(np.isfinite(row_norms_sq(rows)))
    if power == 58:  # a sum of the rows' squared norms is beyond float32's range
        assert np.sum(row_norms_sq(Xs).astype(np.float64)) > np.finfo(np.float32).max

    def seeds(rows):
        one = kmeans_plusplus(rows, 8, np.random.default_rng(1), w, None, 20)
        rngs = [np.random.default_rng(s) for s in (1, 2, 3)]
        return one, batched_kmeans_plusplus(rows, 8, rngs, w, row_norms_sq(rows), 20)

    for got, want in zip(seeds(Xs), seeds(X), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shift", [1e5, 1e6])
def test_two_dense_regions_far_apart_are_solved_in_float64(shift):
    # The solves take the centered points' distances in float32 unless the bulk of them lies
    # far from their mean; with two dense regions far apart the mean lies between them, far
    # from every point, and float32's rounding (about 6,000 at 1e5) swamped the distances
    # that matter (3 per row): fits split the six groups 4-2 between the regions, 3 to 7
    # times KMeans's cost (the numpy fit on draw 2 at 1e5, the stream on draw 0 at 1e6).
    for seed in range(3):
        rng = np.random.default_rng(seed)
        groups = 5.0 * rng.integers(0, 3, size=(30_000, 1))
        X = rng.normal(size=(30_000, 3)) + groups + shift * rng.integers(0, 2, size=(30_000, 1))
        ref = true_cost(X, KMeans(6, n_init=10, random_state=0).fit(X).cluster_centers_)
        km = StreamingKMeans(6, random_state=seed).fit(X)
        assert true_cost(X, km.cluster_centers_) <= 1.01 * ref
        stream = StreamingKMeans(6, random_state=seed)
        for start in range(0, X.shape[0], 2_500):
            stream.partial_fit(X[start : start + 2_500])
        assert true_cost(X, stream.cluster_centers_) <= 1.01 * ref


def test_float32_resolves_compares_the_rounding_with_the_cost():
    from dask_streamkm._distances import float32_resolves

    x_sq = np.full(100, 7.5e9)  # points about 5e4 from their mean, in 3 features
    assert not float32_resolves(x_sq, 3, 3.0)  # rounding about 6,000 against 3 per point
    assert float32_resolves(x_sq, 3, 1e7)
    assert float32_resolves(np.full(100, 3.0), 3, 0.03)  # unit data, a cost of 0.03
    assert float32_resolves(x_sq, 3, 0.0)  # nothing finer to resolve


def test_float32_resolves_a_cost_at_float64s_own_rounding():
    # Rows repeated (a cost of zero, up to float64's rounding) ran the solve again in float64,
    # which put a center 9e-16 off its row: four distinct centers instead of three.
    from dask_streamkm._distances import float32_resolves

    assert float32_resolves(np.full(100, 30.0), 2, 1e-17)
    assert not float32_resolves(np.full(100, 2.25e14), 3, 3.0)  # regions 1e7 apart: real cost
