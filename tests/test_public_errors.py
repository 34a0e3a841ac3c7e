"""The error and warning classes a user catches are importable from the top level."""

import numpy as np
import pytest

import dask_streamkm
from dask_streamkm import (
    HalfLifeDecayWarning,
    InputError,
    ModelFileError,
    StreamingKMeans,
    WorkerMemoryError,
)


def test_public_errors_are_exported_and_are_what_the_library_raises(tmp_path):
    for cls in (HalfLifeDecayWarning, InputError, ModelFileError, WorkerMemoryError):
        assert cls.__name__ in dask_streamkm.__all__
    assert issubclass(HalfLifeDecayWarning, UserWarning)
    for cls in (InputError, ModelFileError, WorkerMemoryError):
        assert issubclass(cls, ValueError)  # existing `except ValueError` keeps working

    garbage = tmp_path / "model.npz"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        StreamingKMeans.load(garbage)

    with pytest.raises(InputError):
        dask_streamkm.io.open_array(tmp_path / "missing.zarr")

    # a half-life so short that the first call's groups decay away entirely
    rng = np.random.default_rng(0)
    km = StreamingKMeans(n_clusters=2, half_life=1, random_state=0, n_init=1)
    km.partial_fit(rng.normal(size=(50, 2)))
    with pytest.warns(HalfLifeDecayWarning):
        km.partial_fit(rng.normal(size=(5000, 2)))
