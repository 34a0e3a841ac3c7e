"""Default chunks of Dask's ``array.chunk-size`` for every reader, in open_array and the CLI."""

import dask
import numpy as np
import pytest
import zarr

from dask_streamkm import StreamingKMeans
from dask_streamkm._memory import rows_per_task, task_bytes_per_row
from dask_streamkm.cli import build_parser, main
from dask_streamkm.io import InputError, open_array, parquet_chunks


def test_npy_file_is_read_in_row_ranges_of_the_chunk_size(tmp_path, rng):
    data = rng.standard_normal((100_000, 16)).astype(np.float32)  # 6.4 MB, 64 bytes a row
    np.save(tmp_path / "big.npy", data)
    assert open_array(tmp_path / "big.npy").chunks[0] == (100_000,)  # tasks under 128 MiB
    # A task holds its chunk and the summarizer's working copies: about 352 bytes a row here.
    per_row = task_bytes_per_row(16, np.float32)
    assert 340 < per_row < 360
    with dask.config.set({"array.chunk-size": "1MiB"}):
        X = open_array(tmp_path / "big.npy")
    rows = rows_per_task(2**20, 16, np.float32)
    assert rows == 2**20 // per_row and X.chunks[0][:-1] == (rows,) * (100_000 // rows)
    np.testing.assert_array_equal(X.compute(), data)
    assert open_array(tmp_path / "big.npy", chunks="640KB").chunks[0][0] == 640_000 // per_row
    assert open_array(tmp_path / "big.npy", chunks=30_000).chunks[0] == (30_000,) * 3 + (10_000,)
    with pytest.raises(InputError, match="a number of rows >= 1 or a size such as '128MiB'"):
        open_array(tmp_path / "big.npy", chunks="lots")
    # A whole number of rows may be a float; a fraction is refused (1.5 made 1-row chunks).
    assert open_array(tmp_path / "big.npy", chunks=30_000.0).chunks[0][0] == 30_000
    for bad in (1.5, 0.5, float("nan"), float("inf"), True, 0):
        with pytest.raises(InputError, match=f"chunks={bad!r} should be a number of rows >= 1"):
            open_array(tmp_path / "big.npy", chunks=bad)


def test_parquet_chunks_combine_small_row_groups_and_split_a_large_one():
    assert parquet_chunks([10, 10, 10, 10], 25) == (20, 20)
    assert parquet_chunks([10, 60, 5, 5], 25) == (10, 20, 20, 20, 10)
    assert parquet_chunks([], 25) == (0,)
    assert parquet_chunks([0, 3], 25) == (3,)


def test_multi_row_group_parquet_file_is_read_by_row_groups(tmp_path, rng):
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    data = rng.standard_normal((20_000, 4))
    table = pa.Table.from_pandas(pd.DataFrame(data, columns=list("wxyz")), preserve_index=False)
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2_500)  # 8 groups of 80 kB
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == 8
    assert open_array(tmp_path / "t.parquet").chunks[0] == (20_000,)  # combined: 640 kB
    per_row = task_bytes_per_row(4, np.float64)  # 288 bytes: 6,944 rows of 1.6e6 bytes
    with dask.config.set({"array.chunk-size": f"{int(5_500 * per_row)}B"}):  # 2 groups a chunk
        X = open_array(tmp_path / "t.parquet")
        assert X.chunks[0] == (5_000,) * 4
        np.testing.assert_array_equal(X.compute(), data)
    per_row = task_bytes_per_row(2, np.float64)
    with dask.config.set({"array.chunk-size": f"{int(1_500 * per_row)}B"}):  # each group split
        X = open_array(tmp_path / "t.parquet", columns=["x", "z"])
        assert X.chunks[0] == (1_250,) * 16
        np.testing.assert_array_equal(X.compute(), data[:, [1, 3]])
        km = StreamingKMeans(3, random_state=0).fit(X)
    ref = StreamingKMeans(3, random_state=0).fit(
        dask.array.from_array(data[:, [1, 3]], chunks=(X.chunks[0], 2))
    )
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def test_cli_fit_help_describes_chunks_and_takes_a_size(tmp_path, rng, capsys):
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    help_text = " ".join(fit.format_help().split())
    assert "--chunks ROWS|SIZE" in help_text
    assert "setting (128MiB unless configured)" in help_text and "array.chunk-" in help_text
    np.save(tmp_path / "x.npy", rng.standard_normal((4_000, 4)))
    for chunks, n in (("300KB", "4"), ("1000", "4"), (None, "1")):  # 288 bytes a row
        extra = () if chunks is None else ("--chunks", chunks)
        argv = ["fit", str(tmp_path / "x.npy"), "--k", "2", "--out", str(tmp_path / "m.npz")]
        assert main([*argv, "--overwrite", *extra]) == 0
        assert f"chunks        {n}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["fit", str(tmp_path / "x.npy"), "--k", "2", "--chunks", "many"])
    assert "neither a number of rows >= 1 nor a size" in capsys.readouterr().err


def test_zarr_stored_chunks_larger_than_the_target_stay_whole(tmp_path, rng):
    data = rng.standard_normal((4_000, 8))
    zarr.create_array(tmp_path / "x.zarr", data=data, chunks=(1_000, 8))  # 64 kB stored chunks
    per_row = task_bytes_per_row(8, np.float64)
    with dask.config.set({"array.chunk-size": f"{int(500 * per_row)}B"}):
        assert open_array(tmp_path / "x.zarr").chunks[0] == (1_000,) * 4
    with dask.config.set({"array.chunk-size": f"{int(2_500 * per_row)}B"}):
        assert open_array(tmp_path / "x.zarr").chunks[0] == (2_000, 2_000)


def test_large_dask_dataframe_partitions_are_summarized_in_parts(rng):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    frame = pd.DataFrame(rng.standard_normal((9_000, 3)), columns=list("abc"))
    ddf = dd.from_pandas(frame, npartitions=3)
    per_row = task_bytes_per_row(3, np.float64)
    with dask.config.set({"array.chunk-size": f"{int(1_600 * per_row)}B"}):
        km = StreamingKMeans(3, random_state=0).fit(ddf)
        labels = km.predict(ddf)
    ref = StreamingKMeans(3, random_state=0).fit(
        dask.array.from_array(frame.to_numpy(), chunks=((1_500,) * 6, 3))
    )
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert labels.npartitions == 3 and labels.divisions == ddf.divisions
    np.testing.assert_array_equal(labels.compute().to_numpy(), ref.predict(frame.to_numpy()))
