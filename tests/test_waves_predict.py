"""Waves on the predict side: ``score``/``evaluate`` and ``write_labels`` over many chunks never
put more than a bounded number of tasks in one graph, and give the one-graph results."""

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from _helpers import GraphSizes

from dask_streamkm import StreamingKMeans, _graph, _waves
from dask_streamkm.io import write_labels
from dask_streamkm.sagemaker import evaluate

WAVE = 16  # chunks per wave in these tests


@pytest.fixture(scope="module")
def fitted():
    """300 chunks of 10 rows, their weights, and a model fitted on them."""
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(3000, 3)) + rng.integers(0, 4, size=(3000, 1)) * 6
    X = da.from_array(rows, chunks=(10, -1))
    w = da.from_array(rng.random(3000) + 0.1, chunks=(10,))
    km = StreamingKMeans(n_clusters=4, summary_size=8, random_state=0).fit(X)
    return X, w, km


def _one_graph_sum(X, centers, w=None):
    what = "sq_distances" if w is None else "weighted_sq_distances"
    (total,) = dask.compute(_graph.nearest_blocks(X, centers, what, w).sum(), scheduler="sync")
    return float(total)


@pytest.mark.parametrize("weighted", [False, True])
def test_score_runs_in_bounded_graphs_and_equals_the_one_graph_sum(fitted, monkeypatch, weighted):
    X, w, km = fitted
    w = w if weighted else None
    expected = _one_graph_sum(X, km.cluster_centers_, w)
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", WAVE)
    with dask.config.set(scheduler="sync"), GraphSizes() as sizes:
        got = -km.score(X, sample_weight=w)
    assert len(sizes.sizes) == -(-300 // WAVE)  # one graph per wave
    # per chunk one task (its part, with its reads inside); then the wave's sum
    assert max(sizes.sizes) == WAVE + 1
    assert got == pytest.approx(expected, rel=1e-12)
    with dask.config.set(scheduler="sync"), GraphSizes() as sizes:
        metrics = evaluate(km, X, sample_weight=w)
    assert max(sizes.sizes) == WAVE + 1
    total_weight = 3000 if w is None else float(w.sum().compute())
    assert metrics["ssd"] == pytest.approx(expected, rel=1e-12)
    assert metrics["msd"] == pytest.approx(expected / total_weight, rel=1e-12)


def test_score_without_waves_is_one_graph_of_every_chunk(fitted, monkeypatch):
    # the bound above is the waves' doing: with one wave the graph holds every chunk
    X, _, km = fitted
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 10**9)
    with dask.config.set(scheduler="sync"), GraphSizes() as sizes:
        km.score(X)
    assert sizes.sizes == [300 + 1]


def test_score_does_not_depend_on_the_scheduler_or_the_wave_size(fitted, monkeypatch):
    X, w, km = fitted
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", WAVE)
    with dask.config.set(scheduler="sync"):
        reference = km.score(X, sample_weight=w)
    with dask.config.set(scheduler="threads"):
        assert km.score(X, sample_weight=w) == reference
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 7)
    assert km.score(X, sample_weight=w) == pytest.approx(reference, rel=1e-14)


def test_a_bad_weight_in_a_later_wave_names_its_chunk(fitted, monkeypatch):
    X, w, km = fitted
    bad = da.where(da.arange(3000, chunks=10) == 2995, np.nan, w)
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", WAVE)
    with pytest.raises(ValueError, match="299"):
        km.score(X, sample_weight=bad)


@pytest.mark.parametrize("chunks", [(10,), ((7, 3) * 300,)])
def test_labels_are_written_in_bounded_graphs(fitted, monkeypatch, tmp_path, chunks):
    X, _, km = fitted
    X = X.rechunk((chunks[0], -1))
    expected = km.predict(X).compute()
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", WAVE)
    with dask.config.set(scheduler="sync"), GraphSizes() as sizes:
        write_labels(km.predict(X), tmp_path / "labels.zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "labels.zarr", mode="r")[:], expected)
    assert len(sizes.sizes) >= -(-3000 // (10 * WAVE))
    # per chunk: its read, its labels and its write; then the wave's count (uneven chunks:
    # the rechunk to regular chunks adds a few tasks per output chunk)
    assert max(sizes.sizes) <= (3 if chunks == (10,) else 10) * WAVE + 2


def test_waves_on_a_distributed_client_give_the_local_results(fitted, monkeypatch, tmp_path):
    distributed = pytest.importorskip("distributed")
    X, w, km = fitted
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", WAVE)
    with dask.config.set(scheduler="sync"):
        expected = km.score(X, sample_weight=w)
    submitted = []
    original = _graph.block_wave
    monkeypatch.setattr(
        _graph, "block_wave", lambda *a, **k: submitted.append(a[3]) or original(*a, **k)
    )
    with distributed.Client(processes=False, n_workers=2, dashboard_address=None):
        assert km.score(X, sample_weight=w) == expected
        write_labels(km.predict(X), tmp_path / "labels.zarr")
    labels = zarr.open_array(tmp_path / "labels.zarr", mode="r")[:]
    np.testing.assert_array_equal(labels, km.predict(X).compute())
    assert len(submitted) == 2 * -(-300 // WAVE)  # score's waves, then the labels' waves
