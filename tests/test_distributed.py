"""A distributed cluster gives the threaded scheduler's centers, also when a worker dies mid-fit."""

import os
import signal
import threading
import time

import dask
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm._connect import scheduler_chunk_counts
from dask_streamkm.cli import main as cli_main
from dask_streamkm.datasets import make_mixture

distributed = pytest.importorskip("distributed")


def _slow(block, delay):
    time.sleep(delay)
    return block


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


def _threaded(X, **params):
    with dask.config.set(scheduler="threads"):
        return StreamingKMeans(**params).fit(X)


def test_local_cluster_gives_the_threaded_centers(client):
    X = make_mixture(40_000, 8, 30, chunks=2_500, random_state=1)
    params = dict(n_clusters=7, random_state=0, split_every=4)
    ref = _threaded(X, **params)
    km = StreamingKMeans(**params).fit(X)  # the client is the default scheduler
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_


def test_killing_a_worker_mid_fit_gives_the_same_centers(client):
    n_chunks = 24
    X = make_mixture(n_chunks * 2_000, 8, 30, chunks=2_000, random_state=2)
    params = dict(n_clusters=6, random_state=0, split_every=4)
    ref = _threaded(X, **params)
    slow = X.map_blocks(_slow, 0.25, dtype=X.dtype)
    base, _ = scheduler_chunk_counts(client, ("leaf",))
    result = {}

    def fit():
        try:
            result["model"] = StreamingKMeans(**params).fit(slow)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            result["error"] = exc

    thread = threading.Thread(target=fit)
    thread.start()
    deadline = time.monotonic() + 30
    while scheduler_chunk_counts(client, ("leaf",))[0] - base < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    done_before = scheduler_chunk_counts(client, ("leaf",))[0] - base
    victim = sorted(client.scheduler_info()["workers"])[0]
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    assert thread.is_alive(), "the fit ended before a worker could be killed"
    thread.join(60)
    assert "error" not in result, result.get("error")
    assert 4 <= done_before < n_chunks
    np.testing.assert_array_equal(result["model"].cluster_centers_, ref.cluster_centers_)
    client.wait_for_workers(2, timeout=30)


def test_cli_fit_against_a_scheduler_address(client, tmp_path, capsys):
    X = make_mixture(20_000, 5, 10, chunks=2_000, random_state=3)
    X.to_zarr(str(tmp_path / "x.zarr"))
    address = client.scheduler.address
    rc = cli_main(
        [
            "fit",
            str(tmp_path / "x.zarr"),
            "--k",
            "4",
            "--chunks",  # the store's chunks
            "2000",
            "--scheduler",
            address,
            "--out",
            str(tmp_path / "m.npz"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "10/10 chunks" in captured.err
    model = StreamingKMeans.load(tmp_path / "m.npz")
    from dask_streamkm.io import open_array

    ref = _threaded(open_array(tmp_path / "x.zarr", chunks=2_000), n_clusters=4, random_state=0)
    np.testing.assert_array_equal(model.cluster_centers_, ref.cluster_centers_)


def test_cli_fit_on_a_local_cluster(tmp_path, capsys):
    X = make_mixture(8_000, 4, 6, chunks=2_000, random_state=4)
    X.to_zarr(str(tmp_path / "x.zarr"))
    rc = cli_main(
        [
            "fit",
            str(tmp_path / "x.zarr"),
            "--k",
            "3",
            "--chunks",  # the store's chunks
            "2000",
            "--scheduler",
            "local-cluster",
            "--n-workers",
            "1",
            "--out",
            str(tmp_path / "m.npz"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "4/4 chunks" in captured.err
    from dask_streamkm.io import open_array

    ref = _threaded(open_array(tmp_path / "x.zarr", chunks=2_000), n_clusters=3, random_state=0)
    model = StreamingKMeans.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(model.cluster_centers_, ref.cluster_centers_)


def test_one_probe_finds_the_client_that_computes(client):
    """The library asks one question, "which client would dask.compute use now?", and its
    answer follows dask.config: a local scheduler named there computes, not the client."""
    from dask_streamkm import _threads

    probes = (_threads.distributed_client,)
    assert all(probe() is client for probe in probes)
    with dask.config.set(scheduler=client):
        assert all(probe() is client for probe in probes)
    with dask.config.set(scheduler="threads", num_workers=3):
        assert all(probe() is None for probe in probes)
        assert _threads.scheduler_threads() == 3  # the local threads run the tasks
    assert _threads.scheduler_threads() == 1  # the workers limit their own BLAS threads
