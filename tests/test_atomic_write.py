"""One atomic write for every file and store the library writes: exclusive without overwrite,
no temporary name left behind, a file never put in place of a directory, and a location whose
repr shows no secret."""

import dataclasses

import numpy as np
import pytest
from _helpers import S3_SECRET

from dask_streamkm import StreamingKMeans, _location
from dask_streamkm._remote import filesystem


def _names(base, options):
    fs, path = filesystem(base, options)
    fs.invalidate_cache()
    return sorted(p.rpartition("/")[2] for p in fs.find(path))


@pytest.mark.parametrize("local", [False, True], ids=["bytes", "local-writer"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_file_is_created_exclusively_and_leaves_no_temporary(where, local, tmp_path, request):
    options = None
    base = str(tmp_path)
    if where == "s3":
        options = request.getfixturevalue("s3_server")["storage_options"]
        base = request.getfixturevalue("s3_bucket")
    spec = f"{base}/m.npz"

    def content(data):
        if not local:
            return data

        def write(tmp):  # a writer of local files only, as numpy.savez and matplotlib are
            with open(tmp, "wb") as fh:
                fh.write(data)

        return write

    _location.write_atomic(spec, content(b"first"), options, overwrite=False, local=local)
    with pytest.raises(_location.OutputError, match="created by another writer"):
        _location.write_atomic(spec, content(b"second"), options, overwrite=False, local=local)
    assert _location.Location(spec, options).read_bytes() == b"first"
    _location.write_atomic(spec, content(b"third"), options, local=local)
    assert _location.Location(spec, options).read_bytes() == b"third"
    assert _names(base, options) == ["m.npz"]


def test_a_file_never_replaces_a_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("kept")
    with pytest.raises(IsADirectoryError):
        _location.write_atomic(tmp_path / "out", b"file")
    with pytest.raises(IsADirectoryError, match="cannot write"):
        _location.write_bytes(tmp_path / "out", b"file")
    assert (tmp_path / "out" / "kept.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_checkpoint_files_on_s3_leave_no_temporary(s3_server, s3_bucket):
    import dask.array as da

    X = da.from_array(np.random.default_rng(0).normal(size=(400, 3)), chunks=100)
    options = s3_server["storage_options"]
    ckpt = f"{s3_bucket}/ck"
    StreamingKMeans(2, random_state=0, checkpoint=ckpt, storage_options=options).fit(X)
    names = _names(ckpt, options)
    assert names and all(n.startswith("summary-") and n.endswith(".npz") for n in names)


def test_a_location_shows_no_secret():
    url = "s3://AKIAUSER:hunter2pass@bucket/x.npz?X-Amz-Signature=f00dfeedsig"
    where = _location.Location(url, {"key": "AKIAKEYID", "secret": S3_SECRET, "anon": False})
    text = repr(where) + where.shown + where.redact(f"failed: {url} {S3_SECRET} AKIAKEYID")
    for secret in ("hunter2pass", "f00dfeedsig", S3_SECRET, "AKIAKEYID"):
        assert secret not in text
    assert "bucket/x.npz" in repr(where) and "'anon': False" in repr(where)
    with pytest.raises(dataclasses.FrozenInstanceError):
        where.url = "s3://other"
    assert _location.Location.of(where) is where
    assert _location.Location.of("file:///tmp/x.npz").local == "/tmp/x.npz"


def test_a_summary_file_is_replaced_whole(tmp_path):
    """Summary.save writes a temporary file and renames it: a save cut by a full disk keeps
    the old file whole and leaves no temporary file."""
    import resource
    import signal

    from dask_streamkm import Summary

    rng = np.random.default_rng(0)
    path = tmp_path / "s.summary"  # any name: numpy adds no ".npz" to it
    Summary.from_points(rng.normal(size=(5, 3))).save(path)
    before = path.read_bytes()
    big = Summary.from_points(rng.normal(size=(5000, 3)))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))  # a disk that fills up
    try:
        with pytest.raises(OSError):
            big.save(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.summary"]
    assert Summary.load(path).n_seen == 5


def test_a_data_set_cache_is_replaced_whole(tmp_path):
    """The data sets' caches (MNIST, nycflights13) go through the one atomic write and the one
    reader: a cache write cut by a full disk keeps the old cache whole and leaves no temporary
    file, so a later load never reads a truncated cache."""
    import resource
    import signal

    from dask_streamkm import datasets

    target = tmp_path / "mnist.npz"
    datasets._write_cache(target, X=np.ones((4, 3), np.float32), y=np.arange(4))
    before = target.read_bytes()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))  # a disk that fills up
    try:
        with pytest.raises(OSError):
            datasets._write_cache(target, X=np.ones((5000, 3)), y=np.arange(5000))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist.npz"]
    with datasets._read_cache(target) as data:
        assert data["X"].shape == (4, 3) and list(data["y"]) == [0, 1, 2, 3]
