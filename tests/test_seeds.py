"""Seeds from one place: one seed per task position, and random_state checked once."""

import numpy as np
import pytest

from dask_streamkm import StreamingKMeans, _seeds


def test_task_seeds_differ_by_position():
    a = _seeds.task_seed(0, 0, 1).generate_state(2)
    b = _seeds.task_seed(0, 0, 2).generate_state(2)
    c = _seeds.task_seed(0, 1, 1).generate_state(2)
    d = _seeds.task_seed(1, 0, 1).generate_state(2)
    assert len({tuple(x) for x in (a, b, c, d)}) == 4
    np.testing.assert_array_equal(a, _seeds.task_seed(0, 0, 1).generate_state(2))


def test_solve_seed_is_the_top_level_of_the_tree():
    np.testing.assert_array_equal(
        _seeds.solve_seed(7).generate_state(2),
        np.random.SeedSequence(7, spawn_key=(2**32 - 1, 0)).generate_state(2),
    )


@pytest.mark.parametrize("entropy", [None, 5, [5, 100]])
def test_entropy_round_trips_through_json(entropy):
    back = _seeds.entropy_from_json(_seeds.entropy_to_json(entropy))
    if entropy is None:
        assert isinstance(back, int)
    else:
        assert back == entropy


def test_int_like_random_states_give_the_same_fit():
    X = np.random.default_rng(0).normal(size=(300, 2))
    a = StreamingKMeans(3, random_state=4).fit(X).cluster_centers_
    b = StreamingKMeans(3, random_state=np.int64(4)).fit(X).cluster_centers_
    np.testing.assert_array_equal(a, b)
