"""The benchmarks' bookkeeping on made-up figures: quality.py's medians over seeds (``--seeds``)
and speed.py's multiple of the floor."""

import importlib.util
from pathlib import Path


def _bench(name):
    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(case, ours, r1, r2, t1=(1.4, 1.4), t2=(1.8, 1.8)):
    """A row of made-up ratios; ``t1`` / ``t2``: r1's / r2's wall times in two rounds whose
    one pass took 1 s."""
    return {
        "case": case,
        "k": 5,
        "ours": ours,
        "ours_r1": r1,
        "ours_r2": r2,
        "mbk": 1.1,
        "sample": 1.05,
        "t_runs_r0": [1.0, 1.0],
        "t_runs_r1": list(t1),
        "t_runs_r2": list(t2),
    }


def test_seed_medians_are_per_case_then_across_cases(capsys):
    rows = {
        0: [_row("a", 1.000, 0.990, 0.980, (1.2, 1.4)), _row("b", 1.010, 1.000, 0.999)],
        1: [_row("a", 1.004, 0.992, 0.981, (1.6, 1.6)), _row("b", 1.030, 1.002, 0.998)],
        2: [_row("a", 1.002, 0.991, 0.982, (1.4, 1.6)), _row("b", 1.020, 1.001, 0.997)],
    }
    _bench("quality").print_seed_medians(rows)
    out = capsys.readouterr().out
    # Case a's r1 time ratios by seed: 1.3, 1.6, 1.5 (medians of the two rounds) -> 1.5.
    assert "| a | 5 | 1.0020 | 0.9910 | 0.9810 | 1.1000 | 1.0500 | 1.50 | 1.80 |" in out
    assert "| b | 5 | 1.0200 | 1.0010 | 0.9980 | 1.1000 | 1.0500 | 1.40 | 1.80 |" in out
    assert "wall time at most 1.50x the one pass (each case's median), 1.60x in a single" in out
    # Two cases: the median of their medians is the mean of 1.002 and 1.020.
    assert (
        "refine_passes=0: median of the cases' medians 1.0110, worst case median 1.0200, "
        "worst single fit 1.0300"
    ) in out
    assert "1: median of the cases' medians 0.9960, worst case median 1.0010" in out


def test_floor_multiple_pairs_each_fit_with_its_rounds_floor():
    floor_multiple = _bench("speed").floor_multiple
    # Round 2 ran on a machine twice as slow: its fit and its floor both doubled.
    assert floor_multiple([2.0, 4.0, 2.2], [0.2, 0.4, 0.2]) == 10.0
    # A method missing a round: median time over median floor.
    assert floor_multiple([2.0, 3.0], [0.2, 0.25, 0.3]) == 2.5 / 0.25


def test_time_ratio_is_the_median_of_each_rounds_ratio():
    time_ratio = _bench("quality").time_ratio
    row = {
        "t_runs_r0": [2.0, 4.0, 2.0],
        "t_runs_r1": [2.8, 6.0, 3.2],  # round 2: the machine slowed down for both fits
        "t_ours": 2.0,
        "t_ours_r1": 3.2,
    }
    assert time_ratio(row, "ours") == 1.0
    assert time_ratio(row, "ours_r1") == 1.5  # of 1.4, 1.5, 1.6; the medians' ratio is 1.6
    assert time_ratio({"t_ours": 2.0, "t_ours_r1": 3.0}, "ours_r1") == 1.5
