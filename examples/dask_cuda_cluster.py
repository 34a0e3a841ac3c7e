"""
One-pass k-means on GPUs with dask-cuda
=======================================

A ``LocalCUDACluster`` starts one Dask worker per GPU. The data is a cupy-backed dask
array: every chunk is generated on the GPU of the worker that needs it (or read from a
zarr store and copied to the device), so rows never pass through host memory.
``StreamingKMeans.fit`` summarizes each chunk on its GPU, merges the summaries in a tree,
and solves for the centers on the small merged summary; only that summary crosses from
the workers to this process. ``predict`` returns a cupy-backed dask array.

Run it on a machine with NVIDIA GPUs, cupy and dask-cuda::

    python examples/dask_cuda_cluster.py --rows 20000000 --features 128 --n-clusters 200
    python examples/dask_cuda_cluster.py --zarr data.zarr      # a 2-D float array on disk

``--cpu`` runs the same script with a ``LocalCluster`` and numpy chunks (no GPU needed).
"""

# %%
# Imports and the data, generated chunk by chunk on the device
# ------------------------------------------------------------
import argparse
import time

import dask.array as da
import numpy as np

from dask_streamkm import StreamingKMeans
from dask_streamkm.datasets import mixture_parameters


def _array_module(on_gpu):
    if on_gpu:
        import cupy

        return cupy
    return np


def _mixture_chunk(block_info=None, *, means, stds, cdf, seed, on_gpu):
    """One chunk of a Gaussian mixture, drawn on the device from a seed per chunk."""
    xp = _array_module(on_gpu)
    start, stop = block_info[None]["array-location"][0]
    index = block_info[None]["chunk-location"][0]
    state = int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1)[0])
    rng = xp.random.default_rng(state)
    cdf = xp.asarray(cdf)
    comp = xp.minimum(xp.searchsorted(cdf, rng.random(stop - start), side="right"), len(cdf) - 1)
    out = rng.standard_normal((stop - start, means.shape[1]), dtype=np.float32)
    out *= xp.asarray(stds)[comp][:, None]
    out += xp.asarray(means)[comp]
    return out


def device_mixture(n_rows, n_features, n_components, chunk_rows, seed=0, on_gpu=True):
    """A lazy (n_rows, n_features) float32 mixture whose chunks are made on the workers' GPUs."""
    means, stds, weights = mixture_parameters(n_features, n_components, seed)
    xp = _array_module(on_gpu)
    return da.map_blocks(
        _mixture_chunk,
        chunks=da.core.normalize_chunks((chunk_rows, n_features), (n_rows, n_features)),
        dtype=np.float32,
        meta=xp.empty((0, 0), dtype=np.float32),  # the array type travels with the graph
        means=means.astype(np.float32),
        stds=stds.astype(np.float32),
        cdf=np.cumsum(weights),
        seed=seed,
        on_gpu=on_gpu,
    )


def zarr_on_device(path, on_gpu=True):
    """A 2-D zarr array as a dask array whose chunks are copied to the GPU as they are read."""
    X = da.from_zarr(path)
    X = X.rechunk({1: -1})  # whole rows in every chunk
    if not on_gpu:
        return X
    import cupy

    return X.map_blocks(cupy.asarray, dtype=X.dtype, meta=cupy.empty((0, 0), dtype=X.dtype))


# %%
# The cluster, the fit, the centers
# ---------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description="StreamingKMeans on a dask-cuda cluster.")
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--components", type=int, default=300)
    parser.add_argument("--n-clusters", type=int, default=100)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--zarr", default=None, help="read X from this zarr array instead")
    parser.add_argument("--cpu", action="store_true", help="LocalCluster and numpy chunks")
    args = parser.parse_args(argv)
    on_gpu = not args.cpu

    from dask.distributed import Client, LocalCluster

    t0 = time.perf_counter()
    if on_gpu:
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster()  # one worker (one thread) per visible GPU
    else:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1)
    with cluster, Client(cluster) as client:
        print(
            f"cluster: {len(client.scheduler_info()['workers'])} worker(s), "
            f"started in {time.perf_counter() - t0:.1f} s, dashboard {client.dashboard_link}"
        )

        if args.zarr:
            X = zarr_on_device(args.zarr, on_gpu)
        else:
            X = device_mixture(
                args.rows, args.features, args.components, args.chunk_rows, on_gpu=on_gpu
            )
        print(
            f"X: {X.shape[0]:,} x {X.shape[1]} {X.dtype}, {X.numblocks[0]} chunks, "
            f"chunk type {type(X._meta).__module__}.{type(X._meta).__name__}"
        )

        km = StreamingKMeans(n_clusters=args.n_clusters, random_state=0)
        t1 = time.perf_counter()
        km.fit(X)
        fit_s = time.perf_counter() - t1
        centers = km.cluster_centers_
        centers_host = centers.get() if hasattr(centers, "get") else np.asarray(centers)
        print(
            f"fit: {fit_s:.2f} s, {X.shape[0] / fit_s:,.0f} rows/s, "
            f"{km.summary_.n_groups:,} groups in the merged summary"
        )
        print(f"inertia (upper bound from the summary): {km.inertia_:.6g}")
        print(f"centers {centers_host.shape}, first rows:")
        print(np.array2string(centers_host[:3, :6], precision=3))

        t2 = time.perf_counter()
        labels = km.predict(X)  # lazy; chunks of the input's array type
        counts = da.bincount(labels, minlength=args.n_clusters).compute()
        counts = counts.get() if hasattr(counts, "get") else counts
        print(
            f"predict: {type(labels._meta).__module__} chunks, one pass in "
            f"{time.perf_counter() - t2:.2f} s; largest clusters hold {np.sort(counts)[-3:]}"
        )
        print(f"total: {time.perf_counter() - t0:.1f} s")
    return km


if __name__ == "__main__":
    main()
