"""What the benchmarks share: data, exact cost, peak memory and cached references.

- :func:`mixture` is the synthetic Zipf mixture in memory (``make_mixture(...).compute()``);
  real data sets that ship in packages are in :mod:`datasets_real`.
- :func:`exact_cost` is the true k-means cost of a set of centers over every row, computed
  with the library's own distance kernel (``dask_streamkm._distances.nearest``) in float64.
- :class:`PeakRSS` samples this process's resident memory during a block; :func:`run_measured`
  runs a command and samples its whole process tree.
- :func:`reference` fits ``sklearn.cluster.KMeans`` once per case and caches the result as
  ``kmeans-ref-{case}[-n_init{n}]-sklearn{version}.json`` in the cache folder's ``bench``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Rows per chunk of the benchmarks' dask arrays.
CHUNK_ROWS = 100_000


# --------------------------------------------------------------------------- data


def mixture(n_rows, n_features, n_components, *, seed=0, sorted_rows=False, chunk_rows=CHUNK_ROWS):
    """The synthetic Zipf mixture of :func:`dask_streamkm.datasets.make_mixture`, in memory."""
    from dask_streamkm.datasets import make_mixture

    return make_mixture(
        n_rows,
        n_features,
        n_components,
        chunks=chunk_rows,
        random_state=seed,
        sorted_by_component=sorted_rows,
    ).compute()


# --------------------------------------------------------------------------- cost


def exact_cost(X, centers, block=65536, weights=None):
    """Sum over all rows of X of the (weighted) squared distance to the nearest center, in
    float64.

    X: a numpy array or a dask array (computed one chunk at a time); ``weights``: None or one
    weight a row (a numpy array). The distances come from the library's kernel on float64
    copies of each block of rows and of the centers.
    """
    from dask_streamkm._distances import nearest

    centers = np.ascontiguousarray(centers, dtype=np.float64)
    if hasattr(X, "to_delayed"):  # dask: one chunk in memory at a time
        starts = np.cumsum((0, *X.chunks[0]))
        return sum(
            exact_cost(
                np.asarray(part.compute()),
                centers,
                block,
                None if weights is None else weights[starts[i] : starts[i + 1]],
            )
            for i, part in enumerate(X.blocks)
        )
    total = 0.0
    for start in range(0, X.shape[0], block):
        rows = np.ascontiguousarray(X[start : start + block], dtype=np.float64)
        dist = nearest(rows, centers)[1]
        total += float(dist.sum() if weights is None else dist @ weights[start : start + block])
    return total


# --------------------------------------------------------------------------- memory


def trim_heap():
    """Give freed heap pages back to the OS (glibc only), so one method's garbage does not
    sit in the next method's baseline."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak resident memory of this process while the block runs, above the RSS at entry.

    A daemon thread samples ``psutil.Process().memory_info().rss`` every ``interval`` seconds
    (the GIL is released by BLAS, dask's workers and faiss, so it keeps sampling during fits).
    """

    def __init__(self, interval=0.01):
        import psutil

        self.interval = interval
        self._proc = psutil.Process()

    def __enter__(self):
        trim_heap()
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.increase = self.peak - self.baseline
        return False


def tree_rss(proc):
    """Resident bytes of a process and all its children (0 for those that just ended)."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(cmd, interval=0.05):
    """Run ``cmd``; returns (exit status, seconds, peak tree RSS in bytes, stdout, stderr)."""
    import psutil

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        proc, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                peak = max(peak, tree_rss(proc))
            except psutil.Error:
                pass
            time.sleep(interval)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return child.returncode, seconds, peak, out.read(), err.read()


# --------------------------------------------------------------------------- references


def reference_path(name, n_init=10):
    """The cache file of case ``name``'s KMeans(n_init) reference for this sklearn."""
    import sklearn

    from dask_streamkm.datasets import cache_dir

    suffix = "" if n_init == 10 else f"-n_init{n_init}"
    return cache_dir() / "bench" / f"kmeans-ref-{name}{suffix}-sklearn{sklearn.__version__}.json"


def reference(name, X, k, reuse, n_init=10, verbose=0):
    """``KMeans(n_clusters=k, n_init=n_init, random_state=0)`` on X: its exact cost
    ("inertia"), iterations and seconds, cached per case; with ``reuse`` a cached result is
    returned as it is (``"cached": True``)."""
    from sklearn.cluster import KMeans

    path = reference_path(name, n_init)
    if reuse and path.exists():
        out = json.loads(path.read_text())
        out["cached"] = True
        return out
    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=n_init, random_state=0, verbose=verbose).fit(X)
    out = {
        "n_init": n_init,
        "n_iter": int(km.n_iter_),
        "inertia": exact_cost(X, km.cluster_centers_),
        "seconds": time.perf_counter() - t0,
        "cached": False,
        "date": date.today().isoformat(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out
