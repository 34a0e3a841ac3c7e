"""Output safety and scheduler connection as plain functions (no argparse), and their CLI lines."""

import os

import pytest

from dask_streamkm import _location, _outputs
from dask_streamkm._connect import SchedulerConnectError, scheduler
from dask_streamkm.cli import main


def test_an_output_inside_or_around_an_input_is_refused_even_with_overwrite(tmp_path):
    store = tmp_path / "x.zarr"
    store.mkdir()
    for out in (store, store / "labels.zarr", tmp_path):
        with pytest.raises(_outputs.OutputError, match="would destroy the input"):
            _outputs.check_outputs(
                [("--out", out, "store")], [("input", f"{store}:data")], overwrite=True
            )
    # a sibling is fine; the ":ARRAY" suffix of a zarr group is not part of the path
    _outputs.check_outputs([("--out", tmp_path / "y.zarr", "store")], [("input", f"{store}:a")])
    assert _outputs.input_path(f"{store}:data") == str(store)
    assert _outputs.overlap(
        _outputs.location("memory://b/x.zarr"), _outputs.location("memory://b/x.zarr/0")
    )
    assert not _outputs.overlap(_outputs.location("memory://b/x"), _outputs.location("/b/x"))


def test_write_atomic_replaces_a_store_only_once_the_new_one_is_written(tmp_path):
    out = tmp_path / "labels.zarr"
    out.mkdir()
    (out / "old").write_text("old")

    def fail(tmp):
        os.mkdir(tmp)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _location.write_atomic(out, fail)
    assert sorted(os.listdir(tmp_path)) == ["labels.zarr"]  # old store kept, no leftovers
    assert (out / "old").read_text() == "old"

    def write(tmp):
        os.mkdir(tmp)
        with open(os.path.join(tmp, "new"), "w") as fh:
            fh.write("new")

    _location.write_atomic(out, write)
    assert sorted(os.listdir(out)) == ["new"] and sorted(os.listdir(tmp_path)) == ["labels.zarr"]


def test_a_scheduler_that_is_neither_a_name_nor_an_address_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SchedulerConnectError, match="not a scheduler name or address"):
        with scheduler("thread"):
            pass
    rc = main(["demo", "--rows", "100", "--chunks", "50", "--k", "2", "--scheduler", "thread"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert "--scheduler 'thread' is not a scheduler name or address" in err[0]
    assert "threads|processes|sync|local-cluster" in err[0]
