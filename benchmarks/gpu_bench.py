"""GPU benchmark: SageMaker's headline shape on one GPU, a GPU reference, and CPU vs GPU.

SageMaker's k-means headline: 23M rows x 400 features (about 37 GB of float32), k=500, in
7 minutes on a GPU instance (Liberty et al., SIGMOD 2020). This script

1. generates that shape on the device, chunk by chunk, as a cupy-backed dask array (a
   Gaussian mixture, :func:`dask_streamkm.datasets.mixture_parameters`), and times
   ``StreamingKMeans(n_clusters=500).fit`` on it: wall time and rows/s
   (targets: wall <= 60 s, 7x faster than SageMaker);
2. computes a GPU reference, written here with plain cupy: greedy k-means++ on a 1M-row
   uniform sample, then 20 exact Lloyd passes over all rows; and reports the inertia ratio
   (exact inertia of our centers over all rows / that of the reference; target <= 1.01);
3. fits the same 2M x 64 data (host-generated, then copied to the device) on CPU and GPU and
   prints the speed-up.

Results are printed as a table and written to ``$OUT`` (or ``--out``) as ``gpu_bench.json``
and ``gpu_bench.md``, after every phase, so a run stopped by a time limit still leaves what
it measured. ``--cpu-smoke`` runs the same logic on numpy at a tiny size (no GPU needed).

Usage::

    python benchmarks/gpu_bench.py                 # on a machine with cupy and a GPU
    python benchmarks/gpu_bench.py --cpu-smoke     # anywhere: checks the script's logic
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Run from a checkout without installing: the package is one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: SageMaker's headline shape and this benchmark's reference.
HEADLINE = dict(
    rows=23_000_000,
    features=400,
    n_clusters=500,
    components=1000,
    chunk_rows=262_144,
    sample_rows=1_000_000,
    lloyd_passes=20,
    warmup_rows=300_000,
)
#: The CPU vs GPU comparison.
SPEEDUP = dict(rows=2_000_000, features=64, n_clusters=100, components=300, chunk_rows=100_000)
#: Tiny sizes for --cpu-smoke (numpy in place of cupy).
SMOKE = dict(
    rows=40_000,
    features=8,
    n_clusters=8,
    components=12,
    chunk_rows=10_000,
    sample_rows=10_000,
    lloyd_passes=5,
    warmup_rows=10_000,
)
SMOKE_SPEEDUP = dict(rows=20_000, features=8, n_clusters=6, components=10, chunk_rows=5_000)
TARGET_WALL_S = 60.0
TARGET_RATIO = 1.01
SAGEMAKER_S = 7 * 60.0
SEED = 0
#: Elements of a (rows x centers) block in the reference's passes (128 MiB of float32).
BLOCK_ELEMENTS = 1 << 25


# ---------------------------------------------------------------------- backends
def backend(name):
    """The array module ``numpy`` or ``cupy``."""
    if name == "numpy":
        return np
    import cupy

    return cupy


def synchronize(xp):
    if xp is not np:
        xp.cuda.Device().synchronize()


def to_host(x):
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)


# ---------------------------------------------------------------------- data, made on the device
class Mixture:
    """A Gaussian mixture generated block by block on the device of ``backend_name``.

    Block ``i`` is a pure function of (seed, i): the dask array, the reference's passes and
    the sample all see the same rows without ever holding the whole array.
    """

    def __init__(self, rows, features, components, chunk_rows, seed, backend_name):
        from dask_streamkm.datasets import mixture_parameters

        self.rows, self.features, self.chunk_rows = int(rows), int(features), int(chunk_rows)
        self.seed, self.backend_name = int(seed), backend_name
        means, stds, weights = mixture_parameters(features, components, seed)
        self.means = means.astype(np.float32)
        self.stds = stds.astype(np.float32)
        self.cdf = np.cumsum(weights)
        self.chunks = tuple(min(chunk_rows, rows - start) for start in range(0, rows, chunk_rows))

    @property
    def n_blocks(self):
        return len(self.chunks)

    def block(self, index):
        """Rows of block ``index`` (float32, on the device)."""
        return _mixture_block(
            index,
            n=self.chunks[index],
            means=self.means,
            stds=self.stds,
            cdf=self.cdf,
            seed=self.seed,
            backend_name=self.backend_name,
        )

    def dask(self):
        """The whole mixture as a lazy dask array, one task per block, meta of the backend."""
        import dask.array as da

        xp = backend(self.backend_name)
        return da.map_blocks(
            _mixture_task,
            chunks=(self.chunks, (self.features,)),
            dtype=np.float32,
            meta=xp.empty((0, 0), dtype=np.float32),
            name=f"gpu-bench-mixture-{self.backend_name}-{self.rows}-{self.features}-"
            f"{self.means.shape[0]}-{self.chunk_rows}-{self.seed}",
            means=self.means,
            stds=self.stds,
            cdf=self.cdf,
            seed=self.seed,
            backend_name=self.backend_name,
        )


def _mixture_block(index, *, n, means, stds, cdf, seed, backend_name):
    xp = backend(backend_name)
    state = int(np.random.SeedSequence(seed, spawn_key=(7, int(index))).generate_state(1)[0])
    rng = xp.random.default_rng(state)
    cdf_d = xp.asarray(cdf)
    comp = xp.searchsorted(cdf_d, rng.random(n), side="right")
    comp = xp.minimum(comp, cdf_d.shape[0] - 1)
    out = rng.standard_normal((n, means.shape[1]), dtype=np.float32)
    out *= xp.asarray(stds)[comp][:, None]
    out += xp.asarray(means)[comp]
    return out


def _mixture_task(block_info=None, **kwargs):
    index = block_info[None]["chunk-location"][0]
    start, stop = block_info[None]["array-location"][0]
    return _mixture_block(index, n=stop - start, **kwargs)


# ---------------------------------------------------------------------- the reference, plain xp
def _nearest(xp, Xb, centers, centers_sq):
    """Labels and squared distances (float32 GEMM, per row block) of Xb to centers."""
    n, k = Xb.shape[0], centers.shape[0]
    step = max(256, BLOCK_ELEMENTS // max(k, 1))
    labels = xp.empty((n,), dtype=xp.int64)
    dist = xp.empty((n,), dtype=xp.float32)
    for start in range(0, n, step):
        xb = Xb[start : start + step]
        d = xb @ centers.T
        d *= -2.0
        d += centers_sq[None, :]
        lab = xp.argmin(d, axis=1)
        labels[start : start + step] = lab
        best = xp.take_along_axis(d, lab[:, None], axis=1)[:, 0] + (xb * xb).sum(axis=1)
        dist[start : start + step] = xp.maximum(best, 0.0)
    return labels, dist


def exact_inertia(xp, mixture, centers):
    """Sum over all rows of the squared distance to the nearest center (one pass)."""
    c = xp.asarray(centers, dtype=xp.float32)
    c_sq = (c * c).sum(axis=1)
    total = 0.0
    for i in range(mixture.n_blocks):
        _, dist = _nearest(xp, mixture.block(i), c, c_sq)
        total += float(dist.astype(xp.float64).sum())
    return total


def uniform_sample(xp, mixture, n_rows, rng):
    """About ``n_rows`` rows drawn uniformly without replacement across all blocks."""
    parts = []
    for i, size in enumerate(mixture.chunks):
        take = min(size, int(round(n_rows * size / mixture.rows)))
        if take:
            idx = xp.asarray(np.sort(rng.choice(size, take, replace=False)))
            parts.append(mixture.block(i)[idx])
    return xp.concatenate(parts)


def kmeans_plusplus(xp, X, k, rng):
    """Greedy k-means++ (2 + ln k candidates a step, as scikit-learn) on the rows of X."""
    n = X.shape[0]
    trials = 2 + int(math.log(k))
    x_sq = (X * X).sum(axis=1)
    first = int(rng.integers(n))
    centers = [X[first]]
    closest = xp.maximum(x_sq - 2.0 * (X @ X[first]) + x_sq[first], 0.0).astype(xp.float64)
    for _ in range(1, k):
        cum = xp.cumsum(closest)
        u = xp.asarray(rng.random(trials) * float(cum[-1]))
        cand = xp.minimum(xp.searchsorted(cum, u, side="right"), n - 1)
        Xc = X[cand]
        d = x_sq[:, None] - 2.0 * (X @ Xc.T) + x_sq[cand][None, :]
        d = xp.minimum(xp.maximum(d, 0.0).astype(xp.float64), closest[:, None])
        best = int(xp.argmin(d.sum(axis=0)))
        centers.append(Xc[best])
        closest = d[:, best]
    return xp.stack(centers)


def lloyd_passes(xp, mixture, centers, n_passes):
    """Exact Lloyd passes over all rows; empty clusters keep their center."""
    centers = xp.asarray(centers, dtype=xp.float32)
    k, d = centers.shape
    for _ in range(n_passes):
        c_sq = (centers * centers).sum(axis=1)
        sums = xp.zeros((k, d), dtype=xp.float64)
        counts = xp.zeros((k,), dtype=xp.float64)
        ids = xp.arange(k)
        for i in range(mixture.n_blocks):
            Xb = mixture.block(i)
            labels, _ = _nearest(xp, Xb, centers, c_sq)
            step = max(256, BLOCK_ELEMENTS // k)
            for start in range(0, Xb.shape[0], step):
                lab = labels[start : start + step]
                onehot = (lab[:, None] == ids[None, :]).astype(xp.float32)
                sums += (onehot.T @ Xb[start : start + step]).astype(xp.float64)
            counts += xp.bincount(labels, minlength=k).astype(xp.float64)
        new = sums / xp.maximum(counts, 1.0)[:, None]
        centers = xp.where(counts[:, None] > 0, new.astype(xp.float32), centers)
    return centers


# ---------------------------------------------------------------------- phases
def _fit(X, n_clusters, threads):
    import dask

    from dask_streamkm import StreamingKMeans

    km = StreamingKMeans(n_clusters=n_clusters, random_state=SEED)
    with dask.config.set(scheduler="threads", num_workers=threads):
        t0 = time.perf_counter()
        km.fit(X)
        synchronize(backend("numpy" if isinstance(km.cluster_centers_, np.ndarray) else "cupy"))
        return km, time.perf_counter() - t0


def headline(cfg, backend_name, threads, skip_reference, report):
    xp = backend(backend_name)
    # Warm-up on a small array of the same width (compiles the device kernels once).
    warm = Mixture(
        cfg["warmup_rows"],
        cfg["features"],
        cfg["components"],
        cfg["chunk_rows"],
        SEED + 1,
        backend_name,
    )
    _, warm_s = _fit(warm.dask(), cfg["n_clusters"], threads)
    mixture = Mixture(
        cfg["rows"], cfg["features"], cfg["components"], cfg["chunk_rows"], SEED, backend_name
    )
    km, wall = _fit(mixture.dask(), cfg["n_clusters"], threads)
    out = dict(
        backend=backend_name,
        rows=cfg["rows"],
        features=cfg["features"],
        n_clusters=cfg["n_clusters"],
        chunk_rows=cfg["chunk_rows"],
        n_chunks=mixture.n_blocks,
        dask_threads=threads,
        warmup_s=round(warm_s, 3),
        wall_s=round(wall, 3),
        rows_per_s=round(cfg["rows"] / wall, 1),
        summary_groups=km.summary_.n_groups,
        inertia_bound=float(km.inertia_),
        wall_target_s=TARGET_WALL_S,
        speedup_vs_sagemaker_7min=round(SAGEMAKER_S / wall, 2),
    )
    report("headline", out)
    if skip_reference:
        return out
    t0 = time.perf_counter()
    ours = exact_inertia(xp, mixture, km.cluster_centers_)
    out["inertia"] = ours
    out["inertia_pass_s"] = round(time.perf_counter() - t0, 3)
    out["bound_over_inertia"] = round(float(km.inertia_) / ours, 6)
    report("headline", out)
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    sample = uniform_sample(xp, mixture, cfg["sample_rows"], rng)
    seeds = kmeans_plusplus(xp, sample, cfg["n_clusters"], rng)
    del sample
    ref_centers = lloyd_passes(xp, mixture, seeds, cfg["lloyd_passes"])
    synchronize(xp)
    out["reference_s"] = round(time.perf_counter() - t0, 3)
    ref = exact_inertia(xp, mixture, ref_centers)
    out["reference_inertia"] = ref
    out["inertia_ratio"] = round(ours / ref, 5)
    out["ratio_target"] = TARGET_RATIO
    report("headline", out)
    return out


def speedup(cfg, gpu_backend, threads, report):
    """The same host-generated data fitted with numpy chunks and with device chunks."""
    import dask

    mixture = Mixture(
        cfg["rows"], cfg["features"], cfg["components"], cfg["chunk_rows"], SEED + 2, "numpy"
    )
    with dask.config.set(scheduler="threads"):
        X = mixture.dask().persist()
    km_cpu, cpu_s = _fit(X, cfg["n_clusters"], os.cpu_count() or 1)
    xp = backend(gpu_backend)
    Xd = X.map_blocks(xp.asarray, dtype=X.dtype, meta=xp.empty((0, 0), dtype=X.dtype))
    with dask.config.set(scheduler="threads"):
        Xd = Xd.persist()
    synchronize(xp)
    km_gpu, gpu_s = _fit(Xd, cfg["n_clusters"], threads)
    out = dict(
        rows=cfg["rows"],
        features=cfg["features"],
        n_clusters=cfg["n_clusters"],
        cpu_threads=os.cpu_count(),
        cpu_s=round(cpu_s, 3),
        gpu_backend=gpu_backend,
        gpu_s=round(gpu_s, 3),
        speedup=round(cpu_s / gpu_s, 2),
        cpu_inertia_bound=float(km_cpu.inertia_),
        gpu_inertia_bound=float(km_gpu.inertia_),
        max_center_diff=float(
            np.abs(to_host(km_gpu.cluster_centers_) - km_cpu.cluster_centers_).max()
        ),
    )
    report("speedup", out)
    return out


# ---------------------------------------------------------------------- reporting
def machine(backend_name):
    info = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        numpy=np.__version__,
    )
    try:
        import dask

        info["dask"] = dask.__version__
    except ImportError:
        pass
    if backend_name == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["card"] = name.decode() if isinstance(name, bytes) else str(name)
        info["gpu_memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["cupy"] = cupy.__version__
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    else:
        info["card"] = "none (numpy smoke run)"
    return info


def markdown(results):
    m = results["machine"]
    lines = [
        f"GPU benchmark, {m['card']}, {m['date']} (cupy {m.get('cupy', '-')}, "
        f"dask {m.get('dask', '-')}, {m['cpu_count']} CPU cores)",
        "",
        "| measure | value | target |",
        "|---|---|---|",
    ]
    h = results.get("headline")
    if h:
        shape = f"{h['rows']:,} x {h['features']}, k={h['n_clusters']}"
        lines += [
            f"| headline shape | {shape}, {h['n_chunks']} chunks of {h['chunk_rows']:,} | |",
            f"| fit wall time | {h['wall_s']:.1f} s | <= {TARGET_WALL_S:.0f} s |",
            f"| rows/s | {h['rows_per_s']:,.0f} | |",
            f"| vs SageMaker's 7 min | {h['speedup_vs_sagemaker_7min']:.1f}x faster | >= 7x |",
        ]
        if "inertia_ratio" in h:
            lines += [
                f"| inertia ratio vs GPU reference | {h['inertia_ratio']:.4f} | "
                f"<= {TARGET_RATIO} |",
                f"| reference (k-means++ on sample + Lloyd passes) | {h['reference_s']:.1f} s | |",
            ]
    s = results.get("speedup")
    if s:
        lines += [
            f"| {s['rows']:,} x {s['features']}, k={s['n_clusters']}: CPU fit | "
            f"{s['cpu_s']:.2f} s ({s['cpu_threads']} threads) | |",
            f"| same data: GPU fit | {s['gpu_s']:.2f} s | |",
            f"| GPU speed-up | {s['speedup']:.1f}x | |",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="numpy in place of cupy, tiny sizes: checks the logic anywhere",
    )
    parser.add_argument(
        "--out",
        default=os.environ.get("OUT"),
        help="folder for gpu_bench.json and gpu_bench.md (default: $OUT)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="dask threads feeding the GPU (default 2)"
    )
    parser.add_argument("--rows", type=int, default=None, help="headline rows (default 23M)")
    parser.add_argument(
        "--skip-reference", action="store_true", help="no GPU reference (no inertia ratio)"
    )
    parser.add_argument("--skip-speedup", action="store_true", help="no CPU vs GPU comparison")
    args = parser.parse_args(argv)

    gpu_backend = "numpy" if args.cpu_smoke else "cupy"
    cfg = dict(SMOKE if args.cpu_smoke else HEADLINE)
    speed_cfg = dict(SMOKE_SPEEDUP if args.cpu_smoke else SPEEDUP)
    if args.rows:
        cfg["rows"] = int(args.rows)
    results = {"machine": machine(gpu_backend)}
    out_dir = Path(args.out) if args.out else None

    def report(key, value):
        results[key] = value
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {json.dumps(value)}", flush=True)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "gpu_bench.json").write_text(json.dumps(results, indent=2) + "\n")
            (out_dir / "gpu_bench.md").write_text(markdown(results))

    report("machine", results["machine"])
    headline(cfg, gpu_backend, args.threads, args.skip_reference, report)
    if not args.skip_speedup:
        speedup(speed_cfg, gpu_backend, args.threads, report)
    print()
    print(markdown(results))
    h = results["headline"]
    ok = h["wall_s"] <= TARGET_WALL_S and h.get("inertia_ratio", 0.0) <= TARGET_RATIO
    print(
        f"targets {'met' if ok else 'NOT met'} (wall <= {TARGET_WALL_S:.0f} s, "
        f"ratio <= {TARGET_RATIO})",
        flush=True,
    )
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
