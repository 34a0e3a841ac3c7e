"""``dask-streamkm``: make data, fit, predict and score from the command line.

A thin layer: every fit flag maps to a :class:`~dask_streamkm.StreamingKMeans` parameter,
:func:`dask_streamkm.io.open_array` turns the input path into a dask array, and the scheduler
flag picks where the tasks run. User errors print one line to stderr and exit with status 1.

Paths may be fsspec URLs; ``--storage-option KEY=VALUE`` gives their filesystem's options,
which are never printed. Outputs are checked before any data is read (an existing one needs
``--overwrite``; one that is or holds an input is refused), written to a temporary name and
renamed into place; a model that cannot be written after the pass is kept at a fallback path.
The progress bar is tqdm's, counting chunk tasks over every compute of the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid

import dask
from dask.callbacks import Callback

PROG = "dask-streamkm"
#: Task names counted by the progress bar (one task per chunk; a part of a fused task's name).
FIT_TASKS = ("leaf",)
BLOCK_TASKS = ("predict_block",)
LOCAL_SCHEDULERS = ("threads", "processes", "sync")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
BAR_FORMAT = "{desc} {bar:30} {n}/{total} chunks | {elapsed}"


class UserError(Exception):
    """An error in what the user asked for; printed as one line, no traceback."""


# ---------------------------------------------------------------------- progress
def _is_chunk_task(name, prefixes):
    """A task (key or prefix name) of one chunk: ``leaf-...``, or fused as ``...-leaf-...``."""
    from dask.utils import key_split

    return any(part in prefixes for part in key_split(name).split("-"))


class _LocalChunks(Callback):
    """Local schedulers: counts the chunk tasks of every compute run inside the block."""

    def __init__(self, prefixes, show):
        super().__init__()
        self.prefixes, self.show = prefixes, show
        self.done = self.total = 0

    def _start(self, dsk):
        self.total += sum(1 for key in dsk if _is_chunk_task(key, self.prefixes))
        self.show(self.done, self.total)

    def _posttask(self, key, result, dsk, state, worker_id):
        if _is_chunk_task(key, self.prefixes):
            self.done += 1
            self.show(self.done, self.total)


def scheduler_chunk_counts(client, prefixes):
    """``(finished, submitted)`` chunk tasks since the scheduler started, from its task prefixes.

    Reads the scheduler's own cumulative per-prefix state counts, so computes that ended (and
    whose tasks were forgotten) still count. Defined inline so that it pickles by value and a
    scheduler without this package can run it.
    """
    prefixes = tuple(prefixes)

    def counts(dask_scheduler):
        done = total = 0
        for name, prefix in dask_scheduler.task_prefixes.items():
            if any(part in prefixes for part in name.split("-")):
                done += prefix.state_counts.get("memory", 0)
                total += prefix.state_counts.get("waiting", 0)
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
def _progress(client, prefixes, label, quiet):
    """A tqdm bar of the chunk tasks run in the block, summed over all its computes.

    Yields a dict whose ``done`` / ``total`` hold the chunk tasks run (counted even when quiet:
    the fit report says how many chunks were read).
    """
    from tqdm import tqdm

    counts = {"done": 0, "total": 0}
    bars = []  # drawn from the first compute on, so that an early error prints one line only

    def show(done, total):
        counts.update(done=done, total=total)
        if quiet or not total:
            return
        if not bars:
            bars.append(tqdm(total=total, desc=label, file=sys.stderr, bar_format=BAR_FORMAT))
        bars[0].total = max(total, done)
        bars[0].update(done - bars[0].n)

    ok = False
    try:
        if client is None:
            with _LocalChunks(prefixes, show):
                yield counts
        else:
            with _cluster_chunks(client, prefixes, show):
                yield counts
        ok = True
    finally:
        for bar in bars:
            bar.leave = ok  # an error clears the bar: its message is the only line left
            bar.close()


# ---------------------------------------------------------------------- schedulers
def _handshake(spec, timeout):
    """Raise UserError unless a Dask scheduler answers at ``spec`` within ``timeout`` seconds.

    ``Client(address, timeout=...)`` can wait past its timeout when something other than a
    scheduler accepts the connection (an HTTP server, a silent listener): this asks for the
    scheduler's identity under one overall deadline first.
    """
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    connection_args = {}
    if spec.startswith("tls://"):
        connection_args = Security().get_connection_args("client")
        if connection_args.get("ssl_context") is None:
            raise UserError(
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

    def fail(reason):
        return UserError(
            f"--scheduler {spec}: could not connect to a Dask scheduler within {timeout:g} s "
            f"({reason}). "
            "Check the address (tcp://HOST:PORT), or use "
            "--scheduler threads|processes|sync|local-cluster."
        )

    try:
        reply = asyncio.run(asyncio.wait_for(identity(), timeout))
    except (asyncio.TimeoutError, TimeoutError):
        raise fail("no handshake") from None
    except Exception as exc:  # noqa: BLE001 - whatever the peer did, one line
        raise fail(_first_line(exc)) from None
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        raise fail("the server that answered is not a Dask scheduler")


@contextlib.contextmanager
def _scheduler(spec, n_workers=None, connect_timeout=10.0):
    """Run the block's dask computations on ``spec``; yields a Client or None (local)."""
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
    _handshake(spec, connect_timeout)
    try:
        client = Client(spec, timeout=connect_timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise UserError(
            f"--scheduler {spec}: could not connect to a Dask scheduler within "
            f"{connect_timeout:g} s ({_first_line(exc)}). Check the address (tcp://HOST:PORT), "
            "or use --scheduler threads|processes|sync|local-cluster."
        ) from None
    with client:
        yield client


# ---------------------------------------------------------------------- paths
def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _storage_options(args):
    """The ``--storage-option`` pairs as a dict, or None when none were given."""
    pairs = getattr(args, "storage_options", None)
    return dict(pairs) if pairs else None


def _options_for(spec, args):
    """``storage_options=...`` for a URL when the user gave some; nothing otherwise (so that
    local paths and today's signatures see the same call as before)."""
    options = _storage_options(args)
    return {"storage_options": options} if options and _is_url(spec) else {}


def _redact(text, options):
    """``text`` with every string value of the storage options replaced by ``***``, and any
    ``user:password@`` part of a URL dropped."""
    secrets, stack = [], [options or {}]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, str) and len(item) >= 3:
            secrets.append(item)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@", r"\1", text)  # user:pass@


def _is_url(spec):
    return bool(_URL.match(os.fspath(spec))) and not os.fspath(spec).startswith("file://")


def _local(spec):
    spec = os.fspath(spec)
    return spec[len("file://") :] if spec.startswith("file://") else spec


def _input_path(spec):
    """The path of an input spec without its ``:ARRAY`` suffix (a zarr group's array)."""
    spec = os.fspath(spec)
    head, sep, name = spec.rpartition(":")
    if sep and name and "/" not in name and not os.path.exists(_local(spec)):
        return head
    return spec


def _location(spec, args):
    """``(protocol, normalized path)``: two specs that name the same place compare equal."""
    if not _is_url(spec):
        return "file", os.path.realpath(os.path.abspath(_local(spec)))
    import fsspec.core

    fs, path = fsspec.core.url_to_fs(os.fspath(spec), **(_storage_options(args) or {}))
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, "/" + path.strip("/")


def _overlap(a, b):
    """One location is, or lies inside, the other."""
    if a[0] != b[0]:
        return False
    sep = os.sep if a[0] == "file" else "/"
    x, y = a[1].rstrip(sep) or sep, b[1].rstrip(sep) or sep
    return x == y or x.startswith(y.rstrip(sep) + sep) or y.startswith(x.rstrip(sep) + sep)


def _exists(spec, args):
    if not _is_url(spec):
        return os.path.lexists(_local(spec))
    import fsspec.core

    fs, path = fsspec.core.url_to_fs(os.fspath(spec), **(_storage_options(args) or {}))
    return fs.exists(path)


def _check_outputs(args, outputs, inputs):
    """Check every destination before any data is read.

    ``outputs``: ``(flag, spec, kind)`` with kind ``"file"`` (a model, a plot), ``"store"`` (a
    zarr store) or ``"checkpoint"`` (a directory kept between runs); ``inputs``: ``(what,
    spec)``. An output that is an input, lies inside one or holds one is refused even with
    ``--overwrite``; an existing file or store needs ``--overwrite``; a local destination needs
    an existing parent directory; a checkpoint directory must take a file.
    """
    overwrite = getattr(args, "overwrite", False)
    sources = [(what, spec, _location(_input_path(spec), args)) for what, spec in inputs if spec]
    for flag, spec, kind in outputs:
        if not spec:
            continue
        spec = os.fspath(spec)
        where = _location(spec, args)
        for what, source, place in sources:
            if _overlap(where, place):
                raise UserError(
                    f"{flag} {spec!r} is, contains or lies inside the {what} "
                    f"{os.fspath(source)!r}; writing there would destroy the input, so it is "
                    "refused even with --overwrite. Choose another path."
                )
        if kind == "checkpoint":
            _check_checkpoint(flag, spec, args)
            continue
        if _is_url(spec):
            if _exists(spec, args) and not overwrite:
                raise UserError(f"{flag} {spec!r} already exists; remove it or pass --overwrite.")
            continue  # object stores have no directories to check
        path = _local(spec)
        parent = os.path.dirname(os.path.abspath(path))
        if kind == "file" and os.path.isdir(path):
            raise UserError(
                f"{flag} {spec!r} is a directory; give a file path such as {spec.rstrip('/')}"
                f"/{'model.npz' if flag == '--out' else 'elbow.png'}."
            )
        if kind == "store" and os.path.isfile(path):
            raise UserError(f"{flag} {spec!r} is a file; a zarr store is a directory.")
        if os.path.lexists(path) and not overwrite:
            raise UserError(f"{flag} {spec!r} already exists; remove it or pass --overwrite.")
        if not os.path.isdir(parent):
            raise UserError(
                f"{flag} {spec!r}: the directory {parent!r} does not exist; create it first."
            )
        if not os.access(parent, os.W_OK):
            raise UserError(f"{flag} {spec!r}: the directory {parent!r} is not writable.")


def _check_checkpoint(flag, spec, args):
    """The checkpoint directory exists (created) and takes a file: a probe written, removed."""
    name = f".dask-streamkm-probe-{uuid.uuid4().hex}"
    try:
        if _is_url(spec):
            import fsspec.core

            fs, path = fsspec.core.url_to_fs(spec, **(_storage_options(args) or {}))
            fs.makedirs(path, exist_ok=True)
            fs.pipe_file(f"{path.rstrip('/')}/{name}", b"")
            fs.rm_file(f"{path.rstrip('/')}/{name}")
            return
        path = _local(spec)
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"{flag} {spec!r} is a file; it should be a directory.")
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, name)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise UserError(
            f"{flag} {spec!r} is not a writable directory ({_first_line(exc)}); "
            "choose a directory you can write to."
        ) from None


def _temporary(spec):
    """A fresh name next to ``spec`` (same directory, same extension), for write-then-rename."""
    spec = os.fspath(spec).rstrip("/")
    if _is_url(spec):
        head, _, name = spec.rpartition("/")
    else:
        head, name = os.path.split(os.path.abspath(_local(spec)))
    stem, ext = os.path.splitext(name)
    name = f".{stem}.{uuid.uuid4().hex}.tmp{ext}"
    return f"{head}/{name}" if _is_url(spec) else os.path.join(head, name)


def _write_then_rename(spec, write, args):
    """``write(tmp)`` to a temporary name next to ``spec``, then rename it into place.

    A file replaces the old one atomically (``os.replace``); a store directory replaces the old
    one by two renames (the old store is removed only once the new one is in place). On object
    stores a file is one whole-object write (atomic), a store is written aside and moved.
    """
    tmp = _temporary(spec)
    if _is_url(spec):
        import fsspec.core

        fs, path = fsspec.core.url_to_fs(os.fspath(spec), **(_storage_options(args) or {}))
        _, tmp_path = fsspec.core.url_to_fs(tmp, **(_storage_options(args) or {}))
        try:
            write(tmp)
            if fs.isdir(tmp_path):
                if fs.exists(path):
                    fs.rm(path, recursive=True)
                # Object by object: a recursive mv trips on the prefixes some stores list as
                # directories, and on object stores it is a copy anyway.
                for name in fs.find(tmp_path):
                    fs.copy(name, path.rstrip("/") + name[len(tmp_path.rstrip("/")) :])
            else:
                fs.mv(tmp_path, path)
        finally:
            if fs.exists(tmp_path):
                fs.rm(tmp_path, recursive=True)
        return
    path = os.path.abspath(_local(spec))
    old = None
    try:
        write(tmp)
        if os.path.isdir(tmp) and os.path.lexists(path):
            old = _temporary(path)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old:
                os.replace(old, path)
                old = None
            raise
    finally:
        for leftover in (tmp, old):
            if leftover and os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            elif leftover and os.path.lexists(leftover):
                os.remove(leftover)


def _fallback_path(kind, ext):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(tempfile.gettempdir(), f"dask-streamkm-{kind}-{stamp}-{os.getpid()}{ext}")


def _save_or_fallback(flag, spec, write, args, kind, ext):
    """Write an output computed by a whole pass; if that fails, keep it at a fallback path."""
    try:
        _write_then_rename(spec, lambda tmp: write(tmp, _options_for(spec, args)), args)
    except Exception as exc:  # noqa: BLE001 - any failure: the result must survive
        reason = _first_line(exc)
        fallback = _fallback_path(kind, ext)
        try:
            write(fallback, {})
        except Exception as again:  # noqa: BLE001
            raise UserError(
                f"{flag} {spec!r}: could not write the {kind} ({reason}), nor to {fallback!r} "
                f"({_first_line(again)})."
            ) from None
        raise UserError(
            f"{flag} {spec!r}: could not write the {kind} ({reason}); it was saved to "
            f"{fallback!r} instead."
        ) from None


# ---------------------------------------------------------------------- commands
def _open(args):
    from .io import open_array

    columns = args.columns.split(",") if getattr(args, "columns", None) else None
    try:
        X = open_array(
            args.store,
            columns=columns,
            chunks=getattr(args, "chunks", None),
            **_options_for(_input_path(args.store), args),
        )
    except KeyError as exc:
        if not columns:
            raise
        raise UserError(_missing_columns(args, columns, exc)) from None
    return X


def _missing_columns(args, columns, exc):
    """The one-line message for ``--columns`` naming a column the Parquet data does not have."""
    try:
        import dask.dataframe as dd

        existing = list(dd.read_parquet(args.store, **_options_for(args.store, args)).columns)
    except Exception:  # noqa: BLE001 - the columns could not be listed: name the missing one
        return f"--columns {','.join(columns)}: the Parquet data has no column {exc}."
    missing = [c for c in columns if c not in existing]
    return (
        f"--columns {','.join(columns)}: {args.store!r} has no column "
        f"{', '.join(map(repr, missing or [str(exc)]))}; its columns are {existing}."
    )


def _check_rows(X, args):
    if X.shape[0] == 0:
        raise UserError(
            f"{args.store!r} holds no rows (shape {tuple(X.shape)}); there is nothing to "
            f"{args.command}. Write rows to it first."
        )


def _model_params(args):
    """StreamingKMeans parameters from the fit flags (one flag, one parameter)."""
    params = {
        "n_clusters": args.k,
        "method": args.method,
        "summary_size": args.summary_size,
        "split_every": args.split_every,
        "mini_batch_size": args.mini_batch_size,
        "merge_budget": args.merge_budget,
        "n_init": args.n_init,
        "max_iter": args.max_iter,
        "tol": args.tol,
        "random_state": args.random_state,
        "checkpoint": args.checkpoint,
        "metric": args.metric,
    }
    return params


@contextlib.contextmanager
def _checkpoint_options(args):
    """Storage options for a checkpoint URL: the estimator's own parameter when it has one,
    else fsspec's per-protocol defaults for the duration of the fit."""
    options = _storage_options(args)
    if not (args.checkpoint and options and _is_url(args.checkpoint)):
        yield {}
        return
    from . import StreamingKMeans

    if "storage_options" in StreamingKMeans().get_params():
        yield {"storage_options": options}
        return
    import fsspec.config

    protocol = _location(args.checkpoint, args)[0]
    saved = fsspec.config.conf.get(protocol)
    fsspec.config.conf[protocol] = {**(saved or {}), **options}
    try:
        yield {}
    finally:
        if saved is None:
            fsspec.config.conf.pop(protocol, None)
        else:
            fsspec.config.conf[protocol] = saved


def _report(lines, stream=None):
    stream = stream or sys.stdout
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        stream.write(f"{key:<{width}}  {value}\n")
    stream.flush()


def _fit(X, args, client, label="fit"):
    from . import StreamingKMeans

    if args.k > X.shape[0]:
        raise UserError(
            f"--k {args.k} is larger than the {X.shape[0]} rows of the data; "
            f"use --k <= {X.shape[0]}."
        )
    start = time.perf_counter()
    with _checkpoint_options(args) as extra:
        model = StreamingKMeans(**_model_params(args), **extra)
        with _progress(client, FIT_TASKS, label, args.quiet) as counts:
            try:
                model.fit(X)
            except OSError as exc:
                if not args.checkpoint:
                    raise
                raise UserError(
                    f"--checkpoint {args.checkpoint!r}: could not save a finished chunk range "
                    f"({_first_line(exc)}); the ranges saved so far are kept there and a rerun "
                    "with the same arguments resumes from them."
                ) from None
    seconds = time.perf_counter() - start
    n_rows = int(X.shape[0])
    read = f", {counts['done']} read" if args.checkpoint and counts["total"] else ""
    _report(
        [
            ("rows", f"{n_rows:,} x {X.shape[1]} ({X.dtype})"),
            ("chunks", f"{X.numblocks[0]}{read}"),
            ("time", f"{seconds:.2f} s"),
            ("rows/s", f"{n_rows / max(seconds, 1e-9):,.0f}"),
            ("summary size", f"{model.summary_.n_groups:,} groups"),
            ("cost bound", f"{model.inertia_:.6g} (mean {model.inertia_ / n_rows:.6g} per row)"),
        ]
    )
    return model


def _save_model(model, args):
    _save_or_fallback(
        "--out", args.out, lambda path, kw: model.save(path, **kw), args, "model", ".npz"
    )
    print(f"model written to {args.out}")


def cmd_make_data(args):
    import dask.array as da
    from dask.diagnostics import ProgressBar

    from .datasets import make_mixture

    for flag in ("rows", "features", "components", "chunks"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} {getattr(args, flag)} should be >= 1.")
    _check_outputs(args, [("STORE", args.store, "store")], [])
    X = make_mixture(
        args.rows,
        args.features,
        args.components,
        chunks=args.chunks,
        random_state=args.seed,
        sorted_by_component=args.sorted,
    )

    def write(path):
        with contextlib.ExitStack() as stack:
            if not args.quiet:
                stack.enter_context(ProgressBar(out=sys.stderr))
            # One task per chunk, each generating and writing its rows: never the whole array.
            da.to_zarr(X, path, **_options_for(path, args))

    start = time.perf_counter()
    _write_then_rename(args.store, write, args)
    seconds = time.perf_counter() - start
    _report(
        [
            ("store", args.store),
            ("rows", f"{args.rows:,} x {args.features} (float32)"),
            ("chunks", f"{X.numblocks[0]} of {args.chunks:,} rows"),
            ("time", f"{seconds:.2f} s"),
        ]
    )
    return 0


def cmd_fit(args):
    _check_outputs(
        args,
        [("--out", args.out, "file"), ("--checkpoint", args.checkpoint, "checkpoint")],
        [("input", args.store)],
    )
    X = _open(args)
    _check_rows(X, args)
    with _scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
        model = _fit(X, args, client)
    _save_model(model, args)
    return 0


def _load_model(args):
    from . import StreamingKMeans

    return StreamingKMeans.load(args.model, **_options_for(args.model, args))


def cmd_predict(args):
    from .io import write_labels

    _check_outputs(
        args, [("--out", args.out, "store")], [("input", args.store), ("model", args.model)]
    )
    model = _load_model(args)
    X = _open(args)
    with _scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
        labels = model.predict(X)
        with _progress(client, BLOCK_TASKS, "predict", args.quiet):
            _write_then_rename(
                args.out, lambda path: write_labels(labels, path, **_options_for(path, args)), args
            )
    print(f"labels of {X.shape[0]:,} rows written to {args.out}")
    return 0


def cmd_score(args):
    model = _load_model(args)
    X = _open(args)
    _check_rows(X, args)
    with _scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
        with _progress(client, BLOCK_TASKS, "score", args.quiet):
            inertia = -model.score(X)
    _report(
        [
            ("rows", f"{X.shape[0]:,}"),
            ("inertia", f"{inertia:.6g}"),
            ("mean squared distance", f"{inertia / X.shape[0]:.6g}"),
        ]
    )
    return 0


def cmd_demo(args):
    from .datasets import make_mixture

    _check_outputs(
        args, [("--out", args.out, "file"), ("--checkpoint", args.checkpoint, "checkpoint")], []
    )
    X = make_mixture(
        args.rows, args.features, args.components, chunks=args.chunks, random_state=args.seed
    )
    print(
        f"demo: {args.rows:,} x {args.features} float32 Gaussian mixture of {args.components} "
        f"components, generated chunk by chunk (nothing on disk), k={args.k}"
    )
    with _scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
        model = _fit(X, args, client)
    if args.out:
        _save_model(model, args)
    return 0


def cmd_elbow(args):
    from .elbow import PLOT_HINT, elbow, parse_k_range

    try:
        ks = parse_k_range(args.k)
    except ValueError as exc:
        raise UserError(f"--k {args.k!r}: {exc}") from None
    if args.plot:
        try:  # before the pass, not after it
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError(
                f"--plot needs matplotlib, which is not installed: {PLOT_HINT}"
            ) from None
    _check_outputs(args, [("--plot", args.plot, "file")], [("input", args.store)])
    X = _open(args)
    _check_rows(X, args)
    with _scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
        with _progress(client, FIT_TASKS, "elbow", args.quiet):
            result = elbow(
                X,
                ks,
                random_state=args.random_state,
                n_init=args.n_init,
                summary_size=args.summary_size,
                method=args.method,
                metric=args.metric,
            )
    print(result.to_string())
    if args.plot:
        ext = os.path.splitext(args.plot)[1] or ".png"
        _save_or_fallback(
            "--plot", args.plot, lambda path, kw: result.plot(path, **kw), args, "plot", ext
        )
        print(f"plot written to {args.plot}")
    return 0


# ---------------------------------------------------------------------- parser
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} should be >= 1")
    return value


def _int_or_auto(text):
    return "auto" if text == "auto" else _positive_int(text)


def _storage_option(text):
    """``KEY=VALUE``; the value is parsed as JSON when it parses, else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        # The text is not echoed: it may hold a credential.
        raise argparse.ArgumentTypeError("expected KEY=VALUE (the text given is not shown)")
    try:
        value = json.loads(value)
    except ValueError:
        pass
    return key.strip(), value


def _add_storage_options(p):
    p.add_argument(
        "--storage-option",
        dest="storage_options",
        action="append",
        type=_storage_option,
        default=None,
        metavar="KEY=VALUE",
        help="an option of the fsspec filesystem of URL paths (s3://..., gs://...), repeatable; "
        'VALUE is parsed as JSON when it parses (e.g. client_kwargs=\'{"endpoint_url": '
        '"http://..."}\'). Never printed.',
    )


def _add_scheduler(p):
    p.add_argument(
        "--scheduler",
        default="threads",
        help="threads (default), processes, sync, local-cluster (a distributed LocalCluster of "
        "--n-workers processes) or the address of a running scheduler (tcp://HOST:PORT)",
    )
    p.add_argument(
        "--n-workers",
        type=_positive_int,
        default=None,
        help="worker threads / processes (default: one per core; 2 for local-cluster)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for a scheduler address (default 10)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_metric(p):
    p.add_argument(
        "--metric",
        choices=("euclidean", "cosine"),
        default="euclidean",
        help="euclidean, or cosine: spherical k-means of the rows' directions (metric)",
    )


def _add_fit_params(p, k=None):
    p.add_argument(
        "--k",
        type=_positive_int,
        required=k is None,
        default=k,
        help="number of clusters (n_clusters)",
    )
    p.add_argument(
        "--method",
        choices=("stream", "lloyd"),
        default="stream",
        help="per-chunk summarizer (method)",
    )
    _add_metric(p)
    p.add_argument(
        "--summary-size",
        type=_int_or_auto,
        default="auto",
        help="groups kept per chunk (summary_size)",
    )
    p.add_argument(
        "--split-every", type=_positive_int, default=8, help="merge fan-in (split_every)"
    )
    p.add_argument(
        "--mini-batch-size",
        type=_positive_int,
        default=4096,
        help="rows per mini-batch (mini_batch_size)",
    )
    p.add_argument(
        "--merge-budget",
        type=_int_or_auto,
        default="auto",
        help="groups kept up the tree (merge_budget)",
    )
    p.add_argument(
        "--n-init",
        type=_int_or_auto,
        default="auto",
        help="final restarts (n_init; auto: 10 up to k=100, then 1000/k, at least 3)",
    )
    p.add_argument("--max-iter", type=_positive_int, default=300, help="final Lloyd iterations")
    p.add_argument("--tol", type=float, default=1e-4, help="final Lloyd tolerance (tol)")
    p.add_argument("--random-state", type=int, default=0, help="seed (random_state, default 0)")
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="save finished chunk ranges to DIR; a restarted fit skips them",
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="One-pass core-set k-means over zarr, .npy and Parquet data."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    store_help = (
        "path.zarr, path.zarr:ARRAY (an array of a zarr group), a .npy file or a "
        "directory of .npy files, or a Parquet file or directory"
    )

    p = sub.add_parser("make-data", help="write a seeded Gaussian mixture to a zarr store")
    p.add_argument("store", metavar="STORE", help="zarr store to create")
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--features", type=int, required=True)
    p.add_argument("--components", type=int, default=100, help="mixture components (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sorted", action="store_true", help="rows ordered by component")
    p.add_argument("--chunks", type=int, default=100_000, help="rows per chunk (default 100000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing STORE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_storage_options(p)
    p.set_defaults(func=cmd_make_data)

    p = sub.add_parser("fit", help="fit StreamingKMeans in one pass and write the model")
    p.add_argument("store", metavar="STORE", help=store_help)
    p.add_argument(
        "--chunks",
        type=_positive_int,
        default=None,
        metavar="ROWS",
        help="rows per chunk (default: the input's own chunks)",
    )
    p.add_argument("--columns", default=None, help="Parquet columns, comma-separated")
    p.add_argument(
        "--out",
        default="model.npz",
        metavar="MODEL",
        help="model file to write (default model.npz)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing MODEL file")
    _add_fit_params(p)
    _add_scheduler(p)
    _add_storage_options(p)
    p.set_defaults(func=cmd_fit)

    for name, func, text in (
        ("predict", cmd_predict, "write the nearest center of every row to a zarr store"),
        ("score", cmd_score, "exact inertia and mean squared distance of the data (one pass)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("store", metavar="STORE", help=store_help)
        p.add_argument("model", metavar="MODEL", help="model file written by fit")
        p.add_argument("--chunks", type=_positive_int, default=None, metavar="ROWS")
        p.add_argument("--columns", default=None, help="Parquet columns, comma-separated")
        if name == "predict":
            p.add_argument("--out", required=True, metavar="LABELS", help="zarr store for labels")
            p.add_argument("--overwrite", action="store_true", help="replace an existing store")
        _add_scheduler(p)
        _add_storage_options(p)
        p.set_defaults(func=func)

    p = sub.add_parser("demo", help="fit a lazily generated mixture (no disk, no download)")
    p.add_argument("--rows", type=_positive_int, default=2_000_000)
    p.add_argument("--features", type=_positive_int, default=32)
    p.add_argument("--components", type=_positive_int, default=20)
    p.add_argument("--chunks", type=_positive_int, default=200_000, help="rows per chunk")
    p.add_argument("--seed", type=int, default=0, help="seed of the data")
    p.add_argument("--out", default=None, metavar="MODEL", help="also write the model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing MODEL file")
    _add_fit_params(p, k=20)
    _add_scheduler(p)
    _add_storage_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("elbow", help="cost for every k from one pass, the knee marked")
    p.add_argument("store", metavar="STORE", help=store_help)
    p.add_argument(
        "--k",
        default="2:12",
        metavar="RANGE",
        help="values of k: START:STOP (both included), START:STOP:STEP or a,b,c (default 2:12)",
    )
    p.add_argument("--plot", default=None, metavar="PNG", help="also save the curve (matplotlib)")
    p.add_argument("--chunks", type=_positive_int, default=None, metavar="ROWS")
    p.add_argument("--columns", default=None, help="Parquet columns, comma-separated")
    p.add_argument(
        "--method",
        choices=("stream", "lloyd"),
        default="stream",
        help="per-chunk summarizer (method)",
    )
    _add_metric(p)
    p.add_argument(
        "--summary-size",
        type=_int_or_auto,
        default="auto",
        help="groups kept per chunk (summary_size; auto sizes it for the largest k)",
    )
    p.add_argument(
        "--n-init",
        type=_int_or_auto,
        default=None,
        help="restarts per k (n_init; default: elbow's, 5)",
    )
    p.add_argument("--random-state", type=int, default=0, help="seed (random_state, default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG file")
    _add_scheduler(p)
    _add_storage_options(p)
    p.set_defaults(func=cmd_elbow)
    return parser


def _return_freed_chunks_to_the_os():
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


def main(argv=None):
    """Entry point of the ``dask-streamkm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _return_freed_chunks_to_the_os()
    from .io import InputError

    try:
        return args.func(args)
    except (UserError, InputError) as exc:
        message = str(exc)
    except (ValueError, OSError) as exc:
        message = _first_line(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    message = _redact(message, _storage_options(args))
    print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
