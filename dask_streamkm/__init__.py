"""dask_streamkm: one-pass k-means for data larger than memory, on Dask."""

from ._memory import WorkerMemoryError
from ._model_io import ModelFileError, SklearnPrecisionWarning
from .elbow import elbow
from .estimator import HalfLifeDecayWarning, StreamingKMeans
from .io import InputError
from .summary import Summary

__version__ = "0.1.0"

__all__ = [
    "HalfLifeDecayWarning",
    "InputError",
    "ModelFileError",
    "SklearnPrecisionWarning",
    "StreamingKMeans",
    "Summary",
    "WorkerMemoryError",
    "__version__",
    "elbow",
]
