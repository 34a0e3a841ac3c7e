"""SageMaker k-means hyperparameters and test metrics for StreamingKMeans.

Amazon SageMaker's built-in k-means takes its hyperparameters as a string-to-string map
(``{"k": "10", "feature_dim": "32", "mini_batch_size": "5000", ...}``) and reports the test
metrics ``msd`` (mean of the squared distances of the test rows to their nearest center) and
``ssd`` (their sum). :func:`params_from_sagemaker` maps those hyperparameters to
:class:`~dask_streamkm.StreamingKMeans` parameters, and :func:`evaluate` computes the metrics
exactly, in one pass over the data.

=========================== ======================== =========================================
SageMaker hyperparameter    StreamingKMeans          note
=========================== ======================== =========================================
``k``                       ``n_clusters``           required
``feature_dim``             (checked)                required; the features are read from the
                                                     data at ``fit`` (``n_features_in_``)
``mini_batch_size``         ``mini_batch_size``      used by ``method="stream"``, SageMaker's
                                                     per-chunk pass; the default leaf
                                                     (``"tree"``) has no mini-batches
``extra_center_factor``     ``summary_size``         ``factor * k`` groups per chunk; ``auto``
                                                     keeps ``"auto"``
``init_method``             (none)                   chunks are always seeded by D^2
                                                     (k-means++) sampling; ``random`` warns
``local_lloyd_max_iter``    ``max_iter``
``local_lloyd_tol``         ``tol``
``local_lloyd_num_trials``  ``n_init``               ``auto`` keeps ``"auto"``
``local_lloyd_init_method`` (none)                   the final solve is always k-means++;
                                                     ``random`` warns
``half_life_time_size``     ``half_life``            ``0`` is no decay (``None``); decay is
                                                     applied between ``partial_fit`` calls
``epochs``                  (none)                   one pass by design; ``epochs > 1`` warns
``eval_metrics``            (checked)                pass them to ``evaluate(X, metrics=...)``
=========================== ======================== =========================================
"""

from __future__ import annotations

import json
import numbers
import warnings

__all__ = ["SageMakerCompatibilityWarning", "evaluate", "params_from_sagemaker"]

#: The test metrics SageMaker's k-means reports.
METRICS = ("msd", "ssd")
KNOWN = (
    "k",
    "feature_dim",
    "mini_batch_size",
    "extra_center_factor",
    "init_method",
    "local_lloyd_max_iter",
    "local_lloyd_tol",
    "local_lloyd_num_trials",
    "local_lloyd_init_method",
    "half_life_time_size",
    "epochs",
    "eval_metrics",
)
REQUIRED = ("k", "feature_dim")


class SageMakerCompatibilityWarning(UserWarning):
    """A SageMaker hyperparameter value with no equivalent in StreamingKMeans (it is ignored)."""


def _int(name, value, minimum, allow_auto=False):
    if allow_auto and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool):
        ok = False
    elif isinstance(value, numbers.Integral):
        ok, out = True, int(value)
    else:
        try:
            out = int(str(value).strip())
            ok = True
        except ValueError:
            ok = False
    if not ok or out < minimum:
        rule = f"an integer >= {minimum}" + (' or "auto"' if allow_auto else "")
        raise ValueError(
            f"SageMaker hyperparameter {name}={value!r} should be {rule} (given as a string, "
            f'e.g. {name}="{max(minimum, 1)}").'
        )
    return out


def _float(name, value, low, high):
    try:
        out = float(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        out = None
    if out is None or not (low <= out <= high):
        raise ValueError(
            f"SageMaker hyperparameter {name}={value!r} should be a number in [{low}, {high}] "
            f'(given as a string, e.g. {name}="0.0001").'
        )
    return out


def _choice(name, value, choices):
    out = str(value).strip().lower()
    if out not in choices:
        raise ValueError(
            f"SageMaker hyperparameter {name}={value!r} should be one of {list(choices)}."
        )
    return out


def parse_eval_metrics(value, name="eval_metrics"):
    """``'["msd", "ssd"]'`` (a JSON list, as SageMaker takes it) or a sequence -> tuple."""
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            # SageMaker's docs also show the list with escaped quotes, or a bare name.
            try:
                parsed = json.loads(text.replace('\\"', '"'))
            except json.JSONDecodeError:
                parsed = [text]
        value = [parsed] if isinstance(parsed, str) else parsed
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"{name}={value!r} should be a non-empty list of metric names from {list(METRICS)}, "
            'e.g. \'["msd", "ssd"]\'.'
        )
    out = []
    for metric in value:
        m = str(metric).strip().lower()
        if m not in METRICS:
            raise ValueError(
                f"{name} contains {metric!r}; the metrics are {list(METRICS)} (msd: mean squared "
                "distance to the nearest center, ssd: sum of squared distances)."
            )
        if m not in out:
            out.append(m)
    return tuple(out)


def params_from_sagemaker(hyperparameters):
    """StreamingKMeans parameters for SageMaker k-means hyperparameters.

    Parameters
    ----------
    hyperparameters : mapping of str to str
        SageMaker k-means hyperparameters, values as strings (numbers are accepted too).
        ``k`` and ``feature_dim`` are required, as in SageMaker.

    Returns
    -------
    params : dict
        Keyword arguments for :class:`~dask_streamkm.StreamingKMeans`.
    extras : dict
        ``feature_dim`` (int) and ``eval_metrics`` (tuple of str), which are not estimator
        parameters.

    Raises
    ------
    ValueError
        For an unknown hyperparameter name, a missing required one, or an invalid value.

    Warns
    -----
    SageMakerCompatibilityWarning
        For a value with no equivalent here (``init_method="random"``,
        ``local_lloyd_init_method="random"``, ``epochs > 1``); the value is ignored.
    """
    params, extras, notes = _map_hyperparameters(hyperparameters)
    for note in notes:
        warnings.warn(note, SageMakerCompatibilityWarning, stacklevel=2)
    return params, extras


def from_sagemaker(cls, hyperparameters):
    """``cls(**params)`` for SageMaker hyperparameters (the body of
    ``StreamingKMeans.from_sagemaker``; warnings point at its caller)."""
    params, _, notes = _map_hyperparameters(hyperparameters)
    for note in notes:
        warnings.warn(note, SageMakerCompatibilityWarning, stacklevel=3)
    return cls(**params)


def _map_hyperparameters(hyperparameters):
    """(params, extras, warning messages) for SageMaker hyperparameters."""
    if not hasattr(hyperparameters, "items"):
        raise TypeError(
            f"hyperparameters should be a dict of SageMaker k-means hyperparameters, got "
            f"{type(hyperparameters).__name__}."
        )
    hp = {str(k): v for k, v in hyperparameters.items()}
    unknown = sorted(set(hp) - set(KNOWN))
    if unknown:
        raise ValueError(
            f"Unknown SageMaker k-means hyperparameter(s) {unknown}; the known names are "
            f"{list(KNOWN)}."
        )
    missing = [name for name in REQUIRED if name not in hp]
    if missing:
        raise ValueError(
            f"SageMaker k-means hyperparameter(s) {missing} are required, e.g. "
            '{"k": "10", "feature_dim": "32"}.'
        )

    notes = []

    def ignored(name, value, why):
        notes.append(
            f"SageMaker hyperparameter {name}={value!r} has no equivalent in StreamingKMeans and "
            f"is ignored: {why}"
        )

    k = _int("k", hp["k"], 1)
    params = {"n_clusters": k}
    extras = {"feature_dim": _int("feature_dim", hp["feature_dim"], 1), "eval_metrics": ("msd",)}
    if "mini_batch_size" in hp:
        params["mini_batch_size"] = _int("mini_batch_size", hp["mini_batch_size"], 1)
    if "extra_center_factor" in hp:
        factor = _int("extra_center_factor", hp["extra_center_factor"], 1, allow_auto=True)
        params["summary_size"] = "auto" if factor == "auto" else factor * k
    if "init_method" in hp:
        if _choice("init_method", hp["init_method"], ("random", "kmeans++")) == "random":
            ignored(
                "init_method",
                hp["init_method"],
                "every chunk is seeded by D^2 (k-means++) sampling. Drop it or use 'kmeans++'.",
            )
    if "local_lloyd_max_iter" in hp:
        params["max_iter"] = _int("local_lloyd_max_iter", hp["local_lloyd_max_iter"], 1)
    if "local_lloyd_tol" in hp:
        params["tol"] = _float("local_lloyd_tol", hp["local_lloyd_tol"], 0.0, 1.0)
    if "local_lloyd_num_trials" in hp:
        trials = _int("local_lloyd_num_trials", hp["local_lloyd_num_trials"], 1, allow_auto=True)
        params["n_init"] = trials
    if "local_lloyd_init_method" in hp:
        method = _choice(
            "local_lloyd_init_method", hp["local_lloyd_init_method"], ("random", "kmeans++")
        )
        if method == "random":
            ignored(
                "local_lloyd_init_method",
                hp["local_lloyd_init_method"],
                "the final solve always seeds by weighted greedy k-means++. Drop it or use "
                "'kmeans++'.",
            )
    if "half_life_time_size" in hp:
        half = _int("half_life_time_size", hp["half_life_time_size"], 0)
        params["half_life"] = None if half == 0 else half
    if "epochs" in hp:
        epochs = _int("epochs", hp["epochs"], 1)
        if epochs > 1:
            ignored(
                "epochs",
                hp["epochs"],
                "StreamingKMeans reads the data once (one pass); a larger summary_size "
                "(extra_center_factor) is the way to buy quality. Drop it or use epochs='1'.",
            )
    if "eval_metrics" in hp:
        extras["eval_metrics"] = parse_eval_metrics(hp["eval_metrics"])
    return params, extras, notes


def evaluate(model, X, metrics=METRICS, sample_weight=None):
    """SageMaker's test metrics of a fitted model on X, exact, in one pass over X.

    Parameters
    ----------
    model : StreamingKMeans
        A fitted model.
    X : array-like, dask array or zarr array of shape (n_samples, n_features)
        Test rows.
    metrics : sequence of {"msd", "ssd"} or str, default=("msd", "ssd")
        Metrics to report; a JSON list string (``'["msd"]'``) as SageMaker takes it works too.
    sample_weight : array-like or dask array of shape (n_samples,), default=None
        Weight of each row: finite, >= 0 and not all zero, checked by the same rules for
        numpy and dask weights (as ``score``).

    Returns
    -------
    metrics : dict of str to float
        ``{"msd": ssd / total weight, "ssd": sum of (weighted) squared distances of the rows
        to their nearest center}``, restricted to ``metrics``.
    """
    metrics = parse_eval_metrics(metrics, name="metrics")
    # One compute under the library's thread policy; both sums share the single read of X.
    ssd, weight = model._sq_distance_sum(X, sample_weight)
    out = {"msd": ssd / weight, "ssd": ssd}
    return {m: out[m] for m in metrics}
