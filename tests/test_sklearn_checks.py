"""scikit-learn's estimator checks on numpy input, every exemption listed with its reason."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from dask_streamkm import StreamingKMeans

#: Checks expected to fail, each with its reason. Keep empty unless a convention truly
#: cannot hold for a one-pass summary-based estimator.
EXPECTED_FAILED_CHECKS = {}


# The default instance warns, as KMeans does, where a check's data hold fewer than 8 distinct rows.
@pytest.mark.filterwarnings(
    "ignore:Number of distinct clusters:sklearn.exceptions.ConvergenceWarning"
)
@parametrize_with_checks(
    # The default instance too (n_clusters=8): the checks' small data sets then hold fewer
    # distinct rows than clusters, which must warn and give duplicate centers as KMeans does.
    [StreamingKMeans(n_clusters=3, random_state=0, n_init=2), StreamingKMeans()],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
