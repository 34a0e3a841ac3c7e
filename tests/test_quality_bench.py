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


# ---------------------------------------------------------------- the shared module and loaders


def test_exact_cost_is_the_sum_of_squared_distances_to_the_nearest_center():
    import dask.array as da
    import numpy as np

    exact_cost = _bench("_common").exact_cost
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 5)).astype(np.float32) + 1e3  # far from the origin
    centers = X[:7].astype(np.float64) + 0.25
    d2 = ((X.astype(np.float64)[:, None, :] - centers[None]) ** 2).sum(-1).min(1)
    assert np.isclose(exact_cost(X, centers, block=128), d2.sum(), rtol=1e-9)
    Xd = da.from_array(X, chunks=(300, -1))
    assert np.isclose(exact_cost(Xd, centers), d2.sum(), rtol=1e-9)
    w = rng.uniform(0.5, 2.0, size=1000)  # weights follow their rows over chunk borders
    assert np.isclose(exact_cost(X, centers, block=128, weights=w), d2 @ w, rtol=1e-9)
    assert np.isclose(exact_cost(Xd, centers, weights=w), d2 @ w, rtol=1e-9)


def test_reference_is_cached_under_the_case_and_n_init(tmp_path, monkeypatch):
    import numpy as np
    import sklearn

    monkeypatch.setenv("DASK_STREAMKM_CACHE", str(tmp_path))
    common = _bench("_common")
    X = np.random.default_rng(1).normal(size=(200, 3))
    first = common.reference("made-up", X, 4, reuse=True, n_init=2)
    path = tmp_path / "bench" / f"kmeans-ref-made-up-n_init2-sklearn{sklearn.__version__}.json"
    assert path.exists() and not first["cached"]
    again = common.reference("made-up", X, 4, reuse=True, n_init=2)
    assert again["cached"] and again["inertia"] == first["inertia"]
    assert common.reference_path("made-up").name.startswith("kmeans-ref-made-up-sklearn")


def test_safetensors_and_npy_read_from_bytes():
    import io
    import json
    import struct

    import numpy as np
    import pytest

    real = _bench("datasets_real")
    a = np.arange(12, dtype=np.float16).reshape(3, 4)
    b = np.ones((2, 2), dtype=np.float32)
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F16", "shape": [3, 4], "data_offsets": [0, 24]},
        "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [24, 40]},
    }
    text = json.dumps(header).encode()
    raw = struct.pack("<Q", len(text)) + text + a.tobytes() + b.tobytes()
    got = real.read_safetensors(raw, "a")
    assert got.dtype == np.float32 and np.array_equal(got, a.astype(np.float32))
    assert np.array_equal(real.read_safetensors(raw, "b"), b)
    with pytest.raises(KeyError, match="'c' not in the file"):
        real.read_safetensors(raw, "c")
    buf = io.BytesIO()
    np.save(buf, b)
    assert np.array_equal(real.read_npy(buf.getvalue()), b)


def test_table_pickles_load_numeric_frames_and_refuse_other_names():
    import lzma
    import pickle

    import numpy as np
    import pandas as pd
    import pytest

    real = _bench("datasets_real")
    # Numbered columns: pandas 3 pickles column names as Arrow strings (not admitted).
    frame = pd.DataFrame(np.arange(10.0).reshape(5, 2))
    got = real.read_table_pickle(lzma.decompress(lzma.compress(pickle.dumps(frame))))
    pd.testing.assert_frame_equal(got, frame)
    # A pickle that would call os.system is refused before anything runs.
    with pytest.raises(pickle.UnpicklingError, match="refusing to load os.system"):
        real.read_table_pickle(b"cos\nsystem\n(S'echo no'\ntR.")
    assert all(len(columns) >= 2 for columns, _ in real.TABLES.values())


def test_subsample_is_seeded_and_keeps_row_order():
    import numpy as np

    subsample = _bench("datasets_real").subsample
    X = np.arange(100)[:, None] * np.ones((1, 2))
    a, b = subsample(X, 10, seed=3), subsample(X, 10, seed=3)
    assert a.shape == (10, 2) and np.array_equal(a, b)
    assert np.all(np.diff(a[:, 0]) > 0)
    assert not np.array_equal(a, subsample(X, 10, seed=4))
    assert subsample(X, 500) is X


# ---------------------------------------------------------------- pareto.py's checks


def _peer(key, seconds, ratio, sampling=False):
    return {"key": key, "label": key, "seconds": seconds, "ratio": ratio, "sampling": sampling,
            "rows": 10}  # fmt: skip


def test_pareto_flags_a_peer_only_when_both_faster_and_better():
    pareto = _bench("pareto")
    result = {
        "rows": [
            _peer("ours", 10.0, 1.0100),
            _peer("ours_fast", 1.0, 1.0000),  # our own settings never count
            _peer("minibatch", 8.0, 1.0120),  # faster, worse
            _peer("faiss256", 8.9, 1.0090, sampling=True),  # faster and better by 0.001
            _peer("faiss2048", 9.0, 1.0000),  # exactly 0.9x our time: not faster
            _peer("kmeans1", 2.0, 1.0096),  # better by only 0.0004
        ]
    }
    dominating, vs_mbk = pareto.checks(result)
    assert dominating == ["faiss256"]
    assert vs_mbk == 10.0 / 8.0
    assert pareto.checks({"rows": [_peer("ours", 1.0, 1.0)]}) == ([], None)


def test_pareto_table_labels_sampling_peers_and_leaves_out_missing_modules():
    pareto = _bench("pareto")
    methods = [
        ("ours", "ours", None, None),
        ("gone", "a peer", "no_such_module_for_pareto", None),
    ]
    run, skipped = pareto.available(methods)
    assert [m[0] for m in run] == ["ours"]
    assert "`import no_such_module_for_pareto` fails" in skipped["gone"]
    result = {
        "case": "c", "title": "t", "n": 10, "d": 2, "k": 3, "ref_n_init": 10,
        "rows": [_peer("ours", 2.0, 1.01), _peer("faiss256", 1.0, 1.02, sampling=True)],
        "skipped": skipped,
    }  # fmt: skip
    text = pareto.case_table(result)
    assert "| faiss256 (sampling) | 1.00 | 1.0200 | 10 |" in text
    assert "| ours | 2.00 | 1.0100 | 10 |" in text
    assert "a peer: left out" in text and ": none" in text


def test_quality_tables_without_refine_passes_2_and_peers(capsys):
    quality = _bench("quality")
    rows = {}
    for seed, (ours, r1) in enumerate(((1.01, 1.00), (1.03, 1.02), (1.02, 1.01))):
        row = _row("a", ours, r1, 0.0)
        for key in ("ours_r2", "t_runs_r2", "mbk", "sample"):
            del row[key]
        row.update(n=10, d=2, ours_bound=1.1, summary_groups=5, t_ours=1.0, t_ours_r1=1.4,
                   t_ref=3.0, ref_cached=True, ref_n_init=10)  # fmt: skip
        rows[seed] = [row]
    quality.print_table(rows[0])
    quality.print_seed_medians(rows)
    out = capsys.readouterr().out
    assert "| a | 10 | 2 | 5 | 1.0100 | 1.1000 | 1.0000 | - | - | - (5) | 1.0 | 1.4 | - |" in out
    assert "| a | 5 | 1.0200 | 1.0100 | - | - | - | 1.40 | - |" in out
    assert "1: median of the cases' medians 1.0100" in out
    assert "2: median" not in out and "MiniBatchKMeans on every case" not in out


def test_rows_from_json_joins_runs_in_parts_by_seed(tmp_path):
    import json

    import pytest

    quality = _bench("quality")
    part1 = [dict(_row("a", 1.0, 1.0, 1.0), seed=s) for s in (0, 1)]
    part2 = [dict(_row("b", 1.1, 1.0, 1.0), seed=s) for s in (0, 1)]
    (tmp_path / "1.json").write_text(json.dumps(part1))
    (tmp_path / "2.json").write_text(json.dumps(part2))
    got = quality.rows_from_json([tmp_path / "1.json", tmp_path / "2.json"])
    assert list(got) == [0, 1]
    assert [r["case"] for r in got[1]] == ["a", "b"] and got[1][1]["ours"] == 1.1
    (tmp_path / "3.json").write_text(json.dumps([dict(_row("c", 1.0, 1.0, 1.0), seed=0)]))
    with pytest.raises(ValueError, match=r"cases missing for some seeds: .*'c'"):
        quality.rows_from_json([tmp_path / "1.json", tmp_path / "3.json"])
