"""Thread policy: BLAS threads x task threads <= cores, for every compute of the library.

Every ``dask.compute`` of the package runs inside :func:`blas_limits` (or goes through
:func:`compute`); tasks running on distributed workers call :func:`limit_blas_in_worker`; the
driver-side solves of :func:`~dask_streamkm.elbow` use :func:`solve_threads`, and the
estimator's solve of a small summary runs on one BLAS thread (:func:`one_blas_thread`, the same
bound), which also keeps its centers the same whatever the cores.
"""

from __future__ import annotations

import contextlib
import functools
import os

import dask
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from ._array import to_host
from ._pool import SMALL_VALUES, blas_limit

#: Summaries with at most this many values (groups x features) are solved on one BLAS thread
#: (one constant with the solve's side-by-side runs, :data:`._pool.SMALL_VALUES`).
SINGLE_THREAD_VALUES = SMALL_VALUES


def distributed_client():
    """The distributed Client that ``dask.compute`` would use now, or None (a local
    scheduler computes: one named in ``dask.config``, or no client at all)."""
    from dask.base import get_scheduler

    try:
        from distributed import Client

        scheduler = get_scheduler()
    except (ImportError, ValueError, RuntimeError):  # "distributed" named, no client active
        return None
    client = getattr(scheduler, "__self__", scheduler)
    return client if isinstance(client, Client) else None


def scheduler_threads():
    """Threads the active local scheduler runs tasks on (1 for the synchronous one)."""
    scheduler = dask.config.get("scheduler", None)
    if scheduler in ("sync", "synchronous", "single-threaded"):
        return 1
    if distributed_client() is not None:
        return 1  # workers limit their own BLAS threads (see limit_blas_in_worker)
    num = dask.config.get("num_workers", None)
    return int(num or os.cpu_count() or 1)


#: Task threads of the local threaded scheduler in a pass over device (cupy) chunks, where the
#: user set neither ``num_workers`` nor a ``pool``: the tasks' kernels queue on the device's
#: one default stream and run one after another, so a second thread only contends (23M x
#: 400, k=500 on one H200: 22.2 s on one thread, 26.8 and 27.9 s on two).
DEVICE_TASK_THREADS = 1


@contextlib.contextmanager
def device_task_threads(on_device):
    """Run the passes inside on :data:`DEVICE_TASK_THREADS` threads when ``on_device`` (the
    chunks are device arrays) and the local threaded scheduler would otherwise start one
    thread per core; a scheduler, ``num_workers`` or ``pool`` the user chose is kept."""
    scheduler = dask.config.get("scheduler", None)
    chosen = dask.config.get("num_workers", None) is not None or dask.config.get("pool", None)
    # A distributed client runs the passes on its workers' threads, which are the user's.
    local = scheduler in (None, "threads", "threading") and distributed_client() is None
    if not on_device or chosen or not local:
        yield
        return
    with dask.config.set(num_workers=DEVICE_TASK_THREADS):
        yield


def limit_blas_in_process(n_threads, user_initializer=None):
    """Worker-process initializer of the processes scheduler: cap BLAS at ``n_threads``."""
    if user_initializer is not None:
        user_initializer()
    threadpool_limits(int(n_threads))


def limit_blas_in_worker():
    """Inside a distributed worker, cap BLAS threads at cores // worker threads (once), and
    never raise them above what the worker process started with.

    distributed's nanny starts every worker with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
    ``OPENBLAS_NUM_THREADS`` set to 1 (``distributed.nanny.pre-spawn-environ``), because
    several worker processes share a machine; a worker cannot see how many others do, so
    raising its BLAS threads to cores // its own threads oversubscribed the cores (2 workers
    x 1 thread on 2 cores: 4 BLAS threads, the fit no faster than on one worker).
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    if getattr(worker, "_dask_streamkm_blas_limited", False):
        return
    n_threads = max(1, int(getattr(worker.state, "nthreads", 1)))
    cap = max(1, (os.cpu_count() or 1) // n_threads)
    started = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    threadpool_limits(min([cap, *started]))
    worker._dask_streamkm_blas_limited = True


@contextlib.contextmanager
def blas_limits(tasks=None):
    """BLAS threads x task threads <= cores for the compute inside, whatever the scheduler.

    Threads and the synchronous scheduler: a limit in this process. The processes scheduler:
    an initializer that sets the limit in each worker process it starts (after any
    initializer the user configured). Distributed workers limit themselves
    (:func:`limit_blas_in_worker`). ``tasks``: how many tasks can run at once at most (the
    chunks of a pass); fewer than the task threads leave the idle threads' cores to BLAS
    (one chunk: its leaf's products take every core).
    """
    cores = os.cpu_count() or 1
    scheduler = dask.config.get("scheduler", None)
    at_once = max(1, int(tasks)) if tasks is not None else None
    if scheduler in ("processes", "multiprocessing"):
        workers = int(dask.config.get("num_workers", None) or cores)
        workers = workers if at_once is None else min(workers, at_once)
        user = dask.config.get("multiprocessing.initializer", None)
        init = functools.partial(limit_blas_in_process, max(1, cores // workers), user)
        with dask.config.set({"multiprocessing.initializer": init}):
            yield
        return
    threads = scheduler_threads()
    threads = threads if at_once is None else min(threads, at_once)
    with blas_limit(max(1, cores // threads)):
        yield


def compute(*values):
    """``dask.compute(*values)`` under :func:`blas_limits`; numpy arrays and scalars as host
    numpy, device arrays as they are.

    One value in, one result out; several in, a tuple out (one read of shared inputs).
    """
    with blas_limits():
        out = dask.compute(*values)
    out = tuple(
        to_host(o) if isinstance(o, np.ndarray) or not hasattr(o, "__len__") else o for o in out
    )
    return out[0] if len(values) == 1 else out


def solve_threads(summary):
    """BLAS threads for the solves: one for a small summary, the default otherwise.

    The solve's matrix products are small (groups x features times features x k); on a small
    summary, threaded BLAS spends more time waking and synchronizing threads than computing
    (measured: 4x slower on 2 busy cores for 2,545 x 32 and 400 x 784 summaries).
    """
    return 1 if summary.n_groups * summary.n_features <= SINGLE_THREAD_VALUES else None


@contextlib.contextmanager
def one_blas_thread(values):
    """One BLAS thread inside when ``values`` (the elements of the operands) is at most
    :data:`SINGLE_THREAD_VALUES`, the limit as it was otherwise. For the many small calls of
    a stream: BLAS threads waking and spinning on small products cost more than they save
    (a 4,096 x 32 batch against 100 centers took ten times as long on two BLAS threads of
    two busy cores), and ``threadpool_limits`` itself, which finds the libraries again at
    every call, about 2 ms."""
    if values > SINGLE_THREAD_VALUES:
        yield
        return
    with blas_limit(1, "blas"):
        yield
