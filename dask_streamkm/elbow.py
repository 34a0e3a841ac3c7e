"""Choosing k from one pass: solve one summary for every k and find the knee of the cost curve.

The usual elbow method fits one model per k and reads the data once per k. A summary keeps
enough of the data to solve for any k up to the one it was sized for, so :func:`elbow` reads
the data once and then runs only the small final solve for each k.
"""

from __future__ import annotations

import numbers
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import _seeds, _threads
from ._pool import blas_limit
from ._runner import auto_summary_size, resolve_summary_size, solve_summary

__all__ = ["ElbowResult", "ElbowSummaryWarning", "elbow", "knee_point", "parse_k_range"]

PLOT_HINT = 'pip install "dask-streamkm[plot]"'


def plot_format(path):
    """The image format matplotlib writes for ``path`` (``png`` without a suffix).

    Raises ValueError naming the suffix and the formats matplotlib writes when it writes
    none of that name (``m.npz``), so that a plot path can be checked before any data is read.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if fmt not in formats:
        raise ValueError(
            f"{os.fspath(path)!r} ends in .{fmt}, which is not an image format matplotlib "
            f"writes; use one of {', '.join('.' + f for f in formats)} (e.g. elbow.png)."
        )
    return fmt


class ElbowSummaryWarning(UserWarning):
    """The summary of a fitted model was sized for fewer clusters than the largest k asked for."""


def knee_point(k, cost, *, log=True):
    """The knee of a decreasing cost curve: the point farthest below its chord (Kneedle).

    The cost is taken on a log scale (``log=True``), then both axes are scaled to [0, 1] (k
    from its smallest to its largest value, the cost from its smallest to its largest value),
    so a decreasing curve runs from (0, 1) to (1, 0) and its chord is ``y = 1 - x``. The knee
    is the k whose scaled point lies farthest below the chord, i.e. maximizes ``(1 - x) - y``:
    the difference curve of Kneedle (Satopaa et al., 2011) without smoothing.

    Why the log: the k-means cost falls by factors (each extra cluster of a well-separated
    mixture divides it; on one blob it shrinks like ``k ** (-2 / d)``), and on a linear scale
    the first steps dwarf the rest, which drags the knee to the smallest k. On a log scale
    the knee is where the relative gain of one more cluster drops.

    Returns None when there are fewer than three values of k, a cost is not positive (with
    ``log=True``), or no point lies below the chord (a straight or concave curve has no knee).

    Examples
    --------
    >>> knee_point([1, 2, 3, 4, 5, 6, 7, 8], [37.0, 9.5, 4.5, 2.7, 2.1, 1.7, 1.5, 1.35])
    4
    >>> knee_point([1, 2, 3], [3.0, 2.0, 1.0]) is None
    True
    """
    k = np.asarray(k, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if k.shape[0] < 3 or not np.all(np.isfinite(cost)):
        return None
    if log:
        if np.any(cost <= 0):
            return None
        cost = np.log(cost)
    order = np.argsort(k)
    k, cost = k[order], cost[order]
    k_span = k[-1] - k[0]
    c_span = np.max(cost) - np.min(cost)
    if k_span <= 0 or c_span <= 0:
        return None
    x = (k - k[0]) / k_span
    y = (cost - np.min(cost)) / c_span
    below = (1.0 - x) - y
    best = int(np.argmax(below))
    if below[best] <= 1e-9:
        return None
    return int(k[best])


def parse_k_range(text):
    """Values of k from ``"2:12"`` (both ends included), ``"2:12:2"`` or ``"2,4,8"``.

    Examples
    --------
    >>> parse_k_range("2:5")
    [2, 3, 4, 5]
    >>> parse_k_range("2:12:5")
    [2, 7, 12]
    >>> parse_k_range("3,5,8")
    [3, 5, 8]
    """
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1
            if step < 1 or stop < start:
                raise ValueError
            return list(range(start, stop + 1, step))
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ValueError(
            f"k={text!r} should be START:STOP (both included, e.g. 2:12), START:STOP:STEP "
            "(e.g. 2:20:2) or a comma-separated list (e.g. 2,4,8)."
        ) from None


def _check_k_values(k_range):
    if isinstance(k_range, str):
        k_range = parse_k_range(k_range)
    try:
        values = list(k_range)
    except TypeError:
        raise ValueError(
            f"k_range={k_range!r} should be an iterable of integers >= 1, e.g. range(2, 13)."
        ) from None
    if not values:
        raise ValueError(f"k_range={k_range!r} is empty; pass e.g. range(2, 13).")
    for k in values:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(
                f"k_range contains {k!r}; every k should be an integer >= 1, e.g. range(2, 13)."
            )
    return sorted({int(k) for k in values})


@dataclass(frozen=True, eq=False)
class ElbowResult:
    """Costs of the best k-means solution for each k, solved from one summary.

    Attributes
    ----------
    k : ndarray of int
        The values of k, ascending.
    cost_bound : ndarray of float
        For each k, the upper bound on the (weighted) sum of squared distances of all
        summarized rows to their nearest center (``inertia_`` of a model with that k).
    mean_squared_distance : ndarray of float
        ``cost_bound / total_weight``: the bound on the mean squared distance of a row to its
        center (SageMaker's ``msd``).
    seconds : ndarray of float
        Wall seconds of the final solve for each k (on a small summary the values of k are
        solved side by side, one per core, so these overlap).
    suggested_k : int or None
        The knee of ``mean_squared_distance`` by :func:`knee_point`; None if there is none.
    total_weight : float
        Total weight (number of rows, without sample weights) in the summary.
    summary_seconds : float
        Seconds of the fit that built the summary (the one read of the data, plus that fit's
        own solve for the largest k); 0 when a fitted model or a Summary was given.
    centers : dict of int to ndarray
        The centers found for each k.
    model : StreamingKMeans or None
        The fitted model whose summary was solved (built here when X was given); call
        ``model.refit(n_clusters=k)`` for a model with another k, without reading the data.
    """

    k: np.ndarray
    cost_bound: np.ndarray
    mean_squared_distance: np.ndarray
    seconds: np.ndarray
    suggested_k: int | None
    total_weight: float
    summary_seconds: float
    centers: dict = field(repr=False)
    model: object = field(default=None, repr=False)

    @property
    def table(self):
        """The table as a dict of columns: k, cost_bound, mean_squared_distance, seconds."""
        return {
            "k": self.k.tolist(),
            "cost_bound": self.cost_bound.tolist(),
            "mean_squared_distance": self.mean_squared_distance.tolist(),
            "seconds": self.seconds.tolist(),
        }

    def to_pandas(self):
        """The table as a pandas DataFrame indexed by k (pandas needed)."""
        import pandas as pd

        table = self.table
        return pd.DataFrame(table).set_index("k")

    def to_string(self):
        """The table as aligned text, the suggested k marked with ``<- knee``."""
        lines = [f"{'k':>4}  {'cost bound':>14}  {'mean sq. distance':>17}  {'seconds':>8}"]
        for k, bound, msd, sec in zip(
            self.k, self.cost_bound, self.mean_squared_distance, self.seconds, strict=True
        ):
            mark = "  <- knee" if self.suggested_k == int(k) else ""
            lines.append(f"{int(k):>4}  {bound:>14.6g}  {msd:>17.6g}  {sec:>8.3f}{mark}")
        lines.append(
            f"summary: {self.total_weight:.6g} rows (total weight), built in "
            f"{self.summary_seconds:.2f} s; suggested k = {self.suggested_k} "
            "(knee: farthest point below the chord of the scaled log-cost curve)"
        )
        return "\n".join(lines)

    def __str__(self):
        return self.to_string()

    def plot(self, path=None, *, ax=None, title=None, storage_options=None):
        """Plot the mean squared distance against k, the suggested k marked.

        Parameters
        ----------
        path : str or path-like, optional
            Where to save the figure (the format follows the suffix, e.g. ``.png``).
        ax : matplotlib Axes, optional
            Axes to draw on; a new figure is made when None.
        title : str, optional
            Title of the axes.
        storage_options : dict, optional
            Options of the fsspec filesystem when ``path`` is a URL (``s3://...``).

        Returns
        -------
        matplotlib.axes.Axes

        Raises
        ------
        ImportError
            If matplotlib is missing (``pip install "dask-streamkm[plot]"``).
        ValueError
            If the suffix of ``path`` is not an image format matplotlib writes.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError(
                f"ElbowResult.plot needs matplotlib, which is not installed: {PLOT_HINT}"
            ) from exc
        if ax is None:
            fig = Figure(figsize=(6.0, 4.0), layout="constrained")
            ax = fig.add_subplot()
        ax.plot(self.k, self.mean_squared_distance, "o-", color="C0", label="mean squared distance")
        if self.suggested_k is not None:
            i = int(np.flatnonzero(self.k == self.suggested_k)[0])
            ax.axvline(self.suggested_k, color="C3", linestyle="--", linewidth=1)
            ax.plot(
                [self.suggested_k],
                [self.mean_squared_distance[i]],
                "o",
                color="C3",
                markersize=10,
                label=f"suggested k = {self.suggested_k}",
            )
        ax.set_xlabel("k (number of clusters)")
        ax.set_ylabel("mean squared distance to the nearest center")
        ax.set_xticks(self.k)
        ax.set_title(title or "Elbow from one pass over the data")
        ax.grid(alpha=0.3)
        ax.legend()
        if path is not None:
            import io

            from ._location import write_bytes

            buffer = io.BytesIO()
            ax.figure.savefig(buffer, dpi=120, format=plot_format(path))
            write_bytes(os.fspath(path), buffer.getvalue(), storage_options)
        return ax


def _only_with_data(params, sample_weight, what):
    given = sorted(params) + (["sample_weight"] if sample_weight is not None else [])
    if given:
        raise ValueError(
            f"{given} apply only when elbow() is given data to summarize; {what} is solved as "
            "it is. Drop them, or pass the data instead."
        )


def _leaf_size(model):
    return resolve_summary_size(model.n_clusters, model.summary_size)


#: Restarts per k when elbow() builds its own summary (see the n_init parameter).
SCAN_N_INIT = 5


def elbow(
    X_or_model,
    k_range,
    *,
    sample_weight=None,
    random_state=None,
    n_init=None,
    max_iter=None,
    tol=None,
    summary_size="auto",
    metric=None,
    **params,
):
    """Costs for every k from one read of the data: the elbow method without refitting.

    One summary is built (or taken from a fitted model) and the final weighted k-means++ +
    Lloyd is solved on it for every k in ``k_range``. The suggested k is the knee of the
    mean-squared-distance curve (:func:`knee_point`).

    Parameters
    ----------
    X_or_model : array-like, dask array, zarr array, fitted StreamingKMeans or Summary
        Data to summarize once, or a fitted model whose ``summary_`` is solved (the model is
        not changed), or a :class:`~dask_streamkm.Summary`.
    k_range : iterable of int or str
        Values of k, e.g. ``range(2, 13)`` or ``"2:12"`` (both ends included).
    sample_weight : array-like or dask array of shape (n_samples,), optional
        Weights of the rows of X (only with data).
    random_state : int, RandomState instance or None, default=None
        Seed of the summary and of every solve. For a fitted model, None uses the model's
        own seed, so each k gives what ``model.refit(n_clusters=k)`` would.
    n_init, max_iter, tol : int, int, float, optional
        Restarts, Lloyd iterations and tolerance of each final solve; None means the fitted
        model's values, or ``SCAN_N_INIT = 5``, 300 and 1e-4 otherwise. Five restarts (each
        polished by the swap search) keep the scan over k cheap: the curve needs each k's cost,
        not its last fraction of a percent. For the model at the chosen k, solve again with
        full restarts: ``result.model.refit(n_clusters=k, n_init=10)`` (no read of the data).
    summary_size : int or "auto", default="auto"
        Groups per chunk of the summary built from X. ``"auto"`` sizes it for the LARGEST k:
        ``max(5 k, 256, min(chunk rows / 32, 100 k))`` groups per chunk for ``k = max(k_range)``
        (what ``StreamingKMeans(n_clusters=
        max(k_range))`` uses), so every k in the range is solved from a summary at least as
        large as a separate fit at that k would build; the merged summary keeps the union of
        the chunks' groups up to the merge budget.
    metric : {"euclidean", "cosine"} or None, default=None
        The metric of the summary and of every solve (see ``StreamingKMeans(metric=...)``);
        the costs are then sums of ``1 - cos`` for "cosine". None: a fitted model's own
        metric, or "euclidean" for data and a Summary. A fitted model solved with another
        metric than its own is refused (its summary holds the rows of its metric).
    **params
        Other :class:`~dask_streamkm.StreamingKMeans` parameters for the summary
        (``method``, ``mini_batch_size``, ``split_every``, ``merge_budget``).

    Returns
    -------
    ElbowResult

    Warns
    -----
    ElbowSummaryWarning
        When a fitted model's summary was sized for fewer clusters than ``max(k_range)``.

    See Also
    --------
    StreamingKMeans.refit : solve a fitted model's summary again for another k.

    Examples
    --------
    >>> from dask_streamkm import elbow
    >>> from dask_streamkm.datasets import make_mixture
    >>> X = make_mixture(20_000, 2, 4, chunks=5_000, random_state=0)
    >>> result = elbow(X, range(1, 9), random_state=0)
    >>> result.k.tolist()
    [1, 2, 3, 4, 5, 6, 7, 8]
    >>> bool(result.cost_bound[0] > result.cost_bound[-1])
    True
    """
    from .estimator import (
        METRICS,
        StreamingKMeans,
        as_dask_input,
        fitted_metric,
        fitted_solve_seed,
        is_lazy_input,
    )
    from .summary import Summary

    ks = _check_k_values(k_range)
    if isinstance(X_or_model, StreamingKMeans) and hasattr(X_or_model, "summary_"):
        own = fitted_metric(X_or_model)
        if metric is not None and metric != own:
            raise ValueError(
                f"elbow(metric={metric!r}) with a model fitted with metric={own!r}: "
                "its summary holds the rows of that metric. Pass the data X with "
                f"metric={metric!r} instead of the model."
            )
        metric = own
    metric = "euclidean" if metric is None else metric
    if not isinstance(metric, str) or metric not in METRICS:
        raise ValueError(f"metric={metric!r} should be one of {METRICS} (or None).")
    if not isinstance(X_or_model, StreamingKMeans):
        n_init = SCAN_N_INIT if n_init is None else n_init
        max_iter = 300 if max_iter is None else max_iter
        tol = 1e-4 if tol is None else tol
    k_max = ks[-1]
    summary_seconds = 0.0
    fitted_model, fitted_solve_s = None, 0.0
    model = None
    if isinstance(X_or_model, Summary):
        _only_with_data(params, sample_weight, "a Summary")
        summary = X_or_model
        seed = _seeds.solve_seed(_seeds.entropy_from(random_state))
    elif isinstance(X_or_model, StreamingKMeans):
        model = X_or_model
        if not hasattr(model, "summary_"):
            raise ValueError(
                "elbow() was given an unfitted StreamingKMeans; fit it first, or pass the data "
                "X to elbow() to build a summary sized for the largest k."
            )
        _only_with_data(params, sample_weight, "a fitted model's summary")
        n_init = model.n_init if n_init is None else n_init
        max_iter = model.max_iter if max_iter is None else max_iter
        tol = model.tol if tol is None else tol
        summary = model.summary_
        seed = (
            fitted_solve_seed(model)
            if random_state is None
            else _seeds.solve_seed(_seeds.entropy_from(random_state))
        )
        have, need = _leaf_size(model), auto_summary_size(k_max)
        if have < need:
            warnings.warn(
                f"The model's summary has {have} groups per chunk (summary_size="
                f"{model.summary_size!r} with n_clusters={model.n_clusters}), fewer than the "
                f"{need} that summary_size='auto' gives for k={k_max}; costs for the larger k "
                f"may be too high. Fit StreamingKMeans(n_clusters={k_max}) or pass the data "
                "to elbow() instead of the model.",
                ElbowSummaryWarning,
                stacklevel=2,
            )
    else:
        model = StreamingKMeans(
            n_clusters=k_max,
            summary_size=summary_size,
            n_init=n_init,
            max_iter=max_iter,
            tol=tol,
            random_state=random_state,
            metric=metric,
            **params,
        )
        X = X_or_model
        if not is_lazy_input(X):
            # As a dask array, fit leaves labels_ lazy instead of computing them (a second pass).
            X = as_dask_input(model, X)
        t0 = time.perf_counter()
        model.fit(X, sample_weight=sample_weight)
        summary_seconds = time.perf_counter() - t0
        summary = model.summary_
        seed = fitted_solve_seed(model)
        fitted_model, fitted_solve_s = model, model.solve_seconds_
    if summary.n_groups < k_max:
        raise ValueError(
            f"max(k_range)={k_max} is larger than the {summary.n_groups} groups of the summary "
            f"(distinct rows of positive weight); use k <= {summary.n_groups}."
        )
    total_weight = summary.total_weight
    if total_weight <= 0:
        raise ValueError("The summary has zero total weight; there is nothing to cluster.")
    bounds, seconds, centers = [], [], {}
    # The fit above already solved the largest k with this seed and these settings.
    solved_here = (
        {}
        if fitted_model is None
        else {k_max: (fitted_model.cluster_centers_, float(fitted_model.inertia_), fitted_solve_s)}
    )

    def solve(k):
        if k in solved_here:
            return solved_here[k]
        t0 = time.perf_counter()
        c, bound, _ = solve_summary(
            summary, k, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed, metric=metric
        )
        return c, float(bound), time.perf_counter() - t0

    blas_threads = _threads.solve_threads(summary)
    # Small summaries: one BLAS thread per solve and the values of k solved side by side on
    # the cores; large ones: one k at a time, each solve using threaded BLAS.
    workers = min(len(ks), os.cpu_count() or 1) if blas_threads == 1 else 1
    with blas_limit(blas_threads):
        if workers > 1:
            # Largest k first (they take longest), so the cores finish together.
            with ThreadPoolExecutor(workers) as pool:
                by_k = dict(zip(ks[::-1], pool.map(solve, ks[::-1]), strict=True))
            solved = [by_k[k] for k in ks]
        else:
            solved = [solve(k) for k in ks]
    for k, (c, bound, sec) in zip(ks, solved, strict=True):
        centers[k] = c
        bounds.append(bound)
        seconds.append(sec)
    k_arr = np.asarray(ks, dtype=np.int64)
    bounds = np.asarray(bounds, dtype=np.float64)
    msd = bounds / total_weight
    return ElbowResult(
        k=k_arr,
        cost_bound=bounds,
        mean_squared_distance=msd,
        seconds=np.asarray(seconds, dtype=np.float64),
        suggested_k=knee_point(k_arr, msd),
        total_weight=float(total_weight),
        summary_seconds=float(summary_seconds),
        centers=centers,
        model=model,
    )
