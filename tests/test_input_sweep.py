"""Unusual but legitimate inputs to the public estimator: streams of single rows, and others
found by sweeping the inputs a demanding user or another project's test-suite passes."""

import warnings

import dask.array as da
import numpy as np
import pytest
from _helpers import true_cost
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from dask_streamkm import StreamingKMeans


@pytest.fixture(scope="module")
def blobs():
    X, _ = make_blobs(n_samples=3_000, centers=5, n_features=4, random_state=0)
    return X


# ---------------------------------------------------------------------- streams of one row
@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(lambda row: row, id="numpy"),
        pytest.param(lambda row: np.repeat(row, 3, axis=0), id="equal-rows"),
        pytest.param(lambda row: da.from_array(row, chunks=(1, -1)), id="dask"),
    ],
)
def test_batches_of_one_row_are_folded_not_solved_again(blobs, batch):
    # A batch of one row (or of equal rows) has no spread of its own: it was judged far from
    # the summary's origin, so each call summarized it as a chunk and solved in full (62 ms a
    # call instead of 0.4 ms at k=10), and the summary grew by a group a row.
    km = StreamingKMeans(5, random_state=0).fit(blobs[:2_000])
    solved, groups = km.solve_seconds_, km.summary_.n_groups
    batches = [batch(blobs[i : i + 1]) for i in range(2_000, 2_040)]
    for X in batches:
        km.partial_fit(X)
    assert km.solve_seconds_ == solved  # no global solve: the rows were folded
    assert km.summary_.n_groups <= groups + 40
    rows = np.concatenate([blobs[:2_000]] + [np.asarray(X) for X in batches])
    assert km.inertia_ >= true_cost(rows, km.cluster_centers_) * (1 - 1e-9)


def test_a_single_row_far_from_the_data_is_still_summarized_with_its_own_origin(blobs):
    km = StreamingKMeans(5, random_state=0).fit(blobs[:2_000])
    solved = km.solve_seconds_
    far = blobs[2_000:2_001] + 1e9
    km.partial_fit(far)
    assert km.solve_seconds_ != solved  # summarized and solved, as a first batch
    rows = np.concatenate([blobs[:2_000], far])
    assert km.inertia_ >= true_cost(rows, km.cluster_centers_) * (1 - 1e-9)


# ---------------------------------------------------------------------- weights
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("offset", [0.0, 1e9], ids=["near", "far"])
def test_a_later_batch_of_dask_weights_all_zero_is_refused_as_numpy_weights_are(
    blobs, metric, offset
):
    # Numpy weights all zero were refused; dask weights (checked in their tasks) crashed the
    # fold with an IndexError, or, for cosine, were merged silently.
    km = StreamingKMeans(5, random_state=0, metric=metric).partial_fit(blobs[:1_000])
    seen, centers = km.n_rows_seen_, km.cluster_centers_.copy()
    X = da.from_array(blobs[1_000:1_300] + offset, chunks=100)
    with pytest.raises(ValueError, match="sample_weight is zero for every row of the batch"):
        km.partial_fit(X, sample_weight=da.zeros(300, chunks=100))
    assert km.n_rows_seen_ == seen
    np.testing.assert_array_equal(km.cluster_centers_, centers)
    with pytest.raises(ValueError, match="sample_weight is zero for every row"):
        km.partial_fit(blobs[1_000:1_300], sample_weight=np.zeros(300))


# ---------------------------------------------------------------------- few distinct rows
@pytest.mark.parametrize("rows", [np.ones((30, 2)), np.repeat(np.eye(2), 10, axis=0)])
def test_refinement_of_fewer_distinct_rows_than_clusters(rows):
    # The refinement's Lloyd run re-seeds each empty center at a row of its own: with fewer
    # groups than empty centers it raised "The weights and list don't have the same length".
    with pytest.warns(ConvergenceWarning):
        km = StreamingKMeans(5, refine_passes=2, random_state=0).fit(rows)
    assert km.inertia_ == 0.0
    np.testing.assert_array_equal(np.unique(km.cluster_centers_, axis=0), np.unique(rows, axis=0))
    assert km.cluster_sizes_.sum() == rows.shape[0]
    np.testing.assert_array_equal(km.predict(rows), km.labels_)


# ---------------------------------------------------------------------- tables
def test_a_table_of_no_numeric_column_is_told_to_convert_not_to_select_none():
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    # Numbers in object columns: pandas frames are converted as scikit-learn converts them;
    # dask reads them as strings. The message suggested selecting X[[]].
    frame = dd.from_pandas(pd.DataFrame(np.ones((10, 2)), columns=["a", "b"]).astype(str), 2)
    with pytest.raises(ValueError, match=r"no numeric columns: 'a' .*X\.astype\(float\)") as err:
        StreamingKMeans(2).fit(frame)
    assert "X[[]]" not in str(err.value)


def test_a_pandas_frame_of_no_columns_is_a_clear_error():
    pd = pytest.importorskip("pandas")
    # pandas' conversion failed in numpy: "at least one array or dtype is required".
    frame = pd.DataFrame(np.ones((10, 2)), columns=["a", "b"]).iloc[:, :0]
    with pytest.raises(ValueError, match=r"0 feature\(s\) \(shape=\(10, 0\)\).*minimum of 1"):
        StreamingKMeans(2).fit(frame)


def test_labels_of_a_folded_batch_are_in_the_input_s_container():
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    xr = pytest.importorskip("xarray")
    X = np.random.default_rng(0).normal(size=(300, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"], index=np.arange(300) * 2)
    # A batch folded into the running summary had plain (dask) arrays as labels_, where fit
    # and the first partial_fit give a dask Series or a DataArray, as predict does.
    batches = {
        "dask": (dd.from_pandas(frame, npartitions=3), dd.Series),
        "xarray": (xr.DataArray(X, dims=("sample", "feature")).chunk({"sample": 100}), None),
        "xarray-numpy": (xr.DataArray(X, dims=("sample", "feature")), None),
    }
    for name, (batch, kind) in batches.items():
        km = StreamingKMeans(3, random_state=0).partial_fit(batch)
        km.partial_fit(batch)
        labels, predicted = km.labels_, km.predict(batch)
        assert type(labels) is type(predicted), name
        if kind is dd.Series:
            pd.testing.assert_index_equal(labels.compute().index, frame.index)
        else:
            assert labels.dims == ("sample",)
        np.testing.assert_array_equal(np.asarray(labels), np.asarray(predicted))


# ---------------------------------------------------------------------- other namespaces
def test_an_array_api_array_is_read_as_numpy_as_scikit_learn_reads_it(blobs):
    xps = pytest.importorskip("array_api_strict")
    # dask refused its dtype ("Cannot interpret 'array_api_strict.float64' as a data type").
    X = blobs[:600].astype(np.float32)
    A = xps.asarray(X)
    km = StreamingKMeans(5, random_state=0).fit(A)
    ref = StreamingKMeans(5, random_state=0).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.cluster_centers_.dtype == np.float32
    np.testing.assert_array_equal(km.predict(A), ref.labels_)
    np.testing.assert_array_equal(km.transform(A), ref.transform(X))
    assert km.score(A) == ref.score(X)
    km.partial_fit(A)
    assert km.n_rows_seen_ == 1_200


@pytest.mark.parametrize(
    "dtype, fix",
    [(np.complex128, r"X\.real or abs\(X\)"), (object, r"X\.astype\(float\)"), ("U8", "astype")],
)
def test_dask_arrays_of_other_dtypes_are_told_how_to_convert(dtype, fix):
    X = da.from_array(np.ones((10, 2)).astype(dtype), chunks=5)
    # The messages named the dtype but no fix ("Complex data not supported.").
    with pytest.raises(ValueError, match=fix):
        StreamingKMeans(2).fit(X)


def test_dask_weights_of_unknown_chunk_sizes_are_told_to_compute_them(blobs):
    w = da.from_array(np.ones(len(blobs)), chunks=1_000)
    w = w[w > 0]  # unknown chunk sizes: it said "sample_weight.shape=(nan,) should be (3000,)"
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes\(\)"):
        StreamingKMeans(5).fit(da.from_array(blobs, chunks=1_000), sample_weight=w)
    km = StreamingKMeans(5, random_state=0).fit(blobs)
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes\(\)"):
        km.score(blobs, sample_weight=w)


def test_polars_output_without_polars_says_how_to_get_it(blobs):
    try:
        import polars  # noqa: F401

        pytest.skip("polars is installed")
    except ImportError:
        pass
    km = StreamingKMeans(5, random_state=0).fit(blobs).set_output(transform="polars")
    # It raised "No module named 'polars'" from inside the transform.
    with pytest.raises(ImportError, match=r"needs polars.*pip install polars"):
        km.transform(blobs)


# ---------------------------------------------------------------------- one row far away
def blobs_and_an_outlier(offset, dtype, n=300):
    rng = np.random.default_rng(0)
    corners = ([0, 0, 0], [10, 0, 0], [0, 10, 0])
    X = np.concatenate([rng.normal(size=(n // 3, 3)) + c for c in corners])
    return np.vstack([X, X[:1] + offset]).astype(dtype)


def exact_nearest(X, centers):
    d = ((X.astype(np.float64)[:, None] - centers.astype(np.float64)[None]) ** 2).sum(axis=2)
    return d.argmin(axis=1), float(d.min(axis=1).sum())


@pytest.mark.parametrize("dtype, offset", [(np.float32, 1e5), (np.float64, 1e12)])
def test_predict_and_score_of_a_center_far_from_the_others(dtype, offset):
    # Centers of three blobs and of one outlier row: distances were taken relative to the
    # centers' mean, pulled far from the blobs by the outlier's center, and the expansion's
    # rounding there swamped them (float32: 1126 of 3001 rows given a wrong center, score
    # 8 times the cost; scikit-learn's KMeans predicts all of them right).
    X = blobs_and_an_outlier(offset, dtype, n=3_000)
    km = StreamingKMeans(4, random_state=0).fit(X)
    labels, cost = exact_nearest(X, km.cluster_centers_)
    np.testing.assert_array_equal(km.predict(X), labels)
    # float32 rows and centers are scored in float32, as scikit-learn scores them.
    assert -km.score(X) == pytest.approx(cost, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert km.inertia_ >= cost * (1 - 1e-9)


@pytest.mark.parametrize("offset", [1e9, 1e12])
@pytest.mark.parametrize("fit", ["fit", "partial_fit"])
def test_an_outlier_row_far_away_gets_its_own_center_and_the_blobs_theirs(offset, fit):
    # The solve centered the groups at their mean, pulled to the outlier, and took them in
    # float32, which kept none of the blobs' structure: two centers on the outlier and a
    # ConvergenceWarning about duplicate points (301 distinct rows), 2.6 to 150,000 times the
    # cost of the blobs' own centers.
    X = blobs_and_an_outlier(offset, np.float64)
    km = StreamingKMeans(4, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        if fit == "fit":
            km.fit(X)
        else:
            km.partial_fit(X[:-1]).partial_fit(X[-1:])
    _, cost = exact_nearest(X, km.cluster_centers_)
    blob_centers = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], dtype=float)
    _, blobs_cost = exact_nearest(X[:-1], blob_centers)
    assert cost <= 1.1 * blobs_cost
    assert len(np.unique(km.cluster_centers_, axis=0)) == 4
