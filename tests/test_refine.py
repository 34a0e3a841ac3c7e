"""Refinement passes (``refine_passes``): per pass the exact Lloyd step and cost over all rows,
then Lloyd over the pass's groups of rows (nearest center, second nearest, border band)."""

import json
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from _helpers import counting_like, local_cluster_client, mixture_store, nearest, true_cost

from dask_streamkm import StreamingKMeans, Summary, _refine, _refine_kernels, _waves
from dask_streamkm._model_io import ModelFileError
from dask_streamkm._refine_kernels import lloyd_step_centers, refine_groups
from dask_streamkm.cli import main
from dask_streamkm.datasets import make_mixture
from dask_streamkm.io import open_array


@pytest.fixture(scope="module")
def data():
    """Float64 rows far from the origin, uneven chunks, integer-like weights."""
    X = make_mixture(9_000, 5, 20, chunks=1_000, random_state=2, dtype=np.float64).compute()
    X += 1e4
    w = np.random.default_rng(0).integers(0, 4, size=X.shape[0]).astype(np.float64)
    chunks = ((1_000, 2_500, 500, 3_000, 2_000),)
    return da.from_array(X, chunks=chunks + ((5,),)), da.from_array(w, chunks=chunks), X, w


def lloyd_step(X, centers, w):
    """One weighted Lloyd step in plain numpy: (new centers, cost of ``centers``, sizes)."""
    labels = nearest(X, centers)[0]
    sizes = np.bincount(labels, weights=w, minlength=centers.shape[0])
    sums = np.zeros_like(centers)
    np.add.at(sums, labels, X * w[:, None])
    new = np.where(sizes[:, None] > 0, sums / np.maximum(sizes, 1e-300)[:, None], centers)
    return new, true_cost(X, centers, w), sizes


def fit(Xd, wd, passes, **params):
    params = dict(dict(random_state=0, split_every=2), **params)
    return StreamingKMeans(6, refine_passes=passes, **params).fit(Xd, sample_weight=wd)


def group_bound(stats, start, centers):
    """Cost bound of ``centers`` from a pass's groups made at ``start``: each group whole at
    the center nearest its centroid, plus the groups' own squared errors."""
    points, weights, sse = stats.points(start)
    return true_cost(points, centers, weights) + sse.sum()


def test_a_pass_gives_the_exact_lloyd_step_and_cost(data):
    Xd, wd, X, w = data
    start = fit(Xd, wd, 0).cluster_centers_
    stats = _refine.refine_pass(Xd, wd, start, split_every=2)
    sums, weights, cost = stats.lloyd_stats(start)
    expected, exact_cost, sizes = lloyd_step(X, start, w)
    np.testing.assert_allclose(sums / weights[:, None], expected, rtol=1e-12, atol=0)
    np.testing.assert_allclose(weights, sizes, rtol=1e-12)
    assert cost == pytest.approx(exact_cost, rel=1e-9)
    # The groups' bound is exact at the centers they were made from (a group's centroid lies
    # in its center's Voronoi cell) and an upper bound anywhere else.
    assert group_bound(stats, start, start) == pytest.approx(exact_cost, rel=1e-9)
    for centers in (expected, start + 0.5, X[:6]):
        assert group_bound(stats, start, centers) >= true_cost(X, centers, w) * (1 - 1e-12)


def test_one_pass_ends_below_the_exact_step(data):
    Xd, wd, X, w = data
    # A coarse summary (16 groups a chunk) leaves the one-pass centers short of a Lloyd fixed
    # point, so there is room past the exact step (the defaults end at one on this data).
    start = fit(Xd, wd, 0, summary_size=16)
    one = fit(Xd, wd, 1, summary_size=16)
    step, cost, sizes = lloyd_step(X, start.cluster_centers_, w)
    # inertia_ is the exact weighted cost of the centers the pass started from.
    assert one.inertia_ == pytest.approx(cost, rel=1e-9)
    np.testing.assert_allclose(one.cluster_sizes_, sizes, rtol=1e-12)
    stats = _refine.refine_pass(Xd, wd, start.cluster_centers_, split_every=2)
    final = true_cost(X, one.cluster_centers_, w)
    assert final <= group_bound(stats, start.cluster_centers_, one.cluster_centers_) * (1 + 1e-12)
    assert group_bound(stats, start.cluster_centers_, one.cluster_centers_) <= cost
    assert final < true_cost(X, step, w)  # Lloyd over the groups went past the exact step
    assert not hasattr(start, "cluster_sizes_")
    assert one.summary_ is not start.summary_ and np.array_equal(
        one.summary_.weights, start.summary_.weights
    )


def test_second_pass_starts_from_the_first_and_never_raises_the_cost(data):
    Xd, wd, X, w = data
    costs = [true_cost(X, fit(Xd, wd, p).cluster_centers_, w) for p in (0, 1, 2)]
    one, two = fit(Xd, wd, 1), fit(Xd, wd, 2)
    assert two.inertia_ == pytest.approx(true_cost(X, one.cluster_centers_, w), rel=1e-9)
    assert costs[0] >= costs[1] >= costs[2] * (1 - 1e-12)  # equal once converged
    assert two.inertia_ >= costs[2] * (1 - 1e-12)  # an upper bound for the final centers


@pytest.mark.parametrize("offset", [-1e4, 0.0])  # near zero, and 1e4 away (float32 steps 1e-3)
def test_unweighted_and_float32(data, offset):
    # The Lloyd run over the groups scores them in float32 here, shifted in float64 first.
    # A dask array: rows held in memory go on with Lloyd steps on them (tests/test_rows.py),
    # whose assignment gives inertia_ and cluster_sizes_ instead.
    Xd, _, X, _ = data
    X32 = (X + offset).astype(np.float32)
    X32d = da.from_array(X32, chunks=(Xd.chunks[0], -1))
    start = StreamingKMeans(6, random_state=0).fit(X32d)
    one = StreamingKMeans(6, random_state=0, refine_passes=1).fit(X32d)
    assert one.cluster_centers_.dtype == np.float32
    _, cost, sizes = lloyd_step(
        X32.astype(np.float64), start.cluster_centers_.astype(np.float64), np.ones(len(X32))
    )
    assert one.inertia_ == pytest.approx(cost, rel=1e-5)
    np.testing.assert_array_equal(one.cluster_sizes_, sizes)  # counts: exact
    assert true_cost(X32.astype(np.float64), one.cluster_centers_) <= cost


def test_nodes_over_their_cap_merge_bands_and_keep_the_exact_step(data, monkeypatch):
    Xd, wd, X, w = data
    start = fit(Xd, wd, 0).cluster_centers_
    fine = _refine.refine_pass(Xd, wd, start, split_every=2)
    monkeypatch.setattr(_refine, "refine_cap", lambda k, d: 2 * k)
    coarse = _refine.refine_pass(Xd, wd, start, split_every=2)
    assert fine.level == 0 and coarse.level > 0
    assert coarse.keys.shape[0] <= 12 < fine.keys.shape[0]
    for a, b in zip(coarse.lloyd_stats(start), fine.lloyd_stats(start), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    centers = X[:6]
    assert group_bound(coarse, start, centers) >= group_bound(fine, start, centers) * (1 - 1e-12)


def _leaves(data, cap):
    Xd, wd, X, w = data
    start = fit(Xd, wd, 0).cluster_centers_
    leaves, row = [], 0
    for i, rows in enumerate(Xd.chunks[0]):
        leaf = _refine.refine_leaf(
            X[row : row + rows], w[row : row + rows], index=i, row_start=row, centers=start
        )
        leaves.append(_refine.RefineStats(*leaf.arrays, level=leaf.level, k=leaf.k, cap=cap))
        row += rows
    return leaves


@pytest.mark.parametrize("cap", [10**6, 40, 12])
def test_a_merge_adds_its_children_in_batches_as_one_at_a_time(data, cap):
    leaves = _leaves(data, cap)
    together = _refine.refine_merge(*leaves)
    alone = leaves[0]
    for leaf in leaves[1:]:
        alone = _refine.refine_merge(alone, leaf)
    assert together.level == alone.level and (together.level > 0) == (cap < 10**6)
    assert together.keys.shape[0] <= cap
    np.testing.assert_array_equal(together.keys, alone.keys)
    for a, b in zip(together.arrays[1:], alone.arrays[1:], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-6)


@pytest.mark.parametrize("cap", [10**6, 40])
def test_a_merge_adds_by_key_as_one_concatenation_bit_for_bit(data, cap):
    # The merge adds each child into the result without concatenating the children's sums;
    # the sums must be those of the concatenation reduced in order, also where a child is
    # coarsened to another's level (its keys then repeat within it).
    leaves = _leaves(data, cap)
    leaves[1] = _refine._within_cap(
        _refine.RefineStats(*leaves[1].arrays, level=leaves[1].level, k=leaves[1].k, cap=8)
    )
    leaves[1] = _refine.RefineStats(
        *leaves[1].arrays, level=leaves[1].level, k=leaves[1].k, cap=cap
    )
    assert leaves[1].level > leaves[0].level
    top = max(leaf.level for leaf in leaves)
    keys = np.concatenate(
        [
            _refine_kernels.coarsen_refine_keys(leaf.keys, top, leaf.k)
            if leaf.level < top
            else leaf.keys
            for leaf in leaves
        ]
    )
    expected = _refine_kernels.reduce_refine_groups(
        keys, *(np.concatenate([leaf.arrays[i] for leaf in leaves]) for i in (1, 2, 3))
    )
    merged = _refine._added(*leaves)
    if merged.level == top:
        for a, b in zip(merged.arrays, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    else:  # over the cap: the expected groups coarsened as the merge does
        again = _refine._within_cap(
            _refine.RefineStats(*expected, level=top, k=leaves[0].k, cap=cap)
        )
        for a, b in zip(merged.arrays, again.arrays, strict=True):
            np.testing.assert_array_equal(a, b)


def test_groups_as_points_relative_to_an_origin_and_in_any_order(data):
    Xd, wd, _, _ = data
    start = fit(Xd, wd, 0).cluster_centers_
    stats = _refine.refine_pass(Xd, wd, start, split_every=2)
    points, weights, sse = stats.points(start)
    origin = np.full(start.shape[1], 1e4)
    shifted, weights2, sse2 = stats.points(start, origin, np.float32)
    assert shifted.dtype == np.float32
    np.testing.assert_allclose(shifted, points - origin, rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(weights2, weights)
    np.testing.assert_array_equal(sse2, sse)
    keep = stats.weights > 0
    order = np.random.default_rng(0).permutation(int(np.count_nonzero(keep)))
    shuffled = [a[keep][order] for a in stats.arrays]
    again = _refine_kernels.refine_points(*shuffled, start)
    np.testing.assert_allclose(again[0], points[order], rtol=1e-12)
    np.testing.assert_array_equal(again[1], weights[order])


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_bit_identical_on_local_schedulers_and_in_waves(data, scheduler, monkeypatch):
    Xd, wd, _, _ = data
    with dask.config.set(scheduler="synchronous"):
        ref = fit(Xd, wd, 2)
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 2)  # 5 chunks: waves of 2, a tree above
    with dask.config.set(scheduler=scheduler):
        km = fit(Xd, wd, 2)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_
    np.testing.assert_array_equal(km.cluster_sizes_, ref.cluster_sizes_)


def test_bit_identical_on_a_local_cluster(data):
    pytest.importorskip("distributed")
    Xd, wd, _, _ = data
    with dask.config.set(scheduler="synchronous"):
        ref = fit(Xd, wd, 2)
    with local_cluster_client():
        km = fit(Xd, wd, 2)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_


def test_empty_center_is_reseeded_at_the_farthest_heavy_group(data):
    _, _, X, _ = data
    X = X - 1e4
    Xd = da.from_array(X, chunks=(2_000, -1))
    summary = Summary.from_points(X[:500])
    centers = np.vstack([X[:3], np.full((1, X.shape[1]), 1e6)])  # the last one gets no row
    sums, weights, cost = _refine.refine_pass(Xd, None, centers, split_every=2).lloyd_stats(centers)
    assert weights[3] == 0 and weights.sum() == X.shape[0]
    new, n_reseeded = lloyd_step_centers(sums, weights, centers, summary.centroids, summary.weights)
    assert n_reseeded == 1
    kept = sums[:3] / weights[:3, None]
    np.testing.assert_allclose(new[:3], kept, rtol=1e-12)
    far = np.argmax(summary.weights * true_cost_rows(summary.centroids, kept))
    np.testing.assert_array_equal(new[3], summary.centroids[far])
    assert true_cost(X, new) < cost


def true_cost_rows(P, C):
    return ((P[:, None, :] - C[None, :, :]) ** 2).sum(-1).min(1)


def test_reseed_skips_weightless_groups_and_takes_distinct_groups():
    sums = np.array([[4.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    weights = np.array([2.0, 0.0, 0.0])
    candidates = np.array([[100.0, 0.0], [np.nan, np.nan], [5.0, 0.0], [50.0, 0.0]])
    cw = np.array([1.0, 0.0, 1.0, 1.0])
    new, n = lloyd_step_centers(sums, weights, np.zeros((3, 2)), candidates, cw)
    assert n == 2
    np.testing.assert_array_equal(new, [[2.0, 0.0], [100.0, 0.0], [50.0, 0.0]])


def test_kernel_on_array_api_strict():
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    X, C, w = rng.normal(size=(50, 3)), rng.normal(size=(4, 3)), rng.random(50)
    strict = refine_groups(xp.asarray(X), xp.asarray(C), xp.asarray(w))
    plain = refine_groups(X, C, w)
    for a, b in zip(strict, plain, strict=True):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-12)
    sums, weights, cost = _refine.refine_merge(
        _refine.RefineStats(*plain, level=0, k=4, cap=100)
    ).lloyd_stats(C)
    labels = nearest(X, C)[0]
    np.testing.assert_allclose(weights, np.bincount(labels, w, minlength=4))
    assert cost == pytest.approx(true_cost(X, C, w), rel=1e-12)
    ref = np.zeros((4, 3))
    np.add.at(ref, labels, X * w[:, None])
    np.testing.assert_allclose(sums, ref, atol=1e-12)


# ---------------------------------------------------------------------- reads
@pytest.fixture
def store(tmp_path):
    return mixture_store(tmp_path, 16_000)


def test_each_pass_reads_every_chunk_once(store):
    X = open_array(store, chunks=1_000)
    Xc, counter = counting_like(X, zarr.open(store, mode="r"))
    StreamingKMeans(4, random_state=0, refine_passes=2).fit(Xc)
    assert counter.reads == {r: 3 for r in range(0, 16_000, 1_000)}


# ---------------------------------------------------------------------- API edges
def test_partial_fit_ignores_refine_passes(data):
    _, _, X, _ = data
    a = StreamingKMeans(4, random_state=0)
    b = StreamingKMeans(4, random_state=0, refine_passes=2)
    for batch in (X[:3000], X[3000:]):
        a.partial_fit(batch)
        b.partial_fit(batch)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_ and not hasattr(b, "cluster_sizes_")


def test_refit_and_partial_fit_drop_the_cluster_sizes(data):
    Xd, wd, X, _ = data
    km = fit(Xd, wd, 1)
    assert km.cluster_sizes_.shape == (6,)
    km.refit(n_clusters=3)
    assert not hasattr(km, "cluster_sizes_")
    km = fit(Xd, wd, 1).partial_fit(X[:100])
    assert not hasattr(km, "cluster_sizes_")


@pytest.mark.parametrize("value", [-1, 1.5, True, "1", None])
def test_invalid_refine_passes(value):
    with pytest.raises(ValueError, match=r"refine_passes=.* should be an integer >= 0"):
        StreamingKMeans(2, refine_passes=value).fit(np.zeros((4, 2)))


def test_the_lloyd_run_over_the_groups_costs_a_few_assignments_of_the_rows():
    from dask_streamkm._refine import refine_iterations

    assert refine_iterations(300, 1_000, 1_000_000) == 300  # few groups: max_iter
    assert refine_iterations(300, 100_000, 1_000_000) == 15  # groups x iterations <= 1.5 rows
    assert refine_iterations(300, 60_000, 70_000) == 10  # but never fewer than 10
    assert refine_iterations(3, 60_000, 70_000) == 3


def test_refine_passes_with_keys_past_int64_is_refused():
    with pytest.raises(
        ValueError, match=r"supports n_clusters up to 524,287 \(got n_clusters=600000"
    ):
        StreamingKMeans(600_000, refine_passes=1).fit(np.zeros((4, 2)))


def test_model_file_keeps_and_validates_refine_passes(data, tmp_path):
    Xd, wd, _, _ = data
    km = fit(Xd, wd, 2)
    loaded = StreamingKMeans.load(km.save(tmp_path / "m.npz"))
    assert loaded.refine_passes == 2
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    assert loaded.inertia_ == km.inertia_
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    meta = json.loads(str(arrays["metadata"]))
    meta["params"]["refine_passes"] = -1
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match="refine_passes=-1 should be an integer >= 0"):
        StreamingKMeans.load(tmp_path / "bad.npz")


def test_cli_refine_passes(store, tmp_path, capsys):
    out = tmp_path / "m.npz"
    args = [
        "fit",
        store,
        "--k",
        "4",
        "--chunks",
        "1000",
        "--out",
        out,
        "--quiet",
        "--scheduler",
        "sync",
    ]
    assert main([str(a) for a in args + ["--refine-passes", "1"]]) == 0
    model = StreamingKMeans.load(out)
    assert model.refine_passes == 1
    ref = StreamingKMeans(4, random_state=0, refine_passes=1).fit(open_array(store, chunks=1_000))
    np.testing.assert_array_equal(model.cluster_centers_, ref.cluster_centers_)
    with pytest.raises(SystemExit):
        main([str(a) for a in args + ["--refine-passes", "-1"]])
    assert "--refine-passes" in capsys.readouterr().err


@pytest.mark.parametrize(
    "script, case", [("quality.py", "mnist-k10"), ("speed.py", "1m32")], ids=["quality", "speed"]
)
def test_benchmarks_refuse_a_repeat_below_one(script, case):
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "benchmarks" / script
    run = subprocess.run(
        [sys.executable, str(script), "--repeat", "0", "--cases", case],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "--repeat should be at least 1 (got 0); use --repeat 3" in run.stderr
