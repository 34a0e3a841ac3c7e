"""Checkpoints of a fit: summaries of finished chunk ranges saved as ``.npz`` as the fit goes.

A plug-in of the wave engine (:class:`._waves.Hooks`): a :class:`Checkpoint` given to
:func:`._graph.fit_summary` or :func:`._refine.refine_pass` hands the engine hooks that load
and save nodes; without one the same functions compute the same result from the data alone.

The tree of :mod:`._waves` first merges the leaves ``split_every`` at a time; each such merge
node covers a range of whole chunks. Here each first-level node also writes its summary to
``DIR/summary-<key>-<start>-<stop>.npz`` (written to a temporary name, then renamed, so a killed
run never leaves half a file). ``key`` hashes the data's dask name, shape, dtype and row chunks,
the summary parameters and the seed, so files of another run or of other data are never picked
up. A restarted fit loads the files of finished ranges and leaves their chunks out of the graph
(they are not read again); the nodes above are the same as in an uninterrupted fit, with the same
seeds, so the result is bit-identical.

When the fit runs in waves (:func:`._waves.reduce_in_waves`), each wave's root is saved the same
way, so a restart skips a finished wave without opening its ranges' files. Every file carries
what it covers (the run key, its chunk range and a SHA-256 of its arrays); a file that does not
match (swapped with another range's, edited, NaN or negative weights, truncated, or written
before these fields existed) is recomputed, never used.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import numbers
import os
from collections.abc import Callable

import numpy as np
from dask.base import tokenize

from . import _remote
from ._array import to_host
from ._location import write_atomic
from ._npz import NpzReader
from ._refine import RefineStats, refine_cap
from ._refine_kernels import REFINE_TOP_LEVEL, refine_key_span
from ._waves import Hooks, wave_levels
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


def combine_and_save(*children, combine, path, cover, wrap, storage_options=None):
    """``combine(*children)`` (a merge node's function), saved to ``path`` (a task)."""
    return saved(
        combine(*children), path=path, cover=cover, wrap=wrap, storage_options=storage_options
    )


def saved(result, *, path, cover, wrap, storage_options=None):
    """``result`` saved to ``path`` as ``wrap(result, cover)``, with what it ``cover``s (a
    task: a merge's, or the lone leaf when the whole data is one chunk); returns ``result``."""
    _save(wrap(result, cover), path, storage_options)
    return result


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


class _Files(Hooks):
    """Checkpoint hooks of the wave engine: first-level nodes and wave roots are saved to
    ``kind.path_of(directory, key, start, stop)`` and loaded from there.

    ``kind`` (:data:`SUMMARIES`, :data:`REFINE_STATS`) names the file of a range and how a
    result is saved and loaded; ``shape`` is what a loaded result must fit (the number of
    features of a summary, the centers' (k, d) of refine stats).
    """

    def __init__(self, kind, directory, key, shape, wave_level, storage_options=None):
        self.kind, self.directory, self.key, self.shape = kind, directory, key, shape
        self.options = storage_options
        self.levels = {1, wave_level} if wave_level else {1}
        self.token = key

    def _where(self, start, stop):
        """The saving tasks' keywords for chunks [start, stop)."""
        return dict(
            path=self.kind.path_of(self.directory, self.key, start, stop),
            cover=(self.key, start, stop),
            wrap=self.kind.wrap,
            storage_options=self.options,
        )

    def loaded(self, level, index, start, stop):
        if level not in self.levels:
            return None
        path = self.kind.path_of(self.directory, self.key, start, stop)
        return self.kind.load(path, self.shape, (self.key, start, stop), self.options)

    def merge(self, level, index, start, stop, node):
        if level not in self.levels:
            return node
        return functools.partial(combine_and_save, combine=node, **self._where(start, stop))

    def lone_leaf(self, start, stop):
        return functools.partial(saved, **self._where(start, stop))


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
            stats = RefineStats(
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
        or (stats.k, stats.cap) != (k, refine_cap(k, d))
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


@dataclasses.dataclass(frozen=True)
class _Kind:
    """What one kind of checkpoint file holds: its path for a range, the wrapper whose
    ``save`` writes a result with what it covers, and the loader (None when not valid)."""

    path_of: Callable
    wrap: type
    load: Callable


#: Files of a fit's summary: ``summary-<key>-<start>-<stop>.npz``.
SUMMARIES = _Kind(range_path, _Covered, _load)
#: Files of a refinement pass: ``refine-<key>-<start>-<stop>.npz``.
REFINE_STATS = _Kind(refine_path, _Stats, _load_stats)


class Checkpoint:
    """A checkpoint directory (a local path or an fsspec URL with its ``storage_options``):
    the hooks that let the wave engine load and save the ranges of a fit's reductions."""

    def __init__(self, directory, storage_options=None):
        self.directory, self.storage_options = directory, storage_options

    @classmethod
    def open(cls, checkpoint, random_state, storage_options=None):
        """None when ``checkpoint`` is None, else the :class:`Checkpoint` of the validated
        (and created) directory (:func:`check_directory`)."""
        if checkpoint is None:
            return None
        return cls(check_directory(checkpoint, random_state, storage_options), storage_options)

    def _hooks(self, kind, key, shape, n_blocks, split_every):
        return _Files(
            kind,
            self.directory,
            key,
            shape,
            wave_levels(n_blocks, split_every),
            self.storage_options,
        )

    def summary_hooks(self, X, sample_weight, params):
        """Hooks of :func:`._graph.fit_summary` for :class:`._graph.SummaryParams` ``params``:
        first-level nodes and wave roots saved to, and loaded from, ``summary-*.npz`` files
        keyed by the data, the weights and ``params``; a restarted fit reads only the chunks
        of unfinished ranges."""
        fields = ("size", "method", "mini_batch_size", "split_every", "budget", "entropy")
        key = run_key(X, sample_weight, **params.keywords(*fields))
        return self._hooks(SUMMARIES, key, X.shape[1], X.numblocks[0], params.split_every)

    def refine_hooks(self, X, sample_weight, centers, split_every, pass_number):
        """Hooks of :func:`._refine.refine_pass`: each range's stats saved to, and loaded
        from, ``refine-*.npz`` files keyed by the data, the weights, ``pass_number`` and a
        hash of ``centers``."""
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
        return self._hooks(REFINE_STATS, key, host.shape, X.numblocks[0], split_every)
