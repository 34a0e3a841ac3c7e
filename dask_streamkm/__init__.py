"""dask_streamkm: one-pass k-means for data larger than memory, on Dask."""

from ._memory import NoWorkersWarning, WorkerMemoryError
from ._model_io import ModelFileError, SklearnPrecisionWarning, library_version
from .elbow import elbow
from .estimator import HalfLifeDecayWarning, StreamingKMeans
from .io import InputError
from .summary import Summary

__version__ = library_version()

__all__ = [
    "HalfLifeDecayWarning",
    "InputError",
    "ModelFileError",
    "NoWorkersWarning",
    "SklearnPrecisionWarning",
    "StreamingKMeans",
    "Summary",
    "WorkerMemoryError",
    "__version__",
    "elbow",
]
