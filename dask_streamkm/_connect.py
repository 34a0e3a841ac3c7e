"""Where a command's tasks run: a local scheduler, a ``LocalCluster``, or a scheduler address.

An address is checked by a Dask handshake under one overall deadline before ``Client`` is
made: ``Client(address, timeout=...)`` can wait past its timeout when something other than a
scheduler accepts the connection (an HTTP server, a silent listener). Every failure is one
:class:`SchedulerConnectError` whose message names the address, the reason and the fix.
"""

from __future__ import annotations

import contextlib

import dask

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
    except (asyncio.TimeoutError, TimeoutError):
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
    handshake(spec, connect_timeout)
    try:
        client = Client(spec, timeout=connect_timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise _failure(spec, connect_timeout, first_line(exc)) from None
    with client:
        yield client
