"""Work buffers of the per-chunk tasks: the same numbers, few fresh pages per task.

The centers, labels and scores of a few small fits are compared bit for bit with those the
code gave before the tasks reused their work buffers (``data/reference_fits.npz``, written
by :func:`reference_fits` with ``python tests/test_work_buffers.py``; the BLAS that wrote
them is the one of the test machines: another BLAS may round differently).
"""

from __future__ import annotations

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
    with np.load(REFERENCE) as ref:
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
        return _tasks.leaf(b, None, index=i, row_start=0, size=256, method=method,
                      mini_batch_size=4096, entropy=0)

    task(blocks[0], 0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    task(blocks[1], 1)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.parametrize(
    ("method", "chunks"), [("tree", 8), ("stream", 6), ("refine", 6), ("score", 1.5)]
)
def test_a_task_touches_few_fresh_pages_under_a_fixed_trim_threshold(method, chunks):
    """distributed's nanny sets MALLOC_TRIM_THRESHOLD_ for its workers; glibc then serves
    every large temporary by a fresh mmap whose pages fault in anew. A task that reuses its
    work buffers faults in its chunk-sized arrays, not every temporary of every step (before
    the work buffers, per chunk of 6.4 MB: tree 14.2, stream 22, refine 10.2, score 2.5
    chunks' worth; after: 5.2, 3.5, 4.2, 0.6)."""
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
    np.savez(REFERENCE, **reference_fits())
