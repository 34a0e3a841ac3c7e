"""Streams: partial_fit folds each batch cheaply and solves globally only when it pays."""

import numpy as np
import pytest
from _helpers import true_cost
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from dask_streamkm import StreamingKMeans, _lloyd, _seeds, _stream
from dask_streamkm.datasets import make_mixture
from dask_streamkm.estimator import solve_summary
from dask_streamkm.summary import Summary


def exact_cost(X, centers, sample_weight=None):
    d = ((X[:, None, :].astype(np.float64) - centers[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    return float(d.sum() if sample_weight is None else (sample_weight * d).sum())


@pytest.fixture(scope="module")
def mixture():
    return make_mixture(24_000, 6, 40, chunks=24_000, random_state=3).compute()


def stream(model, X, batch):
    for start in range(0, X.shape[0], batch):
        model.partial_fit(X[start : start + batch])
    return model


def solve_kind(model):
    """ "full" after a full solve (no stream state yet), "fresh" after a re-solve (a warm
    solve that also ran from a fresh start), "warm" after another warm solve (a stream state
    with nothing folded since), else None."""
    stream = model.__dict__.get("_stream_")
    if stream is None:
        return "full"
    if stream.rows_since:
        return None
    return "fresh" if model.__dict__.get("_resolve_rows_") == stream.rows else "warm"


def global_solves(model, X, batch, kinds=False):
    """Rows at which partial_fit ran a global solve (with its kind when ``kinds``)."""
    rows = []
    for start in range(0, X.shape[0], batch):
        model.partial_fit(X[start : start + batch])
        kind = solve_kind(model)
        if kind:
            rows.append((model.n_rows_seen_, kind) if kinds else model.n_rows_seen_)
    return rows


def test_stream_cost_close_to_fit_on_the_concatenation(mixture):
    X = mixture
    km = stream(StreamingKMeans(10, random_state=0), X, 500)
    fit = StreamingKMeans(10, random_state=0).fit(X)
    assert km.n_rows_seen_ == X.shape[0] == km.summary_.n_seen
    assert exact_cost(X, km.cluster_centers_) <= 1.03 * exact_cost(X, fit.cluster_centers_)


def test_every_call_keeps_centers_labels_bound_and_summary_consistent(mixture):
    X = mixture[:8_000]
    km = StreamingKMeans(10, random_state=0)
    for start in range(0, X.shape[0], 400):
        batch = X[start : start + 400]
        km.partial_fit(batch)
        seen = X[: start + 400]
        np.testing.assert_array_equal(km.labels_, km.predict(batch))
        assert km.labels_.dtype == np.int32
        # inertia_ bounds the cost of every row seen, and the summary's own bound.
        assert km.inertia_ >= exact_cost(seen, km.cluster_centers_) * (1 - 1e-9)
        assert km.inertia_ >= km.summary_.cost_bound(km.cluster_centers_) * (1 - 1e-9)
        np.testing.assert_allclose(km.summary_.total_weight, seen.shape[0])
        np.testing.assert_allclose(
            km.summary_.centroids.T @ km.summary_.weights, seen.sum(axis=0, dtype=np.float64)
        )


def test_global_solves_when_the_rows_seen_double(mixture):
    X = mixture[:16_000]
    rows = global_solves(StreamingKMeans(5, random_state=0), X, 500)
    # The first batch is solved as before (no stream yet); then 1,000, 2,000, 4,000...
    assert rows == [500, 1_000, 2_000, 4_000, 8_000, 16_000]


def test_scheduled_solves_are_warm_until_the_rows_pay_for_a_full_one(mixture, monkeypatch):
    # The rule at 25 rows per group and at least 300 groups per cluster (the defaults, 100
    # and 600, need a longer stream than this one).
    monkeypatch.setattr(_stream, "FULL_ROWS_PER_GROUP", 25)
    monkeypatch.setattr(_stream, "FULL_MIN_GROUPS_PER_CLUSTER", 300)
    X = mixture
    km = StreamingKMeans(2, random_state=0)
    solves, last_full = [], 0
    for start in range(0, X.shape[0], 200):
        km.partial_fit(X[start : start + 200])
        kind = solve_kind(km)
        if kind:
            solves.append((km.n_rows_seen_, kind))
            if kind == "full":
                last_full = km.n_rows_seen_
            else:
                # A warm solve: a few Lloyd iterations, and the rows since the last full
                # solve did not reach FULL_ROWS_PER_GROUP per group.
                assert km.n_iter_ <= _stream.WARM_MAX_ITER
                rows_since = km.n_rows_seen_ - last_full
                assert rows_since < _stream.FULL_ROWS_PER_GROUP * km.summary_.n_groups
    # Doubling (and one drift at 600); the full solve at the first call and once the rows
    # folded since it pay for another (19,000 rows, 25 per group of about 410 groups); a
    # re-solve once the rows reach RESOLVE_GROWTH (16) times those of the first solve.
    assert solves == [
        (200, "full"),
        (400, "warm"),
        (600, "warm"),
        (1_200, "warm"),
        (2_400, "warm"),
        (4_800, "fresh"),
        (9_600, "warm"),
        (19_200, "full"),
    ]


def test_a_warm_solve_never_raises_the_bound_and_is_reproducible(mixture):
    km = stream(StreamingKMeans(10, random_state=0), mixture[:3_000], 500)
    state = km._stream_
    summary = state.summary()
    centers = state.centers(km.cluster_centers_)
    bound = summary.cost_bound(centers)
    runs = [_stream.warm_solve(summary, centers, max_iter=300, tol=1e-4, seed=7) for _ in range(2)]
    (out, labels, n_iter), (again, labels_again, _) = runs
    np.testing.assert_array_equal(out, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert 1 <= n_iter <= _stream.WARM_MAX_ITER
    assert summary.cost_bound(out) <= bound * (1 + 1e-9)
    # max_iter=1 (a user's truncated solve) is one Lloyd iteration.
    assert _stream.warm_solve(summary, centers, max_iter=1, tol=1e-4, seed=7)[2] == 1


def test_a_re_solve_leaves_a_basin_that_the_warm_search_keeps():
    # Six separate blobs, the stream's centers all on one of them: a warm solve's swap search
    # (one step of 16 candidates at k=6) and Lloyd's steps leave most of them there; the
    # re-solve's fresh start (Ward on a coarse copy) finds the blobs, and keeps the better
    # run, so it is never worse than the warm solve from the same seed.
    rng = np.random.default_rng(0)
    means = rng.normal(scale=50.0, size=(6, 3))
    X = means[rng.integers(0, 6, 6_000)] + rng.normal(size=(6_000, 3))
    summary = StreamingKMeans(6, random_state=0).fit(X).summary_
    bad = means[0] + rng.normal(scale=0.5, size=(6, 3))
    warm, _, _ = _stream.warm_solve(summary, bad, max_iter=300, tol=1e-4, seed=3)
    fresh, labels, _ = _stream.warm_solve(summary, bad, max_iter=300, tol=1e-4, seed=3, fresh=True)
    assert summary.cost_bound(fresh) < 0.1 * summary.cost_bound(warm)
    assert sorted(np.bincount(labels, minlength=6) > 0) == [True] * 6
    np.testing.assert_allclose(np.sort(fresh[:, 0]), np.sort(means[:, 0]), atol=0.2)
    # From good centers the incumbent's run is kept (the fresh start does not beat it).
    again, _, _ = _stream.warm_solve(summary, fresh, max_iter=300, tol=1e-4, seed=3)
    kept, _, _ = _stream.warm_solve(summary, fresh, max_iter=300, tol=1e-4, seed=3, fresh=True)
    assert summary.cost_bound(kept) <= summary.cost_bound(again) * (1 + 1e-12)


def test_a_re_solve_beyond_the_ward_start_takes_one_restart():
    # Above k = 250 the full solve has no Ward start; a re-solve's fresh start is one
    # k-means++ restart and Lloyd (on a coarse copy of 20 points per cluster, here on the
    # points themselves).
    rng = np.random.default_rng(1)
    points = rng.normal(size=(3_000, 3))
    w = rng.uniform(0.5, 2.0, 3_000)
    start = _stream.fresh_start(points, w, 260, np.random.default_rng(0), 1e-4)
    assert start.shape == (260, 3) and np.unique(start, axis=0).shape[0] == 260
    summary = Summary(w, points * w[:, None], w * np.einsum("ij,ij->i", points, points), 3_000)
    bad = points[:260] * 0.01  # every center near the middle
    warm, _, _ = _stream.warm_solve(summary, bad, max_iter=300, tol=1e-4, seed=2)
    fresh, _, _ = _stream.warm_solve(summary, bad, max_iter=300, tol=1e-4, seed=2, fresh=True)
    assert summary.cost_bound(fresh) < summary.cost_bound(warm)


def test_a_warm_solve_moves_a_center_whose_part_decayed_away():
    # With half_life at half a batch every call is due (a solve at least every two
    # half-lives); a center left on a regime that decayed away has almost no weight, which
    # Lloyd's steps keep in place: the swap search moves it.
    rng = np.random.default_rng(1)
    km = StreamingKMeans(3, random_state=0, half_life=150)
    for shift in np.repeat([0.0, 60.0], 8):
        blobs = rng.choice([0.0, 12.0, 24.0], (300, 1))
        km.partial_fit(rng.normal(size=(300, 2)) + [shift, 0.0] + blobs)
    assert solve_kind(km) == "warm"
    np.testing.assert_allclose(np.sort(km.cluster_centers_[:, 1]), [0, 12, 24], atol=0.5)


def test_large_drift_runs_the_full_solve():
    rng = np.random.default_rng(2)
    km = StreamingKMeans(3, random_state=0)
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    for _ in range(6):
        km.partial_fit(means[rng.integers(0, 3, 400)] + rng.normal(size=(400, 2)))
    # A batch whose rows lie 5 standard deviations beyond the first clusters: the bound per
    # unit weight rises by more than FULL_DRIFT long before the rows double.
    km.partial_fit(means[rng.integers(0, 3, 400)] * 1.5 + rng.normal(size=(400, 2)))
    assert solve_kind(km) == "full"


def test_rows_sorted_by_a_feature_get_a_solve_when_a_batch_jumps(monkeypatch):
    # Each few batches bring a group no center serves; the drift rule waited for an eighth
    # of the rows, so the last call left the centers at 3.68 times fit's cost (60,000 rows).
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30_000, 5)) + 8.0 * rng.integers(0, 12, size=(30_000, 1))
    X = X[np.argsort(X[:, 0], kind="stable")]

    def stream_cost():
        km = StreamingKMeans(12, random_state=0)
        for start in range(0, X.shape[0], 1_000):
            km.partial_fit(X[start : start + 1_000])
        true = true_cost(X, km.cluster_centers_)
        assert km.inertia_ >= true * (1 - 1e-9)  # the bound says how far off it is
        return true

    fit = true_cost(X, StreamingKMeans(12, random_state=0).fit(X).cluster_centers_)
    assert stream_cost() <= 1.02 * fit
    monkeypatch.setattr(_stream, "JUMP_DRIFT", np.inf)  # no jump rule: the old behaviour
    assert stream_cost() > 1.5 * fit


def test_a_first_batch_gets_the_restarts_its_rows_pay_for(mixture):
    per_group = _stream.FIRST_ROWS_PER_GROUP
    small = Summary(np.ones(500), np.zeros((500, 2)), np.zeros(500), 4_096)
    large = Summary(np.ones(3_125), np.zeros((3_125, 2)), np.zeros(3_125), 100_000)
    assert _stream.first_restarts(small, 10) == 10 * 4_096 // (per_group * 500) == 3
    assert _stream.first_restarts(large, 10) == 10
    assert _stream.first_restarts(Summary(np.ones(9), np.zeros((9, 2)), np.zeros(9), 9), 10) == 1
    # Few rows per cluster: at most n_init times the rows over FIRST_ROWS_PER_CLUSTER per cluster.
    per_cluster = _stream.FIRST_ROWS_PER_CLUSTER
    assert _stream.first_restarts(small, 10, 100) == 10 * 4_096 // (per_cluster * 100) == 1
    assert _stream.first_restarts(large, 10, 100) == 10
    # A small first batch is solved with those restarts (as solve_summary with that n_init).
    X = mixture[:2_000]
    km = StreamingKMeans(10, random_state=0).partial_fit(X)
    restarts = _stream.first_restarts(km.summary_, 10, 10)
    assert restarts < 10
    centers, _, _ = solve_summary(
        km.summary_,
        10,
        n_init=restarts,
        max_iter=300,
        tol=1e-4,
        seed=_seeds.solve_seed(km._entropy_),
    )
    np.testing.assert_allclose(km.cluster_centers_, centers.astype(np.float32), rtol=1e-6)


def test_refit_runs_the_global_solve_on_request(mixture):
    X = mixture[:6_000]
    km = stream(StreamingKMeans(8, random_state=0), X, 1_000)
    groups = km.summary_.n_groups
    bound = km.summary_.cost_bound(km.refit().cluster_centers_)
    assert km.summary_.n_groups == groups and "_stream_" not in km.__dict__
    np.testing.assert_allclose(km.inertia_, bound)
    assert not hasattr(km, "labels_")


def test_decay_equals_a_fit_with_the_corresponding_weights(mixture):
    X, batch, half_life = mixture[:12_000], 1_000, 3_000.0
    km = stream(StreamingKMeans(10, random_state=0, half_life=half_life), X, batch)
    # Row i of batch b weighs 2 ** (-(rows after batch b) / half_life).
    ends = (np.arange(X.shape[0]) // batch + 1) * batch
    w = 2.0 ** (-(X.shape[0] - ends) / half_life)
    s = km.summary_
    np.testing.assert_allclose(s.total_weight, w.sum(), rtol=1e-12)
    np.testing.assert_allclose(s.centroids.T @ s.weights, X.T.astype(np.float64) @ w, rtol=1e-9)
    # The bound for one center at zero is the weighted sum of squares: exact for one center.
    np.testing.assert_allclose(
        s.cost_bound(np.zeros((1, X.shape[1]))),
        (w * (X.astype(np.float64) ** 2).sum(axis=1)).sum(),
        rtol=1e-9,
    )
    weighted = StreamingKMeans(10, random_state=0).fit(X, sample_weight=w)
    cost = exact_cost(X, km.cluster_centers_, w)
    assert cost <= 1.05 * exact_cost(X, weighted.cluster_centers_, w)
    assert km.inertia_ >= cost * (1 - 1e-9)


def test_decay_follows_a_drifting_stream():
    rng = np.random.default_rng(0)
    km = StreamingKMeans(2, random_state=0, half_life=100)
    for shift in np.repeat([0.0, 100.0], 10):
        km.partial_fit(rng.normal(size=(200, 2)) + [shift, 0.0] + rng.choice([0, 10], (200, 1)))
    # After 2,000 rows of the second regime the first weighs 2 ** -20 of it: both centers
    # follow the two clusters of the second regime.
    assert np.all(km.cluster_centers_[:, 0] > 90)


def test_pipeline_drives_partial_fit(mixture):
    X = mixture[:6_000]
    pipe = Pipeline([("scale", StandardScaler()), ("km", StreamingKMeans(6, random_state=0))])
    pipe["scale"].fit(X[:1_000])
    for start in range(0, X.shape[0], 1_000):
        pipe["km"].partial_fit(pipe[:-1].transform(X[start : start + 1_000]))
    assert pipe["km"].n_rows_seen_ == 6_000
    np.testing.assert_array_equal(pipe.predict(X), pipe["km"].predict(pipe["scale"].transform(X)))


def test_dask_ml_incremental(mixture):
    wrappers = pytest.importorskip("dask_ml.wrappers")
    import dask.array as da

    X = mixture[:12_000]
    Y = da.from_array(X, chunks=(2_000, -1))
    inc = wrappers.Incremental(StreamingKMeans(8, random_state=0)).fit(Y)
    km = inc.estimator_
    assert km.n_rows_seen_ == 12_000
    fit = StreamingKMeans(8, random_state=0).fit(Y)
    assert exact_cost(X, km.cluster_centers_) <= 1.03 * exact_cost(X, fit.cluster_centers_)
    np.testing.assert_array_equal(inc.predict(Y).compute(), km.predict(X))


def test_dask_batches_fold_chunk_by_chunk(mixture):
    import dask.array as da

    X = mixture[:6_000]
    a = StreamingKMeans(6, random_state=0).partial_fit(X[:1_500])
    b = StreamingKMeans(6, random_state=0).partial_fit(X[:1_500])
    # One fold with no global solve due (500 rows after 1,500): the same groups, added up
    # by chunk or at once.
    a.partial_fit(X[1_500:2_000])
    b.partial_fit(da.from_array(X[1_500:2_000], chunks=(200, -1)))
    np.testing.assert_allclose(b.cluster_centers_, a.cluster_centers_, rtol=1e-9)
    np.testing.assert_allclose(b.inertia_, a.inertia_, rtol=1e-9)
    np.testing.assert_array_equal(b.labels_.compute(), a.labels_)
    for start in range(2_000, 6_000, 1_000):
        b.partial_fit(da.from_array(X[start : start + 1_000], chunks=(300, -1)))
    assert b.n_rows_seen_ == 6_000
    assert b.inertia_ >= exact_cost(X, b.cluster_centers_) * (1 - 1e-9)


def test_a_large_batch_is_folded_in_pieces_alike_on_every_scheduler(mixture):
    import dask

    # More rows than FOLD_PIECE_ROWS: equal pieces of rows, one task each; the pieces depend
    # on the rows only, so threads and the synchronous scheduler give the same model.
    X = np.concatenate([mixture] * 3)  # 72,000 rows: 3 pieces
    w = np.random.default_rng(0).uniform(0.5, 2.0, X.shape[0])
    models = []
    for scheduler in ("threads", "sync"):
        km = StreamingKMeans(8, random_state=0).partial_fit(mixture[:4_000])
        with dask.config.set(scheduler=scheduler):
            km.partial_fit(X, sample_weight=w)
        models.append(km)
    a, b = models
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_
    np.testing.assert_array_equal(a.labels_, a.predict(X))
    s = a.summary_
    np.testing.assert_allclose(s.total_weight, 4_000 + w.sum())
    np.testing.assert_allclose(
        s.centroids.T @ s.weights,
        mixture[:4_000].sum(axis=0, dtype=np.float64) + X.T.astype(np.float64) @ w,
        rtol=1e-9,
    )


def test_dask_weights_of_a_folded_batch_keep_the_accepted_range(mixture):
    # A folded batch's weights go into the running sums as a fit's do: outside the range,
    # the task of the chunk that holds them refuses them, naming the chunk.
    import dask.array as da

    km = StreamingKMeans(6, random_state=0).partial_fit(mixture[:1_500])
    w = np.ones(500)
    w[300] = 1e9
    with pytest.raises(ValueError, match=r"ratio of 1e\+09.* in chunk 1|in chunk 1.*ratio"):
        km.partial_fit(
            da.from_array(mixture[1_500:2_000], chunks=(200, -1)),
            sample_weight=da.from_array(w, chunks=200),
        )
    km.partial_fit(mixture[1_500:2_000], sample_weight=np.where(w > 1, 1e6, w))  # the edge


def long_stream(n_calls, budget):
    rng = np.random.default_rng(0)
    means = rng.normal(scale=20, size=(20, 3))
    km = StreamingKMeans(4, random_state=0, summary_size=20, merge_budget=budget)
    sizes, solves = [], 0
    for i in range(n_calls):
        km.partial_fit(means[rng.integers(0, 20, 8)] + rng.normal(size=(8, 3)))
        solves += solve_kind(km) is not None
        if i % 50 == 0:
            sizes.append(km.summary_.n_groups)
    return km, sizes, solves


@pytest.mark.parametrize("n_calls", [1_000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_long_stream_keeps_the_summary_bounded(n_calls):
    budget = 120
    km, sizes, solves = long_stream(n_calls, budget)
    # Work per call is bounded: the summary never holds more than the budget plus what one
    # batch adds, and the global solves are about log2(calls) (doubling) plus the budget's.
    assert max(sizes) <= budget + 8
    assert solves <= 4 * np.log2(n_calls)
    assert km.n_rows_seen_ == 8 * n_calls


def test_a_summary_over_the_budget_is_rekeyed_and_solved_warm(mixture):
    # Over the merge budget, the groups are added up by their key for the current centers
    # (one distance pass), not reduced by seeding; the CF sums are kept exactly and the
    # scheduled solve stays warm (a re-solve, once the rows reach 16 times the first
    # solve's, is a warm solve too).
    X = mixture[:12_000]
    km = StreamingKMeans(6, random_state=0, merge_budget=600)
    kinds = [kind for _, kind in global_solves(km, X, 500, kinds=True)]
    assert kinds[0] == "full" and set(kinds[1:]) == {"warm", "fresh"}
    state = km._stream_
    summary = state.summary()
    rekeyed = _stream.rekey(summary, km.cluster_centers_.astype(np.float64))
    assert rekeyed.n_groups < summary.n_groups
    assert rekeyed.n_groups <= 6 * 5 * _stream.STREAM_BANDS
    assert rekeyed.n_seen == summary.n_seen
    np.testing.assert_allclose(rekeyed.total_weight, summary.total_weight, rtol=1e-12)
    np.testing.assert_allclose(
        rekeyed.linear_sums.sum(axis=0), summary.linear_sums.sum(axis=0), rtol=1e-9
    )
    np.testing.assert_allclose(rekeyed.square_sums.sum(), summary.square_sums.sum(), rtol=1e-12)
    # Every row still counted, and the bound still bounds the rows' cost.
    np.testing.assert_allclose(km.summary_.total_weight, X.shape[0])
    assert km.summary_.n_groups <= 600 + 6 * 5 * _stream.STREAM_BANDS
    assert km.inertia_ >= exact_cost(X, km.cluster_centers_) * (1 - 1e-9)
    # Re-keyed groups keep the bound: no center set costs less on them than on the rows.
    centers = km.cluster_centers_.astype(np.float64)
    assert rekeyed.cost_bound(centers) >= exact_cost(X, centers) * (1 - 1e-9)


def test_far_from_is_decided_from_the_groups_as_from_the_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2_000, 3))
    centers = X[:4].astype(np.float64)
    # The threshold (32 root-mean-square deviations) lies between shifts 31 and 33 here.
    for shift, far in ((0.0, False), (31.0, False), (33.0, True), (1_000.0, True)):
        rows = X + shift
        # Centers with the rows (a model that followed them), the origin at zero.
        out = _stream.batch_groups(rows, centers + shift, np.zeros(3))
        mean = rows.mean(axis=0)
        spread = ((rows - mean) ** 2).sum(axis=1).mean()
        assert bool(float(mean @ mean) > 32**2 * spread) is far
        assert (out is None) is far


def test_a_streams_small_products_run_on_one_blas_thread():
    from threadpoolctl import threadpool_info

    from dask_streamkm import _threads

    def blas():
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    before = blas()
    with _threads.one_blas_thread(4_096 * 32):
        assert blas() == {1}
    assert blas() == before
    with _threads.one_blas_thread(_threads.SINGLE_THREAD_VALUES + 1):
        assert blas() == before


def call_times(km, batches):
    """CPU seconds of this thread for each partial_fit call (load on other cores aside)."""
    import time

    out = []
    for batch in batches:
        t = time.thread_time()
        km.partial_fit(batch)
        out.append(time.thread_time() - t)
    return np.array(out)


@pytest.mark.parametrize("n_calls", [1_000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_per_call_time_does_not_grow_with_the_calls(n_calls):
    # A call folds its batch at the cost of one distance pass over it, whatever the calls
    # before it: the median call of the last tenth of the stream is no slower than that of
    # the second tenth (the global solves, a few calls, do not move the medians).
    rng = np.random.default_rng(0)
    means = rng.normal(scale=20, size=(40, 8))
    batches = [means[rng.integers(0, 40, 256)] + rng.normal(size=(256, 8)) for _ in range(n_calls)]
    km = StreamingKMeans(10, random_state=0)
    times = call_times(km, batches)
    tenth = n_calls // 10
    early, late = np.median(times[tenth : 2 * tenth]), np.median(times[-tenth:])
    assert late <= 1.5 * early + 2e-4, (early, late)
    assert km.n_rows_seen_ == 256 * n_calls
    assert km.summary_.n_groups <= 10 * 9 * _stream.STREAM_BANDS + 5 * 10 * 256


def test_dask_ml_incremental_with_half_life(mixture):
    wrappers = pytest.importorskip("dask_ml.wrappers")
    import dask.array as da

    X, block, half_life = mixture[:12_000], 2_000, 3_000.0
    Y = da.from_array(X, chunks=(block, -1))
    inc = wrappers.Incremental(
        StreamingKMeans(8, random_state=0, half_life=half_life), shuffle_blocks=False
    ).fit(Y)
    km = inc.estimator_
    # Blocks in order: row i of block b weighs 2 ** (-(rows after block b) / half_life).
    ends = (np.arange(X.shape[0]) // block + 1) * block
    w = 2.0 ** (-(X.shape[0] - ends) / half_life)
    np.testing.assert_allclose(km.summary_.total_weight, w.sum(), rtol=1e-12)
    weighted = StreamingKMeans(8, random_state=0).fit(X, sample_weight=w)
    cost = exact_cost(X, km.cluster_centers_, w)
    assert cost <= 1.03 * exact_cost(X, weighted.cluster_centers_, w)
    assert km.inertia_ >= cost * (1 - 1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_centers", [1, 2, 100])
def test_nearest_two_against_a_numpy_reference(dtype, n_centers):
    from dask_streamkm import _distances

    rng = np.random.default_rng(n_centers)
    # Far from zero (1e3 away, spread 1): the kernel works relative to the centers' mean.
    X = (1e3 + rng.normal(size=(3_000, 7))).astype(dtype)
    centers = X[rng.choice(3_000, n_centers, replace=False)].astype(np.float64) + 0.1
    d = ((X.astype(np.float64)[:, None, :] - centers[None]) ** 2).sum(axis=2)
    ranked = np.sort(d, axis=1)
    first, second, d1, d2 = _distances.nearest_two(X, centers.astype(dtype))
    assert first.dtype == second.dtype == np.int64 and d1.dtype == d2.dtype == np.float64
    rows = np.arange(X.shape[0])
    # Ties within the dtype's precision may rank either way: compare distances.
    tol = 1e-4 if dtype == np.float32 else 1e-9
    scale = ranked[:, -1:].max()
    np.testing.assert_allclose(d[rows, first], ranked[:, 0], atol=tol * scale)
    np.testing.assert_allclose(d1, ranked[:, 0], atol=tol * scale)
    if n_centers == 1:
        np.testing.assert_array_equal(second, first)
        np.testing.assert_array_equal(d2, d1)
    else:
        assert np.all(second != first)
        np.testing.assert_allclose(d[rows, second], ranked[:, 1], atol=tol * scale)
        np.testing.assert_allclose(d2, ranked[:, 1], atol=tol * scale)


def test_a_numpy_batch_is_folded_without_a_dask_array(mixture, monkeypatch):
    import dask.array as da

    from dask_streamkm import estimator

    X = mixture[:6_000].astype(np.float32)
    as_dask = stream(StreamingKMeans(5, random_state=0), da.from_array(X, chunks=500), 500)
    km = StreamingKMeans(5, random_state=0).partial_fit(X[:500])
    made = []
    real = estimator.da.from_array
    monkeypatch.setattr(estimator.da, "from_array", lambda *a, **k: made.append(1) or real(*a, **k))
    wrapped = 0
    for start in range(500, X.shape[0], 500):
        before = len(made)
        km.partial_fit(X[start : start + 500])
        wrapped += len(made) - before
        np.testing.assert_array_equal(km.labels_, km.predict(X[start : start + 500]))
    # Folded without wrapping the batch in a dask array...
    assert wrapped == 0
    # ...with the centers, bound and summary of the same batches as dask arrays.
    np.testing.assert_array_equal(km.cluster_centers_, as_dask.cluster_centers_)
    assert km.inertia_ == as_dask.inertia_
    np.testing.assert_array_equal(km.labels_, as_dask.labels_)
    assert km.summary_.n_groups == as_dask.summary_.n_groups


def test_a_numpy_batch_folded_as_it_is_is_still_checked(mixture):
    km = StreamingKMeans(5, random_state=0).partial_fit(mixture[:500])
    bad = mixture[500:1_000].copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity in chunk 0"):
        km.partial_fit(bad)
    with pytest.raises(ValueError, match="features"):
        km.partial_fit(mixture[500:1_000, :3])
    # Nothing was folded by the refused batches.
    assert km.n_rows_seen_ == 500
    # A model fitted with feature names warns for an array, as scikit-learn's estimators do.
    pd = pytest.importorskip("pandas")
    named = StreamingKMeans(5, random_state=0).partial_fit(
        pd.DataFrame(mixture[:500]).add_prefix("f")
    )
    with pytest.warns(UserWarning, match="feature names"):
        named.partial_fit(mixture[500:1_000])
    assert named.n_rows_seen_ == 1_000


def assert_bounded_lloyd_is_lloyd(points, start, weights, max_iter):
    """bounded_lloyd gives the centers, labels and iterations of Lloyd with keep_best."""
    ref_centers, ref_labels, _, ref_iter = _lloyd.lloyd(
        points, start, weights, max_iter=max_iter, tol=1e-4, keep_best=True, fixed_origin=True
    )
    centers, labels, n_iter = _stream.bounded_lloyd(
        points, start, weights, max_iter=max_iter, tol=1e-4
    )
    assert n_iter == ref_iter
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(centers, ref_centers, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("max_iter", [1, 5, 60])
def test_bounded_lloyd_gives_lloyds_centers_and_labels(max_iter):
    # The warm solve's Lloyd steps compare only the points whose bounds may cross with every
    # center: the same centers, labels and iterations as comparing all of them.
    rng = np.random.default_rng(4)
    means = rng.normal(scale=6.0, size=(12, 3))
    points = means[rng.integers(0, 12, 3_000)] + rng.normal(size=(3_000, 3))
    points -= points.mean(axis=0)
    weights = rng.uniform(0.1, 3.0, 3_000)
    start = points[rng.choice(3_000, 8, replace=False)].astype(np.float64)
    assert_bounded_lloyd_is_lloyd(points, start, weights, max_iter)


@pytest.mark.parametrize("max_iter", [1, 5, 60])
def test_bounded_lloyd_with_a_far_moving_center_gives_lloyds_centers(max_iter):
    # 49 centers on 48 blobs (the far-movers bound applies from 16 centers): each started
    # near its blob, and one more 3 standard deviations beside blob 0, owning only its tail.
    # Its first step moves it several times as far as any other's, into blob 0, where it
    # takes points from blob 0's own center: the bound of those points must count its
    # distances, taken exactly.
    rng = np.random.default_rng(5)
    means = rng.normal(scale=20.0, size=(48, 4))
    raw = means[rng.integers(0, 48, 6_000)] + rng.normal(size=(6_000, 4))
    points = raw - raw.mean(axis=0)
    weights = rng.uniform(0.5, 2.0, 6_000)
    start = means - raw.mean(axis=0) + rng.normal(scale=0.1, size=(48, 4))
    start = np.concatenate([start[:1] + [3.0, 0.0, 0.0, 0.0], start])
    moves = np.linalg.norm(
        _lloyd.lloyd(points, start, weights, max_iter=1, tol=0, fixed_origin=True)[0] - start,
        axis=1,
    )
    assert np.sort(moves)[-1] > 2.0 * np.sort(moves)[-3]
    assert_bounded_lloyd_is_lloyd(points, start, weights, max_iter)


def test_bounded_lloyd_leaves_an_empty_center_to_lloyd():
    points = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    start = np.array([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]])
    assert _stream.bounded_lloyd(points, start, np.ones(4), max_iter=5, tol=1e-4) is None
    # ...and the warm solve still answers (Lloyd re-seeds the empty center).
    summary = Summary(np.ones(4), points, np.einsum("ij,ij->i", points, points), 4)
    centers, labels, _ = _stream.warm_solve(summary, start, max_iter=5, tol=1e-4, seed=0)
    assert centers.shape == (3, 2) and labels.shape == (4,)


def test_bounded_lloyd_leaves_one_center_to_lloyd():
    points = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert _stream.bounded_lloyd(points, points[:1], np.ones(2), max_iter=5, tol=1e-4) is None


def test_a_warm_solve_with_half_life_runs_on_the_archive_rekeyed(mixture):
    # With half_life, the groups of the last global solve (decayed) are added up by their
    # key for the current centers before a warm solve; the rows folded since stay as they are.
    km = StreamingKMeans(10, random_state=0, half_life=2_000)
    stream(km, mixture[:5_300], 500)
    state = km._stream_
    assert state.archive.n_groups > state.pending.n > 0
    centers = state.centers(km.cluster_centers_)
    whole, warm = state.summary(), state.warm_summary(centers, km.half_life)
    assert warm.n_groups < whole.n_groups
    assert warm.n_seen == whole.n_seen
    np.testing.assert_allclose(warm.weights.sum(), whole.weights.sum(), rtol=1e-12)
    np.testing.assert_allclose(warm.linear_sums.sum(0), whole.linear_sums.sum(0), rtol=1e-10)
    np.testing.assert_allclose(warm.square_sums.sum(), whole.square_sums.sum(), rtol=1e-12)
    assert summary_bound_at_most(warm, whole, centers)
    # Without half_life the warm solve runs on the summary itself.
    assert state.warm_summary(centers, None) is whole


def summary_bound_at_most(coarse, fine, centers):
    """Merging groups never lowers the bound (each group to its nearest center)."""
    return fine.cost_bound(centers) <= coarse.cost_bound(centers) * (1 + 1e-9)


def test_full_solves_count_at_least_600_groups_per_cluster():
    # A re-keyed summary holds about 200 groups per cluster; the full solve's fixed part
    # (restarts on a coarse copy) is then most of its work, so the rule counts 600.
    k = 10
    assert not _stream.full_solve_due(100 * 599 * k, 500 * k, k)
    assert _stream.full_solve_due(100 * 600 * k, 500 * k, k)
    assert _stream.full_solve_due(100 * 700 * k, 700 * k, k)
    assert not _stream.full_solve_due(100 * 700 * k - 1, 700 * k, k)


@pytest.mark.parametrize("weighted", [False, True])
def test_batch_groups_large_block_branch_gives_the_one_product_moments(monkeypatch, weighted):
    # A batch over GROUP_SUM_WHOLE_ELEMENTS values takes its moments a row block at a time;
    # the groups' weights, sums and squares are those of the one-product branch.
    from dask_streamkm import _refine_kernels

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(5000, 8)) + 100.0).astype(np.float32)
    centers = rng.normal(size=(10, 8)) + 100.0
    origin = np.full(8, 100.0)
    w = rng.random(5000) + 0.1 if weighted else None
    whole = _stream.batch_groups(X, centers, origin, w)[0]
    monkeypatch.setattr(_refine_kernels, "GROUP_SUM_WHOLE_ELEMENTS", 0)
    monkeypatch.setattr(_stream, "EXACT_BLOCK_ROWS", 1024)  # several row blocks
    blocks = _stream.batch_groups(X, centers, origin, w)[0]
    np.testing.assert_array_equal(blocks[0], whole[0])
    for got, want in zip(blocks[1:], whole[1:], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * float(np.max(np.abs(want))))


@pytest.mark.parametrize("weighted", [False, True])
def test_a_far_row_keeps_a_group_and_a_center_of_its_own_in_a_stream(weighted):
    """A fold keys a row by its two nearest centers and band; a row far from every center
    joined the rows near the border of those two, and that group's error held the far row's
    whole cost for good. It gets a key of its own: a group of its own, then a center."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40_960, 2))
    X[10_000] = [0.0, 300.0]
    w = rng.uniform(0.5, 2.0, X.shape[0]) if weighted else None
    model = StreamingKMeans(5, random_state=0)
    for start in range(0, X.shape[0], 2048):
        rows = slice(start, start + 2048)
        model.partial_fit(X[rows], sample_weight=None if w is None else w[rows])
    summary = model.summary_
    far = np.flatnonzero(summary.centroids[:, 1] > 100)
    assert far.shape[0] == 1
    np.testing.assert_allclose(summary.centroids[far[0]], X[10_000])
    assert summary.weights[far[0]] == (1.0 if w is None else w[10_000])
    # At the far row (a warm solve's centroids are float32: a few digits less).
    assert np.min(np.abs(model.cluster_centers_[:, 1] - 300.0)) < 1e-3
    fit = StreamingKMeans(5, random_state=0).fit(X, sample_weight=w)
    assert model.score(X, sample_weight=w) >= 1.01 * fit.score(X, sample_weight=w)


def test_far_rows_are_the_costliest_over_the_bound_and_equal_rows_share_a_serial():
    d1 = np.array([0.5, 9.0, 3.0, 50.0, 0.1])
    np.testing.assert_array_equal(_stream.far_rows(d1, None, 2.0), [1, 2, 3])
    np.testing.assert_array_equal(_stream.far_rows(d1, np.array([1, 0.1, 1, 1, 1.0]), 2.0), [2, 3])
    assert _stream.far_rows(d1, None, np.inf).shape == (0,)
    many = np.arange(200.0)
    far = _stream.far_rows(many, None, 10.0)
    np.testing.assert_array_equal(far, np.arange(199, 199 - _stream.FAR_ROWS_PER_BATCH, -1))
    rows = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0]])
    serials = _stream.row_serials(rows, _stream.serial_bits(100))
    assert serials[0] == serials[1] != serials[2]
    assert np.all((serials >= 1) & (serials < 2 ** _stream.serial_bits(100)))


def test_stream_keys_shells_split_a_cell_by_distance_from_its_center():
    """A key holds the nearest center, the second, the band and (with a mean cost) the shell
    of the row's cost to its nearest center, a factor 4 apart; the nearest center is read
    back from any key."""
    k = 3
    first, second = np.array([0, 0, 0, 0, 2]), np.array([1, 1, 1, 1, 0])
    d1 = np.array([0.01, 0.5, 2.0, 50.0, 3.0])
    d2 = 1e6 + d1  # deep in the cell: one band for all
    plain = _stream.stream_keys(first, second, d1, d2, k)
    assert np.unique(plain[:4]).shape[0] == 1
    keys = _stream.stream_keys(first, second, d1, d2, k, scale=1.0)
    np.testing.assert_array_equal(keys % _stream.STREAM_SHELLS, [0, 1, 2, 3, 2])
    np.testing.assert_array_equal(keys // _stream.STREAM_SHELLS, plain // _stream.STREAM_SHELLS)
    np.testing.assert_array_equal(keys // (k * _stream.KEY_SPAN), first)
    for scale in (None, 0.0, np.inf):
        np.testing.assert_array_equal(_stream.stream_keys(first, second, d1, d2, k, scale), plain)


@pytest.mark.parametrize("drift", [True, False])
def test_slow_drift_runs_a_resolve_before_the_rows_grow(drift, monkeypatch):
    # Three clusters that move a little at every batch: the bound per unit weight rises a
    # few per cent between the doubling solves, never FULL_DRIFT at once, but more than
    # RESOLVE_DRIFT since the first solve long before the rows reach RESOLVE_GROWTH times
    # the first batch's.
    if not drift:
        monkeypatch.setattr(_stream, "RESOLVE_DRIFT", np.inf)
    rng = np.random.default_rng(4)
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    km = StreamingKMeans(3, random_state=0)
    kinds = []
    for i in range(14):
        X = means[rng.integers(0, 3, 400)] + rng.normal(size=(400, 2)) + [0.3 * i, 0.0]
        km.partial_fit(X)
        kind = solve_kind(km)
        if kind:
            kinds.append((km.n_rows_seen_, kind))
    assert km.n_rows_seen_ < _stream.RESOLVE_GROWTH * 400
    assert kinds[0] == (400, "full") and "full" not in [kind for _, kind in kinds[1:]], kinds
    assert ("fresh" in [kind for _, kind in kinds]) == drift, kinds
