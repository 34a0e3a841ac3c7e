"""Draw the benchmark figures of the README and the docs from the recorded tables.

``python docs/benchmark_figures.py [OUT_DIR]`` (default ``docs/_static``; the docs build runs
it too). Nothing is measured here: every number below is copied from a table in
``docs/benchmarks.rst``, which names the command, date and machine that produced it, and each
figure's caption repeats them. Re-running a benchmark means updating its table there and the
numbers here together.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: ``python benchmarks/speed.py --cases 1m32 500k64 --no-scaling --methods ours ours_fast
#: reference minibatch faiss faiss_all`` (2 cores, 23.5 GiB, Intel Xeon, x86_64,
#: 2026-12-06T17:30+00:00; ours and MiniBatchKMeans from the run on today's code at 22:27
#: with ``--methods ours ours_fast minibatch --repeat 3``, faiss's sample from one at 19:55):
#: method -> (wall s,
#: inertia ratio to the sklearn reference).
SPEED = {
    "1M x 32, k=100 (reference KMeans(n_init=10))": {
        "StreamingKMeans (defaults)": (1.90, 1.0011),
        "StreamingKMeans preset fast": (1.39, 1.0018),
        "sklearn KMeans(n_init=10)": (145.67, 1.0000),
        "sklearn MiniBatchKMeans": (3.60, 1.0253),
        "faiss Kmeans (256 rows/centroid)": (0.139, 1.1208),
        "faiss Kmeans (every row)": (3.04, 1.1651),
    },
    "500k x 64, k=500 (reference KMeans(n_init=3))": {
        "StreamingKMeans (defaults)": (5.25, 0.9859),
        "StreamingKMeans preset fast": (1.87, 0.9837),
        "sklearn KMeans(n_init=3)": (130.65, 1.0000),
        "sklearn MiniBatchKMeans": (5.15, 1.5384),
        "faiss Kmeans (256 rows/centroid)": (1.73, 1.7653),
        "faiss Kmeans (every row)": (5.43, 1.7488),
    },
}
#: Labels drawn under their point, where they would overlap a neighbour's.
LABELS_BELOW = {
    "1M x 32, k=100 (reference KMeans(n_init=10))": ("StreamingKMeans (defaults)",),
    "500k x 64, k=500 (reference KMeans(n_init=3))": (
        "faiss Kmeans (every row)",
        "StreamingKMeans (defaults)",
    ),
}
SPEED_SOURCE = "python benchmarks/speed.py (2 cores, 2026-12-06)"

#: The scaling table of ``python benchmarks/speed.py --cases 1m32 500k64 --skip-reference
#: --methods ours ours_stream minibatch --repeat 5`` (2 cores, 2026-11-30 01:33 UTC):
#: rows -> (wall s, peak RSS MiB) of StreamingKMeans(n_clusters=100) on a lazy mixture.
SCALING = {1_000_000: (1.87, 434), 4_000_000: (4.04, 435), 16_000_000: (16.48, 478)}
SCALING_SOURCE = "python benchmarks/speed.py --cases 1m32 500k64 ... (2 cores, 2026-11-30)"

#: ``python benchmarks/scale.py`` (threads; 2 cores, 2026-11-29): chunks of 64 x 4 ->
#: (fit s, Dask's X.sum(axis=0) s, fit peak MiB, sum peak MiB).
SCALE = {
    1_000: (1.4, 1.1, 223, 205),
    10_000: (10.0, 10.5, 232, 249),
    100_000: (81.2, 71.9, 240, 672),
    300_000: (212.8, 247.5, 254, 1664),
    1_000_000: (819.2, 798.3, 294, 4336),
}
SCALE_SOURCE = "python benchmarks/scale.py (threads, 2 cores, 2026-11-29)"


def _two_panels(size):
    """A figure of two panels side by side (matplotlib's Agg backend, no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(1, 2)


def _save(fig, axes, title, path):
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, metadata={"Software": None})


def time_vs_ratio(path):
    fig, axes = _two_panels((11, 4.2))
    for ax, (case, rows) in zip(axes, SPEED.items(), strict=True):
        for name, (seconds, ratio) in rows.items():
            ours = name.startswith("StreamingKMeans")
            ax.scatter(
                seconds,
                ratio,
                s=60 if ours else 36,
                marker="o" if ours else "s",
                color="C3" if ours else "C0",
                zorder=3,
            )
            below = name in LABELS_BELOW.get(case, ())
            ax.annotate(
                name,
                (seconds, ratio),
                textcoords="offset points",
                xytext=(6, -12 if below else 4),
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.margins(x=0.35, y=0.1)
        ax.set_xlabel("wall time, s (log scale)")
        ax.set_ylabel("inertia / reference inertia (lower is better)")
        ax.set_title(case, fontsize=10)
    _save(fig, axes, f"Time against cost, every peer on the same data: {SPEED_SOURCE}", path)


def memory_flat(path):
    rows = sorted(SCALING)
    millions = [r / 1e6 for r in rows]
    fig, (ax_t, ax_m) = _two_panels((10, 3.6))
    ax_t.plot(millions, [SCALING[r][0] for r in rows], "o-", color="C3")
    ax_t.set_xlabel("rows (millions), 32 features, k=100")
    ax_t.set_ylabel("fit wall time, s")
    ax_m.plot(millions, [SCALING[r][1] for r in rows], "o-", color="C3")
    ax_m.set_ylim(0, 1.2 * max(v[1] for v in SCALING.values()))
    ax_m.set_xlabel("rows (millions)")
    ax_m.set_ylabel("peak process RSS, MiB")
    title = f"Time grows with the rows, memory does not: {SCALING_SOURCE}"
    _save(fig, (ax_t, ax_m), title, path)


def scale_chunks(path):
    chunks = sorted(SCALE)
    fig, axes = _two_panels((10, 3.6))
    for ax, (fit, dask_sum), label in zip(
        axes, ((0, 1), (2, 3)), ("wall time, s", "peak client RSS, MiB"), strict=True
    ):
        ax.plot(chunks, [SCALE[c][fit] for c in chunks], "o-", color="C3", label="fit")
        ax.plot(chunks, [SCALE[c][dask_sum] for c in chunks], "s--", color="C0", label="X.sum")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("chunks of 64 x 4 (log scale)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    _save(fig, axes, f"Per chunk count, against Dask's own sum: {SCALE_SOURCE}", path)


def main(out_dir=None):
    out = Path(out_dir) if out_dir else Path(__file__).parent / "_static"
    out.mkdir(parents=True, exist_ok=True)
    time_vs_ratio(out / "time_vs_ratio.png")
    memory_flat(out / "memory_flat.png")
    scale_chunks(out / "scale_chunks.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
