"""Distributed workers too small for one chunk: a clear error before the pass, or after it fails.

A summarize task holds its whole chunk plus the summarizer's working copies. When one task needs
more than a worker's ``memory_limit``, the nanny kills the worker, the task moves to the next
worker, and the fit restarts workers for minutes before ending in a ``KilledWorker`` that does not
say why. :func:`worker_memory_guard` compares an estimate of one task's peak memory with the
smallest ``memory_limit`` of the workers of the default distributed client before anything is
submitted, and turns a ``KilledWorker`` during the pass into an error that names the chunk size
and the fix.

A worker whose memory_limit is below what the worker process itself holds with this library
imported is restarted by its nanny as soon as it unpickles a task (or even idle), and distributed
counts such a restart as a graceful close, never as a failure of the task: no ``KilledWorker``
ever comes and the fit waited forever (a 150 MB worker was restarted every 2 s for ten minutes).
Two checks end that: :func:`check_worker_memory` refuses a memory_limit below
:data:`WORKER_PROCESS_BYTES` before anything is submitted, and :class:`RestartWatch` (used while
the pass waits, :func:`._waves.run_waves`) ends the fit once the nannies restarted workers for
memory more than ``distributed.scheduler.allowed-failures`` + 1 times per worker.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time

import dask
import numpy as np

from ._threads import distributed_client

#: Working memory of one summarize task beyond its input chunk, by method: (bytes per value as a
#: multiple of the chunk's itemsize, bytes per value in float64 copies, bytes per row). Measured
#: with tracemalloc (peak of ``_tasks.leaf`` on a numpy chunk, the input not counted; 8
#: clusters, summary_size "auto", 2 cores, shared, 2026-12-06, the tasks reusing their work
#: buffers) on chunks of 200,000 x 32 float64 and float32, 100,000 x 2 float32, 50,000 x 300
#: float64 and 100,000 x 64 float32. "tree" (the rows relative to their cell, laid out in padded
#: blocks, the scores of a band of cells, a few int64 arrays per row) peaked at 1.90x the
#: chunk's bytes, 2.37x, 19.6x, 1.42x and 1.81x with 800 groups, and at 2.76x, 2.36x and 21.5x
#: on 100,000 x 32 / 64 / 2 float32 with 3,125 (the scores grow with the groups per cell):
#: 2 x itemsize per value + 160 bytes per row is 2 % to 46 % above each.
#: "stream" (the shuffled copy of the rows) peaked at 1.26x, 1.46x, 6.2x, 1.28x and 1.51x:
#: 1.3 x itemsize per value + 60 bytes per row is 2 % to 22 % above each. "lloyd" (float64
#: copies of the chunk) peaked at 3.3x (float64), 6.1x (float32) and 9.2x (2 features): about
#: 24 bytes per value + 96 bytes per row. The worker process itself (imports, 100-200 MB) is
#: not counted, so a chunk rejected cannot fit.
WORKING_BYTES = {"tree": (2.0, 0, 160), "stream": (1.3, 0, 60), "lloyd": (0, 24, 96)}

#: The "tree" leaf's working memory by parts (:func:`tree_task_bytes`), measured with
#: tracemalloc (peak of ``_tasks.leaf`` on a numpy chunk, the input not counted; 2 cores,
#: shared, 2026-12-06): without its padded copy (chunks whose copy is above
#: ``_tree.COPY_BYTES``) it peaked at 109 B a row on 400,000 x 64 float32 with 256 groups,
#: 98 on 976,562 x 64 float32 (250 MB), 120 and 162 on 200,000 x 32 float32 / float64 with
#: 800, 126 on 300,000 x 2 float32: index arrays, weights and squared norms a row
#: (:data:`TREE_ROW_BYTES` plus :data:`TREE_ROW_ITEMS` values of the chunk's float type), a
#: few work buffers of fixed size, and what grows with the features but not the rows (the
#: coarse cells' sample, the centers of every cell: 96 MB on 50,000 x 300 float64 with 800
#: groups, :data:`TREE_FEATURE_ITEMS` values a feature).
TREE_ROW_BYTES = 96
TREE_ROW_ITEMS = 8
TREE_FEATURE_ITEMS = 40_000
TREE_FIXED_BYTES = 8 << 20

_MB = 10**6  # MB as dask writes memory_limit="200MB"

#: Memory a worker process holds before any task, once it has imported this library (Python,
#: numpy, scipy, scikit-learn, dask, distributed), not counted in :func:`task_peak_bytes`: a
#: lower bound. Measured (Linux x86-64, 2 cores, 2026-12-06): an idle distributed worker 65 MB,
#: one that has imported dask_streamkm 300 MB (``import sklearn.cluster`` alone 200 MB). A worker
#: that can use less than this cannot run one task of the fit.
WORKER_PROCESS_BYTES = 150 * _MB
#: What such a worker process typically holds (the measured 300 MB), for the memory_limit the
#: messages suggest.
WORKER_PROCESS_TYPICAL_BYTES = 300 * _MB
#: Seconds between two looks at the restart count while a pass waits for its results.
RESTART_POLL_SECONDS = 1.0
#: The scheduler's event topic on which nannies report a memory restart.
RESTART_TOPIC = "worker-restart-memory"
#: Seconds a pass waits on a cluster without a worker before a :class:`NoWorkersWarning`.
NO_WORKERS_WARN_SECONDS = 60.0


class NoWorkersWarning(UserWarning):
    """A pass has waited on a Dask cluster that has no worker (all left, or none started):
    distributed waits for workers to join without limit, so the fit looks hung. The warning
    says so once a pass, after :data:`NO_WORKERS_WARN_SECONDS`; the pass goes on waiting (an
    adaptive cluster or a batch queue may start workers late)."""


class WorkerMemoryError(ValueError):
    """A chunk of the data needs more memory than a distributed worker has (see the fix)."""


def largest_chunk(X):
    """(rows, bytes) of the largest row chunk of the 2-D dask array X."""
    rows = max(X.chunks[0], default=0)
    return int(rows), int(rows) * int(X.shape[1]) * X.dtype.itemsize


def task_bytes_per_row(n_features, dtype, method="tree"):
    """Estimated peak bytes of a summarize task per row of its chunk: the row itself and the
    method's working copies (see WORKING_BYTES)."""
    dtype = np.dtype(dtype)
    per_item, per_value, per_row = WORKING_BYTES.get(method, WORKING_BYTES["lloyd"])
    # Integer chunks are converted to a float copy first (check_block): a float64's itemsize.
    itemsize = dtype.itemsize if dtype.kind == "f" else 8
    n_features = int(n_features)
    return n_features * (dtype.itemsize + itemsize * per_item + per_value) + per_row


def target_chunk_bytes():
    """Memory of one summarize task when the user gives none: Dask's ``array.chunk-size``
    (128 MiB unless configured)."""
    from dask.utils import parse_bytes

    return int(parse_bytes(dask.config.get("array.chunk-size")))


def split_rows(lengths, rows):
    """Row chunks ``lengths`` with each one above ``rows`` split into equal parts of at most
    ``rows`` (a chunk is never merged with another)."""
    out = []
    for n in map(int, lengths):
        pieces = max(1, -(-n // int(rows)))
        out.extend(n // pieces + (i < n % pieces) for i in range(pieces))
    return tuple(out)


def rows_per_task(task_bytes, n_features, dtype, method="tree"):
    """Rows of a chunk whose summarize task peaks at about ``task_bytes`` (at least 1)."""
    return max(1, int(task_bytes // task_bytes_per_row(n_features, dtype, method)))


def tree_task_bytes(rows, n_features, dtype):
    """Estimated peak memory of a "tree" leaf on a chunk of ``rows`` rows, the chunk included:
    the chunk, its padded copy when that copy is at most ``_tree.COPY_BYTES`` (about 1.1x the
    chunk's values), :data:`TREE_ROW_BYTES` + :data:`TREE_ROW_ITEMS` values a row, and
    what does not grow with the rows (:data:`TREE_FEATURE_ITEMS` values a feature and
    :data:`TREE_FIXED_BYTES`). Above the copy's threshold that is at most the chunk and half
    of it plus a bound that does not grow with the chunk, for 64 float32 features."""
    from ._tree import COPY_BYTES

    dtype = np.dtype(dtype)
    itemsize = dtype.itemsize if dtype.kind == "f" else 8  # integers: a float64 copy first
    rows, n_features = int(rows), int(n_features)
    chunk = rows * n_features * dtype.itemsize
    converted = 0 if dtype.kind == "f" else rows * n_features * itemsize
    copy = int(1.1 * rows * n_features * itemsize)
    copy = copy if copy <= COPY_BYTES else 0
    per_row = TREE_ROW_BYTES + TREE_ROW_ITEMS * itemsize
    fixed = TREE_FEATURE_ITEMS * n_features * itemsize + TREE_FIXED_BYTES
    return chunk + converted + copy + rows * per_row + fixed


def task_peak_bytes(X, method):
    """Estimated peak memory of the summarize task of X's largest chunk (see WORKING_BYTES;
    "tree": :func:`tree_task_bytes`)."""
    rows, _ = largest_chunk(X)
    if method == "tree":
        return int(tree_task_bytes(rows, X.shape[1], X.dtype))
    return int(rows * task_bytes_per_row(X.shape[1], X.dtype, method))


def smallest_memory_limit(client):
    """Smallest ``memory_limit`` (bytes) over the client's workers; None when none is set."""
    try:
        workers = client.scheduler_info().get("workers", {})
    except Exception:  # noqa: BLE001 - no information: no check
        return None
    limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else None


def _usable_fraction():
    """Fraction of ``memory_limit`` at which the nanny kills a worker (1 when it does not)."""
    terminate = dask.config.get("distributed.worker.memory.terminate", 0.95)
    return float(terminate) if terminate else 1.0


def _suggested_limit(need):
    """A memory_limit (bytes, whole 100 MB) whose usable part holds a typical worker process
    and twice one task's need."""
    usable = (WORKER_PROCESS_TYPICAL_BYTES + 2 * need) / _usable_fraction()
    return math.ceil(usable / (100 * _MB)) * 100 * _MB


def _message(X, method, head, limit=None):
    rows, nbytes = largest_chunk(X)
    need = task_peak_bytes(X, method)
    usable = limit * _usable_fraction() if limit else None
    limit_text = f"{limit / _MB:,.0f} MB" if limit else "not known"
    text = (
        f"{head} The largest chunk of X holds {rows:,} rows x {X.shape[1]} features "
        f"({nbytes / _MB:,.1f} MB as {X.dtype}); summarizing it (method={method!r}) needs about "
        f"{need / _MB:,.0f} MB, and the smallest worker memory_limit is {limit_text} (a worker "
        f"is restarted above {_usable_fraction():.0%} of it)."
    )
    # Half of what would just fit (the worker process needs memory of its own), and at most
    # half of the chunk.
    fit = int(rows * usable / need / 2) if limit else rows
    smaller = max(1, min(rows // 2, fit))
    return (
        f"{text} Use smaller chunks, e.g. X.rechunk({{0: {smaller}}}) (or --chunks {smaller} on "
        "the command line), or start the workers with a larger memory_limit (at least "
        f"{_suggested_limit(need) / _MB:,.0f} MB: a worker process alone holds about "
        f"{WORKER_PROCESS_TYPICAL_BYTES / _MB:,.0f} MB once it has imported dask_streamkm)."
    )


def _process_message(limit, need):
    usable = limit * _usable_fraction()
    return (
        f"The smallest Dask worker memory_limit is {limit / _MB:,.0f} MB (a worker is restarted "
        f"above {_usable_fraction():.0%} of it, {usable / _MB:,.0f} MB), less than a worker "
        f"process holds once it has imported dask_streamkm (at least "
        f"{WORKER_PROCESS_BYTES / _MB:,.0f} MB; about "
        f"{WORKER_PROCESS_TYPICAL_BYTES / _MB:,.0f} MB measured on Linux), so every task "
        "would restart its worker and the fit would never end. Start the workers with a "
        f"larger memory_limit, at least {_suggested_limit(need) / _MB:,.0f} MB "
        "(LocalCluster(memory_limit=...), or dask worker --memory-limit)."
    )


def check_worker_memory(X, method):
    """Raise WorkerMemoryError when one summarize task of X cannot fit in the smallest worker.

    Only when a distributed Client is the scheduler and its workers have a ``memory_limit``:
    refused when the limit is below :data:`WORKER_PROCESS_BYTES` (the worker process alone) or
    below the task's estimated peak. Returns that smallest ``memory_limit`` (None when there
    is none).
    """
    client = distributed_client()
    limit = None if client is None else smallest_memory_limit(client)
    if limit is None:
        return None
    need = task_peak_bytes(X, method)
    if limit * _usable_fraction() < WORKER_PROCESS_BYTES:
        raise WorkerMemoryError(_process_message(limit, need))
    if need > limit * _usable_fraction():
        raise WorkerMemoryError(
            _message(X, method, "A chunk of X is too large for the memory of a Dask worker.", limit)
        )
    return limit


class WorkersRestartedError(WorkerMemoryError):
    """The nannies restarted workers for memory too often while a pass waited (RestartWatch)."""

    def __init__(self, message, head):
        super().__init__(message)
        self.head = head


class RestartWatch:
    """The memory restarts of a distributed client's workers by their nannies, from now on.

    Nannies report each restart on the scheduler's ``worker-restart-memory`` event topic;
    :meth:`check` raises :class:`WorkersRestartedError` once there were more than
    ``distributed.scheduler.allowed-failures`` + 1 restarts per worker (4 for one worker by
    default: about 10 s of restarts). A cluster whose scheduler keeps no events is not watched.
    """

    def __init__(self, client):
        self.client = client
        events = self._events()
        # Scheduler timestamps: restarts before this pass (an idle worker's) do not count.
        self.since = events[-1][0] if events else float("-inf")
        try:
            n_workers = len(client.scheduler_info().get("workers", {}))
        except Exception:  # noqa: BLE001 - no information: one worker
            n_workers = 0
        failures = int(dask.config.get("distributed.scheduler.allowed-failures", 3))
        self.allowed = (max(0, failures) + 1) * max(1, n_workers)
        self.limit = smallest_memory_limit(client)
        self.started = time.monotonic()
        self.no_workers_since = None
        self.warned = False

    def _events(self):
        try:
            return tuple(self.client.get_events(RESTART_TOPIC))
        except Exception:  # noqa: BLE001 - a scheduler without events: nothing to watch
            return ()

    def check(self):
        """Raise WorkersRestartedError when the workers were restarted too often; warn
        (:class:`NoWorkersWarning`, once) when the cluster has had no worker for
        :data:`NO_WORKERS_WARN_SECONDS`."""
        self._check_workers()
        restarts = [msg for stamp, msg in self._events() if stamp > self.since]
        if len(restarts) <= self.allowed:
            return
        rss = max((int(m.get("rss") or 0) for m in restarts if isinstance(m, dict)), default=0)
        seconds = time.monotonic() - self.started
        head = (
            f"Dask workers were restarted {len(restarts)} times in {seconds:.0f} s by their "
            f"nannies for going over their memory_limit (at up to {rss / _MB:,.0f} MB), so the "
            "pass over the data stopped (distributed does not count these restarts as task "
            "failures and would retry forever)."
        )
        limit = self.limit
        tail = (
            f" The smallest worker memory_limit is {limit / _MB:,.0f} MB; start the workers "
            "with a larger memory_limit or use smaller chunks (X.rechunk, --chunks)."
            if limit
            else " Start the workers with a larger memory_limit or use smaller chunks."
        )
        raise WorkersRestartedError(head + tail, head)

    def _check_workers(self):
        if self.warned:
            return
        try:
            # One worker's information at most (not the whole cluster's, every second).
            n_workers = len(self.client.scheduler_info(n_workers=1).get("workers", {}))
        except Exception:  # noqa: BLE001 - no information: nothing to say
            return
        now = time.monotonic()
        if n_workers:
            self.no_workers_since = None
            return
        if self.no_workers_since is None:
            self.no_workers_since = now
        waited = now - self.no_workers_since
        if waited >= NO_WORKERS_WARN_SECONDS:
            import warnings

            self.warned = True
            warnings.warn(
                NoWorkersWarning(
                    f"The Dask cluster has had no worker for {waited:.0f} s, so the pass over "
                    "the data waits (distributed waits for workers without limit). Start "
                    "workers (cluster.scale(n), or `dask worker SCHEDULER_ADDRESS`), or set "
                    "distributed.scheduler.no-workers-timeout to make the tasks fail instead."
                ),
                stacklevel=2,
            )


@contextlib.contextmanager
def worker_memory_guard(X, method):
    """:func:`check_worker_memory` now; a ``KilledWorker`` or too many worker restarts inside
    become a WorkerMemoryError naming the chunk and the fix.

    The workers' ``memory_limit`` is read before the compute: after the workers died, the
    scheduler may know none.
    """
    limit = check_worker_memory(X, method)
    try:
        from distributed import KilledWorker
    except ImportError:  # pragma: no cover - distributed is a dependency
        yield
        return
    try:
        yield
    except KilledWorker as exc:
        head = (
            f"Dask workers died while running a task of the fit ({exc}); the usual cause is a "
            "task that needs more memory than a worker has."
        )
        raise WorkerMemoryError(_message(X, method, head, limit)) from exc
    except WorkersRestartedError as exc:
        raise WorkerMemoryError(_message(X, method, exc.head, limit)) from None


def return_freed_chunks_to_the_os():
    """glibc only: serve every allocation of 1 MiB or more by mmap, so freed chunks leave RSS.

    By default glibc raises its mmap threshold each time a large block is freed (up to 32 MiB),
    after which chunk-sized arrays come from per-thread heaps that keep their pages: measured
    on a threaded fit of 100,000 x 64 float32 chunks, the peak RSS went from 825 to 605 MiB.
    Same effect as ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment. No-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        M_MMAP_THRESHOLD = -3
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
