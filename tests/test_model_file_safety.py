"""Hostile or hand-edited model files: refused with ModelFileError, before any large allocation.

A model file's declared sizes (the zip directory, each member's ``.npy`` header) are checked
before anything is decompressed or allocated; a version-2 file without ``summary_origin`` and a
file holding ``storage_options`` (never saved: they may hold credentials) are refused.
"""

import json
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from dask_streamkm import ModelFileError, StreamingKMeans


@pytest.fixture
def model_file(tmp_path):
    """A model fitted on rows far from zero (so its summary has a non-zero origin), saved."""
    rng = np.random.default_rng(0)
    X = 1e6 + rng.normal(size=(600, 4)) + np.repeat(np.eye(3, 4) * 20, 200, axis=0)
    # 256 groups (the rows themselves by default): a small file, a summary of real groups.
    km = StreamingKMeans(n_clusters=3, random_state=0, summary_size=256).fit(X)
    assert np.any(km.summary_.host_origin() != 0)
    return km.save(tmp_path / "model.npz"), X


def _members(path):
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _metadata(members):
    return json.loads(str(members["metadata"]))


def _with_metadata(members, metadata):
    return dict(members, metadata=np.array(json.dumps(metadata)))


def _npy_member(shape, payload=b"", dtype="<f8"):
    """The bytes of a .npy member whose header declares ``shape`` of ``dtype``."""
    import io

    buffer = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + payload


def _zip(path, members, raw=None, compressed=None):
    """Write ``members`` (arrays) plus ``raw`` (name -> bytes of a .npy member) to ``path``;
    ``compressed`` (name -> (header bytes, number of zero bytes after it)) deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, array in members.items():
            with zf.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
        for name, data in (raw or {}).items():
            zf.writestr(f"{name}.npy", data)
        for name, (header, n_zeros) in (compressed or {}).items():
            info = zipfile.ZipInfo(f"{name}.npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                fh.write(header)
                block = bytes(1 << 24)
                for _ in range(n_zeros // len(block)):
                    fh.write(block)
    return path


def test_version_2_file_without_summary_origin_is_refused(model_file, tmp_path):
    path, X = model_file
    members = _members(path)
    assert _metadata(members)["format_version"] == 2
    del members["summary_origin"]
    bad = _zip(tmp_path / "no_origin.npz", members)
    with pytest.raises(ModelFileError, match=r"format version 2 but has no 'summary_origin'"):
        StreamingKMeans.load(bad)
    # A version-1 file (sums relative to zero) has no origin and still loads: here the sums
    # are re-expressed around zero first, so the refit is the same.
    km = StreamingKMeans.load(path)
    summary = km.summary_.rebased(None)
    v1 = dict(
        _with_metadata(members, {**_metadata(members), "format_version": 1}),
        summary_linear_sums=summary.linear_sums,
        summary_square_sums=summary.square_sums,
    )
    old = StreamingKMeans.load(_zip(tmp_path / "v1.npz", v1))
    assert old.summary_.origin is None
    np.testing.assert_allclose(old.summary_.centroids, km.summary_.centroids, rtol=1e-9)


def test_member_declaring_a_huge_shape_is_refused_without_allocating(model_file, tmp_path):
    path, _ = model_file
    members = _members(path)
    del members["summary_linear_sums"]
    # 8 KB of data under a header declaring 2**40 x 4 float64 (32 TiB).
    raw = {"summary_linear_sums": _npy_member((2**40, 4), bytes(8192))}
    bad = _zip(tmp_path / "huge.npz", members, raw=raw)
    assert bad.stat().st_size < 20_000
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as info:
            StreamingKMeans.load(bad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "'summary_linear_sums'" in message and "(1099511627776, 4)" in message
    assert "32.0 TiB" in message and "holds 8.0 KiB" in message
    assert peak < 10 * 2**20


def test_zip_bomb_is_refused_before_decompressing(model_file, tmp_path):
    path, _ = model_file
    members = _members(path)
    del members["summary_linear_sums"]
    # 512 MiB of zeros deflated to about 0.5 MB, declared as such in the zip directory.
    n_zeros = 1 << 29
    header = _npy_member((n_zeros // 32, 4))
    compressed = {"summary_linear_sums": (header, n_zeros)}
    bomb = _zip(tmp_path / "bomb.npz", members, compressed=compressed)
    assert bomb.stat().st_size < 2 * 2**20
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ModelFileError, match=r"'summary_linear_sums' declares 512\.0 MiB"):
            StreamingKMeans.load(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2
    assert peak < 10 * 2**20


def test_compressed_model_file_still_loads(model_file, tmp_path):
    # np.savez_compressed of the same members: expansion within the budget.
    path, X = model_file
    packed = tmp_path / "packed.npz"
    np.savez_compressed(packed, **_members(path))
    km, loaded = StreamingKMeans.load(path), StreamingKMeans.load(packed)
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(loaded.summary_.linear_sums, km.summary_.linear_sums)
    np.testing.assert_array_equal(loaded.predict(X), km.predict(X))


def test_object_member_is_refused(model_file, tmp_path):
    path, _ = model_file
    members = _members(path)
    del members["summary_weights"]
    raw = {"summary_weights": _npy_member((3,), b"", dtype="|O")}
    bad = _zip(tmp_path / "objects.npz", members, raw=raw)
    with pytest.raises(ModelFileError, match=r"'summary_weights' holds Python objects"):
        StreamingKMeans.load(bad)


def test_storage_options_in_a_model_file_are_never_loaded(model_file, tmp_path):
    path, _ = model_file
    members = _members(path)
    metadata = _metadata(members)
    assert "storage_options" not in metadata["params"]  # never saved
    options = {"client_kwargs": {"endpoint_url": "http://attacker.invalid"}}
    metadata["params"]["storage_options"] = options
    bad = _zip(tmp_path / "options.npz", _with_metadata(members, metadata))
    with pytest.raises(ModelFileError, match=r"stores storage_options, which model files never"):
        StreamingKMeans.load(bad)
    # A model fitted with storage_options saves none, and loads with none.
    km = StreamingKMeans.load(path)
    km.set_params(storage_options={"key": "k", "secret": "s"})
    again = StreamingKMeans.load(km.save(tmp_path / "again.npz"))
    assert again.storage_options is None
    assert "storage_options" not in _metadata(_members(tmp_path / "again.npz"))["params"]


def test_summary_and_checkpoint_files_are_read_with_the_same_checks(tmp_path):
    from dask_streamkm import Summary

    summary = Summary.from_points(np.random.default_rng(0).normal(size=(50, 4)))
    path = tmp_path / "summary.npz"
    summary.save(path)
    assert Summary.load(path).n_groups == summary.n_groups
    members = _members(path)
    del members["linear_sums"]
    raw = {"linear_sums": _npy_member((2**40, 4), bytes(8192))}
    bad = _zip(tmp_path / "huge_summary.npz", members, raw=raw)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"'linear_sums' declares shape \(1099511627776, 4\)"):
            Summary.load(bad)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20
