"""
Labelled arrays: k-means over an xarray Dataset in a zarr store
===============================================================

Gridded data (climate, remote sensing) usually lives in a zarr store read with
``xarray.open_zarr``: several variables over (time, lat, lon), every one a lazy dask array.
This example writes such a store, turns its variables into the features of one
(sample, variable) DataArray with :func:`dask_streamkm.io.dataset_to_array` (nothing is read),
fits :class:`~dask_streamkm.StreamingKMeans` in one pass, and gets the labels back as a
lazy DataArray over the grid, with its coordinates, written to the store next to the data.

Run it as ``python examples/xarray_zarr.py`` (about 100 MB on disk in a temporary directory)
or with ``--small``; ``--dir PATH`` keeps the store in PATH.
"""

# %%
# Settings
# --------
import argparse
import os
import tempfile

import dask.array as da
import numpy as np
import xarray as xr
from sklearn.metrics import adjusted_rand_score

from dask_streamkm import StreamingKMeans
from dask_streamkm.io import dataset_to_array

parser = argparse.ArgumentParser(description="k-means over an xarray Dataset in zarr")
parser.add_argument("--small", action="store_true", help="a small grid, for a quick run")
parser.add_argument("--dir", default=None, help="where to write the store (default: a temp dir)")
args, _ = parser.parse_known_args()
n_time, n_lat, n_lon = (24, 20, 30) if args.small else (365, 90, 120)
tmp = None if args.dir else tempfile.TemporaryDirectory()
folder = args.dir or tmp.name
os.makedirs(folder, exist_ok=True)
store = os.path.join(folder, "weather.zarr")

# %%
# A store of three variables over (time, lat, lon)
# ------------------------------------------------
# Four "regimes" of temperature, humidity and pressure, patched over the grid; each variable
# is written chunk by chunk (one chunk of 30 days).
rng = np.random.default_rng(0)
regimes = np.array([[25.0, 80, 1005], [5.0, 60, 1025], [15.0, 40, 1015], [-5.0, 85, 995]])
shape, chunks = (n_time, n_lat, n_lon), (30, n_lat, n_lon)
regime = rng.integers(0, 4, (n_lat, n_lon))  # the regime of each grid cell
noise = da.random.default_rng(1).standard_normal((3, *shape), chunks=(1, *chunks))
names = [("temperature", 3.0), ("humidity", 5.0), ("pressure", 4.0)]
variables = {
    name: (("time", "lat", "lon"), regimes[regime, i] + scale * noise[i])
    for i, (name, scale) in enumerate(names)
}
coords = {
    "time": np.arange(n_time),
    "lat": np.linspace(-60, 60, n_lat),
    "lon": np.linspace(0, 357, n_lon),
}
xr.Dataset(variables, coords=coords).to_zarr(store, mode="w", consolidated=False)
print(f"wrote {store}: {n_time * n_lat * n_lon:,} grid points x 3 variables")

# %%
# Open lazily and stack the grid into samples
# -------------------------------------------
# ``open_zarr`` gives dask-backed variables; ``dataset_to_array`` makes them the features of
# a (sample, variable) DataArray, the sample dim stacking (time, lat, lon). Still nothing read.
ds = xr.open_zarr(store, consolidated=False)
X = dataset_to_array(ds, variables=["temperature", "humidity", "pressure"])
print(
    f"X: dims {X.dims}, shape {X.shape}, {X.data.numblocks[0]} chunks, lazy: {X.chunks is not None}"
)

# %%
# Fit in one pass; labels come back labelled and lazy
# ---------------------------------------------------
km = StreamingKMeans(n_clusters=4, random_state=0).fit(X)
print("feature names:", km.feature_names_in_.tolist())
labels = km.predict(X)  # a lazy DataArray over the sample dim, with its coordinates
print(f"labels: {type(labels).__name__} over {labels.dims}, lazy: {labels.chunks is not None}")

# %%
# Back on the grid, and into the store
# ------------------------------------
# ``unstack`` turns the sample dim back into (time, lat, lon); the labels are written next to
# the variables (computed chunk by chunk as they are written).
grid = labels.unstack("sample").transpose("time", "lat", "lon").astype("int8")
grid.to_dataset(name="regime").chunk({"time": 30}).to_zarr(store, mode="a", consolidated=False)
back = xr.open_zarr(store, consolidated=False)["regime"]
day0 = back.isel(time=0).values
ari = adjusted_rand_score(regime.ravel(), day0.ravel())
print(f"regime written: dims {back.dims}; day 0 against the true regimes: ARI {ari:.3f}")
if tmp is not None:
    tmp.cleanup()
