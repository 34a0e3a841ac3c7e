"""Seeds from one place: ``random_state`` -> SeedSequence entropy -> one seed per task.

``random_state`` is converted once, in ``fit``, into SeedSequence entropy (an int, or
``[int, int]`` for a ``partial_fit`` batch). Every task then draws from
``SeedSequence(entropy, spawn_key=(level, index))``: leaves at level 0, merges at levels 1, 2...,
the final solve and the reduction after a ``partial_fit`` merge at the two top levels. The
result does not depend on the scheduler or on the order in which tasks run.
"""

from __future__ import annotations

import numbers

import numpy as np

#: spawn_key level used for leaves; merge levels count up from 1.
LEAF_LEVEL = 0
#: spawn_key levels of the final solve and of the reduction after a partial_fit merge.
SOLVE_LEVEL = 2**32 - 1
PARTIAL_LEVEL = 2**32 - 2


def task_seed(entropy, level, index):
    """The seed of the task at ``(level, index)`` of the tree."""
    return np.random.SeedSequence(entropy, spawn_key=(int(level), int(index)))


def solve_seed(entropy):
    """The seed of the final solve on a summary."""
    return task_seed(entropy, SOLVE_LEVEL, 0)


def fresh_entropy():
    """New entropy from the operating system (``random_state=None``)."""
    return int(np.random.SeedSequence().entropy)


def entropy_from(random_state):
    """SeedSequence entropy for ``random_state`` (None, an int >= 0, RandomState or Generator).

    Draws once from a RandomState or Generator (so two fits with the same generator differ,
    as in scikit-learn).
    """
    rs = random_state
    if rs is None:
        return fresh_entropy()
    if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
        if rs < 0:
            raise ValueError(
                f"random_state={rs!r} should be None, an int >= 0, a numpy RandomState or "
                "Generator; use e.g. random_state=0."
            )
        return int(rs)
    if isinstance(rs, np.random.RandomState):
        return int(rs.randint(np.iinfo(np.int32).max))
    if isinstance(rs, np.random.Generator):
        return int(rs.integers(np.iinfo(np.int64).max))
    raise ValueError(
        f"random_state={rs!r} should be None, an int >= 0, a numpy RandomState or Generator."
    )


def batch_entropy(entropy, n_rows_seen):
    """Entropy of a ``partial_fit`` batch: the fit's entropy shifted by the rows seen before."""
    return [entropy, int(n_rows_seen)]


def entropy_to_json(entropy):
    """Entropy as stored in a model file: None, an int, or a list of ints."""
    if entropy is None:
        return None
    if isinstance(entropy, (list, tuple)):
        return [int(e) for e in entropy]
    return int(entropy)


def entropy_from_json(value):
    """Entropy read from a model file; fresh entropy when the file has none."""
    if value is None:
        return fresh_entropy()
    return [int(e) for e in value] if isinstance(value, list) else int(value)
