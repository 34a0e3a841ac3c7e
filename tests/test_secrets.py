"""Secrets never appear in a message or a repr: URLs with credentials, storage_options secrets.

A secret may sit in a URL (``s3://KEY:SECRET@bucket/...``, a presigned ``?X-Amz-Signature=``,
``X-Amz-Credential``, ``X-Amz-Security-Token``, an Azure ``sig=``, a ``token=``) or in
``storage_options`` (``secret``, ``client_kwargs``...). Every path that builds a message from a
URL is tried against the real moto S3 server of tests/conftest.py: ``open_array``,
``StreamingKMeans.load`` and ``save``, ``checkpoint=`` and the CLI; and ``repr()`` of an
estimator holding such ``storage_options``.
"""

import dask.array as da
import numpy as np
import pytest
from _helpers import S3_SECRET

from dask_streamkm import ModelFileError, StreamingKMeans, cli
from dask_streamkm._remote import display, redact, redact_options
from dask_streamkm.io import InputError, open_array

KEY_ID = "AKIAEXAMPLEKEYID"
SIGNATURE = "f00dfeedsignature1234"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE/sessiontoken+"


def _urls(bucket, endpoint):
    """URLs holding secrets (the secrets of each), on the test server and its bucket."""
    name = bucket[len("s3://") :]
    presigned = (
        f"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={KEY_ID}%2F20261206%2Fus-east-1"
        f"&X-Amz-Security-Token={TOKEN}&X-Amz-Signature={SIGNATURE}"
    )
    return [
        (f"s3://{KEY_ID}:{S3_SECRET}@{name}/data", [KEY_ID, S3_SECRET]),
        (f"s3://{name}/data{presigned}", [KEY_ID, TOKEN, SIGNATURE]),
        (f"{endpoint}/{name}/data{presigned}", [KEY_ID, TOKEN, SIGNATURE]),
        (f"{endpoint}/{name}/data?sv=2022-11-02&se=2026&sig={SIGNATURE}", [SIGNATURE]),
        (f"{endpoint}/{name}/data?token={TOKEN}", [TOKEN]),
    ]


def _assert_clean(text, secrets):
    from urllib.parse import quote

    for secret in secrets:
        assert secret not in text, text
        assert quote(secret, safe="") not in text, text


@pytest.fixture
def model(tmp_path):
    X = np.random.default_rng(0).normal(size=(200, 3))
    return StreamingKMeans(n_clusters=2, random_state=0).fit(X)


def _cases(s3_bucket, s3_server):
    return _urls(s3_bucket, s3_server["endpoint_url"])


def test_open_array_errors_hold_no_url_secret(s3_bucket, s3_server):
    for url, secrets in _cases(s3_bucket, s3_server):
        for spec in (f"{url}.zarr", f"{url}.npy", url):
            with pytest.raises(InputError) as info:
                open_array(spec)
            _assert_clean(str(info.value), secrets)


def test_load_and_save_errors_hold_no_url_secret(s3_bucket, s3_server, model):
    for url, secrets in _cases(s3_bucket, s3_server):
        with pytest.raises(ModelFileError) as info:
            StreamingKMeans.load(f"{url}.npz")
        _assert_clean(str(info.value), secrets)
        # The server may take a presigned-looking name as an ordinary object name and write
        # it; an error (always for credentials in the URL's user part) must be clean.
        try:
            model.save(f"{url}.npz")
        except Exception as exc:  # noqa: BLE001 - any error, but clean
            _assert_clean(str(exc), secrets)
        else:
            assert not url.startswith("s3://AKIA")


def test_checkpoint_errors_hold_no_url_secret(s3_bucket, s3_server):
    X = da.from_array(np.random.default_rng(0).normal(size=(200, 3)), chunks=100)
    for url, secrets in _cases(s3_bucket, s3_server):
        # random_state missing: refused before anything is touched.
        with pytest.raises(ValueError) as info:
            StreamingKMeans(n_clusters=2, checkpoint=url).fit(X)
        _assert_clean(str(info.value), secrets)
        # A directory that cannot be used (credentials in the URL's user part). An HTTP
        # server may take a presigned-looking name as an ordinary object name and write its
        # files (one PUT each, as a model file's); an error must be clean.
        if url.startswith("s3://AKIA") or url.startswith("http"):
            try:
                StreamingKMeans(n_clusters=2, checkpoint=url, random_state=0).fit(X)
            except Exception as exc:  # noqa: BLE001 - any error, but clean
                _assert_clean(str(exc), secrets)
            else:
                assert url.startswith("http")


def test_cli_errors_hold_no_url_secret(s3_bucket, s3_server, tmp_path, capsys):
    for url, secrets in _cases(s3_bucket, s3_server):
        for argv in (
            ["fit", f"{url}.zarr", "--k", "2", "--out", str(tmp_path / "m.npz")],
            ["predict", f"{url}.npz", f"{url}.zarr", "--out", str(tmp_path / "l.zarr")],
            ["score", f"{url}.npz", f"{url}.zarr"],
        ):
            assert cli.main(argv) != 0
            captured = capsys.readouterr()
            _assert_clean(captured.out + captured.err, secrets)


def test_storage_options_secrets_never_in_messages(s3_bucket, s3_server):
    # An endpoint that refuses connections, whose URL holds credentials too.
    options = {
        "key": KEY_ID,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": f"http://user:{SIGNATURE}@127.0.0.1:9"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    secrets = [KEY_ID, S3_SECRET, SIGNATURE]
    with pytest.raises(InputError) as info:
        open_array(f"{s3_bucket}/x.zarr", storage_options=options)
    _assert_clean(str(info.value), secrets)
    with pytest.raises(ModelFileError) as info:
        StreamingKMeans.load(f"{s3_bucket}/m.npz", storage_options=options)
    _assert_clean(str(info.value), secrets)
    X = da.from_array(np.random.default_rng(0).normal(size=(200, 3)), chunks=100)
    km = StreamingKMeans(
        n_clusters=2, random_state=0, checkpoint=f"{s3_bucket}/ckpt", storage_options=options
    )
    with pytest.raises(ValueError) as info:
        km.fit(X)
    _assert_clean(str(info.value), secrets)


def test_repr_shows_no_storage_options_secret():
    options = {
        "key": KEY_ID,
        "secret": S3_SECRET,
        "token": TOKEN,
        "anon": False,
        "client_kwargs": {
            "endpoint_url": f"http://user:{SIGNATURE}@127.0.0.1:9",
            "aws_session_token": TOKEN,
            "region_name": "us-east-1",
        },
        "credentials": {"account_key": SIGNATURE},
        "sas_token": f"sv=2022&sig={SIGNATURE}",
        "password": "hunter2hunter2",
    }
    km = StreamingKMeans(
        n_clusters=2,
        storage_options=options,
        checkpoint=f"s3://{KEY_ID}:{S3_SECRET}@bucket/ckpt?X-Amz-Signature={SIGNATURE}",
    )
    secrets = [KEY_ID, S3_SECRET, TOKEN, SIGNATURE, "hunter2hunter2"]
    text = repr(km)
    _assert_clean(text, secrets)
    assert "'secret': '***'" in text and "'region_name': 'us-east-1'" in text
    assert "'endpoint_url': 'http://127.0.0.1:9'" in text and "'anon': False" in text
    assert "checkpoint='s3://bucket/ckpt?X-Amz-Signature=***'" in text
    _assert_clean(km._repr_html_(), secrets)
    bundle = km._repr_mimebundle_()
    _assert_clean(" ".join(bundle.values()), secrets)
    # get_params keeps the real values (clone, set_params, pickling rely on them).
    assert km.get_params()["storage_options"] is options
    assert km.get_params()["storage_options"]["secret"] == S3_SECRET
    assert str(km.checkpoint).startswith(f"s3://{KEY_ID}:{S3_SECRET}@")


def test_redaction_helpers():
    assert display(f"s3://{KEY_ID}:{S3_SECRET}@b/x") == "s3://b/x"
    shown = display(f"https://h/x?X-Amz-Credential={KEY_ID}&X-Amz-Signature={SIGNATURE}&v=1")
    assert shown == "https://h/x?X-Amz-Credential=***&X-Amz-Signature=***&v=1"
    text = redact(
        f'Invalid bucket name "{KEY_ID}:{S3_SECRET}@b" at b/x%3FX-Amz-Signature%3D{SIGNATURE}',
        None,
        [f"s3://{KEY_ID}:{S3_SECRET}@b/x"],
    )
    assert text == 'Invalid bucket name "***:***@b" at b/x%3FX-Amz-Signature%3D***'
    options = {"secret": S3_SECRET, "profile": "default", "client_kwargs": {"token": TOKEN}}
    # Only secret values are replaced: other option values stay readable in messages.
    assert redact(f"profile default, {S3_SECRET}, {TOKEN}", options) == (
        "profile default, ***, ***"
    )
    assert redact_options(options) == {
        "secret": "***",
        "profile": "default",
        "client_kwargs": {"token": "***"},
    }
    assert redact_options(None) is None
