"""The elbow from one summary: costs for every k, the knee rule, the table and the plot."""

import dask.array as da
import numpy as np
import pytest

from dask_streamkm import StreamingKMeans, Summary, elbow
from dask_streamkm.elbow import ElbowSummaryWarning, knee_point, parse_k_range


@pytest.fixture(scope="module")
def blobs():
    """Four well-separated blobs in 3-D: the knee is at k = 4."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 0], [20, 0, 0], [0, 20, 0], [0, 0, 20]], dtype=float)
    X = np.concatenate([c + rng.standard_normal((500, 3)) for c in centers])
    return rng.permutation(X)


@pytest.fixture(scope="module")
def result(blobs):
    return elbow(da.from_array(blobs, chunks=500), range(1, 9), random_state=0)


def test_table_columns_and_values(result, blobs):
    assert result.k.tolist() == list(range(1, 9))
    assert result.total_weight == blobs.shape[0]
    np.testing.assert_allclose(result.mean_squared_distance, result.cost_bound / blobs.shape[0])
    table = result.table
    assert list(table) == ["k", "cost_bound", "mean_squared_distance", "seconds"]
    assert all(len(v) == 8 for v in table.values())
    assert np.all(result.seconds >= 0)
    assert result.summary_seconds > 0
    # k = 1: the cost is exactly the total squared deviation from the mean.
    exact = ((blobs - blobs.mean(axis=0)) ** 2).sum()
    assert result.cost_bound[0] == pytest.approx(exact, rel=1e-9)
    assert result.suggested_k == 4


def test_costs_are_bounds_of_the_real_costs(result, blobs):
    for k in (2, 4, 6):
        c = result.centers[k]
        real = ((blobs[:, None, :] - c[None]) ** 2).sum(axis=2).min(axis=1).sum()
        assert real <= result.cost_bound[k - 1] * (1 + 1e-9)


def test_each_k_matches_a_separate_fit(blobs, result):
    # One summary for k <= 8 against a separate fit at each k (its own summary): within 2%.
    for k in (2, 4, 7):
        separate = StreamingKMeans(n_clusters=k, random_state=0).fit(blobs)
        assert result.cost_bound[k - 1] <= separate.inertia_ * 1.02


def test_from_a_fitted_model_equals_refit(blobs):
    model = StreamingKMeans(n_clusters=8, random_state=3).fit(blobs)
    centers = model.cluster_centers_.copy()
    out = elbow(model, [2, 3, 8])
    assert out.summary_seconds == 0
    assert out.model is model
    np.testing.assert_array_equal(model.cluster_centers_, centers)  # the model is not changed
    ref = StreamingKMeans(n_clusters=8, random_state=3).fit(blobs)
    for i, k in enumerate([2, 3, 8]):
        assert out.cost_bound[i] == ref.refit(n_clusters=k).inertia_
        np.testing.assert_array_equal(out.centers[k], ref.cluster_centers_)


def test_from_a_summary(blobs):
    summary = Summary.from_points(blobs[:300])
    out = elbow(summary, "1:3", random_state=0, n_init=2)
    assert out.k.tolist() == [1, 2, 3]
    assert out.model is None


def test_numpy_input_and_reproducible(blobs):
    a = elbow(blobs, [2, 4], random_state=1, n_init=3)
    b = elbow(blobs, [2, 4], random_state=1, n_init=3)
    np.testing.assert_array_equal(a.cost_bound, b.cost_bound)
    assert isinstance(a.model.labels_, da.Array)  # no second pass for in-memory labels
    assert a.model.n_clusters == 4
    assert a.model.summary_size == "auto"


def test_summary_sized_for_max_k(blobs):
    out = elbow(da.from_array(blobs, chunks=1000), [2, 80], random_state=0, n_init=1)
    assert out.model.n_clusters == 80
    # 5 * 80 = 400 groups per chunk of 1000 rows, two chunks (k=2 alone would give 256).
    assert out.model.summary_.n_groups > 2 * 256


def test_small_model_summary_warns(blobs):
    model = StreamingKMeans(n_clusters=2, summary_size=40, random_state=0).fit(blobs)
    with pytest.warns(
        ElbowSummaryWarning,
        match=r"40 groups per chunk .* fewer than the 256 .* "
        r"Fit StreamingKMeans\(n_clusters=12\)",
    ) as record:
        elbow(model, range(2, 13))
    assert record[0].filename == __file__


def test_errors(blobs):
    with pytest.raises(ValueError, match=r"k_range contains 0; every k should be an integer >= 1"):
        elbow(blobs, [0, 2])
    with pytest.raises(ValueError, match=r"k_range=\[\] is empty"):
        elbow(blobs, [])
    with pytest.raises(ValueError, match="unfitted StreamingKMeans; fit it first"):
        elbow(StreamingKMeans(), [2, 3])
    model = StreamingKMeans(n_clusters=2, random_state=0).fit(blobs)
    with pytest.raises(ValueError, match=r"\['method'\] apply only when elbow\(\) is given data"):
        elbow(model, [2, 3], method="lloyd")
    with pytest.raises(ValueError, match=r"max\(k_range\)=5 is larger than the 3 groups"):
        elbow(Summary.from_points(blobs[:3]), [2, 5])
    with pytest.raises(ValueError, match=r"k='2-5' should be START:STOP"):
        elbow(blobs, "2-5")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2:12", list(range(2, 13))),
        ("2:10:4", [2, 6, 10]),
        ("3, 5,8", [3, 5, 8]),
    ],
)
def test_parse_k_range(text, expected):
    assert parse_k_range(text) == expected


@pytest.mark.parametrize("text", ["12:2", "2:4:0", "a:b", "1:2:3:4"])
def test_parse_k_range_errors(text):
    with pytest.raises(ValueError, match="should be START:STOP"):
        parse_k_range(text)


def test_knee_point_rule():
    k = np.arange(1, 9)
    # A sharp elbow at 3 on a log scale.
    assert knee_point(k, [100, 30, 5, 4.5, 4.2, 4.0, 3.9, 3.8]) == 3
    # Order of the input does not matter.
    assert knee_point(k[::-1], [100, 30, 5, 4.5, 4.2, 4.0, 3.9, 3.8][::-1]) == 3
    # The linear-scale rule (log=False) is the plain Kneedle difference curve.
    assert knee_point(k, [100, 30, 5, 4.5, 4.2, 4.0, 3.9, 3.8], log=False) == 3
    # Exponential decay is a straight line on a log scale: no knee.
    assert knee_point(k, 2.0**-k) is None
    assert knee_point([2, 3], [5.0, 4.0]) is None
    assert knee_point(k, np.ones(8)) is None
    assert knee_point(k, [3, 2, 1, 0, 0, 0, 0, 0]) is None  # log of 0


def test_to_string_marks_the_knee(result):
    text = result.to_string()
    lines = text.splitlines()
    assert lines[0].split() == ["k", "cost", "bound", "mean", "sq.", "distance", "seconds"]
    assert len(lines) == 1 + 8 + 1
    knee_line = [line for line in lines if "<- knee" in line]
    assert len(knee_line) == 1 and knee_line[0].split()[0] == "4"
    assert "suggested k = 4" in lines[-1]
    assert str(result) == text


def test_to_pandas(result):
    pytest.importorskip("pandas")
    frame = result.to_pandas()
    assert frame.index.tolist() == list(range(1, 9))
    assert frame.columns.tolist() == ["cost_bound", "mean_squared_distance", "seconds"]


def test_plot_writes_png(result, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "elbow.png"
    ax = result.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ax.get_xlabel() == "k (number of clusters)"
    assert any("suggested k = 4" in t.get_text() for t in ax.get_legend().get_texts())


def test_plot_without_matplotlib_names_the_extra(result, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r'pip install "dask-streamkm\[plot\]"'):
        result.plot()


def test_serial_and_parallel_solves_agree(blobs, monkeypatch):
    from dask_streamkm import _threads

    model = StreamingKMeans(n_clusters=6, random_state=0).fit(blobs)
    parallel = elbow(model, range(2, 7))
    monkeypatch.setattr(_threads, "SINGLE_THREAD_VALUES", 0)  # every summary is "large"
    serial = elbow(model, range(2, 7))
    np.testing.assert_array_equal(parallel.cost_bound, serial.cost_bound)
    for k in range(2, 7):
        np.testing.assert_array_equal(parallel.centers[k], serial.centers[k])


# ---------------------------------------------------------------------- command line
def test_cli_elbow_prints_table_and_writes_plot(blobs, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from dask_streamkm.cli import main

    store = str(tmp_path / "blobs.zarr")
    da.from_array(blobs, chunks=(500, -1)).to_zarr(store)
    png = tmp_path / "elbow.png"
    argv = ["elbow", store, "--k", "2:6", "--chunks", "500", "--plot", str(png), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [2, 3, 4, 5, 6]
    assert "suggested k = 4" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Same numbers as the Python API with the CLI's defaults (random_state=0).
    ref = elbow(da.from_zarr(store), range(2, 7), random_state=0)
    assert [float(r[1]) for r in rows] == pytest.approx(ref.cost_bound.tolist(), rel=1e-5)


def test_cli_elbow_bad_range(tmp_path, capsys):
    from dask_streamkm.cli import main

    assert main(["elbow", str(tmp_path / "x.zarr"), "--k", "12:2"]) == 1
    assert "--k '12:2'" in capsys.readouterr().err
