"""Arrays of very many chunks cost no client memory per chunk before anything runs: the lazy
labels and distances of a fitted model, the synthetic mixture and a .npy file read in tiny
chunks. (Dask's ``map_blocks`` with ``block_info`` builds a dict of about 1 KB per chunk when
the array is made: 1 GB of client memory at 10^6 chunks, before the first task.)"""

import tracemalloc

import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm.datasets import make_mixture
from dask_streamkm.io import open_array

N_CHUNKS = 200_000
#: Client memory allowed for making one lazy array of N_CHUNKS chunks: about 50 B per chunk
#: (dask's own chunk sizes and slices); per-chunk dicts would take 200 MB.
LIMIT = 24 * 2**20


def _peak_bytes(make):
    tracemalloc.start()
    try:
        out = make()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2)) + rng.integers(0, 3, size=(600, 1)) * 5
    return StreamingKMeans(n_clusters=3, random_state=0).fit(X)


@pytest.mark.parametrize("what", ["predict", "transform"])
def test_lazy_labels_and_distances_of_many_chunks(model, what):
    X = da.zeros((N_CHUNKS * 2, 2), chunks=(2, -1))
    out, peak = _peak_bytes(lambda: getattr(model, what)(X))
    assert isinstance(out, da.Array) and out.numblocks[0] == N_CHUNKS
    assert peak < LIMIT, f"{peak / 2**20:.0f} MiB"
    # and they are right, chunk by chunk
    head = out.blocks[:3].compute()
    expected = getattr(model, what)(np.zeros((6, 2)))
    np.testing.assert_allclose(head, expected)


def test_lazy_mixture_of_many_chunks():
    X, peak = _peak_bytes(lambda: make_mixture(N_CHUNKS * 2, 3, 4, chunks=2, random_state=0))
    assert X.numblocks[0] == N_CHUNKS
    assert peak < LIMIT, f"{peak / 2**20:.0f} MiB"
    # each chunk is generated from its own seed, whatever the chunking around it
    np.testing.assert_array_equal(
        X.blocks[N_CHUNKS - 1].compute(),
        make_mixture(N_CHUNKS * 2, 3, 4, chunks=2, random_state=0)[-2:].compute(),
    )


def test_npy_file_in_many_chunks(tmp_path):
    data = np.arange(N_CHUNKS * 2 * 3, dtype=np.float32).reshape(-1, 3)
    np.save(tmp_path / "x.npy", data)
    X, peak = _peak_bytes(lambda: open_array(tmp_path / "x.npy", chunks=2))
    assert X.numblocks[0] == N_CHUNKS
    assert peak < LIMIT, f"{peak / 2**20:.0f} MiB"
    np.testing.assert_array_equal(X.blocks[12345].compute(), data[24690:24692])
    np.testing.assert_array_equal(X[-5:].compute(), data[-5:])


def test_scale_benchmark_runs_and_prints_its_tables():
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "scale.py"
    cmd = [sys.executable, str(script), "--sizes", "300", "--cluster-sizes"]
    out = subprocess.run(
        [*cmd, "--build-only-sizes", "5000"], capture_output=True, text=True, check=True
    ).stdout
    rows = [line for line in out.splitlines() if re.match(r"\| (threads|mixture|zarr) \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["threads", "mixture", "zarr"]
    fit = [cell.strip() for cell in rows[0].split("|")[1:-1]]
    assert fit[1] == "300" and fit[4] == "1"  # one wave: 300 chunks are under WAVE_CHUNKS
    assert float(fit[6]) > 0 and float(fit[7]) > 0
    for row in rows[1:]:
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert cells[1] == "5,000" and cells[4] == "2"  # 4,096 chunks a wave
        assert float(cells[3].split()[0]) > 0 and float(cells[5]) > 0
