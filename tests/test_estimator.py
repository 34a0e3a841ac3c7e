"""StreamingKMeans on numpy, dask and zarr input: fit, partial_fit, refit, predict, score."""

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning

from dask_streamkm import StreamingKMeans, Summary

K = 4


@pytest.fixture(scope="module")
def blobs():
    centers = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]], dtype=float)
    X, y = make_blobs(n_samples=3000, centers=centers, cluster_std=1.0, random_state=0)
    return X, y, centers


def sq_dist(X, C):
    return ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)


def exact_inertia(X, C, w=None):
    d = sq_dist(X, C).min(axis=1)
    return float(np.sum(d if w is None else w * d))


def assert_same_centers(got, expected, atol):
    """Centers equal up to order (each expected center matched to a distinct found one)."""
    from scipy.optimize import linear_sum_assignment

    got = np.asarray(got)
    rows, cols = linear_sum_assignment(sq_dist(expected, got))
    assert len(rows) == len(expected)
    np.testing.assert_allclose(got[cols], expected[rows], atol=atol)


def as_zarr(X, path, chunk_rows=700):
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(
        store=str(path), shape=X.shape, chunks=(chunk_rows, X.shape[1]), dtype=X.dtype
    )
    z[:] = X
    return zarr.open(str(path), mode="r")


def make_input(kind, X, tmp_path):
    if kind == "numpy":
        return X
    if kind == "dask":
        return da.from_array(X, chunks=(700, -1))
    return as_zarr(X, tmp_path / "x.zarr")


# ---------------------------------------------------------------------- input types
@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
def test_fit_predict_transform_score(blobs, kind, tmp_path):
    X, y, true_centers = blobs
    Xin = make_input(kind, X, tmp_path)
    km = StreamingKMeans(K, random_state=0)
    assert km.fit(Xin) is km
    assert km.cluster_centers_.shape == (K, 3) and km.cluster_centers_.dtype == np.float64
    assert km.n_features_in_ == 3 and km.n_rows_seen_ == 3000 and km.n_iter_ >= 1
    assert isinstance(km.summary_, Summary)
    assert_same_centers(km.cluster_centers_, true_centers, atol=0.2)

    lazy = kind != "numpy"
    labels = km.predict(Xin)
    assert isinstance(labels, da.Array) == lazy
    labels = np.asarray(labels)
    expected = sq_dist(X, km.cluster_centers_).argmin(axis=1)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(np.asarray(km.labels_), expected)

    dist = km.transform(Xin)
    assert isinstance(dist, da.Array) == lazy
    np.testing.assert_allclose(
        np.asarray(dist), np.sqrt(sq_dist(X, km.cluster_centers_)), rtol=1e-6, atol=1e-6
    )

    score = km.score(Xin)
    np.testing.assert_allclose(score, -exact_inertia(X, km.cluster_centers_), rtol=1e-9)
    assert km.inertia_ >= -score * (1 - 1e-12)

    fp = StreamingKMeans(K, random_state=0).fit_predict(Xin)
    assert isinstance(fp, da.Array) == lazy
    np.testing.assert_array_equal(np.asarray(fp), expected)


def test_zarr_and_dask_same_chunks_same_centers(blobs, tmp_path):
    X = blobs[0]
    a = StreamingKMeans(K, random_state=3).fit(as_zarr(X, tmp_path / "a.zarr", 700))
    b = StreamingKMeans(K, random_state=3).fit(da.from_array(X, chunks=(700, -1)))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_numpy_and_single_block_dask_same_centers(blobs):
    X = blobs[0]
    a = StreamingKMeans(K, random_state=3).fit(X)
    b = StreamingKMeans(K, random_state=3).fit(da.from_array(X, chunks=(-1, -1)))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_float32_input(blobs):
    X = blobs[0].astype(np.float32)
    km = StreamingKMeans(K, random_state=0).fit(da.from_array(X, chunks=(1000, -1)))
    # As sklearn's KMeans: float32 centers and int32 labels; the summary stays float64.
    assert km.cluster_centers_.dtype == np.float32
    assert km.summary_.linear_sums.dtype == np.float64
    assert_same_centers(km.cluster_centers_, blobs[2], atol=0.2)
    labels = km.predict(da.from_array(X, chunks=(1000, -1))).compute()
    assert labels.dtype == np.int32


# ---------------------------------------------------------------------- sample_weight
@pytest.mark.parametrize("form", ["numpy", "dask same chunks", "dask other chunks"])
def test_sample_weight_forms(blobs, form):
    X = blobs[0]
    w = np.random.default_rng(0).random(len(X)) * 3
    Xd = da.from_array(X, chunks=(700, -1))
    wd = {
        "numpy": w,
        "dask same chunks": da.from_array(w, chunks=700),
        "dask other chunks": da.from_array(w, chunks=1100),
    }[form]
    km = StreamingKMeans(K, random_state=0).fit(Xd, sample_weight=wd)
    ref = StreamingKMeans(K, random_state=0).fit(Xd, sample_weight=w)
    np.testing.assert_allclose(km.summary_.total_weight, w.sum(), rtol=1e-12)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_allclose(
        km.score(Xd, sample_weight=wd), -exact_inertia(X, km.cluster_centers_, w), rtol=1e-9
    )


def test_sample_weight_moves_centers():
    # two points; weight decides where the single center goes
    X = np.array([[0.0], [1.0]])
    km = StreamingKMeans(1, random_state=0).fit(X, sample_weight=[3.0, 1.0])
    np.testing.assert_allclose(km.cluster_centers_, [[0.25]])
    np.testing.assert_allclose(km.inertia_, 3 * 0.25**2 + 0.75**2)


def test_scalar_sample_weight(blobs):
    X = blobs[0]
    a = StreamingKMeans(K, random_state=0).fit(X, sample_weight=2.0)
    b = StreamingKMeans(K, random_state=0).fit(X)
    np.testing.assert_allclose(a.summary_.total_weight, 2 * len(X))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------- refit
class CountingArray:
    """An array-like that counts reads (for da.from_array)."""

    def __init__(self, X):
        self.X = X
        self.shape = X.shape
        self.dtype = X.dtype
        self.ndim = X.ndim
        self.reads = 0

    def __getitem__(self, key):
        out = self.X[key]
        if out.size:  # dask slices zero rows to learn the meta; that reads nothing
            self.reads += 1
        return out


def test_refit_does_not_read_X(blobs):
    X = blobs[0]
    counting = CountingArray(X)
    Xd = da.from_array(counting, chunks=(700, -1), asarray=True)
    km = StreamingKMeans(K, random_state=0).fit(Xd)
    reads = counting.reads
    assert reads == len(Xd.chunks[0]), "fit reads each chunk once"
    assert km.refit(n_clusters=2) is km
    assert counting.reads == reads
    assert km.n_clusters == 2 and km.cluster_centers_.shape == (2, 3)
    np.testing.assert_allclose(km.inertia_, km.summary_.cost_bound(km.cluster_centers_), rtol=1e-9)
    km.refit(n_clusters=K, n_init=3)
    assert counting.reads == reads
    assert_same_centers(km.cluster_centers_, blobs[2], atol=0.2)


def test_refit_same_params_same_centers(blobs):
    km = StreamingKMeans(K, random_state=0).fit(blobs[0])
    c = km.cluster_centers_.copy()
    np.testing.assert_array_equal(km.refit().cluster_centers_, c)


def test_refit_rejects_unknown_parameter(blobs):
    km = StreamingKMeans(K, random_state=0).fit(blobs[0])
    with pytest.raises(ValueError, match=r"refit\(\) got \['method'\]"):
        km.refit(method="lloyd")


def test_refit_for_more_clusters_than_rows_is_refused_as_fit_refuses_it():
    # It returned repeated centers with a warning where fit raises.
    X = np.arange(20.0).reshape(10, 2)
    km = StreamingKMeans(2, random_state=0).fit(X)
    centers = km.cluster_centers_
    with pytest.raises(ValueError, match=r"refit\(n_clusters=11\): n_samples=10 should be >= "):
        km.refit(n_clusters=11)
    assert km.n_clusters == 2 and km.cluster_centers_ is centers  # left as it was
    with pytest.raises(ValueError, match=r"n_samples=10 should be >= n_clusters=11"):
        StreamingKMeans(11).fit(X)


def test_refit_for_more_clusters_than_distinct_rows_warns_as_fit_does():
    # 20 rows, 10 distinct: scikit-learn's ConvergenceWarning and duplicate centers.
    X = np.repeat(np.arange(20.0).reshape(10, 2), 2, axis=0)
    km = StreamingKMeans(2, random_state=0).fit(X)
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(10\)"):
        km.refit(n_clusters=11)
    assert km.cluster_centers_.shape == (11, 2)
    assert len(np.unique(km.cluster_centers_, axis=0)) == 10
    with pytest.warns(ConvergenceWarning, match=r"distinct clusters \(10\)"):
        StreamingKMeans(11, random_state=0).fit(X)


def test_refit_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        StreamingKMeans(2).refit(n_clusters=3)


# ---------------------------------------------------------------------- partial_fit
def test_partial_fit_three_batches_close_to_fit(blobs):
    X = blobs[0]
    perm = np.random.default_rng(0).permutation(len(X))
    X = X[perm]
    km = StreamingKMeans(K, random_state=0)
    for batch in np.array_split(X, 3):
        assert km.partial_fit(da.from_array(batch, chunks=(500, -1))) is km
    full = StreamingKMeans(K, random_state=0).fit(X)
    assert km.n_rows_seen_ == len(X)
    np.testing.assert_allclose(km.summary_.total_weight, len(X))
    assert exact_inertia(X, km.cluster_centers_) <= 1.01 * exact_inertia(X, full.cluster_centers_)


def test_partial_fit_harder_data_close_to_kmeans():
    X, _ = make_blobs(n_samples=4000, centers=15, n_features=4, cluster_std=3.0, random_state=2)
    km = StreamingKMeans(15, random_state=0)
    for batch in np.array_split(X, 3):
        km.partial_fit(batch)
    ref = KMeans(15, n_init=3, random_state=0).fit(X)
    assert exact_inertia(X, km.cluster_centers_) <= 1.03 * ref.inertia_


@pytest.mark.parametrize("half_life", [500.0, 2000.0])
def test_half_life_decay(half_life):
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(n, 2)) for n in (300, 200, 100)]
    km = StreamingKMeans(2, random_state=0, half_life=half_life)
    for b in batches:
        km.partial_fit(b)
    # the first batch decayed by the rows after it, the second by the third's
    n1, n2, n3 = (len(b) for b in batches)
    expected = n1 * 2 ** (-(n2 + n3) / half_life) + n2 * 2 ** (-n3 / half_life) + n3
    np.testing.assert_allclose(km.summary_.total_weight, expected, rtol=1e-12)
    assert km.n_rows_seen_ == n1 + n2 + n3


def test_half_life_tracks_drift():
    rng = np.random.default_rng(0)
    km = StreamingKMeans(1, random_state=0, half_life=100.0)
    km.partial_fit(rng.normal(size=(1000, 1)))
    km.partial_fit(rng.normal(size=(1000, 1)) + 10)
    # old data weighs 2^-10 of the new: the center sits at the new data
    assert abs(km.cluster_centers_[0, 0] - 10) < 0.2


def test_partial_fit_then_fit_restarts(blobs):
    X = blobs[0]
    km = StreamingKMeans(K, random_state=0).partial_fit(X[:100])
    km.fit(X)
    assert km.n_rows_seen_ == len(X)


# ---------------------------------------------------------------------- quality
def test_recovers_well_separated_centers():
    rng = np.random.default_rng(1)
    centers = rng.uniform(-100, 100, size=(8, 5))
    X, _ = make_blobs(n_samples=5000, centers=centers, cluster_std=1.0, random_state=1)
    Xd = da.from_array(X, chunks=(800, -1))
    km = StreamingKMeans(8, random_state=0).fit(Xd)
    assert_same_centers(km.cluster_centers_, centers, atol=0.2)


@pytest.mark.parametrize("method", ["stream", "lloyd"])
def test_quality_against_kmeans(method):
    X, _ = make_blobs(n_samples=5000, centers=20, n_features=6, cluster_std=4.0, random_state=3)
    Xd = da.from_array(X, chunks=(1000, -1))
    km = StreamingKMeans(20, random_state=0, method=method).fit(Xd)
    ref = KMeans(20, n_init=3, random_state=0).fit(X)
    ours = exact_inertia(X, km.cluster_centers_)
    assert ours <= 1.03 * ref.inertia_
    assert km.inertia_ >= ours * (1 - 1e-12)


def test_sorted_stream_quality():
    # rows sorted by cluster: each chunk sees only one or two clusters
    X, y = make_blobs(n_samples=4000, centers=8, n_features=3, cluster_std=2.0, random_state=4)
    X = X[np.argsort(y, kind="stable")]
    km = StreamingKMeans(8, random_state=0).fit(da.from_array(X, chunks=(500, -1)))
    ref = KMeans(8, n_init=3, random_state=0).fit(X)
    assert exact_inertia(X, km.cluster_centers_) <= 1.02 * ref.inertia_


def test_params_not_overwritten(blobs):
    km = StreamingKMeans(K, random_state=0)
    before = km.get_params()
    km.fit(blobs[0])
    assert km.get_params() == before


def test_partial_fit_zarr_batches(blobs, tmp_path):
    X = blobs[0]
    z = as_zarr(X, tmp_path / "p.zarr", chunk_rows=500)
    km = StreamingKMeans(K, random_state=0)
    for start in range(0, len(X), 1000):
        km.partial_fit(da.from_array(z, chunks=(500, -1))[start : start + 1000])
    assert km.n_rows_seen_ == len(X)
    assert_same_centers(km.cluster_centers_, blobs[2], atol=0.2)
    assert isinstance(km.predict(z), da.Array)


def test_partial_fit_later_batch_smaller_than_n_clusters(blobs):
    X = blobs[0]
    km = StreamingKMeans(K, random_state=0).partial_fit(X[:1000])
    km.partial_fit(X[1000:1002])  # two rows: fine after the first batch
    assert km.n_rows_seen_ == 1002


def test_scaled_sample_weight_same_centers(blobs):
    X = blobs[0]
    w = np.random.default_rng(1).random(len(X)) + 0.5
    Xd = da.from_array(X, chunks=(700, -1))
    a = StreamingKMeans(K, random_state=0).fit(Xd, sample_weight=w)
    b = StreamingKMeans(K, random_state=0).fit(Xd, sample_weight=7.0 * w)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(7.0 * a.inertia_, b.inertia_, rtol=1e-9)


def test_unit_sample_weight_equals_none(blobs):
    Xd = da.from_array(blobs[0], chunks=(700, -1))
    a = StreamingKMeans(K, random_state=0).fit(Xd, sample_weight=np.ones(len(blobs[0])))
    b = StreamingKMeans(K, random_state=0).fit(Xd)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "k, expected", [(2, 10), (100, 10), (200, 5), (333, 3), (500, 3), (4000, 3)]
)
def test_auto_n_init(k, expected):
    from dask_streamkm._runner import auto_n_init

    assert auto_n_init(k) == expected


@pytest.mark.parametrize(
    "k, points, features, expected",
    [(10, 150, 4, 100), (10, 442, 10, 94), (30, 569, 30, 10), (5, 1797, 64, 10), (3, 2000, 2, 100)],
)
def test_auto_n_init_gives_cheap_restarts_more(k, points, features, expected):
    from dask_streamkm._runner import auto_n_init

    assert auto_n_init(k, points, features) == expected
    assert auto_n_init(500, 10_000, 50) == auto_n_init(500) == 3


def test_a_small_fit_runs_the_restarts_its_size_allows(monkeypatch):
    # 150 rows x 4 at k=10: 100 restarts of k-means++ (each about a millisecond), where 10
    # left iris 1.4 % above KMeans(n_init=10) on one seed of three.
    from dask_streamkm import _runner

    calls = []
    seeding, together = _runner.kmeans_plusplus, _runner.batched_kmeans_plusplus

    def spy(*args, **kw):
        calls.append(1)
        return seeding(*args, **kw)

    def spy_together(X, n_clusters, rngs, *args, **kw):  # the restarts run together
        calls.extend([1] * len(rngs))
        return together(X, n_clusters, rngs, *args, **kw)

    monkeypatch.setattr(_runner, "kmeans_plusplus", spy)
    monkeypatch.setattr(_runner, "batched_kmeans_plusplus", spy_together)
    X = np.random.default_rng(0).normal(size=(150, 4))
    StreamingKMeans(n_clusters=10, random_state=0).fit(X)
    assert len(calls) == 100
    calls.clear()
    StreamingKMeans(n_clusters=10, n_init=7, random_state=0).fit(X)
    assert len(calls) == 7


@pytest.mark.parametrize("n_init, expected", [("auto", "auto"), (4, 4)])
def test_n_init_reaches_the_solve(blobs, monkeypatch, n_init, expected):
    seen = []
    solve = Summary.solve

    def spy(self, n_clusters, n_init=10, **kw):
        seen.append(n_init)
        return solve(self, n_clusters, n_init=n_init, **kw)

    monkeypatch.setattr(Summary, "solve", spy)
    StreamingKMeans(n_clusters=5, n_init=n_init, random_state=0).fit(blobs[0])
    assert seen == [expected]


def test_host_weights_stay_as_they_are_beside_host_chunks():
    """Weights are moved only beside device chunks (tests/test_gpu.py checks that move): a
    numpy-backed weight array next to numpy chunks is passed on untouched, with X's chunks."""
    from dask_streamkm.estimator import _weights_like

    X = da.ones((1_000, 3), chunks=(250, 3))
    w = da.ones((1_000,), chunks=250)
    assert _weights_like(w, X) is w
    km = StreamingKMeans(2)
    masked = da.from_array(np.ma.masked_array(np.ones((1_000, 3))), chunks=(250, 3))
    assert km._as_dask_weight(w, masked) is w
    assert km._as_dask_weight(np.ones(1_000), X).chunks == ((250,) * 4,)


def test_auto_summary_size_shares_groups_between_chunks():
    from dask_streamkm._runner import auto_summary_size

    # One 100,000-row chunk: a group per 32 rows; ten of them: 200 groups per cluster in all.
    assert auto_summary_size(100, 100_000) == 3125
    assert auto_summary_size(100, 100_000, total_rows=1_000_000) == 2000
    assert auto_summary_size(10, 100_000, total_rows=100_000) == 1000
    # Many chunks: down to the floor of 5 groups per cluster, never below.
    assert auto_summary_size(100, 100_000, total_rows=16_000_000) == 500
    assert auto_summary_size(10, 1_000, total_rows=10**9) == 256


def test_auto_summary_size_is_finer_where_clusters_hold_few_rows():
    from dask_streamkm._runner import auto_summary_size

    # 1,000 rows a cluster: 50 groups per cluster in all, not one group per 32 rows.
    assert auto_summary_size(100, 100_000, total_rows=100_000) == 5_000
    assert auto_summary_size(100, 50_000, total_rows=200_000) == 1_563
    assert auto_summary_size(100, 50_000, total_rows=100_000) == 2_500
    # 200 and 100 rows a cluster: one group per 10 rows at most.
    assert auto_summary_size(500, 100_000, total_rows=100_000) == 10_000
    assert auto_summary_size(1000, 100_000, total_rows=100_000) == 10_000
    # Many rows a cluster: as before (a group per 32 rows, 200 per cluster in all).
    assert auto_summary_size(20, 100_000, total_rows=327_346) == 1_222


def test_auto_summary_keeps_every_row_of_small_data():
    from sklearn.cluster import KMeans
    from sklearn.datasets import load_diabetes

    from dask_streamkm._runner import AUTO_EXACT_ROWS, auto_summary_size

    # All the data at most AUTO_EXACT_ROWS rows: one group a row (not a stream's batch).
    assert auto_summary_size(10, 442, total_rows=442) == 442
    assert auto_summary_size(50, 8_000, total_rows=8_000) == 8_000
    assert auto_summary_size(10, 5_000, total_rows=AUTO_EXACT_ROWS) == 5_000
    assert auto_summary_size(10, 5_000, total_rows=5_000, whole=False) == 500
    assert auto_summary_size(50, 20_000, total_rows=20_000) == 2_000
    # Wide rows: at most AUTO_EXACT_VALUES values kept whole (the sums are float64).
    assert auto_summary_size(10, 8_000, total_rows=8_000, n_features=2_000) == 8_000
    wide = auto_summary_size(10, 8_000, total_rows=8_000, n_features=4_000)
    assert wide == auto_summary_size(10, 8_000, total_rows=8_000, whole=False) == 500
    # A chunk that would keep half its rows keeps them all, whatever the data's size.
    assert auto_summary_size(10, 500, total_rows=10**9) == 500
    assert auto_summary_size(10, 600, total_rows=10**9) == 256
    # Real small data (scikit-learn's diabetes, 442 x 10): the summary is the rows
    # themselves, and k=10 is not left 1 % above KMeans(n_init=10) by 256 coarse groups.
    X = load_diabetes().data
    reference = KMeans(10, n_init=10, random_state=0).fit(X).inertia_
    ratios = []
    for seed in range(3):
        km = StreamingKMeans(10, random_state=seed).fit(X)
        assert km.summary_.n_groups == X.shape[0]
        ratios.append(-km.score(X) / reference)
    assert np.median(ratios) < 1.003


def test_sizes_of_the_parameters():
    from dask_streamkm._runner import (
        auto_merge_budget,
        auto_summary_size,
        resolve_merge_budget,
        resolve_summary_size,
    )

    assert resolve_summary_size(10, "auto", 100_000, 10**6) == auto_summary_size(10, 100_000, 10**6)
    assert resolve_summary_size(10, 300.0) == 300
    assert resolve_merge_budget(10, 32, 500, "auto") == auto_merge_budget(10, 32, 500)
    assert resolve_merge_budget(10, 32, 500, 100) == 501  # a merge of two leaves reduces


def test_fitted_metric_is_the_metric_of_the_fit():
    from sklearn.exceptions import NotFittedError

    from dask_streamkm.estimator import fitted_metric

    km = StreamingKMeans(3, metric="cosine", random_state=0)
    with pytest.raises(NotFittedError):
        fitted_metric(km)
    km.fit(np.random.default_rng(0).normal(size=(300, 4)))
    km.set_params(metric="euclidean")
    assert fitted_metric(km) == "cosine"


def test_fit_leaves_share_auto_groups():
    # 8 chunks of 20,000 rows, k=10: 625 groups a chunk alone (a group per 32 rows); shared,
    # 200 * 10 * 20,000 / 160,000 = 250, so the floor of 256 groups per chunk.
    X = da.random.default_rng(0).normal(size=(160_000, 3), chunks=(20_000, 3))
    km = StreamingKMeans(10, random_state=0).fit(X)
    assert 8 * 200 <= km.summary_.n_groups <= 8 * 256
    # The same chunks fitted one at a time (partial_fit) keep 625 groups each.
    one = StreamingKMeans(10, random_state=0).partial_fit(X[:20_000])
    assert 500 <= one.summary_.n_groups <= 625


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_below_the_separate_groups_matches_kmeans(seed):
    # 30 separate Zipf-weighted components, k=10: the final solve has to choose which
    # components to join. Restarts of k-means++ and Lloyd alone settled 1.1-4.2 % above
    # KMeans(n_init=10) here; the Ward start finds a basin as good.
    from dask_streamkm.datasets import make_mixture

    X = make_mixture(60_000, 8, 30, chunks=15_000, random_state=2)
    Xn = X.compute()
    reference = KMeans(n_clusters=10, n_init=10, random_state=0).fit(Xn).inertia_
    model = StreamingKMeans(n_clusters=10, random_state=seed).fit(X)
    assert -model.score(Xn) <= 1.005 * reference


def test_a_pickle_leaves_out_a_lazy_labels_and_the_rows_it_reads():
    # labels_ of a dask input is a graph over the input: pickled, it carried the rows of an
    # in-memory dask array (the pickle as large as the data) or dead references to a
    # persisted one. The pickle holds the model alone and predicts the same labels.
    import pickle

    rng = np.random.default_rng(0)
    X = da.from_array(rng.normal(size=(100_000, 8)), chunks=25_000)  # 6.4 MB of rows
    km = StreamingKMeans(5, random_state=0).fit(X)
    assert hasattr(km.labels_, "dask")
    blob = pickle.dumps(km)
    assert len(blob) < 500_000
    again = pickle.loads(blob)
    assert not hasattr(again, "labels_")
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(again.predict(X).compute(), km.labels_.compute())
    # In-memory input: labels_ is an array, and it is kept.
    local = StreamingKMeans(5, random_state=0).fit(rng.normal(size=(1_000, 8)))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(local)).labels_, local.labels_)


def test_a_deep_copy_keeps_a_lazy_labels_and_a_pickle_still_leaves_it_out():
    # copy.deepcopy went through the pickle's state and dropped a lazy labels_; in memory
    # the graph copies as any other attribute.
    import copy
    import pickle

    from sklearn.base import clone

    rng = np.random.default_rng(0)
    X = da.from_array(rng.normal(size=(2_000, 3)), chunks=500)
    km = StreamingKMeans(4, random_state=0).fit(X)
    copied = copy.deepcopy(km)
    assert copied is not km and hasattr(copied.labels_, "dask")
    np.testing.assert_array_equal(copied.labels_.compute(), km.labels_.compute())
    np.testing.assert_array_equal(copied.cluster_centers_, km.cluster_centers_)
    assert copied.cluster_centers_ is not km.cluster_centers_
    assert copied.summary_ is not km.summary_
    np.testing.assert_array_equal(copied.summary_.weights, km.summary_.weights)
    assert not hasattr(pickle.loads(pickle.dumps(km)), "labels_")
    assert not hasattr(pickle.loads(pickle.dumps(copied)), "labels_")
    # clone copies the parameters only, as ever.
    fresh = clone(km)
    assert fresh.get_params() == km.get_params() and not hasattr(fresh, "cluster_centers_")
    # A copy refits and predicts as the original does.
    np.testing.assert_array_equal(
        copied.refit(n_clusters=3).cluster_centers_, km.refit(n_clusters=3).cluster_centers_
    )
    # A lazy dask DataFrame's labels_ (a dask Series) is kept as well.
    dd = pytest.importorskip("dask.dataframe")
    frame = dd.from_dask_array(X, columns=["a", "b", "c"])
    km = StreamingKMeans(4, random_state=0).fit(frame)
    copied = copy.deepcopy(km)
    np.testing.assert_array_equal(copied.labels_.compute(), km.labels_.compute())
    assert list(copied.feature_names_in_) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "params",
    [{}, {"method": "stream"}, {"method": "lloyd"}, {"metric": "cosine"}, {"refine_passes": 1}],
    ids=["tree", "stream", "lloyd", "cosine", "refine"],
)
def test_a_numpy_input_is_read_in_place_never_copied_or_written(monkeypatch, params):
    import dask_streamkm.estimator as estimator_module

    monkeypatch.setattr(estimator_module, "DEFAULT_CHUNK_ROWS", 700)
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(3_000, 4)) + rng.choice([0.0, 9.0], (3_000, 1))).astype(np.float32)
    before = X.copy()
    km = StreamingKMeans(3, random_state=0, **params)
    # The chunks are read-only views of the caller's rows (da.from_array copied them whole).
    Xd = km._input(X, reset=True)[0]
    graph = Xd.__dask_graph__()
    blocks = [graph[(Xd.name, i, 0)] for i in range(Xd.numblocks[0])]
    assert Xd.chunks[0] == (700, 700, 700, 700, 200)
    assert all(np.shares_memory(b, X) and not b.flags.writeable for b in blocks)
    w = rng.uniform(0.5, 2.0, 3_000)
    wd = km._as_dask_weight(w, Xd, summed=True)
    wgraph = wd.__dask_graph__()
    assert all(
        np.shares_memory(wgraph[(wd.name, i)], w) and not wgraph[(wd.name, i)].flags.writeable
        for i in range(wd.numblocks[0])
    )
    w_before = w.copy()
    km.fit(X)
    km.fit(X, sample_weight=w)
    km.predict(X), km.transform(X), km.score(X, sample_weight=w), km.fit_predict(X)
    km.partial_fit(X)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(w, w_before)
    assert X.flags.writeable and w.flags.writeable


def test_a_numpy_backed_dataarray_is_read_in_place():
    xr = pytest.importorskip("xarray")
    values = np.random.default_rng(1).normal(size=(500, 3))
    data = xr.DataArray(values, dims=("sample", "feature"))
    km = StreamingKMeans(2, random_state=0)
    Xd = km._input(data, reset=True)[0]
    (block,) = [Xd.__dask_graph__()[(Xd.name, 0, 0)]]
    assert np.shares_memory(block, values) and not block.flags.writeable
    before = values.copy()
    km.fit(data).predict(data)
    np.testing.assert_array_equal(values, before)
