"""The final solve's restarts run together (``_restarts``): the numbers of each run alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dask_streamkm import _runner
from dask_streamkm._distances import row_norms_sq
from dask_streamkm._lloyd import lloyd
from dask_streamkm._restarts import batched_kmeans_plusplus, batched_lloyd
from dask_streamkm._seeding import kmeans_plusplus


def _points(n, d, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((n, d)) + rng.integers(0, 12, size=(n, 1)) * 3.0
    P = (P - P.mean(axis=0)).astype(dtype)
    return P, rng.uniform(0.5, 20.0, size=n)


@pytest.mark.parametrize(
    ("n", "d", "k", "dtype"),
    [(600, 2, 25, np.float32), (900, 13, 20, np.float32), (500, 40, 8, np.float64)],
)
def test_restarts_together_are_the_runs_alone_bit_for_bit(n, d, k, dtype):
    P, w = _points(n, d, seed=n + d, dtype=dtype)
    p_sq = row_norms_sq(P)
    trials = 4 * (2 + int(math.log(k)))
    seeds = [11, 12, 13, 14]
    chosen = batched_kmeans_plusplus(
        P, k, [np.random.default_rng(s) for s in seeds], w, p_sq, trials
    )
    runs = batched_lloyd(P, np.take(P, chosen, axis=0).astype(np.float64), w, 300, 1e-4)
    for seed, idx, (inertia, centers) in zip(seeds, chosen, runs, strict=True):
        alone = kmeans_plusplus(P, k, np.random.default_rng(seed), w, p_sq, trials)
        np.testing.assert_array_equal(idx, alone)
        c, _, cost, _ = lloyd(P, P[alone], w, max_iter=300, tol=1e-4, fixed_origin=True)
        np.testing.assert_array_equal(centers, c)
        assert inertia == cost


def test_runs_stop_at_their_own_iterations_and_at_max_iter():
    # Runs that converge at different iterations leave the batch one by one; max_iter caps
    # every run, as lloyd's.
    P, w = _points(800, 6, seed=3)
    starts = np.stack([P[:10], P[100:110], P[::80][:10]]).astype(np.float64)
    for max_iter in (1, 3, 300):
        runs = batched_lloyd(P, starts, w, max_iter, 1e-4)
        for start, (inertia, centers) in zip(starts, runs, strict=True):
            c, _, cost, _ = lloyd(P, start, w, max_iter=max_iter, tol=1e-4, fixed_origin=True)
            np.testing.assert_array_equal(centers, c)
            assert inertia == cost


def test_an_empty_center_is_reseeded_as_alone():
    # Two identical starting centers: one of them gets no rows at the first assignment.
    P, w = _points(400, 3, seed=4)
    start = P[:6].astype(np.float64)
    start[5] = start[4]
    starts = np.stack([start, P[200:206].astype(np.float64)])
    runs = batched_lloyd(P, starts, w, 300, 1e-4)
    for s, (inertia, centers) in zip(starts, runs, strict=True):
        c, _, cost, _ = lloyd(P, s, w, max_iter=300, tol=1e-4, fixed_origin=True)
        np.testing.assert_array_equal(centers, c)
        assert inertia == cost


def test_fewer_distinct_points_than_clusters_fall_back_to_the_runs_alone():
    # Three distinct points for five clusters: the potential reaches zero, the batched
    # seeding declines, and the solve still gives what the one-by-one restarts give.
    P = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32), 20, axis=0)
    w = np.ones(P.shape[0])
    rngs = [np.random.default_rng(s) for s in (1, 2)]
    assert batched_kmeans_plusplus(P, 5, rngs, w, row_norms_sq(P), 8) is None
    centers, cost, _ = _runner.weighted_kmeans(P, 5, np.random.default_rng(0), w, n_init=4)
    assert cost == pytest.approx(0.0, abs=1e-9)
    assert centers.shape == (5, 2)


def test_many_restarts_go_in_batches_of_bounded_size(monkeypatch):
    # A user's large n_init on many points: the runs go in consecutive batches, whose block
    # stays within BATCH_ELEMENTS, and the solve is the same as in one batch.
    from dask_streamkm import _restarts

    seeds = list(range(7))
    assert _restarts.batches(seeds, 1000, 12, 8) == [seeds]
    monkeypatch.setattr(_restarts, "BATCH_ELEMENTS", 2 * 1000 * 12)
    assert _restarts.batches(seeds, 1000, 12, 8) == [[0, 1], [2, 3], [4, 5], [6]]
    P, w = _points(1000, 5, seed=9)
    one = _runner.weighted_kmeans(P, 8, np.random.default_rng(1), w, n_init=7)
    monkeypatch.setattr(_restarts, "BATCH_ELEMENTS", 10**9)
    many = _runner.weighted_kmeans(P, 8, np.random.default_rng(1), w, n_init=7)
    np.testing.assert_array_equal(one[0], many[0])
    assert one[1] == many[1]
