"""Checkpoints of a fit: summaries of finished chunk ranges saved as ``.npz`` as the fit goes.

The tree of :mod:`._graph` first merges the leaves ``split_every`` at a time; each such merge
node covers a range of whole chunks. Here each first-level node also writes its summary to
``DIR/summary-<key>-<start>-<stop>.npz`` (written to a temporary name, then renamed, so a killed
run never leaves half a file). ``key`` hashes the data's dask name, shape, dtype and row chunks,
the summary parameters and the seed, so files of another run or of other data are never picked
up. A restarted fit loads the files of finished ranges and leaves their chunks out of the graph
(they are not read again); the nodes above are the same as in an uninterrupted fit, with the same
seeds, so the result is bit-identical.

When the fit runs in waves (:func:`._graph.fit_summary`), each wave's root is saved the same way,
so a restart skips a finished wave without opening its ranges' files. Every file carries what it
covers (the run key, its chunk range and a SHA-256 of its arrays); a file that does not match
(swapped with another range's, edited, NaN or negative weights, truncated, or written before
these fields existed) is recomputed, never used.
"""

from __future__ import annotations

import functools
import hashlib
import numbers
import os

import numpy as np
from dask.base import tokenize

from . import _graph, _remote
from ._array import to_host
from ._kernels import REFINE_TOP_LEVEL, refine_key_span
from ._location import write_atomic
from ._npz import NpzReader
from .summary import FORMAT_VERSION, Summary


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
            is_file = fs.isfile(path)
            if not is_file:
                fs.makedirs(path, exist_ok=True)
        except Exception as exc:  # OSError, or a client's own (missing credentials...)
            raise ValueError(
                _remote.redact(
                    f"checkpoint={shown!r} cannot be used ({type(exc).__name__}: {exc}); check "
                    "the URL, that the bucket exists and the credentials.",
                    storage_options,
                    [directory],
                )
            ) from None
        if is_file:
            raise ValueError(f"checkpoint={shown!r} is a file; it should be a directory.")
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


def _file_error(action, path, exc, storage_options):
    """The OSError of ``action`` ("reading", "writing") a checkpoint file, without secrets
    (raise it ``from None``: the cause may hold them)."""
    return OSError(
        _remote.redact(
            f"{action} the checkpoint file {path!r} failed ({type(exc).__name__}: {exc}); "
            "check that the checkpoint directory is reachable and the credentials, and rerun "
            "(the fit resumes where it stopped).",
            storage_options,
            [path],
        )
    )


def _save(summary, path, storage_options=None):
    """Write ``summary.save``'s file atomically (:func:`._location.write_atomic`): locally a
    temporary file in the same directory, then a rename; on an object store one whole-object
    write (atomic per object)."""
    try:
        write_atomic(path, summary.save, storage_options, local=True)
    except Exception as exc:  # a client's text may hold the URL's secrets
        raise _file_error("writing", path, exc, storage_options) from None


def _checksum(summary, cover):
    """SHA-256 of a summary's arrays, its row count and what it covers."""
    digest = hashlib.sha256(repr((str(cover[0]), int(cover[1]), int(cover[2]))).encode())
    for values in (summary.weights, summary.linear_sums, summary.square_sums):
        digest.update(np.ascontiguousarray(to_host(values), dtype=np.float64).tobytes())
    if summary.origin is not None:
        digest.update(np.ascontiguousarray(summary.host_origin()).tobytes())
    digest.update(str(int(summary.n_seen)).encode())
    return digest.hexdigest()


class _Covered:
    """A summary to save with what it covers: run key, chunk range and checksum.

    Duck-types :meth:`Summary.save` for :func:`_save`; :meth:`Summary.load` reads the file
    as a plain summary (it ignores the extra fields), :func:`_covers` checks them.
    """

    def __init__(self, summary, cover):
        self.summary, self.cover = summary, cover

    def save(self, path):
        s = self.summary
        key, start, stop = self.cover
        fields = dict(
            **s._file_fields(),
            run_key=np.str_(key),
            chunk_start=np.int64(start),
            chunk_stop=np.int64(stop),
            checksum=np.str_(_checksum(s, self.cover)),
        )
        if hasattr(path, "write"):
            np.savez(path, **fields)
        else:
            with open(os.fspath(path), "wb") as fh:
                np.savez(fh, **fields)
        return path


def _covers(path, summary, expect):
    """Whether the file at ``path`` says it holds ``expect = (run key, start, stop)``, its
    checksum matches the loaded ``summary``, and the summary's numbers are sane (finite,
    weights >= 0). A file swapped with another range's, edited, or of an older version fails.
    """
    key, start, stop = expect
    try:
        with open(path, "rb") as fh, NpzReader(fh.read()) as data:
            stored = (str(data["run_key"]), int(data["chunk_start"]), int(data["chunk_stop"]))
            checksum = str(data["checksum"])
    except Exception:  # noqa: BLE001 - any unreadable or older file is recomputed
        return False
    if stored != (str(key), int(start), int(stop)) or checksum != _checksum(summary, expect):
        return False
    weights = np.asarray(to_host(summary.weights))
    return bool(
        np.all(np.isfinite(weights))
        and np.all(weights >= 0)
        and np.all(np.isfinite(to_host(summary.linear_sums)))
        and np.all(np.isfinite(to_host(summary.square_sums)))
    )


def merge_and_save(*children, path, cap, level, index, entropy, cover=None, storage_options=None):
    """A merge of :func:`._graph.tree`, saved to ``path`` with what it ``cover``s (a task)."""
    out = _graph.merge(*children, cap=cap, level=level, index=index, entropy=entropy)
    _save(out if cover is None else _Covered(out, cover), path, storage_options)
    return out


def leaf_and_save(leaf, path, cover=None, storage_options=None):
    """A lone leaf (the whole data is one chunk), saved to ``path`` (a task)."""
    _save(leaf if cover is None else _Covered(leaf, cover), path, storage_options)
    return leaf


def _load(path, n_features, expect=None, storage_options=None):
    """The saved summary, or None when the file is missing or unreadable (it is recomputed).

    ``expect``: the ``(run key, start, stop)`` the file must cover (see :func:`_covers`).
    A remote file is read whole into a local temporary file first.
    """
    return _read(path, lambda local: _load_local(local, n_features, expect), storage_options)


def _read(path, load_local, storage_options=None):
    """``load_local(a local path)`` of the file at ``path``, or None when it is missing.

    A remote file is read whole into a local temporary file first.
    """
    if not _remote.is_url(path):
        return load_local(path) if os.path.exists(path) else None
    try:
        data = _remote.read_bytes(path, storage_options)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a client's text may hold the URL's secrets
        raise _file_error("reading", path, exc, storage_options) from None
    tmp = _remote.local_temp(path, ".npz")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        return load_local(tmp)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_local(path, n_features, expect):
    """:func:`_load` of a local file."""
    try:
        summary = Summary.load(path)
    except ValueError:
        return None
    if expect is not None and not _covers(path, summary, expect):
        return None
    return summary if summary.n_features == n_features else None


class _Files(_graph.Hooks):
    """Checkpoint hooks of :func:`._graph.fit_summary`: first-level nodes and wave roots are
    saved to ``range_path(directory, key, start, stop)`` and loaded from there.

    The class attributes name the file of a range and the saving tasks (a merge, a lone
    leaf); :class:`_RefineFiles` swaps them for a refinement pass's.
    """

    path_of = staticmethod(range_path)
    save_merge = staticmethod(merge_and_save)
    save_leaf = staticmethod(leaf_and_save)

    def __init__(self, directory, key, n_features, wave_level, storage_options=None):
        self.directory, self.key, self.n_features = directory, key, n_features
        self.options = storage_options
        self.levels = {1, wave_level} if wave_level else {1}
        self.token = key
        self.loaded_ranges = []

    def _path(self, start, stop):
        return self.path_of(self.directory, self.key, start, stop)

    def _load_file(self, path, expect):
        return _load(path, self.n_features, expect, self.options)

    def loaded(self, level, index, start, stop):
        if level not in self.levels:
            return None
        done = self._load_file(self._path(start, stop), (self.key, start, stop))
        if done is not None:
            self.loaded_ranges.append((start, stop))
        return done

    def merge(self, level, index, start, stop, params):
        if level not in self.levels:
            return super().merge(level, index, start, stop, params)
        return functools.partial(
            self.save_merge,
            path=self._path(start, stop),
            cover=(self.key, start, stop),
            storage_options=self.options,
            **params,
        )

    def lone_leaf(self, start, stop):
        return functools.partial(
            self.save_leaf,
            path=self._path(start, stop),
            cover=(self.key, start, stop),
            storage_options=self.options,
        )


def _run_key(
    X,
    sample_weight,
    *,
    size,
    method,
    mini_batch_size,
    split_every,
    budget,
    entropy,
    metric="euclidean",
):
    # A cosine run's files hold summaries of unit rows: its key differs; euclidean keys as before.
    extra = {} if metric == "euclidean" else {"metric": metric}
    return run_key(
        X,
        sample_weight,
        size=int(size),
        method=method,
        mini_batch_size=int(mini_batch_size),
        split_every=max(2, int(split_every)),
        budget=int(budget),
        entropy=entropy,
        **extra,
    )


def fit_summary(
    X,
    sample_weight,
    *,
    directory,
    size,
    method,
    mini_batch_size,
    split_every,
    budget,
    entropy,
    storage_options=None,
    metric="euclidean",
):
    """:func:`._graph.fit_summary` with first-level nodes and wave roots saved to, and loaded
    from, files in ``directory``; a restarted fit reads only the chunks of unfinished ranges.

    Returns ``(summary, n_loaded, n_ranges)``: the summary, the number of first-level chunk
    ranges whose summaries came from files (directly or inside a loaded wave) and the number
    of first-level ranges.
    """
    split_every = max(2, int(split_every))
    params = dict(
        size=size,
        method=method,
        mini_batch_size=mini_batch_size,
        split_every=split_every,
        budget=budget,
        entropy=entropy,
        metric=metric,
    )
    n_blocks = X.numblocks[0]
    hooks = _Files(
        directory,
        _run_key(X, sample_weight, **params),
        X.shape[1],
        _graph.wave_levels(n_blocks, split_every),
        storage_options,
    )
    summary = _graph.fit_summary(X, sample_weight, hooks=hooks, **params)
    n_ranges = -(-n_blocks // split_every)
    n_loaded = sum(-(-(b - a) // split_every) for a, b in hooks.loaded_ranges)
    return summary, n_loaded, n_ranges


# ---------------------------------------------------------------------- refinement passes
# A refinement pass (``refine_passes``) saves the merged stats of each first-level chunk range
# and wave root as ``refine-<key>-<start>-<stop>.npz``; the key adds the pass number and a hash
# of the centers the pass starts from, so a pass from other centers never picks them up.


def refine_path(directory, key, start, stop):
    """File of a refinement pass's stats over chunks ``start`` (included) to ``stop``."""
    return _remote.join(directory, f"refine-{key}-{start:06d}-{stop:06d}.npz")


_STATS_ARRAYS = ("keys", "weights", "offsets", "sq")


def _stats_checksum(stats, cover):
    """SHA-256 of refine stats (their groups, level, k and cap) and what they cover."""
    digest = hashlib.sha256(repr((str(cover[0]), int(cover[1]), int(cover[2]))).encode())
    digest.update(repr((stats.level, stats.k, stats.cap)).encode())
    for name, values in zip(_STATS_ARRAYS, stats.arrays, strict=True):
        dtype = np.int64 if name == "keys" else np.float64
        digest.update(np.ascontiguousarray(values, dtype=dtype).tobytes())
    return digest.hexdigest()


class _Stats:
    """Refine stats to save with what they cover (the ``save`` that :func:`_save` calls)."""

    def __init__(self, stats, cover):
        self.stats, self.cover = stats, cover

    def save(self, path):
        key, start, stop = self.cover
        stats = self.stats
        with open(os.fspath(path), "wb") as fh:
            np.savez(
                fh,
                format_version=np.int64(FORMAT_VERSION),
                **dict(zip(_STATS_ARRAYS, stats.arrays, strict=True)),
                level=np.int64(stats.level),
                k=np.int64(stats.k),
                cap=np.int64(stats.cap),
                run_key=np.str_(key),
                chunk_start=np.int64(start),
                chunk_stop=np.int64(stop),
                checksum=np.str_(_stats_checksum(stats, self.cover)),
            )
        return path


def _load_stats_local(path, shape, expect):
    """The stats saved at a local ``path`` if they cover ``expect`` and fit centers of
    (k, d) ``shape``; None otherwise (recomputed)."""
    k, d = shape
    try:
        with open(path, "rb") as fh, NpzReader(fh.read()) as data:
            keys = np.asarray(data["keys"], dtype=np.int64)
            weights, offsets, sq = (
                np.asarray(data[f], dtype=np.float64) for f in _STATS_ARRAYS[1:]
            )
            stats = _graph.RefineStats(
                keys,
                weights,
                offsets,
                sq,
                level=int(data["level"]),
                k=int(data["k"]),
                cap=int(data["cap"]),
            )
            stored = (str(data["run_key"]), int(data["chunk_start"]), int(data["chunk_stop"]))
            checksum = str(data["checksum"])
    except Exception:  # noqa: BLE001 - any unreadable or older file is recomputed
        return None
    n = keys.shape[0]
    if (
        stored != (str(expect[0]), int(expect[1]), int(expect[2]))
        or checksum != _stats_checksum(stats, expect)
        or (stats.k, stats.cap) != (k, _graph.refine_cap(k, d))
        or not 0 <= stats.level <= REFINE_TOP_LEVEL
        or keys.shape != (n,)
        or weights.shape != (n,)
        or offsets.shape != (n, d)
        or sq.shape != (n,)
        or (n and (keys[0] < 0 or keys[-1] >= k * refine_key_span(k)))
        or np.any(np.diff(keys) <= 0)
        or not all(np.all(np.isfinite(a)) for a in (weights, offsets, sq))
        or np.any(weights < 0)
        or np.any(sq < 0)
    ):
        return None
    return stats


def _load_stats(path, shape, expect, storage_options=None):
    """:func:`_load_stats_local` of a local or remote file; None when missing or not valid."""
    return _read(path, lambda local: _load_stats_local(local, shape, expect), storage_options)


def refine_merge_and_save(*children, path, cover, storage_options=None, **params):
    """A :func:`._graph.refine_merge`, saved to ``path`` with what it ``cover``s (a task)."""
    out = _graph.refine_merge(*children, **params)
    _save(_Stats(out, cover), path, storage_options)
    return out


def refine_leaf_and_save(stats, path, cover, storage_options=None):
    """The stats of a lone chunk (the whole data), saved to ``path`` (a task)."""
    _save(_Stats(stats, cover), path, storage_options)
    return stats


class _RefineFiles(_Files):
    """Checkpoint hooks of :func:`._graph.refine_pass`: :class:`_Files` with the stats of
    each range saved to ``refine_path(directory, key, start, stop)``; its ``n_features``
    argument is the centers' shape (k, d), which the stats must have."""

    combine = staticmethod(_graph.refine_merge)
    path_of = staticmethod(refine_path)
    save_merge = staticmethod(refine_merge_and_save)
    save_leaf = staticmethod(refine_leaf_and_save)

    def _load_file(self, path, expect):
        return _load_stats(path, self.n_features, expect, self.options)


def refine_pass(
    X, sample_weight, centers, *, directory, split_every, pass_number, storage_options=None
):
    """:func:`._graph.refine_pass` with each range's stats saved to, and loaded from, files in
    ``directory``; the key holds the data, the weights, ``pass_number`` and the centers' hash.
    ``storage_options``: of the filesystem of a ``directory`` URL, as for :func:`fit_summary`.

    Returns ``(stats, n_loaded, n_ranges)`` as :func:`fit_summary`.
    """
    split_every = max(2, int(split_every))
    host = np.ascontiguousarray(to_host(centers), dtype=np.float64)
    centers_hash = hashlib.sha256(host.tobytes() + repr(host.shape).encode()).hexdigest()
    key = run_key(
        X,
        sample_weight,
        refine_pass=int(pass_number),
        centers=centers_hash,
        split_every=split_every,
    )
    n_blocks = X.numblocks[0]
    hooks = _RefineFiles(
        directory, key, host.shape, _graph.wave_levels(n_blocks, split_every), storage_options
    )
    stats = _graph.refine_pass(X, sample_weight, centers, split_every=split_every, hooks=hooks)
    n_ranges = -(-n_blocks // split_every)
    n_loaded = sum(-(-(b - a) // split_every) for a, b in hooks.loaded_ranges)
    return stats, n_loaded, n_ranges
