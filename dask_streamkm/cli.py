"""``dask-streamkm``: make data, fit, predict and score from the command line.

A thin layer: every fit flag maps to a :class:`~dask_streamkm.StreamingKMeans` parameter,
:func:`dask_streamkm.io.open_array` turns the input path into a dask array, and the scheduler
flag picks where the tasks run. User errors print one line to stderr and exit with status 1.

Paths may be fsspec URLs; ``--storage-option KEY=VALUE`` gives their filesystem's options,
which are never printed. Outputs are checked before any data is read (an existing one needs
``--overwrite``; one that is or holds an input is refused), written to a temporary name and
renamed into place; a model that cannot be written after the pass is kept at a fallback path
(all in :mod:`._outputs`). Schedulers and their handshake are :mod:`._connect`'s. The progress
bar is tqdm's, counting chunk tasks over every compute of the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time

from . import _outputs
from ._connect import SchedulerConnectError, count_chunk_tasks, scheduler
from ._location import Location, write_atomic
from ._memory import return_freed_chunks_to_the_os
from ._remote import display, first_line, redact

PROG = "dask-streamkm"
#: Task names counted by the progress bar (one task per chunk; a part of a fused task's name).
FIT_TASKS = ("leaf",)
BLOCK_TASKS = ("predict_block",)
BAR_FORMAT = "{desc} {bar:30} {n}/{total} chunks | {elapsed}"
STORE_HELP = (
    "path.zarr, path.zarr:ARRAY (an array of a zarr group), a .npy file or a directory of .npy "
    "files, or a Parquet file or directory; any of them may be a URL (s3://, gs://, ...)"
)


class UserError(Exception):
    """An error in what the user asked for; printed as one line, no traceback."""


# ---------------------------------------------------------------------- progress
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
        with count_chunk_tasks(client, prefixes, show):
            yield counts
        ok = True
    finally:
        for bar in bars:
            bar.leave = ok  # an error clears the bar: its message is the only line left
            bar.close()


def _storage_options(args):
    """The ``--storage-option`` pairs as a dict, or None when none were given."""
    pairs = getattr(args, "storage_options", None)
    return dict(pairs) if pairs else None


def _options_for(spec, args):
    """``storage_options=...`` for a URL when the user gave some; nothing otherwise."""
    return {} if spec is None else Location.of(spec, _storage_options(args)).options


def _check_outputs(args, outputs, inputs):
    """:func:`_outputs.check_outputs` with the command's ``--overwrite`` and storage options."""
    overwrite = getattr(args, "overwrite", False)
    _outputs.check_outputs(outputs, inputs, overwrite, _storage_options(args))


# ---------------------------------------------------------------------- commands
def _open(args):
    from .io import open_array

    columns = _columns(args)
    try:
        X = open_array(
            args.store,
            columns=columns,
            chunks=getattr(args, "chunks", None),
            **_options_for(_outputs.input_path(args.store), args),
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


def _columns(args):
    """The ``--columns`` names, or None without the flag."""
    return args.columns.split(",") if getattr(args, "columns", None) else None


def _table_columns(args):
    """The columns read from the input: the ``--columns`` names, else a Parquet input's own
    columns in their order (:func:`.io.table_columns`); None for an array input (zarr,
    ``.npy``), which has no names. Call it once :func:`_open` has opened the input."""
    from .io import table_columns

    columns = _columns(args)
    if columns is not None:
        return columns
    return table_columns(args.store, **_options_for(_outputs.input_path(args.store), args))


def _check_model_columns(args, model):
    """Refuse input columns that differ from the columns the model was fitted on (its
    ``feature_names_in_``: a ``fit`` of a Parquet input on the command line, or a DataFrame
    in Python), in names or order: the rows' values would be read against the wrong centers'
    coordinates. The columns are the ``--columns`` names, else a Parquet input's own
    (:func:`_table_columns`; none for an array input, which is not checked). Call it once
    :func:`_open` has opened the input. The loaded model then forgets its names: the arrays
    read from paths have none for it to check (it would warn that X has none)."""
    names = model.__dict__.pop("feature_names_in_", None)
    if names is None:
        return
    columns = _table_columns(args)
    if columns is None or columns == [str(n) for n in names]:
        return
    fitted = ",".join(map(str, names))
    given = (
        f"--columns {args.columns}"
        if _columns(args) is not None
        else f"{args.store!r} has the columns {','.join(columns)} and no --columns was given"
    )
    raise UserError(
        f"{given}: the model was fitted on the columns {fitted} (in that order), so the rows "
        f"would be compared with centers of other columns; pass --columns {fitted}."
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
        "refine_passes": args.refine_passes,
        "metric": args.metric,
    }
    return params


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
    # --storage-option reaches a checkpoint URL's filesystem through the estimator's parameter
    model = StreamingKMeans(**_model_params(args), **_options_for(args.checkpoint, args))
    with _progress(client, FIT_TASKS, label, args.quiet) as counts:
        try:
            model.fit(X)
        except OSError as exc:
            if not args.checkpoint:
                raise
            raise UserError(
                f"--checkpoint {args.checkpoint!r}: could not save a finished chunk range "
                f"({first_line(exc)}); the ranges saved so far are kept there and a rerun "
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
    _outputs.save_or_fallback(
        "--out", args.out, model.save, "model", ".npz", _storage_options(args), args.overwrite
    )
    print(f"model written to {display(args.out)}")


@contextlib.contextmanager
def _writing(flag, spec, what):
    """Any failure of writing ``what`` to ``spec`` (a full disk, a store gone away) becomes one
    :class:`~._outputs.OutputError` naming the flag and the path; user errors pass."""
    from .io import InputError

    try:
        yield
    except (UserError, InputError, _outputs.OutputError, SchedulerConnectError):
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, or a store client's own error
        raise _outputs.OutputError(
            f"{flag} {display(spec)!r}: writing the {what} failed ({type(exc).__name__}: "
            f"{first_line(exc)}); an old output there is kept as it was. Free space or check "
            "that the store is reachable, then rerun."
        ) from exc


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
    with _writing("STORE", args.store, "data"):
        write_atomic(args.store, write, _storage_options(args), args.overwrite, flag="STORE")
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
    # The Parquet columns read (--columns, else all the table's), saved with the model:
    # predict and score check theirs against them (_check_model_columns), as scikit-learn
    # checks a DataFrame's names. An array input (zarr, .npy) has none.
    columns = _table_columns(args)
    with scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
        model = _fit(X, args, client)
    if columns is not None:
        import numpy as np

        model.feature_names_in_ = np.asarray(columns, dtype=object)
    _save_model(model, args)
    return 0


def _load_model(args):
    from . import StreamingKMeans

    return StreamingKMeans.load(args.model, **_options_for(args.model, args))


def cmd_predict(args):
    from .io import labels_writer

    _check_outputs(
        args, [("--out", args.out, "store")], [("input", args.store), ("model", args.model)]
    )
    model = _load_model(args)
    X = _open(args)
    _check_model_columns(args, model)
    with scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
        labels = model.predict(X)
        with (
            _progress(client, BLOCK_TASKS, "predict", args.quiet),
            _writing("--out", args.out, "labels"),
        ):
            options = _storage_options(args)
            write = labels_writer(labels, options)
            write_atomic(args.out, write, options, args.overwrite, flag="--out")
    print(f"labels of {X.shape[0]:,} rows written to {display(args.out)}")
    return 0


def cmd_score(args):
    model = _load_model(args)
    X = _open(args)
    _check_model_columns(args, model)
    _check_rows(X, args)
    with scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
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
    with scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
        model = _fit(X, args, client)
    if args.out:
        _save_model(model, args)
    return 0


def cmd_elbow(args):
    from .elbow import PLOT_HINT, elbow, parse_k_range, plot_format

    try:
        ks = parse_k_range(args.k)
    except ValueError as exc:
        raise UserError(f"--k {args.k!r}: {exc}") from None
    if args.plot is not None:
        try:  # before the pass, not after it
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError(
                f"--plot needs matplotlib, which is not installed: {PLOT_HINT}"
            ) from None
        try:
            plot_format(args.plot)
        except ValueError as exc:
            raise UserError(f"--plot {exc}") from None
    _check_outputs(args, [("--plot", args.plot, "file")], [("input", args.store)])
    X = _open(args)
    _check_rows(X, args)
    with scheduler(args.scheduler, args.n_workers, args.connect_timeout) as client:
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
        _outputs.save_or_fallback(
            "--plot", args.plot, result.plot, "plot", ext, _storage_options(args), args.overwrite
        )
        print(f"plot written to {display(args.plot)}")
    return 0


# ---------------------------------------------------------------------- parser
def _int_at_least(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} should be >= {minimum}")
    return value


def _positive_int(text):
    return _int_at_least(text, 1)


def _non_negative_int(text):
    return _int_at_least(text, 0)


def _seconds(text):
    """A positive finite number of seconds (``nan``, ``inf``, 0 and negatives refused)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(
            f"{text!r} should be a positive finite number of seconds, such as 10"
        )
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


CHUNKS_HELP = (
    "rows per chunk (e.g. 200000), or the memory of the task that summarizes a chunk (e.g. "
    "64MiB: the chunk and its working copies); default: Dask's array.chunk-size setting "
    "(128MiB unless configured): .npy files in row ranges, Parquet by row groups (small ones "
    "combined, a large one split), zarr by whole stored chunks (combined when tiny)"
)


def _chunks(text):
    """``--chunks``: a number of rows (an int >= 1) or a size such as ``64MiB``."""
    if text.strip().isdigit():
        return _positive_int(text)
    from dask.utils import parse_bytes

    try:
        if parse_bytes(text) >= 1:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a number of rows >= 1 nor a size such as 64MiB"
    )


def _add_input(p):
    p.add_argument("store", metavar="STORE", help=STORE_HELP)
    p.add_argument("--chunks", type=_chunks, default=None, metavar="ROWS|SIZE", help=CHUNKS_HELP)
    p.add_argument("--columns", default=None, help="Parquet columns, comma-separated")


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
        type=_seconds,
        default=10.0,
        help="seconds to wait for a scheduler address (default 10)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_method_and_metric(p):
    """``--method`` (the per-chunk summarizer) and ``--metric``, shared by fit, demo and elbow."""
    p.add_argument(
        "--method",
        choices=("tree", "stream", "lloyd"),
        default="tree",
        help="per-chunk summarizer (method)",
    )
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
    _add_method_and_metric(p)
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
        help=(
            "final restarts (n_init; auto: 10 up to k=100, then 1000/k, at least 3; up to 100 "
            "where restarts are cheap)"
        ),
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
    p.add_argument(
        "--refine-passes",
        type=_non_negative_int,
        default=0,
        help=(
            "extra reads of the data, each an exact Lloyd step and then Lloyd over the "
            "pass's groups of rows (refine_passes)"
        ),
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description="One-pass core-set k-means over zarr, .npy and Parquet data."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-data", help="write a seeded Gaussian mixture to a zarr store")
    p.add_argument("store", metavar="STORE", help="zarr store to create")
    p.add_argument("--rows", type=int, required=True, help="rows to write")
    p.add_argument("--features", type=int, required=True, help="features (columns) per row")
    p.add_argument("--components", type=int, default=100, help="mixture components (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data (default 0)")
    p.add_argument("--sorted", action="store_true", help="rows ordered by component")
    p.add_argument("--chunks", type=int, default=100_000, help="rows per chunk (default 100000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing STORE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_storage_options(p)
    p.set_defaults(func=cmd_make_data)

    p = sub.add_parser("fit", help="fit StreamingKMeans in one pass and write the model")
    _add_input(p)
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
        _add_input(p)
        p.add_argument("model", metavar="MODEL", help="model file written by fit (path or URL)")
        if name == "predict":
            p.add_argument(
                "--out",
                required=True,
                metavar="LABELS",
                help="zarr store for labels, e.g. labels.zarr (a directory: a name ending in "
                ".npy, .csv, .parquet... is refused)",
            )
            p.add_argument("--overwrite", action="store_true", help="replace an existing LABELS")
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
    _add_input(p)
    p.add_argument(
        "--k",
        default="2:12",
        metavar="RANGE",
        help="values of k: START:STOP (both included), START:STOP:STEP or a,b,c (default 2:12)",
    )
    p.add_argument("--plot", default=None, metavar="PNG", help="also save the curve (matplotlib)")
    _add_method_and_metric(p)
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


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system or container stopping the command), raised in the main thread
    as an interrupt so that every temporary output is removed on the way out."""


def _raise_terminated(signum, frame):
    raise _Terminated


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises :class:`_Terminated` while the command runs (the default action would
    end the process at once and leave its temporary files and stores behind); the previous
    handler is restored afterwards. Only the main thread can install a handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    """Entry point of the ``dask-streamkm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return_freed_chunks_to_the_os()
    from .io import InputError

    try:
        with _terminate_as_interrupt():
            return args.func(args)
    except (UserError, InputError, _outputs.OutputError, SchedulerConnectError) as exc:
        message = str(exc)
    except (ValueError, OSError) as exc:
        message = first_line(exc)
    except _Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    values = [v if isinstance(v, list) else [v] for v in vars(args).values()]
    urls = [v for vs in values for v in vs if isinstance(v, str)]
    message = redact(message, _storage_options(args), urls)
    print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
