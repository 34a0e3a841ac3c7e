"""Faults of the environment mid-fit, each one clear error and never centers from partial
data: a file, chunk or object of the input deleted, cut short, rewritten or damaged after
the array was opened; a Dask client closed mid-pass; SIGTERM or Ctrl-C while an output is
written (no temporary output left behind); a summary that cannot be written."""

import io
import os
import signal
import subprocess
import sys
import threading
import time
from subprocess import PIPE

import numpy as np
import pytest
import zarr
from _helpers import ROOT

from dask_streamkm import StreamingKMeans
from dask_streamkm.io import InputError, open_array


def _data(n=2000, d=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)) + rng.integers(0, 4, (n, 1)) * 10.0


def _fit(X):
    return StreamingKMeans(n_clusters=4, random_state=0).fit(X)


# ---------------------------------------------------------------------- zarr chunks
@pytest.fixture
def store(tmp_path):
    path = tmp_path / "x.zarr"
    z = zarr.create_array(path, shape=(2000, 3), chunks=(250, 3), dtype="f8")
    z[:] = _data()
    return path


def test_a_zarr_chunk_deleted_after_open_names_the_chunk_not_zeros(store):
    X = open_array(store)
    os.remove(store / "c" / "3" / "0")
    with pytest.raises(InputError, match=r"stored chunk \(3, 0\) \(rows 750:1000\)") as info:
        _fit(X)
    assert os.fspath(store / "c" / "3" / "0") in str(info.value)


def test_a_zarr_chunk_deleted_after_open_on_s3(s3_server, s3_bucket):
    import s3fs

    options = s3_server["storage_options"]
    url = f"{s3_bucket}/x.zarr"
    z = zarr.create_array(
        zarr.storage.FsspecStore.from_url(url, storage_options=options),
        shape=(2000, 3),
        chunks=(250, 3),
        dtype="f8",
    )
    z[:] = _data()
    X = open_array(url, storage_options=options)
    s3fs.S3FileSystem(**options).ls(f"{url}/c/5")  # a listing the fit's process has cached
    # removed by another process: the cached listing still shows it
    s3fs.S3FileSystem(**options, skip_instance_cache=True).rm_file(f"{url}/c/5/0")
    with pytest.raises(InputError, match=r"stored chunk \(5, 0\)") as info:
        _fit(X)
    assert f"{url}/c/5/0" in str(info.value) and options["secret"] not in str(info.value)


def test_chunks_never_written_read_as_the_fill_value(tmp_path):
    # zarr leaves out chunks that hold only the fill value (write_empty_chunks=False): those
    # are missing when the array is opened, and read as zeros, as zarr does.
    data = _data()
    data[500:1000] = 0.0
    z = zarr.create_array(tmp_path / "x.zarr", shape=data.shape, chunks=(250, 3), dtype="f8")
    z[:] = data
    assert not (tmp_path / "x.zarr" / "c" / "2" / "0").exists()
    for stray in (".DS_Store", "._0", "2/.tmp"):  # files that are no chunks
        (tmp_path / "x.zarr" / "c" / stray).parent.mkdir(exist_ok=True)
        (tmp_path / "x.zarr" / "c" / stray).write_bytes(b"")
    X = open_array(tmp_path / "x.zarr")
    np.testing.assert_array_equal(X.compute(), data)
    ref = _fit(data)
    np.testing.assert_array_equal(_fit(X).cluster_centers_, ref.cluster_centers_)


def test_a_sharded_store_with_a_shard_deleted_after_open(tmp_path):
    path = tmp_path / "x.zarr"
    z = zarr.create_array(path, shape=(2000, 3), chunks=(50, 3), shards=(500, 3), dtype="f8")
    z[:] = _data()
    X = open_array(path)
    os.remove(path / "c" / "1" / "0")
    with pytest.raises(InputError, match=r"stored chunk \(1, 0\) \(rows 500:1000\)"):
        _fit(X)


# ---------------------------------------------------------------------- .npy files
def _truncate(path, n_bytes):
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - n_bytes)


def test_a_truncated_npy_file_is_refused_when_opened(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, _data())
    _truncate(path, 1000)
    with pytest.raises(InputError, match="truncated") as info:
        open_array(path)
    assert str(path) in str(info.value) and "(2000, 3)" in str(info.value)


def test_a_npy_file_cut_short_after_open_names_the_file(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, _data())
    X = open_array(path, chunks=500)
    _truncate(path, 1000)
    with pytest.raises(InputError, match="cut short") as info:
        _fit(X)
    assert str(path) in str(info.value)


def test_a_npy_file_rewritten_with_fewer_rows_after_open(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, _data())
    X = open_array(path, chunks=500)
    np.save(path, _data()[:1500])  # a valid file of another shape: rows would shift silently
    with pytest.raises(InputError, match=r"now holds an array of shape \(1500, 3\)"):
        _fit(X)


def test_a_npy_file_rewritten_with_the_same_shape_after_open(tmp_path):
    # Other values of the same shape and dtype: every read found the header it expected, and
    # the fit read the new rows (or a mix of old and new) without a word.
    path = tmp_path / "x.npy"
    np.save(path, _data())
    X = open_array(path, chunks=500)
    before = os.stat(path).st_mtime_ns
    np.save(path, _data() * 2.0)
    # On a filesystem of coarse times the rewrite may keep the old one: a second later.
    os.utime(path, ns=(before + 10**9, before + 10**9))
    with pytest.raises(InputError, match="was rewritten since the array was opened") as info:
        _fit(X)
    assert str(path) in str(info.value)
    # Opened again, the new rows are read.
    assert _fit(open_array(path, chunks=500)).n_rows_seen_ == 2000


def test_a_npy_object_cut_short_on_s3(s3_server, s3_bucket):
    import s3fs

    options = s3_server["storage_options"]
    fs = s3fs.S3FileSystem(**options)
    url = f"{s3_bucket}/x.npy"
    buffer = io.BytesIO()
    np.save(buffer, _data())
    blob = buffer.getvalue()
    fs.pipe_file(url, blob[:-1000])
    with pytest.raises(InputError, match="truncated"):
        open_array(url, storage_options=options)
    fs.pipe_file(url, blob)
    X = open_array(url, chunks=500, storage_options=options)
    fs.pipe_file(url, blob[:-1000])
    with pytest.raises(InputError, match="gave 11000 of their 12000 bytes") as info:
        _fit(X)
    assert url in str(info.value) and options["secret"] not in str(info.value)


def test_a_column_of_a_zarr_store_with_a_chunk_deleted_after_open(store):
    X = open_array(store)
    os.remove(store / "c" / "3" / "0")
    with pytest.raises(InputError, match=r"stored chunk \(3, 0\)"):
        X[:, 1].compute()
    with pytest.raises(InputError, match=r"stored chunk \(3, 0\)"):
        X[800].compute()
    with pytest.raises(InputError, match=r"stored chunk \(7, 0\)"):
        os.remove(store / "c" / "7" / "0")
        X[-1].compute()
    np.testing.assert_array_equal(X[:700, 2].compute(), _data()[:700, 2])


# ---------------------------------------------------------------------- the command line
def _cli(*args):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return [sys.executable, "-m", "dask_streamkm.cli", *map(str, args)], env


@pytest.mark.parametrize(
    "sig, scheduler, status, line",
    [(signal.SIGTERM, "sync", 143, "terminated"), (signal.SIGINT, "threads", 130, "interrupted")],
)
def test_a_signal_mid_write_removes_the_temporary_store_and_keeps_the_old(
    tmp_path, sig, scheduler, status, line
):
    """A batch system's SIGTERM, or Ctrl-C, while predict writes its labels: one line and
    the exit status, no hidden temporary store left behind (writes still under way in other
    threads when the signal comes are waited for), the old labels as they were."""
    z = zarr.create_array(tmp_path / "x.zarr", shape=(60_000, 3), chunks=(250, 3), dtype="f8")
    z[:] = np.tile(_data(), (30, 1))
    _fit(_data()).save(tmp_path / "m.npz")
    labels = tmp_path / "labels.zarr"
    old = np.arange(7)
    zarr.create_array(labels, shape=old.shape, dtype="i8")[:] = old
    cmd, env = _cli(
        "predict", tmp_path / "x.zarr", tmp_path / "m.npz", "--out", labels, "--overwrite"
    )
    # SIGINT as a terminal's Ctrl-C sends it: a command started in the background by a shell
    # without job control (a CI runner's) inherits SIGINT ignored, and Python then never
    # raises KeyboardInterrupt.
    proc = subprocess.Popen(
        cmd + ["--scheduler", scheduler, "--quiet"],
        env=env,
        stderr=PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if any(p.name.startswith(".labels") for p in tmp_path.iterdir()):
            break
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert err.decode().strip() == f"dask-streamkm: {line}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr", "m.npz", "x.zarr"]
    np.testing.assert_array_equal(zarr.open_array(labels, mode="r")[:], old)


# ---------------------------------------------------------------------- distributed
_STARTED = threading.Event()


def _slow(block, delay):
    _STARTED.set()  # the workers run in this process (processes=False)
    time.sleep(delay)
    return block


def _close_once_started(client):
    _STARTED.wait(60)
    time.sleep(0.3)
    client.close()


def test_a_client_closed_mid_fit_is_one_clear_error():
    distributed = pytest.importorskip("distributed")
    from dask_streamkm.datasets import make_mixture

    X = make_mixture(40 * 500, 4, 5, chunks=500, random_state=0)
    slow = X.map_blocks(_slow, 0.1, dtype=X.dtype)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    ) as cluster:
        client = distributed.Client(cluster)
        _STARTED.clear()
        threading.Thread(target=_close_once_started, args=(client,), daemon=True).start()
        with pytest.raises(ConnectionError, match="client was closed or lost its scheduler"):
            StreamingKMeans(n_clusters=4, random_state=0).fit(slow)


def _leave_then_return(cluster, away):
    _STARTED.wait(60)
    time.sleep(0.2)
    cluster.scale(0)
    time.sleep(away)
    cluster.scale(1)


def test_a_fit_on_a_cluster_left_without_workers_warns_and_goes_on(monkeypatch):
    # distributed waits for workers without limit: a fit whose workers all left looked hung.
    distributed = pytest.importorskip("distributed")
    from dask_streamkm import NoWorkersWarning, _memory
    from dask_streamkm.datasets import make_mixture

    monkeypatch.setattr(_memory, "NO_WORKERS_WARN_SECONDS", 0.5)
    monkeypatch.setattr(_memory, "RESTART_POLL_SECONDS", 0.2)
    X = make_mixture(40 * 500, 4, 5, chunks=500, random_state=0)
    slow = X.map_blocks(_slow, 0.05, dtype=X.dtype)
    expected = StreamingKMeans(n_clusters=4, random_state=0).fit(X).cluster_centers_
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        _STARTED.clear()
        threading.Thread(target=_leave_then_return, args=(cluster, 3.0), daemon=True).start()
        with pytest.warns(NoWorkersWarning, match=r"no worker for .*cluster\.scale"):
            km = StreamingKMeans(n_clusters=4, random_state=0).fit(slow)
    np.testing.assert_array_equal(km.cluster_centers_, expected)


# ---------------------------------------------------------------------- outputs
def test_a_summary_that_cannot_be_written_names_its_path_not_a_temporary(tmp_path):
    from dask_streamkm.summary import Summary

    summary = Summary.from_points(_data())
    target = tmp_path / "missing" / "s.npz"
    with pytest.raises(FileNotFoundError, match="directory does not exist") as info:
        summary.save(target)
    assert str(info.value).startswith(f"cannot write {str(target)!r}")
    (tmp_path / "a-dir").mkdir()
    with pytest.raises(IsADirectoryError, match="cannot write"):
        summary.save(tmp_path / "a-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir"]


# ---------------------------------------------------------------------- Parquet
def test_a_damaged_parquet_page_is_named_as_damaged_not_a_rerun(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "x.parquet"
    frame = pd.DataFrame(_data(), columns=["a", "b", "c"])
    frame.to_parquet(path, row_group_size=500, compression=None)
    blob = bytearray(path.read_bytes())
    blob[5000:9000] = b"\xff" * 4000  # data pages; the footer is intact
    path.write_bytes(bytes(blob))
    X = open_array(path)
    with pytest.raises(InputError, match="cannot be decoded") as info:
        _fit(X)
    assert str(path) in str(info.value) and "a rerun fails the same way" in str(info.value)


@pytest.mark.parametrize("rows", [2000, 1500])  # the same row groups, or fewer
def test_a_parquet_file_rewritten_after_open_is_named_as_rewritten(tmp_path, rows):
    # The same layout with other values was read silently; fewer row groups were called
    # damaged bytes ("a rerun fails the same way"), where opening it again reads it.
    pd = pytest.importorskip("pandas")
    path = tmp_path / "x.parquet"
    pd.DataFrame(_data(), columns=["a", "b", "c"]).to_parquet(path, row_group_size=500)
    X = open_array(path)
    before = os.stat(path).st_mtime_ns
    pd.DataFrame(_data()[:rows] * 2.0, columns=["a", "b", "c"]).to_parquet(path, row_group_size=500)
    os.utime(path, ns=(before + 10**9, before + 10**9))  # coarse clocks
    with pytest.raises(InputError, match="was rewritten since the array was opened") as info:
        _fit(X)
    assert str(path) in str(info.value) and "damaged" not in str(info.value)
    assert _fit(open_array(path)).n_rows_seen_ == rows


@pytest.mark.parametrize("fill", [None, np.nan])
def test_a_zarr_v2_chunk_deleted_after_open_whatever_the_fill_value(tmp_path, fill):
    path = tmp_path / "x.zarr"
    z = zarr.create_array(
        path, shape=(2000, 3), chunks=(250, 3), dtype="f8", zarr_format=2, fill_value=fill
    )
    z[:] = _data()
    X = open_array(path)
    os.remove(path / "6.0")
    with pytest.raises(InputError, match=r"stored chunk \(6, 0\) \(rows 1500:1750\)"):
        _fit(X)
