"""Sums of rows by label into a work buffer: the sparse indicator's product, bit for bit.

The leaves sum their rows by group with a sparse (groups x rows) indicator times the rows
(:func:`._array.segment_sum`, :func:`._lloyd.weighted_indicator`). Built from (label,
position) pairs, scipy converts the pairs through COO, sorts every row's positions and makes
a fresh result: on a worker with glibc's mmap threshold fixed (distributed's nanny sets
``MALLOC_TRIM_THRESHOLD_``) those were a fifth of a leaf's fresh pages. Here the same
matrix, taken column by column (CSC: the labels and weights as they are, no sort), is
multiplied into a zeroed work buffer by scipy's own kernel: the same additions in the same
order, so the same sums bit for bit. Host numpy arrays only.
"""

from __future__ import annotations

import numpy as np

from ._array import csc_matvecs, segment_sum


def indicator_sums(labels, weights, k, rows, work, name, positions=None):
    """``weighted_indicator(labels, weights, k, positions, len(rows)) @ rows`` bit for bit:
    (k, t) sums in ``rows``' dtype, in the buffer ``name`` of ``work`` (a
    :class:`._distances.Workspace`; valid until its next use).

    The indicator is taken column by column (CSC: column p holds the weight of the row at
    position p at its label), so nothing is sorted: scipy's CSR product adds each label's
    rows in increasing position, and the CSC product adds them as it meets them, in
    increasing position too, with the same ``y += w * x`` on each. ``rows`` (n_rows, t);
    ``labels`` int64; ``weights`` of ``rows``' dtype; ``positions`` (default
    ``0 .. len(labels) - 1``) strictly increasing. Labels in ``[0, k)``."""
    if csc_matvecs is None or weights.dtype != rows.dtype or labels.dtype != np.int64:
        from ._lloyd import weighted_indicator

        n_rows = rows.shape[0] if positions is not None else None
        product = weighted_indicator(labels, weights, k, positions, n_rows) @ rows
        out = work.take(name, product.shape, product.dtype)
        out[...] = product
        return out
    n_rows = rows.shape[0]
    # Column pointers: one entry in each column that holds a row.
    indptr = work.take(name + ":indptr", (n_rows + 1,), np.int64)
    if positions is None:
        indptr[0] = 0
        indptr[1:].fill(1)
    else:
        indptr.fill(0)
        indptr[1:][positions] = 1
    np.cumsum(indptr, out=indptr)
    out = work.zeros(name, (k, rows.shape[1]), rows.dtype)
    labels = np.ascontiguousarray(labels)
    weights = np.ascontiguousarray(weights)
    rows = np.ascontiguousarray(rows)
    csc_matvecs(k, n_rows, rows.shape[1], indptr, labels, weights, rows.ravel(), out.ravel())
    return out


def segment_sum_into(values, labels, k, work, name):
    """:func:`._array.segment_sum` of host ``values`` (n, d) float64, bit for bit, its sparse
    product's result in the buffer ``name`` of ``work`` (few columns: segment_sum's own
    bincounts, a fresh small array)."""
    n, d = values.shape
    if d <= 4 or (d <= 8 and n <= 16384):
        return segment_sum(values, labels, k)
    ones = work.take(name + ":ones", (n,), values.dtype)
    ones.fill(1)
    return indicator_sums(labels, ones, k, values, work, name)
