"""Bad input gets a clear error that names the parameter, the value, the rule and the fix."""

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import dask_streamkm.io
from dask_streamkm import StreamingKMeans


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).normal(size=(300, 3))


def chunked(X, rows=100):
    return da.from_array(X, chunks=(rows, -1))


# ---------------------------------------------------------------------- non-finite values
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_names_the_chunk(X, bad):
    X = X.copy()
    X[250, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or infinity in chunk 2 \(rows 200 to 300\)"):
        StreamingKMeans(2, random_state=0).fit(chunked(X))


def test_non_finite_numpy_input(X):
    X = X.copy()
    X[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity in chunk 0 \(rows 0 to 300\)"):
        StreamingKMeans(2, random_state=0).fit(X)


def test_non_finite_in_partial_fit(X):
    X = X.copy()
    X[150, 0] = np.inf
    km = StreamingKMeans(2, random_state=0).partial_fit(X[:100])
    with pytest.raises(ValueError, match=r"NaN or infinity in chunk 0"):
        km.partial_fit(X[100:])


def test_non_finite_predict_does_not_pass_silently(X):
    km = StreamingKMeans(2, random_state=0).fit(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        km.predict(bad)


# ---------------------------------------------------------------------- shape
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_one_dimensional(kind):
    x = np.arange(10.0)
    x = da.from_array(x, chunks=5) if kind == "dask" else x
    with pytest.raises(ValueError, match=r"(?is)expected (a )?2-?D array.*reshape"):
        StreamingKMeans(2).fit(x)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_three_dimensional(kind):
    x = np.zeros((4, 3, 2))
    x = da.from_array(x, chunks=2) if kind == "dask" else x
    with pytest.raises(ValueError, match=r"(?i)(2-D|dim).*3|3-D|dim 3"):
        StreamingKMeans(2).fit(x)


def test_features_split_across_chunks(X):
    with pytest.raises(ValueError, match=r"split across 2 chunks.*X\.rechunk\(\{1: -1\}\)"):
        StreamingKMeans(2).fit(da.from_array(X, chunks=(100, 2)))


def test_unknown_chunk_sizes(X):
    Xd = chunked(X)
    Xu = Xd[Xd[:, 0] > -100]  # boolean indexing: row chunks become unknown
    assert np.isnan(Xu.shape[0])
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes\(\)"):
        StreamingKMeans(2).fit(Xu)
    # and the fix works
    StreamingKMeans(2, random_state=0).fit(Xu.compute_chunk_sizes())


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_empty_array(kind):
    x = np.zeros((0, 3))
    x = da.from_array(x, chunks=(1, 3)) if kind == "dask" else x
    with pytest.raises(ValueError, match=r"0 sample\(s\).*minimum of 1"):
        StreamingKMeans(2).fit(x)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_zero_features(kind):
    x = np.zeros((5, 0))
    x = da.from_array(x, chunks=(2, 0)) if kind == "dask" else x
    with pytest.raises(ValueError, match=r"0 feature\(s\).*minimum of 1"):
        StreamingKMeans(2).fit(x)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_more_clusters_than_rows(kind):
    x = np.random.default_rng(0).normal(size=(5, 2))
    x = chunked(x, 2) if kind == "dask" else x
    with pytest.raises(ValueError, match=r"n_samples=5 should be >= n_clusters=8"):
        StreamingKMeans(8).fit(x)


def test_more_clusters_than_distinct_rows():
    x = np.repeat([[0.0, 0.0], [1.0, 1.0]], 20, axis=0)
    x[:3] = 5.0  # 3 distinct points over 40 rows
    km = StreamingKMeans(3, random_state=0).fit(x)
    assert len(np.unique(km.cluster_centers_, axis=0)) == 3


def test_more_clusters_than_positive_weight_rows(X):
    w = np.zeros(len(X))
    w[:3] = 1.0
    # As sklearn's KMeans: a ConvergenceWarning and duplicate centers.
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(3\) .* n_clusters \(4\)"):
        km = StreamingKMeans(4, random_state=0).fit(X, sample_weight=w)
    assert len(np.unique(km.cluster_centers_, axis=0)) == 3


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_partial_fit_different_features(X, kind):
    km = StreamingKMeans(2, random_state=0).partial_fit(X)
    other = np.zeros((10, 4))
    other = chunked(other, 5) if kind == "dask" else other
    with pytest.raises(ValueError, match=r"X has 4 features, but StreamingKMeans is expecting 3"):
        km.partial_fit(other)


@pytest.mark.parametrize("method", ["predict", "transform", "score"])
def test_predict_different_features(X, method):
    km = StreamingKMeans(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"X has 2 features, but StreamingKMeans is expecting 3"):
        getattr(km, method)(chunked(X[:, :2]))


# ---------------------------------------------------------------------- sample_weight
def test_negative_sample_weight_numpy(X):
    w = np.ones(len(X))
    w[7] = -1
    with pytest.raises(ValueError, match=r"sample_weight has negative.*>= 0"):
        StreamingKMeans(2).fit(X, sample_weight=w)


def test_negative_sample_weight_dask(X):
    w = np.ones(len(X))
    w[207] = -1
    with pytest.raises(ValueError, match=r"sample_weight has negative.*chunk 2.*>= 0"):
        StreamingKMeans(2, random_state=0).fit(chunked(X), sample_weight=da.from_array(w, 100))


def test_nan_sample_weight(X):
    w = np.ones(len(X))
    w[0] = np.nan
    with pytest.raises(ValueError, match=r"sample_weight has negative, NaN"):
        StreamingKMeans(2).fit(X, sample_weight=w)


def test_all_zero_sample_weight_numpy(X):
    with pytest.raises(ValueError, match=r"sample_weight is zero for every row"):
        StreamingKMeans(2).fit(X, sample_weight=np.zeros(len(X)))


def test_all_zero_sample_weight_dask(X):
    w = da.zeros(len(X), chunks=100)
    with pytest.raises(ValueError, match=r"sample_weight is zero for every row"):
        StreamingKMeans(2, random_state=0).fit(chunked(X), sample_weight=w)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_sample_weight_wrong_length(X, kind):
    w = np.ones(len(X) - 1)
    w = da.from_array(w, chunks=100) if kind == "dask" else w
    with pytest.raises(ValueError, match=r"sample_weight.shape=\(299,\) should be \(300,\)"):
        StreamingKMeans(2).fit(X, sample_weight=w)


def test_zero_row_block_is_skipped(X):
    Xd = da.from_array(X, chunks=((100, 0, 200), (3,)))
    ref = StreamingKMeans(2, random_state=0).fit(da.from_array(X, chunks=((100, 200), (3,))))
    km = StreamingKMeans(2, random_state=0).fit(Xd)
    assert km.n_rows_seen_ == 300
    np.testing.assert_allclose(km.summary_.total_weight, 300)
    assert km.inertia_ <= 1.01 * ref.inertia_


# ---------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_integer_data_is_cast(kind, dtype):
    rng = np.random.default_rng(0)
    Xi = np.concatenate([rng.integers(0, 10, size=(200, 2)), rng.integers(50, 60, size=(200, 2))])
    Xi = Xi.astype(dtype)
    Xf = Xi.astype(np.float64)
    wrap = (lambda a: da.from_array(a, chunks=(150, -1))) if kind == "dask" else (lambda a: a)
    a = StreamingKMeans(2, random_state=0).fit(wrap(Xi))
    b = StreamingKMeans(2, random_state=0).fit(wrap(Xf))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(np.asarray(a.predict(wrap(Xi))), np.asarray(b.predict(wrap(Xf))))


def test_bool_data_is_cast():
    Xb = np.random.default_rng(0).random((100, 4)) > 0.5
    km = StreamingKMeans(2, random_state=0).fit(Xb)
    ref = StreamingKMeans(2, random_state=0).fit(Xb.astype(np.float64))
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def test_complex_data(X):
    with pytest.raises(ValueError, match="(?i)complex"):
        StreamingKMeans(2).fit(chunked(X.astype(np.complex128)))


def test_string_data():
    with pytest.raises(ValueError):
        StreamingKMeans(2).fit(np.array([["a", "b"], ["c", "d"]]))


@pytest.mark.parametrize("kind", ["str", "path", "bytes"])
def test_a_path_names_the_call_that_opens_it(tmp_path, kind):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(20.0).reshape(10, 2))
    X = {"str": str(path), "path": path, "bytes": str(path).encode()}[kind]
    with pytest.raises(ValueError, match=r"X is a path.*dask_streamkm\.io\.open_array"):
        StreamingKMeans(2).fit(X)
    model = StreamingKMeans(2, random_state=0).fit(np.load(path))
    for method in (model.predict, model.transform, model.score, model.partial_fit):
        with pytest.raises(ValueError, match=r"X is a path"):
            method(X)
    # The call the message names reads it.
    opened = dask_streamkm.io.open_array(str(path))
    assert StreamingKMeans(2, random_state=0).fit(opened).n_rows_seen_ == 10


# ---------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_clusters": 0}, r"n_clusters=0 should be an integer >= 1"),
        ({"n_clusters": 2.5}, r"n_clusters=2.5 should be an integer >= 1"),
        ({"n_clusters": True}, r"n_clusters=True should be an integer"),
        ({"method": "x"}, r"method='x' should be one of \('tree', 'stream', 'lloyd'\)"),
        ({"split_every": 1}, r"split_every=1 should be an integer >= 2"),
        ({"mini_batch_size": 0}, r"mini_batch_size=0 should be an integer >= 1"),
        ({"n_init": 0}, r'n_init=0 should be "auto" or an integer >= 1'),
        ({"max_iter": -1}, r"max_iter=-1 should be an integer >= 1"),
        ({"tol": -1.0}, r"tol=-1.0 should be a number >= 0"),
        ({"tol": "a"}, r"tol='a' should be a number >= 0"),
        ({"half_life": 0}, r"half_life=0 should be None or a number > 0"),
        ({"half_life": -5.0}, r"half_life=-5.0 should be None or a number > 0"),
        ({"summary_size": 1}, r'summary_size=1 should be "auto" or an integer >= 2'),
        ({"summary_size": "big"}, r"summary_size='big' should be \"auto\" or an integer"),
        ({"merge_budget": 1}, r'merge_budget=1 should be "auto" or an integer >= 2'),
        ({"random_state": "seed"}, r"random_state='seed' should be None, an int"),
    ],
)
def test_bad_parameters(X, params, match):
    params = {"n_clusters": 2, **params}
    with pytest.raises(ValueError, match=match):
        StreamingKMeans(**params).fit(X)


def test_bad_parameters_in_partial_fit(X):
    with pytest.raises(ValueError, match=r"method='x' should be one of"):
        StreamingKMeans(2, method="x").partial_fit(X)


def test_refit_bad_n_clusters(X):
    km = StreamingKMeans(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"n_clusters=0 should be an integer >= 1"):
        km.refit(n_clusters=0)


def test_predict_before_fit(X):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        StreamingKMeans(2).predict(X)


def test_few_distinct_rows_in_a_large_chunk():
    X = np.repeat(np.eye(5) * 10, 400, axis=0)  # 2000 rows, 5 distinct: beyond one summary
    km = StreamingKMeans(5, random_state=0).fit(X)
    np.testing.assert_allclose(np.sort(km.cluster_centers_.max(axis=1)), [10.0] * 5)
    assert km.inertia_ < 1e-9
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(5\)"):
        StreamingKMeans(6, random_state=0).fit(X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": -5}, r"n_samples=-5 should be an integer >= 0"),  # was 99,995 rows
        ({"chunks": 0}, r"chunks=0 should be an integer >= 1"),  # was a ZeroDivisionError
        ({"n_components": 0}, r"n_components=0 should be an integer >= 1"),
        ({"n_features": 0}, r"n_features=0 should be an integer >= 1"),
        ({"n_samples": 10.5}, r"n_samples=10.5 should be an integer"),
    ],
)
def test_make_mixture_sizes_name_the_parameter(kwargs, match):
    from dask_streamkm.datasets import make_mixture

    args = {"n_samples": 100, "n_features": 3, "n_components": 2, "chunks": 50, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_mixture(**args)
    assert make_mixture(0, 3, 2, chunks=50).shape == (0, 3)
