"""Former home of the kernels, now split by job; re-exports for importers not yet switched.

The kernels live in :mod:`._distances` (norms, nearest centers, dtype choice, work buffers),
:mod:`._seeding` (k-means++, D^2 sampling), :mod:`._lloyd` (Lloyd, local search, Ward, row
grouping) and :mod:`._refine_kernels` (the refinement pass's groups); the final solve's
restarts in :mod:`._runner`. New code imports from those modules; this one goes once
``_graph``, ``_checkpoint``, ``_stream``, ``_tree`` and ``estimator._refine`` import from them.
"""

from __future__ import annotations

from ._distances import (  # noqa: F401
    BLOCK_ELEMENTS,
    DEVICE_BLOCK_ELEMENTS,
    EXACT_BELOW_ULPS,
    GROUP_SUM_ELEMENTS,
    OVERFLOW_MARGIN,
    SLAB_ELEMENTS,
    Workspace,
    _at,
    _augmented,
    _fitting_dtype,
    _score_blocks,
    _shifted,
    _shifted_augmented,
    _shifted_centers,
    block_rows,
    cosine_cost,
    cosine_distances,
    distance_dtype,
    nearest,
    nearest2,
    nearest_other,
    nearest_top,
    prepared_rows,
    row_norms_sq,
    sq_distances,
    squared_extent,
    transform_sq_distances,
    unit_centers,
    unit_rows,
    value_range,
)
from ._lloyd import (  # noqa: F401
    SMALL_GROUP_ROWS,
    _lloyd_update,
    _running_sums,
    _small_group_labels,
    _weighted_variance,
    centers_from_labels,
    group_labels,
    lloyd,
    local_search,
    ward_labels,
    weighted_indicator,
)
from ._refine_kernels import (  # noqa: F401
    GROUP_SUM_WHOLE_ELEMENTS,
    REFINE_BANDS,
    REFINE_TOP_LEVEL,
    _center_runs,
    _group_sums,
    _sorted_groups,
    _sq_to_centers,
    coarsen_refine_keys,
    lloyd_step_centers,
    reduce_refine_groups,
    refine_groups,
    refine_key_span,
    refine_lloyd_stats,
    refine_points,
)
from ._runner import (  # noqa: F401
    AUTO_MAX_RESTARTS,
    AUTO_MIN_RESTARTS,
    AUTO_RESTART_WORK,
    COARSE_POINTS_PER_CLUSTER,
    COARSEN_ITER,
    FINAL_PROBE_ITER,
    MIN_COARSE_POINTS,
    PARALLEL_RESTART_WORK,
    RESTART_MAX_ITER,
    SWAP_LLOYD_STEPS,
    SWAP_TRIALS,
    WARD_POINTS,
    WARD_POINTS_PER_CLUSTER,
    _map_restarts,
    _ward_run,
    auto_n_init,
    coarsen,
    weighted_kmeans,
)
from ._seeding import (  # noqa: F401
    _d2_rounds,
    _unique,
    _weighted_choice,
    d2_sample,
    kmeans_plusplus,
    unit_weights,
)
