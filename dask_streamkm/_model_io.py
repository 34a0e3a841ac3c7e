"""Model files for StreamingKMeans (npz + JSON metadata, no pickle) and export to scikit-learn.

A model file is an ordinary ``.npz`` archive (``numpy.load(path, allow_pickle=False)`` reads it)
holding:

- ``metadata``: a 0-d unicode array with a JSON object: ``format`` (always
  ``"dask_streamkm.StreamingKMeans"``), ``format_version``, the library version that wrote it,
  the estimator's ``params``, and its scalar fitted attributes (``n_features_in_``, ``inertia_``,
  ``n_iter_``, ``n_rows_seen_``, ``feature_names_in_`` when present, the seed of the final
  solve);
- ``cluster_centers_``: (n_clusters, n_features), in the model's dtype (float32 or float64);
- ``summary_weights``, ``summary_linear_sums``, ``summary_square_sums``: the merged summary, so
  ``refit`` and ``partial_fit`` work after loading;
- ``summary_origin`` (format version 2, required there): the point the summary's sums are
  relative to (zeros for sums of the rows themselves); version-1 files have none and load with
  origin zero.

``labels_`` (one label per training row, possibly a lazy dask array) and ``storage_options``
(they may hold credentials) are not stored; a file that holds ``storage_options`` is refused.
The archive is read with its declared sizes checked before anything is decompressed or
allocated (:mod:`._npz`): a member declaring more than the file can hold is refused.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile

import numpy as np

from . import _remote
from ._array import to_host
from ._location import Location, write_bytes
from ._npz import NpzError, NpzReader
from ._seeds import entropy_from_json, entropy_to_json
from .summary import FILE_ARRAYS, ORIGIN_NEAR, Summary, checked_origin

#: What the ``format`` field of the metadata says.
MODEL_FORMAT = "dask_streamkm.StreamingKMeans"
#: Version of the model file layout written by this library; readers accept this or older.
MODEL_FORMAT_VERSION = 2

_METADATA = "metadata"
#: The model's summary in the file: the summary file's arrays, prefixed (``summary_weights``...).
_PREFIX = "summary_"
_SUMMARY = {name: _PREFIX + name for name in FILE_ARRAYS}
_ARRAYS = ("cluster_centers_", *(_SUMMARY[n] for n in ("weights", "linear_sums", "square_sums")))
_ZIP_MAGIC = b"PK\x03\x04"


def library_version():
    """This library's version: from the installed package's metadata, else (a source tree
    that was never installed) from the ``pyproject.toml`` beside the package."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dask_streamkm")
    except PackageNotFoundError:
        import tomllib

        with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as fh:
            return tomllib.load(fh)["project"]["version"]


class ModelFileError(ValueError):
    """A file that cannot be read as a StreamingKMeans model (see the message for the fix)."""


# ---------------------------------------------------------------------- save
def _centers_to_save(centers):
    """The centers as written to a file: host numpy in their dtype (float32 or float64)."""
    centers = to_host(centers)
    return np.asarray(centers, dtype=_float_dtype(np.asarray(centers)))


def _json_param(name, value):
    """A parameter value as JSON; random_state objects are recorded as None."""
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        # checkpoint=pathlib.Path(...): stored as its str, which the estimator accepts too.
        return os.fspath(value)
    if name == "random_state":
        # A RandomState / Generator cannot be stored without pickle; the seed of the final
        # solve is stored separately, so refit and partial_fit stay reproducible.
        return None
    raise TypeError(
        f"{name}={value!r} cannot be written to a model file; model files store parameters "
        "that are None, bool, int, float or str."
    )


def save_model(model, path, storage_options=None):
    """Write a fitted StreamingKMeans to ``path`` (npz + JSON metadata). Returns the path.

    ``path`` is a local path or an fsspec URL; the file is written whole and atomically
    (locally a temporary name, then a rename). ``storage_options`` are never written into it.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, ["cluster_centers_", "summary_"])
    _check_savable(model)
    # storage_options may hold credentials: never written to a model file.
    params = {
        k: _json_param(k, v)
        for k, v in model.get_params(deep=False).items()
        if k != "storage_options"
    }
    if isinstance(params.get("checkpoint"), str):  # nor a checkpoint URL's credentials
        params["checkpoint"] = _remote.display(params["checkpoint"])
    # The metric the summary and centers were fitted with (set_params may have changed it).
    params["metric"] = getattr(model, "_metric_", params.get("metric", "euclidean"))
    attributes = {
        "n_features_in_": int(model.n_features_in_),
        "inertia_": float(model.inertia_),
        "n_iter_": int(model.n_iter_),
        "n_rows_seen_": int(model.n_rows_seen_),
    }
    if hasattr(model, "feature_names_in_"):
        attributes["feature_names_in_"] = [str(f) for f in model.feature_names_in_]
    entropy = getattr(model, "_entropy_", None)
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "library_version": library_version(),
        "params": params,
        "attributes": attributes,
        # SeedSequence entropy of the fit (an int, or [int, int] after partial_fit).
        "entropy": entropy_to_json(entropy),
    }
    summary = model.summary_
    path = os.fspath(path)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        metadata=np.array(json.dumps(metadata)),
        cluster_centers_=_centers_to_save(model.cluster_centers_),
        **summary._file_fields(_PREFIX),
    )
    where = Location.of(path, storage_options)
    try:
        write_bytes(where, buffer.getvalue())
    except OSError:
        raise  # write_bytes names the URL (redacted) and the fix, and keeps the error's kind
    except Exception as exc:  # a client's own error (a bad bucket name, no credentials)
        raise OSError(
            where.redact(
                f"cannot write the model file {path!r} ({type(exc).__name__}: {exc}); check the "
                "path or URL, that the directory or bucket exists and the credentials "
                "(storage_options or the environment)."
            )
        ) from None
    return path


# ---------------------------------------------------------------------- load
def _check_savable(model):
    """Refuse, before anything is written, a model whose file :func:`load_model` would refuse:
    parameters that fail the estimator's checks, or ``n_clusters`` changed by ``set_params``
    after fitting (the centers are those of the fitted number)."""
    model._check_params()
    model._check_fitted_n_clusters("its file could not be loaded.")


def _read_npz(where):
    """Metadata dict and arrays of the model file at ``where`` (a :class:`._location.Location`),
    or a ModelFileError saying what is wrong."""
    path = where.url
    try:
        content = where.read_bytes()
    except Exception as exc:  # OSError, or a client's own (a bad bucket name, no credentials)
        raise ModelFileError(
            f"cannot open model file {path!r} ({type(exc).__name__}: {exc}); check the path "
            "or URL and the credentials (storage_options or the environment)."
        ) from exc
    head = content[:4]
    if head != _ZIP_MAGIC:
        raise ModelFileError(
            f"{path!r} is not a dask_streamkm model file: it is not an .npz archive (it starts "
            f"with {head!r}). Write model files with StreamingKMeans.save(path)."
        )
    try:
        with NpzReader(content) as data:
            names = set(data.files)
            if _METADATA not in names:
                hint = (
                    " It looks like a Summary file: read it with Summary.load(path)."
                    if set(FILE_ARRAYS[:3]) <= names
                    else ""
                )
                raise ModelFileError(
                    f"{path!r} is an .npz archive but not a dask_streamkm model file: it has no "
                    f"{_METADATA!r} entry (entries: {sorted(names)}).{hint}"
                )
            raw = data[_METADATA]
            if raw.dtype.kind != "U" or raw.ndim != 0:
                raise ModelFileError(
                    f"{path!r} is not a dask_streamkm model file: its {_METADATA!r} entry is "
                    f"not a JSON string (dtype {raw.dtype}, shape {raw.shape})."
                )
            try:
                metadata = json.loads(str(raw))
            except json.JSONDecodeError as exc:
                raise ModelFileError(
                    f"{path!r} is not a dask_streamkm model file: its metadata is not valid "
                    f"JSON ({exc})."
                ) from exc
            _check_metadata(path, metadata)
            missing = [name for name in _ARRAYS if name not in names]
            if missing:
                raise ModelFileError(
                    f"{path!r} is a damaged dask_streamkm model file: the arrays {missing} are "
                    "missing. Save the model again with StreamingKMeans.save(path)."
                )
            arrays = {name: np.asarray(data[name]) for name in _ARRAYS}
            # Version 1 has no origin: its summary sums are relative to zero. From version 2
            # on the sums may be relative to a point far from zero: without it they are wrong.
            if _SUMMARY["origin"] in names:
                arrays[_SUMMARY["origin"]] = np.asarray(data[_SUMMARY["origin"]])
            elif metadata["format_version"] >= 2:
                raise _damaged(
                    path,
                    f"it is of format version {metadata['format_version']} but has no "
                    "'summary_origin' entry (the point its summary sums are relative to)",
                )
            arrays[_SUMMARY["n_seen"]] = (
                int(data[_SUMMARY["n_seen"]])
                if (_SUMMARY["n_seen"] in names)
                else int(metadata["attributes"].get("n_rows_seen_", 0))
            )
    except ModelFileError:
        raise
    except NpzError as exc:
        raise _damaged(path, str(exc)) from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(
            f"{path!r} is a truncated or corrupted model file ({type(exc).__name__}: {exc}). "
            "Copy the file again or save the model again with StreamingKMeans.save(path)."
        ) from exc
    return metadata, arrays


def _check_metadata(path, metadata):
    if not isinstance(metadata, dict) or metadata.get("format") != MODEL_FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise ModelFileError(
            f"{path!r} is not a dask_streamkm model file: its metadata format is {found!r}, "
            f"expected {MODEL_FORMAT!r}."
        )
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(
            f"{path!r} has an invalid format_version={version!r}; expected an integer >= 1."
        )
    if version > MODEL_FORMAT_VERSION:
        writer = metadata.get("library_version", "a newer version")
        raise ModelFileError(
            f"{path!r} is a model file of format version {version} (written by dask_streamkm "
            f"{writer}); this version of dask_streamkm reads format versions up to "
            f"{MODEL_FORMAT_VERSION}. Upgrade with `pip install -U dask-streamkm`."
        )
    for key in ("params", "attributes"):
        if not isinstance(metadata.get(key), dict):
            raise ModelFileError(
                f"{path!r} is a damaged dask_streamkm model file: its metadata has no {key!r} "
                "object."
            )


def _damaged(path, what):
    """The ModelFileError of a model file whose content breaks a rule (``what`` says which)."""
    return ModelFileError(
        f"{path!r} is a damaged or hand-edited dask_streamkm model file: {what}. Save the "
        "model again with StreamingKMeans.save(path)."
    )


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_attributes(path, attrs):
    """Types and ranges of the scalar fitted attributes of the metadata."""
    for name, minimum in (("n_features_in_", 1), ("n_iter_", 0), ("n_rows_seen_", 1)):
        if name not in attrs:
            raise _damaged(path, f"its metadata has no attribute {name!r}")
        value = attrs[name]
        if not _is_int(value) or value < minimum:
            raise _damaged(path, f"{name}={value!r} should be an integer >= {minimum}")
    if "inertia_" not in attrs:
        raise _damaged(path, "its metadata has no attribute 'inertia_'")
    inertia = attrs["inertia_"]
    if not _is_number(inertia) or not (np.isfinite(inertia) and inertia >= 0):
        raise _damaged(path, f"inertia_={inertia!r} should be a finite number >= 0")
    if "feature_names_in_" in attrs:
        names = attrs["feature_names_in_"]
        if (
            not isinstance(names, list)
            or len(names) != attrs["n_features_in_"]
            or not all(isinstance(n, str) for n in names)
        ):
            raise _damaged(
                path,
                f"feature_names_in_={names!r} should be a list of "
                f"n_features_in_={attrs['n_features_in_']} strings",
            )


def _check_entropy(path, entropy):
    """The stored seed: None, an int >= 0 or a list of ints >= 0."""
    values = entropy if isinstance(entropy, list) else [entropy]
    if entropy is not None and (not values or not all(_is_int(v) and v >= 0 for v in values)):
        raise _damaged(
            path, f"entropy={entropy!r} should be null, an integer >= 0 or a list of them"
        )


def _check_params(path, model):
    """The stored parameters through the estimator's own checks (without acting on them)."""
    try:
        model._check_params()
    except (ValueError, TypeError) as exc:
        raise _damaged(path, f"its parameters are invalid ({exc})") from exc
    rs = model.random_state
    if rs is not None and (not _is_int(rs) or rs < 0):
        raise _damaged(path, f"random_state={rs!r} should be null or an integer >= 0")
    if model.checkpoint is not None and not isinstance(model.checkpoint, str):
        raise _damaged(path, f"checkpoint={model.checkpoint!r} should be null or a path string")


def _check_array(path, name, array, ndim, dtypes=(np.float64,)):
    """A stored array of ``ndim`` dimensions, one of ``dtypes``, finite, not empty."""
    if array.ndim != ndim or array.dtype not in dtypes:
        raise _damaged(
            path,
            f"{name} has dtype {array.dtype} and shape {array.shape}; it should be a "
            f"{ndim}-D array of {' or '.join(np.dtype(d).name for d in dtypes)}",
        )
    if array.shape[0] == 0:
        raise _damaged(path, f"{name} has shape {array.shape}: it holds no rows")
    if not np.all(np.isfinite(array)):
        raise _damaged(path, f"{name} holds NaN or infinite values")


def _check_arrays(path, params, attrs, arrays):
    """Shapes, dtypes, finiteness and ranges of the arrays, against the metadata."""
    n_clusters, n_features = params.get("n_clusters", 8), attrs["n_features_in_"]
    centers = arrays["cluster_centers_"]
    _check_array(path, "cluster_centers_", centers, 2, (np.float32, np.float64))
    if centers.shape != (n_clusters, n_features):
        raise _damaged(
            path,
            f"cluster_centers_ has shape {centers.shape} while n_clusters={n_clusters} and "
            f"n_features_in_={n_features} (it should be {(n_clusters, n_features)})",
        )
    weights, linear_sums, square_sums = (arrays[_SUMMARY[n]] for n in FILE_ARRAYS[:3])
    for name, ndim in zip(FILE_ARRAYS[:3], (1, 2, 1), strict=False):
        _check_array(path, _SUMMARY[name], arrays[_SUMMARY[name]], ndim)
    m = weights.shape[0]
    if linear_sums.shape != (m, n_features) or square_sums.shape != (m,):
        raise _damaged(
            path,
            f"the summary arrays disagree: summary_weights has shape {weights.shape}, "
            f"summary_linear_sums {linear_sums.shape} and summary_square_sums "
            f"{square_sums.shape} (they should be ({m},), {(m, n_features)} and ({m},) for "
            f"n_features_in_={n_features})",
        )
    if np.any(weights < 0) or np.any(square_sums < 0) or not np.sum(weights) > 0:
        raise _damaged(
            path,
            "summary_weights and summary_square_sums should be >= 0, with a positive total weight",
        )
    if _SUMMARY["origin"] in arrays:
        try:
            checked_origin(arrays[_SUMMARY["origin"]], n_features, _SUMMARY["origin"])
        except ValueError as exc:
            raise _damaged(path, str(exc).rstrip(".")) from None
    n_seen = arrays[_SUMMARY["n_seen"]]
    if n_seen != attrs["n_rows_seen_"]:
        raise _damaged(
            path,
            f"summary_n_seen={n_seen} differs from n_rows_seen_={attrs['n_rows_seen_']}",
        )


def load_model(cls, path, storage_options=None):
    """A fitted ``cls`` (StreamingKMeans) read from a file written by :func:`save_model`.

    Every field is checked (types, shapes, finiteness, ranges, and the parameters through the
    estimator's own check); a failure is a :class:`ModelFileError` naming the file, without
    the secrets of its URL or of ``storage_options``. Nothing is created or read besides the
    file: a stored ``checkpoint`` directory is used only when the loaded model is fitted again.
    """
    where = Location.of(path, storage_options)
    try:
        return _load_model(cls, where)
    except ModelFileError as exc:
        # The message holds the cause's text; the cause itself may hold the secrets.
        raise ModelFileError(where.redact(str(exc))) from None


def _load_model(cls, where):
    path = where.url
    try:
        metadata, arrays = _read_npz(where)
    except TypeError as exc:  # e.g. a summary_n_seen that is not a scalar
        raise _damaged(path, f"an entry has the wrong type ({exc})") from exc
    params = metadata["params"]
    if "storage_options" in params:
        # Never saved (they may hold credentials); one in a file was put there by hand, and
        # loading it would send later checkpoint reads and writes where the file says.
        raise _damaged(
            path,
            "it stores storage_options, which model files never hold (they may hold "
            "credentials); remove the entry, and pass storage_options to the loaded model "
            "with set_params(storage_options=...)",
        )
    valid = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ModelFileError(
            f"{path!r} stores parameters {unknown} that this version of {cls.__name__} does not "
            f"know. Upgrade with `pip install -U dask-streamkm`."
        )
    model = cls(**params)
    _check_params(path, model)
    attrs = metadata["attributes"]
    _check_attributes(path, attrs)
    _check_entropy(path, metadata.get("entropy"))
    _check_arrays(path, model.get_params(deep=False), attrs, arrays)
    centers = arrays["cluster_centers_"]
    model.cluster_centers_ = np.ascontiguousarray(centers, dtype=_float_dtype(centers))
    model.summary_ = Summary(
        *(np.asarray(arrays[_SUMMARY[n]], dtype=np.float64) for n in FILE_ARRAYS[:3]),
        int(arrays[_SUMMARY["n_seen"]]),
        checked_origin(
            arrays.get(_SUMMARY["origin"]), int(attrs["n_features_in_"]), _SUMMARY["origin"]
        ),
    )
    model.n_features_in_ = int(attrs["n_features_in_"])
    model.inertia_ = float(attrs["inertia_"])
    model.n_iter_ = int(attrs["n_iter_"])
    model.n_rows_seen_ = int(attrs["n_rows_seen_"])
    if "feature_names_in_" in attrs:
        model.feature_names_in_ = np.asarray(attrs["feature_names_in_"], dtype=object)
    model._entropy_ = entropy_from_json(metadata.get("entropy"))
    # Files written before the metric existed hold Euclidean models (the parameter's default).
    model._metric_ = model.metric
    return model


# ---------------------------------------------------------------------- scikit-learn
def _float_dtype(centers):
    return np.float32 if centers.dtype == np.float32 else np.float64


class SklearnPrecisionWarning(UserWarning):
    """``to_sklearn()`` of a model far from zero: scikit-learn's ``predict``, in the centers'
    dtype, may not reproduce its labels (float32: ``to_sklearn(dtype=np.float64)`` does)."""


def _far_from_zero(centers):
    """Whether scikit-learn's ``||c||^2 - 2 x.c`` in the centers' dtype loses the labels: the
    centers' squared mean norm times the dtype's epsilon exceeds 32^2 float32 epsilons times
    their mean squared deviation (for float32 the rule by which a chunk's summary moves its
    origin off zero; float64 reaches it about 2e4 times farther out)."""
    c = np.asarray(centers, dtype=np.float64)
    mean = c.mean(axis=0)
    spread = float(np.mean(np.sum((c - mean) ** 2, axis=1)))
    eps = float(np.finfo(centers.dtype).eps)
    return spread > 0 and float(mean @ mean) * eps > ORIGIN_NEAR**2 * _EPS32 * spread


_EPS32 = float(np.finfo(np.float32).eps)


def to_sklearn(model, dtype=None):
    """A fitted ``sklearn.cluster.KMeans`` with ``model``'s centers (public sklearn API only).

    The KMeans is fitted on the centers themselves with ``init=centers``, ``n_init=1`` and
    ``max_iter=1`` (which sets every attribute ``predict`` and ``transform`` need, such as the
    thread count, through sklearn's own ``fit``); then the exact centers and the fitted
    attributes of ``model`` are written over the result. ``dtype`` is the centers' dtype
    (None: the model's); a KMeans of centers far from zero for its dtype warns
    (:class:`SklearnPrecisionWarning`).
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model, "cluster_centers_")
    centers = to_host(model.cluster_centers_)
    if dtype is None:  # the model's dtype, so the KMeans predicts input of that dtype
        dtype = _float_dtype(centers)
    elif np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype={dtype!r} should be None, np.float32 or np.float64.")
    centers = np.ascontiguousarray(centers, dtype=dtype)
    if _far_from_zero(centers):
        name = centers.dtype.name
        fix = (
            "Use to_sklearn(dtype=np.float64) and pass it X.astype(np.float64)."
            if centers.dtype == np.float32
            else "Predict with this model, or subtract one vector (such as the centers' "
            "mean) from X before fitting and predicting."
        )
        warnings.warn(
            f"The centers lie far from zero compared with their spread: scikit-learn's {name} "
            f"KMeans computes ||c||^2 - 2 x.c in {name}, which loses the digits that tell the "
            "nearest center there, so its predict can differ from this model's (which "
            f"computes relative to the centers' mean) on many rows. {fix}",
            SklearnPrecisionWarning,
            stacklevel=3,
        )
    n_clusters = centers.shape[0]
    km = KMeans(
        n_clusters=n_clusters,
        init=centers,
        n_init=1,
        max_iter=1,
        tol=float(model.tol),
        random_state=model.random_state if isinstance(model.random_state, int) else None,
    )
    with warnings.catch_warnings():
        # Duplicate centers make "fewer distinct clusters than n_clusters" warnings.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(centers)
    km.set_params(max_iter=int(model.max_iter))
    km.cluster_centers_ = centers.copy()
    km.inertia_ = float(model.inertia_)
    km.n_iter_ = int(model.n_iter_)
    labels = getattr(model, "labels_", None)
    if isinstance(labels, np.ndarray):
        km.labels_ = labels.astype(np.int32, copy=True)
    else:
        # No in-memory labels of the training rows (dask input or a loaded model): the labels
        # of the points KMeans saw, i.e. each center's own index.
        km.labels_ = np.arange(n_clusters, dtype=np.int32)
    if hasattr(model, "feature_names_in_"):
        km.feature_names_in_ = np.asarray(model.feature_names_in_, dtype=object)
    return km
