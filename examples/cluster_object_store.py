"""
Object storage: k-means over an s3 zarr store on a Dask cluster, checkpoint and labels on s3
============================================================================================

The data of a large run lives in object storage, and the fit runs on a Dask cluster. This
example connects to a scheduler (``--scheduler tcp://HOST:8786``) or starts a ``LocalCluster``,
writes a synthetic data set to ``s3://BUCKET/data.zarr`` (a stand-in for your own store), fits
:class:`~dask_streamkm.StreamingKMeans` over it in one pass with a checkpoint directory on s3
(a rerun after a crash reads only the chunk ranges that were not finished), writes the label of
every row to ``s3://BUCKET/labels.zarr`` and prints the cost.

Credentials come from the usual chain (environment variables, ``~/.aws``, instance roles) or
from ``storage_options``; they never appear in messages, model files or checkpoint names.
``--small --endpoint-url http://127.0.0.1:PORT`` runs quickly against a local S3-compatible
server (moto's ``moto_server``, MinIO...).
"""

# %%
# Settings
# --------
# Worker processes import this file again (the ``spawn`` start method), so the run is in
# ``main`` behind a ``__main__`` guard.
import argparse
import os
import time

import dask.array as da
import fsspec
from dask.distributed import Client, LocalCluster

from dask_streamkm import StreamingKMeans
from dask_streamkm.datasets import make_mixture
from dask_streamkm.io import open_array, write_labels


def main():
    parser = argparse.ArgumentParser(description="k-means over an s3 zarr store on a Dask cluster")
    parser.add_argument("--small", action="store_true", help="a small data set, for a quick run")
    parser.add_argument(
        "--scheduler", default=None, help="scheduler address (default: a LocalCluster)"
    )
    parser.add_argument("--bucket", default="dask-streamkm-example", help="bucket to write to")
    parser.add_argument("--endpoint-url", default=None, help="an S3-compatible server's URL")
    args, _ = parser.parse_known_args()
    n_rows, chunk_rows, k = (8_000, 1_000, 4) if args.small else (10_000_000, 250_000, 50)

    # With a custom endpoint (a local server), the data is reached through ``storage_options`` and
    # the checkpoint files, which the tasks write with the filesystem's default chain, through the
    # AWS environment variable (set before the workers start, so they inherit it).
    storage_options = {}
    if args.endpoint_url:
        storage_options = {"client_kwargs": {"endpoint_url": args.endpoint_url}}
        os.environ["AWS_ENDPOINT_URL"] = args.endpoint_url
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    base = f"s3://{args.bucket}"
    fs = fsspec.filesystem("s3", **storage_options)
    if not fs.exists(args.bucket):
        fs.mkdir(args.bucket)

    # %%
    # A cluster
    # ---------
    # Any Dask scheduler works; the workers need network access to the bucket and credentials
    # from their own environment.
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
    print(f"cluster: {len(client.scheduler_info()['workers'])} workers")

    # %%
    # A data set in object storage
    # ----------------------------
    # ``da.to_zarr`` writes one object per chunk, each from its own task.
    data_url = f"{base}/data.zarr"
    da.to_zarr(
        make_mixture(n_rows, 16, k, chunks=chunk_rows, random_state=0),
        data_url,
        overwrite=True,
        storage_options=storage_options,
    )
    print(f"wrote {n_rows:,} x 16 float32 to {data_url}")

    # %%
    # Fit in one pass, with a checkpoint on s3
    # ----------------------------------------
    # ``open_array`` opens the store through zarr's fsspec store. Its name hashes the ETag of every
    # chunk object (one listing), so a store rewritten later is read again, while a rerun on the
    # same data loads the finished ranges from the checkpoint directory.
    X = open_array(data_url, storage_options=storage_options)
    start = time.perf_counter()
    km = StreamingKMeans(n_clusters=k, random_state=0, checkpoint=f"{base}/checkpoint").fit(X)
    print(f"fit: {time.perf_counter() - start:.1f} s, {X.numblocks[0]} chunks")
    print(f"checkpoint files: {len(fs.ls(f'{args.bucket}/checkpoint', refresh=True))}")

    # %%
    # Labels back to s3, and the cost
    # -------------------------------
    # ``predict`` is lazy; ``write_labels`` computes it chunk by chunk into a zarr store on s3.
    labels_url = f"{base}/labels.zarr"
    write_labels(km.predict(X), labels_url, overwrite=True, storage_options=storage_options)
    print(f"labels written to {labels_url}")
    cost = -km.score(X)  # score is minus the cost, as in scikit-learn
    print(
        f"cost (sum of squared distances): {cost:,.1f}; bound from the summary: {km.inertia_:,.1f}"
    )
    km.save(f"{base}/model.npz", storage_options=storage_options)
    print(f"model saved to {base}/model.npz")
    client.close()


if __name__ == "__main__":
    main()
