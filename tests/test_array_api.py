"""The kernels, the Summary and the per-chunk summarizers on ``array_api_strict`` arrays.

``array_api_strict`` is a CPU package that implements the array API standard and nothing
more: no ``np.`` functions on its arrays, no integer-array assignment, no implicit mixing of
devices. Every function here runs on it, with the same host seed as on numpy, and must give
the numpy result to float tolerance. Arrays are also placed on a second (virtual) device so
that any array created on the default device instead of the data's fails loudly. This is
what keeps the numpy-only habits out of the code path that cupy uses on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from dask_streamkm import Summary, _distances, _lloyd, _runner, _seeding
from dask_streamkm._array import namespace, to_host
from dask_streamkm._summarize import summarize

xps = pytest.importorskip("array_api_strict")

DEVICES = ["default", "device1"]
DTYPES = [np.float64, np.float32]


def _device(name):
    return None if name == "default" else xps.Device(name)


def _tol(dtype):
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-9}


def _strict(a, dev):
    """A numpy array copied into array_api_strict on ``dev``."""
    return xps.asarray(np.asarray(a), device=_device(dev))


def _host(a):
    return np.asarray(to_host(a))


def _assert_strict(a, dev):
    """``a`` is an array_api_strict array on ``dev`` (the namespace and device were kept)."""
    assert namespace(a) is xps, f"expected an array_api_strict array, got {type(a)}"
    want = _device(dev) or xps.Device("CPU_DEVICE")
    assert a.device == want, f"array on {a.device}, expected {want}"


def _data(dtype, n=600, d=5, n_blobs=6, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-8, 8, size=(n_blobs, d))
    X = means[rng.integers(n_blobs, size=n)] + rng.standard_normal((n, d))
    weights = rng.uniform(0.5, 2.0, size=n)
    weights[::17] = 0.0  # zero weights must never seed, and must not break anything
    return X.astype(dtype), weights


@pytest.fixture(params=DEVICES)
def dev(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=["float64", "float32"])
def dtype(request):
    return request.param


# ---------------------------------------------------------------------- kernels
def test_row_norms_and_distances(dev, dtype):
    X, _ = _data(dtype)
    C = X[:7]
    norms = _distances.row_norms_sq(_strict(X, dev))
    _assert_strict(norms, dev)
    np.testing.assert_allclose(_host(norms), _distances.row_norms_sq(X), **_tol(dtype))
    np.testing.assert_allclose(_host(norms), (X.astype(np.float64) ** 2).sum(1), rtol=1e-5)
    d = _distances.sq_distances(_strict(X, dev), _strict(C, dev))
    _assert_strict(d, dev)
    np.testing.assert_allclose(_host(d), _distances.sq_distances(X, C), **_tol(dtype))


def test_nearest(dev, dtype):
    X, _ = _data(dtype)
    C = X[::50]
    labels, dist = _distances.nearest(_strict(X, dev), _strict(C, dev))
    _assert_strict(labels, dev)
    _assert_strict(dist, dev)
    ref_labels, ref_dist = _distances.nearest(X, C)
    np.testing.assert_array_equal(_host(labels), ref_labels)
    np.testing.assert_allclose(_host(dist), ref_dist, **_tol(dtype))
    # A ten-line reference: brute-force distances.
    brute = ((X[:, None, :].astype(np.float64) - C[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(ref_labels, brute.argmin(1))


def test_nearest_mixed_center_dtype(dev):
    """float32 rows with float64 centers (what the summarizer passes) stay on one path."""
    X, _ = _data(np.float32)
    C = X[::40].astype(np.float64)
    labels, dist = _distances.nearest(_strict(X, dev), _strict(C, dev))
    ref_labels, ref_dist = _distances.nearest(X, C)
    np.testing.assert_array_equal(_host(labels), ref_labels)
    np.testing.assert_allclose(_host(dist), ref_dist, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans_plusplus(dev, dtype, weighted):
    X, w = _data(dtype)
    sw = w if weighted else None
    idx = _seeding.kmeans_plusplus(
        _strict(X, dev), 8, np.random.default_rng(3), None if sw is None else _strict(sw, dev)
    )
    _assert_strict(idx, dev)
    ref = _seeding.kmeans_plusplus(X, 8, np.random.default_rng(3), sw)
    np.testing.assert_array_equal(_host(idx), ref)
    if weighted:
        assert np.all(w[_host(idx)] > 0), "a zero-weight row was chosen as a seed"


def test_kmeans_plusplus_all_mass_on_chosen(dev):
    """More centers than distinct points of positive weight: the fallback branch."""
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 4, axis=0)
    w = np.ones(8)
    idx = _seeding.kmeans_plusplus(_strict(X, dev), 4, np.random.default_rng(0), _strict(w, dev))
    ref = _seeding.kmeans_plusplus(X, 4, np.random.default_rng(0), w)
    np.testing.assert_array_equal(_host(idx), ref)
    assert len(set(ref.tolist())) == 4


@pytest.mark.parametrize("weighted", [False, True])
def test_d2_sample(dev, dtype, weighted):
    X, w = _data(dtype)
    sw = w if weighted else None
    idx = _seeding.d2_sample(
        _strict(X, dev), 40, np.random.default_rng(5), None if sw is None else _strict(sw, dev)
    )
    _assert_strict(idx, dev)
    ref = _seeding.d2_sample(X, 40, np.random.default_rng(5), sw)
    np.testing.assert_array_equal(_host(idx), ref)


def test_centers_from_labels(dev, dtype):
    X, w = _data(dtype)
    labels = np.arange(X.shape[0]) % 9
    sums, mass = _lloyd.centers_from_labels(
        _strict(X, dev), _strict(labels, dev), 11, _strict(w, dev)
    )
    _assert_strict(sums, dev)
    ref_sums, ref_mass = _lloyd.centers_from_labels(X, labels, 11, w)
    np.testing.assert_allclose(_host(sums), ref_sums, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(_host(mass), ref_mass, rtol=1e-12)
    assert ref_mass[9] == ref_mass[10] == 0.0


@pytest.mark.parametrize("weighted", [False, True])
def test_lloyd(dev, dtype, weighted):
    X, w = _data(dtype)
    sw = w if weighted else None
    init = X[[0, 1, 2, 3, 4, 5, 6]]
    out = _lloyd.lloyd(
        _strict(X, dev), _strict(init, dev), None if sw is None else _strict(sw, dev), max_iter=50
    )
    ref = _lloyd.lloyd(X, init, sw, max_iter=50)
    _assert_strict(out[0], dev)
    _assert_strict(out[1], dev)
    np.testing.assert_allclose(_host(out[0]), ref[0], **_tol(dtype))
    np.testing.assert_array_equal(_host(out[1]), ref[1])
    np.testing.assert_allclose(out[2], ref[2], rtol=1e-6)
    assert out[3] == ref[3]


def test_lloyd_reseeds_empty_cluster(dev):
    """A center far from every row gets no rows: it is re-seeded, on the data's device."""
    X, _ = _data(np.float64)
    init = np.vstack([X[:3], [[1e3] * X.shape[1]]])
    out = _lloyd.lloyd(_strict(X, dev), _strict(init, dev), max_iter=5)
    ref = _lloyd.lloyd(X, init, max_iter=5)
    _assert_strict(out[0], dev)
    np.testing.assert_allclose(_host(out[0]), ref[0], rtol=1e-9, atol=1e-9)
    assert np.all(np.abs(ref[0]) < 100), "the empty center was not re-seeded"


def test_weighted_kmeans(dev, dtype):
    X, w = _data(dtype)
    out = _runner.weighted_kmeans(_strict(X, dev), 6, np.random.default_rng(1), _strict(w, dev), 3)
    ref = _runner.weighted_kmeans(X, 6, np.random.default_rng(1), w, 3)
    _assert_strict(out[0], dev)
    np.testing.assert_allclose(_host(out[0]), ref[0], **_tol(dtype))
    np.testing.assert_allclose(out[1], ref[1], rtol=1e-6)
    assert out[2] == ref[2]


# ---------------------------------------------------------------------- Summary
def _assert_summary_equal(s, ref, dev, **tol):
    _assert_strict(s.weights, dev)
    _assert_strict(s.linear_sums, dev)
    _assert_strict(s.square_sums, dev)
    assert s.n_groups == ref.n_groups
    assert s.n_seen == ref.n_seen
    tol = tol or {"rtol": 1e-9, "atol": 1e-9}
    np.testing.assert_allclose(_host(s.weights), ref.weights, **tol)
    np.testing.assert_allclose(_host(s.linear_sums), ref.linear_sums, **tol)
    np.testing.assert_allclose(_host(s.square_sums), ref.square_sums, **tol)


@pytest.mark.parametrize("weighted", [False, True])
def test_summary_from_points(dev, dtype, weighted):
    X, w = _data(dtype)
    sw = w if weighted else None
    s = Summary.from_points(_strict(X, dev), None if sw is None else _strict(sw, dev))
    _assert_summary_equal(s, Summary.from_points(X, sw), dev)
    labels = np.arange(X.shape[0]) % 13
    labels[labels == 4] = 12  # label 4 empty: dropped
    s = Summary.from_points(
        _strict(X, dev), None if sw is None else _strict(sw, dev), labels=_strict(labels, dev)
    )
    ref = Summary.from_points(X, sw, labels=labels)
    assert ref.n_groups == 12
    _assert_summary_equal(s, ref, dev)


def test_summary_methods(dev, dtype):
    X, w = _data(dtype)
    a_np = Summary.from_points(X[:300], w[:300])
    b_np = Summary.from_points(X[300:], w[300:], labels=np.arange(300) % 50)
    a = Summary.from_points(_strict(X[:300], dev), _strict(w[:300], dev))
    b = Summary.from_points(
        _strict(X[300:], dev), _strict(w[300:], dev), labels=_strict(np.arange(300) % 50, dev)
    )
    merged, merged_np = a.merge(b), a_np.merge(b_np)
    _assert_summary_equal(merged, merged_np, dev)
    assert merged.total_weight == pytest.approx(merged_np.total_weight, rel=1e-12)
    cents = merged.centroids
    _assert_strict(cents, dev)
    np.testing.assert_allclose(_host(cents), merged_np.centroids, rtol=1e-9, atol=1e-9)
    sse = merged.group_sse
    _assert_strict(sse, dev)
    np.testing.assert_allclose(_host(sse), merged_np.group_sse, rtol=1e-6, atol=1e-6)
    C = X[:5].astype(np.float64)
    assert merged.cost_bound(_strict(C, dev)) == pytest.approx(merged_np.cost_bound(C), rel=1e-9)
    # Reduce (D^2 seeding, weighted Lloyd, group sums) keeps the mass, the same on both.
    reduced, reduced_np = merged.reduce(40, seed=7), merged_np.reduce(40, seed=7)
    assert reduced_np.n_groups <= 40
    _assert_summary_equal(reduced, reduced_np, dev, rtol=1e-7, atol=1e-7)
    assert reduced.total_weight == pytest.approx(merged_np.total_weight, rel=1e-12)
    # Solve on the summary (weighted k-means++ + Lloyd, best of n_init).
    centers, bound, n_iter = merged.solve(6, n_init=3, seed=11)
    centers_np, bound_np, n_iter_np = merged_np.solve(6, n_init=3, seed=11)
    _assert_strict(centers, dev)
    np.testing.assert_allclose(_host(centers), centers_np, rtol=1e-7, atol=1e-7)
    assert bound == pytest.approx(bound_np, rel=1e-7)
    assert n_iter == n_iter_np
    # Round trip to the host.
    host = merged.to_numpy()
    assert isinstance(host.weights, np.ndarray)
    np.testing.assert_array_equal(host.linear_sums, _host(merged.linear_sums))


def test_summary_empty_like(dev):
    s = Summary.empty(3, like=_strict(np.zeros((1, 3)), dev))
    _assert_strict(s.linear_sums, dev)
    assert s.n_groups == 0 and s.n_features == 3


# ---------------------------------------------------------------------- summarizers
@pytest.mark.parametrize("method", ["stream", "lloyd"])
@pytest.mark.parametrize("weighted", [False, True])
def test_summarize(dev, dtype, method, weighted):
    X, w = _data(dtype, n=2000, d=4, n_blobs=8, seed=2)
    sw = w[:2000] if weighted else None
    seed = np.random.SeedSequence(4, spawn_key=(0, 1))
    s = summarize(
        _strict(X, dev),
        60,
        method=method,
        sample_weight=None if sw is None else _strict(sw, dev),
        mini_batch_size=256,
        seed=seed,
    )
    ref = summarize(X, 60, method=method, sample_weight=sw, mini_batch_size=256, seed=seed)
    assert 8 <= ref.n_groups <= 60
    total = X.shape[0] if sw is None else sw.sum()
    assert ref.total_weight == pytest.approx(total, rel=1e-9)
    tol = {"rtol": 1e-4, "atol": 1e-3} if dtype == np.float32 else {}
    _assert_summary_equal(s, ref, dev, **tol)


def test_summarize_small_block_exact(dev):
    X, _ = _data(np.float64, n=30)
    s = summarize(_strict(X, dev), 60, seed=0)
    _assert_summary_equal(s, Summary.from_points(X), dev)
    empty = summarize(_strict(X[:0], dev), 60, seed=0)
    _assert_strict(empty.weights, dev)
    assert empty.n_groups == 0


def test_summarize_merges_light_groups(dev):
    """Light groups merge into their nearest heavy group where the merge adds at most the
    groups' mean own error; a light group far from all others keeps its place."""
    from dask_streamkm._summarize import _merge_light

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6))
    w = rng.uniform(0.5, 2.0, 400)
    labels = np.arange(400) // 2  # 200 groups of two rows: each holds an error of its own
    w[labels % 7 == 0] = 1e-4  # light groups
    X[:2] += 1000.0  # group 0, light, far from every other
    s_np = Summary.from_points(X, w, labels=labels, n_groups=200, check=False)
    s = Summary(
        _strict(s_np.weights, dev),
        _strict(s_np.linear_sums, dev),
        _strict(s_np.square_sums, dev),
        400,
    )
    merged, merged_np = _merge_light(s), _merge_light(s_np)
    n_light = len(range(0, 200, 7))
    assert merged_np.n_groups == 200 - (n_light - 1)
    assert merged_np.total_weight == pytest.approx(w.sum(), rel=1e-12)
    # The far group is still there, as it was.
    far = np.flatnonzero(merged_np.centroids[:, 0] > 500)
    assert far.shape[0] == 1
    assert merged_np.weights[far[0]] == pytest.approx(2e-4, rel=1e-12)
    _assert_summary_equal(merged, merged_np, dev)
    Y = np.vstack([rng.standard_normal((3000, 4)), rng.standard_normal((3, 4)) * 100])
    for method in ("stream", "lloyd"):
        ref = summarize(Y, 80, method=method, mini_batch_size=512, seed=3)
        got = summarize(_strict(Y, dev), 80, method=method, mini_batch_size=512, seed=3)
        _assert_summary_equal(got, ref, dev)


def test_nearest_many_blocks(dev, monkeypatch):
    """Row blocks of 256 (the smallest): labels and distances stitched across blocks."""
    monkeypatch.setattr(_distances, "BLOCK_ELEMENTS", 1)
    X, _ = _data(np.float64, n=700)
    C = X[::70]
    labels, dist = _distances.nearest(_strict(X, dev), _strict(C, dev))
    brute = ((X[:, None, :] - C[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(_host(labels), brute.argmin(1))
    np.testing.assert_allclose(_host(dist), brute.min(1), rtol=1e-9, atol=1e-9)


def test_no_device_to_host_copies(monkeypatch):
    """Summarize, reduce and solve never copy device data to the host.

    On cupy a copy to the host is a per-chunk round trip; only scalars may cross (each a
    device sync). The scalar syncs are counted: about two per mini-batch (the batch cost and
    the number of new centers), plus a few dozen per chunk for seeding and clean-up.
    """
    counts = {"scalar": 0, "shape": 0}
    array_type = type(xps.asarray(0.0))

    def refuse(self, *args, **kwargs):
        raise AssertionError("device data copied to the host")

    def counted(name, key):
        orig = getattr(array_type, name)

        def method(self, *args, **kwargs):
            counts[key] += 1
            return orig(self, *args, **kwargs)

        monkeypatch.setattr(array_type, name, method)

    for name in ("__array__", "__dlpack__"):
        monkeypatch.setattr(array_type, name, refuse)
    for name in ("__float__", "__int__", "__bool__", "__index__"):
        counted(name, "scalar")

    def counted_function(name):
        orig = getattr(xps, name)

        def function(*args, **kwargs):
            counts["shape"] += 1
            return orig(*args, **kwargs)

        monkeypatch.setattr(xps, name, function)

    for name in ("nonzero", "unique_values"):  # data-dependent output shapes sync too
        counted_function(name)
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((20480, 8)) + rng.integers(0, 20, (20480, 1))).astype(np.float32)
    n_batches = (20480 - 1024) // 1024 + 1
    s = summarize(_strict(X, "device1"), 200, method="stream", mini_batch_size=1024, seed=1)
    per_chunk = counts["scalar"] + counts["shape"]
    assert per_chunk <= 3 * n_batches + 40, counts
    s.reduce(50, seed=0)
    s.solve(10, n_init=2, seed=0)
    _assert_strict(s.weights, "device1")
