"""Every example runs end to end at small size (``--small``), in a fresh interpreter."""

import pytest
from _helpers import EXAMPLES, ROWS, event_row, run_example

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_examples_have_a_title_and_cells():
    for path in sorted(EXAMPLES.glob("*.py")):
        text = path.read_text()
        assert text.startswith('"""\n'), path.name
        title, underline = text.splitlines()[1:3]
        assert set(underline) == {"="} and len(underline) == len(title), path.name
        assert "# %%" in text, path.name


def test_quickstart(tmp_path):
    out = run_example("quickstart.py", cwd=tmp_path)
    assert "loaded model and sklearn KMeans predict the same labels: True" in out
    assert "exact ssd" in out and "k=10: cost bound" in out


def test_out_of_core_zarr(tmp_path):
    out = run_example("out_of_core_zarr.py", "--dir", tmp_path / "stores", cwd=tmp_path)
    assert "after partial_fit: 50,000 rows seen" in out
    assert (tmp_path / "stores" / "day1_labels.zarr").exists()
    assert (tmp_path / "stores" / "model.npz").exists()


def test_gdelt_workflow_generated(tmp_path):
    png = tmp_path / "gdelt.png"
    out = run_example("gdelt_workflow.py", "--out", png, cwd=tmp_path)
    assert "generated 20,000 synthetic events" in out
    assert "x 26 features" in out
    assert "suggested k =" in out and "'msd'" in out and "'ssd'" in out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_gdelt_workflow_on_a_given_file(tmp_path):
    events = tmp_path / "events.csv"
    # Enough rows for k = 12: the sample rows with jittered tones.
    lines = [
        event_row(i, code, articles + i % 7, tone + i / 100, a1, a2)
        for i in range(40)
        for code, articles, tone, a1, a2 in ROWS
    ]
    events.write_text("\n".join(lines) + "\n")
    out = run_example("gdelt_workflow.py", events, "--out", tmp_path / "g.png", cwd=tmp_path)
    assert "generated" not in out
    assert "240 events kept x 10 features" in out  # 6 of 9 sample rows kept, 4 codes


def mnist_cached():
    from dask_streamkm.datasets import cache_dir

    return (cache_dir() / "mnist.npz").exists()


@pytest.mark.skipif(
    not mnist_cached(),
    reason="MNIST is not cached (run "
    "dask_streamkm.datasets.load_mnist() once, with pip able to download)",
)
def test_choose_k_mnist(tmp_path):
    png = tmp_path / "mnist.png"
    out = run_example("choose_k_mnist.py", "--out", png, cwd=tmp_path)
    assert "MNIST: 3,000 images x 784 pixels" in out
    assert "adjusted Rand index" in out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_embeddings_dedup(tmp_path):
    out = run_example("embeddings_dedup.py", cwd=tmp_path)
    assert "20,000 unit vectors x 64" in out
    assert "found: 100.0%" in out


def test_time_vs_cost(tmp_path):
    png = tmp_path / "time.png"
    out = run_example("time_vs_cost.py", "--out", png, cwd=tmp_path)
    assert "X: 20,000 rows x 16 features, k=20" in out
    for name in ("StreamingKMeans(refine_passes=1)", "MiniBatchKMeans", "KMeans(n_init=10)"):
        assert name in out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_cluster_picture(tmp_path):
    png = tmp_path / "picture.png"
    out = run_example("cluster_picture.py", "--out", png, cwd=tmp_path)
    assert "20,000 rows in 4 chunks" in out
    assert "total weight of the groups: 20,000 (every row counted once)" in out
    assert png.read_bytes()[:8] == PNG_MAGIC
