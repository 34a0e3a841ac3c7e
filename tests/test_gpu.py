"""The cupy path: same centers as numpy, cupy in and cupy out, no host round trips.

Tests marked ``gpu`` need cupy and a CUDA device and are skipped cleanly without them
(``pytest -m gpu`` selects them; the default run deselects them). The last test runs the
GPU benchmark's logic on numpy at a tiny size, so that CPU CI keeps the script working.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans, Summary, _distances, _lloyd, _seeding
from dask_streamkm._summarize import summarize
from dask_streamkm.datasets import make_mixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cp():
    """The cupy module, or a clean skip where cupy or a CUDA device is missing."""
    cupy = pytest.importorskip("cupy")
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver, ImportError of libcuda...
        pytest.skip(f"cupy is installed but no CUDA device answers: {exc}")
    if n_devices < 1:
        pytest.skip("cupy is installed but there is no CUDA device")
    return cupy


def _to_device(X, cp):
    """A cupy-backed copy of the numpy-backed dask array X (same chunks, same values)."""
    return X.map_blocks(cp.asarray, dtype=X.dtype, meta=cp.empty((0, 0), dtype=X.dtype))


def _fit(X, **params):
    with dask.config.set(scheduler="threads", num_workers=2):
        return StreamingKMeans(**params).fit(X)


#: The leaf that the default method="tree" runs on device chunks (the tree leaf is numpy's):
#: numpy references of a default cupy fit name it.
DEVICE_LEAF = "stream"
TOL = {np.float64: {"rtol": 1e-7, "atol": 1e-7}, np.float32: {"rtol": 1e-4, "atol": 1e-3}}


# ---------------------------------------------------------------------- kernels on cupy
@pytest.mark.gpu
def test_kernels_match_numpy(cp):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 16)) + rng.integers(0, 10, (3000, 1))
    w = rng.uniform(0.5, 2.0, 3000)
    Xd, wd = cp.asarray(X), cp.asarray(w)
    labels, dist = _distances.nearest(Xd, Xd[::100])
    assert isinstance(labels, cp.ndarray) and isinstance(dist, cp.ndarray)
    ref_labels, ref_dist = _distances.nearest(X, X[::100])
    np.testing.assert_array_equal(labels.get(), ref_labels)
    np.testing.assert_allclose(dist.get(), ref_dist, rtol=1e-9, atol=1e-9)
    idx = _seeding.kmeans_plusplus(Xd, 12, np.random.default_rng(1), wd)
    np.testing.assert_array_equal(
        idx.get(), _seeding.kmeans_plusplus(X, 12, np.random.default_rng(1), w)
    )
    centers, _, inertia, n_iter = _lloyd.lloyd(Xd, Xd[:12], wd, max_iter=30)
    ref = _lloyd.lloyd(X, X[:12], w, max_iter=30)
    assert isinstance(centers, cp.ndarray)
    np.testing.assert_allclose(centers.get(), ref[0], rtol=1e-9, atol=1e-9)
    assert inertia == pytest.approx(ref[2], rel=1e-9) and n_iter == ref[3]
    sums, mass = _lloyd.centers_from_labels(Xd, cp.asarray(ref_labels), 30, wd)
    ref_sums, ref_mass = _lloyd.centers_from_labels(X, ref_labels, 30, w)
    np.testing.assert_allclose(sums.get(), ref_sums, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mass.get(), ref_mass, rtol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["stream", "lloyd"])
def test_summarize_and_summary_match_numpy(cp, method):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((20000, 8)) + rng.integers(0, 30, (20000, 1))
    seed = np.random.SeedSequence(3, spawn_key=(0, 0))
    s = summarize(cp.asarray(X), 300, method=method, mini_batch_size=1024, seed=seed)
    ref = summarize(X, 300, method=method, mini_batch_size=1024, seed=seed)
    assert isinstance(s.weights, cp.ndarray) and isinstance(s.linear_sums, cp.ndarray)
    assert s.n_groups == ref.n_groups
    np.testing.assert_allclose(s.weights.get(), ref.weights, rtol=1e-9)
    np.testing.assert_allclose(s.linear_sums.get(), ref.linear_sums, rtol=1e-7, atol=1e-7)
    reduced, reduced_ref = s.reduce(100, seed=5), ref.reduce(100, seed=5)
    np.testing.assert_allclose(reduced.weights.get(), reduced_ref.weights, rtol=1e-7)
    centers, bound, _ = s.solve(10, n_init=3, seed=7)
    centers_ref, bound_ref, _ = ref.solve(10, n_init=3, seed=7)
    assert isinstance(centers, cp.ndarray)
    np.testing.assert_allclose(centers.get(), centers_ref, rtol=1e-7, atol=1e-7)
    assert bound == pytest.approx(bound_ref, rel=1e-7)
    host = s.to_numpy()
    assert isinstance(host.weights, np.ndarray)
    assert Summary.merge(s, s).n_groups == 2 * s.n_groups


# ---------------------------------------------------------------------- the estimator
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("method", ["stream", "lloyd"])
def test_same_centers_as_numpy(cp, dtype, method):
    """Same data, same seed: numpy and cupy chunks give the same centers (float tolerance)."""
    X = make_mixture(60_000, 16, 40, chunks=15_000, random_state=2, dtype=dtype).persist()
    params = dict(n_clusters=12, method=method, random_state=0, n_init=3)
    km_np = _fit(X, **params)
    km_cp = _fit(_to_device(X, cp), **params)
    assert isinstance(km_cp.cluster_centers_, cp.ndarray)
    assert isinstance(km_cp.summary_.weights, cp.ndarray)
    assert km_cp.n_rows_seen_ == km_np.n_rows_seen_ == 60_000
    np.testing.assert_allclose(km_cp.cluster_centers_.get(), km_np.cluster_centers_, **TOL[dtype])
    assert km_cp.inertia_ == pytest.approx(km_np.inertia_, rel=1e-5)


@pytest.mark.gpu
def test_predict_transform_keep_cupy(cp):
    """predict / transform / score on a cupy-backed dask array stay cupy-backed and lazy."""
    X = make_mixture(20_000, 8, 10, chunks=5_000, random_state=4).persist()
    Xd = _to_device(X, cp)
    km_cp = _fit(Xd, n_clusters=6, random_state=0, n_init=2)
    km_np = _fit(X, n_clusters=6, random_state=0, n_init=2, method=DEVICE_LEAF)
    labels = km_cp.predict(Xd)
    assert isinstance(labels, da.Array) and isinstance(labels._meta, cp.ndarray)
    assert labels.dtype == np.int32 and labels.chunks == (X.chunks[0],)  # as scikit-learn's
    computed = labels.compute()
    assert isinstance(computed, cp.ndarray)
    np.testing.assert_array_equal(computed.get(), km_np.predict(X).compute())
    assert isinstance(km_cp.labels_._meta, cp.ndarray)
    dist = km_cp.transform(Xd)
    assert isinstance(dist._meta, cp.ndarray) and dist.shape == (20_000, 6)
    np.testing.assert_allclose(
        dist.compute().get(), km_np.transform(X).compute(), rtol=1e-4, atol=1e-3
    )
    assert km_cp.score(Xd) == pytest.approx(km_np.score(X), rel=1e-5)
    # A model fitted on the host predicts device chunks (centers moved once per block).
    labels = km_np.predict(Xd)
    assert isinstance(labels._meta, cp.ndarray)
    np.testing.assert_array_equal(labels.compute().get(), km_np.predict(X).compute())


@pytest.mark.gpu
def test_in_memory_cupy(cp):
    """A cupy array (not dask): cupy centers, cupy labels."""
    X = make_mixture(20_000, 8, 10, chunks=5_000, random_state=4).compute()
    km = _fit(cp.asarray(X), n_clusters=6, random_state=0, n_init=2)
    ref = _fit(X, n_clusters=6, random_state=0, n_init=2, method=DEVICE_LEAF)
    assert isinstance(km.cluster_centers_, cp.ndarray)
    np.testing.assert_allclose(km.cluster_centers_.get(), ref.cluster_centers_, **TOL[np.float32])
    out = km.predict(cp.asarray(X[:1000]))
    assert isinstance(out, cp.ndarray)
    np.testing.assert_array_equal(out.get(), ref.predict(X[:1000]))


@pytest.mark.gpu
def test_fit_cupy_weights(cp):
    """sample_weight as a cupy-backed dask array: the same as numpy weights on numpy data."""
    X = make_mixture(20_000, 8, 10, chunks=5_000, random_state=5).persist()
    w = da.from_array(np.random.default_rng(0).uniform(0.5, 2.0, 20_000), chunks=5_000)
    wd = w.map_blocks(cp.asarray, dtype=w.dtype, meta=cp.empty((0,), dtype=w.dtype))
    with dask.config.set(scheduler="threads", num_workers=2):
        km_cp = StreamingKMeans(6, random_state=0, n_init=2)
        km_cp.fit(_to_device(X, cp), sample_weight=wd)
        km_np = StreamingKMeans(6, random_state=0, n_init=2, method=DEVICE_LEAF)
        km_np.fit(X, sample_weight=w)
    np.testing.assert_allclose(
        km_cp.cluster_centers_.get(), km_np.cluster_centers_, **TOL[X.dtype.type]
    )


@pytest.mark.gpu
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "numpy-backed-dask"])
def test_fit_host_weights_with_device_data(cp, as_dask):
    """Host weights (numpy, or a numpy-backed dask array) beside cupy chunks: moved to the
    device chunk by chunk, the same centers as on the host."""
    X = make_mixture(20_000, 8, 10, chunks=5_000, random_state=5).persist()
    w = np.random.default_rng(0).uniform(0.5, 2.0, 20_000)
    if as_dask:
        w = da.from_array(w, chunks=5_000)
    km = _fit_weighted(_to_device(X, cp), w)
    ref = _fit_weighted(X, w, method=DEVICE_LEAF)
    assert isinstance(km.cluster_centers_, cp.ndarray)
    np.testing.assert_allclose(km.cluster_centers_.get(), ref.cluster_centers_, **TOL[np.float32])
    with dask.config.set(scheduler="threads", num_workers=2):
        score = km.score(_to_device(X, cp), sample_weight=w)
        assert score == pytest.approx(ref.score(X, sample_weight=w), rel=1e-5)


@pytest.mark.gpu
def test_fit_stays_on_device(cp):
    """A cupy-backed fit copies no chunk to the host: every copy to the host goes through
    ``_array.to_host`` (cupy refuses implicit conversion; the benchmark's ``HostCopies``
    counts them), and none is chunk-sized."""
    chunk_rows, d = 25_000, 16
    X = make_mixture(100_000, d, 40, chunks=chunk_rows, random_state=6).persist()
    with _load_bench().HostCopies() as copies:
        km = _fit(_to_device(X, cp), n_clusters=10, random_state=0)
    assert isinstance(km.summary_.weights, cp.ndarray)
    assert isinstance(km.cluster_centers_, cp.ndarray)
    assert copies.largest < chunk_rows * d // 4, (copies.calls, copies.largest)


def _fit_weighted(X, w, **params):
    with dask.config.set(scheduler="threads", num_workers=2):
        return StreamingKMeans(6, random_state=0, n_init=2, **params).fit(X, sample_weight=w)


# ---------------------------------------------------------------------- the benchmark script
def _load_bench():
    path = ROOT / "benchmarks" / "gpu_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_cpu_smoke(tmp_path):
    """The GPU benchmark's logic, on numpy at a tiny size: results written and sane."""
    bench = _load_bench()
    results = bench.main(["--cpu-smoke", "--out", str(tmp_path)])
    assert (tmp_path / "gpu_bench.json").exists() and (tmp_path / "gpu_bench.md").exists()
    head = results["headline"]
    assert head["backend"] == "numpy" and head["rows"] == bench.SMOKE["rows"]
    assert head["wall_s"] > 0 and head["rows_per_s"] > 0
    # The one-pass fit is close to 20 full Lloyd passes from k-means++ (it is often better).
    assert 0.8 < head["inertia_ratio"] < 1.1, head
    assert results["speedup"]["cpu_s"] > 0 and results["speedup"]["gpu_s"] > 0
