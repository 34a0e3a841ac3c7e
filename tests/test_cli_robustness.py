"""Command line: no lost files, no lost fits, one-line errors."""

import http.server
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from dask_streamkm import StreamingKMeans
from dask_streamkm.cli import main
from dask_streamkm.datasets import make_mixture
from dask_streamkm.io import open_array

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_line_error(rc, err, *matches):
    assert rc == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for match in matches:
        assert match in lines[0], lines[0]
    return lines[0]


def cli(*args, **popen):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return [sys.executable, "-m", "dask_streamkm.cli", *map(str, args)], env


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "x.zarr"
    make_mixture(6_000, 4, 5, chunks=1_000, random_state=1).to_zarr(str(path))
    return path


def snapshot(path):
    """Every file under ``path`` with its bytes (to show an input is untouched)."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------- 6
def test_no_overwrite_without_the_flag_and_never_an_input(store, tmp_path, capsys):
    npy = tmp_path / "data.npy"
    np.save(npy, np.random.default_rng(0).standard_normal((300, 3)))
    before = npy.read_bytes()
    for extra in ((), ("--overwrite",)):
        rc, _, err = run(capsys, "fit", npy, "--k", 3, "--out", npy, "--quiet", *extra)
        one_line_error(rc, err, "lies inside the input", "refused even with --overwrite")
    assert npy.read_bytes() == before

    model = tmp_path / "m.npz"
    assert run(capsys, "fit", store, "--k", 3, "--out", model, "--quiet")[0] == 0
    stored, first = snapshot(store), model.read_bytes()
    # an existing model file is kept without --overwrite, replaced with it
    rc, _, err = run(capsys, "fit", store, "--k", 4, "--out", model, "--quiet")
    one_line_error(rc, err, "already exists; remove it or pass --overwrite")
    assert model.read_bytes() == first
    rc, _, err = run(capsys, "fit", store, "--k", 4, "--out", model, "--quiet", "--overwrite")
    assert rc == 0, err
    assert StreamingKMeans.load(model).n_clusters == 4

    # predict into the input store, inside it, or over its parent: refused, store intact
    for out in (store, store / "labels", tmp_path):
        rc, _, err = run(capsys, "predict", store, model, "--out", out, "--overwrite", "--quiet")
        one_line_error(rc, err, "refused even with --overwrite")
    rc, _, err = run(capsys, "predict", store, model, "--out", model, "--overwrite", "--quiet")
    one_line_error(rc, err, "the model")
    rc, _, err = run(capsys, "elbow", store, "--k", "2:3", "--plot", store / "e.png", "--quiet")
    one_line_error(rc, err, "lies inside the input")
    assert snapshot(store) == stored

    # labels: refused over an existing store without --overwrite, replaced with it
    labels = tmp_path / "labels.zarr"
    assert run(capsys, "predict", store, model, "--out", labels, "--quiet")[0] == 0
    rc, _, err = run(capsys, "predict", store, model, "--out", labels, "--quiet")
    one_line_error(rc, err, "already exists; remove it or pass --overwrite")
    zarr.create_array(labels, data=np.zeros(5, dtype=np.int64), overwrite=True)  # another length
    rc, _, err = run(capsys, "predict", store, model, "--out", labels, "--quiet", "--overwrite")
    assert rc == 0, err
    expected = StreamingKMeans.load(model).predict(open_array(store)).compute()
    np.testing.assert_array_equal(zarr.open(labels, mode="r")[:], expected)
    # written aside and renamed into place: no temporary name is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data.npy",
        "labels.zarr",
        "m.npz",
        "x.zarr",
    ]


# ---------------------------------------------------------------------- 7
def test_destinations_are_checked_before_any_data_is_read(tmp_path, capsys):
    # The input does not even exist: the destination's error comes first, so nothing was read.
    missing_input = tmp_path / "not-there.zarr"
    (tmp_path / "dir").mkdir()
    cases = [
        (("fit", "--out", tmp_path / "no" / "m.npz"), "does not exist; create it first"),
        (("fit", "--out", tmp_path / "dir"), "is a directory; give a file path"),
        (("elbow", "--plot", tmp_path / "no" / "e.png"), "does not exist; create it first"),
        (("elbow", "--plot", tmp_path / "dir"), "is a directory"),
        (("fit", "--checkpoint", "/sys/dask-streamkm-ck"), "is not a writable directory"),
    ]
    (tmp_path / "file").write_text("x")
    cases.append((("fit", "--checkpoint", tmp_path / "file"), "is a file"))
    cases.append((("predict", "--out", tmp_path / "file"), "is a file; a zarr store is a dir"))
    # A store named as a file of another kind: a directory that np.load would be handed.
    for name in ("labels.npy", "labels.CSV", "labels.parquet"):
        cases.append((("predict", "--out", tmp_path / name), "but labels are written as a zarr"))
    for (command, *flags), match in cases:
        extra = ("--k", 2) if command == "fit" else ()
        if command == "predict":
            extra = (tmp_path / "m.npz",)
        start = time.perf_counter()
        rc, _, err = run(capsys, command, missing_input, *extra, *flags, "--quiet")
        one_line_error(rc, err, match)
        assert "not-there" not in err and time.perf_counter() - start < 5


def test_a_model_that_cannot_be_written_after_the_pass_is_kept(tmp_path):
    """The output directory vanishes while the fit runs: the fit is saved elsewhere, said where."""
    store = tmp_path / "x.zarr"
    make_mixture(60_000, 8, 10, chunks=2_000, random_state=2).to_zarr(str(store))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd, env = cli("fit", store, "--k", 5, "--scheduler", "sync", "--out", out_dir / "m.npz")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stderr.read(1)  # the progress bar's first draw: the destination checks are done
    out_dir.rmdir()
    stdout, stderr = proc.communicate(timeout=300)
    message = stderr.decode().replace("\r", "\n").strip().splitlines()[-1]
    assert proc.returncode == 1, stderr.decode()
    assert "could not write the model" in message and "it was saved to" in message
    fallback = message.split("it was saved to '")[1].split("'")[0]
    try:
        model = StreamingKMeans.load(fallback)
        ref = StreamingKMeans(5, random_state=0).fit(open_array(store))
        np.testing.assert_array_equal(model.cluster_centers_, ref.cluster_centers_)
        assert b"cost bound" in stdout
    finally:
        os.remove(fallback)


# ---------------------------------------------------------------------- 8
def test_read_only_checkpoint_directory(store, capsys):
    for directory in ("/sys/dask-streamkm-ck", "/proc/dask-streamkm-ck"):
        rc, _, err = run(capsys, "fit", store, "--k", 2, "--checkpoint", directory, "--quiet")
        one_line_error(rc, err, f"--checkpoint {directory!r} is not a writable directory")


def _file_size_limit(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_checkpoint_that_fills_up_mid_pass_keeps_finished_ranges(store, tmp_path, capsys):
    ck = tmp_path / "ck"
    fit = ["fit", store, "--k", 3, "--split-every", 2, "--chunks", 1000, "--scheduler", "sync"]
    fit.append("--quiet")
    assert run(capsys, *fit, "--checkpoint", ck, "--out", tmp_path / "a.npz")[0] == 0
    files = sorted(p.name for p in ck.iterdir())
    assert len(files) == 3  # 6 chunks, ranges of 2
    (ck / files[1]).unlink()  # one range to redo, in a directory that is now full
    kept = {name: (ck / name).read_bytes() for name in (files[0], files[2])}
    cmd, env = cli(*fit, "--checkpoint", ck, "--out", tmp_path / "b.npz")
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=120, preexec_fn=_file_size_limit(512)
    )
    one_line_error(out.returncode, out.stderr, f"--checkpoint {str(ck)!r}", "File too large")
    assert "the ranges saved so far are kept" in out.stderr
    assert {name: (ck / name).read_bytes() for name in (files[0], files[2])} == kept
    assert not (tmp_path / "b.npz").exists()
    # with room again, the rerun computes the missing range and ends as the first run did
    rc, stdout, err = run(capsys, *fit, "--checkpoint", ck, "--out", tmp_path / "b.npz")
    assert rc == 0, err
    first = StreamingKMeans.load(tmp_path / "a.npz").cluster_centers_
    np.testing.assert_array_equal(StreamingKMeans.load(tmp_path / "b.npz").cluster_centers_, first)


# ---------------------------------------------------------------------- 9
class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # the test's stderr is the CLI's
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # accepts connections (the kernel's backlog) and never says a word
    yield sock.getsockname()[1]
    sock.close()


def test_an_address_without_a_dask_scheduler_fails_in_time(
    store, http_server, silent_listener, capsys
):
    timeout = 2
    for address in (
        f"tcp://127.0.0.1:{http_server}",
        f"tcp://127.0.0.1:{silent_listener}",
        f"tls://127.0.0.1:{silent_listener}",
    ):
        start = time.perf_counter()
        rc, _, err = run(
            capsys, "fit", store, "--k", 2, "--scheduler", address, "--connect-timeout", timeout
        )
        assert time.perf_counter() - start < timeout + 5, address
        one_line_error(rc, err, f"--scheduler {address}")


# ---------------------------------------------------------------------- 10
def test_zero_rows_and_unknown_columns(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    zarr.create_array(tmp_path / "zero.zarr", shape=(0, 3), dtype="f8", chunks=(10, 3))
    model = tmp_path / "m.npz"
    StreamingKMeans(2, random_state=0).fit(np.random.default_rng(0).random((20, 3))).save(model)
    for command in (
        ("fit", "--k", 2, "--out", tmp_path / "z.npz"),
        ("elbow", "--k", "2:3"),
        ("score", model),
    ):
        rc, _, err = run(capsys, command[0], tmp_path / "zero.zarr", *command[1:], "--quiet")
        line = one_line_error(rc, err, "holds no rows", "nothing to")
        assert "--k <= 0" not in line
    (tmp_path / "pq").mkdir()
    frame = pd.DataFrame(np.ones((30, 3)), columns=["a", "b", "c"])
    frame.to_parquet(tmp_path / "pq" / "part-0.parquet")
    rc, _, err = run(
        capsys, "fit", tmp_path / "pq", "--k", 2, "--columns", "a,zz", "--out", tmp_path / "p.npz"
    )
    one_line_error(rc, err, "'zz'", "['a', 'b', 'c']")
