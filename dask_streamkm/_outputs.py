"""Output safety of the command line: no output overwrites, or lies inside, an input.

Pure functions over paths, URLs and ``storage_options`` (no argparse): every destination is
checked before any data is read (:func:`check_outputs`: not empty, not a device or FIFO, not
an array of an existing group, not inside an input or another output, a writable parent or
bucket); outputs are written by the one atomic write of the file layer
(:func:`._location.write_atomic`: exclusive without ``--overwrite``, checked complete, then
switched into place), and a result computed by a whole pass that still cannot be written is
kept at a fallback path (:func:`save_or_fallback`). URL handling is :mod:`dask_streamkm._remote`'s.
Every refusal is one :class:`OutputError` whose message names the flag, the path, the rule and
the fix.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid

from ._location import Location, OutputError, refuse_special, write_atomic
from ._remote import display, filesystem, first_line, is_url, local_path


def input_path(spec):
    """The path of an input spec without its ``:ARRAY`` suffix (a zarr group's array)."""
    spec = os.fspath(spec)
    head, sep, name = spec.rpartition(":")
    if sep and name and "/" not in name and not os.path.exists(local_path(spec)):
        return head
    return spec


def location(spec, storage_options=None):
    """``(protocol, normalized path)``: two specs that name the same place compare equal."""
    spec = os.fspath(spec)
    if not is_url(spec):
        return "file", os.path.realpath(os.path.abspath(local_path(spec)))
    fs, path = filesystem(spec, storage_options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, "/" + path.strip("/")


def overlap(a, b):
    """One location is, or lies inside, the other."""
    if a[0] != b[0]:
        return False
    sep = os.sep if a[0] == "file" else "/"
    x, y = a[1].rstrip(sep) or sep, b[1].rstrip(sep) or sep
    return x == y or x.startswith(y.rstrip(sep) + sep) or y.startswith(x.rstrip(sep) + sep)


#: Name endings of files that a zarr store of labels is not (``np.load`` or pandas would be
#: handed a directory): refused as the name of one (:func:`refuse_file_name`).
FILE_SUFFIXES = (".npy", ".npz", ".parquet", ".csv", ".txt", ".json", ".pkl", ".h5", ".hdf5")


def refuse_file_name(flag, spec):
    """Refuse a zarr store's path that names a file of another kind (``labels.npy``): the
    store is a directory (or prefix of objects), which ``np.load`` and the like cannot
    read. Raises :class:`OutputError` naming the flag and a name that fits."""
    name = os.fspath(spec).rstrip("/").rpartition("/")[2]
    stem, dot, suffix = name.rpartition(".")
    if dot and stem and f".{suffix.lower()}" in FILE_SUFFIXES:
        raise OutputError(
            f"{flag} {spec!r} names a .{suffix} file, but labels are written as a zarr store "
            f"(a directory that np.load and other readers of .{suffix} files cannot open); "
            f"name it e.g. {stem + '.zarr'!r} and read it with zarr.open or "
            "dask.array.from_zarr."
        )


def check_outputs(outputs, inputs, overwrite=False, storage_options=None):
    """Check every destination before any data is read.

    ``outputs``: ``(flag, spec, kind)`` with kind ``"file"`` (a model, a plot), ``"store"`` (a
    zarr store) or ``"checkpoint"`` (a directory kept between runs); ``inputs``: ``(what,
    spec)``. An output that is an input, lies inside one or holds one is refused even with
    ``overwrite``; an existing file or store needs ``overwrite``; a local destination needs
    an existing parent directory; a checkpoint directory must take a file. Raises
    :class:`OutputError`.
    """
    sources = [
        (what, spec, location(input_path(spec), storage_options)) for what, spec in inputs if spec
    ]
    seen = []
    for flag, spec, kind in outputs:
        if spec is None:
            continue
        spec = os.fspath(spec)
        if not spec.strip():
            raise OutputError(f"{flag} {spec!r} is empty; give a path such as {_EXAMPLE[kind]}.")
        _refuse_array_in_group(flag, spec, storage_options)
        refuse_special(flag, spec)
        where = location(spec, storage_options)
        for other_flag, other, place in seen:
            if overlap(where, place):
                raise OutputError(
                    f"{flag} {spec!r} is, contains or lies inside {other_flag} {other!r}; one "
                    "output would overwrite the other. Give them separate paths."
                )
        seen.append((flag, spec, where))
        for what, source, place in sources:
            if overlap(where, place):
                raise OutputError(
                    f"{flag} {spec!r} is, contains or lies inside the {what} "
                    f"{os.fspath(source)!r}; writing there would destroy the input, so it is "
                    "refused even with --overwrite. Choose another path."
                )
        if kind == "store":
            refuse_file_name(flag, spec)
        if kind == "checkpoint":
            check_checkpoint(flag, spec, storage_options)
            continue
        if is_url(spec):
            if Location.of(spec, storage_options).exists() and not overwrite:
                raise OutputError(f"{flag} {spec!r} already exists; remove it or pass --overwrite.")
            # Object stores have no directories to check: a probe object written and removed
            # next to the output finds a missing bucket or read-only credentials now.
            head = spec.rstrip("/").rpartition("/")[0]
            _probe(flag, spec, spec if head.endswith(":/") else head, storage_options)
            continue
        path = local_path(spec)
        parent = os.path.dirname(os.path.abspath(path))
        if kind == "file" and os.path.isdir(path):
            raise OutputError(
                f"{flag} {spec!r} is a directory; give a file path such as {spec.rstrip('/')}"
                f"/{'model.npz' if flag == '--out' else 'elbow.png'}."
            )
        if kind == "store" and os.path.isfile(path):
            raise OutputError(
                f"{flag} {spec!r} is a file; a zarr store is a directory: give a new path "
                "such as labels.zarr, or remove the file."
            )
        if os.path.lexists(path) and not overwrite:
            raise OutputError(f"{flag} {spec!r} already exists; remove it or pass --overwrite.")
        if not os.path.isdir(parent):
            raise OutputError(
                f"{flag} {spec!r}: the directory {parent!r} does not exist; create it first."
            )
        if not os.access(parent, os.W_OK):
            raise OutputError(
                f"{flag} {spec!r}: the directory {parent!r} is not writable; choose a directory "
                "you can write to."
            )


_EXAMPLE = {"file": "model.npz", "store": "labels.zarr", "checkpoint": "checkpoints/"}


def _refuse_array_in_group(flag, spec, storage_options=None):
    """``path.zarr:NAME`` as an output: outputs are whole stores or files, never one array of
    an existing zarr group (writing there would make a sibling named ``path.zarr:NAME``)."""
    head = input_path(spec)
    if head != spec and Location.of(head, storage_options).exists():
        raise OutputError(
            f"{flag} {spec!r} names an array inside {head!r}; outputs are written as a whole "
            f"store or file, not into an existing zarr group. Give a new path such as "
            f"{_EXAMPLE['store']}."
        )


def _probe(flag, spec, directory, storage_options=None):
    """A probe object written to and removed from ``directory`` (a URL), or an OutputError
    naming the output: a missing bucket, read-only credentials, an unreachable store."""
    name = f".dask-streamkm-probe-{uuid.uuid4().hex}"
    try:
        fs, path = filesystem(directory, storage_options)
        fs.pipe_file(f"{path.rstrip('/')}/{name}", b"")
        fs.rm_file(f"{path.rstrip('/')}/{name}")
    except Exception as exc:  # noqa: BLE001 - OSError, or a client's own (credentials...)
        raise OutputError(
            f"{flag} {display(spec)!r} cannot be written ({first_line(exc)}); check that the "
            "bucket (or container) exists and that the credentials may write to it."
        ) from None


def check_checkpoint(flag, spec, storage_options=None):
    """The checkpoint directory exists (created) and takes a file: a probe written, removed."""
    name = f".dask-streamkm-probe-{uuid.uuid4().hex}"
    try:
        if is_url(spec):
            fs, path = filesystem(spec, storage_options)
            fs.makedirs(path, exist_ok=True)
            _probe(flag, spec, spec, storage_options)
            return
        path = local_path(spec)
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(
                f"{flag} {spec!r} is a file; it should be a directory (a new or existing one)."
            )
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, name)
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise OutputError(
            f"{flag} {spec!r} is not a writable directory ({first_line(exc)}); "
            "choose a directory you can write to."
        ) from None


def fallback_path(kind, ext):
    """A fresh local path in the system's temporary directory for a ``kind`` of output."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(tempfile.gettempdir(), f"dask-streamkm-{kind}-{stamp}-{os.getpid()}{ext}")


def save_or_fallback(flag, spec, write, kind, ext, storage_options=None, overwrite=True):
    """Write an output computed by a whole pass; if that fails, keep it at a fallback path.

    ``write(path)`` writes the output (a file) to the local ``path``; it is switched into place
    at ``spec`` by :func:`._location.write_atomic` (for a URL its bytes go up in one request),
    exclusively without ``overwrite``. Raises :class:`OutputError` saying where the output was
    kept.
    """
    try:
        write_atomic(spec, write, storage_options, overwrite, flag, local=True)
    except Exception as exc:  # noqa: BLE001 - any failure: the result must survive
        reason = first_line(exc)
        fallback = fallback_path(kind, ext)
        try:
            write(fallback)
        except Exception as again:  # noqa: BLE001
            raise OutputError(
                f"{flag} {spec!r}: could not write the {kind} ({reason}), nor to {fallback!r} "
                f"({first_line(again)})."
            ) from None
        raise OutputError(
            f"{flag} {spec!r}: could not write the {kind} ({reason}); it was saved to "
            f"{fallback!r} instead."
        ) from None
