"""GDELT 1.0 event files read lazily with dask.dataframe, and the SageMaker tutorial's features.

GDELT 1.0 event files are tab-separated with no header: 57 columns in the historical files
(1979 to March 2013) and a 58th, ``SOURCEURL``, in the daily files since April 2013. The column
names below follow the GDELT 1.0 event codebook.
"""

from __future__ import annotations

import numpy as np

_ACTOR = (
    "Code",
    "Name",
    "CountryCode",
    "KnownGroupCode",
    "EthnicCode",
    "Religion1Code",
    "Religion2Code",
    "Type1Code",
    "Type2Code",
    "Type3Code",
)
_GEO = ("Type", "FullName", "CountryCode", "ADM1Code", "Lat", "Long", "FeatureID")

#: The 57 columns of a GDELT 1.0 historical event file, in order.
GDELT_COLUMNS = (
    ("GLOBALEVENTID", "SQLDATE", "MonthYear", "Year", "FractionDate")
    + tuple(f"Actor1{f}" for f in _ACTOR)
    + tuple(f"Actor2{f}" for f in _ACTOR)
    + (
        "IsRootEvent",
        "EventCode",
        "EventBaseCode",
        "EventRootCode",
        "QuadClass",
        "GoldsteinScale",
        "NumMentions",
        "NumSources",
        "NumArticles",
        "AvgTone",
    )
    + tuple(f"Actor1Geo_{f}" for f in _GEO)
    + tuple(f"Actor2Geo_{f}" for f in _GEO)
    + tuple(f"ActionGeo_{f}" for f in _GEO)
    + ("DATEADDED",)
)
#: The extra last column of the daily files (April 2013 on).
SOURCE_URL = "SOURCEURL"

_INT = {
    "GLOBALEVENTID",
    "SQLDATE",
    "MonthYear",
    "Year",
    "IsRootEvent",
    "QuadClass",
    "NumMentions",
    "NumSources",
    "NumArticles",
    "Actor1Geo_Type",
    "Actor2Geo_Type",
    "ActionGeo_Type",
    "DATEADDED",
}
_FLOAT = {
    "FractionDate",
    "GoldsteinScale",
    "AvgTone",
    "Actor1Geo_Lat",
    "Actor1Geo_Long",
    "Actor2Geo_Lat",
    "Actor2Geo_Long",
    "ActionGeo_Lat",
    "ActionGeo_Long",
}
#: Numeric columns of the tutorial's features, after the EventCode one-hot columns.
NUMERIC_FEATURES = (
    "NumArticles",
    "AvgTone",
    "Actor1Geo_Lat",
    "Actor1Geo_Long",
    "Actor2Geo_Lat",
    "Actor2Geo_Long",
)


def _dtypes(names):
    # Nullable integers: a blank field in a real file must not fail the whole read.
    return {
        name: ("Int64" if name in _INT else "float64" if name in _FLOAT else "object")
        for name in names
    }


def _is_compressed(path):
    return str(path).lower().endswith((".zip", ".gz", ".bz2", ".xz", ".zst"))


def read_gdelt_events(paths, *, source_url=False, blocksize="64MB"):
    """GDELT 1.0 event files as a lazy dask DataFrame with the codebook's column names.

    Parameters
    ----------
    paths : str, path-like or list of them
        Files or glob patterns (``"events/1979*.csv"``); anything ``dask.dataframe.read_csv``
        takes, including remote URLs with fsspec. Compressed files (``.zip``, ``.gz``...)
        are read one partition per file.
    source_url : bool, default=False
        The files are daily files (April 2013 on) with the 58th column ``SOURCEURL``.
    blocksize : str or int or None, default="64MB"
        Bytes per partition of uncompressed files.

    Returns
    -------
    dask.dataframe.DataFrame
        57 (or 58) columns; codes (``EventCode``, ``Actor1Code``...) as strings so leading
        zeros survive, counts and dates as nullable ``Int64``, tone and coordinates as
        float64 (a blank coordinate is NaN). Nothing is read but a sample for the metadata.

    Examples
    --------
    >>> from dask_streamkm.datasets import read_gdelt_events
    >>> df = read_gdelt_events("1979.csv")  # doctest: +SKIP
    >>> len(df.columns)  # doctest: +SKIP
    57
    """
    import os

    import dask.dataframe as dd

    names = list(GDELT_COLUMNS) + ([SOURCE_URL] if source_url else [])
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("paths is empty; pass one or more GDELT event files or glob patterns.")
    compressed = any(_is_compressed(p) for p in paths)
    return dd.read_csv(
        paths,
        sep="\t",
        header=None,
        names=names,
        dtype=_dtypes(names),
        blocksize=None if compressed else blocksize,
        quoting=3,  # csv.QUOTE_NONE: GDELT fields are never quoted (names may hold a ").
        keep_default_na=False,
        na_values=[""],
    )


def top_event_codes(df, top_events=20):
    """The ``top_events`` most frequent EventCodes of ``df`` (one read of the column).

    Ties are broken by code, so the result does not depend on the partitioning.
    """
    counts = df["EventCode"].dropna().value_counts().compute()
    frame = counts.rename("count").reset_index()
    frame.columns = ["code", "count"]
    frame = frame.sort_values(["count", "code"], ascending=[False, True], kind="stable")
    return [str(c) for c in frame["code"].head(int(top_events))]


def feature_names(codes):
    """Column names of :func:`gdelt_features` for these event codes."""
    return list(NUMERIC_FEATURES) + [f"EventCode_{c}" for c in codes]


def _feature_block(part, codes, dtype):
    """Features of one partition (a pandas DataFrame); see :func:`gdelt_features`."""
    import pandas as pd

    code_index = {c: i for i, c in enumerate(codes)}
    event = part["EventCode"].astype("object")
    idx = event.map(code_index)
    numeric = (
        np.column_stack(
            [part[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in NUMERIC_FEATURES]
        )
        if len(part)
        else np.zeros((0, len(NUMERIC_FEATURES)))
    )
    a1_origin = (numeric[:, 2] == 0) & (numeric[:, 3] == 0)
    a2_origin = (numeric[:, 4] == 0) & (numeric[:, 5] == 0)
    keep = idx.notna().to_numpy() & ~a1_origin & ~a2_origin & np.all(np.isfinite(numeric), axis=1)
    rows = numeric[keep]
    onehot = np.zeros((rows.shape[0], len(codes)), dtype=dtype)
    onehot[np.arange(rows.shape[0]), idx.to_numpy()[keep].astype(np.int64)] = 1
    out = np.concatenate([rows.astype(dtype), onehot], axis=1)
    return pd.DataFrame(out, columns=feature_names(codes))


def gdelt_features(df, top_events=20, *, events=None, dtype=np.float64, return_names=False):
    """The SageMaker GDELT tutorial's k-means features as a dask array with known chunks.

    Rows whose ``EventCode`` is one of the ``top_events`` most frequent codes are kept; rows
    where Actor1 or Actor2 sits at latitude 0 and longitude 0 (GDELT's "no location") are
    dropped, as in the tutorial, and so are rows with a blank feature (k-means takes no NaN).
    The columns are ``NumArticles``, ``AvgTone``, ``Actor1Geo_Lat``, ``Actor1Geo_Long``,
    ``Actor2Geo_Lat``, ``Actor2Geo_Long`` and then one 0/1 column per event code, most
    frequent first (``EventCode_<code>``). The features are not scaled (nor were they in the
    tutorial).

    Parameters
    ----------
    df : dask.dataframe.DataFrame
        Events from :func:`read_gdelt_events`.
    top_events : int, default=20
        How many of the most frequent event codes to keep.
    events : list of str, optional
        The event codes to keep, in column order (skips the read that counts the codes; pass
        the codes of a training set when building features for a test set).
    dtype : numpy dtype, default=float64
    return_names : bool, default=False
        Also return the column names.

    Returns
    -------
    X : dask array of shape (n_rows, 6 + n_codes)
        One chunk per partition, chunk sizes known (computed with ``lengths=True``: one read
        of the files, plus one to count the codes when ``events`` is None).
    names : list of str
        Only with ``return_names=True``.
    """
    import pandas as pd

    missing = [c for c in ("EventCode", *NUMERIC_FEATURES) if c not in df.columns]
    if missing:
        raise ValueError(
            f"df lacks the GDELT columns {missing}; read the files with read_gdelt_events(paths)."
        )
    if events is None:
        if not isinstance(top_events, int) or isinstance(top_events, bool) or top_events < 1:
            raise ValueError(f"top_events={top_events!r} should be an integer >= 1.")
        codes = top_event_codes(df, top_events)
    else:
        codes = [str(c) for c in events]
        if not codes or len(set(codes)) != len(codes):
            raise ValueError(
                f"events={events!r} should be a non-empty list of distinct EventCodes, "
                "e.g. ['010', '042']."
            )
    names = feature_names(codes)
    meta = pd.DataFrame(np.zeros((0, len(names)), dtype=dtype), columns=names)
    frame = df.map_partitions(_feature_block, codes, np.dtype(dtype), meta=meta)
    X = frame.to_dask_array(lengths=True)
    return (X, names) if return_names else X
