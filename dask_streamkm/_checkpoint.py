"""Checkpoints of a fit: summaries of finished chunk ranges saved as ``.npz`` as the fit goes.

The tree of :mod:`._graph` first merges the leaves ``split_every`` at a time; each such merge
node covers a range of whole chunks. Here each first-level node also writes its summary to
``DIR/summary-<key>-<start>-<stop>.npz`` (written to a temporary name, then renamed, so a killed
run never leaves half a file). ``key`` hashes the data's dask name, shape, dtype and row chunks,
the summary parameters and the seed, so files of another run or of other data are never picked
up. A restarted fit loads the files of finished ranges and leaves their chunks out of the graph
(they are not read again); the nodes above are the same as in an uninterrupted fit, with the same
seeds, so the result is bit-identical.
"""

from __future__ import annotations

import numbers
import os

import dask
from dask.base import tokenize

from . import _graph, _remote
from .summary import Summary


def check_directory(checkpoint, random_state, storage_options=None):
    """Validate the ``checkpoint`` parameter; returns the directory as a str (created).

    ``checkpoint`` is a local directory or a URL of any fsspec filesystem (``s3://bucket/ckpt``);
    ``storage_options`` are that filesystem's options (the usual chain applies without them).
    """
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ValueError(
            f"checkpoint={checkpoint!r} should be None or a directory path (str or os.PathLike)."
        )
    shown = _remote.display(os.fspath(checkpoint))
    if not isinstance(random_state, numbers.Integral) or isinstance(random_state, bool):
        raise ValueError(
            f"checkpoint={shown!r} needs an integer random_state (got "
            f"random_state={random_state!r}), so that a restarted fit draws the same seeds and "
            "finds its files; pass e.g. random_state=0."
        )
    if _remote.is_url(checkpoint):
        directory = str(checkpoint).rstrip("/")
        try:
            fs, path = _remote.filesystem(directory, storage_options)
            if fs.isfile(path):
                raise ValueError(f"checkpoint={shown!r} is a file; it should be a directory.")
            fs.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                _remote.redact(
                    f"checkpoint={shown!r} cannot be used ({type(exc).__name__}: {exc}); check "
                    "the URL, that the bucket exists and the credentials.",
                    storage_options,
                )
            ) from exc
        return directory
    directory = _remote.local_path(checkpoint)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"checkpoint={directory!r} is a file; it should be a directory.")
    os.makedirs(directory, exist_ok=True)
    return directory


def _zarr_sources(X):
    """``zarr.Array`` objects X reads from directly (``da.from_zarr``), found in small layers."""
    try:
        import zarr
    except ImportError:
        return []
    found = []
    for layer in X.__dask_graph__().layers.values():
        mapping = getattr(layer, "mapping", None)
        if not isinstance(mapping, dict) or len(mapping) > 8:
            continue
        found.extend(v for v in mapping.values() if isinstance(v, zarr.Array))
    return found


def run_key(X, sample_weight, **params):
    """Hash of everything a chunk range's summary depends on, except the range itself.

    Arrays opened by :func:`dask_streamkm.io.open_array` carry a fingerprint of every chunk
    file or object in their name. An array made by ``da.from_zarr`` does not (its name hashes
    the store's path only), so the fingerprint of each zarr store X reads is folded in here:
    per-chunk size and mtime locally, per-object ETag/version from one listing remotely.
    """
    entropy = params.get("entropy")
    if isinstance(entropy, (list, tuple)):
        params["entropy"] = [int(e) for e in entropy]
    weight = None if sample_weight is None else sample_weight.name
    stores = [_remote.zarr_store_fingerprint(a) for a in _zarr_sources(X)]
    return tokenize(
        X.name, X.shape, X.dtype.str, X.chunks[0], weight, sorted(params.items()), stores
    )[:20]


def range_path(directory, key, start, stop):
    """File of the summary of chunks ``start`` (included) to ``stop`` (excluded)."""
    return _remote.join(directory, f"summary-{key}-{start:06d}-{stop:06d}.npz")


def _save(summary, path, storage_options=None):
    """Write atomically: locally a temporary file in the same directory, then a rename; on an
    object store one whole-object upload (atomic per object)."""
    tmp = _remote.local_temp(path, ".npz")
    try:
        summary.save(tmp)
        _remote.put_file(tmp, path, storage_options)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def merge_and_save(*children, path, cap, level, index, entropy):
    """The first-level merge of :func:`._graph.tree`, saved to ``path`` (a task)."""
    out = _graph.merge(*children, cap=cap, level=level, index=index, entropy=entropy)
    _save(out, path)
    return out


def leaf_and_save(leaf, path):
    """A lone leaf (the whole data is one chunk), saved to ``path`` (a task)."""
    _save(leaf, path)
    return leaf


def _load(path, n_features, storage_options=None):
    """The saved summary, or None when the file is missing or unreadable (it is recomputed)."""
    if not _remote.is_url(path):
        if not os.path.exists(path):
            return None
        try:
            summary = Summary.load(path)
        except ValueError:
            return None
        return summary if summary.n_features == n_features else None
    try:
        data = _remote.read_bytes(path, storage_options)
    except FileNotFoundError:
        return None
    tmp = _remote.local_temp(path, ".npz")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        summary = Summary.load(tmp)
    except ValueError:
        return None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return summary if summary.n_features == n_features else None


def summary_graph(
    X, sample_weight, *, directory, size, method, mini_batch_size, split_every, budget, entropy
):
    """:func:`._graph.summary_graph` with first-level summaries saved to and loaded from files.

    Returns ``(graph, n_loaded, n_ranges)``: the delayed summary, the number of chunk ranges
    loaded from ``directory`` and the number of ranges.
    """
    split_every = max(2, int(split_every))
    key = run_key(
        X,
        sample_weight,
        size=int(size),
        method=method,
        mini_batch_size=int(mini_batch_size),
        split_every=split_every,
        budget=int(budget),
        entropy=entropy,
    )
    n_blocks = X.numblocks[0]
    leaves = _graph.leaf_tasks(
        X,
        sample_weight,
        size=size,
        method=method,
        mini_batch_size=mini_batch_size,
        entropy=entropy,
    )

    if n_blocks == 1:
        path = range_path(directory, key, 0, 1)
        done = _load(path, X.shape[1])
        if done is not None:
            return done, 1, 1
        return dask.delayed(leaf_and_save, pure=True)(leaves[0], path), 0, 1

    nodes, covered, n_loaded = [], [], 0
    for index, start in enumerate(range(0, n_blocks, split_every)):
        stop = min(start + split_every, n_blocks)
        covered.append(stop - start)
        path = range_path(directory, key, start, stop)
        done = _load(path, X.shape[1])
        if done is not None:
            nodes.append(done)
            n_loaded += 1
            continue
        nodes.append(
            dask.delayed(merge_and_save, pure=True)(
                *leaves[start:stop],
                path=path,
                cap=_graph.node_cap(budget, stop - start, n_blocks, size),
                level=1,
                index=index,
                entropy=entropy,
            )
        )
    n_ranges = len(nodes)
    if n_ranges == 1:
        return nodes[0], n_loaded, n_ranges
    graph = _graph.tree(
        nodes,
        split_every=split_every,
        budget=budget,
        size=size,
        entropy=entropy,
        level=2,
        covered=covered,
    )
    return graph, n_loaded, n_ranges
