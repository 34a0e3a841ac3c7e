"""The Summary type: weighted BIRCH-style clustering features of groups of rows."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from ._array import as_weights, device, from_host, is_numpy, namespace, segment_sum, to_host
from ._distances import (
    assigned_sq_distances,
    centered_dtype,
    cosine_cost,
    nearest,
    row_norms_sq,
    thread_workspace,
)
from ._indicator import segment_sum_into
from ._lloyd import group_labels
from ._location import Location, _write_error, write_atomic
from ._npz import NpzReader
from ._runner import weighted_kmeans

#: Version 2 adds ``origin``; version-1 files (sums relative to zero) load with origin None.
FORMAT_VERSION = 2
#: The names of a summary's arrays in its ``.npz`` file (and, prefixed ``summary_``, in a
#: model file): weights, linear and square sums, rows seen, origin (format version 2 on).
FILE_ARRAYS = ("weights", "linear_sums", "square_sums", "n_seen", "origin")
#: A chunk whose mean lies within this many root-mean-square deviations of zero keeps the
#: origin at zero (sums as they were; the cancellation of ``SS - ||S||^2 / W`` stays small).
ORIGIN_NEAR = 32.0
#: Rows (evenly spaced) from which a chunk's origin is placed.
ORIGIN_SAMPLE_ROWS = 1024
#: Largest accepted ratio of the largest to the smallest positive ``sample_weight`` (in one
#: chunk; over the whole array for numpy weights). A group's own error ``SS - S.(S/W)`` is
#: exact to about 1e-16 times ``SS``: a row R times heavier than the rows it shares a group
#: with swamps their error by R, and past R ~ 1e12 the bound falls measurably below the exact
#: cost (1.5e-4 relative at 1e12, 2 % at 1e16; tight blobs 1,000 spreads apart). At 1e6 the
#: bound stays within 1e-8 of the exact cost, where unit weights leave it.
MAX_WEIGHT_RATIO = 1e6
#: Smallest accepted positive ``sample_weight``: its square (and its products with squared
#: distances of order one) stay normal float64 numbers (1e-150 squared is 1e-300).
MIN_WEIGHT = 1e-150


def _check_points(X, sample_weight, labels, n_groups):
    """The checks of :meth:`Summary.from_points`' inputs (ValueErrors naming the fix)."""
    xp = namespace(X)
    if getattr(X, "ndim", None) != 2:
        raise ValueError(
            f"Summary.from_points needs 2-D rows X, got shape {getattr(X, 'shape', None)}; "
            "reshape a single feature with X.reshape(-1, 1)."
        )
    if X.shape[0] and not bool(xp.all(xp.isfinite(xp.astype(X, xp.float64)))):
        raise ValueError("Summary.from_points: X holds NaN or infinite values; remove them first.")
    n = X.shape[0]
    if sample_weight is not None:
        if tuple(sample_weight.shape) != (n,):
            raise ValueError(
                f"Summary.from_points: sample_weight has shape {tuple(sample_weight.shape)}; "
                f"it needs one weight per row, shape ({n},)."
            )
        sw = xp.astype(sample_weight, xp.float64)
        if n and (not bool(xp.all(xp.isfinite(sw))) or bool(xp.any(sw < 0))):
            raise ValueError(
                "Summary.from_points: sample_weight has negative, NaN or infinite values; "
                "weights must be finite and >= 0."
            )
    if labels is not None:
        if tuple(labels.shape) != (n,):
            raise ValueError(
                f"Summary.from_points: labels has shape {tuple(labels.shape)}; it needs one "
                f"label per row, shape ({n},)."
            )
        if n and (
            int(xp.min(labels)) < 0 or (n_groups is not None and int(xp.max(labels)) >= n_groups)
        ):
            raise ValueError(
                f"Summary.from_points: labels must lie in [0, n_groups) (n_groups={n_groups})."
            )


#: Values of the float64 row block of :meth:`Summary.from_points` at most (8 MB: 16,384 rows of
#: 64 features).
FROM_LABELS_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True, eq=False)
class Summary:
    """Weighted summary of rows: for each of m groups its weight, linear sum and square sum.

    Parameters
    ----------
    weights : array of shape (m,), float64
        Total weight of the rows in each group.
    linear_sums : array of shape (m, d), float64
        Sum of ``w * x`` over each group, so the group's centroid is ``linear_sums / weights``.
    square_sums : array of shape (m,), float64
        Sum of ``w * ||x||^2`` over each group, so the group's own squared error is
        ``square_sums - ||linear_sums||^2 / weights`` (clipped at 0).
    n_seen : int
        Number of rows summarized (rows of any weight, before decay).
    origin : array of shape (d,), float64, or None
        The point the sums are taken relative to: ``linear_sums`` sums ``w * (x - origin)``
        and ``square_sums`` sums ``w * ||x - origin||^2``, so the centroids are
        ``origin + linear_sums / weights``. None means zero (sums of the rows themselves).

    Notes
    -----
    The sums of rows far from zero (float32 blobs 1e6 times their spread away) make
    ``square_sums - ||linear_sums||^2 / weights`` cancel in float64: most of its digits are
    lost. Sums relative to an origin near the rows keep them. :meth:`from_points` places
    the origin at the mean of the rows when it is far from zero (more than
    ``ORIGIN_NEAR`` times their spread away) and leaves it at zero otherwise, so data near
    zero gives the very sums it always did; :meth:`merge` re-expresses summaries of
    different origins around a common one (exactly, up to rounding).

    Merging summaries concatenates their groups and loses nothing. For any set of centers C,
    ``cost_bound(C)`` bounds the weighted k-means cost of every summarized row from above
    (each row is charged its distance to its group's centroid plus the centroid's distance
    to the nearest center, which is exactly the cost if every row of a group goes to the
    group's nearest center).

    Examples
    --------
    >>> import numpy as np
    >>> from dask_streamkm import Summary
    >>> s = Summary.from_points(np.array([[0.0, 0.0], [2.0, 0.0]]))
    >>> s.n_groups, float(s.total_weight)
    (2, 2.0)
    >>> float(s.cost_bound(np.array([[1.0, 0.0]])))
    2.0
    """

    weights: object
    linear_sums: object
    square_sums: object
    n_seen: int = 0
    origin: object = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_points(
        cls, X, sample_weight=None, labels=None, n_groups=None, origin="auto", check=True
    ):
        """Summary of rows of X: one group per distinct row, or one per label if ``labels`` given.

        Rows of zero weight carry no mass and are dropped from the groups (they still
        count in ``n_seen``). Empty label groups are dropped. Without labels, identical
        rows share one group and the groups come in sorted row order, so the summary does
        not depend on the order of the rows and a row of weight N gives the same summary
        as N copies of it (each group's sums are its weight times the row: exact).
        ``origin`` is "auto" (:func:`chunk_origin`: zero for rows near zero, else their
        mean), None (zero) or an array of shape (d,). X must be 2-D and finite, the weights
        one per row, finite and >= 0, the labels one per row in ``[0, n_groups)``: a
        ``ValueError`` names what is not (``check=False``: the caller checked them, as the
        fit's tasks do).
        """
        if check:
            _check_points(X, sample_weight, labels, n_groups)
        xp = namespace(X)
        n = X.shape[0]
        w = as_weights(sample_weight, X)
        if isinstance(origin, str):
            origin = chunk_origin(X)
        elif origin is not None:
            origin = xp.asarray(origin, dtype=xp.float64, device=device(X))
        if labels is not None:
            if n_groups is None:
                n_groups = int(xp.max(labels)) + 1 if n else 0
            return cls._from_labels(X, w, labels, int(n_groups), sample_weight is None, origin)
        keep = xp.nonzero(w > 0)[0]
        w_k = xp.take(w, keep, axis=0)
        X_k = xp.take(xp.astype(X, xp.float64), keep, axis=0)
        if X_k.shape[0] > 1:
            # Distinct rows in sorted order, found on the host (small blocks only).
            first, inverse = _distinct_rows(to_host(X_k))
            n_distinct = int(first.shape[0])
            w_k = segment_sum(w_k, from_host(inverse.reshape(-1), w_k), n_distinct)
            X_k = xp.take(X_k, from_host(first, w_k), axis=0)
        if origin is not None:
            X_k = X_k - origin
        sq_k = xp.sum(X_k * X_k, axis=1)
        return cls(w_k, X_k * w_k[:, None], w_k * sq_k, int(n), origin)

    @classmethod
    def _from_labels(cls, X, w, labels, n_groups, unit_weights, origin=None, block=16384):
        """Clustering features of the rows of X summed by label, in float64 row blocks.

        Blocks keep the float64 working copy small (a chunk is never copied whole): at most
        ``block`` rows and :data:`FROM_LABELS_BLOCK_ELEMENTS` values (at least 256 rows), so
        that wide rows make no larger copy than 64 features do (MNIST's 784: 1,337 rows, 8
        MB, where 16,384 rows made 103 MB); rows are taken relative to ``origin`` (None:
        zero) in float64.
        """
        xp = namespace(X)
        n, d = X.shape
        block = max(256, min(int(block), FROM_LABELS_BLOCK_ELEMENTS // max(d, 1)))
        dev = device(X)
        sums = xp.zeros((n_groups, d), dtype=xp.float64, device=dev)
        squares = xp.zeros((n_groups,), dtype=xp.float64, device=dev)
        host = is_numpy(xp)
        if host:  # one float64 block and its norms, kept by the thread (no fresh pages)
            work = thread_workspace("summary")
            block_buf = work.take("block", (min(block, n), d), np.float64)
            sq_buf = work.take("sq", (min(block, n),), np.float64)
        for start in range(0, n, block):
            stop = min(start + block, n)
            lb = labels[start:stop]
            wb = w[start:stop]
            if host:
                Xb = block_buf[: stop - start]
                Xb[...] = X[start:stop, ...]
                if origin is not None:
                    Xb -= origin
                sq = np.einsum("ij,ij->i", Xb, Xb, out=sq_buf[: stop - start])
                if not unit_weights:
                    Xb *= wb[:, None]
                    sq *= wb
            else:
                Xb = xp.astype(X[start:stop, ...], xp.float64)
                if origin is not None:
                    Xb = Xb - origin
                sq = row_norms_sq(Xb)
                if not unit_weights:
                    Xb = Xb * wb[:, None]
                    sq = sq * wb
            sums += (
                segment_sum_into(Xb, lb, n_groups, work, "sums")
                if host
                else segment_sum(Xb, lb, n_groups)
            )
            squares += segment_sum(sq, lb, n_groups)
        weights = segment_sum(w, labels, n_groups)
        return cls(weights, sums, squares, int(n), origin).drop_empty()

    @classmethod
    def empty(cls, n_features, like=None):
        """A summary with no groups (what a chunk of zero rows gives)."""
        xp = np if like is None else namespace(like)
        dev = None if like is None else device(like)
        return cls(
            xp.zeros((0,), dtype=xp.float64, device=dev),
            xp.zeros((0, int(n_features)), dtype=xp.float64, device=dev),
            xp.zeros((0,), dtype=xp.float64, device=dev),
            0,
        )

    def drop_empty(self):
        """The same summary without groups of zero weight."""
        xp = namespace(self.weights)
        keep = xp.nonzero(self.weights > 0)[0]
        if keep.shape[0] == self.weights.shape[0]:
            return self
        return Summary(
            xp.take(self.weights, keep, axis=0),
            xp.take(self.linear_sums, keep, axis=0),
            xp.take(self.square_sums, keep, axis=0),
            self.n_seen,
            self.origin,
        )

    # ------------------------------------------------------------------ properties
    @property
    def n_groups(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.linear_sums.shape[1])

    @property
    def total_weight(self) -> float:
        xp = namespace(self.weights)
        return float(xp.sum(self.weights))

    @property
    def centroids(self):
        """Group centroids ``origin + linear_sums / weights`` (m, d) float64."""
        if self.origin is None:
            return self._relative_centroids
        return self.origin + self._relative_centroids

    @property
    def _relative_centroids(self):
        """Group centroids relative to the origin, ``linear_sums / weights`` (m, d) float64."""
        return self.linear_sums / self.weights[:, None]

    @property
    def group_sse(self):
        """Each group's own weighted squared error around its centroid (m,), clipped at 0."""
        xp = namespace(self.weights)
        # S . (S / W) rather than ||S||^2 / W: no overflow or underflow of the squared sums
        # for weights far from 1 (1e154 or 1e-200), which W's scale would otherwise cause.
        own = self.square_sums - xp.sum(self.linear_sums * self._relative_centroids, axis=1)
        return xp.maximum(own, 0.0)

    # ------------------------------------------------------------------ algebra
    def merge(self, *others):
        """Exact union of summaries: the groups are concatenated, ``n_seen`` added.

        Works as ``a.merge(b, c)`` or ``Summary.merge(a, b, c)``. Summaries of different
        origins are first re-expressed around a common one (:meth:`rebased`): the one they
        share, else the mean of all their rows.
        """
        parts = [self, *others]
        _check_same_features(parts)
        parts = [p for p in parts if p.n_groups > 0] or [self]
        n_seen = sum(int(p.n_seen) for p in [self, *others])
        if len(parts) == 1:
            p = parts[0]
            return Summary(p.weights, p.linear_sums, p.square_sums, n_seen, p.origin)
        origin = _common_origin(parts)
        parts = [p.rebased(origin) for p in parts]
        xp = namespace(parts[0].weights)
        return Summary(
            xp.concat([p.weights for p in parts]),
            xp.concat([p.linear_sums for p in parts]),
            xp.concat([p.square_sums for p in parts]),
            n_seen,
            origin,
        )

    def rebased(self, origin):
        """The same groups with sums relative to ``origin`` (None: zero).

        With ``delta = self.origin - origin``: ``S' = S + W delta`` and
        ``SS' = SS + 2 delta.S + W ||delta||^2`` (exact up to rounding); the centroids and each
        group's own squared error stay what they were.
        """
        if _same_origin(self.origin, origin):
            return self
        xp = namespace(self.weights)
        d = self.n_features
        zero = xp.zeros((d,), dtype=xp.float64, device=device(self.weights))
        old = zero if self.origin is None else self.origin
        delta = old - (zero if origin is None else origin)
        sums = self.linear_sums + self.weights[:, None] * delta
        squares = (
            self.square_sums
            + 2.0 * xp.sum(self.linear_sums * delta, axis=1)
            + self.weights * xp.sum(delta * delta)
        )
        return Summary(self.weights, sums, xp.maximum(squares, 0.0), self.n_seen, origin)

    def scaled(self, factor: float):
        """The summary with W, S and SS multiplied by ``factor`` (decay of older data).

        ``factor`` must be a finite number >= 0, else ``ValueError``: a negative, NaN or
        infinite factor gives weights that are not. 0 is allowed (a decay whose factor
        underflows passes it): every group then has weight 0, and :meth:`drop_empty`
        removes them. The centroids do not change.
        """
        factor = _checked_factor(factor)
        return Summary(
            self.weights * factor,
            self.linear_sums * factor,
            self.square_sums * factor,
            self.n_seen,
            self.origin,
        )

    def group_by(self, labels, n_groups):
        """Sum the CF rows of groups sharing a label (exact); empty labels are dropped."""
        return Summary(
            segment_sum(self.weights, labels, n_groups),
            segment_sum(self.linear_sums, labels, n_groups),
            segment_sum(self.square_sums, labels, n_groups),
            self.n_seen,
            self.origin,
        ).drop_empty()

    def reduce(self, size, seed=None, n_iter=1):
        """A summary of at most ``size`` groups whose CF rows sum those of this one.

        Weighted D^2 seeding of ``size`` centers over the centroids, ``n_iter`` weighted
        Lloyd iterations, then every group joins its nearest center and the rows are summed
        (exact: only the grouping is approximate). Distances are computed on centered float32
        centroids (float64 when their squared distances overflow float32), which only decides
        the grouping. Returns self when it already has at most ``size`` groups.
        """
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"Summary.reduce: size={size!r} should be an integer >= 1.")
        if self.n_groups <= size:
            return self
        rng = np.random.default_rng(seed)
        cents = self._relative_centroids
        xp = namespace(cents)
        mean = xp.sum(self.linear_sums, axis=0) / xp.sum(self.weights)
        points = cents - mean
        points = xp.astype(points, centered_dtype(points))
        labels, n_labels = group_labels(points, size, rng, self.weights, n_iter=n_iter)
        return self.group_by(labels, n_labels)

    # ------------------------------------------------------------------ costs
    def cost_bound(self, centers, spherical=False):
        """Upper bound on the weighted squared-distance cost of all summarized rows to ``centers``.

        ``sum_g SSE_g + W_g * min_c ||mu_g - c||^2``; exact when each group's rows share
        their nearest center. With ``spherical`` (a summary of unit vectors, unit centers)
        the bound is on the cosine cost ``sum w (1 - cos)``: ``sum_g W_g - S_g . c_g`` with
        ``c_g`` the center of highest cosine to the group's sum.
        """
        if self.n_groups == 0:
            return 0.0
        xp = namespace(self.weights)
        centers = xp.asarray(centers, dtype=xp.float64, device=device(self.weights))
        if centers.ndim != 2 or centers.shape[1] != self.n_features:
            raise ValueError(
                f"centers has shape {tuple(centers.shape)}; cost_bound needs centers of shape "
                f"(n_clusters, {self.n_features}), the summary's n_features={self.n_features}."
            )
        if not bool(xp.all(xp.isfinite(centers))):
            raise ValueError("centers hold NaN or infinity; cost_bound needs finite centers.")
        if spherical:  # on the centroids themselves: unit centers live there
            labels, _ = nearest(self.centroids, centers)
            return cosine_cost(self.centroids, centers, labels, self.weights)
        if self.origin is not None:
            centers = centers - self.origin
        points = self._relative_centroids
        labels, _ = nearest(points, centers)
        # From the differences: the expansion's rounding of a group far from the others
        # (an outlier's) could take the bound below the rows' cost.
        dist = assigned_sq_distances(points, centers, labels)
        return float(xp.sum(self.group_sse) + xp.sum(self.weights * dist))

    def solve(self, n_clusters, n_init="auto", max_iter=300, tol=1e-4, seed=None, spherical=False):
        """Weighted k-means on the group centroids (:func:`._runner.weighted_kmeans`).

        ``n_init`` is the number of restarts, or "auto" (10 up to k=100, then 1000 / k, at
        least 3; up to 100 where restarts are cheap, :func:`._runner.auto_n_init`).
        ``max_iter`` bounds the iterations of every Lloyd run of the solve (the restarts on
        the coarse copy, the swap search's, the final run on all groups), as each of
        scikit-learn's ``KMeans`` runs (see :func:`._runner.weighted_kmeans`).

        Returns ``(centers, cost_bound, n_iter)``; centers are float64 on the summary's device;
        ``n_iter`` counts the iterations of the final Lloyd run (``1 <= n_iter <= max_iter``).
        The solve runs on the centroids relative to the origin. With ``spherical`` (a
        summary of unit vectors) the solve is spherical k-means (unit centers), on the
        centroids themselves, and the bound is the cosine cost ``sum_g W_g - S_g . c_g``,
        which is exact: a group's cosine cost to a unit center depends on its rows only
        through W and S.

        A summary with no groups or a total weight of 0 (``Summary.empty(d)``, a summary of
        rows whose weights are all zero) and ``n_clusters`` outside ``[1, n_groups]`` raise a
        ``ValueError`` naming the fix.
        """
        _check_solvable(self, n_clusters)
        rng = np.random.default_rng(seed)
        if spherical:
            return weighted_kmeans(
                self.centroids,
                int(n_clusters),
                rng,
                self.weights,
                n_init,
                max_iter,
                tol,
                spherical=True,
            )
        centers, inertia, n_iter = weighted_kmeans(
            self._relative_centroids, int(n_clusters), rng, self.weights, n_init, max_iter, tol
        )
        if self.origin is not None:
            centers = centers + self.origin
        xp = namespace(self.weights)
        bound = float(xp.sum(self.group_sse)) + inertia
        return centers, bound, n_iter

    # ------------------------------------------------------------------ files
    def _file_fields(self, prefix=""):
        """The fields a summary file holds (host numpy): what :meth:`load` reads back. With a
        ``prefix``, the summary's :data:`FILE_ARRAYS` as another file stores them (a model
        file's ``summary_weights``...), without the format version."""
        values = (
            to_host(self.weights),
            to_host(self.linear_sums),
            to_host(self.square_sums),
            np.int64(self.n_seen),
            self.host_origin(),
        )
        fields = {prefix + name: v for name, v in zip(FILE_ARRAYS, values, strict=True)}
        return fields if prefix else {"format_version": np.int64(FORMAT_VERSION), **fields}

    def host_origin(self):
        """The origin as a host float64 array of shape (d,) (zeros for None)."""
        if self.origin is None:
            return np.zeros((self.n_features,), dtype=np.float64)
        return np.asarray(to_host(self.origin), dtype=np.float64)

    def save(self, path):
        """Write the summary to an ``.npz`` file (host arrays, no pickle; format version 2),
        atomically: a temporary file, then a rename (:func:`._location.write_atomic`)."""
        path = os.fspath(path)
        fields = self._file_fields()

        def write(tmp):
            with open(tmp, "wb") as fh:  # a file object: numpy adds no ".npz" to its name
                np.savez(fh, **fields)

        try:
            write_atomic(path, write, local=True)
        except OSError as exc:  # a full disk, a missing directory: name the path, not its temp
            raise _write_error(exc, Location.of(path)) from exc
        return path

    @classmethod
    def load(cls, path):
        """Read a summary written by :meth:`save` (numpy arrays on the host).

        The archive's declared sizes are checked before anything is decompressed or
        allocated (:class:`._npz.NpzReader`): a member declaring more than the file can hold
        is refused with a ValueError.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as fh, NpzReader(fh.read()) as data:
                version = int(data["format_version"])
                if version > FORMAT_VERSION:
                    raise ValueError(
                        f"{path!r} is a summary of format version {version}; this version of "
                        f"dask_streamkm reads up to {FORMAT_VERSION}. Upgrade dask_streamkm."
                    )
                weights, linear_sums, square_sums, n_seen, origin = (
                    data[name] if name != "origin" or version >= 2 else None for name in FILE_ARRAYS
                )  # version 1 has no origin: its sums are relative to zero
                d = linear_sums.shape[-1]
                out = cls(
                    np.asarray(weights, dtype=np.float64),
                    np.asarray(linear_sums, dtype=np.float64),
                    np.asarray(square_sums, dtype=np.float64),
                    int(n_seen),
                    checked_origin(origin, d, f"{path!r}: origin"),
                )
        except KeyError as exc:
            raise ValueError(
                f"{path!r} is not a dask_streamkm summary file: it has no member {exc}. A "
                "model file's summary is StreamingKMeans.load(path).summary_; write summary "
                "files with Summary.save(path)."
            ) from exc
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path!r} is not a dask_streamkm summary file: {exc}") from exc
        except Exception as exc:  # zipfile.BadZipFile and friends from a truncated file
            if isinstance(exc, ValueError) and "format version" in str(exc):
                raise
            raise ValueError(f"{path!r} is not a readable summary file: {exc}") from exc
        return out

    def to_numpy(self):
        """The same summary with host numpy arrays."""
        return Summary(
            to_host(self.weights),
            to_host(self.linear_sums),
            to_host(self.square_sums),
            self.n_seen,
            None if self.origin is None else to_host(self.origin),
        )

    def __repr__(self):
        return (
            f"Summary(n_groups={self.n_groups}, n_features={self.n_features}, "
            f"total_weight={self.total_weight:.6g}, n_seen={self.n_seen})"
        )


def _check_solvable(summary, n_clusters):
    """Refuse a solve of a summary without rows of positive weight, or for a number of clusters
    outside ``[1, n_groups]``: ValueErrors naming the value and the fix."""
    if summary.n_groups == 0:
        raise ValueError(
            f"Summary.solve: the summary holds no rows (n_groups=0, n_seen={summary.n_seen}), "
            "so there are no centers to find. Summarize rows first: Summary.from_points(X), "
            "StreamingKMeans().fit(X).summary_, or merge it with a summary that holds rows."
        )
    total = summary.total_weight
    if not total > 0.0:
        raise ValueError(
            f"Summary.solve: the summary's weights are zero for every group (total_weight="
            f"{total:g}); at least one row needs a positive weight. Summarize rows of positive "
            "sample_weight, or merge it with a summary that holds some."
        )
    k = int(n_clusters)
    if not 1 <= k <= summary.n_groups:
        raise ValueError(
            f"Summary.solve: n_clusters={n_clusters!r} should be >= 1 and <= the summary's "
            f"n_groups={summary.n_groups} (its distinct rows of positive weight); use "
            f"n_clusters <= {summary.n_groups} or summarize more rows."
        )


def _checked_factor(factor):
    """``factor`` of :meth:`Summary.scaled` as a float; ValueError unless a real number (numpy
    scalars included), finite and >= 0."""
    value = float(factor) if isinstance(factor, numbers.Real) else None
    if value is None or not (math.isfinite(value) and value >= 0.0):
        raise ValueError(
            f"Summary.scaled: factor={factor!r} should be a finite number >= 0 (every weight "
            "and sum is multiplied by it, so a negative, NaN or infinite factor gives weights "
            "that are not); pass e.g. 2 ** (-n_new_rows / half_life) to decay older data."
        )
    return value


def weight_range_problem(smallest, largest, where=""):
    """The message for positive weights outside the accepted range, or None when inside.

    ``smallest`` and ``largest`` are the smallest and largest positive weight (floats);
    ``where`` names the chunk (" in chunk 3 (rows ...)") or is empty.
    """
    if largest > MAX_WEIGHT_RATIO * smallest:
        return (
            f"sample_weight has positive values from {smallest:.3g} to {largest:.3g}{where}, "
            f"a ratio of {largest / smallest:.3g}; the largest positive weight should be at "
            f"most {MAX_WEIGHT_RATIO:.0e} times the smallest, or float64 sums lose the lighter "
            "rows' cost and inertia_ falls below the exact cost. Raise the smallest positive "
            f"weights to the largest / {MAX_WEIGHT_RATIO:.0e}, e.g. "
            f"np.where(w > 0, np.maximum(w, w.max() / {MAX_WEIGHT_RATIO:.0e}), 0), or set them "
            "to 0 to leave those rows out."
        )
    if smallest < MIN_WEIGHT:
        scale = 10.0 ** math.ceil(math.log10(MIN_WEIGHT / smallest))
        return (
            f"sample_weight has positive values down to {smallest:.3g}{where}; positive "
            f"weights should be >= {MIN_WEIGHT:.0e} (their squares stay normal float64 "
            f"numbers). Multiply sample_weight by a constant first, e.g. "
            f"sample_weight * {scale:.0e} (scaling every weight changes nothing else)."
        )
    return None


def _distinct_rows(rows):
    """``np.unique(rows, axis=0, return_index=True, return_inverse=True)[1:]``, faster.

    Rows in lexicographic order (a stable lexsort, so ``first`` is each row's first
    occurrence, as ``np.unique`` gives): the same indices at a fraction of the fixed cost,
    which is most of the work of a chunk of a few rows.
    """
    order = np.lexsort(rows.T[::-1])
    ordered = rows[order]
    new = np.empty(rows.shape[0], dtype=bool)
    new[0] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=new[1:])
    inverse = np.empty(rows.shape[0], dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


def chunk_origin(X):
    """The origin of a summary of the rows of X: None (zero) or a float64 array of shape (d,).

    The mean ``mu`` and the mean squared deviation ``v`` of up to ``ORIGIN_SAMPLE_ROWS`` evenly
    spaced rows (in float64): None when ``||mu||^2 <= ORIGIN_NEAR^2 * v`` (the rows are near
    zero and their sums lose nothing), else ``mu``. Any point near the rows serves: sums
    relative to it are of the size of the rows' spread. A single row has no spread to judge
    by: None (its group's own error is zero whatever the origin).
    """
    xp = namespace(X)
    n = X.shape[0]
    if n < 2:
        return None
    sample = xp.astype(X[:: max(1, n // ORIGIN_SAMPLE_ROWS), ...], xp.float64)
    mean = xp.mean(sample, axis=0)
    spread = float(xp.sum((sample - mean) ** 2)) / sample.shape[0]
    if float(xp.sum(mean * mean)) <= ORIGIN_NEAR**2 * spread:
        return None
    return mean


def _check_same_features(parts):
    """Refuse merging what is not a Summary, and summaries of different numbers of features,
    naming them."""
    for p in parts:
        if not isinstance(p, Summary):
            raise TypeError(
                f"Summary.merge takes Summary objects, got {type(p).__name__}; summarize rows "
                "first, e.g. Summary.from_points(X) or StreamingKMeans().fit(X).summary_."
            )
    features = [p.n_features for p in parts]
    if len(set(features)) > 1:
        raise ValueError(
            f"cannot merge summaries of {features} features; every summary must hold rows of "
            "the same features (summarize the same columns)."
        )


def checked_origin(origin, n_features, name):
    """``origin`` as a host float64 array of shape (n_features,), or None when it is zero.

    Raises ValueError naming ``name`` when it has another shape or is not finite.
    """
    if origin is None:
        return None
    origin = np.asarray(origin)
    if origin.dtype.kind not in "fiu" or origin.shape != (int(n_features),):
        raise ValueError(
            f"{name} has dtype {origin.dtype} and shape {origin.shape}; it should be a float "
            f"array of shape ({int(n_features)},)."
        )
    origin = origin.astype(np.float64)
    if not np.all(np.isfinite(origin)):
        raise ValueError(f"{name} holds NaN or infinite values; it should be finite.")
    return None if not np.any(origin) else origin


def _same_origin(a, b):
    """Whether two origins (None: zero) are the same point."""
    if a is None or b is None:
        return a is None and b is None
    xp = namespace(a)
    return bool(xp.all(a == b))


def _common_origin(parts):
    """An origin for the union of ``parts``: the one they share, else the mean of their rows.

    The mean is ``sum_p (W_p o_p + sum S_p) / sum_p W_p``; None (zero) when it lies within
    ``ORIGIN_NEAR`` root-mean-square deviations of zero, as :func:`chunk_origin` decides; with
    no positive weight, the first part's origin.
    """
    first = parts[0].origin
    if all(_same_origin(p.origin, first) for p in parts[1:]):
        return first
    xp = namespace(parts[0].weights)
    total = 0.0
    moment = None
    for p in parts:
        w = xp.sum(p.weights)
        m = xp.sum(p.linear_sums, axis=0)
        if p.origin is not None:
            m = m + w * p.origin
        moment = m if moment is None else moment + m
        total += float(w)
    if not total > 0.0:
        return first
    mean = moment / total
    # Mean squared deviation of the rows from the mean: each group's own error plus its
    # weight times its centroid's squared distance to the mean.
    spread = 0.0
    for p in parts:
        offset = p._relative_centroids - (mean if p.origin is None else mean - p.origin)
        spread += float(xp.sum(p.group_sse) + xp.sum(p.weights * xp.sum(offset**2, axis=1)))
    if float(xp.sum(mean * mean)) <= ORIGIN_NEAR**2 * spread / total:
        return None
    return mean
