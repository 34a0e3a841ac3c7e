"""Output safety of the command line: no output overwrites, or lies inside, an input.

Pure functions over paths, URLs and ``storage_options`` (no argparse): every destination is
checked before any data is read (:func:`check_outputs`: not empty, not a device or FIFO, not
an array of an existing group, not inside an input or another output, a writable parent or
bucket), written under a temporary name, checked complete and only then switched into place
with the old output kept whole until then, exclusively when there is no ``--overwrite``
(:func:`write_then_rename`, which says what is atomic on which filesystem), and a result
computed by a whole pass that still cannot be written is kept at a fallback path
(:func:`save_or_fallback`). URL handling is :mod:`dask_streamkm._remote`'s. Every refusal is
one :class:`OutputError` whose message names the flag, the path, the rule and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
import uuid

from ._remote import display, filesystem, first_line, is_url, local_path


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
        if kind == "checkpoint":
            check_checkpoint(flag, spec, storage_options)
            continue
        if is_url(spec):
            if exists(spec, storage_options) and not overwrite:
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
    if head != spec and exists(head, storage_options):
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


def write_then_rename(spec, write, storage_options=None, overwrite=True, flag="--out"):
    """``write(tmp)`` to a fresh temporary name next to ``spec``, then switch it into place.

    The old output stays whole and readable at ``spec`` until the new one is complete:

    - local file: ``os.replace`` (atomic); without ``overwrite`` an exclusive ``os.link``
      (fails if another writer created ``spec`` meanwhile).
    - local directory (a zarr store): one ``renameat2(RENAME_EXCHANGE)`` on Linux (atomic
      swap; ``RENAME_NOREPLACE`` without ``overwrite``), else two renames whose gap is
      restored on failure.
    - URL file: one whole-object write of the new bytes (atomic on S3, GCS and Azure);
      exclusive (``If-None-Match``) without ``overwrite``.
    - URL store: :func:`_switch_remote_store`: the new chunks are copied in under keys the old
      store does not use, then the metadata object (one atomic write) switches readers.

    Errors of ``write`` propagate after the temporary copy is removed; a failed switch raises
    :class:`OutputError` saying where the old and new outputs are.
    """
    spec = os.fspath(spec)
    refuse_special(flag, spec)
    tmp = temporary(spec)
    if is_url(spec):
        fs, path = filesystem(spec, storage_options)
        _, tmp_path = filesystem(tmp, storage_options)
        try:
            write(tmp)
            if fs.isfile(tmp_path):
                data = fs.cat_file(tmp_path)
                try:
                    fs.pipe_file(path, data, mode="overwrite" if overwrite else "create")
                except FileExistsError:
                    raise _taken(flag, spec) from None
            else:
                _verify_store(flag, spec, fs, tmp_path)
                _switch_remote_store(flag, spec, fs, path, tmp_path, overwrite)
        except BaseException as exc:
            if _remove_quietly(fs, tmp_path) or not isinstance(exc, Exception):
                raise
            note = (
                f"the temporary copy {display(tmp)!r} could not be removed either (is the "
                "store reachable?): delete it."
            )
            if isinstance(exc, OutputError):
                raise OutputError(f"{str(exc).rstrip('.')}; {note}") from exc
            raise OutputError(
                f"{flag} {display(spec)!r}: {first_line(exc).rstrip('.')}; the old output is "
                f"kept as it was; {note}"
            ) from exc
        _remove_quietly(fs, tmp_path)
        return
    path = os.path.abspath(local_path(spec))
    try:
        write(tmp)
        if os.path.isdir(tmp):
            from fsspec.implementations.local import LocalFileSystem

            _verify_store(flag, spec, LocalFileSystem(), tmp)
        _switch_local(flag, spec, tmp, path, overwrite)
    finally:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.remove(tmp)


def refuse_special(flag, spec):
    """An :class:`OutputError` when a local ``spec`` is (or links to) a device, FIFO or socket:
    those are never replaced by a regular file."""
    if is_url(spec):
        return
    path = local_path(spec)
    try:
        mode = os.stat(path).st_mode
    except OSError:  # nothing there (or a dangling link): a new file may be written
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise OutputError(
            f"{flag} {spec!r} is a device, FIFO or socket, not a file or directory; outputs "
            "are written to a temporary name and renamed into place, which would replace it. "
            "Give the path of a regular file or directory."
        )


def _taken(flag, spec):
    return OutputError(
        f"{flag} {display(spec)!r} was created by another writer while this one ran; it is "
        "kept as is. Rerun with another path, or with --overwrite to replace it."
    )


# Linux renameat2(2) flags: fail if the target exists; swap the two names atomically.
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src, dst, flags):
    """``renameat2(src, dst, flags)``; False where the call or the flag is not supported."""
    import ctypes
    import errno

    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    if func(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), ctypes.c_uint(flags)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), dst)


def _switch_local(flag, spec, tmp, path, overwrite):
    """Move the complete ``tmp`` to ``path`` (see :func:`write_then_rename`)."""
    refuse_special(flag, spec)  # again: the path may have been made since the first check
    exists = os.path.lexists(path)
    if not overwrite:
        try:
            if os.path.isdir(tmp):
                if not _renameat2(tmp, path, _RENAME_NOREPLACE):
                    if os.path.lexists(path):
                        raise FileExistsError(path)
                    os.rename(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise
                except OSError:  # filesystems without hard links
                    if os.path.lexists(path):
                        raise FileExistsError(path) from None
                    os.replace(tmp, path)
        except FileExistsError:
            raise _taken(flag, spec) from None
        return
    if not exists or not (os.path.isdir(tmp) or os.path.isdir(path)):
        os.replace(tmp, path)  # a file over a file, or nothing there: atomic
        return
    if _renameat2(tmp, path, _RENAME_EXCHANGE):
        return  # the old output is now at tmp, removed by the caller
    old = temporary(path)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except OSError:
        os.replace(old, path)
        raise
    os.replace(old, tmp)  # removed by the caller


def _store_keys(fs, root):
    """``{relative key: full path}`` of every object below ``root``."""
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    return {full[len(root) + 1 :]: full for full in fs.find(root) if full != root}


def _array_meta(fs, root):
    """The zarr v3 array metadata of ``root`` as a dict, or None (a group, v2, not zarr)."""
    try:
        meta = json.loads(fs.cat_file(f"{root.rstrip('/')}/zarr.json"))
    except (OSError, ValueError):
        return None
    if meta.get("node_type") != "array" or meta.get("chunk_grid", {}).get("name") != "regular":
        return None
    if meta.get("chunk_key_encoding", {}).get("name") != "default":
        return None
    return meta


def _separator(meta):
    return meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")


def _verify_store(flag, spec, fs, root):
    """The new zarr array at ``root`` holds every chunk of its grid (no switch otherwise)."""
    meta = _array_meta(fs, root)
    if meta is None:
        return
    shape = meta["shape"]
    chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
    expected = 1
    for n, c in zip(shape, chunk_shape, strict=True):
        expected *= -(-n // c)
    prefix = "c" + _separator(meta)
    found = sum(key.startswith(prefix) or key == "c" for key in _store_keys(fs, root))
    if found < expected:
        raise OutputError(
            f"{flag} {display(spec)!r}: the new store holds {found} of its {expected} chunks "
            "after the write, so it was not switched in; the old output is kept. Rerun."
        )


_LOCK = ".dask-streamkm-writing"


def _switch_remote_store(flag, spec, fs, path, tmp_path, overwrite):
    """Put the complete store at ``tmp_path`` in place of the one at ``path`` (a URL).

    Object stores have no rename: every object is copied. The old store stays whole and
    readable until one atomic object write switches readers to the new one:

    1. a lock object ``path/.dask-streamkm-writing`` is created exclusively (two writers
       never copy into one store at once);
    2. the new chunk objects are copied in under keys the old store does not use (a zarr v3
       array's chunk keys alternate between the separators ``/`` and ``.``, which its
       ``zarr.json`` names), so readers of the old ``zarr.json`` still read only old chunks;
    3. the new ``zarr.json`` is written in one request (exclusively without ``overwrite``):
       the switch;
    4. the old chunks, the lock and the temporary store are removed.

    A failure before step 3 removes what was copied and keeps the old store; one after it
    leaves only unreferenced old objects, removed by the next replace. A store that is not a
    zarr v3 array (a group, zarr v2) cannot switch by its metadata: its old objects are
    removed before the new ones are copied (the old output is then NOT kept through the
    copy), which the message of a failure says.
    """
    path = path.rstrip("/")
    lock = f"{path}/{_LOCK}"
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
        fs.pipe_file(lock, stamp, mode="create")
    except FileExistsError:
        raise OutputError(
            f"{flag} {display(spec)!r} is being replaced by another run, or a run was cut off "
            f"while replacing it (its lock {display(fs.unstrip_protocol(lock))!r} is still "
            "there). If no other run writes it, delete that object and rerun."
        ) from None
    copied = []
    switched = removed_old = False
    try:
        old = _store_keys(fs, path)
        old.pop(_LOCK, None)
        if old and not overwrite:
            raise _taken(flag, spec)
        new = _store_keys(fs, tmp_path)
        new_meta, old_meta = _array_meta(fs, tmp_path), _array_meta(fs, path) if old else None
        targets = dict(zip(new, new, strict=True))
        if new_meta is not None and old_meta is not None:
            sep = _separator(new_meta)
            if _separator(old_meta) == sep:  # give the new chunks the other separator
                other = "." if sep == "/" else "/"
                targets = {
                    k: "c" + k[1:].replace(sep, other) if k.startswith("c" + sep) else k
                    for k in new
                }
                new_meta["chunk_key_encoding"]["configuration"] = {"separator": other}
        meta_keys = {"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"}
        data = [k for k in new if k not in meta_keys]
        live = set(old)  # what readers of the old store read; the rest may be overwritten
        if old_meta is not None:
            prefix = "c" + _separator(old_meta)
            live = {k for k in old if k in meta_keys or k == "c" or k.startswith(prefix)}
        clash = {targets[k] for k in data} & live
        if clash:  # not a zarr v3 array: no metadata switch, the old store goes first
            removed_old = True
            fs.rm(sorted(old.values()))
            old = {}
        srcs = [new[k] for k in data]
        dsts = [f"{path}/{targets[k]}" for k in data]
        copied = dsts
        if srcs:
            fs.copy(srcs, dsts)
        for key in sorted(set(new) & meta_keys, key=lambda k: k == "zarr.json"):
            body = (
                json.dumps(new_meta, indent=2).encode()
                if key == "zarr.json" and new_meta is not None
                else fs.cat_file(new[key])
            )
            try:
                fs.pipe_file(f"{path}/{key}", body, mode="overwrite" if overwrite else "create")
            except FileExistsError:
                raise _taken(flag, spec) from None
        switched = True
        written = {targets[k] for k in data} | (set(new) & meta_keys)
        stale = [full for key, full in old.items() if key not in written]
        if stale:
            fs.rm(stale)
    except BaseException as exc:
        cleaned = switched or not copied or _remove_quietly(fs, copied)
        unlocked = _remove_quietly(fs, lock)
        if isinstance(exc, (OutputError, KeyboardInterrupt)) and cleaned and unlocked:
            raise
        if switched:
            state = "the new output is in place (some old objects may be left in it)"
        elif removed_old:
            state = "the old output (not a zarr v3 array) had been removed before the copy"
        else:
            state = "the old output is kept as it was"
        left = "" if cleaned else "; new objects copied into it are not read by its zarr.json"
        if not unlocked:
            left += f"; delete the lock {display(fs.unstrip_protocol(lock))!r} before a rerun"
        raise OutputError(
            f"{flag} {display(spec)!r}: replacing the store failed ({first_line(exc)}); "
            f"{state}{left}."
        ) from exc
    _remove_quietly(fs, lock)


def _remove_quietly(fs, name):
    """Remove a file or a directory tree (or a list of files), best effort: False when that
    failed."""
    try:
        if isinstance(name, list):
            fs.rm(name)
        elif fs.exists(name):
            fs.rm(name, recursive=True)
    except Exception:  # noqa: BLE001 - the store may be unreachable: say so, go on
        return False
    return True


def fallback_path(kind, ext):
    """A fresh local path in the system's temporary directory for a ``kind`` of output."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return os.path.join(tempfile.gettempdir(), f"dask-streamkm-{kind}-{stamp}-{os.getpid()}{ext}")


def save_or_fallback(flag, spec, write, kind, ext, storage_options=None, overwrite=True):
    """Write an output computed by a whole pass; if that fails, keep it at a fallback path.

    ``write(path, options)`` writes the output to ``path`` with ``options`` its keyword
    arguments (``storage_options=`` for a URL); without ``overwrite`` the output is created
    exclusively (see :func:`write_then_rename`). Raises :class:`OutputError` saying where
    the output was kept.
    """
    try:
        write_then_rename(
            spec,
            lambda tmp: write(tmp, options_for(spec, storage_options)),
            storage_options,
            overwrite,
            flag,
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
