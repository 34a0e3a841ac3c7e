"""Independent runs side by side on threads, each on one BLAS thread (host numpy)."""

from __future__ import annotations

import contextlib
import functools
import os
import threading

#: Values (rows x features) up to which the estimator's solve runs on one BLAS thread
#: (``_threads.SINGLE_THREAD_VALUES`` is this constant; it lives here so that the solve's
#: modules need not import dask): up to there the solve's steps on all the groups (the
#: final probes, the polish's distances) may run side by side on one BLAS thread each; larger
#: ones keep BLAS's threads.
SMALL_VALUES = 2**22


@functools.lru_cache(maxsize=1)
def blas_controller():
    """One threadpoolctl controller for the process, built on first use: finding the
    libraries takes 2-5 ms (``threadpool_limits`` does it at every call, and a fit enters
    about ten limits), a limit through a built controller about 10 microseconds."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


#: The limits of the :func:`blas_limit` contexts open in this process, in the order entered,
#: and the limiter of the first (it holds the limits found before any), under the lock.
_LIMITS_LOCK = threading.Lock()
_OPEN = []
_FIRST = []


@contextlib.contextmanager
def blas_limit(limits, user_api=None):
    """``threadpoolctl``'s ``limit(limits=limits, user_api=user_api)`` inside, safe for
    contexts opened and closed on several threads at once (``limits=None``: no change).

    The limits are process-wide. Two threads that each entered ``threadpool_limits`` and
    left in the other order put back what the first one found after the second had set it:
    ``predict`` of dask-ml's ``Incremental`` ran our computes on two task threads at once and
    left the process on one BLAS thread for good. Here, while any context is open the last
    one opened that is still open holds, and when the last closes the limits found before
    the first are put back.
    """
    if limits is None:
        yield
        return
    entry = [limits, user_api]
    with _LIMITS_LOCK:
        limiter = blas_controller().limit(limits=limits, user_api=user_api)
        if not _OPEN:
            _FIRST.append(limiter)
        _OPEN.append(entry)
    try:
        yield
    finally:
        with _LIMITS_LOCK:
            del _OPEN[next(i for i, e in enumerate(_OPEN) if e is entry)]
            if not _OPEN:
                _FIRST.pop().restore_original_limits()
            else:
                blas_controller().limit(limits=_OPEN[-1][0], user_api=_OPEN[-1][1])


def map_calls(calls, parallel):
    """``[call() for call in calls]``, on up to one thread per core when ``parallel``, in
    turn otherwise, always on one BLAS thread each: runs side by side (the restarts and the
    Ward start, the final probes) use the cores better than BLAS threads on their small
    products, and one BLAS thread in both cases keeps the runs bit for bit the same whatever
    the cores (a product's rounding may depend on its BLAS threads). Each call must depend
    on nothing the others change (its own generator). Side by side only from the main
    thread: a solve that already runs beside others (the elbow's, or one inside a task) keeps
    its runs in turn."""
    workers = min(len(calls), os.cpu_count() or 1)
    with blas_limit(1, "blas"):
        if not parallel or workers < 2 or threading.current_thread() is not threading.main_thread():
            return [call() for call in calls]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda call: call(), calls))
