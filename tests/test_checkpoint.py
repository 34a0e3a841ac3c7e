"""Checkpoint and resume: finished chunk ranges are saved and reloaded, not read again."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from _helpers import counting_like, mixture_store

from dask_streamkm import StreamingKMeans, Summary, _waves
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
    assert not list((tmp_path / "ck").glob("*.tmp"))


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
