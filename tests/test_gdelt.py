"""GDELT 1.0 event files: lazy reading and the tutorial's features, on files the tests write."""

import numpy as np
import pytest
from _helpers import ROWS, event_row

from dask_streamkm._gdelt import GDELT_COLUMNS, NUMERIC_FEATURES
from dask_streamkm.datasets import gdelt_features, read_gdelt_events


@pytest.fixture
def events_file(tmp_path):
    path = tmp_path / "19790101.export.CSV"
    path.write_text(
        "\n".join(event_row(i, *r) for i, r in enumerate(ROWS)) + "\n", encoding="utf-8"
    )
    return path


def test_read_gdelt_events_columns_and_types(events_file):
    df = read_gdelt_events(events_file)
    assert list(df.columns) == list(GDELT_COLUMNS)
    assert len(GDELT_COLUMNS) == 57
    pdf = df.compute()
    assert len(pdf) == len(ROWS)
    # Codes keep their leading zeros; "NA" (Namibia) is a code, not a missing value.
    assert pdf["EventCode"].tolist() == [r[0] for r in ROWS]
    assert (pdf["Actor2Code"] == "NA").all()
    assert pdf["NumArticles"].tolist() == [r[1] for r in ROWS]
    assert pdf["AvgTone"].tolist() == pytest.approx([r[2] for r in ROWS])
    assert np.isnan(pdf["Actor1Geo_Lat"].iloc[7])
    assert pdf["GLOBALEVENTID"].iloc[0] == 1000


def test_read_gdelt_events_is_lazy_over_many_files(tmp_path):
    for day in ("01", "02"):
        (tmp_path / f"197901{day}.CSV").write_text(
            "\n".join(event_row(i, *r) for i, r in enumerate(ROWS)) + "\n"
        )
    df = read_gdelt_events(str(tmp_path / "197901*.CSV"))
    assert df.npartitions == 2
    assert len(df) == 2 * len(ROWS)


def test_read_daily_files_with_source_url(tmp_path):
    path = tmp_path / "daily.CSV"
    path.write_text(event_row(0, "010", 1, 1.0, source_url="http://example.org/a") + "\n")
    pdf = read_gdelt_events(path, source_url=True).compute()
    assert pdf.columns[-1] == "SOURCEURL"
    assert pdf["SOURCEURL"].iloc[0] == "http://example.org/a"
    assert pdf["EventCode"].iloc[0] == "010"


def test_read_gdelt_events_empty_paths():
    with pytest.raises(ValueError, match="paths is empty"):
        read_gdelt_events([])


def reference_features(top_codes):
    """The tutorial's features from ROWS with plain Python, for comparison."""
    out = []
    for code, articles, tone, a1, a2 in ROWS:
        if code not in top_codes or "" in a1 or "" in a2:
            continue
        if (float(a1[0]), float(a1[1])) == (0, 0) or (float(a2[0]), float(a2[1])) == (0, 0):
            continue
        onehot = [1.0 if code == c else 0.0 for c in top_codes]
        out.append([articles, tone, *map(float, a1), *map(float, a2), *onehot])
    return np.array(out)


def test_gdelt_features_match_reference(events_file):
    df = read_gdelt_events(events_file)
    X, names = gdelt_features(df, top_events=3, return_names=True)
    # Counts: 010 x4, 042 x3, 0211 x1, 190 x1 -> top 3 are 010, 042 and (tie broken by code) 0211.
    top = ["010", "042", "0211"]
    assert names == list(NUMERIC_FEATURES) + [f"EventCode_{c}" for c in top]
    assert not any(np.isnan(c) for c in X.chunks[0])  # known chunk sizes
    assert X.numblocks[1] == 1
    np.testing.assert_array_equal(X.compute(), reference_features(top))


def test_gdelt_features_given_events_and_dtype(events_file):
    df = read_gdelt_events(events_file)
    X = gdelt_features(df, events=["190", "010"], dtype=np.float32)
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X.compute(), reference_features(["190", "010"]))


def test_gdelt_features_errors(events_file):
    df = read_gdelt_events(events_file)
    with pytest.raises(ValueError, match="top_events=0 should be an integer >= 1"):
        gdelt_features(df, top_events=0)
    with pytest.raises(ValueError, match="distinct EventCodes"):
        gdelt_features(df, events=["010", "010"])
    with pytest.raises(ValueError, match=r"lacks the GDELT columns \['AvgTone'\]"):
        gdelt_features(df.drop(columns=["AvgTone"]))


def test_gdelt_features_fit(events_file):
    from dask_streamkm import StreamingKMeans

    X = gdelt_features(read_gdelt_events(events_file), top_events=3)
    km = StreamingKMeans(n_clusters=2, random_state=0).fit(X)
    assert km.cluster_centers_.shape == (2, 9)
    assert km.n_rows_seen_ == X.shape[0] == 5
