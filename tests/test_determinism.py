"""Same random_state and chunking give bit-identical centers under every scheduler."""

import dask
import dask.array as da
import numpy as np
import pytest
from _helpers import local_cluster_client
from sklearn.datasets import make_blobs

from dask_streamkm import StreamingKMeans


@pytest.fixture(scope="module")
def data():
    X, _ = make_blobs(n_samples=6000, centers=12, n_features=5, cluster_std=3.0, random_state=0)
    w = np.random.default_rng(0).random(len(X)) + 0.5
    return X, w


PARAMS = [
    # many leaves, a small merge budget: every merge level reduces with its own seed
    dict(
        n_clusters=6,
        summary_size=60,
        merge_budget=150,
        split_every=3,
        method="stream",
        mini_batch_size=256,
    ),
    dict(n_clusters=6, summary_size=60, merge_budget=150, split_every=2, method="lloyd"),
]


def fit_centers(X, w, params, **compute_kw):
    Xd = da.from_array(X, chunks=(500, -1))
    wd = da.from_array(w, chunks=(700,))
    with dask.config.set(**compute_kw):
        km = StreamingKMeans(random_state=42, **params).fit(Xd, sample_weight=wd)
        labels = km.predict(Xd).compute()
        score = km.score(Xd)
    return km.cluster_centers_, km.inertia_, labels, score


def assert_identical(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    np.testing.assert_array_equal(a[2], b[2])


@pytest.mark.parametrize("params", PARAMS, ids=["stream", "lloyd"])
def test_sync_and_threads_identical(data, params):
    X, w = data
    sync = fit_centers(X, w, params, scheduler="synchronous")
    threads = fit_centers(X, w, params, scheduler="threads")
    threads1 = fit_centers(X, w, params, scheduler="threads", num_workers=1)
    assert_identical(sync, threads)
    assert_identical(sync, threads1)
    # and a second run is the same
    assert_identical(sync, fit_centers(X, w, params, scheduler="synchronous"))


def test_different_seed_differs(data):
    X, w = data
    a = StreamingKMeans(6, random_state=0, summary_size=60).fit(X)
    b = StreamingKMeans(6, random_state=1, summary_size=60).fit(X)
    assert not np.array_equal(a.summary_.linear_sums, b.summary_.linear_sums)


def test_distributed_processes_identical(data):
    pytest.importorskip("distributed")
    X, w = data
    sync = [fit_centers(X, w, p, scheduler="synchronous") for p in PARAMS]
    with local_cluster_client() as client:
        assert len(client.scheduler_info()["workers"]) == 2
        dist = [fit_centers(X, w, p) for p in PARAMS]
    for a, b in zip(sync, dist, strict=True):
        assert_identical(a, b)
