"""Paths to lazy dask arrays (zarr, zarr groups, .npy directories, Parquet); one read per chunk."""

import os
import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from _helpers import counting_like
from fsspec.implementations.memory import MemoryFileSystem

from dask_streamkm import StreamingKMeans
from dask_streamkm.io import InputError, open_array, write_labels


def _data(rng, n=1000, d=4):
    return rng.standard_normal((n, d)).astype(np.float32)


# ---------------------------------------------------------------------- zarr
def test_zarr_default_chunks_combine_stored_chunks_up_to_the_chunk_size(tmp_path, rng):
    data = _data(rng)  # 1,000 rows of 16 bytes in stored chunks of 100 rows
    zarr.create_array(tmp_path / "x.zarr", data=data, chunks=(100, 4))
    X = open_array(tmp_path / "x.zarr")
    assert X.chunks[0] == (1000,) and X.numblocks[1] == 1  # tiny: one chunk of 128 MiB
    np.testing.assert_array_equal(X.compute(), data)
    per_row = 4 * (4 + 4 * 2.7) + 170  # a row and its working copies in a summarize task
    with dask.config.set({"array.chunk-size": f"{int(350 * per_row)}B"}):  # 3 stored chunks
        assert open_array(tmp_path / "x.zarr").chunks[0] == (300, 300, 300, 100)
    with dask.config.set({"array.chunk-size": f"{int(50 * per_row)}B"}):  # kept whole
        assert open_array(tmp_path / "x.zarr").chunks[0] == (100,) * 10
    assert open_array(tmp_path / "x.zarr", chunks=f"{int(250 * per_row)}B").chunks[0] == (200,) * 5
    np.testing.assert_array_equal(open_array(tmp_path / "x.zarr", chunks=100).compute(), data)


def test_zarr_chunks_rounded_to_whole_stored_chunks(tmp_path, rng):
    zarr.create_array(tmp_path / "x.zarr", data=_data(rng), chunks=(100, 2))
    assert open_array(tmp_path / "x.zarr", chunks=250).chunks == ((300, 300, 300, 100), (4,))
    assert open_array(tmp_path / "x.zarr", chunks=30).chunks[0] == (100,) * 10


def test_zarr_group_named_array(tmp_path, rng):
    data = _data(rng)
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("features", data=data, chunks=(250, 4))
    group.create_array("other", data=data[:, :2], chunks=(250, 2))
    X = open_array(f"{tmp_path / 'g.zarr'}:features")
    np.testing.assert_array_equal(X.compute(), data)
    with pytest.raises(InputError, match=r"holding the arrays \['features', 'other'\]; name one"):
        open_array(tmp_path / "g.zarr")
    with pytest.raises(InputError, match="has no array 'missing'"):
        open_array(f"{tmp_path / 'g.zarr'}:missing")


def test_zarr_group_with_one_array_needs_no_name(tmp_path, rng):
    data = _data(rng)
    zarr.open_group(tmp_path / "g.zarr", mode="w").create_array("a", data=data, chunks=(500, 4))
    np.testing.assert_array_equal(open_array(tmp_path / "g.zarr").compute(), data)


def test_errors_name_the_path_and_the_fix(tmp_path, rng):
    with pytest.raises(InputError, match="no such file or directory"):
        open_array(tmp_path / "missing.zarr")
    zarr.create_array(tmp_path / "v.zarr", data=np.arange(10.0))
    with pytest.raises(InputError, match=r"shape \(10,\); expected 2-D"):
        open_array(tmp_path / "v.zarr")
    zarr.create_array(tmp_path / "x.zarr", data=_data(rng))
    with pytest.raises(InputError, match="is a zarr array, not a group"):
        open_array(f"{tmp_path / 'x.zarr'}:a")
    with pytest.raises(InputError, match="applies to Parquet input only"):
        open_array(tmp_path / "x.zarr", columns=["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is not a zarr store, a .npy file"):
        open_array(tmp_path / "empty")


def test_name_is_stable_and_changes_when_the_store_is_rewritten(tmp_path, rng):
    zarr.create_array(tmp_path / "x.zarr", data=_data(rng), chunks=(100, 4))
    name = open_array(tmp_path / "x.zarr").name
    assert open_array(tmp_path / "x.zarr").name == name
    time.sleep(0.01)
    zarr.create_array(tmp_path / "x.zarr", data=_data(rng), chunks=(100, 4), overwrite=True)
    assert open_array(tmp_path / "x.zarr").name != name


# ---------------------------------------------------------------------- npy
def test_npy_directory_is_memory_mapped_one_chunk_per_file(tmp_path, rng):
    parts = [_data(rng, n) for n in (300, 200, 500)]
    for i, part in enumerate(parts):
        np.save(tmp_path / f"part-{i:02d}.npy", part)
    X = open_array(tmp_path)
    assert X.chunks[0] == (300, 200, 500)
    np.testing.assert_array_equal(X.compute(), np.concatenate(parts))
    # The rows are read when computed: a file changed in place since opening is refused
    # (its rows could mix old and new values), and opened again its new values are read.
    before = os.stat(tmp_path / "part-01.npy").st_mtime_ns
    mm = np.load(tmp_path / "part-01.npy", mmap_mode="r+")
    mm[0, 0] = 1234.0
    mm.flush()
    del mm
    os.utime(tmp_path / "part-01.npy", ns=(before + 10**9, before + 10**9))  # coarse clocks
    with pytest.raises(InputError, match="part-01.npy' was rewritten since the array was"):
        X[300, 0].compute()
    assert X[0, 0].compute() == parts[0][0, 0]  # the other files are as they were
    assert open_array(tmp_path)[300, 0].compute() == 1234.0
    assert open_array(tmp_path, chunks=150).chunks[0] == (150, 150, 150, 50, 150, 150, 150, 50)


def test_npy_single_file_and_mismatch(tmp_path, rng):
    np.save(tmp_path / "a.npy", _data(rng, 50, 3))
    assert open_array(tmp_path / "a.npy").shape == (50, 3)
    np.save(tmp_path / "b.npy", _data(rng, 50, 2))
    with pytest.raises(InputError, match="same number of columns and dtype"):
        open_array(tmp_path)


# ---------------------------------------------------------------------- parquet
def test_parquet_numeric_columns(tmp_path, rng):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    data = _data(rng, 400, 3).astype(np.float64)
    frame = pd.DataFrame(data, columns=["a", "b", "c"])
    frame["label"] = ["x"] * 400
    (tmp_path / "pq").mkdir()
    frame.iloc[:250].to_parquet(tmp_path / "pq" / "part-0.parquet")
    frame.iloc[250:].to_parquet(tmp_path / "pq" / "part-1.parquet")
    X = open_array(tmp_path / "pq", columns=["a", "c"])
    assert X.shape == (400, 2) and not any(np.isnan(c) for c in X.chunks[0])
    np.testing.assert_array_equal(X.compute(), data[:, [0, 2]])
    with pytest.raises(InputError, match=r"non-numeric columns \['label'\]; choose numeric"):
        open_array(tmp_path / "pq")
    # Row groups of 250 and 150 rows, each split into equal parts of at most 100 rows.
    assert open_array(tmp_path / "pq", columns=["a"], chunks=100).chunks[0] == (84, 83, 83, 75, 75)


def test_parquet_columns_keep_their_values_across_types_and_files(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    (tmp_path / "pq").mkdir()
    # int8 in the first file, int64 values beyond int8 in the second: read as int64 (the
    # first file's type wrapped 1000 to -24).
    pd.DataFrame({"a": np.arange(3, dtype=np.int8)}).to_parquet(tmp_path / "pq" / "0.parquet")
    pd.DataFrame({"a": np.arange(3) + 1000}).to_parquet(tmp_path / "pq" / "1.parquet")
    X = open_array(tmp_path / "pq")
    assert X.dtype == np.int64
    np.testing.assert_array_equal(X.compute()[:, 0], [0, 1, 2, 1000, 1001, 1002])
    # A bool column beside a float one is float64 (it was an object array), a nullable
    # Int64 column is numbers (it was "non-numeric"), its missing values NaN.
    frame = pd.DataFrame(
        {"b": [True, False, True], "f": [0.5, 1.5, 2.5], "n": pd.array([1, None, 3], "Int64")}
    )
    frame.to_parquet(tmp_path / "t.parquet")
    X = open_array(tmp_path / "t.parquet")
    assert X.dtype == np.float64
    expected = [[1.0, 0.5, 1.0], [0.0, 1.5, np.nan], [1.0, 2.5, 3.0]]
    np.testing.assert_array_equal(X.compute(), expected)
    with pytest.raises(ValueError, match="NaN or infinity in chunk 0"):
        StreamingKMeans(2, random_state=0).fit(X)
    assert StreamingKMeans(2, random_state=0).fit(X[[0, 2]]).n_features_in_ == 3


def test_parquet_file_without_a_column_of_the_dataset_is_named(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    (tmp_path / "pq").mkdir()
    pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}).to_parquet(tmp_path / "pq" / "0.parquet")
    pd.DataFrame({"a": [1.0, 2.0], "c": [3.0, 4.0]}).to_parquet(tmp_path / "pq" / "1.parquet")
    pd.DataFrame({"a": ["x", "y"], "b": [3.0, 4.0]}).to_parquet(tmp_path / "pq" / "2.parquet")
    # Refused when opened, naming the file (it was a KeyError "['b'] not in index" mid-fit).
    with pytest.raises(InputError, match=r"1\.parquet' has no column 'b' \(its columns are"):
        open_array(tmp_path / "pq")
    (tmp_path / "pq" / "1.parquet").unlink()
    with pytest.raises(InputError, match=r"2\.parquet' holds column 'a' as \w*string, not numbers"):
        open_array(tmp_path / "pq")
    assert open_array(tmp_path / "pq", columns=["b"]).compute().ravel().tolist() == [3, 4, 3, 4]


def test_directory_of_npy_and_parquet_files_is_refused(tmp_path, rng):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    data = _data(rng, 20, 2)
    np.save(tmp_path / "a.npy", data)
    pd.DataFrame(data, columns=["x", "y"]).to_parquet(tmp_path / "b.parquet")
    # The .npy files alone were read: the Parquet rows were left out without a word.
    with pytest.raises(InputError, match="holds both .npy files and Parquet files"):
        open_array(tmp_path)
    (tmp_path / "b.parquet").unlink()
    assert open_array(tmp_path).shape == (20, 2)


# ---------------------------------------------------------------------- labels out
def test_write_labels_takes_what_predict_returns_for_every_input(tmp_path, rng):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    xr = pytest.importorskip("xarray")
    data = _data(rng, 300, 3)
    km = StreamingKMeans(3, random_state=0).fit(data)
    expected = km.predict(data)
    frame = dd.from_pandas(pd.DataFrame(data, columns=["a", "b", "c"]), npartitions=3)
    inputs = {
        "numpy": data,  # numpy labels: an AttributeError ('no attribute chunks') before
        "dask DataFrame": frame,  # a dask Series: a TypeError of dask's
        "DataArray": xr.DataArray(data, dims=("sample", "feature")).chunk({"sample": 70}),
    }
    for i, (kind, X) in enumerate(inputs.items()):
        model = StreamingKMeans(3, random_state=0).fit(X)
        labels = model.predict(X)
        write_labels(labels, tmp_path / f"{i}.zarr")
        stored = zarr.open(tmp_path / f"{i}.zarr", mode="r")[:]
        np.testing.assert_array_equal(stored, np.asarray(labels), err_msg=kind)
        assert len(np.unique(stored)) == 3 and stored.shape == expected.shape
    with pytest.raises(InputError, match=r"labels has shape \(300, 3\); write_labels stores one"):
        write_labels(km.transform(da.from_array(data)), tmp_path / "d.zarr")
    labels = km.predict(da.from_array(data, chunks=100))
    with pytest.raises(InputError, match=r"unknown chunk sizes .*labels.compute_chunk_sizes\(\)"):
        write_labels(labels[labels > 0], tmp_path / "u.zarr")
    assert not (tmp_path / "d.zarr").exists() and not (tmp_path / "u.zarr").exists()


def test_write_labels_refuses_a_file_name_of_another_kind(tmp_path):
    # labels.npy became a directory holding a zarr store, which np.load cannot open.
    for name in ("labels.npy", "labels.parquet"):
        with pytest.raises(ValueError, match=r"labels.zarr'.*zarr.open or dask.array.from_zarr"):
            write_labels(np.zeros(10, dtype=np.int32), tmp_path / name)
        assert not (tmp_path / name).exists()
    write_labels(np.zeros(10, dtype=np.int32), tmp_path / "labels.zarr")
    assert zarr.open(tmp_path / "labels.zarr").shape == (10,)


def test_write_labels_uneven_chunks(tmp_path):
    labels = da.from_array(np.arange(10), chunks=((3, 2, 5),))
    write_labels(labels, tmp_path / "l.zarr")
    np.testing.assert_array_equal(zarr.open(tmp_path / "l.zarr", mode="r")[:], np.arange(10))
    with pytest.raises(InputError, match="already exists"):
        write_labels(labels, tmp_path / "l.zarr")


# ---------------------------------------------------------------------- one read
@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_fit_reads_every_chunk_exactly_once(tmp_path, rng, scheduler):
    data = _data(rng, 6000, 5)
    zarr.create_array(tmp_path / "x.zarr", data=data, chunks=(500, 5))
    X = open_array(tmp_path / "x.zarr", chunks=500)
    Xc, counter = counting_like(X, zarr.open(tmp_path / "x.zarr", mode="r"))
    with dask.config.set(scheduler=scheduler):
        km = StreamingKMeans(3, random_state=0, split_every=3).fit(Xc)
    assert counter.reads == {start: 1 for start in range(0, 6000, 500)}
    ref = StreamingKMeans(3, random_state=0, split_every=3).fit(X)
    assert km.n_rows_seen_ == 6000
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


# ---------------------------------------------------------------------- damaged inputs
def test_damaged_inputs_name_the_file_and_the_fix(tmp_path, rng):
    zarr.create_array(tmp_path / "x.zarr", data=_data(rng))
    (tmp_path / "x.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
    with pytest.raises(InputError, match=r"x.zarr/zarr.json' is not valid zarr metadata") as e1:
        open_array(tmp_path / "x.zarr")
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "a.npy", _data(rng, 10))
    (tmp_path / "npy" / "b.npy").write_bytes(b"not a numpy file at all" * 10)
    with pytest.raises(InputError, match=r"b.npy' is not a .npy file .*write it with numpy.save"):
        open_array(tmp_path / "npy")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    (tmp_path / "pq").mkdir()
    pd.DataFrame(_data(rng, 10), columns=list("abcd")).to_parquet(tmp_path / "pq" / "p0.parquet")
    with pytest.raises(InputError, match=r"no column 'zz'; its columns are \['a', 'b', 'c', 'd'\]"):
        open_array(tmp_path / "pq", columns=["a", "zz"])
    (tmp_path / "pq" / "p1.parquet").write_bytes(b"PAR1 garbage garbage garbage")
    with pytest.raises(InputError, match=r"p1.parquet' is not a readable Parquet file") as e2:
        open_array(tmp_path / "pq")
    assert "\n" not in str(e1.value) + str(e2.value)


# ---------------------------------------------------------------------- URLs
def test_memory_and_file_urls(tmp_path, rng):
    import fsspec

    data = _data(rng, 500)
    zarr.create_array(tmp_path / "x.zarr", data=data, chunks=(100, 4))
    np.testing.assert_array_equal(open_array(f"file://{tmp_path}/x.zarr").compute(), data)
    da.to_zarr(da.from_array(data, chunks=(100, 4)), "memory://io-test/x.zarr", overwrite=True)
    X = open_array("memory://io-test/x.zarr", chunks=100)
    assert X.chunks[0] == (100,) * 5
    np.testing.assert_array_equal(X.compute(), data)
    write_labels(da.arange(500, chunks=100), "memory://io-test/l.zarr", overwrite=True)
    with pytest.raises(InputError, match="already exists"):
        write_labels(da.arange(500, chunks=100), "memory://io-test/l.zarr")
    fsspec.filesystem("memory").rm("/io-test", recursive=True)


class RangeCounting(MemoryFileSystem):
    """The in-memory filesystem, recording the byte ranges that whole-file reads ask for."""

    protocol = "countmem"
    ranges = []

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("countmem://", "memory://", 1))

    def cat_file(self, path, start=None, end=None, **kwargs):
        RangeCounting.ranges.append((start, end))
        return super().cat_file(path, start=start, end=end, **kwargs)


def test_remote_npy_reads_only_each_chunk_byte_range(rng):
    import fsspec

    fsspec.register_implementation("countmem", RangeCounting, clobber=True)
    fs = fsspec.filesystem("countmem")
    data = _data(rng, 1000)
    with fs.open("/npy/a.npy", "wb") as fh:
        np.save(fh, data)
    size = fs.size("/npy/a.npy")
    X = open_array("countmem://npy/a.npy", chunks=250)
    RangeCounting.ranges.clear()
    np.testing.assert_array_equal(X.compute(), data)
    offset = size - data.nbytes
    row = 4 * 4
    assert sorted(RangeCounting.ranges) == [
        (offset + i * row, offset + (i + 250) * row) for i in range(0, 1000, 250)
    ]
    fs.rm("/npy", recursive=True)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("s3://bucket/x.zarr", ("s3://bucket/x.zarr", None)),
        ("s3://bucket/g.zarr:features", ("s3://bucket/g.zarr", "features")),
        ("https://host:8080/x.zarr", ("https://host:8080/x.zarr", None)),
        ("https://host:8080/g.zarr:a", ("https://host:8080/g.zarr", "a")),
        ("memory://x.zarr", ("memory://x.zarr", None)),
    ],
)
def test_array_name_after_a_url(spec, expected):
    from dask_streamkm.io import _split_spec

    assert _split_spec(spec) == expected


def test_zarr_over_plain_http(tmp_path, rng):
    import functools
    import http.server

    pytest.importorskip("aiohttp")
    data = _data(rng, 400)
    zarr.create_array(tmp_path / "x.zarr", data=data, chunks=(100, 4))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x.zarr"
        X = open_array(url, chunks=100)
        assert X.chunks[0] == (100,) * 4
        np.testing.assert_array_equal(X.compute(), data)
    finally:
        server.shutdown()
        server.server_close()


def test_open_array_names_a_wrong_spec_or_columns(tmp_path):
    from dask_streamkm.io import InputError, open_array

    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    with pytest.raises(InputError, match="needs a path or URL"):
        open_array(None)
    with pytest.raises(InputError, match="columns=\\[\\] selects no column"):
        open_array(str(tmp_path / "x.npy"), columns=[])
    with pytest.raises(InputError, match="give a list of column names"):
        open_array(str(tmp_path / "x.npy"), columns="a")
