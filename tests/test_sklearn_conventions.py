"""scikit-learn conventions, each checked against KMeans / MiniBatchKMeans."""

import inspect
import re
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning

from dask_streamkm import StreamingKMeans


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [20.0, 0.0, 0.0], [0.0, 20.0, 0.0]])
    return centers[rng.integers(0, 3, 600)] + rng.normal(size=(600, 3))


# ---------------------------------------------------------------------- 1. dtypes
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_float32_in_float32_out_as_kmeans(X, kind):
    X32 = X.astype(np.float32)
    data = X32 if kind == "numpy" else da.from_array(X32, chunks=(200, -1))
    km = StreamingKMeans(3, random_state=0).fit(data)
    ref = KMeans(3, n_init=1, random_state=0).fit(X32)
    assert km.cluster_centers_.dtype == ref.cluster_centers_.dtype == np.float32
    assert np.asarray(km.transform(data)).dtype == ref.transform(X32).dtype == np.float32
    assert np.asarray(km.labels_).dtype == ref.labels_.dtype == np.int32
    assert np.asarray(km.predict(data)).dtype == ref.predict(X32).dtype == np.int32
    assert np.asarray(km.fit_predict(data)).dtype == np.int32
    # The summary's sums stay float64 inside.
    assert km.summary_.linear_sums.dtype == np.float64
    assert km.summary_.weights.dtype == np.float64


def test_float64_and_int_input_stay_float64(X):
    km = StreamingKMeans(3, random_state=0).fit(X)
    assert km.cluster_centers_.dtype == np.float64
    assert km.transform(X).dtype == np.float64
    km = StreamingKMeans(3, random_state=0).fit(np.rint(X).astype(np.int64))
    assert km.cluster_centers_.dtype == np.float64
    assert km.transform(np.rint(X).astype(np.int64)).dtype == np.float64


def test_partial_fit_and_refit_keep_the_first_dtype(X):
    X32 = X.astype(np.float32)
    km = StreamingKMeans(3, random_state=0).partial_fit(X32[:300])
    km.partial_fit(X32[300:])
    assert km.cluster_centers_.dtype == np.float32
    assert km.refit(n_clusters=2).cluster_centers_.dtype == np.float32


def test_to_sklearn_predicts_float32_input(X):
    X32 = X.astype(np.float32)
    km = StreamingKMeans(3, random_state=0).fit(X32)
    sk = km.to_sklearn()
    np.testing.assert_array_equal(sk.predict(X32), km.predict(X32))
    assert sk.predict(X32).dtype == np.int32


# ------------------------------------------------------------------ 2. labels_ after partial_fit
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_labels_after_partial_fit_are_the_batch_s(X, kind):
    def as_input(a):
        return a if kind == "numpy" else da.from_array(a, chunks=(100, -1))

    km = StreamingKMeans(3, random_state=0).fit(X)
    mb = MiniBatchKMeans(3, random_state=0, n_init=1).fit(X)
    batch = X[100:250]
    km.partial_fit(as_input(batch))
    mb.partial_fit(batch)
    labels = np.asarray(km.labels_)
    assert labels.shape == mb.labels_.shape == (150,)
    np.testing.assert_array_equal(labels, np.asarray(km.predict(batch)))
    # The first call sets them too.
    first = StreamingKMeans(3, random_state=0).partial_fit(as_input(X[:200]))
    np.testing.assert_array_equal(np.asarray(first.labels_), first.predict(X[:200]))


# ---------------------------------------------------------------------- 3. few distinct rows
FEW = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 1.0]]), 40, axis=0)


@pytest.mark.parametrize(
    "form",
    ["numpy", "dask one chunk", "dask chunks of 7", "dask chunks of 60", "zarr", "partial_fit"],
)
def test_fewer_distinct_rows_than_clusters_warns_and_repeats_centers(form, tmp_path):
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(3\)"):
        KMeans(5, n_init=1, random_state=0).fit(FEW)  # the behaviour to follow
    km = StreamingKMeans(5, random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(3\) .* n_clusters \(5\)"):
        if form == "numpy":
            km.fit(FEW)
        elif form == "partial_fit":
            km.partial_fit(FEW[::2]).partial_fit(FEW[1::2])
        elif form == "zarr":
            zarr = pytest.importorskip("zarr")
            km.fit(zarr.create_array(tmp_path / "few.zarr", data=FEW, chunks=(25, 2)))
        else:
            rows = {"dask one chunk": -1, "dask chunks of 7": 7, "dask chunks of 60": 60}[form]
            km.fit(da.from_array(FEW, chunks=(rows, -1)))
    assert km.cluster_centers_.shape == (5, 2)
    np.testing.assert_allclose(
        np.unique(km.cluster_centers_, axis=0), np.unique(FEW, axis=0), atol=1e-6
    )
    assert km.inertia_ < 1e-9


def test_enough_distinct_rows_do_not_warn(X):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        StreamingKMeans(3, random_state=0).fit(X)


# ---------------------------------------------------------------------- 4. feature names out
def test_feature_names_out_and_pandas_output_in_a_pipeline(X):
    pd = pytest.importorskip("pandas")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    df = pd.DataFrame(X, columns=["a", "b", "c"])
    pipe = make_pipeline(StandardScaler(), StreamingKMeans(3, random_state=0))
    pipe.set_output(transform="pandas")
    out = pipe.fit_transform(df)
    names = ["streamingkmeans0", "streamingkmeans1", "streamingkmeans2"]
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == names
    assert list(pipe.get_feature_names_out()) == names
    ref = make_pipeline(StandardScaler(), KMeans(3, n_init=1, random_state=0)).fit(df)
    assert list(ref.get_feature_names_out()) == [n.replace("streaming", "") for n in names]


def test_feature_names_out_needs_a_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        StreamingKMeans(2).get_feature_names_out()


# ---------------------------------------------------------------------- 6. parameters re-checked
def test_partial_fit_rechecks_parameters_after_set_params(X):
    km = StreamingKMeans(3, random_state=0).partial_fit(X[:200])
    km.set_params(max_iter=0)
    with pytest.raises(ValueError, match=r"max_iter=0 should be an integer >= 1"):
        km.partial_fit(X[200:400])
    # (MiniBatchKMeans validates only its first partial_fit; here every call is checked.)
    km.set_params(max_iter=5)
    km.partial_fit(X[200:400])
    assert km.n_rows_seen_ == 400


@pytest.mark.parametrize(
    "params",
    [{"n_clusters": 0}, {"n_init": -1}, {"tol": float("nan")}, {"random_state": -1}],
    ids=["n_clusters", "n_init", "tol", "random_state"],
)
def test_refit_with_a_rejected_value_leaves_parameters_unchanged(X, params):
    km = StreamingKMeans(3, random_state=0).fit(X)
    before = km.get_params()
    centers = km.cluster_centers_.copy()
    name = next(iter(params))
    with pytest.raises(ValueError, match=rf"{name}="):
        km.refit(**params)
    assert km.get_params() == before
    np.testing.assert_array_equal(km.cluster_centers_, centers)


# ---------------------------------------------------------------------- 7. docstrings
PUBLIC_METHODS = [
    "fit",
    "partial_fit",
    "refit",
    "predict",
    "transform",
    "fit_predict",
    "score",
    "save",
    "load",
    "to_sklearn",
    "from_sagemaker",
    "evaluate",
]


@pytest.mark.parametrize("name", PUBLIC_METHODS)
def test_public_methods_have_numpydoc_sections(name):
    doc = inspect.getdoc(getattr(StreamingKMeans, name))
    assert doc and "Returns\n-------" in doc
    params = [
        p for p in inspect.signature(getattr(StreamingKMeans, name)).parameters if p != "self"
    ]
    if params:
        assert "Parameters\n----------" in doc
        for p in params:
            assert re.search(rf"^\*{{0,2}}{p}\b", doc, re.M), f"{name}: {p} not documented"


def test_every_fitted_attribute_is_documented(X):
    km = StreamingKMeans(3, random_state=0).fit(X)
    doc = inspect.getdoc(StreamingKMeans).split("Attributes\n----------")[1]
    fitted = [a for a in vars(km) if a.endswith("_") and not a.startswith("_")]
    assert {"fit_seconds_", "solve_seconds_", "cluster_centers_", "labels_"} <= set(fitted)
    for attr in fitted:
        assert re.search(rf"^{attr} :", doc, re.M), f"{attr} is not in the Attributes section"
