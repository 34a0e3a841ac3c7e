"""Per-chunk summarizers: one in-memory block of rows in, one Summary out.

``stream`` follows SageMaker's streaming k-means: D^2 seeding of half the groups, then
mini-batches with online facility-location opening (Meyerson 2001; Liberty, Sriharsha,
Sviridenko 2016) and Sculley (2010) per-center updates, the centers whose merge raises the
squared error least (Ward's cost) merged into their nearest neighbour when too many are open,
an exact assignment pass that fills the clustering features from the real rows, and light
groups merged (never dropped).
``tree`` (the default) puts the rows in coarse cells and runs k-means++ and Lloyd inside
every cell at once (:mod:`._tree`): a few hundred distances a row instead of ``2 m``, and
tighter groups; on device (non-numpy) arrays it is the streaming leaf.
``lloyd`` is D^2 seeding plus exact Lloyd passes: simpler, and the test oracle.

Preconditions for everything here: X is a 2-D float array, finite, weights >= 0.
"""

from __future__ import annotations

import numpy as np

from ._array import device, from_host, is_numpy, namespace, segment_sum
from ._distances import nearest, nearest_other, thread_workspace
from ._lloyd import centers_from_labels, lloyd
from ._seeding import d2_sample
from ._tree import tree_labels
from .summary import Summary

METHODS = ("tree", "stream", "lloyd")

#: Groups lighter than this fraction of a typical group's weight merge into their nearest group
#: (a typical group: the chunk's rows of positive weight per group, each of the median weight).
LIGHT_FRACTION = 0.01


def summarize(X, size, method="tree", sample_weight=None, mini_batch_size=4096, seed=None):
    """Summarize the rows of one block into at most ``size`` weighted groups.

    A block with at most ``size`` rows of positive weight comes back exactly (one group a row).
    """
    xp = namespace(X)
    n = X.shape[0]
    if n == 0:
        return Summary.empty(X.shape[1], like=X)
    if sample_weight is not None:
        n_positive = int(xp.sum(xp.astype(sample_weight > 0, xp.int64)))
    else:
        n_positive = n
    if n_positive <= size:
        return Summary.from_points(X, sample_weight, check=False)
    rng = np.random.default_rng(seed)
    if method == "lloyd":
        centers = _lloyd_centers(X, size, sample_weight, rng)
    elif method == "tree" and is_numpy(xp):
        labels, n_groups = tree_labels(X, size, sample_weight, rng)
        summary = Summary.from_points(
            X, sample_weight, labels=labels, n_groups=n_groups, check=False
        )
        return _merge_light(summary, _typical_weight(sample_weight, n_positive))
    elif method in ("stream", "tree"):  # "tree" on device arrays: the streaming leaf
        centers = _stream_centers(X, size, sample_weight, mini_batch_size, rng)
    else:  # validated by the estimator
        raise ValueError(f"method={method!r} should be one of {METHODS}.")
    labels, _ = nearest(X, xp.astype(centers, X.dtype))
    summary = Summary.from_points(
        X, sample_weight, labels=labels, n_groups=centers.shape[0], check=False
    )
    return _merge_light(summary, _typical_weight(sample_weight, n_positive))


def _lloyd_centers(X, size, sample_weight, rng, n_passes=1):
    """D^2 seeding of ``size`` centers, then ``n_passes`` exact Lloyd updates."""
    xp = namespace(X)
    idx = d2_sample(X, size, rng, sample_weight=sample_weight)
    centers = xp.take(X, idx, axis=0)
    if n_passes > 0:
        centers, _, _, _ = lloyd(X, centers, sample_weight, max_iter=n_passes, tol=0.0)
    return centers


def _stream_centers(X, size, sample_weight, batch_size, rng):
    """Centers of one streaming pass over the shuffled rows of X (at most ``size`` of them)."""
    xp = namespace(X)
    n, d = X.shape
    dev = device(X)
    perm = from_host(rng.permutation(n), X)
    work = None
    if is_numpy(xp):
        # The shuffled rows and the batches' work buffers: kept by the thread for its next
        # leaf (:func:`._distances.thread_workspace`), the same numbers.
        work = thread_workspace("stream")
        Xs = np.take(X, perm, axis=0, out=work.take("shuffled", X.shape, X.dtype), mode="clip")
    else:
        Xs = xp.take(X, perm, axis=0)
    ws = (
        xp.ones((n,), dtype=xp.float64, device=dev)
        if sample_weight is None
        else xp.take(xp.astype(sample_weight, xp.float64), perm, axis=0)
    )
    batch_size = int(max(1, batch_size))
    # Seed about half the groups by D^2 sampling on the first rows (at least 2 per center).
    n_seed_rows = min(n, max(batch_size, 4 * size))
    first = Xs[:n_seed_rows, ...]
    # When the seeding rows are the whole chunk no batch follows to open the other half.
    n_seeds = size if n_seed_rows == n else max(1, size // 2)
    idx = d2_sample(first, n_seeds, rng, sample_weight=ws[:n_seed_rows])
    centers = xp.astype(xp.take(first, idx, axis=0), xp.float64)
    labels, _ = nearest(first, centers)
    counts = segment_sum(ws[:n_seed_rows], labels, centers.shape[0])
    starts = list(range(n_seed_rows, n, batch_size))
    for b, start in enumerate(starts):
        stop = min(start + batch_size, n)
        batch = Xs[start:stop, ...]
        wb = ws[start:stop]
        labels, dist = nearest(batch, centers, work=work)
        cost = wb * dist
        total = float(xp.sum(cost))
        free = size - centers.shape[0]
        remaining = len(starts) - b
        expected_open = max(free, 0) / remaining + 1.0
        if total > 0.0:
            # Open a center at x with probability min(1, d^2(x) / f), f = batch cost / l.
            prob = xp.minimum(cost * (expected_open / total), 1.0)
            draws = from_host(rng.random(stop - start), batch)
            is_new = draws < prob
        else:
            is_new = xp.zeros((stop - start,), dtype=xp.bool, device=dev)
        keep = xp.logical_not(is_new)
        # Sculley update with per-center rate b_j / n_j for the rows that opened nothing.
        w_keep = xp.where(keep, wb, 0.0)
        sums, mass = centers_from_labels(batch, labels, centers.shape[0], w_keep, work)
        counts = counts + mass
        rate = xp.where(counts > 0, mass / xp.maximum(counts, 1e-300), 0.0)
        means = sums / xp.maximum(mass, 1e-300)[:, None]
        centers = centers + rate[:, None] * (means - centers)
        new_idx = xp.nonzero(is_new)[0]
        if new_idx.shape[0] > 0:
            centers = xp.concat([centers, xp.astype(xp.take(batch, new_idx, axis=0), xp.float64)])
            counts = xp.concat([counts, xp.take(wb, new_idx, axis=0)])
        while centers.shape[0] > size:
            centers, counts = _merge_cheapest(centers, counts, centers.shape[0] - size)
    return centers


def _merge_cheapest(centers, counts, n_merge):
    """Merge up to ``n_merge`` centers whose merge costs least into a nearest neighbour.

    The cost of merging center i into its nearest neighbour j is Ward's increase of the
    squared error, ``w_i w_j / (w_i + w_j) ||c_i - c_j||^2``: redundant centers inside dense
    regions go first, while a far, light center (a small cluster or an outlier) stays. Mass
    is kept: every merged center's weight moves to its nearest unmerged center. When two
    centers would merge into each other only one of them goes, so a call may merge fewer.
    """
    xp = namespace(centers)
    m = centers.shape[0]
    dev = device(centers)
    index = xp.arange(m, device=dev)
    nn, d_nn = nearest_other(centers)
    w_nn = xp.take(counts, nn, axis=0)
    cost = counts * w_nn / xp.maximum(counts + w_nn, 1e-300) * d_nn
    chosen = xp.argsort(cost)[:n_merge]
    is_chosen = segment_sum(xp.ones((n_merge,), dtype=xp.float64, device=dev), chosen, m) > 0
    # Of two chosen centers that are each other's nearest neighbour, the lower index stays.
    mutual = (xp.take(nn, nn, axis=0) == index) & xp.take(is_chosen, nn, axis=0) & (index < nn)
    is_chosen = is_chosen & xp.logical_not(mutual)
    light = xp.nonzero(is_chosen)[0]
    heavy = xp.nonzero(xp.logical_not(is_chosen))[0]
    c_heavy = xp.take(centers, heavy, axis=0)
    c_light = xp.take(centers, light, axis=0)
    target, _ = nearest(c_light, c_heavy)
    w_heavy = xp.take(counts, heavy, axis=0)
    w_light = xp.take(counts, light, axis=0)
    sums = c_heavy * w_heavy[:, None] + segment_sum(
        c_light * w_light[:, None], target, heavy.shape[0]
    )
    mass = w_heavy + segment_sum(w_light, target, heavy.shape[0])
    new_centers = xp.where(mass[:, None] > 0, sums / xp.maximum(mass, 1e-300)[:, None], c_heavy)
    return new_centers, mass


def _typical_weight(sample_weight, n_positive):
    """The weight of ``n_positive`` rows of the median positive weight (None: unit weights).

    Unit weights give None (the total weight itself, bit for bit); equal weights give their
    total. A few rows far heavier than the rest leave it where the rest put it, so they do
    not make every other group of the chunk light.
    """
    if sample_weight is None:
        return None
    xp = namespace(sample_weight)
    w = xp.astype(sample_weight, xp.float64)
    lo, hi = float(xp.min(w)), float(xp.max(w))
    if lo == hi:
        return None
    positive = xp.sort(xp.take(w, xp.nonzero(w > 0)[0], axis=0))
    half = positive.shape[0] // 2
    median = 0.5 * (float(positive[(positive.shape[0] - 1) // 2]) + float(positive[half]))
    return n_positive * median


def _merge_light(summary, typical_total=None):
    """Merge groups lighter than LIGHT_FRACTION of a typical group's weight into their nearest
    one, where the merge adds at most the error a group holds on average.

    A typical group weighs ``typical_total / m`` (None: the total weight): the chunk's rows of
    positive weight shared out over the m groups, each row of the median weight. Mass is
    never dropped, and a row far heavier than the others never makes their groups light.
    A merge adds Ward's cost ``W_l W_h / (W_l + W_h) ||mu_l - mu_h||^2`` to the summary's
    error; a light group whose merge would add more than the groups' mean own error (their
    ``group_sse``) keeps its place: a few rows far from all others (two readings of 281
    standard deviations among 400,000 lab values) merged into a group of moderate rows made
    that group's error larger than the whole data's cost at k=10, which no solve can take
    back (1.5 to 2.5 times ``KMeans(n_init=10)``'s cost over three seeds, against 1.000 to
    1.001 kept apart).
    """
    m = summary.n_groups
    if m < 2:
        return summary
    xp = namespace(summary.weights)
    total = summary.total_weight if typical_total is None else typical_total
    threshold = LIGHT_FRACTION * total / m
    light = xp.nonzero(summary.weights < threshold)[0]
    if light.shape[0] == 0 or light.shape[0] == m:
        return summary
    heavy = xp.nonzero(summary.weights >= threshold)[0]
    cents = summary.centroids
    target, dist = nearest(xp.take(cents, light, axis=0), xp.take(cents, heavy, axis=0))
    w_light = xp.take(summary.weights, light, axis=0)
    w_heavy = xp.take(xp.take(summary.weights, heavy, axis=0), target, axis=0)
    added = w_light * w_heavy / (w_light + w_heavy) * xp.astype(dist, xp.float64)
    cheap = added <= xp.sum(summary.group_sse) / m
    kept = xp.take(light, xp.nonzero(xp.logical_not(cheap))[0], axis=0)
    cheap = xp.nonzero(cheap)[0]
    if cheap.shape[0] == 0:
        return summary
    light, target = xp.take(light, cheap, axis=0), xp.take(target, cheap, axis=0)
    # labels[light] = heavy[target], every other group its own: as a permutation (array-API
    # arrays have no index assignment), the heavy, kept and merged groups list each once.
    positions = xp.concat([heavy, kept, light])
    values = xp.concat([heavy, kept, xp.take(heavy, target, axis=0)])
    labels = xp.take(values, xp.argsort(positions), axis=0)
    return summary.group_by(labels, m)
