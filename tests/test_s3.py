"""Data, labels, models, plots and checkpoints on a real S3-compatible server (moto over HTTP)."""

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from _helpers import S3_SECRET, flaky_s3_options, run_example
from dask.callbacks import Callback

from dask_streamkm import StreamingKMeans, elbow
from dask_streamkm.io import InputError, open_array, write_labels

s3fs = pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def _blobs(rng, n=2400, d=3):
    centers = rng.normal(scale=20.0, size=(4, d))
    return (centers[rng.integers(0, 4, n)] + rng.standard_normal((n, d))).astype(np.float64)


def _fs(s3_server):
    return s3fs.S3FileSystem(**s3_server["storage_options"])


def _zarr_on_s3(url, data, options, rows=200):
    da.to_zarr(da.from_array(data, chunks=(rows, -1)), url, storage_options=options)


def _reads_of(node, name):
    """Chunks of the dask array ``name`` a task computes: its own key, or the keys of the
    tasks nested in it (a wave runs each chunk's read inside the leaf that uses it)."""
    key = getattr(node, "key", None)
    count = int(isinstance(key, tuple) and key[0] == name)
    for arg in (*getattr(node, "args", ()), *getattr(node, "kwargs", {}).values()):
        count += _reads_of(arg, name)
    return count


class Reads(Callback):
    """Counts the chunks of the dask array named ``name`` that finished tasks read."""

    def __init__(self, name, after=None, action=None):
        super().__init__()
        self.name, self.after, self.action, self.count = name, after, action, 0

    def _posttask(self, key, result, dsk, state, id):
        reads = _reads_of(dsk[key], self.name)
        if reads:
            self.count += reads
            if self.after is not None and self.count - reads < self.after <= self.count:
                self.action()


# ---------------------------------------------------------------------- round trips
def test_s3_zarr_fit_predict_score_elbow_and_model(s3_server, s3_bucket, rng, tmp_path):
    options = s3_server["storage_options"]
    data = _blobs(rng)
    _zarr_on_s3(f"{s3_bucket}/x.zarr", data, options)
    zarr.create_array(tmp_path / "x.zarr", data=data, chunks=(200, 3))
    X = open_array(f"{s3_bucket}/x.zarr", storage_options=options)
    local = open_array(tmp_path / "x.zarr")
    assert X.chunks == local.chunks
    km = StreamingKMeans(4, random_state=0).fit(X)
    ref = StreamingKMeans(4, random_state=0).fit(local)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.score(X) == pytest.approx(ref.score(local), rel=1e-12)

    write_labels(km.predict(X), f"{s3_bucket}/labels.zarr", storage_options=options)
    stored = zarr.open(
        zarr.storage.FsspecStore.from_url(
            f"{s3_bucket}/labels.zarr", storage_options=options, read_only=True
        ),
        mode="r",
    )[:]
    np.testing.assert_array_equal(stored, ref.predict(local).compute())
    with pytest.raises(InputError, match="already exists"):
        write_labels(km.predict(X), f"{s3_bucket}/labels.zarr", storage_options=options)

    km.save(f"{s3_bucket}/model.npz", storage_options=options)
    back = StreamingKMeans.load(f"{s3_bucket}/model.npz", storage_options=options)
    np.testing.assert_array_equal(back.cluster_centers_, km.cluster_centers_)

    result = elbow(X, range(2, 7), random_state=0)
    assert result.suggested_k == 4
    pytest.importorskip("matplotlib")
    result.plot(f"{s3_bucket}/elbow.png", storage_options=options)
    assert _fs(s3_server).cat_file(f"{s3_bucket}/elbow.png")[:4] == b"\x89PNG"


def test_s3_zarr_group_array_name_after_the_scheme(s3_server, s3_bucket, rng):
    options = s3_server["storage_options"]
    data = _blobs(rng, 600)
    store = zarr.storage.FsspecStore.from_url(f"{s3_bucket}/g.zarr", storage_options=options)
    group = zarr.open_group(store, mode="w")
    group.create_array("features", data=data, chunks=(200, 3))
    group.create_array("other", data=data[:, :2], chunks=(200, 2))
    X = open_array(f"{s3_bucket}/g.zarr:features", storage_options=options)
    np.testing.assert_array_equal(X.compute(), data)
    with pytest.raises(InputError, match="holding the arrays"):
        open_array(f"{s3_bucket}/g.zarr", storage_options=options)


def test_s3_parquet_and_npy_directory(s3_server, s3_bucket, rng):
    pd = pytest.importorskip("pandas")
    options = s3_server["storage_options"]
    fs = _fs(s3_server)
    data = _blobs(rng, 900)
    frame = pd.DataFrame(data, columns=["a", "b", "c"])
    for i, start in enumerate(range(0, 900, 300)):
        with fs.open(f"{s3_bucket}/pq/part-{i}.parquet", "wb") as fh:
            frame.iloc[start : start + 300].to_parquet(fh)
        with fs.open(f"{s3_bucket}/npy/part-{i}.npy", "wb") as fh:
            np.save(fh, data[start : start + 300])
    P = open_array(f"{s3_bucket}/pq", columns=["a", "c"], storage_options=options)
    np.testing.assert_array_equal(P.compute(), data[:, [0, 2]])
    N = open_array(f"{s3_bucket}/npy", chunks=100, storage_options=options)
    assert N.chunks[0] == (100,) * 9
    np.testing.assert_array_equal(N.compute(), data)
    ref = StreamingKMeans(4, random_state=0).fit(da.from_array(data, chunks=(100, 3)))
    km = StreamingKMeans(4, random_state=0).fit(N)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.score(N) == pytest.approx(ref.score(data), rel=1e-9)
    assert elbow(P, range(2, 5), random_state=0).k.tolist() == [2, 3, 4]
    assert elbow(N, range(2, 7), random_state=0).suggested_k == 4
    with pytest.raises(InputError, match=r"no column 'zz'; its columns are \['a', 'b', 'c'\]"):
        open_array(f"{s3_bucket}/pq", columns=["a", "zz"], storage_options=options)


# ---------------------------------------------------------------------- fingerprints
def test_s3_rewritten_store_is_read_again_with_a_checkpoint(s3_server, s3_bucket, rng):
    options = s3_server["storage_options"]
    url = f"{s3_bucket}/x.zarr"
    _zarr_on_s3(url, _blobs(rng), options)
    ckpt = f"{s3_bucket}/ckpt"
    first = StreamingKMeans(4, random_state=0, checkpoint=ckpt).fit(
        open_array(url, chunks=200, storage_options=options)
    )
    # Same shape, new values: only the chunk objects change (zarr.json is not rewritten).
    new = _blobs(np.random.default_rng(7))
    store = zarr.storage.FsspecStore.from_url(url, storage_options=options)
    zarr.open_array(store, mode="r+")[:] = new
    X = open_array(url, chunks=200, storage_options=options)
    with Reads(X.name) as reads:
        second = StreamingKMeans(4, random_state=0, checkpoint=ckpt).fit(X)
    assert reads.count == X.numblocks[0]
    assert not np.array_equal(first.cluster_centers_, second.cluster_centers_)
    ref = StreamingKMeans(4, random_state=0).fit(da.from_array(new, chunks=(200, 3)))
    np.testing.assert_array_equal(second.cluster_centers_, ref.cluster_centers_)


# ---------------------------------------------------------------------- faults
def _store_on_s3(kind, bucket, data, options):
    """``data`` on the server as 12 chunks of 200 rows: a zarr store, a directory of .npy files
    or a Parquet dataset (one file per chunk). Returns the URL and open_array's ``chunks``."""
    if kind == "zarr":
        url = f"{bucket}/x.zarr"
        _zarr_on_s3(url, data, options)
        return url, 200
    fs = s3fs.S3FileSystem(**options)
    if kind == "npy":
        for i, start in enumerate(range(0, len(data), 800)):
            with fs.open(f"{bucket}/x-npy/part-{i}.npy", "wb") as fh:
                np.save(fh, data[start : start + 800])
        return f"{bucket}/x-npy", 200
    import pandas as pd

    for i, start in enumerate(range(0, len(data), 200)):
        frame = pd.DataFrame(data[start : start + 200], columns=["a", "b", "c"])
        with fs.open(f"{bucket}/x-pq/part-{i:02d}.parquet", "wb") as fh:
            frame.to_parquet(fh)
    return f"{bucket}/x-pq", 200


@pytest.mark.parametrize("kind", ["zarr", "npy", "parquet"])
def test_server_stopped_mid_fit_names_the_url_and_the_rerun_resumes(
    s3_server, s3_bucket, rng, kind
):
    from moto.server import ThreadedMotoServer

    # A second server on the same in-process S3 state: the data is read through it and it is
    # stopped mid-fit; the checkpoint files go through the session's server (the environment).
    data = _blobs(rng)
    url, chunks = _store_on_s3(kind, s3_bucket, data, s3_server["storage_options"])
    ckpt = f"{s3_bucket}/ckpt-{kind}"

    flaky = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    flaky.start()
    X = open_array(url, chunks=chunks, storage_options=flaky_s3_options(flaky))
    assert X.numblocks[0] == 12
    params = dict(n_clusters=4, random_state=0, split_every=3, checkpoint=ckpt)
    with dask.config.set(scheduler="sync"), Reads(X.name, after=6, action=flaky.stop):
        with pytest.raises(InputError) as info:
            StreamingKMeans(**params).fit(X)
    message = str(info.value)
    assert url in message and "\n" not in message and S3_SECRET not in message
    saved = _fs(s3_server).ls(ckpt)
    assert 1 <= len(saved) < 4  # 12 chunks in ranges of 3: some finished, not all

    again = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    again.start()
    try:
        X2 = open_array(url, chunks=chunks, storage_options=flaky_s3_options(again))
        with Reads(X2.name) as reads:
            km = StreamingKMeans(**params).fit(X2)
    finally:
        again.stop()
    assert reads.count == 12 - 3 * len(saved)
    ref = StreamingKMeans(4, random_state=0, split_every=3).fit(
        da.from_array(data, chunks=(200, 3))
    )
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def test_missing_bucket_key_and_wrong_credentials_are_one_line(s3_server, s3_bucket):
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    options = s3_server["storage_options"]
    with pytest.raises(InputError, match="bucket .*'no-such-bucket-x' does not exist") as info:
        open_array("s3://no-such-bucket-x/x.zarr", storage_options=options)
    with pytest.raises(InputError, match="no such file or directory: 's3://") as info2:
        open_array(f"{s3_bucket}/missing.zarr", storage_options=options)
    # A server that checks credentials (moto's IAM enforcement), in its own process.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/")
                break
            except OSError:
                time.sleep(0.05)
        wrong = {
            "key": "AKIAWRONGKEY",
            "secret": "wrong-secret-value-123",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        }
        with pytest.raises(InputError, match="credentials") as info3:
            open_array("s3://any-bucket/x.zarr", storage_options=wrong)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    for exc, secret in ((info, S3_SECRET), (info2, S3_SECRET), (info3, "wrong-secret-value-123")):
        text = str(exc.value)
        assert "\n" not in text and secret not in text


def test_secrets_never_in_messages_model_files_or_checkpoint_names(s3_server, s3_bucket, rng):
    options = s3_server["storage_options"]
    url = f"{s3_bucket}/x.zarr"
    _zarr_on_s3(url, _blobs(rng, 800), options)
    km = StreamingKMeans(3, random_state=0, checkpoint=f"{s3_bucket}/ckpt").fit(
        open_array(url, storage_options=options)
    )
    km.save(f"{s3_bucket}/m.npz", storage_options=options)
    fs = _fs(s3_server)
    assert S3_SECRET.encode() not in fs.cat_file(f"{s3_bucket}/m.npz")
    names = fs.find(s3_bucket)
    assert names and not any(S3_SECRET in n for n in names)
    # A message that would quote the options (a bad model file) does not show the secret.
    fs.pipe_file(f"{s3_bucket}/bad.npz", b"garbage")
    with pytest.raises(ValueError) as info:
        StreamingKMeans.load(f"{s3_bucket}/bad.npz", storage_options=options)
    assert S3_SECRET not in str(info.value)


# ---------------------------------------------------------------------- example
def test_example_cluster_object_store(s3_server, s3_bucket, tmp_path):
    bucket = s3_bucket.removeprefix("s3://")
    out = run_example(
        "cluster_object_store.py",
        "--endpoint-url",
        s3_server["endpoint_url"],
        "--bucket",
        bucket,
        cwd=tmp_path,
    )
    assert "cluster: 2 workers" in out and "cost (sum of squared distances):" in out
    assert "checkpoint files: 1" in out  # 8 chunks, split_every=8: one range
    fs = _fs(s3_server)
    assert fs.exists(f"{bucket}/labels.zarr/zarr.json") and fs.exists(f"{bucket}/model.npz")


# ---------------------------------------------------------------------- command line
def _cli_has_storage_option():
    from dask_streamkm import cli

    try:
        cli.build_parser().parse_args(["fit", "x.zarr", "--k", "3", "--storage-option", "a=b"])
    except SystemExit:
        return False
    return True


def test_cli_missing_bucket_and_key_exit_1_without_secrets(s3_server, s3_bucket, tmp_path, capsys):
    from dask_streamkm import cli

    if not _cli_has_storage_option():
        pytest.skip("the CLI has no --storage-option flag in this tree")
    endpoint = s3_server["endpoint_url"]
    options = [
        "--storage-option",
        f'client_kwargs={{"endpoint_url": "{endpoint}"}}',
        "--storage-option",
        "key=testing",
        "--storage-option",
        f"secret={S3_SECRET}",
    ]
    for url in ("s3://no-such-bucket-cli/x.zarr", f"{s3_bucket}/missing.zarr"):
        rc = cli.main(["fit", url, "--k", "3", "--out", str(tmp_path / "m.npz"), *options])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and url in err and len(err.splitlines()) == 1, err
        assert S3_SECRET not in err
