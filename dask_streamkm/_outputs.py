"""Output safety of the command line: no output overwrites, or lies inside, an input.

Pure functions over paths, URLs and ``storage_options`` (no argparse): every destination is
checked before any data is read (:func:`check_outputs`), written to a temporary name and
renamed into place (:func:`write_then_rename`), and a result computed by a whole pass that
still cannot be written is kept at a fallback path (:func:`save_or_fallback`). URL handling
is :mod:`dask_streamkm._remote`'s. Every refusal is one :class:`OutputError` whose message
names the flag, the path, the rule and the fix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

from ._remote import filesystem, first_line, is_url, local_path


class OutputError(ValueError):
    """A destination that would destroy an input, exists already, or cannot be written."""


def options_for(spec, storage_options):
    """``storage_options=...`` for a URL when some were given; nothing otherwise (so that
    local paths see the same call as without options)."""
    return {"storage_options": storage_options} if storage_options and is_url(spec) else {}


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


def exists(spec, storage_options=None):
    """A file, directory or object (or any object below the prefix) is at ``spec``."""
    spec = os.fspath(spec)
    if not is_url(spec):
        return os.path.lexists(local_path(spec))
    fs, path = filesystem(spec, storage_options)
    return fs.exists(path)


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
    for flag, spec, kind in outputs:
        if not spec:
            continue
        spec = os.fspath(spec)
        where = location(spec, storage_options)
        for what, source, place in sources:
            if overlap(where, place):
                raise OutputError(
                    f"{flag} {spec!r} is, contains or lies inside the {what} "
                    f"{os.fspath(source)!r}; writing there would destroy the input, so it is "
                    "refused even with --overwrite. Choose another path."
                )
        if kind == "checkpoint":
            check_checkpoint(flag, spec, storage_options)
            continue
        if is_url(spec):
            if exists(spec, storage_options) and not overwrite:
                raise OutputError(f"{flag} {spec!r} already exists; remove it or pass --overwrite.")
            continue  # object stores have no directories to check
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


def check_checkpoint(flag, spec, storage_options=None):
    """The checkpoint directory exists (created) and takes a file: a probe written, removed."""
    name = f".dask-streamkm-probe-{uuid.uuid4().hex}"
    try:
        if is_url(spec):
            fs, path = filesystem(spec, storage_options)
            fs.makedirs(path, exist_ok=True)
            fs.pipe_file(f"{path.rstrip('/')}/{name}", b"")
            fs.rm_file(f"{path.rstrip('/')}/{name}")
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


def temporary(spec):
    """A fresh name next to ``spec`` (same directory, same extension), for write-then-rename."""
    spec = os.fspath(spec).rstrip("/")
    if is_url(spec):
        head, _, name = spec.rpartition("/")
    else:
        head, name = os.path.split(os.path.abspath(local_path(spec)))
    stem, ext = os.path.splitext(name)
    name = f".{stem}.{uuid.uuid4().hex}.tmp{ext}"
    return f"{head}/{name}" if is_url(spec) else os.path.join(head, name)


def write_then_rename(spec, write, storage_options=None):
    """``write(tmp)`` to a temporary name next to ``spec``, then rename it into place.

    A file replaces the old one atomically (``os.replace``); a store directory replaces the old
    one by two renames (the old store is removed only once the new one is in place). On object
    stores a file is one whole-object write (atomic), a store is written aside and moved.
    """
    tmp = temporary(spec)
    if is_url(spec):
        fs, path = filesystem(os.fspath(spec), storage_options)
        _, tmp_path = filesystem(tmp, storage_options)
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
    path = os.path.abspath(local_path(spec))
    old = None
    try:
        write(tmp)
        if os.path.isdir(tmp) and os.path.lexists(path):
            old = temporary(path)
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


def fallback_path(kind, ext):
    """A fresh local path in the system's temporary directory for a ``kind`` of output."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(tempfile.gettempdir(), f"dask-streamkm-{kind}-{stamp}-{os.getpid()}{ext}")


def save_or_fallback(flag, spec, write, kind, ext, storage_options=None):
    """Write an output computed by a whole pass; if that fails, keep it at a fallback path.

    ``write(path, options)`` writes the output to ``path`` with ``options`` its keyword
    arguments (``storage_options=`` for a URL). Raises :class:`OutputError` saying where the
    output was kept.
    """
    try:
        write_then_rename(
            spec, lambda tmp: write(tmp, options_for(spec, storage_options)), storage_options
        )
    except Exception as exc:  # noqa: BLE001 - any failure: the result must survive
        reason = first_line(exc)
        fallback = fallback_path(kind, ext)
        try:
            write(fallback, {})
        except Exception as again:  # noqa: BLE001
            raise OutputError(
                f"{flag} {spec!r}: could not write the {kind} ({reason}), nor to {fallback!r} "
                f"({first_line(again)})."
            ) from None
        raise OutputError(
            f"{flag} {spec!r}: could not write the {kind} ({reason}); it was saved to "
            f"{fallback!r} instead."
        ) from None
