"""Work buffers of the per-chunk tasks: the same numbers, few fresh pages per task.

The centers, labels and scores of a few small fits are compared bit for bit with those the
code gave before the tasks reused their work buffers (``data/reference_fits.npz``, written
by :func:`reference_fits` with ``python tests/test_work_buffers.py``). Another BLAS kernel
may round products differently (the same OpenBLAS gave a wide fit's centers one ulp apart on
two processors), so a machine whose products round otherwise (:func:`blas_fingerprint`)
compares with a file of its own, ``reference_fits-FINGERPRINT.npz``, where one was written
(``python tests/test_work_buffers.py --own``) from the code of the shared file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm.datasets import make_mixture

REFERENCE = Path(__file__).parent / "data" / "reference_fits.npz"


def blas_fingerprint():
    """A hash of a few float32 and float64 products on one BLAS thread (the rounding of a
    product may depend on the threads, and an earlier test may leave them limited): machines
    whose BLAS kernels round differently get different fingerprints."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((257, 97))
    b = rng.standard_normal((97, 41))
    with threadpool_limits(limits=1, user_api="blas"):
        products = [
            (a.astype(dtype) @ b.astype(dtype)).tobytes() for dtype in (np.float32, np.float64)
        ]
    return hashlib.sha256(b"".join(products)).hexdigest()[:12]


def reference_file():
    """This machine's reference file where one was written, else the shared one."""
    own = REFERENCE.with_name(f"reference_fits-{blas_fingerprint()}.npz")
    return own if own.exists() else REFERENCE


def reference_fits():
    """name -> array of the fits compared with :data:`REFERENCE` (each a few hundred ms)."""
    out = {}
    X = make_mixture(60_000, 16, 50, chunks=10_000, random_state=3)
    w = make_mixture(60_000, 1, 3, chunks=10_000, random_state=4)[:, 0]
    w = abs(w) + 0.1
    wide = make_mixture(12_000, 96, 30, chunks=3_000, random_state=5, dtype=np.float64)
    for method in ("tree", "stream", "lloyd"):
        model = StreamingKMeans(n_clusters=8, method=method, random_state=0).fit(X)
        out[f"{method}-centers"] = model.cluster_centers_
    model = StreamingKMeans(n_clusters=8, random_state=1, refine_passes=1).fit(X, sample_weight=w)
    out["refine-weighted-centers"] = model.cluster_centers_
    out["refine-weighted-labels"] = model.predict(X).compute()[::20]
    out["refine-weighted-score"] = np.array(model.score(X, sample_weight=w))
    model = StreamingKMeans(n_clusters=40, random_state=2, refine_passes=1).fit(wide)
    out["wide-centers"] = model.cluster_centers_
    out["wide-labels"] = model.predict(wide).compute()[::4]
    out["wide-score"] = np.array(model.score(wide))
    return out


@pytest.mark.skipif(not REFERENCE.exists(), reason="no reference file")
def test_same_numbers_as_before_the_work_buffers():
    with np.load(reference_file()) as ref:
        expected = dict(ref)
    got = reference_fits()
    assert sorted(got) == sorted(expected)
    for name, value in got.items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


_FAULTS = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from dask_streamkm import _refine, _tasks
    from dask_streamkm.datasets import make_mixture

    method = sys.argv[1]
    X = make_mixture(100_000, 32, 1000, chunks=50_000, random_state=0)
    blocks = [np.ascontiguousarray(X.blocks[i].compute()) for i in range(2)]
    centers = blocks[0][:20].astype(np.float64)

    def task(b, i):
        if method == "refine":
            return _refine.refine_leaf(b, None, index=i, row_start=0, centers=centers)
        if method == "score":
            return _tasks.sq_distance_part(b, None, centers, index=i, row_start=0)
        if method == "predict":
            return _tasks.predict_block(b, None, centers, "labels", index=i, row_start=0)
        return _tasks.leaf(b, None, index=i, row_start=0, size=256, method=method,
                      mini_batch_size=4096, entropy=0)

    task(blocks[0], 0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    task(blocks[1], 1)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.parametrize(
    ("method", "chunks"),
    [("tree", 1.5), ("stream", 1.5), ("refine", 1.5), ("score", 0.2), ("predict", 0.2)],
)
def test_a_task_touches_few_fresh_pages_under_a_fixed_trim_threshold(method, chunks):
    """distributed's nanny sets MALLOC_TRIM_THRESHOLD_ for its workers; glibc then serves
    every large temporary by a fresh mmap whose pages fault in anew. A task that reuses its
    work buffers faults in little: per chunk of 6.4 MB, before the work buffers tree 14.2,
    stream 22, refine 10.2, score 2.5 chunks' worth; with buffers made per task 4.8, 3.5,
    4.2, 0.6 (predict 0.7); with buffers kept by the thread for its next task of the same
    kind 0.8, 0.6, 0.8, 0.0 and 0.03 (2 cores, shared, 2026-12-06)."""
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, method], env=env, capture_output=True, text=True, check=True
    )
    fresh = int(out.stdout.split()[-1]) * 4096
    chunk = 50_000 * 32 * 4
    assert fresh <= chunks * chunk, f"{method}: {fresh / chunk:.1f} chunks of fresh pages"


@pytest.mark.parametrize(
    ("n", "d", "dtype", "size", "weighted"),
    [
        (30_000, 16, np.float32, 300, False),
        (20_000, 64, np.float32, 800, True),
        (12_000, 96, np.float64, 400, True),
        (20_000, 2, np.float32, 500, False),
    ],
)
def test_tree_leaf_without_its_copy_gives_the_same_groups(monkeypatch, n, d, dtype, size, weighted):
    """Above ``COPY_BYTES`` the tree leaf gathers its rows from the chunk at every step instead
    of keeping a padded copy of them (its peak memory stays about 1.5x its chunk): the same
    numbers in the same order, so the same groups bit for bit."""
    from dask_streamkm import _tree

    X = np.ascontiguousarray(make_mixture(n, d, 40, chunks=n, random_state=1, dtype=dtype))
    w = None
    if weighted:
        w = np.random.default_rng(0).random(n) * 3
        w[::7] = 0
    with_copy = _tree.tree_labels(X, size, w, np.random.default_rng(5))
    monkeypatch.setattr(_tree, "COPY_BYTES", 0)
    monkeypatch.setattr(_tree, "GATHER_ELEMENTS", 1 << 14)  # many segments, carried sums
    gathered = _tree.tree_labels(X, size, w, np.random.default_rng(5))
    assert gathered[1] == with_copy[1]
    np.testing.assert_array_equal(gathered[0], with_copy[0])


if __name__ == "__main__":
    own = REFERENCE.with_name(f"reference_fits-{blas_fingerprint()}.npz")
    np.savez(own if "--own" in sys.argv else REFERENCE, **reference_fits())


def test_indicator_sums_are_the_sparse_products_bit_for_bit():
    # The column-by-column product into a work buffer against scipy's CSR product of the
    # weighted indicator, for the tree's padded positions and for consecutive rows.
    from dask_streamkm._distances import Workspace
    from dask_streamkm._indicator import indicator_sums
    from dask_streamkm._lloyd import weighted_indicator

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        rows = rng.standard_normal((5_000, 7)).astype(dtype) * 1e3
        for positions in (None, np.sort(rng.choice(5_000, 3_000, replace=False))):
            n = 5_000 if positions is None else positions.shape[0]
            labels = rng.integers(0, 40, n)
            w = rng.random(n).astype(dtype)
            w[::7] = 0
            n_rows = None if positions is None else 5_000
            expected = weighted_indicator(labels, w, 40, positions, n_rows) @ rows
            got = indicator_sums(labels, w, 40, rows, Workspace(), "sums", positions)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, np.asarray(expected))


def _tree_leaf(block):
    """A default-method leaf task of 300 groups on ``block``, in this thread."""
    from dask_streamkm import _tasks

    return _tasks.leaf(
        block,
        None,
        index=0,
        row_start=0,
        size=300,
        method="tree",
        mini_batch_size=4096,
        entropy=0,
    )


def _kept_keys():
    """The names of the work buffers every thread of this process keeps."""
    from dask_streamkm import _distances

    return [key for kept in list(_distances._ALL_THREAD_BUFFERS) for key in kept.buffers]


def test_results_are_not_views_of_the_threads_buffers():
    # A thread keeps its work buffers for its next task: what a task returned must not
    # change when the next one runs.
    from dask_streamkm import _refine, _tasks

    X = make_mixture(40_000, 8, 20, chunks=20_000, random_state=0)
    a, b = (np.ascontiguousarray(X.blocks[i].compute()) for i in range(2))
    centers = a[:10].astype(np.float64)

    def tasks(block):
        leaf = _tree_leaf(block)
        refine = _refine.refine_leaf(block, None, index=0, row_start=0, centers=centers)
        labels = _tasks.predict_block(block, None, centers, "labels")
        dist = _tasks.predict_block(block, None, centers, "sq_distances")
        return [leaf.linear_sums, leaf.weights, leaf.square_sums, *refine.arrays, labels, dist]

    first = tasks(a)
    kept = [x.copy() for x in first]
    tasks(b)
    for before, after in zip(kept, first, strict=True):
        np.testing.assert_array_equal(before, after)


def test_threads_keep_buffers_of_one_kind_of_task_and_let_them_go_after_a_pass():
    import dask

    from dask_streamkm import _distances, _tasks

    X = make_mixture(40_000, 8, 20, chunks=20_000, random_state=0)
    block = np.ascontiguousarray(X.blocks[0].compute())
    _tree_leaf(block)
    kept = _distances._thread_kept().buffers
    assert kept and sum(b.nbytes for b in kept.values()) <= _distances.KEEP_BYTES
    assert any(key.startswith("tree:") for key in kept)
    _tasks.predict_block(block, None, block[:5].astype(np.float64), "labels")
    assert not any(key.startswith("tree:") for key in kept)  # another kind: let go
    with dask.config.set(scheduler="threads"):
        StreamingKMeans(n_clusters=4, random_state=0).fit(X)
    # After the fit only the distance blocks of the final solve are kept (a slab and a
    # block: a few MiB at most, whatever the chunks).
    kept = _kept_keys()
    assert all(key.startswith("distances:") for key in kept), kept


def test_cluster_workers_let_their_buffers_go_after_a_pass():
    # In-process workers: their threads' kept buffers are visible here. Without the release
    # at the end of a distributed pass, each worker thread kept its leaves' buffers.
    from distributed import Client, LocalCluster

    X = make_mixture(40_000, 8, 20, chunks=10_000, random_state=0)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster:
        with Client(cluster):
            StreamingKMeans(n_clusters=4, random_state=0).fit(X)
            kept = _kept_keys()
    assert all(key.startswith("distances:") for key in kept), kept


def test_fits_in_two_threads_at_once_give_the_fits_of_one_at_a_time():
    # One fit's end lets every thread's buffers go while the other fit's tasks use theirs.
    import threading

    import dask

    X = make_mixture(60_000, 8, 20, chunks=10_000, random_state=0)
    with dask.config.set(scheduler="threads"):
        expected = [StreamingKMeans(n_clusters=k, random_state=0).fit(X) for k in (4, 6)]
        results, errors = [None, None], []

        def fit(i, k):
            try:
                for _ in range(3):
                    results[i] = StreamingKMeans(n_clusters=k, random_state=0).fit(X)
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=fit, args=(i, k)) for i, k in enumerate((4, 6))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got.cluster_centers_, want.cluster_centers_)


_SEEDING_FAULTS = textwrap.dedent(
    """
    import resource
    import numpy as np
    from dask_streamkm import _seeding

    X = np.random.default_rng(0).normal(size=(20_000, 32)).astype(np.float32)
    w = np.random.default_rng(1).random(20_000)
    _seeding.kmeans_plusplus(X, 50, np.random.default_rng(0), w, n_local_trials=24)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _seeding.kmeans_plusplus(X, 50, np.random.default_rng(1), w, n_local_trials=24)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def test_seeding_steps_reuse_their_arrays_under_a_fixed_trim_threshold():
    """k-means++ of the final solve (each restart of a solve runs one) keeps its per-step
    arrays (the n x trials distances, the weighted distances and their cumulative sums) in
    buffers of the call: under the nanny's trim threshold every step's were fresh pages,
    108 MB for these 49 steps; now one step's, about 2.3 MB (2 cores, shared, 2026-12-06)."""
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", _SEEDING_FAULTS], env=env, capture_output=True, text=True, check=True
    )
    fresh = int(out.stdout.split()[-1]) * 4096
    one_step = 20_000 * 24 * 4
    assert fresh <= 4 * one_step, f"{fresh / one_step:.1f} steps' distances of fresh pages"
