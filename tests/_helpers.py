"""Shared test helpers: ten-line numpy references and an array that counts its reads.

Test files import from here, never from one another.
"""

import threading

import dask.array as da
import numpy as np


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


def counting_like(X, array):
    """The dask array X read through a CountingArray (same name, so same checkpoint key)."""
    counter = CountingArray(array)
    return da.from_array(counter, chunks=X.chunks, name=X.name, asarray=True), counter
