"""
The SageMaker GDELT tutorial, in one pass
=========================================

SageMaker's k-means tutorial clusters news events from GDELT (the Global Database of Events,
Language, and Tone): it keeps the 20 most frequent event codes, one-hot encodes them next to
the number of articles, the average tone and the two actors' coordinates, then trains one
model per k from 2 to 12 to draw an elbow curve, reading the data eleven times.

Here the same features come from :func:`dask_streamkm.datasets.read_gdelt_events` (lazy,
any number of files) and :func:`~dask_streamkm.datasets.gdelt_features`, and the eleven
models come from one read with :func:`dask_streamkm.elbow`.

Usage::

    python examples/gdelt_workflow.py 1979.csv [more files or globs ...]
    python examples/gdelt_workflow.py            # a generated file in GDELT's format

GDELT 1.0 historical event files (``http://data.gdeltproject.org/events/``) are
tab-separated with 57 columns and no header. Without a file, the example writes one with
made-up events (real column layout and CAMEO-style codes; the values are synthetic).
``--out`` sets where the elbow plot goes (default ``gdelt_elbow.png``).
"""

# %%
# Settings
# --------
import argparse
import os
import tempfile
import time

import numpy as np

from dask_streamkm import StreamingKMeans, elbow
from dask_streamkm.datasets import GDELT_COLUMNS, gdelt_features, read_gdelt_events

parser = argparse.ArgumentParser(description="SageMaker's GDELT k-means workflow")
parser.add_argument("files", nargs="*", help="GDELT 1.0 event files (tab-separated, 57 columns)")
parser.add_argument("--small", action="store_true", help="a small generated file")
parser.add_argument("--out", default="gdelt_elbow.png", help="where to save the elbow plot")
args, _ = parser.parse_known_args()


# %%
# A generated file in GDELT's format (only when no file is given)
# ---------------------------------------------------------------
# Events between actors in a dozen cities, with CAMEO-like event codes of Zipf-like
# frequency, a tone that depends on the kind of event, and a few rows without a location
# (GDELT writes 0, 0 or leaves the fields blank), which the features drop.
def write_synthetic_events(path, n_events, seed=0):
    rng = np.random.default_rng(seed)
    codes = np.array(
        [
            "010",
            "020",
            "036",
            "040",
            "042",
            "043",
            "046",
            "051",
            "057",
            "060",
            "070",
            "080",
            "090",
            "100",
            "110",
            "111",
            "112",
            "120",
            "130",
            "141",
            "173",
            "190",
            "193",
            "0211",
            "0233",
            "0311",
            "0331",
            "0841",
            "1011",
            "1122",
        ]
    )
    freq = 1.0 / np.arange(1, len(codes) + 1)
    code = rng.choice(len(codes), size=n_events, p=freq / freq.sum())
    cities = np.array(
        [
            (38.9, -77.0),
            (51.5, -0.1),
            (48.9, 2.4),
            (55.8, 37.6),
            (39.9, 116.4),
            (35.7, 139.7),
            (28.6, 77.2),
            (30.0, 31.2),
            (-1.3, 36.8),
            (-23.5, -46.6),
            (19.4, -99.1),
            (33.3, 44.4),
        ]
    )
    home = rng.integers(len(cities), size=n_events)
    away = np.where(rng.random(n_events) < 0.6, home, rng.integers(len(cities), size=n_events))
    a1 = cities[home] + rng.normal(0, 0.5, size=(n_events, 2))
    a2 = cities[away] + rng.normal(0, 0.5, size=(n_events, 2))
    missing = rng.random(n_events) < 0.05
    a1[missing] = 0.0
    # Conflict codes (13x and up) carry a negative tone, cooperation a positive one.
    root = np.array([int(c[:2]) for c in codes])[code]
    tone = np.where(root >= 13, -4.0, 2.0) + rng.normal(0, 2.5, size=n_events)
    articles = 1 + rng.geometric(0.2, size=n_events)
    index = {name: i for i, name in enumerate(GDELT_COLUMNS)}
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n_events):
            row = [""] * len(GDELT_COLUMNS)
            c = codes[code[i]]
            values = {
                "GLOBALEVENTID": str(i + 1),
                "SQLDATE": "19790101",
                "MonthYear": "197901",
                "Year": "1979",
                "FractionDate": "1979.0027",
                "IsRootEvent": "1",
                "EventCode": c,
                "EventBaseCode": c[:3],
                "EventRootCode": c[:2],
                "QuadClass": "4" if root[code[i]] >= 13 else "1",
                "NumMentions": str(articles[i]),
                "NumSources": "1",
                "NumArticles": str(articles[i]),
                "AvgTone": f"{tone[i]:.4f}",
                "Actor1Geo_Type": "4",
                "Actor1Geo_Lat": f"{a1[i, 0]:.4f}",
                "Actor1Geo_Long": f"{a1[i, 1]:.4f}",
                "Actor2Geo_Type": "4",
                "Actor2Geo_Lat": f"{a2[i, 0]:.4f}",
                "Actor2Geo_Long": f"{a2[i, 1]:.4f}",
                "ActionGeo_Type": "0",
                "DATEADDED": "20130203",
            }
            for name, value in values.items():
                row[index[name]] = value
            fh.write("\t".join(row) + "\n")
    return path


tmp = None
files = args.files
if not files:
    tmp = tempfile.TemporaryDirectory()
    n_events = 20_000 if args.small else 500_000
    files = [write_synthetic_events(os.path.join(tmp.name, "1979.csv"), n_events)]
    print(f"no file given: generated {n_events:,} synthetic events in GDELT's format")

# %%
# Read lazily and build the tutorial's features
# ---------------------------------------------
# ``read_gdelt_events`` reads nothing yet but a sample for the column types. The features
# take one read to count the event codes and one to learn the chunk sizes, and keep the rows
# of the 20 most frequent codes whose actors both have a location.
df = read_gdelt_events(files)
X, names = gdelt_features(df, top_events=20, return_names=True)
print(f"{X.shape[0]:,} events kept x {X.shape[1]} features in {X.numblocks[0]} chunk(s)")
print("features:", ", ".join(names[:6]), "+ 20 EventCode columns")

# %%
# Eleven models, one read
# -----------------------
# The tutorial trains k = 2..12. One summary sized for k = 12 answers all eleven.
start = time.perf_counter()
result = elbow(X, range(2, 13), random_state=0)
print(f"elbow k=2..12 in {time.perf_counter() - start:.1f} s")
print(result.to_string())
result.plot(args.out, title="GDELT events: elbow from one pass")
print(f"plot saved to {args.out}")

# %%
# SageMaker's hyperparameters, as the tutorial passes them
# --------------------------------------------------------
# ``from_sagemaker`` takes the same string-to-string map as a SageMaker training job and
# ``evaluate`` returns the test metrics SageMaker reports (msd, ssd), exactly, in one pass.
k = result.suggested_k or 7
km = StreamingKMeans.from_sagemaker(
    {
        "k": str(k),
        "feature_dim": str(X.shape[1]),
        "mini_batch_size": "500",
        "extra_center_factor": "auto",
        "local_lloyd_num_trials": "auto",
        "eval_metrics": '["msd", "ssd"]',
    }
)
km.set_params(random_state=0).fit(X)
print(f"k={k}: {km.evaluate(X)}")

# %%
# What the clusters are about
# ---------------------------
# Each center is the mean of its events: the share of each event code, the mean tone and the
# mean coordinates of the two actors. The features are not scaled (nor were they in the
# tutorial), so the coordinates, which span hundreds of degrees, decide most of the clusters;
# scale the columns first (e.g. divide each by its standard deviation) to give the tone and
# the event codes a say.
sizes = np.bincount(km.labels_.compute(), minlength=k)
for j in np.argsort(-sizes):
    c = km.cluster_centers_[j]
    top = np.argmax(c[6:])
    print(
        f"cluster {j}: {sizes[j]:>7,} events, tone {c[1]:+5.2f}, actor 1 at "
        f"({c[2]:6.1f}, {c[3]:6.1f}), actor 2 at ({c[4]:6.1f}, {c[5]:6.1f}), most often "
        f"{names[6 + top]} ({c[6 + top]:.0%})"
    )

if tmp is not None:
    tmp.cleanup()
