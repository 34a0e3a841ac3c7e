"""Outputs are replaced only once the new one is complete, created exclusively, checked
before any data is read, and every failure of a write is one line naming the path."""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import dask.array as da
import numpy as np
import pytest
import zarr
from _helpers import S3_SECRET, flaky_s3_options
from dask.callbacks import Callback

from dask_streamkm import StreamingKMeans, _location, _outputs, _remote
from dask_streamkm.cli import main
from dask_streamkm.io import InputError, open_array, write_labels


def _data(n=1000, d=3):
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=20.0, size=(3, d))
    return (centers[rng.integers(0, 3, n)] + rng.standard_normal((n, d))).astype(np.float32)


@pytest.fixture
def files(tmp_path):
    """``x.npy`` and a model ``m.npz`` fitted on it, in ``tmp_path``."""
    np.save(tmp_path / "x.npy", _data())
    model = StreamingKMeans(3, random_state=0).fit(da.from_array(_data(), chunks=(200, -1)))
    model.save(tmp_path / "m.npz")
    return tmp_path


def _damaged_store(path):
    """A zarr array whose chunk 2 (rows 400:600) is garbage: a pass over it fails there."""
    z = zarr.create_array(path, shape=(1000, 3), chunks=(200, 3), dtype="float32")
    z[:] = _data()
    (path / "c" / "2" / "0").write_bytes(b"garbage-bytes-here")
    return path


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


class AfterTasks(Callback):
    """Runs ``action`` once, after ``n`` tasks have finished."""

    def __init__(self, n, action):
        super().__init__()
        self.n, self.action, self.done = n, action, 0

    def _posttask(self, key, result, dsk, state, id):
        self.done += 1
        if self.done == self.n:
            self.action()


# ---------------------------------------------------------------------- destinations
def test_a_fifo_or_a_link_to_a_device_is_never_replaced(files, capsys):
    fifo = files / "fifo"
    os.mkfifo(fifo)
    link = files / "to-null"
    link.symlink_to(os.devnull)
    for out in (fifo, link):
        rc = main(
            ["predict", str(files / "x.npy"), str(files / "m.npz"), "--out", str(out)]
            + ["--overwrite", "--quiet"]
        )
        assert rc == 1 and "device, FIFO or socket" in _one_line(capsys)
    assert fifo.is_fifo() and link.is_symlink() and os.readlink(link) == os.devnull
    # The check alone (nothing written): /dev/full itself is refused even with --overwrite.
    with pytest.raises(_outputs.OutputError, match="device, FIFO or socket"):
        _outputs.check_outputs([("--out", "/dev/full", "file")], [], overwrite=True)


def test_an_empty_out_is_refused_and_the_working_directory_kept(files, monkeypatch, capsys):
    work = files / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    rc = main(
        ["predict", str(files / "x.npy"), str(files / "m.npz"), "--out", ""]
        + ["--overwrite", "--quiet"]
    )
    assert rc == 1 and "--out '' is empty" in _one_line(capsys)
    assert sorted(os.listdir(work)) == ["keep.txt"]


def test_an_out_naming_an_array_of_the_input_group_is_refused_without_a_sibling(files, capsys):
    group = zarr.open_group(files / "g.zarr", mode="w")
    group.create_array("a", data=_data(), chunks=(200, 3))
    for out in ("g.zarr:a", "g.zarr:b"):
        rc = main(
            ["predict", str(files / "g.zarr") + ":a", str(files / "m.npz"), "--out"]
            + [str(files / out), "--overwrite", "--quiet"]
        )
        assert rc == 1 and "names an array inside" in _one_line(capsys)
    assert not any(":" in name for name in os.listdir(files))
    np.testing.assert_array_equal(zarr.open_array(files / "g.zarr" / "a")[:], _data())


def test_every_destination_is_checked_before_the_data_are_read(files, s3_server, capsys):
    # A pass over this store fails at chunk 2: an output error proves no pass was made.
    bad = str(_damaged_store(files / "bad.zarr"))
    endpoint = s3_server["endpoint_url"]
    s3 = ["--storage-option", f'client_kwargs={{"endpoint_url": "{endpoint}"}}']
    cases = [
        (
            ["fit", bad, "--k", "3", "--out", str(files / "cc"), "--checkpoint", str(files / "cc")],
            "--checkpoint",
        ),
        (
            ["predict", bad, str(files / "m.npz"), "--out", "s3://no-such-bucket-out/l.zarr", *s3],
            "s3://no-such-bucket-out/l.zarr",
        ),
        (
            ["fit", bad, "--k", "3", "--out", "s3://no-such-bucket-out/m.npz", *s3],
            "s3://no-such-bucket-out/m.npz",
        ),
        (["elbow", bad, "--k", "2:3", "--plot", str(files / "e.npz")], "not an image format"),
    ]
    for argv, expected in cases:
        assert main([*argv, "--quiet"]) == 1
        err = _one_line(capsys)
        assert expected in err and "cannot be decoded" not in err, err
    assert not (files / "cc").exists() and not (files / "e.npz").exists()


def test_a_second_writer_of_the_same_out_fails_instead_of_replacing(files, capsys):
    """Both runs pass the existence check; the one that finishes second must fail."""
    out = files / "labels.zarr"
    other = np.arange(7, dtype=np.int32)

    def the_other_run_finishes():
        zarr.create_array(out, data=other, chunks=(7,))

    with AfterTasks(1, the_other_run_finishes):
        rc = main(
            ["predict", str(files / "x.npy"), str(files / "m.npz"), "--out", str(out)]
            + ["--quiet", "--scheduler", "sync"]
        )
    assert rc == 1 and "created by another writer" in _one_line(capsys)
    np.testing.assert_array_equal(zarr.open_array(out)[:], other)
    assert sorted(os.listdir(files)) == ["labels.zarr", "m.npz", "x.npy"]  # no temporaries


@pytest.mark.parametrize("protocol", ["local", "memory"])
def test_exclusive_create_of_files_and_stores(tmp_path, protocol):
    _check_exclusive(str(tmp_path) if protocol == "local" else f"memory://excl-{tmp_path.name}")


def test_exclusive_create_of_files_and_stores_on_s3(s3_server, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint_url"])  # zarr's and fsspec's
    _check_exclusive(s3_bucket)


def _check_exclusive(base):
    """A file and a store created by another writer while this one writes are kept."""
    for name, is_store in (("m.npz", False), ("l.zarr", True)):
        spec = f"{base}/{name}"

        def write(tmp, spec=spec, is_store=is_store):
            if is_store:
                zarr.create_array(spec, data=np.zeros(3, np.int32), chunks=(3,))  # another run
                zarr.create_array(tmp, data=np.ones(3, np.int32), chunks=(3,))
            else:
                _write_file(spec, b"other")
                _write_file(tmp, b"mine")

        with pytest.raises(_outputs.OutputError, match="created by another writer"):
            _location.write_atomic(spec, write, overwrite=False)
        if is_store:
            np.testing.assert_array_equal(zarr.open_array(spec)[:], 0)
        else:
            assert _read_file(spec) == b"other"


def _write_file(spec, data):
    import fsspec

    with fsspec.open(spec, "wb") as fh:
        fh.write(data)


def _read_file(spec):
    import fsspec

    with fsspec.open(spec, "rb") as fh:
        return fh.read()


# ---------------------------------------------------------------------- messages
def test_refine_passes_and_connect_timeout_messages_state_the_real_rule(files, capsys):
    x, out = str(files / "x.npy"), str(files / "o.npz")
    with pytest.raises(SystemExit):
        main(["fit", x, "--k", "3", "--out", out, "--refine-passes", "-1"])
    assert "'-1' should be >= 0" in capsys.readouterr().err
    assert main(["fit", x, "--k", "3", "--out", out, "--refine-passes", "0", "--quiet"]) == 0
    capsys.readouterr()
    for value in ("nan", "inf", "0", "-3", "soon"):
        with pytest.raises(SystemExit):
            main(["fit", x, "--k", "3", "--out", out, "--overwrite", "--connect-timeout", value])
        err = capsys.readouterr().err
        assert "should be a positive finite number of seconds" in err, err
        assert "Invalid time unit" not in err


def test_a_full_disk_during_predict_names_the_output(files):
    """A file size limit (what a full disk does to a write) hit while the labels are written."""
    out = files / "labels.zarr"
    np.save(files / "big.npy", np.tile(_data(), (50, 1)))
    code = "import sys; from dask_streamkm.cli import main; sys.exit(main(sys.argv[1:]))"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    argv = ["predict", str(files / "big.npy"), str(files / "m.npz"), "--out", str(out), "--quiet"]
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    err = done.stderr.strip()
    assert done.returncode == 1 and len(err.splitlines()) == 1, err
    assert repr(str(out)) in err and "File too large" in err
    assert sorted(os.listdir(files)) == ["big.npy", "m.npz", "x.npy"]  # no temporaries


def test_a_damaged_chunk_names_the_chunk_and_its_file_not_a_rerun(tmp_path):
    store = _damaged_store(tmp_path / "bad.zarr")
    with pytest.raises(InputError) as info:
        StreamingKMeans(3, random_state=0).fit(open_array(store))
    text = str(info.value)
    assert "stored chunk (2, 0) (rows 400:600)" in text
    assert repr(str(store / "c" / "2" / "0")) in text and "rerun fails the same way" in text


def test_save_to_a_missing_bucket_names_the_url(s3_server):
    model = StreamingKMeans(3, random_state=0).fit(_data())
    url = "s3://no-such-bucket-save/m.npz"
    with pytest.raises(FileNotFoundError) as info:
        model.save(url, storage_options=s3_server["storage_options"])
    assert isinstance(info.value, getattr(_remote, "DestinationNotFoundError", ()))
    text = str(info.value)
    assert url in text and "bucket" in text and S3_SECRET not in text


# ---------------------------------------------------------------------- S3 faults
def _cli_options(options):
    out = []
    for key, value in options.items():
        out += ["--storage-option", f"{key}={json.dumps(value)}"]
    return out


def _read_labels(url, options):
    store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=True)
    return zarr.open_array(store=store, mode="r")[:]


@pytest.fixture
def s3_labels(s3_server, s3_bucket, files):
    """An old labels store of 1000 sevens at ``s3_bucket/labels.zarr`` (chunks of 10 rows)."""
    url = f"{s3_bucket}/labels.zarr"
    options = s3_server["storage_options"]
    write_labels(da.full(1000, 7, dtype=np.int32, chunks=10), url, storage_options=options)
    return url


def _flaky_predict(files, url, stop_when, capsys):
    """``predict --overwrite`` to ``url`` through a second server (same S3 state) stopped by
    ``stop_when(server)``; returns the exit status and the error line."""
    from moto.server import ThreadedMotoServer

    flaky = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    flaky.start()
    argv = ["predict", str(files / "x.npy"), str(files / "m.npz"), "--out", url, "--overwrite"]
    argv += [
        "--quiet",
        "--chunks",
        "10",
        "--scheduler",
        "sync",
        *_cli_options(flaky_s3_options(flaky)),
    ]
    try:
        with stop_when(flaky):
            rc = main(argv)
    finally:
        flaky.stop()
    return rc, _one_line(capsys)


def test_s3_store_down_while_the_new_labels_are_written_keeps_the_old(
    s3_server, s3_labels, files, capsys
):
    def stop_when(server):
        return AfterTasks(20, server.stop)

    rc, err = _flaky_predict(files, s3_labels, stop_when, capsys)
    assert rc == 1 and s3_labels in err and S3_SECRET not in err, err
    assert "old output" in err
    np.testing.assert_array_equal(_read_labels(s3_labels, s3_server["storage_options"]), 7)
    _leftovers_named(s3_server, s3_labels, err)


def _leftovers_named(s3_server, url, err):
    """Every temporary store or lock the cut left behind is named in the error line."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server["storage_options"])
    bucket = url.removeprefix("s3://").partition("/")[0]
    fs.invalidate_cache()
    names = {n for n in fs.ls(bucket)} | set(fs.find(url.removeprefix("s3://")))
    for name in names:
        if ".tmp" in name.rpartition("/")[2] or name.endswith(".dask-streamkm-writing"):
            assert f"s3://{name}" in err, (name, err)


def test_s3_store_down_mid_copy_of_an_overwrite_keeps_the_old(s3_server, s3_labels, files, capsys):
    """The server stops as soon as the store at the destination changes (the switch began):
    the old labels stay whole and readable there."""
    import contextlib

    import s3fs

    fs = s3fs.S3FileSystem(**s3_server["storage_options"])
    path = s3_labels.removeprefix("s3://")
    before = sorted(fs.find(path))

    @contextlib.contextmanager
    def stop_when(server):
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                fs.invalidate_cache()
                now = set(fs.find(path))
                if set(before) - now or len(now - set(before)) > 5:  # some objects copied
                    server.stop()
                    return
                time.sleep(0.002)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    rc, err = _flaky_predict(files, s3_labels, stop_when, capsys)
    print(err)
    assert rc == 1, err  # the copy was cut off
    assert s3_labels in err and "old output is kept" in err and S3_SECRET not in err, err
    options = s3_server["storage_options"]
    np.testing.assert_array_equal(_read_labels(s3_labels, options), 7)
    # What the cut left (a lock, the temporary store) is named; a rerun then replaces the
    # labels and removes the new chunks the cut left unread in the store.
    _leftovers_named(s3_server, s3_labels, err)
    fs.invalidate_cache()
    for name in fs.find(path.rpartition("/")[0]):
        if name.endswith(".dask-streamkm-writing"):
            assert name.rpartition("/")[2] in err
            fs.rm(name)
    rc = main(
        [
            "predict",
            str(files / "x.npy"),
            str(files / "m.npz"),
            "--out",
            s3_labels,
            "--overwrite",
            "--quiet",
            "--chunks",
            "10",
            *_cli_options(options),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    fs.invalidate_cache()
    keys = [n[len(path) + 1 :] for n in fs.find(path)]
    sep = json.loads(fs.cat_file(f"{path}/zarr.json"))["chunk_key_encoding"]["configuration"]
    assert sorted(keys) == sorted(["zarr.json"] + [f"c{sep['separator']}{i}" for i in range(100)])
    model = StreamingKMeans.load(files / "m.npz")
    np.testing.assert_array_equal(
        _read_labels(s3_labels, options), model.predict(np.load(files / "x.npy"))
    )
