"""Checkpoint and resume: finished chunk ranges are saved and reloaded, not read again.

The summary's and the refinement passes' files, on disk and on an object store; files of
other data, parameters or metric never used; damaged files recomputed; the checkpoint a
plug-in of the wave engine (the same call with or without it)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from _helpers import S3_SECRET, counting_like, mixture_store

from dask_streamkm import StreamingKMeans, Summary, _graph, _refine, _waves
from dask_streamkm._checkpoint import Checkpoint
from dask_streamkm.datasets import make_mixture
from dask_streamkm.io import open_array

ROOT = Path(__file__).resolve().parents[1]


def _files(directory):
    return sorted(p.name for p in Path(directory).glob("summary-*.npz"))


def _ranges(directory):
    """(start, stop) chunk ranges of the checkpoint files."""
    return sorted(tuple(int(x) for x in name[:-4].split("-")[-2:]) for name in _files(directory))


@pytest.fixture
def store(tmp_path):
    return mixture_store(tmp_path, 24_000)


def test_checkpoint_gives_the_same_centers_and_one_file_per_range(store, tmp_path):
    X = open_array(store, chunks=1_000)
    ref = StreamingKMeans(4, random_state=0, split_every=4).fit(X)
    km = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=tmp_path / "ck").fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_
    assert _ranges(tmp_path / "ck") == [(s, s + 4) for s in range(0, 24, 4)]
    assert not [p for p in (tmp_path / "ck").iterdir() if ".tmp" in p.name]


def test_restart_skips_finished_ranges_and_reads_the_rest_once(store, tmp_path):
    X = open_array(store, chunks=1_000)
    ck = tmp_path / "ck"
    ref = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(X)
    # As if the fit had been interrupted after three ranges.
    for name in _files(ck)[3:]:
        (ck / name).unlink()
    done = _ranges(ck)
    Xc, counter = counting_like(X, zarr.open(store, mode="r"))
    km = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(Xc)
    skipped = {start * 1000 for a, b in done for start in range(a, b)}
    assert counter.reads == {r: 1 for r in range(0, 24_000, 1000) if r not in skipped}
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    # Everything finished: a third fit reads nothing.
    Xc, counter = counting_like(X, zarr.open(store, mode="r"))
    again = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(Xc)
    assert counter.reads == {}
    np.testing.assert_array_equal(again.cluster_centers_, ref.cluster_centers_)


def test_other_seed_parameters_or_data_never_pick_up_the_files(store, tmp_path):
    ck = tmp_path / "ck"
    X = open_array(store, chunks=1_000)
    StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(X)
    n = len(_files(ck))
    for params in ({"random_state": 1}, {"summary_size": 300}, {"method": "lloyd"}):
        full = {"random_state": 0, "split_every": 4, **params}
        km = StreamingKMeans(4, checkpoint=ck, **full).fit(X)
        ref = StreamingKMeans(4, **full).fit(X)
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
        assert len(_files(ck)) == n + 6
        n += 6
    other = make_mixture(24_000, 6, 12, chunks=1_000, random_state=4)
    StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(other)
    assert len(_files(ck)) == n + 6


@pytest.mark.parametrize("weights_as", ["dask", "numpy"])
def test_other_sample_weight_never_picks_up_the_files(store, tmp_path, weights_as):
    # Same data, parameters, seed and directory; only the weights change: the second fit must
    # summarize again (new files) and end with the centers of an uncheckpointed fit.
    ck = tmp_path / "ck"
    X = open_array(store, chunks=1_000)
    n = X.shape[0]
    ones = np.ones(n)
    # The second weights drop every row on one side of the data: other centers.
    other = (X[:, 0] > 0).compute().astype(float)
    as_input = {"dask": lambda w: dask.array.from_array(w, chunks=X.chunks[0]), "numpy": np.asarray}
    first = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck)
    first.fit(X, sample_weight=as_input[weights_as](ones))
    assert len(_files(ck)) == 6
    km = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck)
    km.fit(X, sample_weight=as_input[weights_as](other))
    ref = StreamingKMeans(4, random_state=0, split_every=4).fit(X, sample_weight=other)
    assert len(_files(ck)) == 12
    np.testing.assert_allclose(km.summary_.total_weight, other.sum())
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert not np.allclose(km.cluster_centers_, first.cluster_centers_)


def test_single_chunk_and_partial_fit(tmp_path, rng):
    X = dask.array.from_array(rng.standard_normal((500, 3)), chunks=(500, 3))
    km = StreamingKMeans(3, random_state=0, checkpoint=tmp_path / "a").fit(X)
    assert _ranges(tmp_path / "a") == [(0, 1)]
    np.testing.assert_array_equal(
        km.cluster_centers_, StreamingKMeans(3, random_state=0).fit(X).cluster_centers_
    )
    again = StreamingKMeans(3, random_state=0, checkpoint=tmp_path / "a").fit(X)
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)
    p = StreamingKMeans(3, random_state=0, checkpoint=tmp_path / "b")
    q = StreamingKMeans(3, random_state=0)
    for part in (X[:250], X[250:]):
        p.partial_fit(part)
        q.partial_fit(part)
    np.testing.assert_array_equal(p.cluster_centers_, q.cluster_centers_)
    # Only the first batch is summarized by a (checkpointed) pass; later batches are folded
    # into the model's running summary (save() keeps it), with no pass of their own to resume.
    assert len(_files(tmp_path / "b")) == 1


def test_checkpoint_errors(tmp_path, rng):
    X = rng.standard_normal((100, 2))
    with pytest.raises(ValueError, match=r"needs an integer random_state \(got random_state=None"):
        StreamingKMeans(2, checkpoint=tmp_path).fit(X)
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file; it should be a directory"):
        StreamingKMeans(2, random_state=0, checkpoint=tmp_path / "f").fit(X)
    with pytest.raises(ValueError, match=r"checkpoint=3 should be None or a directory path"):
        StreamingKMeans(2, random_state=0, checkpoint=3).fit(X)


def test_unreadable_checkpoint_file_is_recomputed(store, tmp_path):
    ck = tmp_path / "ck"
    X = open_array(store, chunks=1_000)
    ref = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(X)
    (ck / _files(ck)[0]).write_bytes(b"truncated")
    km = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def _cli(*args):
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return [sys.executable, "-m", "dask_streamkm.cli", *map(str, args)], env


def test_killed_cli_fit_resumes_from_its_checkpoint(tmp_path):
    """A real `dask-streamkm fit --checkpoint` is killed, restarted and ends the same."""
    n_chunks, split, rows = 32, 2, 2000
    X = make_mixture(n_chunks * rows, 8, 20, chunks=rows, random_state=5)
    store = tmp_path / "x.zarr"
    X.to_zarr(str(store))
    ck = tmp_path / "ck"
    fit = [
        "fit",
        store,
        "--k",
        6,
        "--split-every",
        split,
        "--chunks",
        rows,
        "--scheduler",
        "sync",
        "--quiet",
        "--checkpoint",
        ck,
    ]
    cmd, env = _cli(*fit, "--out", tmp_path / "killed.npz")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _files(ck) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the fit ended before it could be killed"
    done = _ranges(ck)
    print("ranges finished when killed:", len(done))
    assert 1 <= len(done) < n_chunks // split
    assert not (tmp_path / "killed.npz").exists()

    # In this process, a restart reads only the chunks of the unfinished ranges, once each.
    shutil.copytree(ck, tmp_path / "ck-copy")
    Xs = open_array(store, chunks=rows)
    Xc, counter = counting_like(Xs, zarr.open(store, mode="r"))
    with dask.config.set(scheduler="sync"):
        resumed = StreamingKMeans(
            6, random_state=0, split_every=split, checkpoint=tmp_path / "ck-copy"
        ).fit(Xc)
    finished = {c * rows for a, b in done for c in range(a, b)}
    assert counter.reads == {r: 1 for r in range(0, n_chunks * rows, rows) if r not in finished}

    # The CLI restarted with the same arguments finishes with the centers of an uninterrupted fit.
    cmd, env = _cli(*fit, "--out", tmp_path / "resumed.npz")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    read = n_chunks - len(finished)
    assert f"chunks        {n_chunks}, {read} read" in out.stdout
    uninterrupted = StreamingKMeans(6, random_state=0, split_every=split).fit(Xs)
    model = StreamingKMeans.load(tmp_path / "resumed.npz")
    np.testing.assert_array_equal(model.cluster_centers_, uninterrupted.cluster_centers_)
    np.testing.assert_array_equal(resumed.cluster_centers_, uninterrupted.cluster_centers_)


# ---------------------------------------------------------------------- file integrity
def _refit_reads(store, ck):
    """Fit again from the checkpoint; returns the model and the chunk rows read."""
    X = open_array(store, chunks=1_000)
    Xc, counter = counting_like(X, zarr.open(store, mode="r"))
    km = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(Xc)
    return km, counter.reads


def test_file_swapped_with_another_ranges_is_recomputed(store, tmp_path):
    ck = tmp_path / "ck"
    ref = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(
        open_array(store, chunks=1_000)
    )
    a, b = _files(ck)[:2]
    (ck / a).rename(ck / "swap")
    (ck / b).rename(ck / a)
    (ck / "swap").rename(ck / b)
    km, reads = _refit_reads(store, ck)
    assert reads == {r: 1 for r in range(0, 8000, 1000)}  # both ranges read again, once
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    km, reads = _refit_reads(store, ck)  # and rewritten with the right contents
    assert reads == {}


def test_file_with_nan_weights_or_edited_numbers_is_recomputed(store, tmp_path):
    ck = tmp_path / "ck"
    ref = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(
        open_array(store, chunks=1_000)
    )
    first, second = (ck / name for name in _files(ck)[:2])
    for path, edit in ((first, "nan"), (second, "scaled")):
        with np.load(path) as data:
            fields = dict(data)
        fields["weights"] = fields["weights"] * (np.nan if edit == "nan" else 2.0)
        np.savez(path, **fields)
    km, reads = _refit_reads(store, ck)
    assert reads == {r: 1 for r in range(0, 8000, 1000)}
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def test_truncated_or_old_format_file_is_recomputed(store, tmp_path):
    ck = tmp_path / "ck"
    ref = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(
        open_array(store, chunks=1_000)
    )
    first, second = (ck / name for name in _files(ck)[:2])
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    Summary.load(second).save(second)  # a plain summary: says nothing of what it covers
    km, reads = _refit_reads(store, ck)
    assert reads == {r: 1 for r in range(0, 8000, 1000)}
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def test_waves_save_their_roots_and_resume(store, tmp_path, monkeypatch):
    # 24 chunks in waves of 4 x 4 = 16 chunks: ranges of 4 chunks and the roots of two waves.
    monkeypatch.setattr(_waves, "WAVE_CHUNKS", 16)
    ck = tmp_path / "ck"
    X = open_array(store, chunks=1_000)
    ref = StreamingKMeans(4, random_state=0, split_every=4).fit(X)
    km = StreamingKMeans(4, random_state=0, split_every=4, checkpoint=ck).fit(X)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    ranges = [(s, s + 4) for s in range(0, 24, 4)]
    assert _ranges(ck) == sorted([*ranges, (0, 16), (16, 24)])
    # The first wave's root is enough to skip its 16 chunks; the second wave lost a range.
    for name in _files(ck):
        if name.endswith(("-000000-000004.npz", "-000016-000024.npz", "-000020-000024.npz")):
            (ck / name).unlink()
    km, reads = _refit_reads(store, ck)
    assert reads == {r: 1 for r in range(20_000, 24_000, 1000)}
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


# ---------------------------------------------------------------------- data and parameters
def test_cosine_checkpoint_files_are_not_shared_with_euclidean(store, tmp_path):
    Xd = open_array(store, chunks=1_000)
    ck = tmp_path / "ck"
    StreamingKMeans(6, random_state=0, checkpoint=ck).fit(Xd)
    n_files = len(list(ck.iterdir()))
    km = StreamingKMeans(6, random_state=0, checkpoint=ck, metric="cosine").fit(Xd)
    ref = StreamingKMeans(6, random_state=0, metric="cosine").fit(Xd)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert len(list(ck.iterdir())) == 2 * n_files


def _rewrite_values(path, rng):
    """New values, same shape: only the chunk files change (zarr.json is not rewritten)."""
    array = zarr.open_array(path, mode="r+")
    new = rng.standard_normal(array.shape).astype(array.dtype)
    time.sleep(0.01)
    array[:] = new
    return new


@pytest.mark.parametrize("opener", ["open_array", "da.from_zarr"])
def test_rewritten_store_is_read_again_with_a_checkpoint(tmp_path, rng, opener):
    path = tmp_path / "x.zarr"
    zarr.create_array(path, data=rng.standard_normal((2000, 4)).astype(np.float32), chunks=(250, 4))
    meta = (path / "zarr.json").stat().st_mtime_ns

    def load():
        return open_array(path, chunks=250) if opener == "open_array" else da.from_zarr(str(path))

    params = dict(n_clusters=3, random_state=0, checkpoint=tmp_path / "ckpt")
    first = StreamingKMeans(**params).fit(load())
    new = _rewrite_values(path, rng)
    assert (path / "zarr.json").stat().st_mtime_ns == meta
    second = StreamingKMeans(**params).fit(load())
    ref = StreamingKMeans(3, random_state=0).fit(da.from_array(new, chunks=(250, 4)))
    assert not np.array_equal(first.cluster_centers_, second.cluster_centers_)
    np.testing.assert_array_equal(second.cluster_centers_, ref.cluster_centers_)
    # Unchanged data: the files are used, nothing is read.
    X = load()
    Xc, counter = counting_like(X, zarr.open(path, mode="r"))
    third = StreamingKMeans(**params).fit(Xc if opener == "open_array" else X)
    np.testing.assert_array_equal(third.cluster_centers_, second.cluster_centers_)
    if opener == "open_array":
        assert counter.reads == {}


# ---------------------------------------------------------------------- refinement passes
@pytest.fixture
def refine_store(tmp_path):
    return mixture_store(tmp_path, 16_000)


def _refine_files(ck):
    return sorted(Path(ck).glob("refine-*.npz"), key=lambda p: (p.stat().st_mtime_ns, p.name))


def test_checkpoint_resume_reads_only_unfinished_ranges_of_a_pass(refine_store, tmp_path):
    X = open_array(refine_store, chunks=1_000)
    params = dict(random_state=0, split_every=4, refine_passes=2)
    ref = StreamingKMeans(4, **params).fit(X)
    ck = tmp_path / "ck"
    first = StreamingKMeans(4, checkpoint=ck, **params).fit(X)
    np.testing.assert_array_equal(first.cluster_centers_, ref.cluster_centers_)
    assert first.inertia_ == ref.inertia_
    files = _refine_files(ck)
    keys = {p.name.split("-")[1] for p in files}
    assert len(files) == 8 and len(keys) == 2  # 4 ranges per pass, a key per pass
    # As if the second pass had been interrupted after two of its four ranges.
    second = [p for p in files if p.name.split("-")[1] == files[-1].name.split("-")[1]]
    lost = sorted(second, key=lambda p: p.name)[2:]
    for p in lost:
        p.unlink()
    Xc, counter = counting_like(X, zarr.open(refine_store, mode="r"))
    km = StreamingKMeans(4, checkpoint=ck, **params).fit(Xc)
    assert counter.reads == {r: 1 for r in range(8_000, 16_000, 1_000)}
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_
    Xc, counter = counting_like(X, zarr.open(refine_store, mode="r"))
    StreamingKMeans(4, checkpoint=ck, **params).fit(Xc)
    assert counter.reads == {}


def test_edited_refine_file_is_recomputed(refine_store, tmp_path):
    X = open_array(refine_store, chunks=1_000)
    ck = tmp_path / "ck"
    params = dict(random_state=0, split_every=4, refine_passes=1, checkpoint=ck)
    ref = StreamingKMeans(4, **params).fit(X)
    path = _refine_files(ck)[0]
    with np.load(path) as f:
        fields = {k: f[k] for k in f.files}
    fields["sq"] = fields["sq"] * 2
    np.savez(path, **fields)
    Xc, counter = counting_like(X, zarr.open(refine_store, mode="r"))
    km = StreamingKMeans(4, **params).fit(Xc)
    assert counter.n_reads == 4
    assert km.inertia_ == ref.inertia_


# ---------------------------------------------------------------------- object stores
def test_refine_on_s3_data_with_an_s3_checkpoint(s3_server, s3_bucket):
    import s3fs

    options = s3_server["storage_options"]
    url = f"{s3_bucket}/x.zarr"
    X = make_mixture(6_000, 4, 8, chunks=1_000, random_state=5, dtype=np.float64)
    X.to_zarr(zarr.storage.FsspecStore.from_url(url, storage_options=options))
    ckpt = f"{s3_bucket}/ckpt"
    params = dict(random_state=0, split_every=2, refine_passes=1)
    ref = StreamingKMeans(4, **params).fit(X)
    params.update(checkpoint=ckpt, storage_options=options)
    km = StreamingKMeans(4, **params).fit(open_array(url, chunks=1_000, storage_options=options))
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    fs = s3fs.S3FileSystem(**options)
    fs.invalidate_cache()
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(ckpt.removeprefix("s3://"))]
    assert sum(n.startswith("refine-") for n in names) == 3  # 6 chunks, split_every=2
    again = StreamingKMeans(4, **params).fit(open_array(url, chunks=1_000, storage_options=options))
    assert again.inertia_ == ref.inertia_


def test_checkpoint_storage_options_reach_the_tasks_without_any_environment(
    s3_server, s3_bucket, tmp_path
):
    """A checkpoint URL reached with ``storage_options`` alone (no AWS variables, a fresh
    process): every file is saved through the options, and the model file holds none of them."""
    import json

    import s3fs

    options = s3_server["storage_options"]
    script = tmp_path / "fit.py"
    script.write_text(
        "import json, sys\n"
        "import numpy as np\n"
        "from dask_streamkm import StreamingKMeans\n"
        "options = json.loads(sys.argv[1])\n"
        "X = np.random.default_rng(0).normal(size=(1600, 3))\n"
        "import dask.array as da\n"
        "km = StreamingKMeans(3, random_state=0, checkpoint=sys.argv[2], storage_options=options)\n"
        "km.fit(da.from_array(X, chunks=(200, -1)))\n"
        "km.save(sys.argv[3])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    ckpt = f"{s3_bucket}/ckpt"
    cmd = [sys.executable, str(script), json.dumps(options), ckpt, str(tmp_path / "m.npz")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    files = s3fs.S3FileSystem(**options).find(ckpt)
    assert len([f for f in files if f.endswith(".npz")]) == 1  # 8 chunks, split_every=8
    assert S3_SECRET.encode() not in (tmp_path / "m.npz").read_bytes()
    assert StreamingKMeans.load(tmp_path / "m.npz").storage_options is None


# ---------------------------------------------------------------------- the engine's plug-in
def test_the_summary_and_a_refinement_pass_take_a_checkpoint_through_the_same_call(store, tmp_path):
    # One call with or without a checkpoint, the same result type and numbers; with one, a
    # second call loads every range and reads no chunk.
    X = open_array(store, chunks=1_000)
    params = _graph.SummaryParams(
        size=32, method="stream", mini_batch_size=256, split_every=4, budget=400, entropy=3
    )
    checkpoint = Checkpoint.open(tmp_path / "ck", random_state=0)
    plain = _graph.fit_summary(X, None, params)
    centers = plain.centroids[:4]
    plain_stats = _refine.refine_pass(X, None, centers, split_every=4)
    for _ in range(2):
        Xc, counter = counting_like(X, zarr.open(store, mode="r"))
        saved = _graph.fit_summary(Xc, None, params, checkpoint=checkpoint)
        stats = _refine.refine_pass(
            Xc, None, centers, split_every=4, checkpoint=checkpoint, pass_number=0
        )
        assert type(saved) is type(plain) and type(stats) is type(plain_stats)
        for field in ("weights", "linear_sums", "square_sums"):
            np.testing.assert_array_equal(getattr(saved, field), getattr(plain, field))
        for got, want in zip(stats.arrays, plain_stats.arrays, strict=True):
            np.testing.assert_array_equal(got, want)
    assert counter.reads == {}
    assert len(_files(tmp_path / "ck")) == 6  # 24 chunks in ranges of 4
    assert len(list((tmp_path / "ck").glob("refine-*.npz"))) == 6
    assert Checkpoint.open(None, random_state=0) is None
