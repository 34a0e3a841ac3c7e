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
        # Inside a context of the same limits they hold already: nothing to set (a stream's
        # fold enters three such contexts a call, each 20-50 microseconds through the
        # controller).
        if not (_OPEN and _OPEN[-1] == entry):
            limiter = blas_controller().limit(limits=limits, user_api=user_api)
            if not _OPEN:
                _FIRST.append(limiter)
        _OPEN.append(entry)
    try:
        yield
    finally:
        with _LIMITS_LOCK:
            at = next(i for i, e in enumerate(_OPEN) if e is entry)
            del _OPEN[at]
            if not _OPEN:
                _FIRST.pop().restore_original_limits()
            elif at == len(_OPEN) and _OPEN[-1] != entry:
                # The last one opened closed: the one now last holds again.
                blas_controller().limit(limits=_OPEN[-1][0], user_api=_OPEN[-1][1])


#: Rows x centers of one piece of a distance pass split by :func:`block_pieces`, at least.
PIECE_VALUES = 1 << 17

_KEPT_POOL = {}
_KEPT_POOL_LOCK = threading.Lock()


def _kept_pool():
    """The process's kept threads for :func:`run_pieces` (one fewer than the cores: the
    caller runs a piece too), made on first use and again in a forked child, whose copy of
    the pool has no threads. A thread pool made per call, as :func:`map_calls` makes one,
    starts its threads again at every call: about 0.1 ms, a tenth of a piece here."""
    from concurrent.futures import ThreadPoolExecutor

    pid = os.getpid()
    with _KEPT_POOL_LOCK:
        pool = _KEPT_POOL.get(pid)
        if pool is None:
            _KEPT_POOL.clear()
            workers = max((os.cpu_count() or 1) - 1, 1)
            pool = _KEPT_POOL[pid] = ThreadPoolExecutor(workers, "dask_streamkm-rows")
    return pool


def block_pieces(n_rows, step, n_centers):
    """The pieces ``[(start, stop), ...]`` a distance pass over ``n_rows`` rows in blocks of
    ``step`` rows (starting at multiples of it) to ``n_centers`` centers runs in side by side
    (:func:`run_pieces`): runs of whole blocks, one per core, of about equal rows, each of at
    least :data:`PIECE_VALUES` rows x centers. One piece on one core, for a small pass, off
    the main thread (a task of a scheduler, a run of :func:`map_calls`: the other cores have
    their own work, as :func:`map_calls` decides), and unless the pass runs on one BLAS
    thread (inside a :func:`blas_limit` of 1, as a stream's calls and the solves of small
    summaries do; elsewhere BLAS's threads use the cores). The blocks are the pass's own
    whatever the pieces (a block's numbers can depend on where it starts and ends), and each
    piece runs on one BLAS thread as the whole pass would, so the pass gives the same numbers
    on any number of cores."""
    n_rows, step = int(n_rows), int(step)
    n_blocks = -(-n_rows // step)
    count = min(os.cpu_count() or 1, n_blocks, n_rows * int(n_centers) // PIECE_VALUES)
    if (
        count < 2
        or threading.current_thread() is not threading.main_thread()
        or not (_OPEN and _OPEN[-1] == [1, "blas"])
    ):
        return [(0, n_rows)]
    pieces = [[0, 0]]
    for start in range(0, n_rows, step):
        # A new piece once this one holds its share of the rows.
        if pieces[-1][1] > pieces[-1][0] and start >= n_rows * len(pieces) / count:
            if len(pieces) < count:
                pieces.append([start, start])
        pieces[-1][1] = min(start + step, n_rows)
    return [tuple(piece) for piece in pieces]


def run_pieces(calls):
    """Run ``calls`` (no arguments; each writes its own part of a result) side by side: the
    first on this thread, the others on the process's kept threads, all on one BLAS thread;
    returns when all have ended, raising the first one's error, or else the first error of
    the others."""
    if len(calls) == 1:
        calls[0]()
        return
    from concurrent.futures import wait

    with blas_limit(1, "blas"):
        futures = [_kept_pool().submit(call) for call in calls[1:]]
        try:
            calls[0]()
        finally:
            wait(futures)
        for future in futures:
            future.result()


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
