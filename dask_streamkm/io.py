"""Paths and URLs to dask arrays and back: zarr stores, ``.npy`` files, Parquet datasets.

Every input and output may be a local path or a URL of any fsspec filesystem (``s3://``,
``gs://``, ``az://``, ``https://``, ``memory://``, ``file://``) with ``storage_options``; zarr's
own store classes, fsspec and dask's readers do the reading. Nothing here reads data: every
function returns a lazy dask array whose chunks are read by the tasks that use them. Each array
gets a name derived from the URL, the layout and a fingerprint of EVERY file or object of the
input (local: size and ``st_mtime_ns`` of each file; object stores: size and ETag, version or
modification time of each object, from one listing; see :mod:`._remote`), so the same unchanged
input opened in another process has the same name (checkpoints rely on this) and an input with
any chunk rewritten does not. A local ``.npy`` or Parquet file rewritten after it was opened
(its size or modification time changed) is an error when its rows are read, not a silent mix of
old and new rows.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize

from . import _remote
from ._location import Location, write_atomic
from ._memory import split_rows

__all__ = ["InputError", "dataset_to_array", "open_array", "stack_samples", "write_labels"]


class InputError(ValueError):
    """An input path that cannot be read as a 2-D array (the message says why and the fix)."""


class _Location:
    """Where an input lives: ``fs`` and ``path`` for fsspec, ``url`` as the user wrote it."""

    def __init__(self, spec, storage_options):
        self.storage_options = storage_options or {}
        if _remote.is_url(spec):
            self.url = spec.rstrip("/")
            self.fs, self.path = _remote.filesystem(self.url, self.storage_options)
            self.fs.invalidate_cache(self.path)
            self.local = None
        else:
            self.url = _remote.local_path(spec)
            self.fs, self.path, self.local = None, None, Path(self.url)
        self.shown = _remote.display(self.url)

    def child(self, name):
        return _remote.join(self.url, name)

    def exists(self, name=None):
        if self.local is not None:
            return (self.local / name if name else self.local).exists()
        return self.fs.exists(f"{self.path}/{name}" if name else self.path)

    def isdir(self):
        return self.local.is_dir() if self.local is not None else self.fs.isdir(self.path)

    def isfile(self):
        return self.local.is_file() if self.local is not None else self.fs.isfile(self.path)

    def files(self, suffix, recursive=False):
        """Files below the location (one level, or all levels) ending in ``suffix``, sorted."""
        if self.local is not None:
            found = self.local.rglob(f"*{suffix}") if recursive else self.local.glob(f"*{suffix}")
            return sorted(str(p) for p in found if p.is_file())
        found = self.fs.find(self.path, maxdepth=None if recursive else 1)
        return sorted(self.fs.unstrip_protocol(p) for p in found if p.endswith(suffix))

    def fingerprint(self, url=None):
        return _remote.fingerprint(url or self.url, self.storage_options)


def _fail(message, storage_options):
    """An InputError whose message is redacted; raise it ``from None``: the message holds the
    cause's text, and the cause itself may hold a URL's secrets."""
    return InputError(_remote.redact(message, storage_options))


def _is_zarr(where):
    return any(where.exists(name) for name in ("zarr.json", ".zarray", ".zgroup"))


def _is_parquet(where):
    if where.isfile():
        return where.url.endswith((".parquet", ".pq"))
    return where.isdir() and bool(where.files(".parquet", recursive=True))


def _split_spec(spec):
    """``path`` or ``path:array_name`` (a named array inside a zarr group).

    In a URL the scheme's colon (``s3://``) and a host's port (``host:8080/``) are not array
    names: only a last ``:name`` without a ``/`` after it is.
    """
    spec = os.fspath(spec)
    if _remote.is_url(spec) or spec.startswith("file://"):
        scheme, rest = spec.split("://", 1)
        head, sep, tail = rest.rpartition(":")
        if not sep or "/" in tail or not head:
            return spec, None
        return f"{scheme}://{head}", tail or None
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, name = spec.rsplit(":", 1)
    return path, name or None


def _row_chunks(chunks, n_features, dtype):
    """Rows per chunk: ``chunks`` rows (an int), or, for a size such as ``"64MiB"`` or by
    default :func:`target_chunk_bytes`, as many rows as make one summarize task (the chunk
    and the summarizer's working copies, :func:`._memory.rows_per_task`) about that size."""
    if chunks is None or isinstance(chunks, str):
        from dask.utils import parse_bytes

        from ._memory import rows_per_task, target_chunk_bytes

        try:
            size = target_chunk_bytes() if chunks is None else int(parse_bytes(chunks))
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"chunks={chunks!r} should be a number of rows >= 1 or a size such as '128MiB'."
            ) from exc
        return rows_per_task(size, n_features, dtype)
    import numbers

    # A whole number of rows (1000.0 too); 1.5 was taken as chunks of 1 row, "1.5" is bytes.
    whole = (
        isinstance(chunks, numbers.Real)
        and np.isfinite(float(chunks))
        and float(chunks) == int(chunks)
    )
    if isinstance(chunks, bool) or not whole or int(chunks) < 1:
        raise InputError(
            f"chunks={chunks!r} should be a number of rows >= 1 or a size such as '128MiB'."
        )
    return int(chunks)


# Packages whose errors are a failed transfer (a rerun may succeed), not damaged data.
_TRANSPORT = {"aiohttp", "botocore", "urllib3", "requests", "fsspec", "s3fs", "gcsfs", "adlfs"}


def _transport_error(exc):
    """A network or filesystem failure (OSError, a client library's error), not bad bytes."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in _TRANSPORT


class _Rows:
    """A zarr array whose read errors name the input (network faults, missing objects) or,
    for a chunk that cannot be decoded or deleted since the array was opened, the chunk and
    its file."""

    def __init__(self, array, shown, storage_options, url=None, absent=None):
        self.array, self.shown, self.storage_options = array, shown, storage_options
        self.url = url
        # Keys of the stored chunks that were missing when the array was opened (zarr reads
        # them as the fill value); None when the store could not be listed.
        self.absent = absent
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, key):
        try:
            block = self.array[key]
        except Exception as exc:
            rows = key[0] if isinstance(key, tuple) else key
            if not _transport_error(exc):
                self._damaged_chunk(rows.start or 0, min(rows.stop, self.shape[0]))
            raise _fail(
                f"reading rows {rows.start}:{rows.stop} of {self.shown!r} failed "
                f"({type(exc).__name__}: {exc}); check that the store is reachable and "
                "rerun (a fit with a checkpoint resumes where it stopped).",
                self.storage_options,
            ) from None
        if self.absent is not None:
            self._check_not_deleted(key, block)
        return block

    def _check_not_deleted(self, key, block):
        """Raise an InputError when a stored chunk that was there when the array was opened
        is gone now: zarr reads a missing chunk as its fill value, so the rows would silently
        be replaced. Only a region that reads as the fill value throughout is looked up (one
        existence check); any other value came from the chunk's bytes."""
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (2 - len(key))
        if len(key) != 2 or not all(isinstance(k, (slice, int, np.integer)) for k in key):
            return  # dask slices its chunks; other indexing is not checked
        for axis, k in enumerate(key):
            if not isinstance(k, slice):  # an integer index drops its axis: put it back
                block = np.expand_dims(block, axis)
        rows, cols = (
            k if isinstance(k, slice) else slice(k % n, k % n + 1)
            for k, n in zip(key, self.shape, strict=True)
        )
        (start, stop, step), (col_start, col_stop, col_step) = (
            rows.indices(self.shape[0]),
            cols.indices(self.shape[1]),
        )
        if step != 1 or col_step != 1:
            return
        unit_rows, unit_cols = self.array.shards or self.array.chunks
        fill = self.array.fill_value
        fill = np.zeros((), self.dtype) if fill is None else fill  # zarr v2's None reads as 0
        nan_fill = bool(np.isnan(fill))
        for first in range(start - start % unit_rows, stop, unit_rows):
            for col in range(col_start - col_start % unit_cols, col_stop, unit_cols):
                region = block[
                    max(first, start) - start : min(first + unit_rows, stop) - start,
                    max(col, col_start) - col_start : min(col + unit_cols, col_stop) - col_start,
                ]
                if region.size == 0 or not _all_equal(region, fill, nan_fill):
                    continue
                index = (first // unit_rows, col // unit_cols)
                name = self.array.metadata.encode_chunk_key(index)
                url = _remote.join(self.url, name)
                if name in self.absent or _still_there(url, self.storage_options):
                    continue
                last = min(first + unit_rows, self.shape[0])
                raise _fail(
                    f"stored chunk {index} (rows {first}:{last}) of {self.shown!r} was there "
                    f"when the array was opened but its file {_remote.display(url)!r} is "
                    "missing now (zarr would read its rows as the fill value, silently). The "
                    "store changed during the fit: restore the chunk or write the store again, "
                    "then open the array again and rerun.",
                    self.storage_options,
                )

    def _damaged_chunk(self, start, stop):
        """Read the stored chunks of rows start:stop one by one; raise an InputError naming
        the first that cannot be decoded (nothing when each reads alone)."""
        n_rows, n_cols = self.array.chunks
        for first in range(start - start % n_rows, stop, n_rows):
            for col in range(0, self.shape[1], n_cols):
                try:
                    self.array[first : first + n_rows, col : col + n_cols]
                except Exception as exc:
                    if _transport_error(exc):
                        return
                    index = (first // n_rows, col // n_cols)
                    name = self.array.metadata.encode_chunk_key(index)
                    last = min(first + n_rows, self.shape[0])
                    raise _fail(
                        f"stored chunk {index} (rows {first}:{last}) of "
                        f"{self.shown!r} cannot be decoded ({type(exc).__name__}: {exc}); its "
                        f"bytes are damaged, so a rerun fails the same way. Check or restore "
                        f"the file {_remote.display(_remote.join(self.url, name))!r}, or write "
                        "the store again (da.to_zarr, zarr.create_array).",
                        self.storage_options,
                    ) from exc


def _zarr_node(where):
    import zarr

    try:
        if where.local is not None:
            return zarr.open(str(where.local), mode="r")
        store = zarr.storage.FsspecStore.from_url(
            where.url, storage_options=where.storage_options, read_only=True
        )
        return zarr.open(store=store, mode="r")
    except (KeyError, ValueError, TypeError) as exc:  # zarr's errors on damaged metadata
        meta = next(
            (where.child(n) for n in ("zarr.json", ".zarray", ".zgroup") if where.exists(n)),
            where.url,
        )
        raise _fail(
            f"{_remote.display(meta)!r} is not valid zarr metadata ({type(exc).__name__}: "
            f"{exc}); restore the file or write the store again (zarr.create_array, "
            "da.to_zarr).",
            where.storage_options,
        ) from None


def _open_zarr(where, name, chunks):
    import zarr

    node = _zarr_node(where)
    shown = where.shown
    if isinstance(node, zarr.Group):
        arrays = sorted(node.array_keys())
        if name is None:
            if len(arrays) != 1:
                raise InputError(
                    f"{shown!r} is a zarr group holding the arrays {arrays}; name one as "
                    f"'{shown}:ARRAY'."
                )
            name = arrays[0]
        if name not in arrays:
            raise InputError(
                f"the zarr group {shown!r} has no array {name!r}; its arrays are {arrays}."
            )
        node = node[name]
        array_url = where.child(name)
    elif name is not None:
        raise InputError(f"{shown!r} is a zarr array, not a group; drop ':{name}' from the path.")
    else:
        array_url = where.url
    what = shown + (f":{name}" if name else "")
    _check_2d(node.shape, what)
    store_rows = int(node.chunks[0])
    rows = _row_chunks(chunks, node.shape[1], node.dtype)
    # Whole stored chunks per dask chunk, so that every stored chunk is read exactly once:
    # a number of rows is rounded up to them, the default size down (tiny stored chunks are
    # combined up to it; one larger than it stays whole).
    if chunks is None or isinstance(chunks, str):
        rows = max(store_rows, rows // store_rows * store_rows)
    else:
        rows = max(store_rows, -(-rows // store_rows) * store_rows)
    listing = where.fingerprint(array_url)
    token = tokenize(
        os.path.abspath(where.url) if where.local is not None else where.url,
        name,
        node.shape,
        node.dtype.str,
        rows,
        listing,
    )
    return da.from_array(
        _Rows(node, what, where.storage_options, array_url, _absent_chunks(node, listing)),
        chunks=(rows, -1),
        name=f"zarr-{token}",
        meta=np.empty((0, 0), dtype=node.dtype),
    )


def _still_there(url, storage_options):
    """The file or object ``url`` exists now (a listing cached by fsspec is not trusted)."""
    if not _remote.is_url(url):
        return os.path.exists(_remote.local_path(url))
    fs, path = _remote.filesystem(url, storage_options)
    fs.invalidate_cache(path)
    return fs.exists(path)


def _all_equal(region, fill, nan_fill):
    """Every value of ``region`` is ``fill`` (NaN when ``nan_fill``); its first value is
    looked at first, so that a region of data costs no pass over it."""
    first = region.flat[0]
    if not (first != first if nan_fill else first == fill):
        return False
    return bool(np.isnan(region).all() if nan_fill else (region == fill).all())


_ZARR_METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}


def _absent_chunks(node, listing):
    """The keys of ``node``'s stored chunks (shards, when sharded) that the listing of its
    files (:func:`._remote.fingerprint`) lacks; None when it lists no chunk at all (a store
    that cannot be listed, or an array never written: then nothing is checked)."""
    names = (str(entry[0]).replace(os.sep, "/").strip("/") for entry in listing)
    # No chunk key has a part starting with a dot: those are metadata or other files.
    present = {name for name in names if not any(p.startswith(".") for p in name.split("/"))}
    present -= _ZARR_METADATA
    grid = [-(-n // c) for n, c in zip(node.shape, node.shards or node.chunks, strict=True)]
    if not present:
        return None
    if len(present) == int(np.prod(grid)):  # every chunk written (the usual case)
        return frozenset()
    # Otherwise each key is looked up: other files may sit among the chunks.
    keys = (node.metadata.encode_chunk_key(index) for index in np.ndindex(*grid))
    return frozenset(key for key in keys if key not in present)


def _check_2d(shape, what):
    if len(shape) != 2:
        raise InputError(
            f"{what!r} holds an array of shape {tuple(shape)}; expected 2-D (rows, features). "
            "Reshape it to (n_rows, n_features) when you write it."
        )


def _npy_header(url, storage_options):
    """``(shape, fortran_order, dtype, data_offset)`` of a .npy file, from its header only."""
    fmt = np.lib.format
    try:
        if _remote.is_url(url):
            fs, path = _remote.filesystem(url, storage_options)
            fh = fs.open(path, "rb", block_size=2**16)
        else:
            fh = open(url, "rb")
        with fh:
            version = fmt.read_magic(fh)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran_order, dtype = read(fh)
            offset = fh.tell()
            size = fh.size if hasattr(fh, "size") else os.fstat(fh.fileno()).st_size
    except (ValueError, EOFError) as exc:
        raise _fail(
            f"{_remote.display(url)!r} is not a .npy file ({exc}); write it with numpy.save "
            "or remove it from the input.",
            storage_options,
        ) from None
    if dtype.hasobject:
        raise _fail(
            f"{_remote.display(url)!r} holds Python objects (dtype {dtype}), not numbers; "
            "write a numeric array with numpy.save.",
            storage_options,
        )
    _check_npy_size(url, shape, dtype, offset, size, storage_options)
    return shape, fortran_order, dtype, offset


def _check_npy_size(url, shape, dtype, offset, size, storage_options):
    """An InputError when a .npy file holds fewer bytes than its header declares (a copy or
    upload cut short): its last rows would fail to read, or be read as garbage, mid-fit."""
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if size is not None and size < need:
        raise _fail(
            f"{_remote.display(url)!r} holds {size} bytes but its header declares shape "
            f"{tuple(shape)} of {dtype} ({need} bytes with the header): the file is truncated "
            "(a copy or upload cut short). Copy or write it again (numpy.save).",
            storage_options,
        )


def _open_npy(where, chunks):
    files = [where.url] if where.isfile() else where.files(".npy")
    if not files:
        raise InputError(f"the directory {where.shown!r} holds no .npy files.")
    headers = []
    for f in files:
        shape, fortran_order, dtype, offset = _npy_header(f, where.storage_options)
        _check_2d(shape, _remote.display(f))
        if headers and (shape[1], dtype) != (headers[0][0][1], headers[0][2]):
            raise InputError(
                f"{_remote.display(f)!r} has shape {shape} and dtype {dtype} but "
                f"{_remote.display(files[0])!r} has {headers[0][0][1]} columns of "
                f"{headers[0][2]}; every .npy file of a directory must have the same number "
                "of columns and dtype."
            )
        if fortran_order and where.local is None:
            raise InputError(
                f"{_remote.display(f)!r} is stored in Fortran (column) order, so its rows are "
                "not contiguous byte ranges; save it with numpy.save(np.ascontiguousarray(x))."
            )
        headers.append((shape, fortran_order, dtype, offset))
    fingerprints = where.fingerprint() if where.local is None else None
    parts = []
    for f, (shape, _, dtype, offset) in zip(files, headers, strict=True):
        rows = min(_row_chunks(chunks, shape[1], dtype), max(shape[0], 1))
        stamp = _remote.fingerprint(f) if where.local is not None else fingerprints
        token = tokenize(
            f if where.local is None else os.path.abspath(f), stamp, shape, dtype.str, rows
        )
        # Tasks hold the path, not the memory map: da.from_array would copy a memmap (it copies
        # array-likes with a copy method) and pickling one to a worker would send its data.
        # Remote files: each task reads only its rows' byte range (the header is parsed once).
        if where.local is None:
            where_rows = dict(
                url=f, storage_options=where.storage_options, offset=offset, n_cols=shape[1]
            )
        else:  # the file's size and time at opening, checked by every read of its rows
            where_rows = dict(stamp=_file_stamp(os.fspath(f)))
        rows_of = _NpyRows(os.fspath(f), shape, dtype.str, **where_rows)
        parts.append(
            da.from_array(
                rows_of,
                chunks=da.core.normalize_chunks((rows, -1), shape),
                name=f"npy-{token}",
                meta=np.empty((0, 0), dtype=dtype),
                asarray=False,
                inline_array=True,
            )
        )
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


class _NpyRows:
    """A .npy file as an array-like that dask slices chunk by chunk (``da.from_array``).

    ``rows_of[a:b, :]`` reads rows a to b: from a memory map locally, as one byte range
    remotely. Dask generates the chunks' slices lazily (no per-chunk entry is built when the
    array is made, unlike ``map_blocks`` with ``block_info``), and the object pickles as
    its path and header, never its data.
    """

    def __init__(
        self,
        path,
        shape,
        dtype_str,
        url=None,
        storage_options=None,
        offset=0,
        n_cols=0,
        stamp=None,
    ):
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype_str)
        self.ndim = len(self.shape)
        self.url, self.storage_options = url, storage_options
        self.offset, self.n_cols = offset, n_cols
        self.stamp = stamp  # local: (size, st_mtime_ns) when opened (_file_stamp)

    def __getitem__(self, index):
        rows, cols = index if isinstance(index, tuple) else (index, slice(None))
        start, stop, _ = rows.indices(self.shape[0])
        if self.url is None:
            try:
                block = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise _fail(
                    f"reading rows {start}:{stop} of {self.path!r} failed "
                    f"({type(exc).__name__}: {exc}); the file changed or was cut short since "
                    "the array was opened. Restore it (numpy.save), then open it again and "
                    "rerun.",
                    None,
                ) from None
            if block.shape != self.shape or block.dtype != self.dtype:
                raise _fail(
                    f"{self.path!r} now holds an array of shape {block.shape} and dtype "
                    f"{block.dtype}, not the {self.shape} of {self.dtype} it held when it was "
                    "opened: it was rewritten during the fit. Open it again and rerun.",
                    None,
                )
            rows = np.array(block[start:stop, cols])
            # After the copy: a rewrite before or while the rows were read shows in the stamp.
            if _rewritten(self.path, self.stamp):
                raise _rewritten_error(self.path)
            return rows
        row_bytes = self.dtype.itemsize * self.n_cols
        try:
            fs, fpath = _remote.filesystem(self.url, self.storage_options)
            data = fs.cat_file(
                fpath, start=self.offset + start * row_bytes, end=self.offset + stop * row_bytes
            )
        except Exception as exc:
            raise _fail(
                f"reading rows {start}:{stop} of {_remote.display(self.url)!r} failed "
                f"({type(exc).__name__}: {exc}); check that the file is reachable and rerun.",
                self.storage_options,
            ) from None
        if len(data) != (stop - start) * row_bytes:
            raise _fail(
                f"reading rows {start}:{stop} of {_remote.display(self.url)!r} gave "
                f"{len(data)} of their {(stop - start) * row_bytes} bytes: the file was cut "
                "short or rewritten since the array was opened. Restore it (numpy.save), then "
                "open it again and rerun.",
                self.storage_options,
            )
        block = np.frombuffer(data, dtype=self.dtype).reshape(stop - start, self.n_cols)
        return block[:, cols].copy()


def _file_stamp(path):
    """``(size, st_mtime_ns)`` of a local file (a ``.npy`` or Parquet file): what a rewrite
    changes."""
    info = os.stat(path)
    return info.st_size, info.st_mtime_ns


def _rewritten(path, stamp):
    """True when the local file ``path`` no longer has the :func:`_file_stamp` ``stamp`` it
    had when the array was opened (False without a stamp: a remote file)."""
    if stamp is None:
        return False
    try:
        return _file_stamp(path) != stamp
    except OSError:
        return True


def _rewritten_error(path):
    return _fail(
        f"{path!r} was rewritten since the array was opened (its size or modification time "
        "changed), so its rows may mix old and new data. Open it again and rerun.",
        None,
    )


def _numeric(dtype):
    try:
        return np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)
    except TypeError:  # pandas extension dtypes (strings, categories...)
        return False


def _column_dtype(dtype):
    """The numpy dtype a Parquet column's values are read as, or None for a non-numeric
    column: numpy numbers and bools as they are; pandas' nullable numbers and booleans
    (``Int64``, ``Float64``, ``boolean``, which ``pd.read_parquet`` gives for columns written
    from them) as float64, their missing values as NaN (which the fit's checks refuse,
    naming the chunk)."""
    if _numeric(dtype):
        return np.dtype(dtype)
    import pandas as pd

    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        return np.dtype(np.float64)
    return None


def _parquet_column_dtypes(f, schema, columns, storage_options):
    """The numpy dtype of each of ``columns`` in the Parquet file ``f`` (``schema``: its
    pyarrow schema; an all-null column as float64). A file that lacks one of them or holds
    one as non-numeric values is refused, naming the file, before anything is read."""
    import pyarrow as pa

    dtypes = []
    for name in columns:
        index = schema.get_field_index(name)
        if index < 0:
            problem = f"has no column {name!r} (its columns are {schema.names})"
        else:
            kind = schema.field(index).type
            if pa.types.is_integer(kind) or pa.types.is_floating(kind):
                dtypes.append(np.dtype(kind.to_pandas_dtype()))
                continue
            if pa.types.is_boolean(kind) or pa.types.is_null(kind):
                dtypes.append(np.dtype(bool if pa.types.is_boolean(kind) else np.float64))
                continue
            problem = f"holds column {name!r} as {kind}, not numbers"
        raise _fail(
            f"the Parquet file {_remote.display(f)!r} {problem}, unlike the dataset's first "
            f"file; every file must hold the columns {list(columns)} as numbers. Remove the "
            "file from the dataset, write it again with those columns, or choose columns "
            "every file holds with --columns (columns=[...]).",
            storage_options,
        )
    return dtypes


def _bad_parquet_file(where):
    """The first file of a Parquet dataset whose footer pyarrow cannot read, or None."""
    files = [where.url] if where.isfile() else where.files(".parquet", recursive=True)
    for f in files:
        try:
            _parquet_rows(f, where.storage_options)
        except Exception as exc:
            return f, exc
    return None


def _open_parquet(where, columns, chunks):
    """:func:`_read_parquet`, whose errors name the damaged file of the dataset."""
    try:
        return _read_parquet(where, columns, chunks)
    except InputError:
        raise
    except Exception:
        bad = _bad_parquet_file(where)
        if bad is None:
            raise
        raise _fail(
            f"{_remote.display(bad[0])!r} is not a readable Parquet file "
            f"({type(bad[1]).__name__}: {bad[1]}); remove it from {where.shown!r} or write it "
            "again.",
            where.storage_options,
        ) from None


def _read_parquet(where, columns, chunks):
    import dask.dataframe as dd

    df = dd.read_parquet(where.url, storage_options=where.storage_options or None)
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise InputError(
                f"columns={list(columns)}: the Parquet dataset {where.shown!r} has no column "
                f"{missing[0]!r}; its columns are {list(df.columns)}."
            )
        df = df[list(columns)]
    bad = [c for c, t in df.dtypes.items() if _column_dtype(t) is None]
    if bad:
        raise InputError(
            f"the Parquet dataset {where.shown!r} has non-numeric columns {bad}; choose numeric "
            "ones with --columns (columns=[...])."
        )
    names = [str(c) for c in df.columns]
    dtype = np.result_type(*[_column_dtype(t) for t in df.dtypes])
    # Chunks of row groups, read by our own tasks (the row groups' columns with pyarrow), so
    # that a read that fails mid-fit (the store went away) is an error naming the file, as for
    # zarr and .npy; dask's dataframe reader raised the raw connection error. Row counts come
    # from the footers.
    files = [where.url] if where.isfile() else where.files(".parquet", recursive=True)
    footers = [_parquet_footer(f, where.storage_options, names) for f in files]
    groups = [rows for rows, _ in footers]
    # The columns' common type over every file, as numpy promotes them (bool and float
    # columns: float64; int8 in one file and int64 in another: int64, never wrapped).
    dtype = np.result_type(dtype, *[t for _, dtypes in footers for t in dtypes])
    rows = _row_chunks(chunks, len(names), dtype)
    plan = parquet_chunks([n for g in groups for n in g], rows)
    remote = where.local is None
    stamp = where.fingerprint() if remote else [_remote.fingerprint(f) for f in files]
    token = tokenize(
        files if remote else [os.path.abspath(f) for f in files],
        stamp,
        names,
        dtype.str,
        groups,
        plan,
    )
    # Local files: their size and time now, checked by every read (_ParquetRows._read).
    stamps = None if remote else [_file_stamp(f) for f in files]
    return da.from_array(
        _ParquetRows(files, groups, names, dtype.str, where.storage_options, stamps),
        chunks=(plan, (len(names),)),
        name=f"parquet-{token}",
        meta=np.empty((0, 0), dtype=dtype),
        asarray=False,
        inline_array=True,
    )


def parquet_chunks(group_rows, rows):
    """Row chunks over row groups of ``group_rows`` rows: consecutive groups combined up to
    ``rows`` rows a chunk (a group never split between two chunks when it fits in one), and a
    group larger than ``rows`` split into equal row ranges of at most ``rows``."""
    out, current = [], 0
    for n in map(int, group_rows):
        if n > rows:
            if current:
                out.append(current)
                current = 0
            out.extend(split_rows([n], rows))
        elif current + n > rows:
            out.append(current)
            current = n
        else:
            current += n
    if current or not out:
        out.append(current)
    return tuple(out)


def _damaged_local_file(path, exc):
    """``exc``, raised while decoding the local file ``path``, is about its bytes: the file
    is there and readable, so no rerun reads it otherwise (remote files: not known)."""
    if _remote.is_url(path) or isinstance(exc, (FileNotFoundError, PermissionError)):
        return False
    return os.path.isfile(path) and os.access(path, os.R_OK)


def _parquet_source(f, storage_options):
    """An open binary file for pyarrow: local path or a file object of the remote store."""
    if not _remote.is_url(f):
        return contextlib.nullcontext(f)
    fs, path = _remote.filesystem(f, storage_options)
    return fs.open(path, "rb")


def _parquet_row_groups(f, storage_options):
    """The rows of each row group of the Parquet file ``f``, from its footer."""
    return _parquet_footer(f, storage_options, ())[0]


def _parquet_footer(f, storage_options, columns):
    """``(rows of each row group, dtype of each of columns)`` of the Parquet file ``f``, from
    its footer (:func:`_parquet_column_dtypes`)."""
    import pyarrow.parquet as pq

    with _parquet_source(f, storage_options) as source:
        meta = pq.read_metadata(source)
    dtypes = _parquet_column_dtypes(f, meta.schema.to_arrow_schema(), columns, storage_options)
    return tuple(int(meta.row_group(j).num_rows) for j in range(meta.num_row_groups)), dtypes


def _parquet_rows(f, storage_options):
    return sum(_parquet_row_groups(f, storage_options))


#: Rows per record batch when a task reads part of a row group (:meth:`_ParquetRows._part`).
PARQUET_BATCH_ROWS = 65_536


class _ParquetRows:
    """The rows of a Parquet dataset (files in order, ``columns``) as an array-like that dask
    slices chunk by chunk (``da.from_array``). A slice reads the row groups it covers with
    pyarrow, a whole group at once, or, for part of a group, its record batches one at a
    time (memory: the part, not the group). Pickles as paths and names, never data."""

    def __init__(self, files, groups, columns, dtype_str, storage_options=None, stamps=None):
        self.files, self.columns = list(files), list(columns)
        # Local files' (size, st_mtime_ns) when opened: a rewrite since is an error.
        self.stamps = [None] * len(self.files) if stamps is None else list(stamps)
        # (file, group) of every row group in order, and the first row of each.
        self.groups = [(i, j) for i, g in enumerate(groups) for j in range(len(g))]
        sizes = [n for g in groups for n in g]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.dtype = np.dtype(dtype_str)
        self.shape, self.ndim = (int(self.starts[-1]), len(self.columns)), 2
        self.storage_options = storage_options

    def __getitem__(self, index):
        rows, cols = index if isinstance(index, tuple) else (index, slice(None))
        start, stop, _ = rows.indices(self.shape[0])
        parts = [np.empty((0, len(self.columns)), dtype=self.dtype)]
        g = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop and g < len(self.groups):
            first, end = int(self.starts[g]), int(self.starts[g + 1])
            a, b = start - first, min(stop, end) - first
            if b > a:
                parts.append(self._read(g, a, b, end - first))
            start, g = end, g + 1
        return np.concatenate(parts)[:, cols]

    def _read(self, g, a, b, n_rows):
        """Rows ``a:b`` of row group ``g`` (of ``n_rows`` rows) as a numpy array."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        i, j = self.groups[g]
        try:
            with _parquet_source(self.files[i], self.storage_options) as source:
                pf = pq.ParquetFile(source)
                if a == 0 and b == n_rows:
                    table = pf.read_row_group(j, columns=self.columns)
                else:
                    table = pa.Table.from_batches(self._part(pf, j, a, b))
        except Exception as exc:
            if _rewritten(self.files[i], self.stamps[i]):  # not damaged: another file now
                raise _rewritten_error(self.files[i]) from None
            if _damaged_local_file(self.files[i], exc):
                raise _fail(
                    f"row group {j} of {self.files[i]!r} cannot be decoded "
                    f"({type(exc).__name__}: {exc}); its bytes are damaged, so a rerun fails "
                    "the same way. Restore the file or write it again (DataFrame.to_parquet).",
                    None,
                ) from None
            raise _fail(
                f"reading {_remote.display(self.files[i])!r} failed "
                f"({type(exc).__name__}: {exc}); check that the file is reachable and "
                "rerun (a fit with a checkpoint resumes where it stopped).",
                self.storage_options,
            ) from None
        if _rewritten(self.files[i], self.stamps[i]):
            raise _rewritten_error(self.files[i])
        frame = table.to_pandas()[self.columns]
        return frame.to_numpy(dtype=self.dtype, na_value=np.nan)

    def _part(self, pf, j, a, b):
        """The record batches of rows ``a:b`` of row group ``j`` of the ParquetFile ``pf``."""
        out, position = [], 0
        batches = pf.iter_batches(
            batch_size=PARQUET_BATCH_ROWS, row_groups=[j], columns=self.columns
        )
        for batch in batches:
            lo, hi = max(a - position, 0), min(b - position, batch.num_rows)
            if lo < hi:
                out.append(batch.slice(lo, hi - lo))
            position += batch.num_rows
            if position >= b:
                break
        return out


def open_array(spec, columns=None, chunks=None, storage_options=None):
    """A lazy 2-D dask array for a path or URL; nothing is read until it is computed.

    Parameters
    ----------
    spec : str or path
        ``path.zarr`` (a zarr array, or a group holding one array), ``path.zarr:name`` (the
        array ``name`` of a zarr group), a ``.npy`` file or a directory of ``.npy`` files
        (stacked by sorted file name), or a Parquet file or directory (its schema read
        through dask.dataframe, its row groups by pyarrow). Each may be a local path or a
        URL of any fsspec filesystem: ``s3://bucket/x.zarr``, ``s3://bucket/g.zarr:features``, ``gs://``,
        ``az://``, ``https://``, ``memory://``, ``file://``.
    columns : list of str, optional
        Parquet columns to read; all columns (which must be numeric) by default.
    chunks : int or str, optional
        Rows per chunk (an int), or the memory of the task that summarizes a chunk (a size
        such as ``"64MiB"``: the chunk and the summarizer's working copies, about 3 to 6
        times the chunk's bytes, more for few features); by default Dask's
        ``array.chunk-size`` setting (128 MiB unless configured, e.g.
        ``dask.config.set({"array.chunk-size": "256MiB"})``), so that a file of any size is
        read in parallel tasks of bounded memory. ``.npy``: row ranges of each file (a file
        smaller than a chunk is one chunk). Parquet: row groups, consecutive small ones
        combined up to the chunk size, a larger one split into row ranges (each read
        batch by batch from its row group). zarr: whole stored chunks, combined up to the
        chunk size (a stored chunk larger than it stays whole); a number of rows is rounded
        up to whole stored chunks, so every stored chunk is read once.
    storage_options : dict, optional
        Options of the fsspec filesystem of a URL (credentials, ``endpoint_url``...). Without
        them the filesystem's usual chain applies (environment, config files). They are never
        written into messages or array names.

    Returns
    -------
    dask.array.Array of shape (n_rows, n_features), one chunk across the columns. Its name
    hashes a fingerprint of every file or object of the input (sizes and modification times
    locally, ETags or versions on object stores), so a rewritten input gets a new name.

    Raises
    ------
    InputError
        The path does not exist, cannot be reached, is of an unknown kind, is damaged, or does
        not hold a 2-D array; a ``.npy`` file shorter than its header declares. When the
        array is computed: a file or object that cannot be read, a zarr chunk or Parquet page
        that cannot be decoded, a ``.npy`` file cut short or rewritten (a local one: its
        size or modification time changed since opening), or a zarr chunk there
        when the array was opened and deleted since (zarr would read it as the fill value);
        each names the file or chunk.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise InputError(
            f"open_array needs a path or URL (a str or os.PathLike), got {type(spec).__name__}; "
            "pass e.g. 'data.zarr', 'rows.npy', 'table.parquet' or 's3://bucket/data.zarr'."
        )
    if columns is not None and isinstance(columns, str):
        raise InputError(
            f"columns={columns!r}: give a list of column names, e.g. columns=[{columns!r}]."
        )
    columns = None if columns is None else list(columns)
    if columns is not None and not columns:
        raise InputError(
            "columns=[] selects no column; give the columns to read, or columns=None for "
            "every (numeric) column."
        )
    path, name = _split_spec(spec)
    try:
        return _open(path, name, columns, chunks, storage_options)
    except InputError as exc:
        # Messages show the URL without its secrets; a client's text inside may hold them.
        raise InputError(_remote.redact(str(exc), storage_options, [os.fspath(spec)])) from None
    except Exception as exc:  # network, permission and library errors: one line, no secrets
        raise InputError(
            _remote.redact(
                f"cannot read {_remote.display(path)!r} ({type(exc).__name__}: {exc}); check "
                "the URL, that the bucket exists and the credentials (storage_options or the "
                "environment).",
                storage_options,
                [os.fspath(spec)],
            )
        ) from None


def table_columns(spec, storage_options=None):
    """The names of the columns :func:`open_array` reads from ``spec`` without ``columns``.

    A Parquet file or directory: its columns, in order (its schema is read, no rows). An
    array input (zarr, ``.npy``) has no names: None. Meant for a ``spec`` that
    :func:`open_array` has opened: it does not name the problems of one it cannot open.
    """
    path, name = _split_spec(spec)
    where = _Location(path, storage_options)
    if name is not None or _is_zarr(where) or not _is_parquet(where):
        return None
    import dask.dataframe as dd

    frame = dd.read_parquet(where.url, storage_options=where.storage_options or None)
    return [str(c) for c in frame.columns]


# Filesystems whose first path component is a bucket or container.
_BUCKET_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"}


def _open(path, name, columns, chunks, storage_options):
    where = _Location(path, storage_options)
    if not where.exists():
        protocols = where.fs.protocol if where.local is None else ()
        if set([protocols] if isinstance(protocols, str) else protocols) & _BUCKET_STORES:
            root = where.path.split("/", 1)[0]
            if root and not where.fs.exists(root):
                raise InputError(
                    f"{where.shown!r}: the bucket (or container) {root!r} does not exist or "
                    "these credentials cannot see it; check the URL and the credentials."
                )
        raise InputError(f"no such file or directory: {where.shown!r}.")
    if columns and not _is_parquet(where):
        raise InputError(
            f"columns={list(columns)} applies to Parquet input only; {where.shown!r} "
            "is not a Parquet file or directory."
        )
    if _is_zarr(where):
        return _open_zarr(where, name, chunks)
    if name is not None:
        raise InputError(f"{where.shown!r} is not a zarr group, so ':{name}' cannot name an array.")
    if where.url.endswith(".npy") or (where.isdir() and where.files(".npy")):
        if where.isdir() and where.files(".parquet"):
            raise InputError(
                f"{where.shown!r} holds both .npy files and Parquet files; a directory is read "
                "as one kind, so the other rows would be left out. Move the .npy files or the "
                "Parquet files to a directory of their own."
            )
        return _open_npy(where, chunks)
    if _is_parquet(where):
        return _open_parquet(where, columns, chunks)
    raise InputError(
        f"{where.shown!r} is not a zarr store, a .npy file, a directory of .npy files or a "
        "Parquet dataset."
    )


def write_labels(labels, url, overwrite=False, storage_options=None):
    """Store a 1-D array of labels in a zarr store at a path or URL (computes it, one pass).

    ``labels`` is what :meth:`StreamingKMeans.predict <dask_streamkm.StreamingKMeans.predict>`
    returns: a lazy dask array, a numpy array, a dask Series (for a dask DataFrame) or a
    DataArray (for xarray input); any 1-D array-like is accepted.

    Written in waves of at most ``_waves.WAVE_CHUNKS`` chunks, each chunk to its own region of
    one zarr array, so the graphs stay small at any chunk count. Uneven chunks are made regular
    first, as zarr requires. ``storage_options`` are those of the URL's fsspec filesystem.

    The store is written under a fresh temporary name next to ``url``, checked complete (every
    chunk present) and only then switched into place, so an old store at ``url`` stays whole
    and readable until the new one is complete (see ``_location.write_atomic`` for what is
    atomic on each filesystem). Without ``overwrite`` the switch is an exclusive create: a
    store made at ``url`` meanwhile by another writer is kept and this write fails.
    Raises InputError when the store exists and ``overwrite`` is False, and ValueError
    (``OutputError``) when ``url`` names a file of another kind (``labels.npy``,
    ``labels.csv``...): the store is a directory, which readers of those files cannot open.
    """
    from ._outputs import refuse_file_name

    refuse_file_name("url", url)
    where = Location.of(url, storage_options)
    if where.exists() and not overwrite:
        raise InputError(
            f"{where.shown!r} already exists; remove it or pass --overwrite (overwrite=True)."
        )
    write_atomic(where, labels_writer(labels, storage_options), overwrite=overwrite, flag="url")


def _labels_array(labels):
    """``labels`` as a 1-D dask array of known chunks: what ``predict`` returns for every
    input (a dask or numpy array, a dask Series, a DataArray), or any 1-D array-like."""
    from . import _frames

    labels = _frames.column_array(labels)
    if not isinstance(labels, da.Array):
        labels = da.asarray(np.asarray(labels))
    if labels.ndim != 1:
        raise InputError(
            f"labels has shape {labels.shape}; write_labels stores one label per row, a 1-D "
            "array such as StreamingKMeans.predict(X) returns (transform's distances are "
            "2-D: store them with dask.array.to_zarr)."
        )
    if any(np.isnan(c) for c in labels.chunks[0]):
        raise InputError(
            f"labels has unknown chunk sizes {labels.chunks[0]}; call "
            "labels.compute_chunk_sizes() before write_labels."
        )
    return labels


def labels_writer(labels, storage_options=None):
    """``write(path)``: store ``labels`` (:func:`_labels_array`) as a new zarr array at
    ``path`` (a path or URL), every chunk stored (even one of zeros: the switch into place
    checks that all are there)."""
    labels = _labels_array(labels)
    rows = max(labels.chunks[0]) if labels.shape[0] else 1
    if len(set(labels.chunks[0][:-1])) > 1 or (
        len(labels.chunks[0]) > 1 and labels.chunks[0][-1] > labels.chunks[0][0]
    ):
        labels = labels.rechunk(rows)

    def write(path):
        import zarr

        from . import _graph

        options = Location.of(path, storage_options).options
        target = zarr.create_array(
            store=path,
            shape=labels.shape,
            chunks=(rows,),
            dtype=labels.dtype,
            config={"write_empty_chunks": True},
            **options,
        )
        # Region writes, wave by wave: no graph holds more than about WAVE_CHUNKS chunks' tasks.
        _graph.store_in_waves(labels, target)

    return write


# ---------------------------------------------------------------------- xarray
def stack_samples(array, feature_dim, sample_dim="sample"):
    """An xarray DataArray as (sample, feature): every dim but ``feature_dim`` stacked into
    one ``sample_dim`` (lazy for dask-backed data; nothing is read).

    Parameters
    ----------
    array : xarray.DataArray
        Data with one feature dim and any number of other dims (time, lat, lon...).
    feature_dim : str
        The dim whose values are the features (bands, channels, variables).
    sample_dim : str, default="sample"
        Name of the stacked dim. Labels predicted over it go back to the grid with
        ``labels.unstack(sample_dim)``.

    Returns
    -------
    xarray.DataArray of dims ``(sample_dim, feature_dim)``, with one chunk across the
    features (what :class:`~dask_streamkm.StreamingKMeans` needs).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from dask_streamkm.io import stack_samples
    >>> cube = xr.DataArray(np.zeros((2, 3, 4)), dims=("time", "x", "band"))
    >>> stack_samples(cube, "band").dims
    ('sample', 'band')
    """
    if feature_dim not in array.dims:
        raise ValueError(
            f"feature_dim={feature_dim!r} is not a dim of the DataArray; its dims are {array.dims}."
        )
    others = [d for d in array.dims if d != feature_dim]
    if len(others) == 1 and others[0] == sample_dim:
        out = array
    else:
        out = array.stack({sample_dim: others})
    out = out.transpose(sample_dim, feature_dim)
    if out.chunks is not None:
        out = out.chunk({feature_dim: -1})
    return out


def dataset_to_array(dataset, variables=None, feature_dim="variable", sample_dim="sample"):
    """The variables of an xarray Dataset as the features of a (sample, feature) DataArray.

    Each variable (all of the same dims) becomes one feature, named by the variable; the
    other dims are stacked into ``sample_dim`` (:func:`stack_samples`) unless there is one.
    Lazy for dask-backed data (``xr.open_zarr``): nothing is read.

    Parameters
    ----------
    dataset : xarray.Dataset
        Data variables of the same dims, numeric.
    variables : list of str, optional
        The variables to use, in order; all data variables by default.
    feature_dim : str, default="variable"
        Name of the feature dim; its coordinate holds the variable names, which become
        ``feature_names_in_`` of a model fitted on the result.
    sample_dim : str, default="sample"
        Name of the sample dim when several dims are stacked.

    Returns
    -------
    xarray.DataArray of dims ``(sample, feature_dim)``.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from dask_streamkm.io import dataset_to_array
    >>> ds = xr.Dataset({"t": ("time", np.zeros(3)), "p": ("time", np.ones(3))})
    >>> X = dataset_to_array(ds)
    >>> X.dims, X["variable"].values.tolist()
    (('time', 'variable'), ['t', 'p'])
    """
    names = list(dataset.data_vars) if variables is None else list(variables)
    missing = [v for v in names if v not in dataset.data_vars]
    if missing or not names:
        raise ValueError(
            f"variables={variables!r}: the Dataset has no data variable {missing or names}; "
            f"its data variables are {list(dataset.data_vars)}."
        )
    dims = {v: dataset[v].dims for v in names}
    if len(set(dims.values())) > 1:
        raise ValueError(
            f"the variables have different dims {dims}; select variables of the same dims, or "
            "broadcast them first (xr.broadcast)."
        )
    array = dataset[names].to_dataarray(dim=feature_dim)
    others = [d for d in array.dims if d != feature_dim]
    return stack_samples(array, feature_dim, others[0] if len(others) == 1 else sample_dim)
