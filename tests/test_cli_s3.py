"""The command line on an S3-compatible server: every path a URL, --storage-option, no secrets.

Runs where io reads URLs (``open_array(..., storage_options=...)``) and the test fixtures start
an S3 server (``s3_server`` / ``s3_bucket`` in conftest.py); skipped otherwise.
"""

import inspect

import numpy as np
import pytest

from dask_streamkm import StreamingKMeans
from dask_streamkm.cli import main
from dask_streamkm.io import open_array


@pytest.fixture
def s3(request):
    if "storage_options" not in inspect.signature(open_array).parameters:
        pytest.skip("io.open_array takes no storage_options in this tree")
    try:
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
    except pytest.FixtureLookupError:
        pytest.skip("no S3 server fixture in this tree")
    options = server["storage_options"]
    flags = [
        "--storage-option",
        f"key={options['key']}",
        "--storage-option",
        f"secret={options['secret']}",
        "--storage-option",
        f'client_kwargs={{"endpoint_url": "{server["endpoint_url"]}"}}',
    ]
    return bucket, flags, options


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_every_command_on_s3_urls(s3, capsys):
    import s3fs

    bucket, flags, options = s3
    secret = options["secret"]
    store, model, labels = f"{bucket}/x.zarr", f"{bucket}/m.npz", f"{bucket}/labels.zarr"
    outputs = []

    def ok(*args):
        rc, out, err = run(capsys, *args, *flags, "--quiet")
        assert rc == 0, err
        outputs.append(out + err)
        return out

    ok("make-data", store, "--rows", 4000, "--features", 3, "--components", 4, "--chunks", 1000)
    fit = ("fit", store, "--k", 3, "--out", model, "--chunks", 1000)
    ok(*fit, "--checkpoint", f"{bucket}/ck", "--split-every", 2)
    X = open_array(store, chunks=1000, storage_options=options)
    ref = StreamingKMeans(3, random_state=0, split_every=2).fit(X)
    fitted = StreamingKMeans.load(model, storage_options=options)
    np.testing.assert_array_equal(fitted.cluster_centers_, ref.cluster_centers_)
    ok("predict", store, model, "--out", labels)
    ok("score", store, model)
    ok("elbow", store, "--k", "2:4", "--plot", f"{bucket}/elbow.png")

    fs = s3fs.S3FileSystem(**options)
    name = bucket.removeprefix("s3://")
    assert len(fs.ls(f"{name}/ck")) == 2  # 4 chunks, ranges of 2
    assert fs.cat_file(f"{name}/elbow.png").startswith(b"\x89PNG")
    import zarr

    got = zarr.open_array(zarr.storage.FsspecStore.from_url(labels, storage_options=options))
    np.testing.assert_array_equal(got[:], ref.predict(X).compute())
    # no temporary names left, no secret in any output or object name
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(name)) == [
        "ck",
        "elbow.png",
        "labels.zarr",
        "m.npz",
        "x.zarr",
    ]
    assert not any(secret in text for text in outputs)
    assert not any(secret in p for p in fs.find(name))

    # the same guarantees as on local paths
    for args, match in (
        (("predict", store, model, "--out", labels), "already exists"),
        (("predict", store, model, "--out", store, "--overwrite"), "refused even with"),
        (("fit", store, "--k", 2, "--out", f"{store}/m.npz", "--overwrite"), "lies inside"),
    ):
        rc, _, err = run(capsys, *args, *flags, "--quiet")
        assert rc == 1 and match in err and len(err.strip().splitlines()) == 1, err
        assert secret not in err
    ok("predict", store, model, "--out", labels, "--overwrite")
    assert ref.predict(X).compute().shape == got[:].shape
