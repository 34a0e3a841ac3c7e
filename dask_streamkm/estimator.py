"""StreamingKMeans: one-pass core-set k-means over Dask, numpy and zarr arrays."""

from __future__ import annotations

import contextlib
import functools
import numbers
import os
import time

import dask
import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from . import _graph
from ._array import from_host, namespace, to_host
from ._kernels import auto_n_init, nearest
from ._summarize import METHODS
from .summary import Summary

#: Rows per chunk when an in-memory array is wrapped as a dask array.
DEFAULT_CHUNK_ROWS = 100_000
#: Memory allowed for the merged summary carried up the tree (the merge budget "auto").
MERGE_BUDGET_BYTES = 256 * 2**20


#: With summary_size="auto" a leaf keeps up to one group per this many rows of its chunk...
AUTO_ROWS_PER_GROUP = 32
#: ...but no more than this many groups per cluster (the pass costs about m / k floors).
AUTO_MAX_GROUPS_PER_CLUSTER = 100
#: ...and at least this many groups per cluster, however small the chunks.
AUTO_MIN_GROUPS_PER_CLUSTER = 5


def _auto_summary_size(n_clusters, chunk_rows=0):
    """Groups per leaf for summary_size="auto": ``max(5 k, 256, min(chunk_rows / 32, 100 k))``.

    One group per 32 rows (up to 100 per cluster) keeps the summary fine; at least 5 groups
    per cluster keep small chunks from being summarized too coarsely. The pass costs about
    m / k times one pass of distances to k centers, so m is not allowed to grow further.
    """
    by_rows = min(
        -(-int(chunk_rows) // AUTO_ROWS_PER_GROUP), AUTO_MAX_GROUPS_PER_CLUSTER * n_clusters
    )
    return int(max(AUTO_MIN_GROUPS_PER_CLUSTER * n_clusters, 256, by_rows))


def _auto_merge_budget(n_clusters, n_features, summary_size):
    """Merge budget for "auto": tens of thousands of groups, bounded by memory."""
    by_memory = MERGE_BUDGET_BYTES // (8 * (n_features + 2))
    return int(max(min(max(50_000, 4 * summary_size), by_memory), 2 * summary_size))


def _is_dask(X):
    return isinstance(X, da.Array)


def _is_zarr(X):
    return type(X).__module__.startswith("zarr")


class StreamingKMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """One-pass k-means for data larger than memory (core-set summary + weighted k-means).

    Each chunk of rows is summarized once into weighted groups (their weights, linear
    sums and square sums), the summaries are merged in a tree, and a weighted greedy
    k-means++ + Lloyd on the merged summary gives the centers. This is the design of
    Amazon SageMaker's streaming k-means, built on Dask.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    summary_size : int or "auto", default="auto"
        Groups kept per chunk (SageMaker's ``extra_center_factor * k``); "auto" is
        ``max(5 * n_clusters, 256, min(rows of the largest chunk / 32, 100 * n_clusters))``.
    method : {"stream", "lloyd"}, default="stream"
        Per-chunk summarizer: streaming mini-batches with facility-location opening
        (SageMaker-like) or D^2 seeding plus an exact Lloyd pass.
    mini_batch_size : int, default=4096
        Rows per mini-batch of the streaming summarizer.
    split_every : int, default=8
        Fan-in of the tree that merges chunk summaries.
    n_init : int or "auto", default="auto"
        Restarts of the final weighted k-means++ + Lloyd on the summary; "auto" is 10 up to
        ``n_clusters=100``, then ``1000 // n_clusters`` but at least 3 (each restart costs
        about ``n_clusters**2``).
    max_iter : int, default=300
        Lloyd iterations per restart of the final solve.
    tol : float, default=1e-4
        Relative tolerance on the center shift for the final Lloyd.
    half_life : float or None, default=None
        Rows after which an older summary's weight halves across ``partial_fit`` calls.
    random_state : int, RandomState instance or None, default=None
        Seed of every chunk summary, merge and the final solve.
    merge_budget : int or "auto", default="auto"
        Groups the merged summary may hold. Each merge in the tree keeps its share,
        ``merge_budget * its chunks / all chunks`` (at least ``summary_size``), and reduces
        its union to that when it holds more, so memory stays flat and the merges stay
        cheap however many chunks there are; "auto" is ``max(50,000, 4 * summary_size)``,
        bounded by 256 MiB of memory.
    checkpoint : str, os.PathLike or None, default=None
        Directory where the summaries of finished chunk ranges (each group of
        ``split_every`` chunks) are saved as ``.npz`` files as the fit goes. A fit that is
        interrupted and started again with the same data, parameters and ``random_state``
        (an int, required with a checkpoint) loads those files instead of reading their
        chunks again, and ends with the same centers as an uninterrupted fit. Files are
        named by a hash of the data's dask name, shape and chunks, the summary parameters
        and the seed, so other runs never pick them up.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Cluster centers (numpy, or the input's array type for cupy-backed input).
    inertia_ : float
        Upper bound on the sum of squared distances of the fitted rows to their nearest
        center, computed from the summary without another pass (``score`` gives the exact
        value).
    summary_ : Summary
        The merged summary of all rows seen.
    labels_ : ndarray or dask array
        Labels of the fitted rows; a lazy dask array (no read) for dask input.
    n_features_in_ : int
        Number of features seen during ``fit``.
    n_iter_ : int
        Lloyd iterations of the best final restart.
    n_rows_seen_ : int
        Rows summarized so far.

    See Also
    --------
    sklearn.cluster.KMeans, sklearn.cluster.MiniBatchKMeans

    References
    ----------
    Liberty et al., "Elastic machine learning algorithms in Amazon SageMaker", SIGMOD 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_streamkm import StreamingKMeans
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]])
    >>> km = StreamingKMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(km.cluster_centers_[:, 0].round(2).tolist())
    [0.05, 10.05]
    """

    def __init__(
        self,
        n_clusters=8,
        *,
        summary_size="auto",
        method="stream",
        mini_batch_size=4096,
        split_every=8,
        n_init="auto",
        max_iter=300,
        tol=1e-4,
        half_life=None,
        random_state=None,
        merge_budget="auto",
        checkpoint=None,
    ):
        self.n_clusters = n_clusters
        self.summary_size = summary_size
        self.method = method
        self.mini_batch_size = mini_batch_size
        self.split_every = split_every
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.half_life = half_life
        self.random_state = random_state
        self.merge_budget = merge_budget
        self.checkpoint = checkpoint

    # ------------------------------------------------------------------ validation
    def _check_params(self):
        def positive_int(name, minimum=1, auto=False):
            value = getattr(self, name)
            if auto and isinstance(value, str) and value == "auto":
                return
            if (
                not isinstance(value, numbers.Integral)
                or isinstance(value, bool)
                or value < minimum
            ):
                rule = ('"auto" or ' if auto else "") + f"an integer >= {minimum}"
                raise ValueError(f"{name}={value!r} should be {rule}.")

        positive_int("n_clusters")
        positive_int("mini_batch_size")
        positive_int("split_every", 2)
        positive_int("n_init", auto=True)
        positive_int("max_iter")
        positive_int("summary_size", self.n_clusters, auto=True)
        positive_int("merge_budget", 2, auto=True)
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} should be one of {METHODS}.")
        if not isinstance(self.tol, numbers.Real) or self.tol < 0:
            raise ValueError(f"tol={self.tol!r} should be a number >= 0.")
        if self.half_life is not None and (
            not isinstance(self.half_life, numbers.Real) or self.half_life <= 0
        ):
            raise ValueError(f"half_life={self.half_life!r} should be None or a number > 0.")

    def _sizes(self, n_features, chunk_rows=0):
        size = (
            _auto_summary_size(self.n_clusters, chunk_rows)
            if self.summary_size == "auto"
            else int(self.summary_size)
        )
        budget = (
            _auto_merge_budget(self.n_clusters, n_features, size)
            if self.merge_budget == "auto"
            else int(self.merge_budget)
        )
        return size, max(budget, size + 1)

    def _n_init(self, n_clusters):
        return auto_n_init(n_clusters) if self.n_init == "auto" else int(self.n_init)

    def _entropy(self):
        rs = self.random_state
        if rs is None:
            return int(np.random.SeedSequence().entropy)
        if isinstance(rs, numbers.Integral):
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(np.iinfo(np.int32).max))
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(np.iinfo(np.int64).max))
        raise ValueError(
            f"random_state={rs!r} should be None, an int, a numpy RandomState or Generator."
        )

    def _as_dask(self, X, *, reset, what="X"):
        """X as a 2-D float dask array with one column chunk and known row chunks."""
        if _is_zarr(X):
            X = da.from_array(X, chunks=(X.chunks[0], -1) if X.ndim == 2 else X.chunks)
        if _is_dask(X):
            if X.ndim != 2:
                raise ValueError(
                    f"Expected a 2-D array for {what}, got a {X.ndim}-D array of shape {X.shape}. "
                    "Reshape your data: X.reshape(-1, 1) for a single feature, "
                    "X.reshape(1, -1) for a single sample, X.reshape(X.shape[0], -1) to flatten."
                )
            if any(np.isnan(c) for c in X.chunks[0]):
                raise ValueError(
                    f"{what} has unknown chunk sizes {X.chunks[0]}. Call X.compute_chunk_sizes() "
                    "(or pass lengths=True to to_dask_array) before fitting."
                )
            if X.numblocks[1] != 1:
                raise ValueError(
                    f"{what} has its {X.shape[1]} features split across {X.numblocks[1]} chunks "
                    f"{X.chunks[1]}; every chunk must hold whole rows. Call X.rechunk({{1: -1}})."
                )
            if X.dtype.kind == "c":
                raise ValueError("Complex data not supported.")
            if X.dtype.kind not in "fiub":
                raise ValueError(f"{what} has dtype {X.dtype}; expected a numeric dtype.")
            if X.shape[1] == 0:
                raise ValueError(
                    f"0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
                )
            if X.shape[0] == 0:
                raise ValueError(
                    f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 "
                    "is required."
                )
            if reset:
                self.n_features_in_ = int(X.shape[1])
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
            return X
        kind = namespace(X) if hasattr(X, "__array_namespace__") else None
        if kind is not None and not isinstance(X, np.ndarray):
            # An in-memory array of another namespace (cupy...): wrap it as it is.
            return self._as_dask(
                da.from_array(X, chunks=(DEFAULT_CHUNK_ROWS, -1), asarray=False),
                reset=reset,
                what=what,
            )
        X = validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_all_finite=False,
            order="C",
        )
        return da.from_array(X, chunks=(DEFAULT_CHUNK_ROWS, -1))

    def _as_dask_weight(self, sample_weight, X):
        if sample_weight is None:
            return None
        if _is_dask(sample_weight):
            if sample_weight.ndim != 1 or sample_weight.shape[0] != X.shape[0]:
                raise ValueError(
                    f"sample_weight.shape={sample_weight.shape} should be ({X.shape[0]},), "
                    "one weight per row of X."
                )
            if sample_weight.chunks[0] != X.chunks[0]:
                sample_weight = sample_weight.rechunk((X.chunks[0],))
            return sample_weight
        sw = np.asarray(to_host(sample_weight), dtype=np.float64)
        if sw.ndim == 0:
            sw = np.full(X.shape[0], float(sw))
        if sw.shape != (X.shape[0],):
            raise ValueError(
                f"sample_weight.shape={sw.shape} should be ({X.shape[0]},), "
                "one weight per row of X."
            )
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            raise ValueError(
                "sample_weight has negative, NaN or infinite values; it should be >= 0."
            )
        if not np.any(sw > 0):
            raise ValueError(
                "sample_weight is zero for every row; at least one row needs a positive weight."
            )
        return da.from_array(sw, chunks=(X.chunks[0],))

    # ------------------------------------------------------------------ summary and solve
    def _summarize(self, X, sample_weight, entropy):
        size, budget = self._sizes(X.shape[1], max(X.chunks[0], default=0))
        params = dict(
            size=size,
            method=self.method,
            mini_batch_size=int(self.mini_batch_size),
            split_every=int(self.split_every),
            budget=budget,
            entropy=entropy,
        )
        if self.checkpoint is None:
            with _blas_limits():
                return _graph.fit_summary(X, sample_weight, **params)
        from . import _checkpoint

        directory = _checkpoint.check_directory(self.checkpoint, self.random_state)
        with _blas_limits():
            summary, _, _ = _checkpoint.fit_summary(X, sample_weight, directory=directory, **params)
        return summary

    def _solve(self, summary, n_clusters, entropy):
        if summary.total_weight <= 0:
            raise ValueError(
                "sample_weight is zero for every row; at least one row needs a positive weight."
            )
        if summary.n_groups < n_clusters:
            raise ValueError(
                f"n_clusters={n_clusters} is larger than the {summary.n_groups} distinct rows of "
                f"positive weight in the data; use n_clusters <= {summary.n_groups}."
            )
        seed = _graph.task_seed(entropy, _graph.SOLVE_LEVEL, 0)
        t0 = time.perf_counter()
        centers, bound, n_iter = summary.solve(
            n_clusters,
            n_init=self._n_init(n_clusters),
            max_iter=self.max_iter,
            tol=self.tol,
            seed=seed,
        )
        self.summary_ = summary
        self._entropy_ = entropy
        self.cluster_centers_ = _centers_out(centers)
        self.inertia_ = float(bound)
        self.n_iter_ = int(n_iter)
        self.solve_seconds_ = time.perf_counter() - t0
        self.n_rows_seen_ = int(summary.n_seen)
        return self

    def _check_n_clusters(self, X):
        if self.n_clusters > X.shape[0]:
            raise ValueError(
                f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}; "
                f"use n_clusters <= {X.shape[0]} or pass more rows."
            )

    # ------------------------------------------------------------------ public API
    def fit(self, X, y=None, sample_weight=None):
        """Summarize every chunk of X once, merge the summaries and solve for the centers.

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or dask array of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        self._check_params()
        t0 = time.perf_counter()
        in_dask = _is_dask(X) or _is_zarr(X)
        X = self._as_dask(X, reset=True)
        self._check_n_clusters(X)
        sw = self._as_dask_weight(sample_weight, X)
        entropy = self._entropy()
        summary = self._summarize(X, sw, entropy)
        self._solve(summary, self.n_clusters, entropy)
        labels = _nearest_blocks(X, self.cluster_centers_, "labels")
        self.labels_ = labels if in_dask else _compute(labels)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """Merge the summary of X into ``summary_`` (decayed by ``half_life``) and re-solve."""
        first = not hasattr(self, "summary_")
        if first:
            self._check_params()
        X = self._as_dask(X, reset=first)
        if first:
            self._check_n_clusters(X)
        sw = self._as_dask_weight(sample_weight, X)
        entropy = self._entropy() if first else self._entropy_
        # A new batch gets its own seeds: shift the entropy by the number of rows seen so far.
        batch_entropy = [entropy, 0 if first else self.n_rows_seen_]
        new = self._summarize(X, sw, batch_entropy)
        if first:
            summary = new
        else:
            old = self.summary_
            if self.half_life is not None:
                old = old.scaled(2.0 ** (-X.shape[0] / float(self.half_life)))
            summary = old.merge(_like(new, old))
            _, budget = self._sizes(X.shape[1], max(X.chunks[0], default=0))
            if summary.n_groups > budget:
                seed = _graph.task_seed(batch_entropy, _graph.PARTIAL_LEVEL, 0)
                summary = summary.reduce(budget // 2, seed=seed)
        return self._solve(summary, self.n_clusters, entropy)

    def refit(self, n_clusters=None, **params):
        """Solve again from ``summary_`` (no read of the data); returns self.

        ``n_clusters`` and the final-solve parameters (``n_init``, ``max_iter``, ``tol``)
        may be changed.
        """
        check_is_fitted(self, "summary_")
        allowed = {"n_init", "max_iter", "tol", "random_state"}
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(
                f"refit() got {sorted(unknown)}; it accepts n_clusters and {sorted(allowed)}."
            )
        if n_clusters is not None:
            params["n_clusters"] = n_clusters
        self.set_params(**params)
        self._check_params()
        entropy = self._entropy() if "random_state" in params else self._entropy_
        return self._solve(self.summary_, self.n_clusters, entropy)

    def _predict_input(self, X):
        check_is_fitted(self, "cluster_centers_")
        lazy = _is_dask(X) or _is_zarr(X)
        return self._as_dask(X, reset=False), lazy

    def predict(self, X):
        """Index of the nearest center for each row (a lazy dask array for dask input)."""
        Xd, lazy = self._predict_input(X)
        labels = _nearest_blocks(Xd, self.cluster_centers_, "labels")
        return labels if lazy else _compute(labels)

    def transform(self, X):
        """Euclidean distances of each row to every center (lazy for dask input)."""
        Xd, lazy = self._predict_input(X)
        out = _nearest_blocks(Xd, self.cluster_centers_, "distances")
        return out if lazy else _compute(out)

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the labels of X (computed for in-memory input, lazy for dask)."""
        self.fit(X, sample_weight=sample_weight)
        labels = self.labels_
        return labels if (_is_dask(X) or _is_zarr(X)) else _compute(labels)

    def score(self, X, y=None, sample_weight=None):
        """Minus the exact sum of (weighted) squared distances of X to the centers (one pass)."""
        Xd, _ = self._predict_input(X)
        dist = _nearest_blocks(Xd, self.cluster_centers_, "sq_distances")
        sw = self._as_dask_weight(sample_weight, Xd)
        total = (dist * sw).sum() if sw is not None else dist.sum()
        return -float(_compute(total))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ files, export, SageMaker
    def save(self, path):
        """Write the fitted model to ``path`` (``.npz`` + JSON metadata, no pickle).

        The file holds the parameters, the fitted attributes (except ``labels_``), a format
        version and the summary, so ``refit`` and ``partial_fit`` work after :meth:`load`.
        Returns the path.
        """
        from ._model_io import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path):
        """A fitted model read from a file written by :meth:`save`.

        Raises ``ModelFileError`` (a ``ValueError``) for a file of a newer format version, a
        truncated file or a file that is not a model.
        """
        from ._model_io import load_model

        return load_model(cls, path)

    def to_sklearn(self):
        """A fitted ``sklearn.cluster.KMeans`` with these centers, whose ``predict`` equals ours.

        Built with public scikit-learn API only (see ``dask_streamkm._model_io.to_sklearn``).
        Like any KMeans fitted on float64 data, it predicts float64 input.
        """
        from ._model_io import to_sklearn

        return to_sklearn(self)

    @classmethod
    def from_sagemaker(cls, hyperparameters):
        """A model configured from SageMaker k-means hyperparameters (a dict of strings).

        See :mod:`dask_streamkm.sagemaker` for the mapping; unknown names raise ``ValueError``
        and values with no equivalent warn with ``SageMakerCompatibilityWarning``.
        """
        from .sagemaker import from_sagemaker

        return from_sagemaker(cls, hyperparameters)

    def evaluate(self, X, metrics=("msd", "ssd"), sample_weight=None):
        """SageMaker's test metrics on X, exact, in one pass: a dict with ``msd`` and ``ssd``.

        ``ssd`` is the sum of (weighted) squared distances of the rows to their nearest
        center and ``msd`` that sum divided by the total weight (the number of rows).
        """
        from .sagemaker import evaluate

        return evaluate(self, X, metrics=metrics, sample_weight=sample_weight)


# ---------------------------------------------------------------------- module helpers
def _scheduler_threads():
    """Threads the active local scheduler runs tasks on (1 for the synchronous one)."""
    scheduler = dask.config.get("scheduler", None)
    if scheduler in ("sync", "synchronous", "single-threaded"):
        return 1
    try:
        from distributed import default_client

        default_client()
        return 1  # workers limit their own BLAS threads (see _graph.limit_blas_in_worker)
    except (ImportError, ValueError):
        pass
    num = dask.config.get("num_workers", None)
    return int(num or os.cpu_count() or 1)


@contextlib.contextmanager
def _blas_limits():
    """BLAS threads x task threads <= cores for the compute inside, whatever the scheduler.

    Threads and the synchronous scheduler: a limit in this process. The processes scheduler:
    an initializer that sets the limit in each worker process it starts (after any
    initializer the user configured). Distributed workers limit themselves
    (:func:`._graph.limit_blas_in_worker`).
    """
    cores = os.cpu_count() or 1
    scheduler = dask.config.get("scheduler", None)
    if scheduler in ("processes", "multiprocessing"):
        workers = int(dask.config.get("num_workers", None) or cores)
        user = dask.config.get("multiprocessing.initializer", None)
        init = functools.partial(_graph.limit_blas_in_process, max(1, cores // workers), user)
        with dask.config.set({"multiprocessing.initializer": init}):
            yield
        return
    with threadpool_limits(max(1, cores // _scheduler_threads())):
        yield


def _compute(x):
    with _blas_limits():
        (out,) = dask.compute(x)
    return to_host(out) if isinstance(out, np.ndarray) or not hasattr(out, "__len__") else out


def _centers_out(centers):
    """Final centers as float64; numpy on the host unless they live on another device."""
    xp = namespace(centers)
    if xp.__name__.endswith("numpy") or isinstance(centers, np.ndarray):
        return np.asarray(centers, dtype=np.float64)
    return centers


def _like(summary, ref):
    """``summary`` with arrays in the namespace of ``ref`` (host numpy or device)."""
    if isinstance(ref.weights, np.ndarray):
        return summary.to_numpy()
    return Summary(
        from_host(to_host(summary.weights), ref.weights),
        from_host(to_host(summary.linear_sums), ref.weights),
        from_host(to_host(summary.square_sums), ref.weights),
        summary.n_seen,
    )


def _block_op(block, centers, what, block_info=None):
    xp = namespace(block)
    index, row_start = 0, 0
    if block_info and 0 in block_info:  # name the chunk in the NaN / inf error
        index = block_info[0]["chunk-location"][0]
        row_start = block_info[0]["array-location"][0][0]
    block = _graph.check_block(block, None, index, row_start)
    c = centers if type(centers) is type(block) else from_host(to_host(centers), block)
    if what == "distances":
        from ._kernels import sq_distances

        return xp.sqrt(xp.astype(sq_distances(block, xp.astype(c, block.dtype)), xp.float64))
    labels, dist = nearest(block, c)
    if what == "labels":
        return labels
    return dist


def _nearest_blocks(X, centers, what):
    """Per-block labels, squared distances or distances to ``centers`` as a lazy dask array."""
    # The output keeps X's array type (numpy, cupy...) through ``meta``.
    meta = X._meta
    if what == "distances":
        return X.map_blocks(
            _block_op,
            centers,
            what,
            chunks=(X.chunks[0], (centers.shape[0],)),
            dtype=np.float64,
            meta=meta.astype(np.float64).reshape((0, 0)),
        )
    dtype = np.int64 if what == "labels" else np.float64
    return X.map_blocks(
        _block_op,
        centers,
        what,
        drop_axis=1,
        chunks=(X.chunks[0],),
        dtype=dtype,
        meta=meta.astype(dtype).reshape((0,)),
    )
