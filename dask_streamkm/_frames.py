"""Tables and labelled arrays in and out of the estimator, without computing them.

The input layer of :class:`~dask_streamkm.StreamingKMeans`: a dask or pandas DataFrame, a
one-column dask Series or an xarray DataArray becomes an array and a description of where
it came from (:class:`Rows`): its feature names, for scikit-learn's ``feature_names_in_``
checks, and its index or coordinates, which put labels and distances back into the input's
own container (a lazy dask Series or DataFrame, a labelled DataArray). Nothing here reads
data, except the partition lengths of a dask DataFrame whose lengths neither its metadata nor
its graph knows (:func:`partition_lengths`). pandas, dask.dataframe and xarray are imported
only when the input is one of theirs: the package imports without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: The values of ``set_output(transform=...)``, as scikit-learn's.
OUTPUTS = ("default", "pandas", "polars")


def _module(X):
    return type(X).__module__.split(".")[0]


def is_dask_frame(X):
    """True for a dask DataFrame or Series (checked without importing dask.dataframe)."""
    return type(X).__module__.startswith("dask.dataframe") and hasattr(X, "npartitions")


def is_xarray(X):
    """True for an xarray DataArray."""
    return _module(X) == "xarray" and type(X).__name__ == "DataArray"


def is_pandas_frame(X):
    """True for a pandas DataFrame."""
    return _module(X) == "pandas" and type(X).__name__ == "DataFrame"


def is_lazy_table(X):
    """True for tables whose results stay lazy: dask DataFrames and dask-backed DataArrays."""
    if is_dask_frame(X):
        return True
    return is_xarray(X) and type(X.data).__module__.startswith("dask")


@dataclass(frozen=True)
class Rows:
    """Where the rows of an input came from: its container, feature names and row labels.

    ``kind`` is ``"array"`` (numpy, dask, zarr... given as they are), ``"pandas"``,
    ``"dask"`` (a dask DataFrame or Series) or ``"xarray"``. ``names`` is an empty pandas
    DataFrame whose columns are the input's feature names (for scikit-learn's
    ``validate_data(..., skip_check_array=True)``), or None when the input has none.
    ``source`` is the input itself (its index or coordinates label the outputs);
    ``lengths``, for a dask DataFrame, the rows of its partitions.
    """

    kind: str = "array"
    source: object = None
    names: object = None
    lengths: tuple = ()

    def labels(self, labels):
        """``labels`` (a 1-D numpy or dask array, one per row) in the input's container."""
        if self.kind == "dask":
            import dask.dataframe as dd

            return dd.from_dask_array(self._by_partition(labels), index=self.source.index)
        if self.kind == "xarray":
            return _data_array(self.source, labels, (self.source.dims[0],), name="labels")
        return labels

    def distances(self, distances, columns, output):
        """``distances`` (n_samples, n_clusters) as ``set_output(transform=output)`` asks.

        "default": the input's container (a lazy dask DataFrame of ``columns`` for a dask
        DataFrame, a DataArray over the sample dim and ``"cluster"`` for xarray, an array
        otherwise, as scikit-learn returns for pandas); "pandas": a pandas DataFrame of
        ``columns`` (with the input's index), or a lazy dask DataFrame when the result is
        lazy; "polars": a polars DataFrame of an in-memory result.
        """
        lazy = type(distances).__module__.startswith("dask")
        columns = [str(c) for c in columns]
        if output == "default":
            if self.kind == "dask":
                return self._dask_frame(distances, columns)
            if self.kind == "xarray":
                dims = (self.source.dims[0], "cluster")
                return _data_array(self.source, distances, dims, name="distances")
            return distances
        if output == "pandas":
            if lazy:
                return self._dask_frame(distances, columns)
            import pandas as pd

            index = self.source.index if self.kind == "pandas" else None
            return pd.DataFrame(np.asarray(distances), columns=columns, index=index)
        if lazy:
            raise ValueError(
                f"set_output(transform={output!r}) cannot hold a lazy result (the input is a "
                "dask collection); use set_output(transform='pandas') for a lazy dask "
                "DataFrame, or compute the input first."
            )
        try:
            import polars as pl
        except ImportError as err:
            raise ImportError(
                "set_output(transform='polars') needs polars, which is not installed: "
                "pip install polars, or use set_output(transform='pandas')."
            ) from err
        return pl.DataFrame(np.asarray(distances), schema=columns, orient="row")

    def _dask_frame(self, distances, columns):
        import dask.dataframe as dd

        if self.kind != "dask":
            return dd.from_dask_array(distances, columns=columns)
        distances = self._by_partition(distances)
        return dd.from_dask_array(distances, columns=columns, index=self.source.index)

    def _by_partition(self, array):
        """A result of the input's rows in chunks of its partitions (parts joined again)."""
        if array.chunks[0] == self.lengths:
            return array
        return array.rechunk({0: self.lengths})


def _data_array(source, values, dims, name):
    """A DataArray of ``values`` over ``dims`` with the coordinates of ``source`` that lie
    along its first (sample) dim (a stacked sample dim keeps its MultiIndex)."""
    import xarray as xr

    template = source.isel({source.dims[1]: 0}, drop=True)
    return xr.DataArray(values, dims=dims, coords=template.coords, name=name)


def _names_frame(columns):
    """An empty pandas DataFrame with ``columns``: what scikit-learn reads feature names from."""
    import pandas as pd

    return pd.DataFrame(columns=pd.Index(list(columns), dtype=object))


def _is_numeric(dtype):
    import pandas as pd

    return pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)


def check_numeric_columns(dtypes, what="X"):
    """Refuse a table with non-numeric columns, naming them (``dtypes``: a pandas Series)."""
    bad = {str(c): str(t) for c, t in dtypes.items() if not _is_numeric(t)}
    if bad:
        listed = ", ".join(f"{c!r} ({t})" for c, t in bad.items())
        numeric = [str(c) for c, t in dtypes.items() if _is_numeric(t)]
        if not numeric:  # nothing to select: the columns must be converted
            raise ValueError(
                f"{what} has no numeric columns: {listed}; k-means needs numbers. Convert "
                f"them first, e.g. {what}.astype(float) for numbers stored as text, or encode "
                "them."
            )
        raise ValueError(
            f"{what} has non-numeric columns: {listed}; k-means needs numbers. Select the "
            f"numeric ones, e.g. {what}[{numeric}], or encode the others first."
        )


def _float_columns(frame):
    """``frame`` with pandas extension dtypes (nullable Int64, Float64, boolean) as numpy
    float64, their missing values as NaN (which the per-chunk checks then refuse)."""
    import pandas as pd

    extension = [
        c for c, t in frame.dtypes.items() if isinstance(t, pd.api.extensions.ExtensionDtype)
    ]
    if not extension:
        return frame
    return frame.astype({c: "float64" for c in extension})


def _bools_as_numbers(frame):
    """``frame`` with its bool columns as the other columns' common dtype when it has both
    (a dask DataFrame of bool and float columns is otherwise an object array, as
    ``to_dask_array`` makes it); pandas frames are converted by scikit-learn's checks."""
    dtypes = [np.dtype(t) for t in frame.dtypes]
    bools = [c for c, t in zip(frame.columns, dtypes, strict=True) if t == np.bool_]
    if not bools or len(bools) == len(dtypes):
        return frame
    common = np.result_type(*dtypes)
    return frame.astype({c: common for c in bools})


def _object_numbers(frame):
    """A pandas ``frame`` with its object columns as float64 when every one of them holds
    numbers, as scikit-learn's ``check_array`` converts them; otherwise unchanged, for
    :func:`check_numeric_columns` to name them."""
    objects = [c for c, t in frame.dtypes.items() if t == np.dtype(object)]
    if not objects:
        return frame
    try:
        return frame.astype({c: np.float64 for c in objects})
    except (TypeError, ValueError):
        return frame


def untuned():
    """A context in which dask reads a DataFrame in the partitions it reports.

    dask's tuning step (``optimization.tune.active``) squashes the partitions of a Parquet
    read that selects some of its columns (``dd.read_parquet(path)[["x", "y"]]``) when a
    graph is made, while ``npartitions`` and the lengths from the footers still count them
    one by one: the dask array made of such a frame had more chunks than its graph
    ("Missing dependency" errors). The array's graph is made in this context, so its chunks
    are the partitions counted.
    """
    import dask

    return dask.config.set({"optimization.tune.active": False})


def partition_lengths(frame):
    """The number of rows of each partition of a dask DataFrame.

    From metadata where dask knows them without reading rows: Parquet footers (a
    ``read_parquet`` frame without filters), pandas frames, and column selections or
    element-wise operations on those. Otherwise each partition is computed once more and
    counted, one partition per task (memory stays that of a partition). The fast path uses
    dask-expr's ``Lengths`` expression, which has no public name; where it is missing, the
    lengths are counted. Metadata lengths are used only when there is one per partition:
    dask-expr can answer a selection of partitions (``frame.partitions[i]``) with the lengths
    of every partition of its source once those were computed.
    """
    try:
        from dask.dataframe.dask_expr._expr import Lengths, Literal

        expr = Lengths(frame.expr).optimize(fuse=False)
        if isinstance(expr, Literal) and len(expr.value) == frame.npartitions:
            return tuple(int(n) for n in expr.value)
    except (ImportError, AttributeError, TypeError):
        pass
    return tuple(int(n) for n in frame.map_partitions(len).compute())


def column_array(values):
    """``values`` as an array: a dask Series (or one-column DataFrame) becomes a dask array
    with its partitions as chunks, a DataArray its data; anything else is unchanged."""
    if is_dask_frame(values):
        frame = values.to_frame() if values.ndim == 1 else values
        frame = _float_columns(frame)
        with untuned():
            array = frame.to_dask_array(lengths=partition_lengths(frame))
        return array[:, 0] if array.shape[1] == 1 else array
    if is_xarray(values):
        return values.data
    return values


def to_array(X, what="X"):
    """``(array, Rows)``: X as an array of rows, and where it came from.

    A dask DataFrame becomes a dask array with its partitions as row chunks (lengths by
    :func:`partition_lengths`; a partition whose summarize task would take more than Dask's
    ``array.chunk-size`` is split into equal parts), a one-column dask Series a one-column
    one; a DataArray its
    ``data`` (dims: sample, then feature); a pandas DataFrame stays as it is (scikit-learn's
    ``validate_data`` reads it) after its dtypes are checked; anything else is returned as is.
    A path (``str``, ``bytes`` or ``os.PathLike``) is refused with the call that opens it.
    """
    if isinstance(X, (str, bytes, os.PathLike)):
        raise ValueError(
            f"{what} is a path or string ({X!r}), not an array of rows. Open a zarr store, "
            f".npy file or Parquet file lazily with dask_streamkm.io.open_array({X!r}) and "
            "pass the array it returns (or run `dask-streamkm fit` on it from the command line)."
        )
    if is_dask_frame(X):
        from ._memory import rows_per_task, split_rows, target_chunk_bytes

        # Optimized first, so that the array and the index of the outputs come from one
        # expression: dask could not compute a dask array of a repartitioned frame put back
        # on that frame's index (a "Missing dependency" error).
        with untuned():
            X = X.optimize(fuse=False) if hasattr(X, "optimize") else X
            frame = X.to_frame() if X.ndim == 1 else X
            check_numeric_columns(frame.dtypes, what)
            frame = _bools_as_numbers(_float_columns(frame))
            lengths = partition_lengths(frame)
            array = frame.to_dask_array(lengths=lengths)
        # Partitions larger than a summarize task of array.chunk-size are summarized in
        # parts (slices of the partition, read once), so that memory stays that of a task.
        rows = rows_per_task(target_chunk_bytes(), array.shape[1], array.dtype)
        if max(lengths, default=0) > rows:
            array = array.rechunk({0: split_rows(lengths, rows)})
        return array, Rows("dask", X, _names_frame(frame.columns), lengths)
    if is_xarray(X):
        if X.ndim != 2:
            raise ValueError(
                f"{what} is an xarray.DataArray with dims {X.dims}; expected 2 dims "
                "(sample, feature). Choose them with X.transpose(SAMPLE_DIM, FEATURE_DIM), or "
                "stack several sample dims into one with "
                "dask_streamkm.io.stack_samples(X, feature_dim=...)."
            )
        feature = X.dims[1]
        names = None
        if feature in X.coords:
            values = list(X.coords[feature].values)
            if values and all(isinstance(v, str) for v in values):
                names = _names_frame([str(v) for v in values])
        return X.data, Rows("xarray", X, names)
    if _module(X) == "xarray":  # a Dataset
        raise ValueError(
            f"{what} is an xarray.{type(X).__name__}; pass a DataArray of dims (sample, "
            "feature). dask_streamkm.io.dataset_to_array(ds) stacks a Dataset's variables as "
            "the features."
        )
    if is_pandas_frame(X):
        if X.shape[1] == 0:  # pandas' conversion of no columns fails on numpy's result_type
            raise ValueError(
                f"0 feature(s) (shape={X.shape}) while a minimum of 1 is required; {what} is "
                "a DataFrame with no columns. Select at least one numeric column."
            )
        X = _object_numbers(X)
        check_numeric_columns(X.dtypes, what)
        return X, Rows("pandas", X, None)
    return X, Rows()


def numpy_chunks(X, chunk_rows, hashed=True):
    """A host numpy X (2-D) as a dask array of row chunks of at most ``chunk_rows`` rows, each
    a read-only view of X: no copy of the rows.

    ``da.from_array`` copies its input whole first (``x.copy()``, so that a later change of
    the array cannot reach a lazy graph): the peak memory of a fit on an in-memory array was
    twice the array, and the copy's fresh pages cost 0.08 s for MNIST's 219 MB warm (seconds
    where the pages had been given back). The library computes every pass over a numpy input
    within the call that made it (its results are numpy too), so no graph outlives the rows;
    the views are read-only, so no task can write into the caller's array. ``hashed``: the
    graph's name is a hash of the rows and their chunks (a checkpoint's key), else random.
    """
    step = max(1, int(chunk_rows))
    n = X.shape[0]
    row_chunks = tuple(min(step, n - a) for a in range(0, n, step)) or (0,)
    return numpy_views(X, row_chunks, hashed)


def numpy_views(X, row_chunks, hashed=True):
    """A host numpy X (1-D or 2-D) as a dask array of the row chunks ``row_chunks`` (their sum
    X's rows), each a read-only view of X (:func:`numpy_chunks`); one column chunk."""
    import uuid
    from itertools import accumulate

    import dask.array as da
    from dask.base import tokenize

    row_chunks = tuple(int(r) for r in row_chunks)
    chunks = (row_chunks,) + tuple((size,) for size in X.shape[1:])
    name = "array-" + (tokenize(X, chunks) if hashed else uuid.uuid4().hex)
    graph = {}
    starts = [0, *accumulate(row_chunks)]
    for i, rows in enumerate(row_chunks):
        view = X[starts[i] : starts[i] + rows]
        view.flags.writeable = False
        graph[(name, i) + (0,) * (X.ndim - 1)] = view
    return da.Array(graph, name, chunks, dtype=X.dtype, meta=X[(slice(0, 0),) * X.ndim])
