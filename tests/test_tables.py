"""Tables and labelled arrays in and out: dask and pandas DataFrames, Parquet, xarray."""

import warnings

import dask
import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm.io import dataset_to_array, stack_samples

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")
xr = pytest.importorskip("xarray")

COLUMNS = ["a", "b", "c"]


@pytest.fixture
def frame(rng):
    centers = rng.normal(scale=10.0, size=(3, 3))
    data = centers[rng.integers(0, 3, 1200)] + rng.standard_normal((1200, 3))
    return pd.DataFrame(data, columns=COLUMNS, index=np.arange(1200) * 2 + 7)


@pytest.fixture
def ddf(frame):
    return dd.from_pandas(frame, npartitions=4)


def _lengths(ddf):
    return tuple(int(n) for n in ddf.map_partitions(len).compute())


def test_dask_dataframe_fits_as_the_same_dask_array_and_keeps_its_names(ddf, frame):
    km = StreamingKMeans(3, random_state=0).fit(ddf)
    X = da.from_array(frame.to_numpy(), chunks=(_lengths(ddf), 3))
    ref = StreamingKMeans(3, random_state=0).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.feature_names_in_.tolist() == COLUMNS and km.n_features_in_ == 3
    # labels_ and predict: lazy dask Series aligned with the input's partitions and index
    for labels in (km.labels_, km.predict(ddf), km.fit_predict(ddf)):
        assert isinstance(labels, dd.Series)
        assert labels.npartitions == ddf.npartitions and labels.divisions == ddf.divisions
        computed = labels.compute()
        assert computed.index.equals(frame.index)
        np.testing.assert_array_equal(computed.to_numpy(), ref.predict(X).compute())
    assert km.score(ddf) == pytest.approx(ref.score(X), rel=1e-12)


def test_dask_dataframe_transform_is_a_lazy_frame_of_the_output_names(ddf, frame):
    km = StreamingKMeans(3, random_state=0).fit(ddf)
    names = km.get_feature_names_out().tolist()
    expected = km.transform(frame)
    for output in ("default", "pandas"):
        out = km.set_output(transform=output).transform(ddf)
        assert isinstance(out, dd.DataFrame) and list(out.columns) == names
        assert out.npartitions == ddf.npartitions
        computed = out.compute()
        assert computed.index.equals(frame.index)
        # The same numbers up to the expansion's rounding (||x||^2 - 2 x.c + ||c||^2 in other
        # row blocks: about 1e-13 here, where the distances are 20 and the squares 400).
        np.testing.assert_allclose(computed.to_numpy(), expected, rtol=1e-12, atol=1e-10)
    with pytest.raises(ValueError, match="lazy result"):
        km.set_output(transform="polars").transform(ddf)
    fitted = StreamingKMeans(3, random_state=0).set_output(transform="pandas").fit_transform(ddf)
    assert isinstance(fitted, dd.DataFrame) and list(fitted.columns) == names


def test_partitions_of_unknown_length_are_counted_then_read_once(frame):
    reads = []

    def part(i):
        reads.append(i)
        return frame.iloc[i * 300 : (i + 1) * 300]

    ddf = dd.from_map(part, range(4), meta=frame.iloc[:0], enforce_metadata=False)
    km = StreamingKMeans(3, random_state=0).fit(ddf)
    # Lengths unknown to dask: counted in one extra read of each partition, then the fit.
    assert sorted(reads) == [0, 0, 1, 1, 2, 2, 3, 3]
    reads.clear()
    labels, distances = km.predict(ddf), km.transform(ddf)
    # Each call counts the lengths once (its tasks name chunks by rows); nothing else runs.
    assert sorted(reads) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert len(labels.compute()) == 1200 and distances.compute().shape == (1200, 3)


def test_a_selection_of_partitions_after_its_source_was_counted(ddf, frame):
    # Counting a frame's partitions once made dask-expr answer a later selection of them
    # (frame.partitions[i]) with the lengths of every partition: partial_fit over partitions
    # failed on dask's "lengths ... 4 != 1", or read rows as the wrong chunks.
    StreamingKMeans(3, random_state=0).fit(ddf.clear_divisions())
    km = StreamingKMeans(3, random_state=0)
    for i in range(ddf.npartitions):
        km.partial_fit(ddf.partitions[i])
    assert km.n_rows_seen_ == len(frame)
    labels = km.predict(ddf.partitions[[1, 3]])
    assert labels.compute().shape == (600,)


def test_repartitioned_frame_gets_its_labels_and_distances(ddf, frame):
    # dask could not compute the labels of a repartitioned frame put back on its index
    # ("Missing dependency"); the frame is optimized into one expression first.
    km = StreamingKMeans(3, random_state=0).fit(frame)
    moved = ddf.repartition(npartitions=5)
    labels = km.predict(moved).compute()
    assert labels.index.equals(frame.index)
    np.testing.assert_array_equal(labels.to_numpy(), km.predict(frame))
    assert km.transform(moved).compute().shape == (len(frame), 3)
    assert StreamingKMeans(3, random_state=0).fit(moved).labels_.compute().index.equals(frame.index)


def test_feature_names_are_checked_as_scikit_learn_checks_them(ddf, frame):
    km = StreamingKMeans(3, random_state=0).fit(ddf)
    with pytest.raises(ValueError, match="The feature names should match"):
        km.predict(ddf.rename(columns={"a": "z"}))
    with pytest.raises(ValueError, match="The feature names should match"):
        km.predict(frame[["b", "a", "c"]])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        km.predict(da.from_array(frame.to_numpy(), chunks=300))
    with pytest.raises(ValueError, match="yet now missing:\n- c"):
        km.predict(ddf[["a", "b"]])
    # A refit on a bare array forgets the names, as scikit-learn's fit does.
    km.fit(da.from_array(frame.to_numpy(), chunks=300))
    assert not hasattr(km, "feature_names_in_")
    with pytest.warns(UserWarning, match="X has feature names, but StreamingKMeans was fitted"):
        km.predict(ddf)


@pytest.mark.parametrize("kind", ["dask", "pandas"])
def test_non_numeric_columns_are_an_error_naming_them(frame, kind):
    table = frame.assign(city="Oslo", when=pd.Timestamp("2026-01-01"))
    if kind == "dask":
        table = dd.from_pandas(table, npartitions=2)
    with pytest.raises(ValueError, match=r"non-numeric columns: 'city' \(.*\), 'when'") as info:
        StreamingKMeans(3).fit(table)
    assert "X[['a', 'b', 'c']]" in str(info.value)


def test_bool_columns_beside_numbers_and_object_columns_of_numbers(frame):
    # A dask DataFrame of bool and float columns was "X has dtype object" (to_dask_array's
    # object array); a pandas object column of numbers was "non-numeric", which
    # scikit-learn's KMeans converts to float64.
    table = frame.assign(d=frame["a"] > 0)
    numbers = table.astype({"d": np.float64})
    ref = StreamingKMeans(3, random_state=0).fit(numbers)
    km = StreamingKMeans(3, random_state=0).fit(dd.from_pandas(table, npartitions=1))
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert list(km.feature_names_in_) == ["a", "b", "c", "d"]
    objects = numbers.astype({"a": object})
    km = StreamingKMeans(3, random_state=0).fit(objects)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(km.predict(objects), ref.predict(numbers))
    with pytest.raises(ValueError, match=r"non-numeric columns: 'e' \(object\)"):
        StreamingKMeans(3).fit(numbers.assign(e=[1.0, "x"] * 600))


def test_nullable_columns_and_their_missing_values(frame):
    table = frame.astype({"a": "Float64"})
    ddf = dd.from_pandas(table, npartitions=3)
    km = StreamingKMeans(3, random_state=0).fit(ddf)
    ref = StreamingKMeans(3, random_state=0).fit(
        da.from_array(frame.to_numpy(), chunks=(_lengths(ddf), 3))
    )
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    table.loc[table.index[500], "a"] = pd.NA
    with pytest.raises(ValueError, match=r"NaN or infinity in chunk 1 \(rows 400 to 800\)"):
        StreamingKMeans(3).fit(dd.from_pandas(table, npartitions=3))


def test_one_column_dask_series_and_series_weights(ddf, frame):
    km = StreamingKMeans(2, random_state=0).fit(ddf["b"])
    assert km.feature_names_in_.tolist() == ["b"]
    assert isinstance(km.predict(ddf["b"]), dd.Series)
    weights = ddf["a"].abs() + 1.0
    km = StreamingKMeans(3, random_state=0).fit(ddf, sample_weight=weights)
    X = da.from_array(frame.to_numpy(), chunks=(_lengths(ddf), 3))
    ref = StreamingKMeans(3, random_state=0).fit(X, sample_weight=np.abs(frame["a"]) + 1.0)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def test_pandas_in_pandas_out_where_scikit_learn_does(frame):
    km = StreamingKMeans(3, random_state=0).fit(frame)
    assert km.feature_names_in_.tolist() == COLUMNS
    assert isinstance(km.labels_, np.ndarray) and isinstance(km.predict(frame), np.ndarray)
    assert isinstance(km.transform(frame), np.ndarray)
    out = km.set_output(transform="pandas").transform(frame)
    assert isinstance(out, pd.DataFrame) and out.index.equals(frame.index)
    assert list(out.columns) == km.get_feature_names_out().tolist()
    with dask.config.set(scheduler="sync"):  # numpy and dask arrays as before
        X = frame.to_numpy()
        assert isinstance(StreamingKMeans(3, random_state=0).fit(X).labels_, np.ndarray)
        lazy = StreamingKMeans(3, random_state=0).fit(da.from_array(X, chunks=400))
        assert isinstance(lazy.labels_, da.Array)


def test_parquet_dataset_read_by_dask_dataframe(tmp_path, frame):
    (tmp_path / "pq").mkdir()
    for i in range(3):
        frame.iloc[i * 400 : (i + 1) * 400].to_parquet(tmp_path / "pq" / f"part-{i}.parquet")
    table = dd.read_parquet(tmp_path / "pq")
    km = StreamingKMeans(3, random_state=0).fit(table)
    X = da.from_array(frame.to_numpy(), chunks=(_lengths(table), 3))
    ref = StreamingKMeans(3, random_state=0).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.feature_names_in_.tolist() == COLUMNS
    np.testing.assert_array_equal(km.predict(table).compute().to_numpy(), km.labels_.compute())


@pytest.mark.parametrize("split_row_groups", [False, True])
def test_some_columns_of_a_parquet_dataset_read_by_dask_dataframe(
    tmp_path, frame, split_row_groups
):
    # Selecting some columns made dask squash the files' partitions when it built the graph,
    # while npartitions still counted them one by one: "Missing dependency" in every call.
    (tmp_path / "pq").mkdir()
    table = frame.assign(d=1.0, e=2.0)
    for i in range(4):
        table.iloc[i * 300 : (i + 1) * 300].to_parquet(tmp_path / "pq" / f"part-{i}.parquet")
    source = dd.read_parquet(tmp_path / "pq", split_row_groups=split_row_groups)
    X = source[COLUMNS]
    km = StreamingKMeans(3, random_state=0).fit(X, sample_weight=source["d"])
    ref = StreamingKMeans(3, random_state=0).fit(
        da.from_array(frame.to_numpy(), chunks=(300, 3)), sample_weight=np.ones(len(frame))
    )
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    labels = km.predict(X).compute()
    np.testing.assert_array_equal(labels.to_numpy(), ref.predict(frame.to_numpy()))
    assert km.transform(X).compute().shape == (1200, 3)
    assert km.score(X) == pytest.approx(ref.score(frame.to_numpy()), rel=1e-12)


def test_elbow_of_a_dask_dataframe(ddf):
    from dask_streamkm import elbow

    result = elbow(ddf, range(2, 5), random_state=0)
    assert len(result.cost_bound) == 3
    assert result.model.feature_names_in_.tolist() == COLUMNS


# ---------------------------------------------------------------------- xarray
@pytest.fixture
def cube(frame):
    return xr.DataArray(
        frame.to_numpy(),
        dims=("time", "band"),
        coords={"time": frame.index.to_numpy(), "band": ["red", "green", "blue"]},
    )


@pytest.mark.parametrize("backed", ["dask", "numpy"])
def test_data_array_in_labelled_data_array_out(cube, frame, backed):
    X = cube.chunk({"time": 300}) if backed == "dask" else cube
    km = StreamingKMeans(3, random_state=0).fit(X)
    ref = StreamingKMeans(3, random_state=0).fit(
        da.from_array(frame.to_numpy(), chunks=(300 if backed == "dask" else 100_000, 3))
    )
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.feature_names_in_.tolist() == ["red", "green", "blue"]
    labels = km.predict(X)
    assert isinstance(labels, xr.DataArray) and labels.dims == ("time",)
    assert isinstance(labels.data, da.Array) == (backed == "dask")
    np.testing.assert_array_equal(labels["time"].values, frame.index.to_numpy())
    np.testing.assert_array_equal(labels.values, ref.predict(frame.to_numpy()))
    distances = km.transform(X)
    assert distances.dims == ("time", "cluster") and distances.shape == (1200, 3)
    with pytest.raises(ValueError, match="The feature names should match"):
        km.predict(X.assign_coords(band=["r", "g", "b"]))


def test_user_named_dims_stacked_samples_and_datasets(cube):
    # dims named by the user: the sample dim first, or stacked from several dims
    grid = xr.DataArray(
        cube.values.T.reshape(3, 30, 40),
        dims=("band", "y", "x"),
        coords={"band": ["red", "green", "blue"], "y": np.arange(30), "x": np.arange(40)},
    ).chunk({"y": 10})
    X = stack_samples(grid, "band")
    assert X.dims == ("sample", "band")
    km = StreamingKMeans(3, random_state=0).fit(X)
    labels = km.predict(X).unstack("sample")
    assert labels.dims == ("y", "x") and labels.shape == (30, 40)
    with pytest.raises(ValueError, match="expected 2 dims"):
        km.predict(grid)
    ds = grid.to_dataset(dim="band")
    with pytest.raises(ValueError, match="dataset_to_array"):
        km.predict(ds)
    Xd = dataset_to_array(ds)
    assert Xd.dims == ("sample", "variable") and Xd["variable"].values.tolist() == [
        "red",
        "green",
        "blue",
    ]
    np.testing.assert_array_equal(km.predict(Xd).values, km.predict(X).values)
    with pytest.raises(ValueError, match="no data variable"):
        dataset_to_array(ds, variables=["nir"])


def test_xarray_is_imported_only_for_xarray_input():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "sys.modules['xarray'] = None\n"  # import xarray now fails
        "from dask_streamkm import StreamingKMeans\n"
        "StreamingKMeans(2, random_state=0).fit(np.arange(20.0).reshape(10, 2))\n"
    )
    with warnings.catch_warnings():
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
