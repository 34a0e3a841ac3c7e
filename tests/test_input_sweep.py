"""Unusual but legitimate inputs to the public estimator: streams of single rows, and others
found by sweeping the inputs a demanding user or another project's test-suite passes."""

import dask.array as da
import numpy as np
import pytest
from _helpers import true_cost
from sklearn.datasets import make_blobs

from dask_streamkm import StreamingKMeans


@pytest.fixture(scope="module")
def blobs():
    X, _ = make_blobs(n_samples=3_000, centers=5, n_features=4, random_state=0)
    return X


# ---------------------------------------------------------------------- streams of one row
@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(lambda row: row, id="numpy"),
        pytest.param(lambda row: np.repeat(row, 3, axis=0), id="equal-rows"),
        pytest.param(lambda row: da.from_array(row, chunks=(1, -1)), id="dask"),
    ],
)
def test_batches_of_one_row_are_folded_not_solved_again(blobs, batch):
    # A batch of one row (or of equal rows) has no spread of its own: it was judged far from
    # the summary's origin, so each call summarized it as a chunk and solved in full (62 ms a
    # call instead of 0.4 ms at k=10), and the summary grew by a group a row.
    km = StreamingKMeans(5, random_state=0).fit(blobs[:2_000])
    solved, groups = km.solve_seconds_, km.summary_.n_groups
    batches = [batch(blobs[i : i + 1]) for i in range(2_000, 2_040)]
    for X in batches:
        km.partial_fit(X)
    assert km.solve_seconds_ == solved  # no global solve: the rows were folded
    assert km.summary_.n_groups <= groups + 40
    rows = np.concatenate([blobs[:2_000]] + [np.asarray(X) for X in batches])
    assert km.inertia_ >= true_cost(rows, km.cluster_centers_) * (1 - 1e-9)


def test_a_single_row_far_from_the_data_is_still_summarized_with_its_own_origin(blobs):
    km = StreamingKMeans(5, random_state=0).fit(blobs[:2_000])
    solved = km.solve_seconds_
    far = blobs[2_000:2_001] + 1e9
    km.partial_fit(far)
    assert km.solve_seconds_ != solved  # summarized and solved, as a first batch
    rows = np.concatenate([blobs[:2_000], far])
    assert km.inertia_ >= true_cost(rows, km.cluster_centers_) * (1 - 1e-9)
