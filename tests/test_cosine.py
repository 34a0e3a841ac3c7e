"""metric="cosine": spherical k-means in the same one pass, and its bad inputs.

Each numeric claim is checked against a short numpy reference on the rows scaled to unit
length: centers are unit vectors, predict is the highest cosine, transform is ``1 - cos``,
score and inertia_ are sums of ``1 - cos``; a row of zero norm is an error naming its chunk.
"""

import json
import zipfile

import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans, Summary, _distances, _lloyd, _runner, elbow
from dask_streamkm.cli import build_parser, main


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def directions(n, d, k, rng, spread=0.25):
    """Rows around k random directions, with random positive lengths (norms 0.1 to 10)."""
    mu = unit(rng.normal(size=(k, d)))
    labels = rng.integers(0, k, n)
    X = mu[labels] + spread * rng.normal(size=(n, d)) / np.sqrt(d)
    return X * rng.uniform(0.1, 10.0, size=(n, 1)), labels


def cosine_cost(X, centers, w=None):
    cos = unit(X) @ centers.T
    w = np.ones(X.shape[0]) if w is None else w
    return float(np.sum(w * (1.0 - cos.max(axis=1))))


def spherical_reference(U, k, rng, n_init=5, n_iter=100):
    """Best of ``n_init`` runs of k-means++ on cosine distance + spherical Lloyd (numpy)."""
    best = (np.inf, None)
    for _ in range(n_init):
        centers = [U[rng.integers(len(U))]]
        for _ in range(1, k):
            dist = np.maximum(1.0 - (U @ np.array(centers).T).max(axis=1), 0.0)
            centers.append(U[rng.choice(len(U), p=dist / dist.sum())])
        C = np.array(centers)
        for _ in range(n_iter):
            labels = (U @ C.T).argmax(axis=1)
            sums = np.array(
                [U[labels == j].sum(0) if np.any(labels == j) else C[j] for j in range(k)]
            )
            C = unit(sums)
        cost = float(np.sum(1.0 - (U @ C.T).max(axis=1)))
        best = min(best, (cost, C), key=lambda t: t[0])
    return best


@pytest.fixture
def X(rng):
    return directions(6_000, 12, 6, rng)[0]


# ---------------------------------------------------------------------- kernels
def test_unit_rows_against_numpy_and_extreme_norms(rng):
    X = rng.normal(size=(50, 7))
    X[3] *= 1e-200  # squared norm underflows in float64
    X[4] *= 1e200  # squared norm overflows
    X[5] = 0.0
    U, zero = _distances.unit_rows(X)
    assert zero.tolist() == [i == 5 for i in range(50)]
    keep = ~zero
    ref = unit(X[keep] / np.abs(X[keep]).max(axis=1, keepdims=True))
    np.testing.assert_allclose(U[keep], ref, rtol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(U[keep], axis=1), 1.0, rtol=1e-14)
    assert np.all(U[5] == 0.0)


def test_cosine_distances_and_cost_against_numpy(rng):
    U = unit(rng.normal(size=(40, 5)))
    C = unit(rng.normal(size=(3, 5)))
    np.testing.assert_allclose(_distances.cosine_distances(U, C), 1.0 - U @ C.T, atol=1e-15)
    labels = rng.integers(0, 3, 40)
    w = rng.uniform(0, 2, 40)
    ref = np.sum(w * (1.0 - np.sum(U * C[labels], axis=1)))
    assert _distances.cosine_cost(U, C, labels, w) == pytest.approx(ref, rel=1e-12)


def test_spherical_lloyd_matches_a_numpy_spherical_step(rng):
    U = unit(rng.normal(size=(300, 4)))
    C0 = U[:3].copy()
    centers, labels, _, _ = _lloyd.lloyd(U, C0, max_iter=1, tol=0.0, spherical=True)
    ref_labels = (U @ C0.T).argmax(axis=1)
    ref = unit(np.array([U[ref_labels == j].sum(0) for j in range(3)]))
    np.testing.assert_allclose(centers, ref, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 1.0, atol=1e-12)


def test_spherical_weighted_kmeans_weights_mean_repeated_rows(rng):
    """Weight 3 equals three copies of a row (the cosine cost is a weighted sum)."""
    U = unit(rng.normal(size=(200, 5)))
    w = rng.integers(1, 4, 200).astype(float)
    C, cost, _ = _runner.weighted_kmeans(
        U, 4, np.random.default_rng(0), w, n_init=3, spherical=True
    )
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0, atol=1e-12)
    assert cost == pytest.approx(cosine_cost(U, C, w), rel=1e-9)
    R = np.repeat(U, w.astype(int), axis=0)
    assert cost == pytest.approx(cosine_cost(R, C), rel=1e-9)


def test_spherical_kernels_on_array_api_strict(rng):
    xps = pytest.importorskip("array_api_strict")
    U = unit(rng.normal(size=(300, 6)))
    w = rng.uniform(0.5, 2.0, 300)
    ref = _runner.weighted_kmeans(U, 4, np.random.default_rng(1), w, n_init=2, spherical=True)
    got = _runner.weighted_kmeans(
        xps.asarray(U), 4, np.random.default_rng(1), xps.asarray(w), n_init=2, spherical=True
    )
    np.testing.assert_allclose(np.asarray(got[0]), ref[0], atol=1e-6)
    assert got[1] == pytest.approx(ref[1], rel=1e-6)
    Xs, zero = _distances.unit_rows(xps.asarray(rng.normal(size=(10, 3))))
    assert not bool(xps.any(zero))


# ---------------------------------------------------------------------- the estimator
def test_cosine_fit_predict_transform_score_against_numpy(X):
    km = StreamingKMeans(6, metric="cosine", random_state=0).fit(da.from_array(X, chunks=1_500))
    C = km.cluster_centers_
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0, atol=1e-12)
    cos = unit(X) @ C.T
    np.testing.assert_array_equal(km.predict(X), cos.argmax(axis=1))
    np.testing.assert_array_equal(km.labels_.compute(), cos.argmax(axis=1))
    np.testing.assert_allclose(km.transform(X), 1.0 - cos, atol=1e-12)
    true = cosine_cost(X, C)
    assert -km.score(X) == pytest.approx(true, rel=1e-9)
    # The bound is an upper bound, and tight: groups are nearly pure.
    assert true <= km.inertia_ * (1 + 1e-9)
    assert km.inertia_ <= 1.01 * true


def test_cosine_inertia_is_exact_when_each_row_is_a_group(rng):
    X = directions(300, 5, 3, rng)[0]
    km = StreamingKMeans(3, metric="cosine", summary_size=300, random_state=0).fit(X)
    assert km.inertia_ == pytest.approx(-km.score(X), rel=1e-10)


def test_cosine_fit_ignores_row_lengths(X, rng):
    """Rows are scaled to unit length in the leaf: rescaled rows give the same model."""
    a = StreamingKMeans(6, metric="cosine", random_state=0).fit(da.from_array(X, chunks=2_000))
    scaled = X * rng.uniform(0.01, 100.0, size=(X.shape[0], 1))
    b = StreamingKMeans(6, metric="cosine", random_state=0).fit(da.from_array(scaled, chunks=2_000))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, atol=1e-9)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-9)
    # Euclidean k-means does depend on them: the cosine metric is doing the work.
    e = StreamingKMeans(6, random_state=0).fit(X)
    assert not np.allclose(np.linalg.norm(e.cluster_centers_, axis=1), 1.0)


@pytest.mark.parametrize("scale", [1e-300, 1e200, 1e300])
def test_cosine_rows_of_extreme_length_have_a_cosine(X, scale):
    # Rows were checked for squares that overflow float64 before they were scaled to unit
    # length, so rows near 1e300 were refused although their cosines are those of any length.
    a = StreamingKMeans(6, metric="cosine", random_state=0).fit(X)
    b = StreamingKMeans(6, metric="cosine", random_state=0).fit(X * scale)
    np.testing.assert_allclose(b.cluster_centers_, a.cluster_centers_, atol=1e-12)
    assert b.inertia_ == pytest.approx(a.inertia_, rel=1e-9)
    np.testing.assert_array_equal(b.predict(X * scale), a.predict(X))
    assert b.score(da.from_array(X * scale, chunks=2_000)) == pytest.approx(a.score(X), rel=1e-9)
    np.testing.assert_allclose(b.transform(X[:5] * scale), a.transform(X[:5]), atol=1e-12)


def test_cosine_quality_close_to_a_multi_pass_spherical_reference(rng):
    X, _ = directions(8_000, 16, 8, rng, spread=0.6)
    km = StreamingKMeans(8, metric="cosine", random_state=0).fit(da.from_array(X, chunks=1_000))
    ref_cost, _ = spherical_reference(unit(X), 8, np.random.default_rng(0))
    assert cosine_cost(X, km.cluster_centers_) <= 1.02 * ref_cost


def test_cosine_float32_stays_float32(X):
    X32 = X.astype(np.float32)
    km = StreamingKMeans(6, metric="cosine", random_state=0).fit(X32)
    assert km.cluster_centers_.dtype == np.float32
    out = km.transform(X32[:10])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0 - unit(X[:10]) @ km.cluster_centers_.T, atol=1e-5)
    # inertia_ of the float32 centers is still a cosine cost (it was once their squared
    # Euclidean bound, twice the cosine cost).
    true = cosine_cost(X, km.cluster_centers_.astype(np.float64))
    assert true * (1 - 1e-6) <= km.inertia_ <= 1.01 * true


def test_cosine_partial_fit_and_sample_weight(X, rng):
    km = StreamingKMeans(6, metric="cosine", random_state=0)
    for part in np.array_split(X, 3):
        km.partial_fit(part)
    assert km.n_rows_seen_ == X.shape[0]
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, atol=1e-12)
    assert cosine_cost(X, km.cluster_centers_) <= km.inertia_ * (1 + 1e-9)
    w = rng.uniform(0, 2, X.shape[0])
    kw = StreamingKMeans(6, metric="cosine", random_state=0).fit(X, sample_weight=w)
    assert -kw.score(X, sample_weight=w) == pytest.approx(
        cosine_cost(X, kw.cluster_centers_, w), rel=1e-9
    )


def test_euclidean_is_the_default_and_unchanged(X):
    assert StreamingKMeans().metric == "euclidean"
    a = StreamingKMeans(6, random_state=0).fit(X)
    b = StreamingKMeans(6, random_state=0, metric="euclidean").fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_zero_norm_row_is_an_error_naming_the_chunk(X):
    Z = X.copy()
    Z[3_250] = 0.0
    Zd = da.from_array(Z, chunks=1_000)
    with pytest.raises(
        ValueError, match=r"row 3250 in chunk 3 \(rows 3000 to 4000\) has zero norm"
    ):
        StreamingKMeans(6, metric="cosine", random_state=0).fit(Zd)
    km = StreamingKMeans(6, metric="cosine", random_state=0).fit(X)
    with pytest.raises(ValueError, match=r"chunk 3 \(rows 3000 to 4000\) has zero norm"):
        km.predict(Zd).compute()
    # The same rows are fine for euclidean k-means.
    StreamingKMeans(6, random_state=0).fit(Zd)


# ---------------------------------------------------------------------- bad input
def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match=r"metric='manhattan' should be one of"):
        StreamingKMeans(metric="manhattan").fit(np.eye(3))


def test_changed_metric_after_fit_is_refused(X):
    km = StreamingKMeans(6, metric="cosine", random_state=0).fit(X)
    km.set_params(metric="euclidean")
    for call in (lambda: km.partial_fit(X), lambda: km.predict(X), lambda: km.score(X)):
        with pytest.raises(ValueError, match="fitted with metric='cosine'"):
            call()
    km.set_params(metric="cosine")
    km.partial_fit(X[:100])  # back to its own metric: fine
    e = StreamingKMeans(6, random_state=0).fit(X)
    e.set_params(metric="cosine")
    with pytest.raises(ValueError, match="fitted with metric='euclidean'"):
        e.transform(X)


def test_refit_with_another_metric_is_refused(X):
    km = StreamingKMeans(6, metric="cosine", random_state=0).fit(X)
    before = km.cluster_centers_.copy()
    with pytest.raises(ValueError, match=r"refit\(metric='euclidean'\) on a model fitted with"):
        km.refit(metric="euclidean")
    np.testing.assert_array_equal(km.cluster_centers_, before)
    assert km.metric == "cosine"
    km.refit(n_clusters=3, metric="cosine")
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, atol=1e-12)


def test_model_file_keeps_the_metric_and_old_files_load_as_euclidean(X, tmp_path):
    km = StreamingKMeans(6, metric="cosine", random_state=0).fit(X)
    km.save(tmp_path / "cos.npz")
    back = StreamingKMeans.load(tmp_path / "cos.npz")
    assert back.metric == "cosine"
    np.testing.assert_array_equal(back.predict(X), km.predict(X))
    back.partial_fit(X[:500])

    # A file written before the metric existed: the same file without the parameter.
    e = StreamingKMeans(6, random_state=0).fit(X)
    e.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as data:
        arrays = {name: data[name] for name in data.files}
    metadata = json.loads(str(arrays["metadata"]))
    del metadata["params"]["metric"]
    arrays["metadata"] = np.array(json.dumps(metadata))
    np.savez(tmp_path / "old.npz", **arrays)
    with zipfile.ZipFile(tmp_path / "old.npz") as z:
        assert "metric" not in z.read("metadata.npy").decode("latin-1")
    old = StreamingKMeans.load(tmp_path / "old.npz")
    assert old.metric == "euclidean"
    np.testing.assert_array_equal(old.predict(X), e.predict(X))
    old.partial_fit(X[:500])

    # A model whose metric was changed after fitting is saved with the metric it was fit with.
    km.set_params(metric="euclidean")
    km.save(tmp_path / "changed.npz")
    assert StreamingKMeans.load(tmp_path / "changed.npz").metric == "cosine"


def test_to_sklearn_predicts_the_highest_cosine(X):
    km = StreamingKMeans(6, metric="cosine", random_state=0).fit(X)
    np.testing.assert_array_equal(km.to_sklearn().predict(X), km.predict(X))


# ---------------------------------------------------------------------- elbow and CLI
def test_elbow_cosine_costs_are_sums_of_one_minus_cos(X):
    result = elbow(da.from_array(X, chunks=2_000), range(2, 8), metric="cosine", random_state=0)
    for k in (3, 6):
        C = result.centers[k]
        np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1.0, atol=1e-12)
        bound = result.cost_bound[list(result.k).index(k)]
        assert cosine_cost(X, C) <= bound * (1 + 1e-9) <= 1.01 * cosine_cost(X, C)
    assert result.model.metric == "cosine"
    again = elbow(result.model, [3, 6])  # the model's own metric
    assert again.cost_bound[0] == pytest.approx(result.cost_bound[1], rel=0.05)
    with pytest.raises(ValueError, match=r"elbow\(metric='euclidean'\) with a model fitted"):
        elbow(result.model, [3], metric="euclidean")
    with pytest.raises(ValueError, match="metric='dot' should be one of"):
        elbow(Summary.from_points(unit(X)), [3], metric="dot")


def test_cli_metric_flag(tmp_path, capsys, rng):
    X = directions(3_000, 6, 4, rng)[0]
    np.save(tmp_path / "x.npy", X)
    args = build_parser().parse_args(["fit", "x.npy", "--k", "4", "--metric", "cosine"])
    assert args.metric == "cosine"
    model = tmp_path / "m.npz"
    rc = main(
        [
            "fit",
            str(tmp_path / "x.npy"),
            "--k",
            "4",
            "--metric",
            "cosine",
            "--out",
            str(model),
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    km = StreamingKMeans.load(model)
    assert km.metric == "cosine"
    ref = StreamingKMeans(4, metric="cosine", random_state=0).fit(X)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, atol=1e-12)
    rc = main(["elbow", str(tmp_path / "x.npy"), "--k", "2:5", "--metric", "cosine", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "suggested k" in out
    rc = main(
        ["demo", "--rows", "4000", "--chunks", "1000", "--k", "3", "--metric", "cosine", "--quiet"]
    )
    assert rc == 0


# ---------------------------------------------------------------------- the benchmark's reference
def test_benchmark_reference_matches_sklearn_kmeans_on_normalized_rows(rng):
    """The numpy spherical k-means of benchmarks/cosine_quality.py against sklearn's KMeans
    on the normalized rows with its centers renormalized (nearly the same optimum)."""
    import sys
    from pathlib import Path

    from sklearn.cluster import KMeans

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import cosine_quality as bench

    V = bench.vmf_mixture(4_000, 16, 8, seed=1)
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1.0, atol=1e-5)
    U = bench.normalize(V * rng.uniform(0.5, 2.0, size=(V.shape[0], 1)))
    cost, centers = bench.spherical_kmeans(U, 8, n_init=10)
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), 1.0, atol=1e-6)
    assert cost == pytest.approx(cosine_cost(U, centers), rel=1e-5)
    sk = KMeans(8, n_init=10, random_state=0).fit(U).cluster_centers_
    sk_cost = bench.cosine_cost(U, sk)
    assert sk_cost == pytest.approx(cosine_cost(U, unit(sk)), rel=1e-5)
    # The spherical optimum is at least as good as Euclidean KMeans' renormalized centers,
    # and the two are close (for unit rows ||x - c||^2 = 2 (1 - cos) when c is unit).
    assert cost <= sk_cost * 1.001
    assert cost >= 0.97 * sk_cost
