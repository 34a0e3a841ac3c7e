"""SageMaker k-means hyperparameters and test metrics."""

import warnings

import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm.sagemaker import SageMakerCompatibilityWarning, params_from_sagemaker

FULL = {
    "k": "10",
    "feature_dim": "32",
    "mini_batch_size": "5000",
    "extra_center_factor": "4",
    "init_method": "kmeans++",
    "local_lloyd_max_iter": "100",
    "local_lloyd_tol": "0.001",
    "local_lloyd_num_trials": "5",
    "local_lloyd_init_method": "kmeans++",
    "half_life_time_size": "50000",
    "epochs": "1",
    "eval_metrics": '["msd", "ssd"]',
}


def test_every_hyperparameter_maps():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        km = StreamingKMeans.from_sagemaker(FULL)
    assert (
        km.get_params()
        == StreamingKMeans(
            n_clusters=10,
            mini_batch_size=5000,
            summary_size=40,
            max_iter=100,
            tol=0.001,
            n_init=5,
            half_life=50000,
        ).get_params()
    )
    params, extras = params_from_sagemaker(FULL)
    assert extras == {"feature_dim": 32, "eval_metrics": ("msd", "ssd")}
    assert params["summary_size"] == 40


def test_defaults_and_auto_values():
    km = StreamingKMeans.from_sagemaker(
        {
            "k": "3",
            "feature_dim": "2",
            "extra_center_factor": "auto",
            "local_lloyd_num_trials": "auto",
            "half_life_time_size": "0",
        }
    )
    assert km.summary_size == "auto"
    assert km.n_init == "auto"
    assert km.half_life is None
    _, extras = params_from_sagemaker({"k": "3", "feature_dim": "2"})
    assert extras["eval_metrics"] == ("msd",)  # SageMaker's default


def test_numbers_accepted_as_well_as_strings():
    km = StreamingKMeans.from_sagemaker({"k": 4, "feature_dim": 2, "local_lloyd_tol": 1e-3})
    assert (km.n_clusters, km.tol) == (4, 1e-3)


@pytest.mark.parametrize(
    "metrics, expected",
    [
        ('["ssd"]', ("ssd",)),
        ('[\\"msd\\",\\"ssd\\"]', ("msd", "ssd")),  # as SageMaker's docs print it
        ("msd", ("msd",)),
    ],
)
def test_eval_metrics_forms(metrics, expected):
    _, extras = params_from_sagemaker({"k": "2", "feature_dim": "2", "eval_metrics": metrics})
    assert extras["eval_metrics"] == expected


def test_unknown_name_is_an_error():
    with pytest.raises(
        ValueError,
        match=r"Unknown SageMaker k-means hyperparameter\(s\) "
        r"\['num_clusters'\]; the known names are",
    ):
        StreamingKMeans.from_sagemaker({"k": "2", "feature_dim": "2", "num_clusters": "3"})


def test_missing_required_is_an_error():
    with pytest.raises(ValueError, match=r"\['feature_dim'\] are required"):
        StreamingKMeans.from_sagemaker({"k": "2"})


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("k", "zero", r"k='zero' should be an integer >= 1"),
        ("k", "0", r"k='0' should be an integer >= 1"),
        ("mini_batch_size", "-5", r"mini_batch_size='-5' should be an integer >= 1"),
        (
            "extra_center_factor",
            "many",
            r"extra_center_factor='many' should be an integer >= 1 or "
            r"\"auto\"",
        ),
        ("local_lloyd_tol", "2", r"local_lloyd_tol='2' should be a number in \[0.0, 1.0\]"),
        (
            "init_method",
            "forgy",
            r"init_method='forgy' should be one of \['random', 'kmeans\+\+'\]",
        ),
        ("half_life_time_size", "-1", r"half_life_time_size='-1' should be an integer >= 0"),
        (
            "eval_metrics",
            '["mse"]',
            r"eval_metrics contains 'mse'; the metrics are \['msd', 'ssd'\]",
        ),
    ],
)
def test_invalid_values_are_errors(name, value, match):
    with pytest.raises(ValueError, match=match):
        StreamingKMeans.from_sagemaker({"k": "2", "feature_dim": "2", name: value})


@pytest.mark.parametrize(
    "name, value",
    [
        ("init_method", "random"),
        ("local_lloyd_init_method", "random"),
        ("epochs", "3"),
    ],
)
def test_values_without_equivalent_warn_at_the_caller(name, value):
    with pytest.warns(
        SageMakerCompatibilityWarning,
        match=f"{name}='{value}' has no equivalent in StreamingKMeans and is ignored",
    ) as record:
        km = StreamingKMeans.from_sagemaker({"k": "2", "feature_dim": "2", name: value})
    assert record[0].filename == __file__
    assert km.n_clusters == 2
    with pytest.warns(SageMakerCompatibilityWarning) as record:
        params_from_sagemaker({"k": "2", "feature_dim": "2", name: value})
    assert record[0].filename == __file__


# ---------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.0, size=(300, 2)) for c in (-8, 0, 8)])
    return StreamingKMeans(n_clusters=3, random_state=0).fit(X), rng


def reference_ssd(X, centers, weights=None):
    d = ((X[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    return float(d.sum() if weights is None else (d * weights).sum())


def test_evaluate_exact_metrics(fitted):
    km, rng = fitted
    X_test = rng.normal(0, 6, size=(1000, 2))
    ssd = reference_ssd(X_test, km.cluster_centers_)
    out = km.evaluate(X_test)
    assert list(out) == ["msd", "ssd"]
    assert out["ssd"] == pytest.approx(ssd, rel=1e-10)
    assert out["msd"] == pytest.approx(ssd / 1000, rel=1e-10)
    assert out["ssd"] == pytest.approx(-km.score(X_test), rel=1e-12)
    dask_out = km.evaluate(da.from_array(X_test, chunks=300), metrics=("ssd",))
    assert list(dask_out) == ["ssd"]
    assert dask_out["ssd"] == pytest.approx(ssd, rel=1e-10)
    assert km.evaluate(X_test, metrics='["msd"]') == {"msd": pytest.approx(ssd / 1000)}


def test_evaluate_with_sample_weight(fitted):
    km, rng = fitted
    X_test = rng.normal(0, 6, size=(200, 2))
    w = rng.uniform(0, 3, size=200)
    ssd = reference_ssd(X_test, km.cluster_centers_, w)
    out = km.evaluate(X_test, sample_weight=w)
    assert out["ssd"] == pytest.approx(ssd, rel=1e-10)
    assert out["msd"] == pytest.approx(ssd / w.sum(), rel=1e-10)


def test_evaluate_bad_metric(fitted):
    km, rng = fitted
    with pytest.raises(ValueError, match=r"metrics contains 'rmse'; the metrics are"):
        km.evaluate(rng.normal(size=(5, 2)), metrics=("rmse",))
