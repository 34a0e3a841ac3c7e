"""Extreme sample weights, float16 input and float32 far from zero: right answers or a clear error.

The rules: ``inertia_`` stays an upper bound on the exact cost (up to float64 rounding), or the
fit refuses the weights naming the accepted range; scaling every weight by a constant inside
the range changes nothing but rounding; float16 input computes as float64 input does; the
KMeans of ``to_sklearn`` predicts what ``predict`` does.
"""

from __future__ import annotations

import math
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans

from dask_streamkm import SklearnPrecisionWarning, StreamingKMeans
from dask_streamkm.cli import main
from dask_streamkm.summary import MAX_WEIGHT_RATIO, MIN_WEIGHT


def exact_cost(X, centers, sample_weight=None):
    """The weighted cost of X under ``centers``, in float64, summed with ``math.fsum``."""
    X = np.asarray(X, dtype=np.float64)
    C = np.asarray(centers, dtype=np.float64)
    d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
    return math.fsum(w * d)


@pytest.fixture(scope="module")
def mixture():
    rng = np.random.default_rng(0)
    return rng.normal(size=(2000, 4)) + rng.integers(0, 8, size=(2000, 1)) * 3.0


@pytest.fixture(scope="module")
def tight_blobs():
    # Four blobs of spread 1, 1,000 apart: the bound is exact but for rounding, so any
    # rounding that lowers it shows.
    rng = np.random.default_rng(1)
    return rng.normal(size=(8000, 3)) + rng.integers(0, 4, size=(8000, 1)) * 1000.0


# ---------------------------------------------------------------------- heavy rows
@pytest.mark.parametrize("method", ["tree", "stream", "lloyd"])
def test_one_heavy_row_does_not_collapse_the_summary(mixture, method):
    # One row weighted 1e6 among 1,999 unit rows used to make every other group "light": the
    # summary merged into one group and every center sat on that row (68x KMeans' cost).
    w = np.ones(mixture.shape[0])
    w[0] = 1e6
    km = StreamingKMeans(8, method=method, random_state=0).fit(mixture, sample_weight=w)
    assert km.summary_.n_groups > 100
    sk = KMeans(8, n_init=10, random_state=0).fit(mixture, sample_weight=w)
    cost = exact_cost(mixture, km.cluster_centers_, w)
    assert cost <= 1.01 * sk.inertia_
    assert km.inertia_ >= cost * (1 - 1e-9)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_weights_at_the_ratio_edge_keep_inertia_an_upper_bound(tight_blobs, kind):
    w = np.ones(tight_blobs.shape[0])
    w[17] = MAX_WEIGHT_RATIO
    X = tight_blobs if kind == "numpy" else da.from_array(tight_blobs, chunks=(2000, -1))
    km = StreamingKMeans(4, random_state=0, summary_size=20).fit(X, sample_weight=w)
    cost = exact_cost(tight_blobs, km.cluster_centers_, w)
    # Unit weights leave this bound 1e-9 below the float64 cost on these blobs (rounding).
    assert km.inertia_ >= cost * (1 - 1e-7)


@pytest.mark.parametrize("heavy", [1.01 * MAX_WEIGHT_RATIO, 1e16, 1e30])
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_weights_beyond_the_ratio_are_refused(mixture, heavy, kind):
    # 1e16 to 1e30 used to give inertia_ 0.89 to 0.9998 of the exact cost (0.0 for numpy).
    w = np.ones(mixture.shape[0])
    w[5] = heavy
    if kind == "dask":
        X, sw = da.from_array(mixture, chunks=(500, -1)), da.from_array(w, chunks=500)
    else:
        X, sw = mixture, w
    with pytest.raises(ValueError, match="at most 1e\\+06 times the smallest") as info:
        StreamingKMeans(8, random_state=0).fit(X, sample_weight=sw)
    if kind == "dask":
        assert "chunk 0 (rows 0 to 500)" in str(info.value)


def test_weights_below_the_smallest_accepted_are_refused(mixture):
    w = np.full(mixture.shape[0], MIN_WEIGHT / 10)
    with pytest.raises(ValueError, match="should be >= 1e-150.*sample_weight \\* 1e\\+01"):
        StreamingKMeans(8, random_state=0).fit(mixture, sample_weight=w)


def test_score_accepts_any_finite_weights(mixture):
    # The range is a rule of the summary's sums; score sums each row's own cost exactly.
    km = StreamingKMeans(8, random_state=0).fit(mixture)
    w = np.ones(mixture.shape[0])
    w[0] = 1e20
    expected = exact_cost(mixture, km.cluster_centers_, w)
    assert -km.score(mixture, sample_weight=w) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("spread", ["uniform", "lognormal"])
@pytest.mark.parametrize("scale", [MIN_WEIGHT, 1e-100, 1e100, 1e150, 1e200])
def test_scaled_weights_change_only_rounding(mixture, scale, spread):
    # Uniform weights of 1e154 used to overflow ||S||^2 and 1e-200 to underflow it (352x).
    X = da.from_array(mixture, chunks=(500, -1))
    base = np.ones(mixture.shape[0])
    if spread == "lognormal":  # positive weights 1 to 1e6 apart, the widest range accepted
        base = np.exp(np.random.default_rng(3).normal(scale=3.0, size=mixture.shape[0]))
        base = np.clip(base / base.max(), 1 / MAX_WEIGHT_RATIO, None) * MAX_WEIGHT_RATIO
    ref = StreamingKMeans(8, random_state=0).fit(X, sample_weight=base)
    w = da.from_array(base * scale, chunks=500)
    km = StreamingKMeans(8, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-12, atol=1e-12)
    assert km.inertia_ == pytest.approx(scale * ref.inertia_, rel=1e-12)


@pytest.mark.parametrize("power", [-480, 480])
def test_weights_scaled_by_a_power_of_two_give_the_same_fit_of_rows_in_memory(power):
    # The Lloyd steps on float32 rows held in memory summed the weighted rows in float32:
    # weights of 1e-90 or 1e90 (each within the accepted range, 1e6 apart) became 0 or inf
    # there, and the steps left the centers where the solve put them. Scaled by a power of
    # two the weights' sums are the same numbers scaled, so the fit must be the same.
    from dask_streamkm import _rows

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(20_000, 4)) + 6 * rng.integers(0, 30, size=(20_000, 1))).astype(
        np.float32
    )
    w = rng.uniform(1, 100, X.shape[0])
    scale = 2.0**power
    for params in ({}, {"refine_passes": 1}):
        ref = StreamingKMeans(20, random_state=0, **params).fit(X, sample_weight=w)
        steps = _rows.polish_steps(X.shape[0], 4, 20, ref.summary_.n_groups, ref.max_iter)
        assert steps > 0  # the steps on the rows ran
        km = StreamingKMeans(20, random_state=0, **params).fit(X, sample_weight=w * scale)
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
        np.testing.assert_array_equal(km.labels_, ref.labels_)
        assert km.inertia_ == pytest.approx(scale * ref.inertia_, rel=1e-12)


# ---------------------------------------------------------------------- float16
@pytest.fixture(scope="module")
def half():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 3)) + rng.integers(0, 4, size=(3000, 1)) * 5.0
    return X.astype(np.float16)


@pytest.mark.parametrize("refine_passes", [0, 1])
def test_dask_float16_fits_as_float64(half, refine_passes):
    # dask float16 used to fail inside scipy.sparse; it computes as float64, as numpy does.
    kw = dict(random_state=0, refine_passes=refine_passes)
    km = StreamingKMeans(4, **kw).fit(da.from_array(half, chunks=(1000, -1)))
    ref = StreamingKMeans(4, **kw).fit(da.from_array(half.astype(np.float64), chunks=(1000, -1)))
    assert km.cluster_centers_.dtype == np.float64
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_
    assert StreamingKMeans(4, **kw).fit(half).cluster_centers_.dtype == np.float64


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_float16_score_transform_predict_equal_float64(half, kind):
    # dask float16 used to give score 0.8-1.1 % off and transform up to 100 % wrong.
    km = StreamingKMeans(4, random_state=0).fit(half.astype(np.float64))
    X64 = half.astype(np.float64)
    X = half if kind == "numpy" else da.from_array(half, chunks=(1000, -1))
    # The same values in the same chunks: the same sums, in the same order.
    same = X64 if kind == "numpy" else da.from_array(X64, chunks=(1000, -1))
    assert km.score(X) == km.score(same)
    assert km.score(X) == pytest.approx(km.score(X64), rel=1e-12)
    out = km.transform(X)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(out), km.transform(X64))
    np.testing.assert_array_equal(np.asarray(km.predict(X)), km.predict(X64))


def test_cli_fits_a_float16_npy(half, tmp_path, capsys):
    np.save(tmp_path / "x.npy", half)
    assert main(["fit", str(tmp_path / "x.npy"), "--k", "4", "--out", str(tmp_path / "m.npz")]) == 0
    km = StreamingKMeans.load(tmp_path / "m.npz")
    assert km.cluster_centers_.dtype == np.float64
    assert km.inertia_ >= exact_cost(half, km.cluster_centers_) * (1 - 1e-12)


# ---------------------------------------------------------------------- float32 far from zero
def far_blobs(offset, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=20.0, size=(5, 3))
    X = rng.normal(size=(n, 3)) + centers[rng.integers(0, 5, n)]
    return (X + offset).astype(np.float32)


@pytest.mark.parametrize("offset", [1e5, 1e6])
def test_to_sklearn_float64_predicts_like_us_far_from_zero(offset):
    # The float32 KMeans agreed with predict on 63 % of rows at 1e5 and 20-25 % at 1e6:
    # scikit-learn's float32 ||c||^2 - 2 x.c loses the digits. It warns; float64 agrees.
    X = far_blobs(offset)
    km = StreamingKMeans(5, random_state=0).fit(X)
    with pytest.warns(SklearnPrecisionWarning, match="to_sklearn\\(dtype=np.float64\\)"):
        km.to_sklearn()
    sk = km.to_sklearn(dtype=np.float64)
    assert sk.cluster_centers_.dtype == np.float64
    np.testing.assert_array_equal(sk.predict(X.astype(np.float64)), km.predict(X))


def test_to_sklearn_float32_near_zero_is_quiet_and_equal():
    X = far_blobs(0.0)
    km = StreamingKMeans(5, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sk = km.to_sklearn()
    assert sk.cluster_centers_.dtype == np.float32
    np.testing.assert_array_equal(sk.predict(X), km.predict(X))
    with pytest.raises(ValueError, match="dtype='float16' should be None"):
        km.to_sklearn(dtype="float16")


@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("offset", [1e4, 1e5])
def test_refined_float32_inertia_is_an_upper_bound_far_from_zero(offset, kind):
    # refine_passes=1 used to put inertia_ up to 3.2e-5 below the exact cost: float32
    # distances in the pass's cost, and float32 rounding of the refined centers.
    X = far_blobs(offset, seed=0)
    Xi = X if kind == "numpy" else da.from_array(X, chunks=(5000, -1))
    km = StreamingKMeans(5, random_state=0, refine_passes=1).fit(Xi)
    assert km.inertia_ >= exact_cost(X, km.cluster_centers_) * (1 - 1e-12)


def test_to_sklearn_float64_far_from_zero_warns_where_float64_fails():
    # At 1e9 (5e7 times the centers' spread) scikit-learn's float64 distances lose the
    # labels too (70 % agree); no dtype reproduces predict there, so it warns.
    X = far_blobs(0.0).astype(np.float64)
    near = StreamingKMeans(5, random_state=0).fit(X + 1e7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sk = near.to_sklearn()
    np.testing.assert_array_equal(sk.predict(X + 1e7), near.predict(X + 1e7))
    far = StreamingKMeans(5, random_state=0).fit(X + 1e9)
    with pytest.warns(SklearnPrecisionWarning, match="float64 KMeans"):
        far.to_sklearn()
