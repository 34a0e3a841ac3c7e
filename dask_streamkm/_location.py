"""The file layer: where a file or store lives (:class:`Location`) and the one atomic write.

Every file and store the library writes (model, summary and checkpoint files, plots, labels,
data made by the command line) goes through :func:`write_atomic`: the new output is written under
a fresh temporary name (:func:`temporary`), checked complete, and only then switched into
place, so a reader never sees a partial output and an old output stays whole and readable
until the new one is complete; without ``overwrite`` the switch is an exclusive create (an
output made meanwhile by another writer is kept). URL text, filesystems, redaction and
fingerprints are :mod:`._remote`'s; ``.npz`` reading is :mod:`._npz`'s.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass, field

from ._remote import (
    DestinationNotFoundError,
    display,
    filesystem,
    first_line,
    is_url,
    local_path,
    local_temp,
    read_bytes,
    redact,
    redact_options,
    temp_name,
)


class OutputError(ValueError):
    """A destination that would destroy an input, exists already, or cannot be written."""


@dataclass(frozen=True, repr=False)
class Location:
    """A local path or an fsspec URL with the storage options of its filesystem.

    ``url`` is the path or URL as given (a str); ``storage_options`` apply to a URL only and
    are never shown: the repr, :attr:`shown` and :meth:`redact` go through
    :func:`._remote.redact` / :func:`._remote.redact_options`.
    """

    url: str
    storage_options: dict | None = field(default=None, hash=False)

    @classmethod
    def of(cls, spec, storage_options=None):
        """``spec`` (a str or os.PathLike) as a Location with ``storage_options``; a Location
        is returned as it is (with its own options)."""
        if isinstance(spec, Location):
            return spec
        return cls(os.fspath(spec), storage_options or None)

    def __repr__(self):
        return f"Location({self.shown!r}, storage_options={redact_options(self.storage_options)!r})"

    @property
    def is_url(self):
        """True for a URL other than ``file://`` (those are local paths)."""
        return is_url(self.url)

    @property
    def local(self):
        """The local path (a str), or None for a URL."""
        return None if self.is_url else local_path(self.url)

    @property
    def shown(self):
        """The URL for messages (see :func:`._remote.display`)."""
        return display(self.url)

    @property
    def options(self):
        """``{"storage_options": ...}`` for a URL with options; ``{}`` otherwise (so that local
        paths see the same call as without options)."""
        if self.storage_options and self.is_url:
            return {"storage_options": self.storage_options}
        return {}

    def fs(self):
        """``(fs, path)`` of the location's fsspec filesystem."""
        return filesystem(self.url, self.storage_options)

    def redact(self, text):
        """``text`` without the secrets of this location's URL and storage options."""
        return redact(text, self.storage_options, [self.url])

    def exists(self):
        """A file, directory, link or object (or any object below the prefix) is there."""
        if not self.is_url:
            return os.path.lexists(self.local)
        fs, path = self.fs()
        return fs.exists(path)

    def read_bytes(self):
        """The whole content of the file or object (OSError when it cannot be read)."""
        return read_bytes(self.url, self.storage_options)


def write_atomic(where, content, storage_options=None, overwrite=True, flag="--out", local=False):
    """Write ``content`` to ``where`` (a path, URL or :class:`Location`) atomically.

    ``content``: the bytes of a file, or ``write(tmp)``, which writes a file or a zarr store
    at ``tmp``, a fresh name next to ``where`` (a path or URL of the same filesystem; with
    ``local``, a local file path whatever ``where`` is: for writers that only write local
    files, such as ``numpy.savez``). The old output stays whole and readable at ``where``
    until the new one is complete:

    - local file: the temporary file (created exclusively) is renamed into place with
      ``os.replace`` (atomic); without ``overwrite`` an exclusive ``os.link`` (fails if another
      writer created ``where`` meanwhile). A file never replaces a directory
      (IsADirectoryError).
    - local directory (a zarr store): checked complete (every chunk present), then one
      ``renameat2(RENAME_EXCHANGE)`` on Linux (atomic swap; ``RENAME_NOREPLACE`` without
      ``overwrite``), else two renames whose gap is restored on failure.
    - URL file: one whole-object write of the bytes (atomic on S3, GCS and Azure); exclusive
      (``If-None-Match``) without ``overwrite``. Bytes and ``local`` writers leave no
      temporary object in the store.
    - URL store: checked complete, then :func:`_switch_remote_store`: the new chunks are
      copied in under keys the old store does not use, then the metadata object (one atomic
      write) switches readers.

    Errors of ``write`` propagate after the temporary copy is removed; an output created
    meanwhile without ``overwrite``, or a failed switch, raises :class:`OutputError` naming
    ``flag`` and saying where the old and new outputs are.
    """
    where = Location.of(where, storage_options)
    spec = where.url
    refuse_special(flag, spec)
    if where.is_url and callable(content) and not local:
        _write_remote_tmp(where, content, overwrite, flag)
        return
    if where.is_url:
        if callable(content):  # a local writer: its file's bytes go up in one request
            tmp = local_temp(spec)
            try:
                content(tmp)
                with open(tmp, "rb") as fh:
                    content = fh.read()
            finally:
                _remove_local(tmp)
        fs, path = where.fs()
        _put_object(fs, path, content, overwrite, flag, spec)
        return
    path = os.path.abspath(where.local)
    tmp = temporary(spec)
    try:
        if callable(content):
            content(tmp)
        else:
            with open(tmp, "xb") as fh:
                fh.write(content)
        if os.path.isdir(tmp):
            from fsspec.implementations.local import LocalFileSystem

            _verify_store(flag, spec, LocalFileSystem(), tmp)
        elif os.path.isdir(path) and not os.path.islink(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        _switch_local(flag, spec, tmp, path, overwrite)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # an interrupt: writers may still be running
            _remove_late_writes(tmp)
        raise
    finally:
        _remove_local(tmp)


#: After an interrupt, a temporary store is removed again until nothing has written to it
#: for this many seconds (at most :data:`LATE_WRITES_MAX_SECONDS` in all).
LATE_WRITES_QUIET_SECONDS = 1.0
LATE_WRITES_MAX_SECONDS = 15.0


def _remove_late_writes(tmp):
    """Remove ``tmp`` after an interrupt (Ctrl-C, SIGTERM) of its writer, once the writes
    still under way have ended: the interrupt stops the main thread only, while zarr's I/O
    thread finishes the chunk writes it was given and a threaded scheduler's running tasks
    finish theirs, and each of them would create ``tmp`` again after a single removal.
    Waits for zarr's pending writes, then removes ``tmp`` until it stays absent for
    :data:`LATE_WRITES_QUIET_SECONDS`."""
    _wait_for_zarr_io(LATE_WRITES_MAX_SECONDS)
    start = quiet = time.monotonic()
    while time.monotonic() - quiet < LATE_WRITES_QUIET_SECONDS:
        if time.monotonic() - start > LATE_WRITES_MAX_SECONDS:
            return
        if os.path.lexists(tmp):
            _remove_local(tmp)
            quiet = time.monotonic()
        time.sleep(0.02)


def _wait_for_zarr_io(timeout):
    """Wait (at most ``timeout`` seconds) for the tasks of zarr's I/O event loop, if zarr
    runs one in this process, to end; their errors are theirs to report."""
    import asyncio
    import sys

    zarr_sync = sys.modules.get("zarr.core.sync")
    loop = getattr(zarr_sync, "loop", [None])[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def others():
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    try:
        asyncio.run_coroutine_threadsafe(others(), loop).result(timeout + 1)
    except Exception:  # noqa: BLE001 - best effort: the removal below still runs
        pass


def _remove_local(tmp):
    """Remove a local temporary file or directory tree if it is there."""
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.lexists(tmp):
        os.remove(tmp)


def _write_remote_tmp(where, write, overwrite, flag):
    """:func:`write_atomic` of ``write(tmp)`` at a URL: ``tmp`` is a URL next to ``where``."""
    spec = where.url
    tmp = temporary(spec)
    fs, path = where.fs()
    _, tmp_path = filesystem(tmp, where.storage_options)
    try:
        write(tmp)
        if fs.isfile(tmp_path):
            _put_object(fs, path, fs.cat_file(tmp_path), overwrite, flag, spec)
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


def _put_object(fs, path, data, overwrite, flag, spec):
    """One whole-object write (atomic per object); exclusive (``If-None-Match``) without
    ``overwrite``."""
    try:
        fs.pipe_file(path, data, **({} if overwrite else {"mode": "create"}))
    except FileExistsError:
        raise _taken(flag, spec) from None


def _write_error(exc, where):
    """``exc`` (an OSError of a write to ``where``) again, its message naming it and the fix."""
    reason = first_line(exc)
    if isinstance(exc, FileNotFoundError):
        parent = "bucket (or container)" if where.is_url else "directory"
        return DestinationNotFoundError(
            where.redact(
                f"cannot write {where.shown!r} ({reason}): its {parent} does not exist or "
                "cannot be seen with these credentials; create it or check the path."
            )
        )
    kind = type(exc) if type(exc).__module__ == "builtins" else OSError
    return kind(where.redact(f"cannot write {where.shown!r} ({reason})."))


def write_bytes(where, data, storage_options=None):
    """:func:`write_atomic` of ``data`` to ``where`` (a path, URL or :class:`Location`),
    replacing an old file. An OSError names ``where``; :class:`._remote.DestinationNotFoundError`
    (a FileNotFoundError) when its bucket or directory is missing."""
    where = Location.of(where, storage_options)
    try:
        write_atomic(where, data)
    except OSError as exc:
        raise _write_error(exc, where) from exc


def temporary(spec):
    """A fresh name next to ``spec`` (same directory, same extension), for write-then-rename."""
    spec = os.fspath(spec).rstrip("/")
    if is_url(spec):
        head, _, name = spec.rpartition("/")
    else:
        head, name = os.path.split(os.path.abspath(local_path(spec)))
    name = temp_name(name)
    return f"{head}/{name}" if is_url(spec) else os.path.join(head, name)


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
    """Move the complete ``tmp`` to ``path`` (see :func:`write_atomic`)."""
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
