"""Shared test helpers: ten-line numpy references and an array that counts its reads.

Test files import from here, never from one another.
"""

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import dask.array as da
import numpy as np
from dask.callbacks import Callback

from dask_streamkm import _graph, _waves
from dask_streamkm._gdelt import GDELT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: Secret key of the test S3 server (conftest.s3_server): no message may show it.
S3_SECRET = "s3-test-secret-4f9c1e"


def flaky_s3_options(server):
    """storage_options for a second moto ``server`` (one a test stops): one try, 1 s timeouts."""
    host, port = server.get_host_and_port()
    return {
        "key": "testing",
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }


# ---------------------------------------------------------------------- numpy references
def sq_distances(X, C):
    """Squared distances of every row of X to every row of C, (n, m) float64, by broadcasting."""
    return ((np.asarray(X, dtype=np.float64)[:, None, :] - np.asarray(C)[None, :, :]) ** 2).sum(2)


def nearest(X, C):
    """Index of and squared distance to the nearest row of C for each row of X."""
    d = sq_distances(X, C)
    labels = d.argmin(axis=1)
    return labels, d[np.arange(len(d)), labels]


def true_cost(X, centers, w=None):
    """Weighted sum of squared distances of the rows of X to their nearest center."""
    d = sq_distances(X, centers).min(axis=1)
    return float(np.sum(d if w is None else w * d))


def by_row(A, *others):
    """A (and arrays aligned with it) in sorted row order: compare groups order-free."""
    order = np.lexsort(np.asarray(A).T[::-1])
    return (A[order], *(o[order] for o in others))


# ---------------------------------------------------------------------- counting reads
class CountingArray:
    """An array-like over an array (numpy, zarr) that counts the reads of each row block.

    ``reads`` maps the first row of each read to the number of reads; a read of zero rows
    (dask slices one to learn the meta) reads nothing and is not counted.
    """

    def __init__(self, array):
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.reads = {}
        self._lock = threading.Lock()

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) else key
        if isinstance(rows, slice) and (rows.stop or 0) > (rows.start or 0):
            with self._lock:
                self.reads[rows.start or 0] = self.reads.get(rows.start or 0, 0) + 1
        return self.array[key]

    @property
    def n_reads(self):
        """Reads of every row block together."""
        return sum(self.reads.values())


def mixture_store(tmp_path, n_rows):
    """A zarr store of ``make_mixture(n_rows, 6, 12, chunks=1_000, random_state=3)``; its path."""
    from dask_streamkm.datasets import make_mixture

    path = tmp_path / "x.zarr"
    make_mixture(n_rows, 6, 12, chunks=1_000, random_state=3).to_zarr(str(path))
    return path


def counting_like(X, array):
    """The dask array X read through a CountingArray (same name, so same checkpoint key)."""
    counter = CountingArray(array)
    return da.from_array(counter, chunks=X.chunks, name=X.name, asarray=True), counter


@contextlib.contextmanager
def local_cluster_client():
    """A Client of a real LocalCluster of two one-thread worker processes (no dashboards)."""
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


# ---------------------------------------------------------------------- examples
def run_example(name, *args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["MPLBACKEND"] = "Agg"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--small", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


# ---------------------------------------------------------------------- GDELT event files
def event_row(i, code, articles, tone, a1=(10.5, 20.25), a2=(-5.0, 30.0), source_url=None):
    """One tab-separated GDELT 1.0 event line (57 fields, 58 with a source URL)."""
    f = dict.fromkeys(GDELT_COLUMNS, "")
    f.update(
        GLOBALEVENTID=str(1000 + i),
        SQLDATE="19790101",
        MonthYear="197901",
        Year="1979",
        FractionDate="1979.0027",
        Actor1Code="USA",
        Actor1Name="UNITED STATES",
        Actor1CountryCode="USA",
        Actor2Code="NA",
        Actor2Name="NAMIBIA",
        IsRootEvent="1",
        EventCode=code,
        EventBaseCode=code[:3],
        EventRootCode=code[:2],
        QuadClass="1",
        GoldsteinScale="1.5",
        NumMentions="3",
        NumSources="1",
        NumArticles=str(articles),
        AvgTone=str(tone),
        Actor1Geo_Type="4",
        Actor1Geo_FullName="Somewhere, a place",
        Actor2Geo_Type="1",
        ActionGeo_Type="0",
        DATEADDED="20130203",
    )
    f["Actor1Geo_Lat"], f["Actor1Geo_Long"] = (str(v) for v in a1)
    f["Actor2Geo_Lat"], f["Actor2Geo_Long"] = (str(v) for v in a2)
    fields = [f[c] for c in GDELT_COLUMNS]
    if source_url is not None:
        fields.append(source_url)
    return "\t".join(fields)


# code, articles, tone, actor1 location, actor2 location
ROWS = [
    ("010", 2, -1.25, (10.5, 20.25), (-5.0, 30.0)),
    ("010", 4, 3.5, (1.0, 2.0), (3.0, 4.0)),
    ("042", 6, 0.0, (7.0, 8.0), (9.0, 10.0)),
    ("010", 8, -2.0, (0, 0), (3.0, 4.0)),  # actor 1 at (0, 0): dropped
    ("042", 1, 1.0, (5.0, 6.0), (0, 0)),  # actor 2 at (0, 0): dropped
    ("190", 3, 2.0, (0, 6.0), (5.0, 0)),  # only one coordinate 0: kept
    ("0211", 5, -3.0, (1.5, 2.5), (3.5, 4.5)),  # the rarest code
    ("042", 7, 4.0, ("", ""), (3.0, 4.0)),  # blank location: dropped (no NaN in k-means)
    ("010", 9, 0.5, (-1.0, -2.0), (-3.0, -4.0)),
]


# ---------------------------------------------------------------------- graph sizes
class GraphSizes(Callback):
    """Tasks of every graph a local scheduler runs (``sizes``, one entry per compute)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def _start(self, dsk):
        self.sizes.append(len(dsk))


def summary_graph(X, sample_weight, **params):
    """A delayed Summary of the dask array X in one graph (no waves), for the
    :class:`dask_streamkm._graph.SummaryParams` ``params``; ``fit_summary`` computes the same
    summary in waves of bounded size."""
    params = _graph.SummaryParams(**params)
    graph, _ = _waves.wave_graph(
        X,
        sample_weight,
        0,
        X.numblocks[0],
        levels=0,
        row_starts=_waves.row_starts(X),
        spec=params.reduction(),
        split_every=params.split_every,
    )
    return graph
