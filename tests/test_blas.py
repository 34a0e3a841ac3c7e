"""BLAS threads x task threads never exceed the cores, under every scheduler."""

import os

import dask
import dask.callbacks
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from dask_streamkm import StreamingKMeans
from dask_streamkm._threads import blas_limits as _blas_limits

CORES = os.cpu_count() or 1


def _blas_threads(info):
    return sorted({lib["num_threads"] for lib in info if lib["user_api"] == "blas"})


def _info_after_numpy(_array):
    return threadpool_info()


def _in_task():
    # The numpy argument makes sure BLAS is loaded in the worker before it is inspected.
    task = dask.delayed(_info_after_numpy, pure=False)(np.ones(2))
    (info,) = dask.compute(task)
    return _blas_threads(info)


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_tasks_see_cores_over_workers_blas_threads(scheduler):
    # As many task threads/processes as cores: each task may use one BLAS thread.
    with dask.config.set(scheduler=scheduler, num_workers=CORES):
        with _blas_limits():
            inside = _in_task()
    assert inside == [1]


def test_threaded_limit_is_lifted_after_the_compute():
    before = _blas_threads(threadpool_info())
    with dask.config.set(scheduler="threads", num_workers=CORES):
        with _blas_limits():
            pass
    assert _blas_threads(threadpool_info()) == before


def test_distributed_worker_limits_itself():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=CORES, processes=True, dashboard_address=":0"
    )
    with cluster, distributed.Client(cluster) as client:
        X = np.random.default_rng(0).normal(size=(2_000, 3))
        StreamingKMeans(n_clusters=3, random_state=0, summary_size=50).fit(
            dask.array.from_array(X, chunks=(500, 3))
        )
        (info,) = client.run(threadpool_info).values()
    assert _blas_threads(info) == [1]


def test_distributed_workers_keep_the_nannys_single_blas_thread():
    """The nanny starts workers with OPENBLAS_NUM_THREADS=1 (several share the machine); a
    worker of one thread must not raise that to the cores."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    with cluster, distributed.Client(cluster) as client:
        X = np.random.default_rng(0).normal(size=(4_000, 3))
        StreamingKMeans(n_clusters=3, random_state=0, summary_size=50).fit(
            dask.array.from_array(X, chunks=(250, 3))
        )
        infos = client.run(threadpool_info).values()
    assert {n for info in infos for n in _blas_threads(info)} == {1}


class _BlasDuringTasks(dask.callbacks.Callback):
    """Records the process's BLAS thread counts as each task starts (threads scheduler)."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def _pretask(self, key, dsk, state):
        self.seen.update(_blas_threads(threadpool_info()))


@pytest.mark.parametrize("method", ["fit", "predict", "transform", "score", "evaluate"])
def test_every_compute_runs_under_the_limits(method):
    X = np.random.default_rng(0).normal(size=(2_000, 3))
    km = StreamingKMeans(n_clusters=3, random_state=0, summary_size=50).fit(X)
    Xd = dask.array.from_array(X, chunks=(500, 3))
    with dask.config.set(scheduler="threads", num_workers=CORES), _BlasDuringTasks() as seen:
        result = getattr(km, method)(Xd if method in ("fit", "score", "evaluate") else X)
    assert result is not None
    assert seen.seen == {1}  # as many task threads as cores: one BLAS thread each


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_fewer_tasks_than_workers_leave_their_cores_to_blas(scheduler):
    # One chunk in a pass: its task runs alone and may use every core's BLAS thread.
    with dask.config.set(scheduler=scheduler, num_workers=CORES):
        with _blas_limits(tasks=1):
            alone = _in_task()
        with _blas_limits(tasks=CORES):
            side_by_side = _in_task()
    assert alone == [CORES]
    assert side_by_side == [1]


def _task_threads(n_tasks=8):
    """Distinct threads that ran ``n_tasks`` tasks of a dask compute."""
    import threading
    import time

    import dask

    def task(i):
        time.sleep(0.02)
        return threading.get_ident()

    return len(set(dask.compute(*[dask.delayed(task)(i) for i in range(n_tasks)])))


def test_device_task_threads():
    """Passes over device chunks run on one thread of the local threaded scheduler, unless
    the user chose the threads; numpy chunks keep the scheduler's threads."""
    import dask

    from dask_streamkm._threads import DEVICE_TASK_THREADS, device_task_threads

    with dask.config.set(scheduler="threads", num_workers=4):
        assert _task_threads() > 1
        with device_task_threads(True):  # the user's num_workers stay
            assert dask.config.get("num_workers") == 4 and _task_threads() > 1
    with dask.config.set(scheduler="threads"):
        with device_task_threads(True):
            assert dask.config.get("num_workers") == DEVICE_TASK_THREADS
            assert _task_threads() == DEVICE_TASK_THREADS
        assert dask.config.get("num_workers", None) is None
        with device_task_threads(False):
            assert dask.config.get("num_workers", None) is None
    with dask.config.set(scheduler="sync"), device_task_threads(True):
        assert dask.config.get("num_workers", None) is None


def test_no_distributed_client_without_one():
    """No client running: a local scheduler computes, also where dask.config names the
    distributed one (dask.compute would fail there; the library's probe says None)."""
    from dask_streamkm._threads import distributed_client

    assert distributed_client() is None
    with dask.config.set(scheduler="dask.distributed"):
        assert distributed_client() is None


@pytest.mark.skipif(CORES < 2, reason="one core: BLAS has one thread anyway")
def test_small_solve_runs_on_one_blas_thread(monkeypatch):
    """The fit's solve of a small summary runs on one BLAS thread, its restarts too, whatever
    BLAS has outside (on two busy cores, two BLAS threads made MNIST k=10's solve several
    times slower); the limit is lifted after it."""
    from threadpoolctl import threadpool_limits

    from dask_streamkm import _runner, summary

    seen = {}

    def spy(name, function):
        def call(*args, **kwargs):
            seen.setdefault(name, set()).update(_blas_threads(threadpool_info()))
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(summary, "weighted_kmeans", spy("solve", summary.weighted_kmeans))
    monkeypatch.setattr(_runner, "lloyd", spy("lloyd", _runner.lloyd))
    X = np.random.default_rng(0).normal(size=(3000, 8))
    with threadpool_limits(2):
        StreamingKMeans(n_clusters=5, random_state=0).fit(X)
        after = _blas_threads(threadpool_info())
    assert seen == {"solve": {1}, "lloyd": {1}}
    assert after == [2]


def test_limits_left_in_another_order_than_entered_are_lifted():
    # Context a entered, then b, then a left before b: what two task threads do when their
    # computes overlap (dask-ml's Incremental.predict ran ours so). With threadpool_limits
    # each context put back what it found, so b put back a's limit and the process stayed
    # on one BLAS thread for good.
    from threadpoolctl import threadpool_limits

    from dask_streamkm import _pool

    with threadpool_limits(3, user_api="blas"):
        before = _blas_threads(threadpool_info())
        a, b = _pool.blas_limit(1, "blas"), _pool.blas_limit(1, "blas")
        a.__enter__()
        b.__enter__()
        assert _blas_threads(threadpool_info()) == [1]
        a.__exit__(None, None, None)
        assert _blas_threads(threadpool_info()) == [1]  # b is still open
        b.__exit__(None, None, None)
        assert _blas_threads(threadpool_info()) == before


def test_nested_limits_of_the_same_value_and_of_others():
    # A context of the limit already held sets nothing; closing the last one opened puts
    # back the one now last, and closing an older one changes nothing.
    from threadpoolctl import threadpool_limits

    from dask_streamkm import _pool

    with threadpool_limits(3, user_api="blas"):
        before = _blas_threads(threadpool_info())
        with _pool.blas_limit(2, "blas"):
            with _pool.blas_limit(1, "blas"):
                with _pool.blas_limit(1, "blas"):
                    assert _blas_threads(threadpool_info()) == [1]
                assert _blas_threads(threadpool_info()) == [1]
            assert _blas_threads(threadpool_info()) == [2]
        assert _blas_threads(threadpool_info()) == before
        a, b = _pool.blas_limit(1, "blas"), _pool.blas_limit(2, "blas")
        a.__enter__()
        b.__enter__()
        a.__exit__(None, None, None)
        assert _blas_threads(threadpool_info()) == [2]  # b is still open: its limit holds
        b.__exit__(None, None, None)
        assert _blas_threads(threadpool_info()) == before


def test_a_distance_pass_in_pieces_is_the_pass_in_one(monkeypatch):
    # Inside one BLAS thread, on the main thread, a pass of enough rows x centers runs in
    # pieces of whole blocks side by side; each row's numbers are those of one piece.
    import threading

    from dask_streamkm import _distances, _pool

    monkeypatch.setattr(_pool.os, "cpu_count", lambda: 3)
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(9_000, 20)) * 10.0 + 100.0).astype(np.float32)
    C = rng.normal(size=(150, 20)) * 10.0 + 100.0
    assert _pool.block_pieces(9_000, 1_000, 150) == [(0, 9_000)]  # BLAS's threads: one piece
    with _pool.blas_limit(1, "blas"):
        pieces = _pool.block_pieces(9_000, 1_000, 150)
        assert pieces == [(0, 3_000), (3_000, 6_000), (6_000, 9_000)]  # whole blocks
        assert _pool.block_pieces(9_000, 2_621, 150) == [(0, 5_242), (5_242, 7_863), (7_863, 9_000)]
        assert _pool.block_pieces(1_000, 1_000, 150) == [(0, 1_000)]  # one block: one piece
        assert _pool.block_pieces(300, 256, 150) == [(0, 300)]  # small: one piece
        off = []
        worker = threading.Thread(target=lambda: off.append(_pool.block_pieces(9_000, 1_000, 150)))
        worker.start()
        worker.join()
        assert off == [[(0, 9_000)]]  # off the main thread: one piece
        split = _distances.nearest_two(X, C)
        monkeypatch.setattr(_pool, "block_pieces", lambda n, step, m: [(0, n)])
        whole = _distances.nearest_two(X, C)
    for a, b in zip(split, whole, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("prepared", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_nearest_pass_in_pieces_is_the_pass_in_one(monkeypatch, prepared, dtype):
    # nearest's blocks in pieces side by side (Lloyd's runs of a solve): the numbers of the
    # pass in one piece, with rows shifted per call or once (prepared_rows).
    from dask_streamkm import _distances, _pool

    monkeypatch.setattr(_pool.os, "cpu_count", lambda: 4)
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(20_000, 12)) * 10.0 + 100.0).astype(dtype)
    C = rng.normal(size=(120, 12)) * 10.0 + 100.0
    prep = _distances.prepared_rows(X, X.mean(axis=0).astype(dtype)) if prepared else None
    with _pool.blas_limit(1, "blas"):
        step = _distances._block_step(20_000, 120, 12, prepared, False)
        pieces = _pool.block_pieces(20_000, step, 120)
        assert len(pieces) == 4 and all(start % step == 0 for start, _ in pieces)
        split = _distances.nearest(X, C, prep)
        monkeypatch.setattr(_pool, "block_pieces", lambda n, step, m: [(0, n)])
        whole = _distances.nearest(X, C, prep)
    for a, b in zip(split, whole, strict=True):
        np.testing.assert_array_equal(a, b)


def test_pieces_raise_the_first_error_after_all_ended():
    from dask_streamkm import _pool

    ended = []

    def ok():
        ended.append(1)

    def bad():
        raise ValueError("piece failed")

    with pytest.raises(ValueError, match="piece failed"):
        _pool.run_pieces([bad, ok, ok])
    assert len(ended) == 2
    with pytest.raises(ValueError, match="piece failed"):
        _pool.run_pieces([ok, bad])
