"""Paths to dask arrays and back: zarr stores, directories of ``.npy`` files, Parquet datasets.

Nothing here reads data: every function returns a lazy dask array whose chunks are read by the
tasks that use them. Each array gets a name derived from the paths, the layout and the files'
modification times, so the same unchanged input opened in another process has the same name
(checkpoints rely on this) and a rewritten input does not.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
from dask.base import tokenize

__all__ = ["InputError", "open_array", "write_labels"]


class InputError(ValueError):
    """An input path that cannot be read as a 2-D array (the message says why and the fix)."""


def _mtimes(paths):
    return [(os.fspath(p), os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths]


def _is_zarr(path):
    return path.is_dir() and any(
        (path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup")
    )


def _is_parquet(path):
    if path.is_file():
        return path.suffix in (".parquet", ".pq")
    return path.is_dir() and any(path.rglob("*.parquet"))


def _split_spec(spec):
    """``path`` or ``path:array_name`` (a named array inside a zarr group)."""
    spec = os.fspath(spec)
    if os.path.exists(spec) or ":" not in spec:
        return Path(spec), None
    path, name = spec.rsplit(":", 1)
    return Path(path), name or None


def _row_chunks(chunks, default):
    if chunks is None:
        return default
    if int(chunks) < 1:
        raise InputError(f"chunks={chunks!r} should be a number of rows >= 1.")
    return int(chunks)


def _open_zarr(path, name, chunks):
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Group):
        arrays = sorted(node.array_keys())
        if name is None:
            if len(arrays) != 1:
                raise InputError(
                    f"{str(path)!r} is a zarr group holding the arrays {arrays}; name one as "
                    f"'{path}:ARRAY'."
                )
            name = arrays[0]
        if name not in arrays:
            raise InputError(
                f"the zarr group {str(path)!r} has no array {name!r}; its arrays are {arrays}."
            )
        node = node[name]
        meta = path / name
    elif name is not None:
        raise InputError(
            f"{str(path)!r} is a zarr array, not a group; drop ':{name}' from the path."
        )
    else:
        meta = path
    _check_2d(node.shape, f"{path}" + (f":{name}" if name else ""))
    store_rows = int(node.chunks[0])
    rows = _row_chunks(chunks, store_rows)
    # Whole stored chunks per dask chunk, so that every stored chunk is read exactly once.
    rows = max(store_rows, -(-rows // store_rows) * store_rows)
    files = [p for p in (meta / "zarr.json", meta / ".zarray") if p.exists()]
    token = tokenize(os.path.abspath(path), name, node.shape, node.dtype.str, rows, _mtimes(files))
    return da.from_array(node, chunks=(rows, -1), name=f"zarr-{token}")


def _check_2d(shape, what):
    if len(shape) != 2:
        raise InputError(
            f"{what!r} holds an array of shape {tuple(shape)}; expected 2-D (rows, features). "
            "Reshape it to (n_rows, n_features) when you write it."
        )


def _open_npy(path, chunks):
    files = [path] if path.is_file() else sorted(path.glob("*.npy"))
    if not files:
        raise InputError(f"the directory {str(path)!r} holds no .npy files.")
    blocks = []
    for f in files:
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{str(f)!r} is not a readable .npy file: {exc}") from exc
        _check_2d(arr.shape, str(f))
        if blocks and (arr.shape[1], arr.dtype) != (blocks[0].shape[1], blocks[0].dtype):
            raise InputError(
                f"{str(f)!r} has shape {arr.shape} and dtype {arr.dtype} but {str(files[0])!r} "
                f"has {blocks[0].shape[1]} columns of {blocks[0].dtype}; every .npy file of a "
                "directory must have the same number of columns and dtype."
            )
        blocks.append(arr)
    parts = []
    for f, arr in zip(files, blocks, strict=True):
        rows = _row_chunks(chunks, max(arr.shape[0], 1))
        token = tokenize(_mtimes([f]), arr.shape, arr.dtype.str, rows)
        # Tasks hold the path, not the memory map: da.from_array would copy a memmap (it copies
        # array-likes with a copy method) and pickling one to a worker would send its data.
        parts.append(
            da.map_blocks(
                _npy_block,
                chunks=da.core.normalize_chunks((rows, -1), arr.shape),
                dtype=arr.dtype,
                meta=np.empty((0, 0), dtype=arr.dtype),
                name=f"npy-{token}",
                path=os.fspath(f),
            )
        )
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


def _npy_block(block_info=None, *, path):
    """Rows of one chunk of a .npy file, read through a memory map (a task)."""
    start, stop = block_info[None]["array-location"][0]
    return np.array(np.load(path, mmap_mode="r", allow_pickle=False)[start:stop])


def _numeric(dtype):
    try:
        return np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)
    except TypeError:  # pandas extension dtypes (strings, categories...)
        return False


def _open_parquet(path, columns, chunks):
    import dask.dataframe as dd

    df = dd.read_parquet(str(path), columns=list(columns) if columns else None)
    bad = [c for c, t in df.dtypes.items() if not _numeric(t)]
    if bad:
        raise InputError(
            f"the Parquet dataset {str(path)!r} has non-numeric columns {bad}; choose numeric "
            "ones with --columns (columns=[...])."
        )
    X = df.to_dask_array()
    # Row counts per partition (dask answers len() of Parquet from the file metadata). Not
    # ``to_dask_array(lengths=True)``: dask may fuse the partitions of a column projection
    # and then count fewer lengths than ``npartitions``, which that call rejects.
    lengths = tuple(int(n) for n in df.map_partitions(len).compute())
    if len(lengths) == X.numblocks[0]:
        X = da.Array(
            X.dask,
            X.name,
            (lengths, (X.shape[1],)),
            dtype=X.dtype,
            meta=np.empty((0, 0), dtype=X.dtype),
        )
    else:
        X = X.compute_chunk_sizes()
    if chunks is not None:
        X = X.rechunk({0: _row_chunks(chunks, None), 1: -1})
    return X


def open_array(spec, columns=None, chunks=None):
    """A lazy 2-D dask array for a path; nothing is read until it is computed.

    Parameters
    ----------
    spec : str or path
        ``path.zarr`` (a zarr array, or a group holding one array), ``path.zarr:name`` (the
        array ``name`` of a zarr group), a ``.npy`` file or a directory of ``.npy`` files
        (memory-mapped, one chunk per file, stacked by sorted file name), or a Parquet file or
        directory (read through dask.dataframe).
    columns : list of str, optional
        Parquet columns to read; all columns (which must be numeric) by default.
    chunks : int, optional
        Rows per chunk. For zarr the default is the store's row chunking, and a value is rounded
        up to whole stored chunks so every stored chunk is read once; for ``.npy`` files the
        default is one chunk per file; for Parquet one chunk per partition.

    Returns
    -------
    dask.array.Array of shape (n_rows, n_features), one chunk across the columns.

    Raises
    ------
    InputError
        The path does not exist, is of an unknown kind or does not hold a 2-D array.
    """
    path, name = _split_spec(spec)
    if not path.exists():
        raise InputError(f"no such file or directory: {str(path)!r}.")
    if columns and not _is_parquet(path):
        raise InputError(
            f"columns={list(columns)} applies to Parquet input only; {str(path)!r} "
            "is not a Parquet file or directory."
        )
    if _is_zarr(path):
        return _open_zarr(path, name, chunks)
    if name is not None:
        raise InputError(f"{str(path)!r} is not a zarr group, so ':{name}' cannot name an array.")
    if path.suffix == ".npy" or (path.is_dir() and any(path.glob("*.npy"))):
        return _open_npy(path, chunks)
    if _is_parquet(path):
        return _open_parquet(path, columns, chunks)
    raise InputError(
        f"{str(path)!r} is not a zarr store, a .npy file, a directory of .npy files or a Parquet "
        "dataset."
    )


def write_labels(labels, path, *, overwrite=False):
    """Store a lazy 1-D array of labels in a zarr store at ``path`` (computes it, one pass).

    Uneven chunks are made regular first, as zarr requires.
    """
    if os.path.exists(path) and not overwrite:
        raise InputError(f"{os.fspath(path)!r} already exists; remove it or pass --overwrite.")
    rows = max(labels.chunks[0]) if labels.shape[0] else 1
    if len(set(labels.chunks[0][:-1])) > 1 or (
        len(labels.chunks[0]) > 1 and labels.chunks[0][-1] > labels.chunks[0][0]
    ):
        labels = labels.rechunk(rows)
    return da.to_zarr(labels, os.fspath(path), overwrite=overwrite)
