"""Where a command's tasks run (a local scheduler, a ``LocalCluster``, or a scheduler address),
and how many chunk tasks ran there (:func:`count_chunk_tasks`, what the progress bar shows).

An address is checked by a Dask handshake under one overall deadline before ``Client`` is
made: ``Client(address, timeout=...)`` can wait past its timeout when something other than a
scheduler accepts the connection (an HTTP server, a silent listener). Every failure is one
:class:`SchedulerConnectError` whose message names the address, the reason and the fix.
"""

from __future__ import annotations

import contextlib
import threading

import dask
from dask.callbacks import Callback

from ._remote import first_line

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
_CHOICES = "--scheduler threads|processes|sync|local-cluster"


class SchedulerConnectError(ConnectionError):
    """No Dask scheduler answered at the address given (one line, no traceback)."""


def _failure(spec, timeout, reason):
    return SchedulerConnectError(
        f"--scheduler {spec}: could not connect to a Dask scheduler within {timeout:g} s "
        f"({reason}). Check the address (tcp://HOST:PORT), or use {_CHOICES}."
    )


def handshake(spec, timeout):
    """Raise :class:`SchedulerConnectError` unless a Dask scheduler answers at ``spec`` within
    ``timeout`` seconds (it is asked for its identity)."""
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    connection_args = {}
    if spec.startswith("tls://"):
        connection_args = Security().get_connection_args("client")
        if connection_args.get("ssl_context") is None:
            raise SchedulerConnectError(
                f"--scheduler {spec}: a tls:// address needs a client certificate; set "
                "distributed.comm.tls.ca-file, .client.cert and .client.key in the Dask config "
                "(e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE=...)."
            )

    async def identity():
        comm = await connect(spec, timeout=timeout, **connection_args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        reply = asyncio.run(asyncio.wait_for(identity(), timeout))
    except TimeoutError:
        raise _failure(spec, timeout, "no handshake") from None
    except Exception as exc:  # noqa: BLE001 - whatever the peer did, one line
        raise _failure(spec, timeout, first_line(exc)) from None
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise _failure(spec, timeout, "the server that answered is not a Dask scheduler")


@contextlib.contextmanager
def scheduler(spec, n_workers=None, connect_timeout=10.0):
    """Run the block's dask computations on ``spec``; yields a Client or None (local).

    ``spec``: one of :data:`LOCAL_SCHEDULERS`, ``"local-cluster"`` (``n_workers`` processes of
    one thread, default 2) or a scheduler address (checked by :func:`handshake` first).
    """
    if spec in LOCAL_SCHEDULERS:
        config = {"scheduler": spec}
        if n_workers:
            config["num_workers"] = int(n_workers)
        with dask.config.set(config):
            yield None
        return
    from distributed import Client, LocalCluster

    if spec == "local-cluster":
        cluster = LocalCluster(
            n_workers=int(n_workers or 2),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        with cluster, Client(cluster) as client:
            yield client
        return
    if ":" not in spec:  # neither a known name nor HOST:PORT
        raise SchedulerConnectError(
            f"--scheduler {spec!r} is not a scheduler name or address; use {_CHOICES[12:]} "
            "or the address of a running scheduler (tcp://HOST:PORT)."
        )
    handshake(spec, connect_timeout)
    try:
        client = Client(spec, timeout=connect_timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise _failure(spec, connect_timeout, first_line(exc)) from None
    with client:
        yield client


# ---------------------------------------------------------------------- chunk counts
def _parts_counter():
    def parts_count(parts, prefixes):
        """Chunks a task name's ``-``-separated parts cover: 1 for a part that is a prefix
        (``leaf``), n for the prefix with ``x<n>`` (``leafx8``: n small chunks in one task)."""
        count = 0
        for part in parts:
            count += part in prefixes
            for prefix in prefixes:
                rest = part[len(prefix) + 1 :]
                count += int(rest) if part.startswith(prefix + "x") and rest.isdigit() else 0
        return count

    return parts_count


#: Made inside a function so that cloudpickle sends it by value with
#: :func:`scheduler_chunk_counts` (a scheduler without this package runs it).
_parts_count = _parts_counter()


def _chunk_count(name, prefixes):
    """Chunks a task (key or prefix name) covers: 1 for ``leaf-...`` (or fused as
    ``...-leaf-...``), n for ``leafxn-...`` (n small chunks summarized in one task), else 0."""
    from dask.utils import key_split

    return _parts_count(key_split(name).split("-"), prefixes)


class _LocalChunks(Callback):
    """Local schedulers: counts the chunk tasks of every compute run inside the block."""

    def __init__(self, prefixes, show):
        super().__init__()
        self.prefixes, self.show = prefixes, show
        self.done = self.total = 0

    def _start(self, dsk):
        self.total += sum(_chunk_count(key, self.prefixes) for key in dsk)
        self.show(self.done, self.total)

    def _posttask(self, key, result, dsk, state, worker_id):
        count = _chunk_count(key, self.prefixes)
        if count:
            self.done += count
            self.show(self.done, self.total)


def scheduler_chunk_counts(client, prefixes):
    """``(finished, submitted)`` chunk tasks since the scheduler started, from its task prefixes.

    Reads the scheduler's own cumulative per-prefix state counts, so computes that ended (and
    whose tasks were forgotten) still count. Defined inline (and :data:`_parts_count` made
    inside a function) so that it pickles by value and a scheduler without this package can
    run it.
    """
    prefixes = tuple(prefixes)

    count = _parts_count

    def counts(dask_scheduler):
        done = total = 0
        for name, prefix in dask_scheduler.task_prefixes.items():
            chunks = count(name.split("-"), prefixes)  # prefix names are key_split already
            done += chunks * prefix.state_counts.get("memory", 0)
            total += chunks * prefix.state_counts.get("waiting", 0)
        return done, total

    return tuple(client.run_on_scheduler(counts))


@contextlib.contextmanager
def _cluster_chunks(client, prefixes, show, interval=0.5):
    """A distributed client: polls :func:`scheduler_chunk_counts`; counts from the block's start."""
    try:
        base = scheduler_chunk_counts(client, prefixes)
    except Exception:  # noqa: BLE001 - a scheduler that refuses run_on_scheduler: no bar
        yield
        return

    def poll():
        with contextlib.suppress(Exception):
            done, total = scheduler_chunk_counts(client, prefixes)
            show(done - base[0], total - base[1])

    def loop():
        while not stop.wait(interval):
            poll()

    stop = threading.Event()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()


@contextlib.contextmanager
def count_chunk_tasks(client, prefixes, show):
    """Call ``show(done, total)`` as the chunk tasks of the block's computes run.

    ``prefixes``: task-name parts of one chunk's task (``("leaf",)``). ``client`` None: a
    callback of the local schedulers counts every compute run inside the block; a distributed
    client: the scheduler's cumulative counts are polled, counted from the block's start.
    """
    if client is None:
        with _LocalChunks(prefixes, show):
            yield
    else:
        with _cluster_chunks(client, prefixes, show):
            yield
