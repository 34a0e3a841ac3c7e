"""Guarantees of the estimator on hostile input.

One test per case: each failed before its fix (NaN centers, NaN scores, deep errors).
"""

import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm.estimator import HalfLifeDecayWarning


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    return centers[rng.integers(0, 3, 21_000)] + rng.normal(size=(21_000, 2))


# ---------------------------------------------------------------------- 12.2 half_life
def test_half_life_decay_underflow_gives_finite_centers(X):
    km = StreamingKMeans(3, half_life=10, random_state=0).partial_fit(X[:1000])
    # 2 ** (-20000 / 10) underflows float64: the older groups are dropped with a warning.
    with pytest.warns(HalfLifeDecayWarning, match=r"half_life=10: \d+ group\(s\)"):
        km.partial_fit(X[1000:])
    assert np.all(np.isfinite(km.cluster_centers_))
    assert np.isfinite(km.inertia_)
    assert np.all(np.isfinite(km.summary_.centroids))
    labels = km.predict(X[1000:])
    assert len(np.unique(labels)) == 3
    ref = StreamingKMeans(3, random_state=0).fit(X[1000:])
    assert km.score(X[1000:]) >= 1.01 * ref.score(X[1000:])  # scores are negative


def test_half_life_decay_far_below_the_smallest_float_keeps_heavy_groups():
    from dask_streamkm.estimator import decay
    from dask_streamkm.summary import Summary

    s = Summary(np.array([1e300, 1.0]), np.array([[1e300], [1.0]]), np.array([1e300, 1.0]), 2)
    # factor 2 ** -1100 (below the smallest subnormal): 1e300 * factor is about 7e-32.
    out, dropped = decay(s, 1100, 1.0)
    assert dropped == 1 and out.n_groups == 1
    np.testing.assert_allclose(out.weights, [1e300 * 2.0**-550 * 2.0**-550], rtol=1e-12)
    np.testing.assert_allclose(out.centroids, [[1.0]], rtol=1e-12)


def test_half_life_mild_decay_is_the_plain_factor(X):
    km = StreamingKMeans(3, half_life=5000, random_state=0).partial_fit(X[:1000])
    before = km.summary_.total_weight
    km.partial_fit(X[1000:2000])
    np.testing.assert_allclose(km.summary_.total_weight, before * 2.0 ** (-1000 / 5000) + 1000)


@pytest.mark.parametrize("name", ["half_life", "tol"])
def test_half_life_and_tol_nan_are_rejected(X, name):
    with pytest.raises(ValueError, match=rf"{name}=nan should be"):
        StreamingKMeans(3, **{name: float("nan")}).fit(X[:100])


# ---------------------------------------------------------------------- 12.5 dask sample_weight
def _weights(kind, n):
    w = np.ones(n)
    if kind == "nan":
        w[5] = np.nan
    elif kind == "zero":
        w[:] = 0.0
    elif kind == "negative":
        w[7] = -1.0
    elif kind == "object":
        w = w.astype(object)
    return w


@pytest.mark.parametrize("method", ["score", "evaluate"])
@pytest.mark.parametrize("kind", ["nan", "zero", "negative", "object"])
def test_score_and_evaluate_reject_bad_dask_weights_as_numpy(X, method, kind):
    km = StreamingKMeans(3, random_state=0).fit(X[:1000])
    Xd = da.from_array(X[:1000], chunks=(250, -1))
    w = _weights(kind, 1000)
    match = {
        "nan": r"sample_weight has negative, NaN or infinite values",
        "negative": r"sample_weight has negative, NaN or infinite values",
        "zero": r"sample_weight is zero for every row",
        "object": r"sample_weight has dtype object; it should hold numbers",
    }[kind]
    for weights in (w, da.from_array(w, chunks=250)):
        with pytest.raises(ValueError, match=match):
            getattr(km, method)(Xd, sample_weight=weights)


def test_dask_weight_errors_name_the_chunk(X):
    km = StreamingKMeans(3, random_state=0).fit(X[:1000])
    w = _weights("nan", 1000)
    w[600] = np.nan
    w[5] = 1.0
    with pytest.raises(ValueError, match=r"chunk 2 \(rows 500 to 750\)"):
        km.score(da.from_array(X[:1000], chunks=(250, -1)), sample_weight=da.from_array(w, 250))


def test_good_dask_weights_match_numpy_weights(X):
    km = StreamingKMeans(3, random_state=0).fit(X[:1000])
    w = np.random.default_rng(1).random(1000)
    Xd = da.from_array(X[:1000], chunks=(250, -1))
    expected = km.score(X[:1000], sample_weight=w)
    np.testing.assert_allclose(km.score(Xd, sample_weight=da.from_array(w, 300)), expected)
    metrics = km.evaluate(Xd, sample_weight=da.from_array(w, 250))
    np.testing.assert_allclose(metrics["ssd"], -expected)
    np.testing.assert_allclose(metrics["msd"], -expected / w.sum())


# ---------------------------------------------------------------------- 12.10 parameter messages
def test_negative_random_state_names_the_parameter(X):
    with pytest.raises(ValueError, match=r"random_state=-1 should be None, an int >= 0"):
        StreamingKMeans(3, random_state=-1).fit(X[:100])
    with pytest.raises(ValueError, match=r"random_state=-1 should be None, an int >= 0"):
        StreamingKMeans(3, random_state=-1).partial_fit(X[:100])


def test_partial_fit_after_set_params_n_clusters_0(X):
    km = StreamingKMeans(3, random_state=0).partial_fit(X[:100])
    km.set_params(n_clusters=0)
    with pytest.raises(ValueError, match=r"n_clusters=0 should be an integer >= 1"):
        km.partial_fit(X[100:200])


def test_partial_fit_after_set_params_n_clusters_other_number(X):
    km = StreamingKMeans(3, random_state=0).partial_fit(X[:100])
    km.set_params(n_clusters=5)
    # It folded into the 3 centers until a solve for 5 failed on their shapes (numpy's
    # "operands could not be broadcast").
    with pytest.raises(ValueError, match=r"n_clusters=5 but this model holds 3 centers .*refit"):
        km.partial_fit(X[100:200])
    assert km.refit().partial_fit(X[100:200]).cluster_centers_.shape == (5, X.shape[1])


def _lying_chunks(n=4_000, d=3, chunk=1_000, cols=False):
    """A dask array whose chunk 2 holds fewer rows (or, with ``cols``, another column count)
    than its declared chunks: what map_blocks makes when its function changes the shape."""
    X = da.from_array(
        np.random.default_rng(0).normal(size=(n, d)), chunks=(chunk, d), name="lying-source"
    )

    def drop(block, block_info=None):
        if block_info[0]["chunk-location"][0] != 2:
            return block
        return block[:, :-1] if cols else block[:-5]

    return X.map_blocks(drop, dtype=X.dtype)


def test_a_chunk_of_other_rows_than_declared_is_refused_everywhere():
    # Rows dropped inside one block with the chunks left as declared: every later row's
    # label would shift by five, and the fit would count 3,995 rows, without an error.
    X = _lying_chunks()
    with pytest.raises(ValueError, match=r"chunk 2 of the array holds 995 rows where its chunks"):
        StreamingKMeans(3, random_state=0).fit(X)
    good = np.random.default_rng(1).normal(size=(500, 3))
    km = StreamingKMeans(3, random_state=0).fit(good)
    for call in (km.predict, km.transform, km.score):
        with pytest.raises(ValueError, match="holds 995 rows where its chunks declare 1000"):
            out = call(X)
            if hasattr(out, "compute"):
                out.compute()
    with pytest.raises(ValueError, match="holds 995 rows"):
        km.partial_fit(X)
    with pytest.raises(ValueError, match="holds 995 rows"):
        StreamingKMeans(3, random_state=0, refine_passes=1).fit(X)


def test_a_chunk_of_other_columns_than_the_model_is_refused():
    km = StreamingKMeans(3, random_state=0).fit(np.random.default_rng(1).normal(size=(500, 3)))
    with pytest.raises(ValueError, match="chunk 2 of the array holds 2 columns where the model"):
        km.predict(_lying_chunks(cols=True)).compute()
