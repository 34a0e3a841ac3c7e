"""Weighted Lloyd iterations, swap local search, Ward agglomeration and row grouping.

Pure array maths on in-memory blocks (see :mod:`._distances` for the preconditions): one run
from given centers, no restarts (those are :mod:`._runner`'s).
"""

from __future__ import annotations

import numpy as np

from ._array import as_weights, clip_negative, device, is_cupy, is_numpy, namespace, segment_sum
from ._distances import (
    GROUP_SUM_ELEMENTS,
    Workspace,
    bulk_origin,
    nearest,
    nearest2,
    prepared_rows,
    row_norms_sq,
    sq_distances,
    unit_centers,
    unit_rows,
)
from ._seeding import _d2_rounds, _weighted_choice, d2_sample


def centers_from_labels(X, labels, n_centers, sample_weight=None, work=None):
    """Weighted sums per label (float64) and the weight of each label (``work``: the task's
    :class:`Workspace`, for the float64 rows on the host)."""
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    if is_numpy(xp) and work is not None:
        Xw = work.take("rows64", X.shape, np.float64)
        Xw[...] = X
        Xw *= w[:, None]
    else:
        Xw = xp.astype(X, xp.float64) * w[:, None]
    sums = segment_sum(Xw, labels, n_centers)
    mass = segment_sum(w, labels, n_centers)
    return sums, mass


def lloyd(
    X,
    centers,
    sample_weight=None,
    max_iter=300,
    tol=1e-4,
    keep_best=False,
    spherical=False,
    fixed_origin=False,
    incremental=False,
    relax=1.0,
):
    """Weighted Lloyd iterations from ``centers``.

    ``tol`` is relative: iteration stops when the total squared center shift is below
    ``tol`` times the mean weighted per-feature variance of X (as scikit-learn does).
    Empty clusters are re-seeded at the rows with the largest weighted distance.
    With ``keep_best``, the centers of lowest cost seen (the starting ones included) are
    returned, so that more iterations never give a higher cost for the same start, whatever
    rounding or a re-seed does. With ``spherical``, every update is scaled to unit length
    (spherical k-means; the starting centers must be unit): for unit centers
    ``||x - c||^2 = ||x||^2 + 1 - 2 x.c``, so the nearest center is the one of highest cosine
    and the returned inertia is twice the cosine cost ``sum w (||x|| - x.c)`` up to a term
    that does not depend on the centers. With ``fixed_origin``, X is shifted to its weighted
    mean once (:func:`prepared_rows`) instead of to the centers' mean at every iteration:
    for many rows of many features, where that shift dominates an iteration. With
    ``incremental`` (and every weight positive), each update adds and takes away only the
    rows whose label changed instead of summing all rows again (:func:`_running_sums`): for
    the many points of a refinement's Lloyd run, of which 2 % or fewer move in an iteration,
    where the sums were a third of an iteration. With ``relax`` > 1 (over-relaxation), each
    step goes ``relax`` times as far as Lloyd's from the current centers toward the means of
    their rows; when its cost is above the bound on the plain step's (the cost with the rows
    kept on their centers, each center at their mean), the plain step is taken instead (one
    more assignment, counted as an iteration). Steps that re-seed an empty center, spherical
    steps and the last iteration's are plain. Where clusters overlap Lloyd's steps shrink as
    the centers settle and take many iterations to get far; the longer step gets there in
    fewer (Salakhutdinov and Roweis, "Adaptive overrelaxed bound optimization methods",
    2003); where one step reaches the means of separate clusters, the bound turns the longer
    one back. Returns (centers float64, labels, inertia of X to the returned centers, n_iter:
    the iterations run, assignments after the first, at most ``max_iter``).
    """
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    Xf = xp.astype(X, xp.float64)
    wsum = float(xp.sum(w))
    Xw = Xf * w[:, None]
    mean = xp.sum(Xw, axis=0) / wsum
    variance = _weighted_variance(Xf, w, mean) / wsum / X.shape[1]
    threshold = tol * variance
    centers = xp.astype(centers, xp.float64)
    n_iter = 0
    if fixed_origin:  # the mean, unless a few rows far away pulled it from the others
        prepared = prepared_rows(X, xp.astype(bulk_origin(X, mean, w), X.dtype))
    else:
        prepared = None
    labels, dist = nearest(X, centers, prepared)
    inertia = float(xp.sum(w * dist))
    best = (inertia, centers, labels)
    running = None
    incremental = incremental and X.shape[0] > 0 and float(xp.min(w)) > 0.0
    while n_iter < max_iter:
        n_iter += 1
        if incremental:
            running = _running_sums(Xw, w, labels, centers.shape[0], running)
        totals = running[1:3] if incremental else None
        new_centers, n_empty = _lloyd_update(Xf, Xw, w, labels, dist, centers, spherical, totals)
        # A longer step only with an assignment left for the plain one, should it lose.
        relaxed = relax != 1.0 and n_empty == 0 and not spherical and n_iter < max_iter
        step = centers + relax * (new_centers - centers) if relaxed else new_centers
        step_labels, step_dist = nearest(X, step, prepared)
        step_inertia = float(xp.sum(w * step_dist))
        if relaxed:
            # The plain step costs at most ``inertia - sum W_j ||mean_j - c_j||^2`` (its rows
            # kept, each center at their mean); a longer step that does not beat that is
            # replaced by the plain one (where one step reaches the means of separate
            # clusters, longer steps would only circle them).
            mass = running[2] if incremental else segment_sum(w, labels, centers.shape[0])
            plain_bound = inertia - float(
                xp.sum(mass * xp.sum((new_centers - centers) ** 2, axis=1))
            )
        if relaxed and step_inertia > plain_bound:
            n_iter += 1
            step = new_centers
            step_labels, step_dist = nearest(X, step, prepared)
            step_inertia = float(xp.sum(w * step_dist))
        shift = float(xp.sum((step - centers) ** 2))
        centers, labels, dist, inertia = step, step_labels, step_dist, step_inertia
        if not keep_best or inertia < best[0]:
            best = (inertia, centers, labels)
        if shift <= threshold and n_empty == 0:
            break
    inertia, centers, labels = best
    return centers, labels, inertia, n_iter


def _running_sums(Xw, w, labels, k, previous=None):
    """``(labels, sums, mass, count)`` of the weighted rows ``Xw`` and weights ``w`` (all
    positive) by ``labels`` into ``k`` centers: summed from scratch, or from ``previous`` (the
    same for earlier labels) by adding and taking away the rows whose label changed. A center
    left without rows gets sums and mass of exactly zero, so that it is seen empty (a mass
    left over from rounding would make it the ratio of two rounding errors).
    """
    xp = namespace(Xw)
    if previous is None:
        count = segment_sum(xp.ones_like(w), labels, k)
        return labels, segment_sum(Xw, labels, k), segment_sum(w, labels, k), count
    old, sums, mass, count = previous
    moved = xp.nonzero(labels != old)[0]
    if moved.shape[0] == 0:
        return labels, sums, mass, count
    to, away = xp.take(labels, moved, axis=0), xp.take(old, moved, axis=0)
    rows, weights = xp.take(Xw, moved, axis=0), xp.take(w, moved, axis=0)
    ones = xp.ones_like(weights)
    sums = sums + segment_sum(rows, to, k) - segment_sum(rows, away, k)
    mass = mass + segment_sum(weights, to, k) - segment_sum(weights, away, k)
    count = count + segment_sum(ones, to, k) - segment_sum(ones, away, k)
    gone = count <= 0
    sums = xp.where(gone[:, None], 0.0, sums)
    mass = xp.where(gone, 0.0, mass)
    return labels, sums, mass, count


def _weighted_variance(Xf, w, mean):
    """``sum_i w_i ||x_i - mean||^2`` of float64 rows (numpy: a row block at a time, no
    temporary as large as the rows)."""
    xp = namespace(Xf)
    if not is_numpy(xp):
        return float(xp.sum(w[:, None] * (Xf - mean) ** 2))
    step = max(256, GROUP_SUM_ELEMENTS // max(Xf.shape[1], 1))
    total = 0.0
    for start in range(0, Xf.shape[0], step):
        Z = Xf[start : start + step] - mean
        total += float(w[start : start + step] @ np.einsum("ij,ij->i", Z, Z))
    return total


def _lloyd_update(Xf, Xw, w, labels, dist, centers, spherical=False, totals=None):
    """One Lloyd update: each center moves to the weighted mean of its rows (``Xf`` float64
    rows, ``Xw`` the same times their weights ``w``; ``labels``/``dist`` each row's center and
    squared distance to it; ``totals``: the ``(sums, mass)`` of ``Xw`` and ``w`` by label when
    the caller has them). An empty center goes to one of the rows of largest weighted
    distance; ``spherical`` scales the centers to unit length. Returns (centers float64,
    number of empty centers)."""
    xp = namespace(Xf)
    k = centers.shape[0]
    if totals is None:
        sums, mass = segment_sum(Xw, labels, k), segment_sum(w, labels, k)
    else:
        sums, mass = totals
    new_centers = xp.where(mass[:, None] > 0, sums / xp.maximum(mass, 1e-300)[:, None], centers)
    empty = xp.nonzero(mass <= 0)[0]
    if empty.shape[0] > 0:
        far = xp.argsort(-(w * dist))[: empty.shape[0]]
        # With fewer rows than empty centers (a run over a few groups: a refinement of rows
        # all equal), the first ones get a row each and the others stay where they were.
        empty = empty[: far.shape[0]]
        # Row j of ``fill`` is the far row given to empty center j (labels are distinct).
        fill = segment_sum(xp.take(Xf, far, axis=0), empty, k)
        filled = segment_sum(xp.ones_like(xp.take(w, far)), empty, k) > 0
        new_centers = xp.where(filled[:, None], fill, new_centers)
    if spherical:
        new_centers = unit_centers(new_centers, centers)
    return new_centers, int(empty.shape[0])


def local_search(
    X,
    centers,
    rng,
    sample_weight=None,
    n_steps=None,
    x_sq=None,
    lloyd_steps=0,
    n_trials=1,
    spherical=False,
    until_no_swap=False,
    nearest_start=None,
    return_nearest=False,
):
    """Swap local search on weighted k-means (LocalSearch++, Lattanzi & Sohler, ICML 2019).

    Each step draws ``n_trials`` rows by D^2 sampling and makes the one swap (candidate row
    in, center out) that lowers the weighted cost most, if any does; the cost of every
    possible swap comes from the nearest and second-nearest distances in one O(n) pass (one
    small GEMM and one segment sum for all the candidates together). Lloyd's local optima put
    one center on two groups and two on one; a swap moves such a center in one step.
    ``n_steps`` counts steps (each ``n_trials`` candidates); default ``2 k``. With
    ``spherical`` the candidates are the drawn rows scaled to unit length and the Lloyd steps
    are spherical (:func:`lloyd`), so every center stays a unit vector. With
    ``until_no_swap``, the search stops at the first step whose candidates give no swap that
    lowers the cost (the same centers as calling it for one step at a time until one
    accepts none, without the distance pass each such call begins with). ``nearest_start``:
    the rows' :func:`nearest2` for ``centers``, when the caller has it (the search's first
    distance pass is then not made); with ``return_nearest`` a third value gives it for the
    returned centers (None when X has no more rows than centers).
    Returns (centers float64, number of accepted swaps).
    """
    xp = namespace(X)
    n = X.shape[0]
    k = centers.shape[0]
    if k < 2 or n <= k:
        out = (xp.astype(centers, xp.float64), 0)
        return out + (None,) if return_nearest else out
    dev = device(X)
    w = as_weights(sample_weight, X)
    if x_sq is None:
        x_sq = row_norms_sq(X)
    if n_steps is None:
        n_steps = 2 * k
    n_trials = max(1, int(n_trials))
    centers = xp.astype(centers, xp.float64)
    labels, d1, d2 = nearest2(X, centers) if nearest_start is None else nearest_start
    cost = float(xp.sum(w * d1))
    accepted = 0
    # numpy: the rows' weights by center as one sparse matrix, made again only after a swap.
    by_center = weighted_indicator(labels, w, k) if is_numpy(xp) else None
    Xf = Xw = None  # float64 rows (and weighted) for the Lloyd updates, made at the first swap
    for _ in range(int(n_steps)):
        if cost <= 0.0:
            break
        cand = _weighted_choice(xp, xp.cumulative_sum(w * d1), rng, n_trials)
        cand_rows = xp.take(X, cand, axis=0)
        if spherical:
            cand_rows = unit_rows(cand_rows)[0]
        dp = sq_distances(X, cand_rows, x_sq)
        g1 = xp.minimum(d1[:, None], dp)  # float64, as d1
        # Extra cost of dropping center i once candidate t is added: the rows of i fall back
        # to min(d2, dp_t); loss[i, t] sums that over the rows of i.
        fallback = xp.minimum(d2[:, None], dp) - g1
        if by_center is not None:
            gain = w @ (g1 - d1[:, None])
            loss = np.asarray(by_center @ fallback)
        else:
            gain = xp.sum(w[:, None] * (g1 - d1[:, None]), axis=0)
            loss = segment_sum(w[:, None] * fallback, labels, k)
        delta = loss + gain[None, :]
        flat = int(xp.argmin(xp.reshape(delta, (-1,))))
        i, t = divmod(flat, n_trials)
        if float(delta[i, t]) < -1e-9 * cost:
            new_row = xp.astype(cand_rows[t : t + 1, ...], xp.float64)
            centers = xp.where(xp.arange(k, device=dev)[:, None] == i, new_row, centers)
            # ``lloyd_steps`` Lloyd updates (as ``lloyd(max_iter=lloyd_steps, tol=0)``, without
            # its last assignment: the one below also gives the second-nearest distances).
            for _step in range(int(lloyd_steps)):
                if Xw is None:
                    Xf = xp.astype(X, xp.float64)
                    Xw = Xf * w[:, None]
                step_labels, step_dist = nearest(X, centers)
                centers, _ = _lloyd_update(Xf, Xw, w, step_labels, step_dist, centers, spherical)
            labels, d1, d2 = nearest2(X, centers)
            cost = float(xp.sum(w * d1))
            if by_center is not None:
                by_center = weighted_indicator(labels, w, k)
            accepted += 1
        elif until_no_swap:
            break
    return (centers, accepted, (labels, d1, d2)) if return_nearest else (centers, accepted)


def weighted_indicator(labels, w, k, positions=None, n_rows=None):
    """The (k, n_rows) sparse matrix with w_i at (labels_i, positions_i) (default i, and
    n_rows the number of labels): its product with an (n_rows, t) array sums the weighted
    rows by label, in the array's float type (numpy)."""
    from scipy import sparse

    if positions is None:
        positions = np.arange(labels.shape[0])
    n_rows = labels.shape[0] if n_rows is None else int(n_rows)
    return sparse.csr_matrix((w, (labels, positions)), shape=(k, n_rows))


def ward_labels(X, n_clusters, sample_weight=None):
    """Weighted Ward agglomeration of the rows of X down to ``n_clusters`` clusters.

    Starting from one cluster per row (of its weight), the two clusters whose merge raises the
    weighted squared error least, ``W_a W_b / (W_a + W_b) ||mu_a - mu_b||^2``, are merged
    until ``n_clusters`` remain; the merge costs follow from the previous ones
    (Lance-Williams) and each cluster's nearest one is kept (Ward's cost is reducible: a
    merge never brings a third cluster nearer, so only the clusters whose nearest merged are
    searched again). In float64 on X's device; an (n, n) matrix: for a few thousand rows.
    Returns labels (int64 host numpy, (n,), values ``0 .. n_clusters - 1``). Precondition:
    ``1 <= n_clusters <= n`` and positive weights.
    """
    xp = namespace(X)
    dev = device(X)
    P = xp.astype(X, xp.float64)
    n = P.shape[0]
    w = xp.astype(as_weights(sample_weight, X), xp.float64)
    # Ward's merge order does not change when every weight is scaled by one constant; weights
    # at most 1 keep the products W_a W_b finite for any accepted weight range.
    w = w / xp.max(w)
    P = P - xp.sum(P * w[:, None], axis=0) / xp.sum(w)
    sq = xp.sum(P * P, axis=1)
    index = xp.arange(n, device=dev)
    if is_numpy(xp):
        # The same numbers in three n x n arrays instead of seven (each a fresh mmap with
        # glibc's mmap threshold fixed, as distributed's nanny sets it).
        G = np.matmul(P, P.T)
        G *= 2.0
        D = np.add.outer(sq, sq)
        D -= G
        clip_negative(D)
        factor = np.multiply.outer(w, w, out=G)
        factor /= np.add.outer(w, w)
        D *= factor
        np.fill_diagonal(D, np.inf)
    else:
        D = xp.maximum(sq[:, None] + sq[None, :] - 2.0 * xp.matmul(P, P.T), 0.0)
        D = D * (w[:, None] * w[None, :] / (w[:, None] + w[None, :]))
        D = xp.where(index[:, None] == index[None, :], xp.inf, D)
    nn = xp.argmin(D, axis=1)
    nd = xp.min(D, axis=1)
    parent = _ward_merges(xp, D, w, nn, nd, index, n - int(n_clusters))
    roots = []
    for i in range(n):  # every row to its cluster's root (parents come before children)
        while parent[i] != parent[parent[i]]:
            parent[i] = parent[parent[i]]
        roots.append(parent[i])
    return np.unique(np.asarray(roots), return_inverse=True)[1].astype(np.int64)


def _ward_merges(xp, D, w, nn, nd, index, n_merges):
    """The merges of :func:`ward_labels`: each row's parent after ``n_merges`` merges, from
    the merge costs D (inf on the diagonal), the weights w, and each row's nearest row nn at
    cost nd (all changed in place). The rows whose nearest merged are searched again in one
    block (one call, not one per row: the merges are a Python loop of small vector
    operations, and their calls took the time); numpy and cupy write their results back in
    one call too, other namespaces row by row (the standard has no assignment by an index
    array)."""
    if is_numpy(xp):
        return _ward_merges_host(D, w, nn, nd, n_merges)
    parent = list(range(D.shape[0]))
    scatter = is_cupy(xp)
    for _ in range(n_merges):
        a = int(xp.argmin(nd))
        b = int(nn[a])
        wa, wb = w[a], w[b]
        row = ((wa + w) * D[a, :] + (wb + w) * D[b, :] - w * D[a, b]) / (wa + wb + w)
        row[a] = xp.inf
        row[b] = xp.inf
        D[b, :] = xp.inf
        D[:, b] = xp.inf
        D[a, :] = row
        D[:, a] = row
        w[a] = wa + wb
        parent[b] = a
        nd[b] = xp.inf
        nn[a] = xp.argmin(row)
        nd[a] = xp.min(row)
        stale = xp.nonzero(((nn == a) | (nn == b)) & (index != a) & (nd < xp.inf))[0]
        if not stale.shape[0]:
            continue
        block = xp.take(D, stale, axis=0)
        near, cost = xp.argmin(block, axis=1), xp.min(block, axis=1)
        if scatter:
            nn[stale], nd[stale] = near, cost
            continue
        for j in range(stale.shape[0]):
            i = int(stale[j])
            nn[i], nd[i] = near[j], cost[j]
    return parent


def _ward_merges_host(D, w, nn, nd, n_merges):
    """:func:`_ward_merges` for numpy arrays, in rounds of merges: a round merges every pair
    of clusters that are each other's nearest, where :func:`_ward_merges` makes one merge
    a Python step (at 1,000 rows 990 steps of small vector operations and their calls took
    the time: 120 ms against 62 ms in 36 rounds, 2 cores).

    Why the same merges: Ward's cost is reducible, so a pair of mutual nearest clusters is
    merged by the one-at-a-time order too, and merging it leaves the nearest of every
    other cluster as it was, unless that was one of the pair (those are searched again).
    The rounds go on to one cluster, and the ``n_merges`` merges of lowest cost are kept:
    the one-at-a-time order makes them first, as Ward's costs never fall along a branch
    (each merge is ranked at least as high as those below it, so the kept ones hold their
    sub-merges). Within a round the pairs merge in order of cost, each pair's costs to the
    clusters before the round by Lance-Williams in :func:`_ward_merges`' operation order,
    and the cost between two pairs of one round from the earlier pair's costs, as the
    one-at-a-time order makes it; the kept cluster of a pair is its lower index, as there.
    So the labels are those of :func:`_ward_merges` where no two merge costs are equal; where
    some are (rows of small integers), either order is a Ward agglomeration, and the
    partitions may differ at the same Ward cost (both tested)."""
    n = D.shape[0]
    parent = np.arange(n)
    if n_merges <= 0:
        return parent.tolist()
    alive = np.ones(n, dtype=bool)
    top = np.full(n, -np.inf)  # the rank of the last merge into each cluster
    kept, gone, ranks = [], [], []
    while True:
        live = np.flatnonzero(alive)
        if live.shape[0] < 2:
            break
        partner = nn[live]
        a = live[(nn[partner] == live) & (live < partner)]
        if not a.shape[0]:  # none only through rounding: the nearest pair alone
            i = live[np.argmin(nd[live])]
            a = np.array([min(i, nn[i])])
            b = np.array([max(i, nn[i])])
        else:
            b = nn[a]
        h = D[a, b]
        order = np.lexsort((a, h))
        a, b, h = a[order], b[order], h[order]
        wa, wb = w[a], w[b]
        wab = wa + wb
        rows = _lance_williams(wa, wb, wab, h, w, D[a], D[b])
        if a.shape[0] > 1:
            # Pair j against an earlier pair i (j > i): j's row at the cluster of i (of
            # weight wab[i]), from i's row at j's two clusters; (j, i) in ``later``.
            later = _lance_williams(wa, wb, wab, h, wab[None, :], rows[:, a].T, rows[:, b].T)
            upper = np.tril(later, -1).T
            rows[:, a] = upper + upper.T
        at = np.arange(a.shape[0])
        rows[at, a] = np.inf
        rows[:, b] = np.inf
        D[a] = rows
        D[:, a] = rows.T
        D[b] = np.inf
        D[:, b] = np.inf
        w[a] = wab
        alive[b] = False
        nd[b] = np.inf
        near = np.argmin(rows, axis=1)
        nn[a] = near
        nd[a] = rows[at, near]
        stale = np.zeros(n, dtype=bool)
        stale[a] = True
        stale[b] = True
        stale = stale[nn] & alive
        stale[a] = False
        found = np.flatnonzero(stale)
        if found.shape[0]:
            block = D[found]
            near = np.argmin(block, axis=1)
            nn[found] = near
            nd[found] = block[np.arange(found.shape[0]), near]
        rank = np.maximum(h, np.maximum(top[a], top[b]))
        top[a] = rank
        kept.append(a)
        gone.append(b)
        ranks.append(rank)
    kept, gone, ranks = np.concatenate(kept), np.concatenate(gone), np.concatenate(ranks)
    chosen = np.lexsort((np.arange(ranks.shape[0]), ranks))[:n_merges]
    parent[gone[chosen]] = kept[chosen]
    return parent.tolist()


def _lance_williams(wa, wb, wab, h, w, Da, Db):
    """Ward's costs of merged pairs (a, b) of weights ``wa``, ``wb`` (sum ``wab``, merge
    cost ``h``; one per row) to clusters of weights ``w`` at costs ``Da`` and ``Db``:
    ``((wa + w) Da + (wb + w) Db - w h) / (wa + wb + w)`` in :func:`_ward_merges`' order
    (``Da`` and ``Db`` fresh arrays, overwritten)."""
    wa, wb, wab, h = wa[:, None], wb[:, None], wab[:, None], h[:, None]
    Da *= wa + w
    Db *= wb + w
    Da += Db
    np.multiply(w, h, out=Db)
    Da -= Db
    np.add(wab, w, out=Db)
    Da /= Db
    return Da


#: Rows up to which :func:`group_labels` takes the direct numpy path (:func:`_small_group_labels`).
SMALL_GROUP_ROWS = 4096


def group_labels(X, n_groups, rng, sample_weight=None, n_iter=1):
    """Group the weighted rows of X into at most ``n_groups`` groups.

    Weighted D^2 seeding of ``n_groups`` centers, ``n_iter`` weighted Lloyd iterations, then
    each row's nearest center. Returns (labels int64 (n,), number of labels).
    """
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    if is_numpy(xp) and X.shape[0] <= SMALL_GROUP_ROWS:
        return _small_group_labels(X, int(n_groups), rng, w, n_iter)
    work = Workspace()  # the distance blocks of every call below
    idx, labels, dist = d2_sample(
        X, int(n_groups), rng, sample_weight=w, return_labels=True, work=work
    )
    if n_iter > 0:
        # lloyd(max_iter=n_iter, tol=0), its first assignment taken from the rounds.
        Xf = xp.astype(X, xp.float64)
        Xw = Xf * w[:, None]
        centers = xp.take(Xf, idx, axis=0)
        for _ in range(int(n_iter)):
            centers, _ = _lloyd_update(Xf, Xw, w, labels, dist, centers)
            labels, dist = nearest(X, centers, work=work)
    return labels, int(idx.shape[0])


def _small_group_labels(X, n_groups, rng, w, n_iter, rounds=5):
    """:func:`group_labels` for a few numpy rows, with a handful of array calls per step.

    The first-level merges of many small chunks reduce a few hundred groups each; there the
    blocked kernels' fixed cost per call (shifts, slabs, augmented copies), not arithmetic,
    took most of the merge. Here the rows are centered once (on their weighted mean, in
    float64), each D^2 round and each Lloyd iteration is one small GEMM, and a center that
    loses its rows keeps its place (it can only lose them to an identical row).
    """
    Xc = X.astype(np.float64)
    Xc -= (w @ Xc) / w.sum()
    sq = np.einsum("ij,ij->i", Xc, Xc)

    def scores(centers):  # ||c||^2 - 2 x.c: the squared distance less ||x||^2
        out = Xc @ centers.T
        out *= -2.0
        out += np.einsum("ij,ij->i", centers, centers)[None, :]
        return out

    def nearest_of(rows):
        S = scores(Xc[rows])
        labels = np.argmin(S, axis=1)
        return labels, np.maximum(sq + S[np.arange(S.shape[0]), labels], 0.0)

    idx, _, _ = _d2_rounds(namespace(w), w, n_groups, rng, rounds, nearest_of)
    centers = Xc[idx]
    labels = np.argmin(scores(centers), axis=1)
    k = idx.shape[0]
    Xw = Xc * w[:, None]
    for _ in range(n_iter):
        mass = np.bincount(labels, weights=w, minlength=k)
        sums = segment_sum(Xw, labels, k)
        moved = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None], centers)
        if np.array_equal(moved, centers):
            break
        centers = moved
        labels = np.argmin(scores(centers), axis=1)
    return labels.astype(np.int64), int(k)
