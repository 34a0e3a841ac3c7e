"""Distances on in-memory blocks: norms, nearest centers, the dtype they need, work buffers.

Pure array maths, the first floor of the kernels (seeding, Lloyd and the refinement's kernels
build on it): every function takes its namespace from its inputs (numpy, cupy,
array_api_strict), never imports dask, and assumes validated input: 2-D finite float arrays,
non-negative weights. The one blocked-GEMM loop is :func:`_score_blocks`; the distances are
taken on coordinates relative to the centers' mean (:func:`_shifted`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import weakref

import numpy as np

from ._array import as_weights, clip_negative, device, is_cupy, is_numpy, namespace

#: Elements of the (rows x centers) distance block kept at once (about 1 MiB of float32).
BLOCK_ELEMENTS = 1 << 18
#: The same on a GPU (128 MiB of float32): large blocks keep the GEMMs big and the launches few.
DEVICE_BLOCK_ELEMENTS = 1 << 25
#: Elements of the rows shifted and augmented at once by the blocked loop (2 MiB of float32:
#: 16,384 rows of 32 features, 668 of 784), and the most rows of a host block. A slab much
#: larger than this is fresh memory on every call (page faults): it cost MNIST's leaves about
#: a third of their time, and its three nearest of 10 centers half.
SLAB_ELEMENTS = 1 << 19
#: Values (rows x features) of a float64 row block made at a time: the refinement's group sums
#: and distances (:mod:`._refine_kernels`) and Lloyd's variance (:mod:`._lloyd`).
GROUP_SUM_ELEMENTS = 1 << 18


class Workspace:
    """Work buffers of one task, reused by the kernels it calls (host numpy arrays only).

    A task makes one and passes it down (``work=``); each kernel asks it for a named buffer
    of a shape and gets a view of the one array kept under that name, made (or made larger)
    only when too small. Where glibc's mmap threshold is fixed (distributed's nanny sets
    ``MALLOC_TRIM_THRESHOLD_`` for every worker), every large temporary is a fresh mmap whose
    pages fault in anew; the buffers fault in once per task, and once per thread for those
    of :func:`thread_workspace`. A buffer is scratch: valid until the next request under its
    name. ``buffers`` (a dict) and ``prefix`` are for :func:`thread_workspace`: buffers kept
    in that dict under ``prefix + name``, at most :data:`KEEP_BYTES` of them in all (other
    prefixes' buffers are let go first; a request that still does not fit is made fresh
    and not kept).
    """

    def __init__(self, buffers=None, prefix="", lock=None):
        self._buffers = {} if buffers is None else buffers
        self._prefix = prefix
        self._bounded = buffers is not None
        # A thread's kept buffers may be let go from another thread
        # (:func:`release_thread_workspaces`): their dict is read and changed under its lock.
        self._lock = contextlib.nullcontext() if lock is None else lock

    def take(self, name, shape, dtype):
        """An uninitialized array of ``shape`` and ``dtype``, a view of the buffer ``name``.

        A buffer is bytes, viewed in the dtype asked for: arrays of different dtypes whose
        lives do not overlap can share one name, and a kernel called on float32 rows and
        on float64 centers in turn keeps one buffer, the larger."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        key = self._prefix + name
        with self._lock:
            buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < nbytes:
            # Grown with an eighth to spare: the next chunk's arrays, a little larger (the
            # leaf's padded slots vary), then fit without making it again. (numpy aligns
            # new arrays for every dtype.)
            grow = buf is not None
            buf = np.empty(nbytes + nbytes // 8 if grow else nbytes, dtype=np.uint8)
            with self._lock:
                self._buffers.pop(key, None)
                self._keep(key, buf)
        return buf[:nbytes].view(dtype).reshape(shape)

    def _keep(self, key, buf):
        """Keep ``buf`` under ``key``; bounded: within :data:`KEEP_BYTES`, letting other
        prefixes' buffers go first (oldest first). A buffer let go stays valid for whoever
        holds it; it is only no longer kept."""
        if not self._bounded:
            self._buffers[key] = buf
            return
        kept = sum(b.nbytes for b in self._buffers.values())
        for other in [k for k in self._buffers if not k.startswith(self._prefix)]:
            if kept + buf.nbytes <= KEEP_BYTES:
                break
            kept -= self._buffers.pop(other).nbytes
        if kept + buf.nbytes <= KEEP_BYTES:
            self._buffers[key] = buf

    def zeros(self, name, shape, dtype):
        """:meth:`take` filled with zeros."""
        out = self.take(name, shape, dtype)
        out.fill(0)
        return out


def arange_into(out):
    """``out`` (a 1-D int64 array) filled with ``0, 1, 2, ...`` (no temporary)."""
    out.fill(1)
    if out.shape[0]:
        out[0] = 0
    return np.cumsum(out, out=out)


#: Bytes of work buffers one thread keeps between its tasks (:func:`thread_workspace`) at most:
#: a tree leaf of 100,000 x 32 float32 (12.8 MB) keeps about 40 MB (its padded copy, index
#: arrays, weights and blocks), a refinement leaf about 46 MB (its float64 rows); the per-row
#: arrays of chunks above about 300,000 rows are partly made fresh again.
KEEP_BYTES = 128 << 20

_THREAD = threading.local()


class _ThreadBuffers:
    """One thread's kept work buffers (``buffers``, a dict), tracked weakly by
    :data:`_ALL_THREAD_BUFFERS` (gone with its thread)."""

    __slots__ = ("buffers", "kind", "lock", "__weakref__")

    def __init__(self):
        self.buffers = {}
        self.kind = None
        self.lock = threading.Lock()


#: Every live thread's kept buffers, for :func:`release_thread_workspaces` (added to and
#: listed under :data:`_ALL_THREAD_BUFFERS_LOCK`).
_ALL_THREAD_BUFFERS = weakref.WeakSet()
_ALL_THREAD_BUFFERS_LOCK = threading.Lock()


def thread_workspace(prefix):
    """A :class:`Workspace` whose buffers stay with the calling thread for its next tasks
    (host numpy arrays only), named under ``prefix`` (one prefix per kernel that takes one,
    so that nested kernels never share a buffer).

    The next task of the same thread (a dask worker thread runs one task at a time) finds
    the pages already mapped: with glibc's mmap threshold fixed (distributed's nanny sets
    ``MALLOC_TRIM_THRESHOLD_`` for every worker) each large temporary of a task was a fresh
    mmap whose pages faulted in anew, which made a leaf about 1.3x slower there. A thread
    keeps at most :data:`KEEP_BYTES`, and only those of the kind of task it runs
    (:func:`begin_task`): part of that task's working memory, which the memory guard's
    estimate (:func:`._memory.task_peak_bytes`) covers, and the few MiB of distance blocks
    of merges. Nothing a task returns may be a view of one.
    """
    kept = _thread_kept()
    return Workspace(kept.buffers, prefix + ":", kept.lock)


def _thread_kept():
    """This thread's :class:`_ThreadBuffers` (made on first use)."""
    kept = getattr(_THREAD, "kept", None)
    if kept is None:
        kept = _THREAD.kept = _ThreadBuffers()
        with _ALL_THREAD_BUFFERS_LOCK:
            _ALL_THREAD_BUFFERS.add(kept)
    return kept


def begin_task(kind):
    """Start a task of ``kind`` ("leaf", "refine", "predict") in this thread: the buffers the
    thread keeps from tasks of another kind are let go, so that what a thread keeps is the
    working memory of the task it runs (the memory guard's estimate of one task covers it)
    and tasks of one kind, a pass of many chunks, reuse theirs."""
    kept = _thread_kept()
    if kept.kind != kind:
        with kept.lock:
            kept.buffers.clear()
        kept.kind = kind


def release_thread_workspaces():
    """Let go of the work buffers every thread of this process keeps (:func:`thread_workspace`):
    called when a pass ends (on a distributed cluster in every worker), so that idle threads
    hold no memory between fits. A task still running keeps what it holds (its arrays stay
    valid; they are only no longer kept). Safe while other threads run tasks (another fit):
    each thread's buffers change under their lock."""
    with _ALL_THREAD_BUFFERS_LOCK:
        everyone = list(_ALL_THREAD_BUFFERS)
    for kept in everyone:
        with kept.lock:
            kept.buffers.clear()


def row_norms_sq(X):
    """Squared Euclidean norm of each row of a 2-D array, in X's dtype."""
    xp = namespace(X)
    if is_numpy(xp):  # no (n, d) temporary
        return np.einsum("ij,ij->i", X, X)
    return xp.sum(X * X, axis=1)


def unit_rows(X):
    """Rows of X scaled to unit Euclidean length, and a mask of the rows of zero norm.

    Each row is first divided by its largest absolute value, so that rows of tiny or huge
    norm neither underflow nor overflow; rows of zero norm stay zero (callers decide what
    they mean). Returns ``(unit, zero)``: X's dtype, and bool (n,).
    """
    xp = namespace(X)
    scale = xp.max(xp.abs(X), axis=1)
    zero = scale <= 0
    scaled = X / xp.where(zero, 1.0, scale)[:, None]
    norms = xp.sqrt(row_norms_sq(scaled))
    return scaled / xp.where(zero, 1.0, norms)[:, None], zero


def unit_centers(centers, previous):
    """``centers`` scaled to unit length; a center of zero norm keeps its ``previous`` row.

    The center update of spherical k-means (the direction of a cluster's weighted sum).
    Precondition: both are (k, d) arrays of one dtype.
    """
    xp = namespace(centers)
    unit, zero = unit_rows(centers)
    return xp.where(zero[:, None], previous, unit)


def cosine_distances(X, centers):
    """``1 - cos`` of each row of X to every center, in [0, 2] (small inputs or one block).

    Precondition: unit rows and unit centers of X's dtype; then ``1 - x.c`` is the cosine
    distance, and ``||x - c||^2 = 2 (1 - x.c)``.
    """
    xp = namespace(X, centers)
    return xp.clip(1.0 - xp.matmul(X, centers.T), 0.0, 2.0)


def block_rows(n_centers: int, n_rows: int, elements: int = BLOCK_ELEMENTS) -> int:
    """Rows per distance block so that the block stays cache-sized (``elements`` at most)."""
    return int(max(256, min(n_rows, elements // max(int(n_centers), 1))))


def sq_distances(X, centers, x_sq=None, centers_sq=None, out=None):
    """Full (n, m) squared distances ||x||^2 - 2 x.c + ||c||^2, clipped at 0 (small inputs only).

    Without ``x_sq`` the distances are computed on coordinates shifted to the centers' mean
    (see :func:`_shifted`), so data far from the origin keeps its precision; ``x_sq`` (and
    ``centers_sq``) are for callers whose rows are already centered. ``out``: an (n, m)
    numpy array to write them into (the same numbers) when its dtype is the result's and the
    product's; use the returned array.
    """
    xp = namespace(X, centers)
    if x_sq is None:
        X, centers = _shifted(X, centers)
        x_sq, centers_sq = row_norms_sq(X), None
    if centers_sq is None:
        centers_sq = row_norms_sq(centers)
    if is_numpy(xp):  # the same arithmetic in place: one temporary, not four
        dtype = np.result_type(X, centers, x_sq, centers_sq)
        fits = out is not None and out.dtype == dtype == np.result_type(X, centers)
        d = np.matmul(X, centers.T, out=out if fits else None)
        d = d.astype(dtype, copy=False)
        d *= -2.0
        d += x_sq[:, None]
        d += centers_sq[None, :]
        return clip_negative(d)
    d = x_sq[:, None] - 2.0 * xp.matmul(X, centers.T) + centers_sq[None, :]
    return xp.maximum(d, 0.0)


#: Entries of ``sq_distances`` at most this many ulps of ``||x||^2 + ||c||^2`` (relative to the
#: centers' mean) are computed again as ``sum((x - c)^2)`` by :func:`transform_sq_distances`:
#: the expansion's cancellation error is a few ulps of that scale.
EXACT_BELOW_ULPS = 64


def transform_sq_distances(X, centers):
    """Squared distances of the rows of X to every center, as ``transform`` reports them.

    In the common float dtype of X and the centers (float32 only when both are, as
    scikit-learn's ``euclidean_distances``). The expansion ``||x||^2 - 2 x.c + ||c||^2``
    (:func:`sq_distances`) loses a few ulps of ``||x||^2 + ||c||^2`` to cancellation, so a
    row equal to a center came out as 1e-8 rather than 0; the entries below
    :data:`EXACT_BELOW_ULPS` ulps of that scale are computed again from the differences,
    which is exactly 0 for equal rows. Small input only (an (n, m) result).
    """
    xp = namespace(X, centers)
    single = X.dtype == xp.float32 and centers.dtype == xp.float32
    dtype = xp.float32 if single else xp.float64
    X, centers = _shifted(xp.astype(X, dtype), xp.astype(centers, dtype))
    x_sq, c_sq = row_norms_sq(X), row_norms_sq(centers)
    d = sq_distances(X, centers, x_sq, c_sq)
    near = d <= EXACT_BELOW_ULPS * float(xp.finfo(dtype).eps) * (x_sq[:, None] + c_sq[None, :])
    rows, cols = xp.nonzero(near)
    if not rows.shape[0]:
        return d
    diff = xp.take(X, rows, axis=0) - xp.take(centers, cols, axis=0)
    exact = xp.astype(xp.sum(diff * diff, axis=1), d.dtype)
    if is_numpy(xp) or is_cupy(xp):
        d[rows, cols] = exact
        return d
    # Namespaces without integer-array assignment: the exact values scattered through a
    # one-hot product (the near entries are few).
    at_row = xp.astype(rows[None, :] == xp.arange(X.shape[0])[:, None], dtype)
    at_col = xp.astype(cols[:, None] == xp.arange(centers.shape[0])[None, :], dtype)
    scattered = xp.matmul(at_row * exact[None, :], at_col)
    hit = xp.matmul(at_row, at_col) > 0
    return xp.where(hit, scattered, d)


#: Host centers of at most this many values have their :func:`_shifted_centers` kept for
#: the next call of the same thread on the same values (a stream's fold and labels each ask
#: for the centers of the last call again).
SHIFTED_CACHE_VALUES = 1 << 16


def _shifted_centers(centers, dtype):
    """The centers' mean rounded to ``dtype`` (the origin) and the centers relative to it
    (:func:`_shift_centers`); on the host, for centers of at most
    :data:`SHIFTED_CACHE_VALUES` values, the last result of this thread is given again
    (read-only) for equal centers and ``dtype``: the same numbers, without the inner half's
    partition at every small call (0.1 ms of a 4,096-row fold's 5 at k=100)."""
    if not isinstance(centers, np.ndarray) or centers.size > SHIFTED_CACHE_VALUES:
        return _shift_centers(centers, dtype)
    key = (centers.dtype, np.dtype(dtype), centers.shape)
    last = getattr(_THREAD, "shifted", None)
    if last is not None and last[0] == key and np.array_equal(last[1], centers):
        return last[2]
    out = _shift_centers(centers, dtype)
    for array in out:
        array.flags.writeable = False
    _THREAD.shifted = (key, centers.copy(), out)
    return out


def _shift_centers(centers, dtype):
    """The centers' mean rounded to ``dtype`` (the origin) and the centers relative to it.

    The mean, unless a few centers far from the others pulled it away from them for the
    precision of ``dtype`` (:func:`bulk_origin`): one center on an outlier 1e5 away from
    rows of unit spread put the mean so far from the other centers that the expansion's
    cancellation, about ``eps * ||x - origin||^2``, swamped the distances of every other row
    (float32 rows: a third of them given the wrong center). The centers are shifted in
    float64 and rounded to ``dtype`` after the shift.
    """
    xp = namespace(centers)
    c64 = xp.astype(centers, xp.float64)
    origin = xp.astype(bulk_origin(c64, xp.mean(c64, axis=0), dtype=dtype), dtype)
    return origin, xp.astype(c64 - xp.astype(origin, xp.float64), dtype)


def assigned_sq_distances(X, centers, labels, out=None):
    """``||x - c_label||^2`` of each row of X to its center ``labels`` (float64 values; on
    the host taken in float32 when X and the centers both are), from the differences (no
    expansion, so no cancellation: what a sum of distances such as ``score`` needs, whose
    rows far from every other center lose digits in the expansion), a row block at a time.
    ``out``: a float64 (n,) array to write them into."""
    xp = namespace(X, centers)
    n = X.shape[0]
    if out is None:
        out = xp.empty((n,), dtype=xp.float64, device=device(X))
    step = block_rows(1, n, GROUP_SUM_ELEMENTS // max(X.shape[1], 1))
    if is_numpy(xp):  # in a kept buffer: one gather, one subtraction, one product per block
        # float32 rows and centers in float32, as scikit-learn's inertia: the differences of
        # a row and its center are exact there, their squares to float32's precision.
        dtype = np.result_type(X.dtype, centers.dtype)
        c = np.asarray(centers, dtype=dtype)
        buf = thread_workspace("distances").take("assigned", (min(step, n), X.shape[1]), dtype)
        for start in range(0, n, step):
            stop = min(n, start + step)
            # mode="clip" (the labels are valid): "raise" buffers ``out`` in a temporary.
            diff = np.take(c, labels[start:stop], axis=0, out=buf[: stop - start], mode="clip")
            np.subtract(X[start:stop], diff, out=diff)
            np.einsum("ij,ij->i", diff, diff, out=out[start:stop])
        return out
    c64 = xp.astype(centers, xp.float64)
    for start in range(0, n, step):
        stop = min(n, start + step)
        diff = xp.astype(X[start:stop, ...], xp.float64) - xp.take(c64, labels[start:stop], axis=0)
        out[start:stop] = xp.sum(diff * diff, axis=1)
    return out


def _shifted(X, centers):
    """X and the centers (in X's dtype) relative to the centers' mean.

    The distance expansion ``||x||^2 - 2 x.c + ||c||^2`` loses about ``eps * ||x||^2`` to
    cancellation, which for float32 rows far from the origin (1e5 away, clusters 1 wide)
    is larger than the distances themselves. Relative to an origin among the centers the
    norms are of the size of the data's spread. X is shifted in its own dtype, by an origin
    of that dtype, so that the difference of two close numbers is exact.
    """
    origin, centers = _shifted_centers(centers, X.dtype)
    return X - origin, centers


#: The squared extent of the values (the largest squared distance between them) must stay
#: below a dtype's largest value over this factor: the expansion ``||x||^2 - 2 x.c + ||c||^2``
#: on coordinates relative to a point among them reaches about 4 x the squared extent.
OVERFLOW_MARGIN = 16.0


def value_range(X):
    """Smallest and largest value of X as host floats (NaN or inf in X shows in them)."""
    xp = namespace(X)
    return float(xp.min(X)), float(xp.max(X))


def squared_extent(lo, hi):
    """Squared diagonal of the box between the per-column arrays ``lo`` and ``hi``.

    A host float (inf when float64 overflows), computed on values scaled by their largest
    magnitude, so that nothing overflows on the way and no warning is raised.
    """
    xp = namespace(lo, hi)
    lo, hi = xp.astype(lo, xp.float64), xp.astype(hi, xp.float64)
    scale = float(xp.max(xp.maximum(xp.abs(lo), xp.abs(hi)))) if lo.shape[0] else 0.0
    if scale == 0.0:
        return 0.0
    ratio = float(xp.sum((hi / scale - lo / scale) ** 2))
    return ratio * scale * scale


def _fitting_dtype(xp, dtype, extent, weight):
    """:func:`distance_dtype` for a squared extent (a host float)."""
    weighted = extent * max(1.0, float(1.0 if weight is None else weight))
    if not weighted * OVERFLOW_MARGIN <= float(xp.finfo(xp.float64).max):
        return None
    info = xp.finfo(dtype)
    if extent * OVERFLOW_MARGIN <= float(info.max) and (
        extent == 0.0
        or dtype == xp.float64
        or extent >= float(info.smallest_normal) / float(info.eps)
    ):
        return dtype
    return xp.float64


def distance_dtype(X, centers=None, bounds=None, dtype=None, weight=None):
    """The float dtype in which the distance kernels handle the rows of X (and ``centers``).

    ``dtype`` (default X's) when every squared distance between values in the bounding box of
    the rows and the centers is a finite number of it (with :data:`OVERFLOW_MARGIN`) and, for
    float32, a normal one at its precision; float64 for float32 values whose squared
    distances would overflow or underflow float32 (exact: float64 holds their squares); None
    when float64 overflows too, or when ``weight`` (the rows' total weight) times the squared
    extent does (the float64 sums of weighted squares). ``bounds`` are X's
    :func:`value_range` when already known.

    The box is first the cube of X's smallest and largest value (two fast reductions); only
    when that says anything but ``dtype`` are the per-column ranges read (one more pass).
    """
    xp = namespace(X)
    dtype = X.dtype if dtype is None else dtype
    lo, hi = value_range(X) if bounds is None else bounds
    has_centers = centers is not None and centers.shape[0] > 0
    if has_centers:
        lo, hi = min(lo, float(xp.min(centers))), max(hi, float(xp.max(centers)))
    span = hi - lo  # host floats: inf on overflow, no warning
    out = _fitting_dtype(xp, dtype, X.shape[1] * span * span, weight)
    if out == dtype and out is not None:
        return out
    col_lo, col_hi = xp.min(X, axis=0), xp.max(X, axis=0)
    if has_centers:
        col_lo = xp.minimum(
            xp.astype(col_lo, xp.float64), xp.astype(xp.min(centers, axis=0), xp.float64)
        )
        col_hi = xp.maximum(
            xp.astype(col_hi, xp.float64), xp.astype(xp.max(centers, axis=0), xp.float64)
        )
    return _fitting_dtype(xp, dtype, squared_extent(col_lo, col_hi), weight)


def centered_dtype(points):
    """The float dtype in which a solve handles ``points`` centered at their weighted mean:
    float32 (its GEMMs run twice as fast) unless the squared distances overflow or underflow
    it (:func:`distance_dtype`) or the bulk of the points lies far from their mean for
    float32's precision (:func:`_bulk_near_mean`), float64 otherwise.

    A few rows far away (an outlier at 1e9 among rows of unit spread) pull the mean far from
    the others: centered there, float32 kept none of their structure, and the solve put two
    centers on the outlier (2 to 4 times the cost of scikit-learn's KMeans) with a
    ConvergenceWarning about duplicate points. Precondition: float64 ``points`` (n, d).
    """
    xp = namespace(points)
    dtype = distance_dtype(points, dtype=xp.float32)
    if dtype is None:
        return xp.float64
    if dtype == xp.float32 and not _bulk_near_mean(points):
        return xp.float64
    return dtype


#: float32 distances serve a solve when their rounding, about ``4 eps32 sqrt(d)`` times the
#: typical squared norm of the centered points, is at most this fraction of the cost per unit
#: weight the solve found (:func:`float32_resolves`).
FLOAT32_RESOLUTION = 1e-2


def float32_resolves(x_sq, n_features, cost_per_weight):
    """Whether a solve's float32 distances of centered points of squared norms ``x_sq`` were
    fine enough for the cost it found, ``cost_per_weight`` (the mean squared distance of a
    point to its center): the expansion ``||x||^2 - 2 x.c + ||c||^2`` rounds by about
    ``4 eps32 sqrt(d)`` times the points' squared norms (their median: a few far points
    round only among themselves), at most :data:`FLOAT32_RESOLUTION` of that cost.

    Why: :func:`centered_dtype` keeps float32 when the bulk of the points lies near their
    mean, which two dense regions far apart defeat (the mean lies between them, far from
    every point): 30,000 float64 rows of 3 groups of unit spread in each of two regions 1e5
    apart, k=6: on one of three draws the centers split 4-2 between the regions, at 3.03
    times the cost of ``KMeans(n_init=10)`` (float32's rounding about 6,000 there, against a
    cost of 3 per row), without a warning. Over the public suite and the R tables the
    rounding is at most 3.4e-4 of the cost (GeoNames cities). A cost within float64's own
    rounding of the same expansion (rows repeated as often as the clusters ask: the cost is
    zero up to that rounding) resolves nothing finer: True."""
    xp = namespace(x_sq)
    if not cost_per_weight > 0.0 or x_sq.shape[0] == 0:
        return True
    middle = (x_sq.shape[0] - 1) // 2  # the lower median (array-API namespaces have sort)
    if is_numpy(xp):
        typical = float(np.partition(x_sq, middle)[middle])
    else:
        typical = float(xp.sort(x_sq)[middle])
    scale = 4.0 * math.sqrt(n_features) * typical
    if cost_per_weight <= float(np.finfo(np.float64).eps) * scale:
        return True  # a cost at float64's own rounding: zero, which float64 resolves no better
    return float(np.finfo(np.float32).eps) * scale <= FLOAT32_RESOLUTION * cost_per_weight


#: :func:`_bulk_near_mean` judges at most this many of the points, every ``n / this``-th one:
#: the inner half of a strided sample is the bulk as well, and the test has a margin of
#: thousands (the check took 8 ms of a stream's 40 ms warm solve on 22,000 groups).
BULK_SAMPLE_ROWS = 4096


def _bulk_near_mean(points):
    """Whether float32 keeps zero as the origin of the centered ``points``
    (:func:`bulk_origin` for float32: the mean of their inner half lies within about
    ``sqrt(1e-3 / (2 eps32))`` root-mean-square deviations of that half from zero, where
    float32's rounding of the bulk's squared distances stays below 1e-3 of their spread);
    judged on at most :data:`BULK_SAMPLE_ROWS` of them, evenly strided."""
    xp = namespace(points)
    step = -(-points.shape[0] // BULK_SAMPLE_ROWS)
    if step > 1:
        points = points[::step, ...]
    zero = xp.zeros_like(points[0, ...])
    # bulk_origin returns the origin given (zero) exactly when it keeps it.
    return bool(xp.all(bulk_origin(points, zero, dtype=xp.float32) == zero))


def _inner_half(points, center, w=None):
    """``(mean, mean squared deviation)`` (weights ``w``, or none) of the half of ``points``
    nearest ``center``, float64 arrays of the points' namespace (no value read on the host:
    no device sync); ``(center, 0)`` for fewer than two points or no weight in the half."""
    xp = namespace(points)
    zero = xp.zeros((), dtype=xp.float64, device=device(points))
    if points.shape[0] < 2:
        return center, zero
    p64 = xp.astype(points, xp.float64)
    moved = p64 - center
    r2 = xp.sum(moved * moved, axis=1)
    cut = xp.sort(r2)[(points.shape[0] - 1) // 2]
    # The half as weights (zero outside it): no boolean indexing, which not every array
    # namespace has.
    weights = xp.ones_like(r2) if w is None else xp.astype(w, xp.float64)
    weights = xp.where(r2 <= cut, weights, xp.zeros_like(weights))
    total = xp.sum(weights)
    safe = xp.where(total > 0, total, xp.ones_like(total))
    bulk = xp.sum(p64 * weights[:, None], axis=0) / safe
    dev = p64 - bulk
    spread = xp.sum(weights * xp.sum(dev * dev, axis=1)) / safe
    return xp.where(total > 0, bulk, center), xp.where(total > 0, spread, zero)


def bulk_origin(points, mean, w=None, dtype=None):
    """The origin for distances among ``points`` (float64 (d,)): their weighted ``mean``, or,
    where the inner half of them lies far from it for the precision of their dtype, the
    weighted mean of that half (:func:`_inner_half`).

    The expansion ``||x||^2 - 2 x.c + ||c||^2`` relative to an origin loses about ``eps
    ||x - origin||^2``. A few points far away (an outlier 1e12 from groups of unit spread)
    pull the mean so far from the others that this swamps their distances (Lloyd's runs then
    could not tell the groups apart); the mean of the inner half lies among them. Where the
    mean is within ``1e-3 / (2 eps)`` squared deviations of that half, the mean is kept (the
    same arithmetic as before for all other data). ``dtype``: the one the distances are
    computed in (default: the points'). Chosen on the points' device, without a sync."""
    xp = namespace(points)
    if is_numpy(xp):
        return _bulk_origin_host(points, mean, w, dtype)
    bulk, spread = _inner_half(points, mean, w)
    ratio = 1e-3 / (2.0 * float(xp.finfo(points.dtype if dtype is None else dtype).eps))
    shift = bulk - mean
    keep = (xp.sum(shift * shift) <= ratio * spread) | (spread == 0.0)
    return xp.where(keep, mean, bulk)


def _bulk_origin_host(points, mean, w, dtype):
    """:func:`bulk_origin` of host numpy ``points`` in plain numpy calls (the same numbers;
    a few microseconds for the centers of each distance call, not the 50 of the namespace's
    wrappers)."""
    if points.shape[0] < 2:
        return mean
    shift, spread = _inner_half_host(points, mean, w)
    ratio = 1e-3 / (2.0 * float(np.finfo(points.dtype if dtype is None else dtype).eps))
    return mean if spread == 0.0 or float(shift @ shift) <= ratio * spread else mean + shift


def _inner_half_host(points, center, w):
    """``(mean - center, mean squared deviation)`` of the half of host ``points`` nearest
    ``center`` (weights ``w`` or none), float64; ``(0, 0)`` for fewer than two points or no
    weight in the half. The deviation from the half's own mean is taken as that from
    ``center`` less the shift's square (one pass fewer), and again from the differences
    where that is not clearly positive (it cancels where the half lies far from
    ``center``, the case the callers look for)."""
    zero = np.zeros(points.shape[1])
    n = points.shape[0]
    if n < 2:
        return zero, 0.0
    p64 = np.asarray(points, dtype=np.float64)
    moved = p64 - center
    r2 = np.einsum("ij,ij->i", moved, moved)
    mid = (n - 1) // 2
    inner = r2 <= np.partition(r2, mid)[mid]
    weights = inner.astype(np.float64) if w is None else np.where(inner, w, 0.0)
    total = float(weights.sum())
    if not total > 0:
        return zero, 0.0
    shift = weights @ moved / total
    spread = float(weights @ r2) / total - float(shift @ shift)
    if not spread > 1e-6 * float(shift @ shift):
        dev = moved - shift
        spread = float(weights @ np.einsum("ij,ij->i", dev, dev)) / total
    return shift, spread


def _augmented(X, centers, centers_sq):
    """Rows with a trailing 1 and the transposed centers with a trailing -||c||^2 / 2.

    Their product ``x.c - ||c||^2 / 2`` is largest for the nearest center, and
    ``||x||^2 - 2 * max`` is the squared distance to it. Precondition: same dtype.
    """
    xp = namespace(X, centers)
    ones = xp.ones((X.shape[0], 1), dtype=X.dtype, device=device(X))
    X_aug = xp.concat([X, ones], axis=1)
    half_sq = -0.5 * xp.astype(centers_sq, X.dtype)
    return X_aug, xp.concat([centers, half_sq[:, None]], axis=1).T


def _block_step(n_rows, n_centers, n_features, prepared, device):
    """Rows per block of :func:`_score_blocks` (the blocks start at multiples of it)."""
    step = block_rows(n_centers, n_rows, DEVICE_BLOCK_ELEMENTS if device else BLOCK_ELEMENTS)
    if not prepared and not device:
        # Few centers make long blocks: their rows' copies stay slab-sized too (at least 256).
        step = min(step, max(256, SLAB_ELEMENTS // (n_features + 1)))
    return step


def _score_blocks(X, centers, prepared=None, work=None, rows=None):
    """Row blocks of the scores ``[x, 1] . [c, -||c||^2 / 2]`` (largest for the nearest center).

    The one blocked-GEMM loop of the kernels: yields ``(start, stop, block, x_sq)`` with
    ``block`` of shape (stop - start, m) in X's dtype, one cache-sized block at a time (never
    n x m at once), and ``x_sq`` the squared norms of the block's rows; the squared distance
    to the center of score ``s`` is ``x_sq - 2 s``. Rows and centers are taken relative to
    the centers' mean (:func:`_shifted`), one row block at a time. The row step comes from
    :func:`block_rows` with the namespace's block size (``DEVICE_BLOCK_ELEMENTS`` for cupy,
    ``BLOCK_ELEMENTS`` otherwise), chosen here only; on the host it is also at most a slab
    (:data:`SLAB_ELEMENTS`, at least 256 rows), so that few centers do not make long copies.
    With ``prepared`` (from :func:`prepared_rows`, for many calls on the same X) the rows were
    shifted and augmented once, and the centers are taken relative to that origin. On the
    host the blocks and the slabs are views of buffers of ``work`` (a :class:`Workspace`;
    default one for this call): a yielded block is valid until the next one is asked for.
    ``rows``: ``(start, stop)``, the blocks of those rows only, ``start`` a block's start (the
    same blocks, and numbers, as those rows get in the whole pass).
    """
    xp = namespace(X, centers)
    n = X.shape[0]
    first, last = (0, n) if rows is None else rows
    if prepared is None:
        origin, centers = _shifted_centers(centers, X.dtype)
    else:
        origin, rows_aug, rows_sq = prepared
        c64 = xp.astype(centers, xp.float64) - xp.astype(origin, xp.float64)
        centers = xp.astype(c64, X.dtype)
    _, centers_aug_t = _augmented(X[:0, ...], centers, row_norms_sq(centers))
    step = _block_step(n, centers.shape[0], X.shape[1], prepared is not None, is_cupy(xp))
    slab_rows = SLAB_ELEMENTS // (X.shape[1] + 1)
    host = is_numpy(xp)
    if host:  # the blocks, the slabs' rows and their norms go to work buffers (``out=``)
        work = thread_workspace("distances") if work is None else work
        block_buf = work.take("scores", (min(step, n), centers.shape[0]), X.dtype)
    if prepared is not None:
        for start in range(first, last, step):
            stop = min(start + step, last)
            if host:
                block = np.matmul(
                    rows_aug[start:stop, ...], centers_aug_t, out=block_buf[: stop - start]
                )
            else:
                block = xp.matmul(rows_aug[start:stop, ...], centers_aug_t)
            yield start, stop, block, rows_sq[start:stop]
        return
    # Fewer centers than features: a copy of the rows with a column of ones costs more than
    # subtracting the centers' half norms from the (narrower) block.
    augment = centers.shape[0] > X.shape[1]
    centers_t, half_sq = centers_aug_t[:-1, ...], centers_aug_t[-1, ...]
    # Rows are shifted and augmented a slab at a time (many blocks: with thousands of centers a
    # block is under a hundred rows, and doing it per block cost about 10 % of a fit).
    slab = max(step, slab_rows // step * step)
    if host:
        slab_n = min(slab, last - first)
        slab_buf = work.take("slab", (slab_n, X.shape[1] + augment), X.dtype)
        sq_buf = work.take("slab_sq", (slab_n,), X.dtype)
    for slab_start in range(first, last, slab):
        slab_stop = min(slab_start + slab, last)
        part = X[slab_start:slab_stop, ...]
        if host:
            width = slab_stop - slab_start
            if augment:
                rows, rows_aug = _shifted_augmented(part, origin, slab_buf[:width])
            else:
                rows = np.subtract(part, origin, out=slab_buf[:width])
            rows_sq = np.einsum("ij,ij->i", rows, rows, out=sq_buf[:width])
        else:
            if augment:
                rows, rows_aug = _shifted_augmented(part, origin)
            else:
                rows = part - origin
            rows_sq = row_norms_sq(rows)
        for start in range(slab_start, slab_stop, step):
            stop = min(start + step, slab_stop)
            a, b = start - slab_start, stop - slab_start
            if host:
                out = block_buf[: b - a]
                if augment:
                    block = np.matmul(rows_aug[a:b, ...], centers_aug_t, out=out)
                else:
                    block = np.matmul(rows[a:b, ...], centers_t, out=out)
                    block += half_sq[None, :]
            elif augment:
                block = xp.matmul(rows_aug[a:b, ...], centers_aug_t)
            else:
                block = xp.matmul(rows[a:b, ...], centers_t) + half_sq[None, :]
            yield start, stop, block, rows_sq[a:b]


def _shifted_augmented(X, origin, out=None):
    """X relative to ``origin`` (in X's dtype) and the same rows with a trailing 1:
    ``(rows, rows_aug)``, ``rows`` a view of ``rows_aug`` on numpy (one copy, shifted in
    place; into ``out``, an (n, d + 1) array of X's dtype, when given)."""
    xp = namespace(X)
    n, d = X.shape
    if is_numpy(xp):
        rows_aug = np.empty((n, d + 1), dtype=X.dtype) if out is None else out
        rows = rows_aug[:, :d]
        np.subtract(X, origin, out=rows)
        rows_aug[:, d] = 1
        return rows, rows_aug
    rows = X - origin
    ones = xp.ones((n, 1), dtype=X.dtype, device=device(X))
    return rows, xp.concat([rows, ones], axis=1)


def prepared_rows(X, origin):
    """X relative to ``origin`` (a (d,) array of X's dtype), with a trailing 1, and the squared
    norms of the shifted rows: what :func:`_score_blocks` computes per call, once."""
    rows, rows_aug = _shifted_augmented(X, origin)
    return origin, rows_aug, row_norms_sq(rows)


def nearest(X, centers, prepared=None, work=None, out=None):
    """Index of and squared distance to the nearest center for each row of X.

    One GEMM per cache-sized row block (:func:`_score_blocks`), in X's dtype, on coordinates
    relative to the centers' mean: the rows are augmented with a 1 and the centers with
    -||c||^2 / 2, so the block ``[x, 1] . [c, -||c||^2/2]`` is maximized by the nearest
    center and no other pass over the block is needed.
    ``prepared``: :func:`prepared_rows` of X, for many calls on the same rows; ``work``: the
    task's :class:`Workspace` (host). Returns (labels int64 (n,), sq_dist (n,) float64), in
    ``out`` (a pair of such arrays) when given. On the host a pass of enough rows x centers
    from the main thread, on one BLAS thread, runs its blocks in pieces side by side
    (:func:`._pool.block_pieces`; the same numbers): Lloyd's runs and D^2 rounds of a solve.
    """
    from ._pool import block_pieces, run_pieces

    xp = namespace(X, centers)
    n = X.shape[0]
    dev = device(X)
    if out is None:
        labels = xp.empty((n,), dtype=xp.int64, device=dev)
        dists = xp.empty((n,), dtype=xp.float64, device=dev)
    else:
        labels, dists = out
    if not is_numpy(xp):
        _nearest_rows(X, centers, prepared, None, labels, dists, None)
        return labels, dists
    step = _block_step(n, centers.shape[0], X.shape[1], prepared is not None, False)
    pieces = block_pieces(n, step, centers.shape[0])
    if len(pieces) == 1:
        work = thread_workspace("distances") if work is None else work
        _nearest_rows(X, centers, prepared, work, labels, dists, None)
        return labels, dists
    run_pieces(
        [
            functools.partial(_nearest_rows, X, centers, prepared, None, labels, dists, piece)
            for piece in pieces
        ]
    )
    return labels, dists


def _nearest_rows(X, centers, prepared, work, labels, dists, rows):
    """:func:`nearest` of the rows ``rows`` (``(start, stop)``, a block's start; None: all)
    into those of ``labels`` and ``dists``; on the host in ``work``, or in this thread's kept
    buffers when None."""
    xp = namespace(X, centers)
    if is_numpy(xp) and work is None:
        work = thread_workspace("distances")
    for start, stop, block, x_sq in _score_blocks(X, centers, prepared, work, rows):
        if is_numpy(xp) and x_sq.dtype == block.dtype:
            # The same numbers in work buffers (no fresh pages per block).
            lab = np.argmax(block, axis=1, out=labels[start:stop])
            best = _at(block, lab, work)
            np.multiply(best, 2.0, out=best)
            np.subtract(x_sq, best, out=best)
            dists[start:stop] = clip_negative(best)
            continue
        lab = xp.argmax(block, axis=1)
        labels[start:stop] = xp.astype(lab, xp.int64)
        # A gather at the argmax is cheaper than a second reduction over the block.
        best = x_sq - 2.0 * _at(block, lab)
        dists[start:stop] = xp.astype(xp.maximum(best, 0.0), xp.float64)


def _at(block, columns, work=None):
    """``block[i, columns[i]]`` for each row i (numpy: from the flat block, cheaper than
    ``take_along_axis``; in a buffer of ``work`` when given, valid until its next use)."""
    xp = namespace(block)
    if is_numpy(xp) and work is not None:
        r = block.shape[0]
        flat = arange_into(work.take("at_index", (r,), np.int64))
        flat *= block.shape[1]
        flat += columns
        out = work.take("at", (r,), block.dtype)
        return np.take(block.reshape(-1), flat, out=out, mode="clip")
    if is_numpy(xp):
        return block.reshape(-1)[np.arange(block.shape[0]) * block.shape[1] + columns]
    return xp.take_along_axis(block, columns[:, None], axis=1)[:, 0]


def nearest2(X, centers):
    """Nearest and second-nearest center of each row: (labels, sq_dist1, sq_dist2), float64.

    :func:`nearest_top` with two. Precondition: at least two centers.
    """
    (labels, _), (d1, d2) = nearest_top(X, centers, 2)
    return labels, d1, d2


def nearest_other(centers):
    """For each center, the index of and squared distance to its nearest OTHER center.

    Blocked and shifted like :func:`nearest` (never an m x m matrix at once).
    Precondition: m >= 2.
    """
    xp = namespace(centers)
    m = centers.shape[0]
    dev = device(centers)
    columns = xp.arange(m, device=dev)[None, :]
    labels = xp.empty((m,), dtype=xp.int64, device=dev)
    dists = xp.empty((m,), dtype=xp.float64, device=dev)
    for start, stop, block, c_sq in _score_blocks(centers, centers):
        rows = xp.arange(start, stop, device=dev)[:, None]
        block = xp.where(columns == rows, -xp.inf, block)
        labels[start:stop] = xp.astype(xp.argmax(block, axis=1), xp.int64)
        best = c_sq - 2.0 * xp.max(block, axis=1)
        dists[start:stop] = xp.astype(xp.maximum(best, 0.0), xp.float64)
    return labels, dists


def cosine_cost(X, centers, labels, sample_weight=None):
    """``sum w (1 - x.c)`` of the rows of X to the unit center of their label (at least 0).

    For the centroid x of a group of unit vectors of weight W and sum S this is the group's
    exact cosine cost ``W - S.c``. Precondition: unit centers (float64), X float64.
    """
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    dots = xp.sum(X * xp.take(centers, labels, axis=0), axis=1)
    return max(float(xp.sum(w) - xp.sum(w * dots)), 0.0)


def nearest_top(X, centers, count, work=None):
    """The ``count`` nearest centers of each row, nearest first: ``(labels, sq_dists)``, each
    a list of ``count`` (n,) arrays (int64, float64). As :func:`nearest` (one GEMM per row
    block, relative to the centers' mean), with the best scores masked in turn (in place on
    numpy blocks, which are ours); with fewer than ``count`` centers the last one found
    repeats. ``work`` (a :class:`Workspace`, host): the results and the blocks' temporaries
    in its buffers (the results valid until its next use), the same numbers. Two nearest
    of host float rows to more centers than features are :func:`nearest_two`'s (the same
    numbers: the same augmented product and masking, without the per-block copies; a
    swap search's and a warm solve's distance passes, about a fifth faster).
    """
    if (
        count == 2
        and isinstance(X, np.ndarray)
        and isinstance(centers, np.ndarray)
        and X.ndim == 2
        and X.dtype in (np.float32, np.float64)
        and centers.shape[0] > X.shape[1]
    ):
        first, second, d1, d2 = nearest_two(X, centers)
        return [first, second], [d1, d2]
    xp = namespace(X, centers)
    n, m = X.shape[0], centers.shape[0]
    dev = device(X)
    if work is not None and is_numpy(xp):
        labels = [work.take(f"top_labels{j}", (n,), np.int64) for j in range(count)]
        dists = [work.take(f"top_dists{j}", (n,), np.float64) for j in range(count)]
    else:
        work = None
        labels = [xp.empty((n,), dtype=xp.int64, device=dev) for _ in range(count)]
        dists = [xp.empty((n,), dtype=xp.float64, device=dev) for _ in range(count)]
    columns = xp.arange(m, device=dev)[None, :]
    for start, stop, block, x_sq in _score_blocks(X, centers, work=work):
        lab = best = None
        for j in range(count):
            if j < m:
                if lab is not None and is_numpy(xp):
                    np.put_along_axis(block, lab[:, None], -np.inf, axis=1)
                elif lab is not None:
                    block = xp.where(columns == lab[:, None], -xp.inf, block)
                if work is not None and x_sq.dtype == block.dtype:
                    # The same numbers in work buffers (no fresh pages per block).
                    lab = np.argmax(block, axis=1, out=labels[j][start:stop])
                    best = _at(block, lab, work)
                    np.multiply(best, 2.0, out=best)
                    best = np.subtract(x_sq, best, out=best)
                    dists[j][start:stop] = clip_negative(best)
                    continue
                lab = xp.argmax(block, axis=1)
                best = x_sq - 2.0 * _at(block, lab)
            labels[j][start:stop] = xp.astype(lab, xp.int64)
            dists[j][start:stop] = xp.astype(xp.maximum(best, 0.0), xp.float64)
    return labels, dists


def nearest_two(X, centers):
    """The nearest and second-nearest center of each row of host numpy X, from one GEMM per
    row block: ``(first, second, d1, d2)``, labels int64 and squared distances float64 (in
    X's precision, relative to the centers' mean as :func:`nearest_top`'s); with one center
    the second is the first.

    :func:`nearest_top` for ``count=2`` on the host, without its per-block copies: each block
    of rows is shifted once, its scores ``x . c - ||c||^2 / 2`` made by one GEMM into a kept
    buffer, the best taken by ``argmax``, masked, and the second taken by ``argmax`` again.
    A pass of enough rows x centers, from the main thread on one BLAS thread, runs in
    pieces of whole blocks side by side on the cores (:func:`._pool.block_pieces`; each
    row's numbers are those of one piece): a stream's fold, a warm solve's and a swap
    search's passes, whose other steps leave the other cores idle. Preconditions: numpy X
    (n, d) float32 or float64, centers (m >= 1, d).
    """
    from ._pool import block_pieces, run_pieces

    origin, shifted = _shifted_centers(np.asarray(centers), X.dtype)
    half_sq = row_norms_sq(shifted) * 0.5
    n, m = X.shape[0], shifted.shape[0]
    out = (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n), np.empty(n))
    # The centers with their half norms, to meet the rows with a column of ones: one GEMM.
    centers_t = np.concatenate([shifted.T, -half_sq[None, :]])
    step = block_rows(m, n)
    run_pieces(
        [
            functools.partial(_nearest_two_rows, X, origin, centers_t, piece, step, out)
            for piece in block_pieces(n, step, m)
        ]
    )
    return out


def _nearest_two_rows(X, origin, centers_t, span, step, out):
    """:func:`nearest_two` of the rows ``span`` (``(start, stop)``, ``start`` a multiple of
    ``step``) of X into those rows of ``out``, in blocks of ``step`` rows in this thread's
    kept buffers."""
    first, second, d1, d2 = out
    m = centers_t.shape[1]
    work = thread_workspace("nearest_two")
    scores_buf = work.take("scores", (step, m), X.dtype)
    rows_buf = work.take("rows", (step, X.shape[1] + 1), X.dtype)
    rows_buf[:, -1] = 1.0
    index = np.arange(step)
    for a in range(span[0], span[1], step):
        b = min(a + step, span[1])
        r = b - a
        rows = np.subtract(X[a:b], origin, out=rows_buf[:r, :-1])
        x_sq = row_norms_sq(rows)
        scores = np.matmul(rows_buf[:r], centers_t, out=scores_buf[:r])
        at = index[:r]
        best = np.argmax(scores, axis=1)
        top = scores[at, best]
        first[a:b] = best
        d1[a:b] = np.maximum(x_sq - 2.0 * top, 0.0)
        if m > 1:
            scores[at, best] = -np.inf
            best = np.argmax(scores, axis=1)
            top = scores[at, best]
        second[a:b] = best
        d2[a:b] = np.maximum(x_sq - 2.0 * top, 0.0)
