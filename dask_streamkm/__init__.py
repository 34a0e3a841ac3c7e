"""dask_streamkm: one-pass k-means for data larger than memory, on Dask."""

from .elbow import elbow
from .estimator import StreamingKMeans
from .summary import Summary

__version__ = "0.1.0"

__all__ = ["StreamingKMeans", "Summary", "__version__", "elbow"]
