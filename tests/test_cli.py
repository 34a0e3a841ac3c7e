"""The dask-streamkm command line: make-data, fit, predict, score, demo, and one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr

from dask_streamkm import StreamingKMeans
from dask_streamkm.cli import build_parser, main
from dask_streamkm.datasets import make_mixture
from dask_streamkm.io import open_array

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def store(tmp_path, capsys):
    path = tmp_path / "x.zarr"
    rc, out, err = run(
        capsys,
        "make-data",
        path,
        "--rows",
        12_000,
        "--features",
        5,
        "--components",
        8,
        "--seed",
        1,
        "--chunks",
        1_500,
    )
    assert rc == 0, err
    return path


def test_make_data_writes_the_mixture_chunk_by_chunk(store, capsys):
    z = zarr.open(store, mode="r")
    assert z.shape == (12_000, 5) and z.chunks == (1_500, 5) and z.dtype == np.float32
    expected = make_mixture(12_000, 5, 8, chunks=1_500, random_state=1).compute()
    np.testing.assert_array_equal(z[:], expected)
    rc, _, err = run(capsys, "make-data", store, "--rows", 10, "--features", 2)
    assert rc == 1 and "already exists; remove it or pass --overwrite" in err


def test_make_data_sorted(tmp_path, capsys):
    rc, _, err = run(
        capsys,
        "make-data",
        tmp_path / "s.zarr",
        "--rows",
        1000,
        "--features",
        2,
        "--components",
        3,
        "--sorted",
        "--chunks",
        500,
        "--quiet",
    )
    assert rc == 0, err
    expected = make_mixture(1000, 2, 3, chunks=500, random_state=0, sorted_by_component=True)
    np.testing.assert_array_equal(zarr.open(tmp_path / "s.zarr", mode="r")[:], expected.compute())


def test_fit_predict_score_round_trip(store, tmp_path, capsys):
    model_path = tmp_path / "m.npz"
    rc, out, err = run(
        capsys,
        "fit",
        store,
        "--k",
        4,
        "--out",
        model_path,
        "--random-state",
        3,
        "--summary-size",
        64,
        "--method",
        "lloyd",
        "--split-every",
        3,
        "--chunks",  # the store's chunks (by default they are combined up to 128 MiB)
        1500,
    )
    assert rc == 0, err
    for word in (
        "rows          12,000 x 5",
        "chunks        8",
        "rows/s",
        "summary size",
        "cost bound",
        f"model written to {model_path}",
    ):
        assert word in out
    assert "8/8 chunks" in err  # the progress bar
    X = open_array(store, chunks=1500)
    ref = StreamingKMeans(4, random_state=3, summary_size=64, method="lloyd", split_every=3).fit(X)
    model = StreamingKMeans.load(model_path)
    np.testing.assert_array_equal(model.cluster_centers_, ref.cluster_centers_)
    assert f"{ref.inertia_:.6g}" in out

    rc, out, err = run(capsys, "score", store, model_path)
    assert rc == 0, err
    inertia = -ref.score(X)
    assert f"inertia                {inertia:.6g}" in out
    assert f"mean squared distance  {inertia / 12_000:.6g}" in out

    rc, out, err = run(capsys, "predict", store, model_path, "--out", tmp_path / "labels.zarr")
    assert rc == 0, err
    labels = zarr.open(tmp_path / "labels.zarr", mode="r")[:]
    np.testing.assert_array_equal(labels, ref.predict(X).compute())


def test_fit_chunks_and_schedulers_give_the_same_centers(store, tmp_path, capsys):
    centers = []
    for scheduler in ("threads", "sync", "processes"):
        out_path = tmp_path / f"{scheduler}.npz"
        rc, _, err = run(
            capsys,
            "fit",
            store,
            "--k",
            3,
            "--chunks",
            3000,
            "--scheduler",
            scheduler,
            "--n-workers",
            2,
            "--out",
            out_path,
            "--quiet",
        )
        assert rc == 0, err
        assert err == ""
        centers.append(StreamingKMeans.load(out_path).cluster_centers_)
    np.testing.assert_array_equal(centers[0], centers[1])
    np.testing.assert_array_equal(centers[0], centers[2])


def test_other_inputs(tmp_path, capsys, rng):
    pd = pytest.importorskip("pandas")
    data = rng.standard_normal((3000, 3))
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("features", data=data, chunks=(1000, 3))
    group.create_array("ids", data=np.arange(3000), chunks=(1000,))
    (tmp_path / "npy").mkdir()
    for i in range(3):
        np.save(tmp_path / "npy" / f"part-{i}.npy", data[i * 1000 : (i + 1) * 1000])
    frame = pd.DataFrame(data, columns=["a", "b", "c"]).assign(name="x")
    (tmp_path / "pq").mkdir()
    for i in range(3):
        frame.iloc[i * 1000 : (i + 1) * 1000].to_parquet(tmp_path / "pq" / f"part-{i}.parquet")
    models = {}
    for spec, extra in (
        (f"{tmp_path / 'g.zarr'}:features", ()),
        (tmp_path / "npy", ()),
        (tmp_path / "pq", ("--columns", "a,b,c")),
    ):
        out_path = tmp_path / f"m{len(models)}.npz"
        rc, out, err = run(
            capsys, "fit", spec, "--k", 3, "--chunks", 1000, "--out", out_path, *extra
        )
        assert rc == 0, err
        assert "rows          3,000 x 3" in out and "chunks        3" in out
        models[str(spec)] = StreamingKMeans.load(out_path).cluster_centers_
    ref = StreamingKMeans(3, random_state=0).fit(open_array(tmp_path / "npy"))
    for centers in models.values():
        np.testing.assert_allclose(centers, ref.cluster_centers_, rtol=1e-12, atol=1e-12)
    rc, _, err = run(capsys, "fit", tmp_path / "pq", "--k", 3, "--out", tmp_path / "x.npz")
    assert rc == 1 and "non-numeric columns ['name']; choose numeric ones with --columns" in err


def test_columns_in_another_order_than_the_fit_are_refused(tmp_path, capsys, rng):
    pd = pytest.importorskip("pandas")
    data = rng.standard_normal((600, 3)) + [0.0, 5.0, 10.0]
    pd.DataFrame(data, columns=["a", "b", "c"]).to_parquet(tmp_path / "x.parquet")
    model = tmp_path / "m.npz"
    rc, _, err = run(
        capsys, "fit", tmp_path / "x.parquet", "--k", 2, "--columns", "a,b", "--out", model
    )
    assert rc == 0, err
    assert list(StreamingKMeans.load(model).feature_names_in_) == ["a", "b"]
    # The same columns in another order were read against the centers' coordinates: a
    # wrong score and labels without an error.
    for command in (("score",), ("predict", "--out", tmp_path / "l.zarr")):
        rc, _, err = run(
            capsys, command[0], tmp_path / "x.parquet", model, "--columns", "b,a", *command[1:]
        )
        _one_line_error(
            rc, err, "--columns b,a: the model was fitted on the columns a,b (in that order)"
        )
    assert not (tmp_path / "l.zarr").exists()
    rc, out, err = run(
        capsys, "score", tmp_path / "x.parquet", model, "--columns", "a,b", "--quiet"
    )
    assert rc == 0 and err == "", err  # no warning that the rows have no feature names
    km = StreamingKMeans.load(model)
    expected = -km.score(pd.DataFrame(data[:, :2], columns=["a", "b"]))
    assert f"inertia                {expected:.6g}" in out


def test_a_parquet_fit_without_columns_checks_the_columns_of_predict_and_score(
    tmp_path, capsys, rng
):
    # Without --columns the model stored no names, so a table of the same columns in another
    # order was read against the centers' coordinates: wrong labels without an error.
    pd = pytest.importorskip("pandas")
    data = rng.standard_normal((600, 3)) + [0.0, 5.0, 10.0]
    frame = pd.DataFrame(data, columns=["a", "b", "c"])
    frame.to_parquet(tmp_path / "x.parquet")
    frame[["c", "a", "b"]].to_parquet(tmp_path / "y.parquet")
    model = tmp_path / "m.npz"
    rc, _, err = run(capsys, "fit", tmp_path / "x.parquet", "--k", 2, "--out", model)
    assert rc == 0, err
    assert list(StreamingKMeans.load(model).feature_names_in_) == ["a", "b", "c"]
    for command in (("score",), ("predict", "--out", tmp_path / "l.zarr")):
        rc, _, err = run(capsys, command[0], tmp_path / "y.parquet", model, *command[1:])
        _one_line_error(
            rc,
            err,
            f"{str(tmp_path / 'y.parquet')!r} has the columns c,a,b and no --columns was "
            "given: the model was fitted on the columns a,b,c (in that order), so the rows "
            "would be compared with centers of other columns; pass --columns a,b,c.",
        )
    assert not (tmp_path / "l.zarr").exists()
    # The fix the message names: the model's columns read in its order.
    km = StreamingKMeans.load(model)
    expected = km.predict(frame)
    for table, extra in (("x.parquet", ()), ("y.parquet", ("--columns", "a,b,c"))):
        out_path = tmp_path / f"labels-{table}.zarr"
        rc, _, err = run(
            capsys, "predict", tmp_path / table, model, "--out", out_path, "--quiet", *extra
        )
        assert rc == 0 and err == "", err  # no warning that the rows have no feature names
        np.testing.assert_array_equal(zarr.open(out_path, mode="r")[:], expected)
    # An array input has no names to store, and none is checked.
    np.save(tmp_path / "x.npy", data)
    rc, _, err = run(capsys, "fit", tmp_path / "x.npy", "--k", 2, "--out", tmp_path / "n.npz")
    assert rc == 0, err
    assert not hasattr(StreamingKMeans.load(tmp_path / "n.npz"), "feature_names_in_")
    rc, _, err = run(capsys, "score", tmp_path / "x.npy", model, "--quiet")
    assert rc == 0 and err == "", err


def test_demo_runs_on_a_lazy_mixture(capsys):
    rc, out, err = run(capsys, "demo", "--rows", 40_000, "--chunks", 10_000, "--k", 5, "--quiet")
    assert rc == 0, err
    assert "demo: 40,000 x 32 float32 Gaussian mixture of 20 components" in out
    assert "chunks        4" in out and "cost bound" in out


def _one_line_error(rc, err, match):
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert match in lines[0], lines[0]


def test_user_errors_print_one_line(store, tmp_path, capsys):
    model_path = tmp_path / "m.npz"
    assert run(capsys, "fit", store, "--k", 3, "--out", model_path, "--quiet")[0] == 0
    zarr.create_array(tmp_path / "v.zarr", data=np.arange(10.0))
    cases = [
        (("fit", tmp_path / "missing.zarr", "--k", 3), "no such file or directory"),
        (("fit", tmp_path / "v.zarr", "--k", 3), "holds an array of shape (10,); expected 2-D"),
        (("fit", store, "--k", 20_000), "--k 20000 is larger than the 12000 rows of the data"),
        (
            ("fit", store, "--k", 3, "--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", 1),
            "--scheduler tcp://127.0.0.1:1: could not connect to a Dask scheduler within 1 s",
        ),
        (
            ("fit", store, "--k", 3, "--summary-size", 2),
            'summary_size=2 should be "auto" or an integer >= 3',
        ),
        (("score", store, tmp_path / "missing.npz"), "missing.npz"),
        (
            ("predict", tmp_path / "v.zarr", model_path, "--out", tmp_path / "l.zarr"),
            "expected 2-D",
        ),
        (("score", f"{store}:a", model_path), "is a zarr array, not a group"),
    ]
    for args, match in cases:
        rc, _, err = run(capsys, *args)
        _one_line_error(rc, err, match)


def test_k_larger_than_distinct_rows(tmp_path, capsys):
    zarr.create_array(tmp_path / "c.zarr", data=np.ones((100, 2)), chunks=(50, 2))
    # As scikit-learn's KMeans: a ConvergenceWarning and duplicate centers, not an error.
    with pytest.warns(UserWarning, match=r"distinct clusters \(1\) found smaller than n_clusters"):
        rc, _, _ = run(
            capsys, "fit", tmp_path / "c.zarr", "--k", 5, "--quiet", "--out", tmp_path / "m.npz"
        )
    assert rc == 0
    assert len(StreamingKMeans.load(tmp_path / "m.npz").cluster_centers_) == 5


def test_console_script_process_exit_status(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "dask_streamkm.cli",
        "fit",
        str(tmp_path / "nope.zarr"),
        "--k",
        "2",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"dask-streamkm fit: error: no such file or directory: '{tmp_path / 'nope.zarr'}'."
    )


def test_each_fit_flag_maps_to_a_parameter():
    args = build_parser().parse_args(
        [
            "fit",
            "s.zarr",
            "--k",
            "5",
            "--method",
            "lloyd",
            "--summary-size",
            "100",
            "--split-every",
            "4",
            "--mini-batch-size",
            "512",
            "--merge-budget",
            "1000",
            "--n-init",
            "3",
            "--max-iter",
            "50",
            "--tol",
            "0.01",
            "--random-state",
            "7",
            "--checkpoint",
            "ck",
        ]
    )
    from dask_streamkm.cli import _model_params

    params = _model_params(args)
    assert StreamingKMeans(**params).get_params() == {
        **StreamingKMeans().get_params(),
        "n_clusters": 5,
        "method": "lloyd",
        "summary_size": 100,
        "split_every": 4,
        "mini_batch_size": 512,
        "merge_budget": 1000,
        "n_init": 3,
        "max_iter": 50,
        "tol": 0.01,
        "random_state": 7,
        "checkpoint": "ck",
    }


def test_progress_bar_adds_up_over_several_computes(capsys):
    import dask.array as da

    from dask_streamkm.cli import _progress

    X = da.ones((40, 2), chunks=(10, 2))
    with dask.config.set(scheduler="sync"), _progress(None, ("part",), "fit", False) as counts:
        for wave in range(3):  # three computes, as a fit in waves makes
            X.map_blocks(np.add, wave, name=f"part-{wave}").compute()
    assert counts == {"done": 12, "total": 12}
    assert "12/12 chunks" in capsys.readouterr().err
    with dask.config.set(scheduler="sync"), _progress(None, ("part",), "fit", True) as counts:
        X.map_blocks(lambda b: b, name="part-q").compute()
    assert counts == {"done": 4, "total": 4}
    assert capsys.readouterr().err == ""


def test_storage_options_are_parsed_as_json_when_they_parse_and_never_printed(tmp_path, capsys):
    from dask_streamkm._remote import redact
    from dask_streamkm.cli import _storage_options

    args = build_parser().parse_args(
        [
            "fit",
            "s3://bucket/x.zarr",
            "--k",
            "2",
            "--storage-option",
            "key=AKIDEXAMPLE",
            "--storage-option",
            "secret=wJalrXUtnFEMI",
            "--storage-option",
            'client_kwargs={"endpoint_url": "http://127.0.0.1:9"}',
            "--storage-option",
            "anon=false",
            "--storage-option",
            "default_block_size=1024",
        ]
    )
    assert _storage_options(args) == {
        "key": "AKIDEXAMPLE",
        "secret": "wJalrXUtnFEMI",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
        "anon": False,
        "default_block_size": 1024,
    }
    assert _storage_options(build_parser().parse_args(["fit", "x.zarr", "--k", "2"])) is None
    text = redact("denied for key AKIDEXAMPLE with secret wJalrXUtnFEMI", _storage_options(args))
    assert text == "denied for key *** with secret ***"
    assert redact("cannot open 'https://user:pw@host/x.zarr'", None) == (
        "cannot open 'https://host/x.zarr'"
    )
    # every command that reads or writes a path takes the flag
    for command in (
        ["make-data", "s.zarr", "--rows", "1", "--features", "1"],
        ["fit", "s.zarr", "--k", "2"],
        ["predict", "s.zarr", "m.npz", "--out", "l.zarr"],
        ["score", "s.zarr", "m.npz"],
        ["elbow", "s.zarr"],
        ["demo"],
    ):
        args = build_parser().parse_args([*command, "--storage-option", "token=abc"])
        assert _storage_options(args) == {"token": "abc"}
    # a malformed pair is refused without echoing it (it may hold a credential)
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["fit", "s.zarr", "--k", "2", "--storage-option", "hunter2secret"]
        )
    err = capsys.readouterr().err
    assert "expected KEY=VALUE" in err and "hunter2secret" not in err


def test_a_failing_command_never_prints_its_storage_options(store, tmp_path, capsys):
    rc, out, err = run(
        capsys,
        "score",
        store,
        tmp_path / "AKIDSECRETVALUE.npz",
        "--storage-option",
        "key=AKIDSECRETVALUE",
    )
    assert rc == 1 and "AKIDSECRETVALUE" not in out + err and "***" in err


def test_progress_counts_small_chunks_summarized_several_to_a_task(capsys):
    import dask.array as da

    from dask_streamkm import StreamingKMeans, _waves
    from dask_streamkm._connect import _chunk_count
    from dask_streamkm.cli import FIT_TASKS, _progress

    assert [_chunk_count(k, FIT_TASKS) for k in ("leaf-ab12", ("leafx8-ab12", 1, 0))] == [1, 8]
    assert [_chunk_count(k, FIT_TASKS) for k in ("merge-ab12", "getitem-leaf-ab12")] == [0, 1]
    # 10 chunks of 10 x 2 (160 bytes) in groups of 4, 4 and 2: each group one task.
    X = da.ones((100, 2), chunks=(10, 2))
    assert _waves.small_chunks(X, 0, 10)
    with dask.config.set(scheduler="sync"), _progress(None, FIT_TASKS, "fit", False) as counts:
        StreamingKMeans(2, random_state=0, split_every=4).fit(X)
    assert counts == {"done": 10, "total": 10}
    assert "10/10 chunks" in capsys.readouterr().err
