"""Model files (npz + JSON, no pickle) and export to scikit-learn."""

import copy
import json
import zipfile

import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans

from dask_streamkm import StreamingKMeans, Summary
from dask_streamkm._model_io import MODEL_FORMAT_VERSION, ModelFileError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.uniform(-10, 10, size=(5, 3))
    X = np.concatenate([c + rng.standard_normal((400, 3)) for c in centers])
    return rng.permutation(X)


@pytest.fixture(scope="module")
def fitted(data):
    return StreamingKMeans(n_clusters=5, random_state=0).fit(data)


def test_save_load_roundtrip(fitted, data, tmp_path):
    path = fitted.save(tmp_path / "model.npz")
    loaded = StreamingKMeans.load(path)
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.cluster_centers_, fitted.cluster_centers_)
    assert loaded.inertia_ == fitted.inertia_
    assert loaded.n_iter_ == fitted.n_iter_
    assert loaded.n_rows_seen_ == fitted.n_rows_seen_ == data.shape[0]
    assert loaded.n_features_in_ == 3
    np.testing.assert_array_equal(loaded.summary_.weights, fitted.summary_.weights)
    np.testing.assert_array_equal(loaded.summary_.linear_sums, fitted.summary_.linear_sums)
    np.testing.assert_array_equal(loaded.summary_.square_sums, fitted.summary_.square_sums)
    np.testing.assert_array_equal(loaded.predict(data), fitted.predict(data))
    assert not hasattr(loaded, "labels_")


def test_file_is_plain_npz_without_pickle(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["metadata"]))
        assert all(f[name].dtype != object for name in f.files)
    assert meta["format"] == "dask_streamkm.StreamingKMeans"
    assert meta["format_version"] == MODEL_FORMAT_VERSION
    assert meta["params"]["n_clusters"] == 5
    assert meta["attributes"]["n_features_in_"] == 3


def test_refit_and_partial_fit_after_load(fitted, data, tmp_path):
    # A loaded model carries the seed of the ORIGINAL model: its refit and partial_fit are
    # bit-identical to those of the model that was saved (not just to another loaded copy).
    loaded = StreamingKMeans.load(fitted.save(tmp_path / "model.npz"))
    original = copy.deepcopy(fitted)
    assert loaded._entropy_ == original._entropy_
    a, b = copy.deepcopy(loaded), copy.deepcopy(original)
    a.refit(n_clusters=3, n_init=1)
    b.refit(n_clusters=3, n_init=1)
    assert a.cluster_centers_.shape == (3, 3)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_
    # A batch larger than summary_size: its summary depends on the seed.
    batch = np.random.default_rng(5).normal(size=(1500, 3)) * 4
    loaded.partial_fit(batch)
    original.partial_fit(batch)
    assert loaded.n_rows_seen_ == data.shape[0] + 1500
    assert loaded.summary_.total_weight == pytest.approx(data.shape[0] + 1500)
    np.testing.assert_array_equal(loaded.summary_.linear_sums, original.summary_.linear_sums)
    np.testing.assert_array_equal(loaded.cluster_centers_, original.cluster_centers_)


def test_random_state_object_model_keeps_its_seed(data, tmp_path):
    km = StreamingKMeans(n_clusters=2, random_state=np.random.RandomState(0)).fit(data)
    loaded = StreamingKMeans.load(km.save(tmp_path / "m.npz"))
    batch = np.random.default_rng(6).normal(size=(1500, 3)) * 4
    loaded.partial_fit(batch)
    km.partial_fit(batch)
    np.testing.assert_array_equal(loaded.summary_.linear_sums, km.summary_.linear_sums)


def test_random_state_objects_are_not_pickled(data, tmp_path):
    km = StreamingKMeans(n_clusters=2, random_state=np.random.RandomState(0)).fit(data)
    loaded = StreamingKMeans.load(km.save(tmp_path / "m.npz"))
    assert loaded.random_state is None
    # The stored seed keeps refit reproducible.
    a = loaded.refit(n_clusters=4).inertia_
    b = StreamingKMeans.load(tmp_path / "m.npz").refit(n_clusters=4).inertia_
    assert a == b


def test_feature_names_survive(tmp_path, data):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(data, columns=["a", "b", "c"])
    km = StreamingKMeans(n_clusters=2, random_state=0).fit(frame)
    loaded = StreamingKMeans.load(km.save(tmp_path / "m.npz"))
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.predict(frame), km.predict(frame))


def test_save_unfitted_raises(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        StreamingKMeans().save(tmp_path / "m.npz")


def rewrite(path, out, **changes):
    """Copy a model file with metadata fields changed."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    meta = json.loads(str(arrays["metadata"]))
    meta.update(changes)
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)
    return out


def test_save_refuses_what_load_would_refuse(data, tmp_path):
    # set_params after fit wrote a file that load then called damaged or hand-edited.
    km = StreamingKMeans(3, random_state=0).fit(data)
    km.set_params(n_clusters=4)
    match = r"n_clusters=4 but this model holds 3 centers .* Call refit\(\) .* set_params"
    with pytest.raises(ValueError, match=match):
        km.save(tmp_path / "k.npz")
    km.set_params(n_clusters=3, summary_size=2)
    with pytest.raises(ValueError, match=r"summary_size=2 should be"):
        km.save(tmp_path / "s.npz")
    assert not list(tmp_path.iterdir())
    km.set_params(n_clusters=4, summary_size="auto").refit()
    km.save(tmp_path / "m.npz")
    assert StreamingKMeans.load(tmp_path / "m.npz").cluster_centers_.shape == (4, data.shape[1])


def test_newer_format_version_is_a_clear_error(fitted, tmp_path):
    path = fitted.save(tmp_path / "m.npz")
    newer = rewrite(path, tmp_path / "newer.npz", format_version=MODEL_FORMAT_VERSION + 1)
    with pytest.raises(
        ModelFileError,
        match=rf"format version {MODEL_FORMAT_VERSION + 1}.*reads format versions up to "
        rf"{MODEL_FORMAT_VERSION}.*pip install -U dask-streamkm",
    ):
        StreamingKMeans.load(newer)


def test_truncated_file_is_a_clear_error(fitted, tmp_path):
    path = fitted.save(tmp_path / "m.npz")
    raw = path.read_bytes() if hasattr(path, "read_bytes") else open(path, "rb").read()
    for cut in (len(raw) // 2, len(raw) - 10):
        truncated = tmp_path / f"cut{cut}.npz"
        truncated.write_bytes(raw[:cut])
        with pytest.raises(ModelFileError, match="truncated or corrupted model file"):
            StreamingKMeans.load(truncated)


def test_corrupted_member_is_a_clear_error(fitted, tmp_path):
    path = fitted.save(tmp_path / "m.npz")
    raw = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("cluster_centers_.npy")
    start = info.header_offset + 30 + len(info.filename) + 200  # inside the array's bytes
    raw[start] ^= 0xFF
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        StreamingKMeans.load(bad)


def test_not_a_model_file_is_a_clear_error(fitted, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match=r"not a dask_streamkm model file: it is not an \.npz"):
        StreamingKMeans.load(text)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(ModelFileError, match=r"no 'metadata' entry \(entries: \['x'\]\)"):
        StreamingKMeans.load(other)
    summary_file = fitted.summary_.save(tmp_path / "summary.npz")
    with pytest.raises(ModelFileError, match=r"Summary\.load\(path\)"):
        StreamingKMeans.load(summary_file)
    foreign = rewrite(fitted.save(tmp_path / "m.npz"), tmp_path / "f.npz", format="something")
    with pytest.raises(ModelFileError, match="metadata format is 'something'"):
        StreamingKMeans.load(foreign)
    with pytest.raises(ModelFileError, match="cannot open model file"):
        StreamingKMeans.load(tmp_path / "missing.npz")
    assert issubclass(ModelFileError, ValueError)


def test_summary_file_still_loads_as_summary(fitted, tmp_path):
    s = Summary.load(fitted.summary_.save(tmp_path / "s.npz"))
    assert s.n_groups == fitted.summary_.n_groups


# ---------------------------------------------------------------------- scikit-learn
def test_to_sklearn_predicts_like_us(fitted, data):
    km = fitted.to_sklearn()
    assert isinstance(km, KMeans)
    assert km.n_clusters == 5
    np.testing.assert_array_equal(km.cluster_centers_, fitted.cluster_centers_)
    rng = np.random.default_rng(1)
    X_new = np.concatenate([data, rng.uniform(-15, 15, size=(500, 3))])
    np.testing.assert_array_equal(km.predict(X_new), fitted.predict(X_new))
    np.testing.assert_allclose(km.transform(X_new), fitted.transform(X_new), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(km.labels_, fitted.labels_)
    assert km.inertia_ == fitted.inertia_
    assert km.score(X_new) == pytest.approx(fitted.score(X_new), rel=1e-9)


def test_to_sklearn_from_dask_fit_and_loaded_model(data, tmp_path):
    km = StreamingKMeans(n_clusters=4, random_state=0).fit(da.from_array(data, chunks=500))
    loaded = StreamingKMeans.load(km.save(tmp_path / "m.npz"))
    for model in (km, loaded):
        sk = model.to_sklearn()
        np.testing.assert_array_equal(sk.predict(data), km.predict(data))
        np.testing.assert_array_equal(sk.labels_, np.arange(4))


def test_to_sklearn_with_duplicate_centers_is_quiet():
    # Duplicate centers make sklearn's own fit warn; to_sklearn must stay quiet and exact.
    km = StreamingKMeans(n_clusters=3, random_state=0).fit(
        np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0], [5.0, 5.1]])
    )
    km.cluster_centers_ = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sk = km.to_sklearn()
    np.testing.assert_array_equal(sk.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(sk.predict(np.array([[4.0, 4.0]])), [2])


def test_version_comes_from_the_package_metadata(fitted, tmp_path, monkeypatch):
    """The version a model file records is the installed package's, and a source tree that
    was never installed reads the one its pyproject.toml declares."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    import dask_streamkm
    from dask_streamkm import _model_io

    with open(Path(dask_streamkm.__file__).parents[1] / "pyproject.toml", "rb") as fh:
        declared = tomllib.load(fh)["project"]["version"]
    with np.load(fitted.save(tmp_path / "model.npz"), allow_pickle=False) as f:
        written = json.loads(str(f["metadata"]))["library_version"]
    assert written == importlib.metadata.version("dask_streamkm") == dask_streamkm.__version__

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert _model_io.library_version() == declared
