"""Model files and workers too small for a chunk.

Model files: every field of a model file is validated on load, a loaded model acts on no directory,
a ``pathlib.Path`` checkpoint saves, and float32 centers stay float32 through a file.
Workers: a distributed worker whose ``memory_limit`` cannot hold one chunk gives a clear error
naming the chunk size and the fix, quickly, instead of restarting the worker for minutes.
"""

import json
import pathlib
import time

import dask
import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm._model_io import ModelFileError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.uniform(-10, 10, size=(4, 3))
    return rng.permutation(np.concatenate([c + rng.standard_normal((100, 3)) for c in centers]))


@pytest.fixture(scope="module")
def model_file(data, tmp_path_factory):
    km = StreamingKMeans(n_clusters=4, random_state=0).fit(data)
    return km.save(tmp_path_factory.mktemp("model") / "m.npz")


def _edit(path, out, metadata=None, **arrays):
    """A copy of a model file with metadata fields (a function of the dict) or arrays changed;
    an array given as None is left out."""
    with np.load(path, allow_pickle=False) as f:
        entries = {name: f[name] for name in f.files}
    meta = json.loads(str(entries["metadata"]))
    if metadata is not None:
        metadata(meta)
    entries["metadata"] = np.array(json.dumps(meta))
    for name, value in arrays.items():
        if value is None:
            entries.pop(name)
        else:
            entries[name] = value
    np.savez(out, **entries)
    return out


def _set(section, **values):
    return lambda meta: meta[section].update(values)


def _drop(section, name):
    return lambda meta: meta[section].pop(name)


def _cases(path):
    """(name, metadata edit, array edits, expected message) of damaged files."""
    with np.load(path, allow_pickle=False) as f:
        centers = f["cluster_centers_"]
        weights = f["summary_weights"]
        sums = f["summary_linear_sums"]
        squares = f["summary_square_sums"]
    return [
        ("k_mismatch", _set("params", n_clusters=3), {}, r"cluster_centers_ has shape \(4, 3\)"),
        ("d_mismatch", _set("attributes", n_features_in_=2), {}, r"n_features_in_=2"),
        ("zero_rows", None, {"cluster_centers_": centers[:0]}, "holds no rows"),
        ("summary_lengths", None, {"summary_weights": weights[:-1]}, "summary arrays disagree"),
        ("summary_d", None, {"summary_linear_sums": sums[:, :2]}, "summary arrays disagree"),
        ("negative_k", _set("params", n_clusters=-4), {}, r"n_clusters=-4 should be"),
        ("bad_tol", _set("params", tol=-1.0), {}, r"tol=-1\.0 should be"),
        ("bad_method", _set("params", method="x"), {}, r"method='x' should be"),
        ("bad_random_state", _set("params", random_state=-1), {}, "random_state=-1"),
        ("bad_checkpoint", _set("params", checkpoint=3), {}, "checkpoint=3"),
        ("missing_attr", _drop("attributes", "n_features_in_"), {}, "no attribute 'n_features"),
        ("missing_inertia", _drop("attributes", "inertia_"), {}, "no attribute 'inertia_'"),
        ("str_n_iter", _set("attributes", n_iter_="3"), {}, r"n_iter_='3' should be an integer"),
        ("float_d", _set("attributes", n_features_in_=3.0), {}, "n_features_in_=3.0"),
        ("neg_rows", _set("attributes", n_rows_seen_=-1), {}, "n_rows_seen_=-1"),
        ("nan_inertia", _set("attributes", inertia_=float("nan")), {}, "inertia_=nan"),
        ("names", _set("attributes", feature_names_in_=["a"]), {}, "feature_names_in_"),
        ("entropy", lambda m: m.update(entropy="x"), {}, "entropy='x'"),
        ("nan_centers", None, {"cluster_centers_": centers * np.nan}, "NaN or infinite"),
        ("int_centers", None, {"cluster_centers_": centers.astype(int)}, "dtype int64"),
        ("neg_weights", None, {"summary_weights": -weights}, "should be >= 0"),
        ("neg_squares", None, {"summary_square_sums": -squares}, "should be >= 0"),
        ("inf_sums", None, {"summary_linear_sums": sums * np.inf}, "NaN or infinite"),
        ("n_seen", None, {"summary_n_seen": np.int64(7)}, "summary_n_seen=7 differs"),
        ("n_seen_shape", None, {"summary_n_seen": np.arange(3)}, "wrong type"),
        ("missing_array", None, {"summary_square_sums": None}, "are missing"),
    ]


def test_every_damaged_field_is_a_model_file_error(model_file, tmp_path):
    for name, metadata, arrays, message in _cases(model_file):
        bad = _edit(model_file, tmp_path / f"{name}.npz", metadata, **arrays)
        with pytest.raises(ModelFileError, match=message) as info:
            StreamingKMeans.load(bad)
        # The message names the file and says how to get a good one.
        assert f"{name}.npz" in str(info.value), name
    # The untouched file still loads.
    assert StreamingKMeans.load(model_file).cluster_centers_.shape == (4, 3)


def test_loaded_model_creates_no_directory(data, tmp_path):
    checkpoint = tmp_path / "ckpt"
    km = StreamingKMeans(n_clusters=4, random_state=0, checkpoint=str(checkpoint)).fit(data)
    path = km.save(tmp_path / "m.npz")
    for f in checkpoint.iterdir():
        f.unlink()
    checkpoint.rmdir()
    loaded = StreamingKMeans.load(path)
    assert loaded.checkpoint == str(checkpoint)
    loaded.predict(data)
    loaded.transform(data)
    loaded.score(data)
    loaded.refit(n_clusters=3)
    loaded.save(tmp_path / "again.npz")
    StreamingKMeans.load(tmp_path / "again.npz")
    assert not checkpoint.exists()
    # Fitting again with it is what uses the directory.
    loaded.fit(data)
    assert checkpoint.is_dir()


def test_pathlib_checkpoint_saves_and_loads(data, tmp_path):
    checkpoint = pathlib.Path(tmp_path / "ckpt")
    km = StreamingKMeans(n_clusters=4, random_state=0, checkpoint=checkpoint).fit(data)
    loaded = StreamingKMeans.load(km.save(tmp_path / "m.npz"))
    assert pathlib.Path(loaded.checkpoint) == checkpoint
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    # The loaded model fits again from the same directory: every range is a checkpoint.
    again = loaded.fit(data)
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)


@pytest.mark.parametrize("lazy", [False, True])
def test_float32_model_stays_float32(data, tmp_path, lazy):
    X = data.astype(np.float32)
    X = da.from_array(X, chunks=100) if lazy else X
    km = StreamingKMeans(n_clusters=4, random_state=0).fit(X)
    assert km.cluster_centers_.dtype == np.float32
    loaded = StreamingKMeans.load(km.save(tmp_path / "m.npz"))
    assert loaded.cluster_centers_.dtype == np.float32
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    assert loaded.transform(data[:5].astype(np.float32)).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(loaded.predict(X)), np.asarray(km.predict(X)))
    # A float64 model stays float64.
    km64 = StreamingKMeans(n_clusters=4, random_state=0).fit(data)
    assert StreamingKMeans.load(km64.save(tmp_path / "m64.npz")).cluster_centers_.dtype == (
        np.float64
    )


# ---------------------------------------------------------------------- too-small workers
def _hog(block, nbytes):
    """A block task that holds ``nbytes`` of memory for a while (more than its worker has)."""
    hog = np.ones(nbytes // 8)
    time.sleep(5)
    return block + hog[:1]


@pytest.fixture
def small_worker():
    distributed = pytest.importorskip("distributed")
    # One failure is enough to end a task: the backstop test needs one worker death, not four.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            memory_limit="200MB",
            dashboard_address=":0",
        )
        with cluster, distributed.Client(cluster) as client:
            yield client


def test_chunk_larger_than_a_worker_is_a_clear_error(small_worker):
    from dask_streamkm._memory import WorkerMemoryError, check_worker_memory

    # One chunk of 1,000,000 x 32 float64 (256 MB): more than the worker's 200 MB.
    X = da.random.default_rng(0).random((1_000_000, 32), chunks=(1_000_000, 32))
    t0 = time.perf_counter()
    with pytest.raises(
        WorkerMemoryError,
        match=r"1,000,000 rows x 32 features \(256\.0 MB as float64\).*memory_limit is 200 MB"
        r".*X\.rechunk\(\{0: \d+\}\).*--chunks \d+.*larger memory_limit",
    ):
        StreamingKMeans(n_clusters=4, random_state=0).fit(X)
    assert time.perf_counter() - t0 < 30
    # Chunks that fit pass the check (the existing distributed tests fit with it).
    small = da.random.default_rng(0).random((1_000_000, 32), chunks=(50_000, 32))
    assert check_worker_memory(small, "stream") == 200 * 10**6
    assert check_worker_memory(small, "lloyd") == 200 * 10**6


def test_killed_worker_names_the_chunk_and_the_fix(small_worker):
    from dask_streamkm._memory import WorkerMemoryError

    # Chunks that look small (the check lets them through) but whose task needs 400 MB.
    X = da.random.default_rng(0).random((4_000, 4), chunks=(2_000, 4))
    X = X.map_blocks(_hog, 400 * 10**6, dtype=X.dtype)
    t0 = time.perf_counter()
    with pytest.raises(
        WorkerMemoryError,
        match=r"workers died.*2,000 rows x 4 features.*memory_limit is 200 MB.*rechunk",
    ):
        StreamingKMeans(n_clusters=4, random_state=0).fit(X)
    assert time.perf_counter() - t0 < 60
