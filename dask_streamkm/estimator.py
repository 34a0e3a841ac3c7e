"""StreamingKMeans: one-pass core-set k-means over Dask, numpy and zarr arrays."""

from __future__ import annotations

import copy
import numbers
import time
import warnings

import dask
import dask.array as da
import numpy as np
from array_api_compat import is_cupy_array
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _frames, _graph, _memory, _rows, _seeds, _stream, _threads
from ._array import from_host, namespace, to_host
from ._refine_kernels import REFINE_BANDS, refine_key_span
from ._runner import (
    auto_n_init,
    n_distinct_rows,
    resolve_merge_budget,
    resolve_summary_size,
    solve_summary,
)
from ._stream import MIN_DECAYED_WEIGHT, HalfLifeDecayWarning, decay  # noqa: F401
from ._summarize import METHODS
from ._tasks import predict_block
from .summary import Summary, weight_range_problem

#: Rows per chunk when an in-memory array is wrapped as a dask array.
DEFAULT_CHUNK_ROWS = 100_000


def _chunk_rows(X):
    """Rows of the largest chunk of a batch: a dask array's, or a numpy array's (one chunk)."""
    return X.shape[0] if isinstance(X, np.ndarray) else max(X.chunks[0], default=0)


def _is_dask(X):
    return isinstance(X, da.Array)


def _is_zarr(X):
    return type(X).__module__.startswith("zarr")


def is_lazy_input(X):
    """True for input whose labels and transforms stay lazy: dask and zarr arrays, dask
    DataFrames and dask-backed xarray DataArrays."""
    return _is_dask(X) or _is_zarr(X) or _frames.is_lazy_table(X)


#: The values of ``metric``.
METRICS = ("euclidean", "cosine")


# auto_wrap_output_keys=None: transform puts its result in the input's container itself
# (Rows.distances), so that a lazy result stays lazy; scikit-learn's automatic wrapping would
# build a pandas DataFrame from it, computing it. set_output is defined below.
class StreamingKMeans(
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
    BaseEstimator,
    auto_wrap_output_keys=None,
):
    """One-pass k-means for data larger than memory (core-set summary + weighted k-means).

    Each chunk of rows is summarized once into weighted groups (their weights, linear
    sums and square sums), the summaries are merged in a tree, and a weighted greedy
    k-means++ + Lloyd on the merged summary gives the centers. This is the design of
    Amazon SageMaker's streaming k-means, built on Dask.

    Device (cupy) chunks are summarized on their device and the model stays there; numpy
    ``sample_weight`` is moved to the device chunk by chunk. On the local threaded scheduler
    their passes run on one thread unless ``num_workers`` is set (the device runs the tasks'
    kernels one after another on its default stream, so more threads only contend); on a
    dask-cuda cluster each worker's threads are used.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    summary_size : int or "auto", default="auto"
        Groups kept per chunk (SageMaker's ``extra_center_factor * k``); "auto" is
        ``max(5 * n_clusters, 256, min(rows of the largest chunk / 32, 100 * n_clusters,
        200 * n_clusters * rows of the largest chunk / rows of X))``: fine chunk summaries,
        and about 200 groups per cluster from all chunks together (finer, down to one group
        per 10 rows, where clusters hold few rows). Every row is kept, one group a row,
        when X has at most 10,000 rows (and 2^24 values) or a chunk would keep half its
        rows anyway: a summary of so few rows saves little and costs accuracy.
    method : {"tree", "stream", "lloyd"}, default="tree"
        Per-chunk summarizer. "tree": the rows go into about ``6 sqrt(summary_size)``
        coarse cells, each cell gets groups in proportion to its squared error, and greedy
        k-means++ and three Lloyd steps place them inside every cell at once (numpy chunks;
        on device arrays it is "stream"). "stream": streaming mini-batches with
        facility-location opening (SageMaker-like), then an exact assignment. "lloyd": D^2
        seeding plus an exact Lloyd pass. All three keep the clustering features of a
        partition of each chunk's rows, so the cost bound holds for each.
    mini_batch_size : int, default=4096
        Rows per mini-batch of the streaming summarizer (``method="stream"``, and "tree" on
        device arrays); the tree leaf on numpy chunks does not use it.
    split_every : int, default=8
        Fan-in of the tree that merges chunk summaries.
    n_init : int or "auto", default="auto"
        Restarts of the final weighted k-means++ + Lloyd on the summary; "auto" is 10 up to
        ``n_clusters=100``, then ``1000 // n_clusters`` but at least 3 (each restart costs
        about ``n_clusters**2``), and up to 100 where a restart is cheap: ``2**22`` over
        points x features x ``n_clusters`` of the points the restarts run on (iris at k=10
        gets 100).
    max_iter : int, default=300
        Maximum number of Lloyd iterations of each run of the final solve: the restarts on
        a coarse copy of the summary, the Lloyd steps of its swap search (which makes at
        most ``max_iter // 2`` swap steps when ``max_iter`` is below 300) and the final run
        on all groups (``n_iter_ <= max_iter``). As in ``KMeans``, ``max_iter=1`` stops
        every run after one iteration, so more iterations can lower the cost.
    tol : float, default=1e-4
        Relative tolerance on the center shift for the final Lloyd (a number >= 0).
    half_life : float or None, default=None
        Rows after which an older summary's weight halves across ``partial_fit`` calls (a
        number > 0): a row folded ``n`` rows ago weighs ``2 ** (-n / half_life)``, counted
        a call at a time. It also caps the wait between global solves of ``partial_fit`` at
        ``2 * half_life`` rows. Groups decayed below what float64 holds are dropped with a
        :class:`HalfLifeDecayWarning`.
    random_state : int, RandomState instance or None, default=None
        Seed of every chunk summary, merge and the final solve (an int >= 0 for a
        reproducible fit).
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
        and the seed, so other runs never pick them up. A URL of any fsspec filesystem
        (``s3://bucket/ckpt``) works too; on a cluster the directory must be reachable from
        the workers and the client. Refinement passes save their ranges' results there too
        (``refine-*.npz``, keyed also by the pass number and the centers the pass starts
        from).
    storage_options : dict or None, default=None
        Options of the fsspec filesystem of a ``checkpoint`` URL (credentials, endpoint),
        passed to the tasks that save and load checkpoint files. Without them the usual chain
        applies (environment, config files). Never written to model files or logged.
    metric : {"euclidean", "cosine"}, default="euclidean"
        "cosine" is spherical k-means, for embeddings: every row is scaled to unit length
        inside its chunk's task (no extra pass), the summary keeps sums of unit vectors,
        and the final solve keeps unit centers (renormalized at every Lloyd step, seeded by
        k-means++ on the cosine distance). ``predict`` then gives the center of highest
        cosine, ``transform`` the cosine distances ``1 - cos``, and ``score`` and
        ``inertia_`` sums of ``1 - cos`` (``inertia_`` is exact for cosine: a group's cost
        to a unit center depends on its rows only through its weight and sum). A row of zero
        norm has no direction and is an error naming its chunk. The metric of a fitted
        model is fixed: ``partial_fit``, ``predict`` and ``refit`` refuse a model whose
        ``metric`` was changed after fitting.
    refine_passes : int, default=0
        Extra reads of the data after the one pass (an int >= 0). Each pass assigns every
        row to its nearest center and puts it in a group by that center, its second- and
        third-nearest centers and how close it lies to the border of the first two (fine
        bands near the border, coarse inside; at most 128 MiB of groups). The groups give
        the exact Lloyd step (each center to the weighted mean of its rows; a center left
        with no rows is re-seeded at the summary group of largest weighted squared distance
        to the other centers), and Lloyd's iterations (``max_iter``, ``tol``, and at most
        the arithmetic of 1.5 assignments of all rows; over-relaxed steps, 1.9 times as
        long, where they beat the plain step's bound) then continue from it over the
        groups' centroids, each group moving as a whole: near the borders, where rows change
        center, the groups are small. The result never costs more than the exact step's
        bound. The per-chunk sums are added by group in the summary's merge tree, in a fixed
        order, so the result is the same on every scheduler. Rows held in memory then get
        the Lloyd steps on the rows of the one pass (see :meth:`fit`), from the refined
        centers. ``partial_fit`` does not refine (it sees one batch, not the data): it
        ignores this parameter.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Cluster centers (numpy, or the input's array type for cupy-backed input), float32
        for float32 input and float64 otherwise (the summary's sums stay float64). With
        fewer distinct rows than ``n_clusters``, some centers are duplicates and a
        ``ConvergenceWarning`` is raised, as in scikit-learn.
    inertia_ : float
        Upper bound on the sum of squared distances of the fitted rows to their nearest
        center, computed from the summary without another pass (``score`` gives the exact
        value); for ``metric="cosine"``, the sum of ``1 - cos`` (exact). After a
        ``partial_fit`` call that ran no global solve, the bound of the groups each charged to
        the center they were assigned to (see :meth:`partial_fit`): still an upper bound.
        With ``refine_passes > 0`` (input not held in memory) it is the exact (weighted)
        cost of the centers the last refinement pass started from, measured in that pass
        (float64 distances, also for float32 rows): an upper bound for the final centers
        (the exact step and the Lloyd run over the groups never raise it), or, where larger,
        the pass's bound for the centers as stored (float32 rounding of float32 models can
        move them). After ``fit`` of rows held in memory (a numpy array, a pandas
        DataFrame, an in-memory DataArray; Euclidean, with or without ``refine_passes``),
        the exact cost of the rows, as ``-score(X)`` gives it, from the assignment that
        gives ``labels_`` (no pass more).
    cluster_sizes_ : ndarray of shape (n_clusters,), float64
        Only after ``fit`` with ``refine_passes > 0``: the total (sample) weight of the rows
        nearest each center at the start of the last refinement pass (the rows whose mean
        is that pass's exact Lloyd step); for rows held in memory, nearest each final
        center (the assignment that gives ``labels_``). Removed by ``partial_fit`` and
        ``refit``, which change the centers without reading the rows.
    summary_ : Summary
        The merged summary of all rows seen (after ``partial_fit`` calls, the groups of the
        last global solve and those folded since, built when read).
    labels_ : ndarray of shape (n_samples,), int32, or dask array
        Labels of the rows of the last ``fit`` or of the batch of the last ``partial_fit``
        (as ``MiniBatchKMeans``); a lazy dask array (no read) for dask or zarr input, which
        a pickle or deep copy of the model leaves out (it is a graph over the input).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of the features seen during ``fit``, when X has string column names.
    n_iter_ : int
        Lloyd iterations of the final run of the last global solve on all groups of the
        summary (at most ``max_iter``); the Lloyd steps on rows held in memory that may
        follow it in ``fit`` are not counted.
    n_rows_seen_ : int
        Rows summarized so far.
    fit_seconds_ : float
        Wall seconds of the last ``fit`` (the pass over the data, the solve and the
        labels); not set by ``partial_fit`` or ``refit``.
    solve_seconds_ : float
        Wall seconds of the last global solve on the summary (``fit``, ``partial_fit`` or
        ``refit``).

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
        method="tree",
        mini_batch_size=4096,
        split_every=8,
        n_init="auto",
        max_iter=300,
        tol=1e-4,
        half_life=None,
        random_state=None,
        merge_budget="auto",
        checkpoint=None,
        storage_options=None,
        refine_passes=0,
        metric="euclidean",
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
        self.storage_options = storage_options
        self.refine_passes = refine_passes
        self.metric = metric

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
        positive_int("refine_passes", 0)
        if self.refine_passes and self.metric != "euclidean":
            raise ValueError(
                f"refine_passes={self.refine_passes!r} is for metric='euclidean' only (got "
                f"metric={self.metric!r}); use refine_passes=0 with metric={self.metric!r}."
            )
        if self.refine_passes and refine_key_span(self.n_clusters) > (2**63 - 1) // self.n_clusters:
            largest = round((2**63 / REFINE_BANDS) ** (1 / 3))
            while largest * refine_key_span(largest) >= 2**63:
                largest -= 1
            raise ValueError(
                f"refine_passes={self.refine_passes!r} supports n_clusters up to {largest:,} "
                f"(got n_clusters={self.n_clusters!r}: a pass's group keys would overflow "
                "int64); use refine_passes=0 or fewer clusters."
            )
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} should be one of {METHODS}.")
        if not isinstance(self.metric, str) or self.metric not in METRICS:
            raise ValueError(
                f"metric={self.metric!r} should be one of {METRICS}: 'cosine' for spherical "
                "k-means of directions (embeddings), 'euclidean' otherwise."
            )
        # "not (x >= 0)" also rejects NaN, for which every comparison is False.
        if not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ValueError(f"tol={self.tol!r} should be a number >= 0, e.g. tol=1e-4.")
        if self.half_life is not None and (
            not isinstance(self.half_life, numbers.Real) or not self.half_life > 0
        ):
            raise ValueError(
                f"half_life={self.half_life!r} should be None or a number > 0 (None: no "
                "decay; a number: the rows after which older data weighs half)."
            )

    def _check_fitted_metric(self, action):
        """Refuse ``action`` when ``metric`` was changed after fitting (a ValueError)."""
        fitted = getattr(self, "_metric_", "euclidean")
        if self.metric != fitted:
            raise ValueError(
                f"metric={self.metric!r} but this model was fitted with metric={fitted!r}; "
                f"{action} cannot mix metrics (its summary and centers are for "
                f"metric={fitted!r}). Use set_params(metric={fitted!r}), or fit() again to "
                f"start over with metric={self.metric!r}."
            )

    def _check_fitted_n_clusters(self, why):
        """Refuse an action when ``n_clusters`` was changed after fitting (a ValueError);
        ``why``: why the action needs the fitted number, a sentence."""
        fitted = len(self.cluster_centers_)
        if self.n_clusters != fitted:
            raise ValueError(
                f"n_clusters={self.n_clusters} but this model holds {fitted} centers (n_clusters "
                f"was changed after fitting); {why} Call refit() to solve for "
                f"n_clusters={self.n_clusters} from the summary, set_params(n_clusters={fitted}), "
                "or fit() to start over."
            )

    def _sizes(self, n_features, chunk_rows=0, total_rows=None, whole=True):
        k = self.n_clusters
        size = resolve_summary_size(k, self.summary_size, chunk_rows, total_rows, whole, n_features)
        return size, resolve_merge_budget(k, n_features, size, self.merge_budget)

    def _n_init(self, n_clusters):
        return auto_n_init(n_clusters) if self.n_init == "auto" else int(self.n_init)

    def _as_dask(self, X, *, reset, what="X"):
        """X as a 2-D float dask array with one column chunk and known row chunks."""
        return self._input(X, reset=reset, what=what)[0]

    def _input(self, X, *, reset, what="X", hashed=True):
        """``(X as a dask array, its _frames.Rows)``: tables and labelled arrays unwrapped
        (never computed), their feature names checked as scikit-learn's ``validate_data``.
        ``hashed=False``: a numpy X gets a random graph name instead of a hash of its data
        (a fit or a ``partial_fit`` batch without a checkpoint, predict, score and transform:
        no key outlives the call)."""
        X, rows = _frames.to_array(X, what)
        if rows.kind == "xarray" and not _is_dask(X):
            values = np.asarray(X)
            X = (
                _frames.numpy_chunks(np.ascontiguousarray(values), DEFAULT_CHUNK_ROWS, hashed)
                if values.ndim == 2
                else da.from_array(values, chunks=(DEFAULT_CHUNK_ROWS, -1))  # refused below
            )
        return self._as_dask_array(X, reset=reset, what=what, names=rows.names, hashed=hashed), rows

    def _as_dask_array(self, X, *, reset, what="X", names=None, hashed=True):
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
                    "(or pass lengths=True to to_dask_array) first."
                )
            if X.numblocks[1] != 1:
                raise ValueError(
                    f"{what} has its {X.shape[1]} features split across {X.numblocks[1]} chunks "
                    f"{X.chunks[1]}; every chunk must hold whole rows. Call X.rechunk({{1: -1}})."
                )
            if X.dtype.kind == "c":
                raise ValueError(
                    f"Complex data not supported: {what} has dtype {X.dtype}, and k-means needs "
                    f"real numbers. Take {what}.real or abs({what}) first."
                )
            if X.dtype.kind not in "fiub":
                raise ValueError(
                    f"{what} has dtype {X.dtype}; expected a numeric dtype (float, int or "
                    f"bool). Convert it first, e.g. {what}.astype(float) for numbers stored as "
                    "text or objects, or encode it."
                )
            if X.shape[1] == 0:
                raise ValueError(
                    f"0 feature(s) (shape={X.shape}) while a minimum of 1 is required."
                )
            if X.shape[0] == 0:
                raise ValueError(
                    f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 "
                    "is required."
                )
            # scikit-learn's own checks of n_features_in_ and feature_names_in_ (the same
            # warnings and errors), on the names alone: the data is not read.
            if names is None:
                names = np.empty((0, X.shape[1]), dtype=X.dtype)
            validate_data(self, names, reset=reset, skip_check_array=True)
            return X
        if not isinstance(X, np.ndarray) and is_cupy_array(X):
            # An in-memory cupy array (which has no ``__array_namespace__``): wrap it as it is.
            return self._as_dask_array(
                da.from_array(X, chunks=(DEFAULT_CHUNK_ROWS, -1), asarray=False),
                reset=reset,
                what=what,
                names=names,
            )
        if not isinstance(X, np.ndarray) and hasattr(X, "__array_namespace__"):
            # Another array-API array (array_api_strict...): dask holds numpy-like chunks only
            # (it reads their dtype with np.dtype); read on the host, as scikit-learn reads it.
            X = _host_array(X, what)
        X = validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_all_finite=False,
            order="C",
        )
        return _frames.numpy_chunks(X, DEFAULT_CHUNK_ROWS, hashed)

    def _as_dask_weight(self, sample_weight, X, *, summed=False):
        """``sample_weight`` as a dask array chunked like X (None stays None).

        With ``summed`` (the weights go into summary sums: fit, partial_fit) numpy weights
        must also lie in the range :func:`.summary.weight_range_problem` accepts, over the
        whole array; dask weights are checked chunk by chunk in their tasks.
        """
        sample_weight = _frames.column_array(sample_weight)
        if sample_weight is None:
            return None
        if _is_dask(sample_weight):
            if any(np.isnan(c) for c in sample_weight.chunks[0]):
                raise ValueError(
                    f"sample_weight has unknown chunk sizes {sample_weight.chunks[0]}. Call "
                    "sample_weight.compute_chunk_sizes() (or pass lengths=True to "
                    "to_dask_array) first."
                )
            if sample_weight.ndim != 1 or sample_weight.shape[0] != X.shape[0]:
                raise ValueError(
                    f"sample_weight.shape={sample_weight.shape} should be ({X.shape[0]},), "
                    "one weight per row of X."
                )
            if sample_weight.dtype.kind not in "fiub":
                raise ValueError(_weight_dtype_message(sample_weight.dtype))
            if sample_weight.chunks[0] != X.chunks[0]:
                sample_weight = sample_weight.rechunk((X.chunks[0],))
            return _weights_like(sample_weight, X)
        sw = np.asarray(to_host(sample_weight))
        if sw.dtype.kind not in "fiub":
            raise ValueError(_weight_dtype_message(sw.dtype))
        sw = sw.astype(np.float64, copy=False)
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
        if summed:
            positive = sw[sw > 0]
            problem = weight_range_problem(float(positive.min()), float(positive.max()))
            if problem is not None:
                raise ValueError(problem)
        # Read-only views of the weights, as of a numpy X (no copy).
        return _weights_like(_frames.numpy_views(np.ascontiguousarray(sw), X.chunks[0]), X)

    # ------------------------------------------------------------------ summary and solve
    def _summarize(self, X, sample_weight, entropy, one_thread=False, whole=True):
        """The summary of X; ``one_thread``: its tasks on one BLAS thread each, however few
        chunks (a small batch of ``partial_fit``); ``whole``: X is all the data (not a batch
        of a stream), for the summary's size."""
        chunk_rows = max(X.chunks[0], default=0)
        size, budget = self._sizes(X.shape[1], chunk_rows, X.shape[0], whole)
        params = _graph.SummaryParams(
            size=size,
            method=self.method,
            mini_batch_size=int(self.mini_batch_size),
            split_every=int(self.split_every),
            budget=budget,
            entropy=entropy,
            metric=self.metric,
        )
        # A worker too small for one chunk: a clear error now, not minutes of worker restarts.
        chunks = X.numblocks[0]
        with (
            _memory.worker_memory_guard(X, self.method),
            _threads.device_task_threads(_on_device(X)),
            _threads.one_blas_thread(0) if one_thread else _threads.blas_limits(chunks),
        ):
            return _graph.fit_summary(X, sample_weight, params, checkpoint=self._checkpoint())

    def _checkpoint(self):
        """The ``checkpoint`` directory, validated and created, or None without one."""
        from ._checkpoint import Checkpoint

        return Checkpoint.open(self.checkpoint, self.random_state, self.storage_options)

    def _solve(self, summary, entropy, dtype, n_init=None):
        """Solve ``summary`` for ``n_clusters`` and set the fitted attributes; returns self.
        ``n_init``: the restarts, when not the parameter's (a first ``partial_fit`` batch)."""
        if summary.total_weight <= 0:
            raise ValueError(
                "sample_weight is zero for every row; at least one row needs a positive weight."
            )
        t0 = time.perf_counter()
        # A small summary is solved on one BLAS thread (:func:`_threads.solve_threads`): its
        # products are small, and the centers then do not depend on the cores.
        with _threads.one_blas_thread(summary.n_groups * summary.n_features):
            centers, bound, n_iter = solve_summary(
                summary,
                self.n_clusters,
                n_init=self.n_init if n_init is None else n_init,
                max_iter=self.max_iter,
                tol=self.tol,
                seed=_seeds.solve_seed(entropy),
                metric=self.metric,
            )
        distinct = n_distinct_rows(centers)
        if distinct < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than "
                f"n_clusters ({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.summary_ = summary
        self._entropy_ = entropy
        self.__dict__.pop("cluster_sizes_", None)  # sizes of earlier centers
        self._metric_ = self.metric
        self.cluster_centers_ = _centers_out(centers, dtype)
        if self.cluster_centers_.dtype != centers.dtype:
            # The bound for the centers as stored: float32 rounding moves centers far from zero.
            bound = summary.cost_bound(self.cluster_centers_, spherical=self.metric == "cosine")
        self.inertia_ = float(bound)
        self.n_iter_ = int(n_iter)
        self.solve_seconds_ = time.perf_counter() - t0
        self.n_rows_seen_ = int(summary.n_seen)
        return self

    def _refine(self, X, sample_weight):
        """``refine_passes`` reads of X from ``cluster_centers_`` (:func:`._refine.refine`);
        sets the centers, ``inertia_`` and ``cluster_sizes_``."""
        from ._refine import refine

        start = self.cluster_centers_
        refined = refine(
            X,
            sample_weight,
            start,
            np.asarray(to_host(self.summary_.centroids), dtype=np.float64),
            np.asarray(to_host(self.summary_.weights), dtype=np.float64),
            passes=int(self.refine_passes),
            split_every=int(self.split_every),
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            points_dtype=_out_dtype(X.dtype),
            on_device=_on_device(X),
            checkpoint=self._checkpoint(),
        )
        centers, dtype = refined.centers, _out_dtype(start.dtype)
        self.cluster_centers_ = (
            _centers_out(centers, dtype)
            if isinstance(start, np.ndarray)
            else _centers_out(from_host(centers, start), dtype)
        )
        stored = np.asarray(to_host(self.cluster_centers_), dtype=np.float64)
        self.inertia_ = refined.inertia(stored)
        self.cluster_sizes_ = refined.cluster_sizes

    def _polish_rows(self, X, sample_weight):
        """For rows of an in-memory X (numpy arrays in the graph): Lloyd steps on them
        (:func:`._rows.rows_lloyd`, as many as :func:`._rows.polish_steps` gives) from the
        solve's or the refinement's centers, which sets the centers, or none; either way one
        assignment of the rows gives ``inertia_`` (the rows' exact cost, as ``score`` takes
        it, instead of the summary's or the last pass's bound), after a refinement
        ``cluster_sizes_``, and the rows' labels (int32), returned. None (and nothing changed)
        for rows not held as numpy arrays here and for ``metric="cosine"`` (whose
        ``inertia_`` is exact already): the caller labels them. Steps are taken only with
        ``summary_size="auto"`` where the summary is coarse for ``n_clusters``; a
        ``summary_size`` given is the caller's own trade of time and cost, such as a small
        summary for speed, and its centers are the solve's."""
        if self.metric != "euclidean":
            return None
        chunks = _rows.host_chunks(X)
        weights = None if sample_weight is None or not chunks else _rows.host_chunks(sample_weight)
        if not chunks or (sample_weight is not None and not weights):
            return None
        steps = 0
        if isinstance(self.summary_size, str) and self.summary_size == "auto":
            steps = _rows.polish_steps(
                X.shape[0], X.shape[1], self.n_clusters, self.summary_.n_groups, self.max_iter
            )
        # Repeated centers (fewer distinct rows than clusters) stay as the solve gave them.
        if steps and n_distinct_rows(self.cluster_centers_) < self.n_clusters:
            steps = 0
        w = None if weights is None else np.concatenate(weights)
        centers, labels, cost = _rows.rows_lloyd(
            chunks,
            np.asarray(self.cluster_centers_, dtype=np.float64),
            w,
            n_steps=steps,
            tol=float(self.tol),
        )
        if steps:
            self.cluster_centers_ = _centers_out(centers, self.cluster_centers_.dtype)
        self.inertia_ = float(cost)
        if "cluster_sizes_" in self.__dict__:  # refined: the sizes of the final assignment
            sizes = np.bincount(labels, weights=w, minlength=self.n_clusters)
            self.cluster_sizes_ = sizes.astype(np.float64)
        return labels.astype(np.int32)

    def _check_n_clusters(self, X):
        if self.n_clusters > X.shape[0]:
            raise ValueError(
                f"n_samples={X.shape[0]} should be >= n_clusters={self.n_clusters}; "
                f"use n_clusters <= {X.shape[0]} or pass more rows."
            )

    # ------------------------------------------------------------------ public API
    def fit(self, X, y=None, sample_weight=None):
        """Summarize every chunk of X once, merge the summaries and solve for the centers.

        With ``summary_size="auto"``, rows held in memory (a numpy array, a pandas DataFrame,
        an in-memory DataArray) are then polished where the summary is coarse for
        ``n_clusters`` (fewer than 100 groups per cluster: data of fewer than about 3,200
        rows per cluster, such as word embeddings at large k): up to 10 exact Lloyd steps on
        the rows from the solve's centers (with ``refine_passes``, from the refined ones),
        as long as they cost at most ``2**36`` multiply-adds (rows x features x
        ``n_clusters`` a step), within ``max_iter`` and ``tol``. With steps or without
        (whatever ``summary_size``), the last assignment of rows held in memory gives
        ``labels_`` and the exact ``inertia_`` (Euclidean). Dask, zarr and lazily read tables
        are read once (``refine_passes`` reads them again on request). On 100,000 GloVe word
        vectors at k=500 the steps took the cost from 1.021 to 1.003 times
        ``KMeans(n_init=10)``'s in 0.5 s more.

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, n_features)
            Training rows. Dask and zarr arrays are read chunk by chunk, once; they must
            hold whole rows in each chunk. A dask DataFrame (numeric columns, or a
            one-column Series) is read partition by partition, never computed whole; its
            column names become ``feature_names_in_``. Its partition lengths come from
            metadata where dask knows them (Parquet footers, pandas), otherwise one extra
            read counts them. An xarray DataArray of dims (sample, feature) is read as its
            data (see :func:`dask_streamkm.io.stack_samples` and
            :func:`dask_streamkm.io.dataset_to_array`).
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Weight of each row (finite, >= 0, not all zero); None gives every row weight 1.
            The positive weights must lie within a factor 1e6 of each other (over the whole
            array for numpy weights, within each chunk for dask weights, which are checked
            in the chunk's task) and be >= 1e-150, so that the summary's float64 sums keep
            ``inertia_`` an upper bound; others raise ``ValueError`` naming the range.

        Returns
        -------
        self : StreamingKMeans
            The fitted estimator.

        Examples
        --------
        >>> import dask.array as da
        >>> from dask_streamkm import StreamingKMeans
        >>> X = da.random.default_rng(0).normal(size=(1_000, 3), chunks=250)
        >>> km = StreamingKMeans(n_clusters=4, random_state=0).fit(X)
        >>> km.cluster_centers_.shape, km.n_rows_seen_
        ((4, 3), 1000)
        """
        self._check_params()
        t0 = time.perf_counter()
        lazy = is_lazy_input(X)
        # A numpy X is named by a hash of its data only for a checkpoint, which is keyed by
        # it (128 MB of rows: from_array took 0.16 s hashed, 0.036 s named at random).
        X, rows = self._input(X, reset=True, hashed=self.checkpoint is not None)
        self._check_n_clusters(X)
        sw = self._as_dask_weight(sample_weight, X, summed=True)
        entropy = _seeds.entropy_from(self.random_state)
        summary = self._summarize(X, sw, entropy)
        self._solve(summary, entropy, _out_dtype(X.dtype))
        labels = None
        if self.refine_passes:
            self._refine(X, sw)
        if not lazy:
            labels = self._polish_rows(X, sw)
        self.labels_ = rows.labels(self._labels(X, lazy) if labels is None else labels)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """Fold the batch X into the running summary and update the centers cheaply.

        The first call summarizes X and solves (as ``fit``, with the restarts its rows pay
        for: ``n_init`` times its rows over 25 per group of its summary and at most over 400
        per cluster, at least 1). Later calls on host (numpy) models with
        ``metric="euclidean"`` do not solve again: each row of X goes to its
        nearest current center, into a group keyed by its two nearest centers and how close
        it lies to their border (groups of equal key add up across calls, so they stay as
        few as the keys the data reaches), and each center moves to the mean of the
        summary's weight assigned to it (running sums: one Lloyd step at the cost of ``k``
        rows). A call costs about one distance pass over the batch (its rows' two nearest
        centers; the labels then compare again only the rows near a border), whatever the
        number of calls before it; a batch of more than 32,768 rows is folded in equal
        pieces on the scheduler's threads, and the products of a small batch or summary run
        on one BLAS thread (called from the main thread, the distance passes in pieces of
        rows on the cores: the same numbers on any number of cores). A numpy batch of float32
        or float64 rows in C order, of at most 100,000 rows, is checked and folded as it is
        (no dask array is made around it). A
        batch far from the summary's origin (more than 32 root-mean-square deviations of its
        rows, and of the summary's rows: a batch of one row is judged by the summary's),
        where sums around that origin would lose the rows' spread, is summarized and merged
        as a chunk, and solved, as the first.

        A global solve over the whole summary runs when it pays:

        - when the rows folded since the last global solve reach the rows it saw (the rows
          seen doubled; with ``half_life``, at the latest every ``2 * half_life`` rows, when
          the rows of the last solve weigh a quarter): the solves' total cost stays below
          twice the last one's, so their cost per row falls as the stream grows, and the
          centers are never solved on less than half the rows seen;
        - when the running bound per unit weight has risen 5 % above its value after the
          last global solve (data drifting away from the centers), once an eighth of its
          rows came since, and 25 % above it at any call (a batch in a region no center
          serves, as rows sorted by a feature bring);
        - when the summary holds more groups than the merge budget: its groups are first
          added up by their key for the current centers, as a batch's rows are (one
          distance pass over them), then reduced to half the budget if still over it;
        - on request: :meth:`refit`.

        Such a solve is warm unless the full one pays: from the current centers, a swap
        search that stops at its first step finding no swap that lowers the cost (at most
        ``2 k`` candidates), then at most 5 Lloyd iterations over the summary's groups (never
        raising its bound): a few passes over the groups, less work than folding the rows
        since. The full solve (restarts, swap search and Ward start, as ``fit``) runs on
        :meth:`refit`, when the bound per unit weight rose 25 % (data too far for a start
        from the current centers), and when the rows folded since the last full solve reach
        100 per group of the summary (counting at least 600 groups per cluster). That rule
        holds because both costs grow with those units: a full solve costs what folding 30
        to 40 rows per group does (at k=100, 32 features), plus a part that does not grow
        with the groups (its restarts on a coarse copy, about 380 groups per cluster), so
        full solves add at most about a third to the work of a stream, however small or
        large its batches. Once the rows seen reach 16 times those of the last full solve
        or re-solve, or the bound per unit weight rose 25 % since then (data drifting), a
        due warm solve also runs from a fresh start (the full solve's Ward start on a coarse
        copy of the groups) and keeps the run of lower cost: the first batch's basin, chosen
        on few rows a cluster, can be left. The rules count rows and
        groups, never seconds, so the same calls give the same centers with the same
        ``random_state``. On 100 batches of 4,096 rows at k=100 (32 features), three draws
        of the data, the final centers cost 0.998, 1.002 and 0.994 times ``fit`` on all the
        rows (0.996, 0.993 and 0.996 of ``fit`` with the decay weights for
        ``half_life=100_000``), 2-4 % below ``MiniBatchKMeans``' stream (``python
        benchmarks/stream.py --seeds 0,1,2``).

        Between global solves ``inertia_`` is the bound of the summary's groups each charged
        to the center they were assigned to (an upper bound of ``summary_.cost_bound`` of the
        centers, so of the rows' cost), ``labels_`` the batch's nearest centers after the
        update (as ``predict`` gives them), and ``n_iter_`` and ``solve_seconds_`` those of
        the last global solve. ``half_life`` decays every older group by
        ``2 ** (-rows of X / half_life)`` at each call, as before (applied lazily to the
        stored groups). Device (cupy) models and ``metric="cosine"`` solve again at every
        call. The parameters are checked on every call, so a ``set_params`` between calls
        is validated. ``refine_passes`` is not applied: a refinement pass needs every row,
        and a batch is only some of them (refine with ``fit`` on the whole data instead).

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, n_features)
            The batch of rows.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Weight of each row of the batch (the rules of :meth:`fit`, per batch).

        Returns
        -------
        self : StreamingKMeans
            The updated estimator; ``labels_`` holds the labels of this batch.

        Examples
        --------
        >>> import numpy as np
        >>> from dask_streamkm import StreamingKMeans
        >>> rng = np.random.default_rng(0)
        >>> km = StreamingKMeans(n_clusters=2, random_state=0)
        >>> for _ in range(3):
        ...     km = km.partial_fit(rng.normal(size=(100, 2)))
        >>> km.n_rows_seen_, km.labels_.shape
        (300, (100,))
        """
        self._check_params()
        # Not hasattr(self, "summary_"), which would build a stream's summary.
        first = "_summary" not in self.__dict__
        if not first:
            self._check_fitted_metric("partial_fit")
            # A later solve for the new number failed on the running centers' shapes.
            self._check_fitted_n_clusters("partial_fit folds batches into the fitted centers.")
        if not first and sample_weight is None and self._folds_plain(X):
            # A plain numpy batch of one chunk: folded without a dask array around it.
            # scikit-learn's checks of the features (an array has no feature names: they
            # have nothing to say to a model fitted without names on as many features).
            if "feature_names_in_" in self.__dict__ or X.shape[1] != self.n_features_in_:
                validate_data(
                    self, np.empty((0, X.shape[1]), X.dtype), reset=False, skip_check_array=True
                )
            values = max(X.shape[0], self._stream_groups()) * X.shape[1]
            with _threads.one_blas_thread(values):
                if self._partial_fit_stream(X, None, False):
                    return self
        lazy = is_lazy_input(X)
        # A plain first batch is labelled by the chunk's task itself, not a one-task graph.
        plain = X if first and sample_weight is None and self._plain_batch(X) else None
        # A batch that will be folded needs no hash of its data for a graph name (with a
        # checkpoint, a far batch's pass is keyed by it: hashed then).
        folds = not first and _stream.streams(self.cluster_centers_, None, self.metric)
        X, rows = self._input(X, reset=first, hashed=not folds or self.checkpoint is not None)
        if first:
            self._check_n_clusters(X)
        sw = self._as_dask_weight(sample_weight, X, summed=True)
        if folds and _stream.streams(self.cluster_centers_, X, self.metric):
            # Small products run on one BLAS thread (see _threads.one_blas_thread).
            values = max(X.shape[0], self._stream_groups()) * X.shape[1]
            with _threads.one_blas_thread(values):
                if self._partial_fit_stream(X, sw, lazy):
                    # In the input's container, as fit and a solved batch give them.
                    self.labels_ = rows.labels(self.labels_)
                    return self
        if first:
            entropy = _seeds.entropy_from(self.random_state)
            # A new batch gets its own seeds: shift the entropy by the rows seen so far.
            batch = _seeds.batch_entropy(entropy, 0)
            dtype = _out_dtype(X.dtype)
        else:
            entropy, dtype = self._entropy_, self.cluster_centers_.dtype
            batch = _seeds.batch_entropy(entropy, self.n_rows_seen_)
        # A small batch is summarized and solved on one BLAS thread (a 4,096-row first
        # batch's leaf took ten times as long on two threads of two busy cores).
        small = X.shape[0] * X.shape[1] <= _threads.SINGLE_THREAD_VALUES
        new = self._summarize(X, sw, batch, one_thread=small, whole=False)
        if not first and not new.total_weight > 0:
            raise _zero_weight_batch()  # as numpy weights are refused, before any change
        if first:
            summary = new
        else:
            old = self.summary_
            if self.half_life is not None:
                old, dropped = decay(old, X.shape[0], self.half_life)
                if dropped:
                    _stream.warn_dropped(dropped, X.shape[0], self.half_life, stacklevel=2)
            summary = self._within_budget(old.merge(_like(new, old)), X, batch)
        # A first batch gets the restarts its rows pay for (:func:`._stream.first_restarts`).
        n_init = (
            _stream.first_restarts(new, self._n_init(self.n_clusters), self.n_clusters)
            if first
            else None
        )
        with _threads.one_blas_thread(summary.n_groups * summary.n_features if small else np.inf):
            self._solve(summary, entropy, dtype, n_init)
        if plain is not None:
            with _threads.one_blas_thread(plain.size):
                labels = predict_block(
                    plain, None, self.cluster_centers_, "labels", self.metric, rows=len(plain)
                )
        else:
            labels = self._labels(X, lazy)
        self.labels_ = rows.labels(labels)
        return self

    @staticmethod
    def _plain_batch(X):
        """True when X is a C-ordered 2-D float32 or float64 numpy array of 1 to
        ``DEFAULT_CHUNK_ROWS`` rows: one chunk, what ``_input`` would make of it, uncast."""
        return (
            type(X) is np.ndarray
            and X.ndim == 2
            and X.dtype in (np.float32, np.float64)
            and X.flags.c_contiguous
            and 1 <= X.shape[0] <= DEFAULT_CHUNK_ROWS
            and X.shape[1] >= 1
        )

    def _folds_plain(self, X):
        """True when X is a batch that :meth:`_partial_fit_stream` folds as it is: a plain
        batch (:meth:`_plain_batch`) and a model whose batches are folded."""
        return self._plain_batch(X) and _stream.streams(self.cluster_centers_, None, self.metric)

    def _stream_groups(self):
        """Groups of the running summary, without building it."""
        stream = self.__dict__.get("_stream_")
        return stream.n_groups if stream is not None else self.__dict__["_summary"].n_groups

    def _within_budget(self, summary, X, batch):
        """``summary`` reduced to half the merge budget when it holds more than the budget."""
        # The running summary outlives this batch: its budget does not shrink with the
        # batch's share of rows (no total_rows), as before batches were shared out.
        _, budget = self._sizes(X.shape[1], _chunk_rows(X))
        if summary.n_groups > budget:
            seed = _seeds.task_seed(batch, _seeds.PARTIAL_LEVEL, 0)
            summary = summary.reduce(budget // 2, seed=seed)
        return summary

    def _stream_within_budget(self, summary, centers, budget, X, batch):
        """A stream's ``summary`` over the merge ``budget``: its groups added up by their
        key for ``centers`` (:func:`._stream.rekey`), then reduced as :meth:`_within_budget`
        does if they still are more."""
        if summary.n_groups > budget:
            summary = _stream.rekey(summary, centers, self._stream_.outlier_cost())
        return self._within_budget(summary, X, batch)

    def _partial_fit_stream(self, X, sw, lazy):
        """Fold the batch into the running summary (:mod:`._stream`); a global solve when
        one is due. Returns False (and changes nothing) for a batch far from the summary's
        origin, which is summarized and merged as a chunk instead."""
        stream = self.__dict__.get("_stream_")
        if stream is None:
            stream = _stream.Stream(self.summary_, self.cluster_centers_)
        batch = _seeds.batch_entropy(self._entropy_, self.n_rows_seen_)
        previous = np.asarray(self.cluster_centers_, dtype=np.float64)
        if isinstance(X, np.ndarray):  # checked by _folds_plain
            parts, near = _stream.host_parts(
                X,
                previous,
                stream.origin,
                stream.spread,
                stream.outlier_cost(),
                stream.bound_at_solve,
            )
        else:
            parts, near = _stream.batch_parts(
                X,
                sw,
                previous,
                stream.origin,
                lazy,
                stream.spread,
                stream.outlier_cost(),
                stream.bound_at_solve,
            )
        if parts is None:
            return False
        if parts[1].shape[0] == 0:  # dask weights, checked in their tasks: all zero
            raise _zero_weight_batch()
        dropped = stream.fold(parts, X.shape[0], self.half_life)
        if dropped:
            _stream.warn_dropped(dropped, X.shape[0], self.half_life, stacklevel=3)
        centers = stream.centers(previous)
        _, budget = self._sizes(X.shape[1], _chunk_rows(X))
        self._stream_ = stream
        dtype = self.cluster_centers_.dtype
        due = stream.due(centers, budget, self.half_life)
        # Rows at the last full solve: fit, load, refit or a full solve of partial_fit.
        full_rows = self.__dict__.get("_full_rows_", stream.rows_at_solve)
        if due in _stream.FULL_REASONS or (
            due
            and (
                stream.summary().n_groups <= self.n_clusters
                or n_distinct_rows(previous) < self.n_clusters  # fewer distinct rows
                or _stream.full_solve_due(stream.rows - full_rows, stream.n_groups, self.n_clusters)
            )
        ):
            summary = self._stream_within_budget(stream.summary(), centers, budget, X, batch)
            self._solve(summary, self._entropy_, dtype)  # a new stream starts
        elif due:
            # Over the budget the summary is reduced first; its groups move, not the centers.
            summary = stream.warm_summary(centers, self.half_life)
            summary = self._stream_within_budget(summary, centers, budget, X, batch)
            # Rows at the last full solve or re-solve (a warm solve from a fresh start too),
            # and the bound per unit weight then.
            resolve_rows = self.__dict__.get("_resolve_rows_", full_rows)
            resolve_bound = self.__dict__.get("_resolve_bound_", stream.bound_at_solve)
            fresh = _stream.resolve_due(stream.rows, resolve_rows) or _stream.drifted(
                stream.per_weight(centers), resolve_bound
            )
            self._warm_solve(summary, centers, _seeds.solve_seed(batch), dtype, fresh)
            self._full_rows_ = full_rows
            self._resolve_rows_ = stream.rows if fresh else resolve_rows
            self._resolve_bound_ = self._stream_.bound_at_solve if fresh else resolve_bound
        else:
            self.cluster_centers_ = _centers_out(centers, dtype)
            self.inertia_ = stream.bound(self.cluster_centers_)
            self.n_rows_seen_ = stream.rows
            self.__dict__.pop("cluster_sizes_", None)  # sizes of earlier centers
        self.labels_ = (
            self._labels(X, lazy)
            if lazy
            else _stream.host_labels(near, previous, self.cluster_centers_)
        )
        return True

    def _warm_solve(self, summary, centers, seed, dtype, fresh=False):
        """A scheduled solve of ``partial_fit`` from ``centers`` (:func:`._stream.warm_solve`,
        a re-solve with ``fresh``); sets the fitted attributes as :meth:`_solve` does, and
        starts the next stream."""
        t0 = time.perf_counter()
        centers, labels, n_iter = _stream.warm_solve(
            summary, centers, max_iter=self.max_iter, tol=self.tol, seed=seed, fresh=fresh
        )
        self.summary_ = summary
        self.__dict__.pop("cluster_sizes_", None)  # sizes of earlier centers
        self.cluster_centers_ = _centers_out(centers, dtype)
        # The new stream's parts are the solve's last assignment: its bound is the solve's.
        self._stream_ = _stream.Stream(summary, self.cluster_centers_, labels)
        self.inertia_ = self._stream_.bound(self.cluster_centers_)
        self.n_iter_ = int(n_iter)
        self.solve_seconds_ = time.perf_counter() - t0
        self.n_rows_seen_ = int(summary.n_seen)

    @property
    def summary_(self):
        """The summary of every row seen: after ``partial_fit`` calls, the groups of the
        last global solve and those folded since (built when read)."""
        stream = self.__dict__.get("_stream_")
        if stream is not None:
            return stream.summary()
        try:
            return self.__dict__["_summary"]
        except KeyError:
            raise AttributeError("'StreamingKMeans' object has no attribute 'summary_'") from None

    @summary_.setter
    def summary_(self, summary):
        self.__dict__["_summary"] = summary
        self.__dict__.pop("_stream_", None)
        self.__dict__.pop("_full_rows_", None)  # a full solve, unless a warm one says not
        self.__dict__.pop("_resolve_rows_", None)
        self.__dict__.pop("_resolve_bound_", None)

    def refit(self, n_clusters=None, **params):
        """Solve again from ``summary_`` for other solve parameters, without reading data.

        After ``partial_fit`` calls this is the global solve on request: the restarts and
        the swap search on every group folded so far.

        Parameters
        ----------
        n_clusters : int, optional
            New number of clusters; the current one when None. At most the rows seen
            (``n_rows_seen_``): more raise ``ValueError``, as ``fit`` refuses more clusters
            than rows. Between the distinct rows and the rows seen, some centers are
            duplicates and a ``ConvergenceWarning`` is raised, as ``fit`` does.
        **params
            New values of ``n_init``, ``max_iter``, ``tol`` or ``random_state``. A rejected
            value raises ``ValueError`` and leaves every parameter as it was. ``metric`` may
            be given only with the fitted metric: the summary holds the rows of one metric
            (unit rows for cosine), so another one needs ``fit``.

        Returns
        -------
        self : StreamingKMeans
            The estimator with new centers (``labels_`` is removed: it belonged to the old
            centers).

        Examples
        --------
        >>> import numpy as np
        >>> from dask_streamkm import StreamingKMeans
        >>> X = np.random.default_rng(0).normal(size=(500, 2))
        >>> km = StreamingKMeans(n_clusters=8, random_state=0).fit(X)
        >>> km.refit(n_clusters=3).cluster_centers_.shape
        (3, 2)
        """
        check_is_fitted(self, "summary_")
        fitted = getattr(self, "_metric_", "euclidean")
        if params.get("metric", fitted) != fitted:
            raise ValueError(
                f"refit(metric={params['metric']!r}) on a model fitted with "
                f"metric={fitted!r}: its summary holds the rows of metric={fitted!r}, so it "
                "cannot be solved for another metric. Call "
                f"StreamingKMeans(metric={params['metric']!r}).fit(X) to read the data again."
            )
        params.pop("metric", None)
        self._check_fitted_metric("refit")
        allowed = {"n_init", "max_iter", "tol", "random_state"}
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(
                f"refit() got {sorted(unknown)}; it accepts n_clusters and {sorted(allowed)}."
            )
        if n_clusters is not None:
            params["n_clusters"] = n_clusters
        before = {name: getattr(self, name) for name in params}
        self.set_params(**params)
        summary = self.summary_
        try:
            self._check_params()
            _check_refit_rows(self.n_clusters, summary.n_seen)
            entropy = (
                _seeds.entropy_from(self.random_state)
                if "random_state" in params
                else self._entropy_
            )
        except ValueError:
            self.set_params(**before)
            raise
        self._solve(summary, entropy, self.cluster_centers_.dtype)
        if hasattr(self, "labels_"):
            del self.labels_
        return self

    def _labels(self, X, lazy):
        labels = _graph.nearest_blocks(X, self.cluster_centers_, "labels", metric=self.metric)
        return labels if lazy else _threads.compute(labels)

    def _predict_input(self, X):
        """``(X as a dask array, its _frames.Rows, whether results stay lazy)``."""
        check_is_fitted(self, "cluster_centers_")
        self._check_fitted_metric("predict, transform and score")
        lazy = is_lazy_input(X)
        # No key of the pass outlives the call: a numpy X needs no hash of its data.
        return (*self._input(X, reset=False, hashed=False), lazy)

    def predict(self, X):
        """Index of the nearest center for each row (of highest cosine for ``metric="cosine"``).

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, n_features)
            Rows to label.

        Returns
        -------
        labels : ndarray of shape (n_samples,), int32, or dask array
            Index of the nearest center; a lazy dask array for dask or zarr input, a lazy
            dask Series (the input's partitions and index) for a dask DataFrame, a DataArray
            over the sample dim (its coordinates kept; lazy when dask-backed) for xarray
            input, and, as in scikit-learn, an ndarray for pandas input.

        Examples
        --------
        >>> import numpy as np
        >>> from dask_streamkm import StreamingKMeans
        >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]])
        >>> km = StreamingKMeans(n_clusters=2, random_state=0).fit(X)
        >>> bool(km.predict([[0.0, 0.1]])[0] == km.labels_[0])
        True
        """
        Xd, rows, lazy = self._predict_input(X)
        return rows.labels(self._labels(Xd, lazy))

    def transform(self, X):
        """Distances of each row to every center: Euclidean, or ``1 - cos`` for cosine.

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, n_features)
            Rows to transform.

        Returns
        -------
        distances : ndarray of shape (n_samples, n_clusters) or dask array
            Distances in the common float dtype of X and the centers (float32 only when
            both are, as scikit-learn's), exactly 0 for a row equal to a center; a lazy dask
            array for dask or zarr input, a lazy dask DataFrame whose columns are
            :meth:`get_feature_names_out` for a dask DataFrame, a DataArray over (sample,
            "cluster") for xarray input. ``set_output(transform="pandas")`` gives a
            DataFrame whose columns are :meth:`get_feature_names_out` (a lazy dask
            DataFrame for lazy input).

        Examples
        --------
        >>> import numpy as np
        >>> from dask_streamkm import StreamingKMeans
        >>> X = np.array([[0.0, 0.0], [6.0, 8.0]], dtype=np.float32)
        >>> km = StreamingKMeans(n_clusters=1).fit(X)
        >>> km.transform(np.array([[3.0, 4.0], [3.0, 5.0]], dtype=np.float32))
        array([[0.],
               [1.]], dtype=float32)
        >>> km.transform(np.array([[3.0, 5.0]])).dtype  # float64 input: float64 distances
        dtype('float64')
        """
        Xd, rows, lazy = self._predict_input(X)
        out = _graph.nearest_blocks(Xd, self.cluster_centers_, "distances", metric=self.metric)
        out = out if lazy else _threads.compute(out)
        return rows.distances(out, self.get_feature_names_out(), self._transform_output())

    def set_output(self, *, transform=None):
        """Set the container of :meth:`transform`'s and ``fit_transform``'s output.

        Parameters
        ----------
        transform : {"default", "pandas", "polars"} or None, default=None
            "default": the input's own kind (an array for arrays and pandas, as in
            scikit-learn; a lazy dask DataFrame for a dask DataFrame; a DataArray for
            xarray); "pandas": a DataFrame whose columns are :meth:`get_feature_names_out`
            (a lazy dask DataFrame for lazy input, never computed); "polars": a polars
            DataFrame (in-memory input only); None: unchanged.

        Returns
        -------
        self : StreamingKMeans
        """
        if transform is None:
            return self
        if transform not in _frames.OUTPUTS:
            raise ValueError(
                f"set_output(transform={transform!r}) should be one of {_frames.OUTPUTS} or None."
            )
        # Where scikit-learn's set_output keeps it, so that clone() carries it.
        self._sklearn_output_config = {
            **getattr(self, "_sklearn_output_config", {}),
            "transform": transform,
        }
        return self

    def _transform_output(self):
        """The container set by :meth:`set_output`, else scikit-learn's global setting."""
        from sklearn import get_config

        config = getattr(self, "_sklearn_output_config", {})
        return config.get("transform", get_config()["transform_output"])

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the labels of the rows of X.

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, n_features)
            Training rows.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Weight of each row.

        Returns
        -------
        labels : ndarray of shape (n_samples,), int32, or dask array
            ``labels_``: computed for in-memory input, lazy for dask or zarr input.
        """
        return self.fit(X, sample_weight=sample_weight).labels_

    def _sq_distance_sum(self, X, sample_weight=None):
        """(sum of weighted squared distances of X to the centers, total weight), one pass.

        Weights are checked by the same rules for numpy and dask input (dask chunks in
        their tasks); an all-zero weight raises ``ValueError``.
        """
        Xd, _, _ = self._predict_input(X)
        sw = self._as_dask_weight(sample_weight, Xd)
        with _threads.blas_limits():  # in waves of bounded graphs, as the fit
            total, weight = _graph.weighted_sq_distance_sum(
                Xd, self.cluster_centers_, sw, self.metric
            )
        if not float(weight) > 0:
            raise ValueError(
                "sample_weight is zero for every row; at least one row needs a positive weight."
            )
        return float(total), float(weight)

    def score(self, X, y=None, sample_weight=None):
        """Minus the exact sum of (weighted) squared distances of X to the nearest center.

        For ``metric="cosine"``: minus the sum of (weighted) ``1 - cos`` to the center of
        highest cosine. Each row's squared distance to its nearest center is taken from the
        differences (in float32 for float32 rows and centers, as scikit-learn's), so a row
        or a center far from the others (an outlier) costs the others no precision.

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, n_features)
            Rows to score (read once).
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Weight of each row (finite, >= 0, not all zero).

        Returns
        -------
        score : float
            Minus the cost of X under the centers (larger is better, as in scikit-learn).

        Examples
        --------
        >>> import numpy as np
        >>> from dask_streamkm import StreamingKMeans
        >>> X = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [12.0, 0.0]])
        >>> km = StreamingKMeans(n_clusters=2, random_state=0).fit(X)
        >>> km.score(X)
        -4.0
        """
        return -self._sq_distance_sum(X, sample_weight)[0]

    @property
    def _n_features_out(self):
        """Number of transformed output features (one distance per center)."""
        return self.cluster_centers_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ repr without secrets
    def _shown(self):
        """A shallow copy for reprs: ``storage_options`` with their secret values replaced by
        ``***`` and a ``checkpoint`` URL without its secrets (``get_params`` keeps the real
        values)."""
        from . import _remote

        if self.storage_options is None and not isinstance(self.checkpoint, str):
            return self
        shown = copy.copy(self)
        shown.storage_options = _remote.redact_options(self.storage_options)
        if isinstance(self.checkpoint, str):
            shown.checkpoint = _remote.display(self.checkpoint)
        return shown

    def __repr__(self, N_CHAR_MAX=700):
        return super(StreamingKMeans, self._shown()).__repr__(N_CHAR_MAX)

    def _repr_html_inner(self):
        # scikit-learn's HTML repr lists get_params(); it is made from the copy.
        return super(StreamingKMeans, self._shown())._repr_html_inner()

    def _repr_mimebundle_(self, **kwargs):
        return super(StreamingKMeans, self._shown())._repr_mimebundle_(**kwargs)

    def __getstate__(self):
        """The pickled state: a lazy ``labels_`` (dask or zarr input) is left out. It is a
        graph over the input, so it would carry an in-memory input's rows into the pickle (a
        12.9 MB pickle for a fit of 12.8 MB of rows) and, for an input persisted on a
        cluster, references that no longer compute once the cluster is gone; ``predict(X)``
        gives the labels again. A deep copy keeps it (:meth:`__deepcopy__`)."""
        state = super().__getstate__()
        if dask.is_dask_collection(state.get("labels_")):
            state = {key: value for key, value in state.items() if key != "labels_"}
        return state

    def __deepcopy__(self, memo):
        """A deep copy in memory keeps a lazy ``labels_``: its graph copies as any other
        attribute, and nothing leaves the process (only a pickle leaves it out, see
        :meth:`__getstate__`). ``sklearn.base.clone`` copies the parameters alone, as ever."""
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(copy.deepcopy(super().__getstate__(), memo))
        return copied

    # ------------------------------------------------------------------ files, export, SageMaker
    def save(self, path, storage_options=None):
        """Write the fitted model to a file (``.npz`` + JSON metadata, no pickle).

        The file holds the parameters, the fitted attributes (except ``labels_``), a format
        version and the summary, so ``refit`` and ``partial_fit`` work after :meth:`load`.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file: a local path or an fsspec URL (``s3://bucket/model.npz``...).
        storage_options : dict, optional
            Options of the URL's filesystem (credentials, endpoint), as for fsspec.

        Returns
        -------
        path : str
            The path written.

        Raises
        ------
        OSError
            The file cannot be written; the message names ``path``. A missing bucket,
            container or directory raises ``DestinationNotFoundError``, a
            ``FileNotFoundError``.
        """
        from ._model_io import save_model

        return save_model(self, path, storage_options)

    @classmethod
    def load(cls, path, storage_options=None):
        """A fitted model read from a file written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            A model file: a local path or an fsspec URL.
        storage_options : dict, optional
            Options of the URL's filesystem (credentials, endpoint), as for fsspec.

        Returns
        -------
        model : StreamingKMeans
            The fitted model.

        Raises
        ------
        ModelFileError
            (a ``ValueError``) for a file of a newer format version, a truncated file, a
            file that is not a model, or a field of the wrong type, shape or range (centers
            that disagree with ``n_clusters`` or ``n_features_in_``, summary arrays of
            different lengths, NaN values, invalid parameters); the message names the file.

        Notes
        -----
        Loading creates and reads nothing besides the file: a stored ``checkpoint``
        directory is used only when the loaded model is fitted again. Centers keep the
        dtype they were fitted in (float32 or float64).
        """
        from ._model_io import load_model

        return load_model(cls, path, storage_options)

    def to_sklearn(self, dtype=None):
        """A fitted ``sklearn.cluster.KMeans`` with these centers, whose ``predict`` equals ours.

        Built with public scikit-learn API only (see ``dask_streamkm._model_io.to_sklearn``).

        Parameters
        ----------
        dtype : None, np.float32 or np.float64, default=None
            Dtype of the KMeans' centers, which is the dtype of the input it predicts (as for
            a KMeans fitted on data of that dtype). None keeps this model's dtype.

        Returns
        -------
        kmeans : sklearn.cluster.KMeans
            A fitted KMeans.

        Warns
        -----
        SklearnPrecisionWarning
            For centers far from zero for their dtype: a mean more than 32 times their
            root-mean-square spread from zero for float32 (about 7e5 times for float64).
            scikit-learn computes ``||c||^2 - 2 x.c`` in that dtype, which there can lose
            the nearest center (this model computes relative to the centers' mean). For a
            float32 model, ``to_sklearn(dtype=np.float64)``, given ``X.astype(np.float64)``,
            predicts as :meth:`predict` does.
        """
        from ._model_io import to_sklearn

        return to_sklearn(self, dtype)

    @classmethod
    def from_sagemaker(cls, hyperparameters):
        """A model configured from SageMaker k-means hyperparameters.

        See :mod:`dask_streamkm.sagemaker` for the mapping.

        Parameters
        ----------
        hyperparameters : mapping of str to str
            SageMaker k-means hyperparameters (``k`` and ``feature_dim`` required).

        Returns
        -------
        model : StreamingKMeans
            An unfitted model with the mapped parameters.

        Raises
        ------
        ValueError
            For an unknown name or an invalid value.

        Warns
        -----
        SageMakerCompatibilityWarning
            For a value with no equivalent here (it is ignored).

        Examples
        --------
        >>> from dask_streamkm import StreamingKMeans
        >>> StreamingKMeans.from_sagemaker({"k": "10", "feature_dim": "32"}).n_clusters
        10
        """
        from .sagemaker import from_sagemaker

        return from_sagemaker(cls, hyperparameters)

    def evaluate(self, X, metrics=("msd", "ssd"), sample_weight=None):
        """SageMaker's test metrics on X, exact, in one pass.

        Parameters
        ----------
        X : array-like, dask array or zarr array of shape (n_samples, n_features)
            Test rows.
        metrics : sequence of {"msd", "ssd"} or str, default=("msd", "ssd")
            Metrics to report (a JSON list string as SageMaker takes it is accepted).
        sample_weight : array-like or dask array of shape (n_samples,), default=None
            Weight of each row (same rules as :meth:`score`).

        Returns
        -------
        metrics : dict of str to float
            ``ssd``: the sum of (weighted) squared distances of the rows to their nearest
            center; ``msd``: that sum divided by the total weight (the number of rows).

        Examples
        --------
        >>> import dask.array as da
        >>> from dask_streamkm import StreamingKMeans
        >>> X = da.from_array([[1.0], [3.0], [21.0], [23.0]], chunks=2)
        >>> StreamingKMeans(n_clusters=2, random_state=0).fit(X).evaluate(X)
        {'msd': 1.0, 'ssd': 4.0}
        """
        from .sagemaker import evaluate

        return evaluate(self, X, metrics=metrics, sample_weight=sample_weight)


# ---------------------------------------------------------------------- for elbow() and others
def fitted_solve_seed(model):
    """The seed of a fitted model's final solve (what ``model.refit`` uses for any k)."""
    check_is_fitted(model, "summary_")
    return _seeds.solve_seed(model._entropy_)


def fitted_metric(model):
    """The metric a fitted model's summary and centers are for (its ``metric`` at fit time)."""
    check_is_fitted(model, "summary_")
    return getattr(model, "_metric_", "euclidean")


def as_dask_input(model, X):
    """X checked and wrapped as ``model.fit`` would (a dask array); sets the input checks'
    attributes (``n_features_in_``, ``feature_names_in_``) on ``model``."""
    return model._as_dask(X, reset=True)


# ---------------------------------------------------------------------- module helpers
def _on_device(X):
    """True for a dask array of device (cupy) chunks."""
    return is_cupy_array(X._meta)


def _weights_like(sample_weight, X):
    """The dask array ``sample_weight`` with chunks of X's array type.

    Host (numpy) weights beside device (cupy) chunks are moved to the device chunk by chunk,
    inside the tasks, onto the device of the worker that runs them.
    """
    if not _on_device(X) or not isinstance(sample_weight._meta, np.ndarray):
        return sample_weight
    xp = namespace(X._meta)
    return sample_weight.map_blocks(
        _weights_to,
        xp.__name__,
        dtype=sample_weight.dtype,
        meta=xp.empty((0,), dtype=sample_weight.dtype),
    )


def _weights_to(block, module):
    """One chunk of weights in the array namespace named ``module`` (a task)."""
    import importlib

    return importlib.import_module(module).asarray(block)


def _weight_dtype_message(dtype):
    return (
        f"sample_weight has dtype {dtype}; it should hold numbers (finite, >= 0). Convert it "
        "first, e.g. sample_weight.astype(float)."
    )


def _host_array(X, what):
    """An in-memory array of an array-API namespace other than numpy's and cupy's (such as
    array_api_strict) as a numpy array; a clear error where it cannot be read on the host."""
    try:
        return to_host(X)
    except (TypeError, ValueError, RuntimeError, BufferError) as err:
        raise TypeError(
            f"{what} is a {type(X).__module__}.{type(X).__name__} array that cannot be read "
            f"as a numpy array ({err}). Pass a numpy or cupy array, or a dask array of them."
        ) from err


def _zero_weight_batch():
    """The error for a ``partial_fit`` batch whose dask ``sample_weight`` is zero for every
    row (numpy weights are refused as a whole by ``_as_dask_weight``)."""
    return ValueError(
        "sample_weight is zero for every row of the batch; at least one row needs a positive "
        "weight. A batch of no weight adds nothing: leave it out of partial_fit."
    )


def _check_refit_rows(n_clusters, n_seen):
    """Refuse a refit for more clusters than the rows seen, as ``fit`` refuses more clusters
    than rows (fewer distinct rows than clusters only warn, as in scikit-learn)."""
    if n_clusters > n_seen:
        raise ValueError(
            f"refit(n_clusters={n_clusters}): n_samples={n_seen} should be >= "
            f"n_clusters={n_clusters}; the model has seen {n_seen} rows. Use n_clusters <= "
            f"{n_seen}, or fit (or partial_fit) more rows first."
        )


def _out_dtype(dtype):
    """Dtype of the centers and distances for input of ``dtype``: float32 stays float32."""
    return np.dtype(np.float32 if dtype == np.float32 else np.float64)


def _centers_out(centers, dtype):
    """Final centers in ``dtype``; numpy on the host unless they live on another device."""
    xp = namespace(centers)
    if xp.__name__.endswith("numpy") or isinstance(centers, np.ndarray):
        return np.asarray(centers, dtype=dtype)
    return xp.astype(centers, xp.float32 if dtype == np.float32 else xp.float64)


def _like(summary, ref):
    """``summary`` with arrays in the namespace of ``ref`` (host numpy or device)."""
    if isinstance(ref.weights, np.ndarray):
        return summary.to_numpy()
    return Summary(
        from_host(to_host(summary.weights), ref.weights),
        from_host(to_host(summary.linear_sums), ref.weights),
        from_host(to_host(summary.square_sums), ref.weights),
        summary.n_seen,
        None if summary.origin is None else from_host(to_host(summary.origin), ref.weights),
    )
