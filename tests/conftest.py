import numpy as np
import pytest
from _helpers import S3_SECRET


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------- S3-compatible server
# One moto server per test session on 127.0.0.1, reached over HTTP by s3fs (tests/test_s3.py,
# tests/test_examples.py). The endpoint and keys are also exported through the AWS variables,
# the usual credential chain, for writers that take no storage_options (checkpoint files).


@pytest.fixture(scope="session")
def s3_server():
    """``{"endpoint_url", "storage_options"}`` of a running moto S3 server (stopped at the end)."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    import os

    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION",
        )
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
    )
    options = {"key": "testing", "secret": S3_SECRET, "client_kwargs": {"endpoint_url": endpoint}}
    yield {"endpoint_url": endpoint, "storage_options": options, "server": server}
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    """A new empty bucket (its name is the test's) on the session's S3 server: ``s3://NAME``."""
    import re

    import s3fs

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    fs = s3fs.S3FileSystem(**s3_server["storage_options"])
    if fs.exists(name):
        fs.rm(name, recursive=True)
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"s3://{name}"
