"""scikit-learn's own k-means tests (sklearn/cluster/tests/test_k_means.py), ported.

``test_score_max_iter``, ``test_transform`` and the dtype rule of ``_transform``
(``euclidean_distances`` in the common dtype of X and the centers).
"""

import dask.array as da
import numpy as np
import pytest
from sklearn.metrics import pairwise_distances

from dask_streamkm import StreamingKMeans


# sklearn's global_random_seed defaults to 42; a few more seeds show it is not luck.
@pytest.mark.parametrize("seed", [42, 0, 1, 2, 3])
def test_score_max_iter(seed):
    # More iterations can lower the cost: max_iter=1 stops every Lloyd run of the solve
    # after one iteration, as KMeans's single run.
    X = np.random.RandomState(seed).randn(100, 10)
    s1 = StreamingKMeans(n_init=1, random_state=seed, max_iter=1).fit(X).score(X)
    s2 = StreamingKMeans(n_init=1, random_state=seed, max_iter=10).fit(X).score(X)
    assert s2 > s1


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transform_of_the_centers_has_an_exact_zero_diagonal(lazy, dtype):
    rng = np.random.RandomState(42)
    X = (rng.randn(600, 5) * 3 + 100).astype(dtype)  # far from the origin: cancellation
    km = StreamingKMeans(n_clusters=8, random_state=42).fit(X)
    centers = km.cluster_centers_
    Xt = km.transform(da.from_array(centers, chunks=(3, -1)) if lazy else centers)
    Xt = np.asarray(Xt)
    np.testing.assert_allclose(
        Xt, pairwise_distances(centers), rtol=1e-5 if dtype == np.float32 else 1e-7, atol=1e-6
    )
    np.testing.assert_array_equal(Xt.diagonal(), np.zeros(8))
    np.testing.assert_allclose(
        km.transform(X), pairwise_distances(X, centers), rtol=1e-4 if dtype == np.float32 else 1e-7
    )


@pytest.mark.parametrize(
    ("fit_dtype", "input_dtype", "out_dtype"),
    [
        (np.float64, np.float32, np.float64),  # the model's dtype, as scikit-learn's
        (np.float32, np.float64, np.float64),
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
    ],
)
def test_transform_dtype_is_the_common_dtype_of_input_and_model(fit_dtype, input_dtype, out_dtype):
    X = np.random.RandomState(0).randn(200, 3)
    km = StreamingKMeans(n_clusters=3, random_state=0).fit(X.astype(fit_dtype))
    assert km.transform(X.astype(input_dtype)).dtype == out_dtype
    lazy = km.transform(da.from_array(X.astype(input_dtype), chunks=50))
    assert lazy.dtype == out_dtype and lazy.compute().dtype == out_dtype
    np.testing.assert_allclose(
        km.transform(X.astype(input_dtype)),
        pairwise_distances(X.astype(input_dtype), km.cluster_centers_),
        rtol=1e-5,
    )


def test_transform_sq_distances_exact_zeros_in_any_namespace():
    xp = pytest.importorskip("array_api_strict")
    from dask_streamkm._distances import transform_sq_distances

    rng = np.random.RandomState(0)
    C = rng.randn(4, 3) * 2 + 1e3
    X = np.concatenate([C[[2, 0]], rng.randn(3, 3) + 1e3])
    ref = ((X[:, None] - C[None]) ** 2).sum(2)
    for arrays in ((X, C), (xp.asarray(X), xp.asarray(C))):
        d = np.asarray(transform_sq_distances(*arrays))
        assert d[0, 2] == 0.0 and d[1, 0] == 0.0
        np.testing.assert_allclose(d, ref, rtol=1e-9, atol=1e-9)
