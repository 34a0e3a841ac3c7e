"""Independent runs side by side on threads, each on one BLAS thread (host numpy)."""

from __future__ import annotations

import functools
import os

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


def map_calls(calls, parallel):
    """``[call() for call in calls]``, on up to one thread per core when ``parallel``, in
    turn otherwise, always on one BLAS thread each: runs side by side (the restarts and the
    Ward start, the final probes) use the cores better than BLAS threads on their small
    products, and one BLAS thread in both cases keeps the runs bit for bit the same whatever
    the cores (a product's rounding may depend on its BLAS threads). Each call must depend
    on nothing the others change (its own generator). Side by side only from the main
    thread: a solve that already runs beside others (the elbow's, or one inside a task) keeps
    its runs in turn."""
    import threading

    workers = min(len(calls), os.cpu_count() or 1)
    with blas_controller().limit(limits=1, user_api="blas"):
        if not parallel or workers < 2 or threading.current_thread() is not threading.main_thread():
            return [call() for call in calls]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda call: call(), calls))
