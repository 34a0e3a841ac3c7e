"""Cluster: the same fit on the threaded scheduler and on distributed workers, side by side.

Each measurement runs in a fresh process (the environment of glibc's allocator is read at
start), in rounds: every round runs every variant once, in an order rotated from round to
round, and the table gives medians over the rounds, so that a slow spell of a shared machine
falls on all variants. Variants:

- ``threads``: the threaded scheduler, ``MALLOC_TRIM_THRESHOLD_`` removed from the environment;
- ``threads trim``: the same with ``MALLOC_TRIM_THRESHOLD_=65536``, what distributed's nanny
  sets for every worker process (with a fixed trim threshold glibc no longer raises its mmap
  threshold, so every large temporary is a fresh mmap whose pages fault in anew);
- ``2x1``, ``1x2``, ``1x1``: a ``distributed.LocalCluster`` of n worker processes x t threads
  with distributed's default worker environment (the nanny's), the data persisted on the
  workers first.

For each variant and case: ``StreamingKMeans(n_clusters=k, random_state=0).fit(X)``, the same
with ``refine_passes=1``, ``score(X)`` and ``predict(X).compute()``, on a lazily generated
float32 mixture (``make_mixture(n, 32, 1000, chunks=100_000)``) persisted in memory first. The
centers of every variant are compared bit for bit (one hash per case). Targets: ``2x1`` within
1.15x of ``threads``; ``threads trim`` within 1.1x of ``threads``; ``1x2`` within 1.1x of
``threads``; ``1x1`` at least 1.7x slower than ``2x1``. The final solve runs on the client
whatever the scheduler (its wall time is timed in every variant): its share f of the ``1x1``
fit bounds what two workers can gain over one, 2 / (1 + f), printed beside the measured ratio.

``--task-memory MB ...``: the peak memory of one task on a chunk of about MB megabytes (64
float32 features), each task type in a fresh process on the synchronous path (the task
function called directly): the peak resident memory above the resident memory with the chunk
in it (a thread samples it every 5 ms), as a multiple of the chunk and in MB, next to the
worker-memory guard's estimate (``_memory.task_peak_bytes``), and its CPU seconds (one BLAS
thread) as rows per second per core. The chunk itself is not counted in "working"; "peak /
chunk" counts it. "leaf tree copy" is the tree leaf with its padded copy whatever the chunk
(``_tree.COPY_BYTES`` raised): faster per row, about 2.5x its chunk.

    python benchmarks/cluster.py                          # both cases, 3 rounds
    python benchmarks/cluster.py --cases 4m32 --rounds 2
    python benchmarks/cluster.py --cases --task-memory 250 1000
    python benchmarks/cluster.py --cases 1m32 --rounds 1 --variants threads "threads trim" 2x1
    python benchmarks/cluster.py --cases --task-memory 250 --tasks "leaf tree" "leaf tree copy"
    python benchmarks/cluster.py --quick                  # 400k rows: checks the script
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from _common import trim_heap  # noqa: E402

#: name -> (title, rows, k)
CASES = {"4m32": ("4M x 32, k=20", 4_000_000, 20), "1m32": ("1M x 32, k=100", 1_000_000, 100)}
QUICK_ROWS = 400_000
CHUNK_ROWS = 100_000
FEATURES = 32
TRIM = "65536"
#: name -> (workers, threads per worker) or None for the threaded scheduler
VARIANTS = {"threads": None, "threads trim": None, "2x1": (2, 1), "1x2": (1, 2), "1x1": (1, 1)}
OPS = ("fit", "fit r1", "score", "predict")
#: (variant, reference, target, kind): variant / reference at most (or, "min", at least) target
TARGETS = (
    ("threads trim", "threads", 1.1, "max"),
    ("2x1", "threads", 1.15, "max"),
    ("1x2", "threads", 1.1, "max"),
    ("1x1", "2x1", 1.7, "min"),
)
TASKS = (
    "leaf tree",
    "leaf tree copy",
    "leaf stream",
    "leaf lloyd",
    "refine leaf",
    "score part",
    "predict labels",
)
MEMORY_FEATURES = 64
MEMORY_K = 20


# --------------------------------------------------------------------------- one process


def _measure(variant, rows, k):
    """Time every op of one variant in this process; return a dict (printed as JSON)."""
    import dask
    import numpy as np

    from dask_streamkm import StreamingKMeans, estimator
    from dask_streamkm.datasets import make_mixture

    # The final solve runs on the client whatever the scheduler: its wall time, timed here,
    # is the serial part of a fit that more workers cannot shorten.
    solve, solve_summary = [0.0], estimator.solve_summary

    def timed_solve(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return solve_summary(*args, **kwargs)
        finally:
            solve[0] += time.perf_counter() - t0

    estimator.solve_summary = timed_solve
    shape = VARIANTS[variant]
    client = None
    if shape is None:
        dask.config.set(scheduler="threads")
    else:
        from distributed import Client, LocalCluster, wait

        workers, threads = shape
        client = Client(
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address=None,
            )
        )
    X = make_mixture(rows, FEATURES, 1000, chunks=CHUNK_ROWS, random_state=0).persist()
    if client is not None:
        wait(X)
    # Warm up imports and pools (in the workers too) on two chunks.
    StreamingKMeans(n_clusters=k, random_state=0).fit(X[: 2 * CHUNK_ROWS])
    out = {"variant": variant, "rows": rows, "k": k, "seconds": {}, "cpu": {}, "hashes": {}}
    out["solve"] = {}
    for op in OPS:
        cpu0 = _cpu_seconds(client)
        solve[0] = 0.0
        t0 = time.perf_counter()
        if op in ("fit", "fit r1"):
            model = StreamingKMeans(
                n_clusters=k, random_state=0, refine_passes=int(op == "fit r1")
            ).fit(X)
            value = model.cluster_centers_
        elif op == "score":
            value = np.array(model.score(X))
        else:
            value = model.predict(X).compute()
        out["seconds"][op] = time.perf_counter() - t0
        out["cpu"][op] = _cpu_seconds(client) - cpu0
        out["solve"][op] = solve[0]
        out["hashes"][op] = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:12]
    if client is not None:
        client.close()
    return out


def _process_cpu():
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_seconds(client):
    """CPU seconds of this process (the driver, where the final solve runs) and of every
    worker process: a measure of the work done that a busy machine inflates far less than
    the wall time."""
    workers = client.run(_process_cpu) if client is not None else {}
    return _process_cpu() + sum(workers.values())


def _task_memory(task, megabytes):
    """Peak memory of one task on one chunk of about ``megabytes`` MB (a dict)."""
    import gc

    import dask.array as da
    import numpy as np
    import psutil

    from dask_streamkm import _memory, _refine, _tasks
    from dask_streamkm._runner import auto_summary_size
    from dask_streamkm.datasets import make_mixture

    rows = int(megabytes * 1e6 // (MEMORY_FEATURES * 4))
    X = make_mixture(rows, MEMORY_FEATURES, 1000, chunks=rows, random_state=0)
    block = np.ascontiguousarray(X.compute(scheduler="sync"))
    centers = block[:: max(1, rows // MEMORY_K)][:MEMORY_K].astype(np.float64)
    size = auto_summary_size(MEMORY_K, rows, 40 * rows)  # a chunk of 40
    method = task.split()[1] if task.startswith("leaf") else None
    if task == "leaf tree copy":  # the padded copy whatever the chunk: faster, 2-3x the chunk
        from dask_streamkm import _tree

        _tree.COPY_BYTES = float("inf")
    if task.startswith("leaf"):

        def run():
            return _tasks.leaf(
                block,
                None,
                index=0,
                row_start=0,
                size=size,
                method=method,
                mini_batch_size=4096,
                entropy=0,
            )

    elif task == "refine leaf":

        def run():
            return _refine.refine_leaf(block, None, index=0, row_start=0, centers=centers)

    elif task == "score part":

        def run():
            return _tasks.sq_distance_part(block, None, centers, index=0, row_start=0)

    else:

        def run():
            return _tasks.predict_block(block, None, centers, "labels")

    gc.collect()
    trim_heap()
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one core's work (a worker's BLAS threads under its nanny)
        t0, cpu0 = time.perf_counter(), _process_cpu()
        run()
        seconds, cpu = time.perf_counter() - t0, _process_cpu() - cpu0
    stop.set()
    thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    estimate = None
    if task.startswith("leaf"):
        estimate = _memory.task_peak_bytes(da.from_array(block, chunks=rows), method)
    return {
        "task": task,
        "megabytes": megabytes,
        "chunk_bytes": block.nbytes,
        "working_bytes": peak[0] - base,
        "estimate_bytes": estimate,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": rows,
    }


# --------------------------------------------------------------------------- driver


def _env(variant):
    env = dict(os.environ)
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    if variant == "threads trim":
        env["MALLOC_TRIM_THRESHOLD_"] = TRIM
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."), env.get("PYTHONPATH", "")]
    )
    return env


def _child(*args, env=None):
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        env=env or _env("threads"),
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"{args} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_cases(cases, rounds, quick, names=None):
    results = []
    names = list(VARIANTS) if names is None else list(names)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for case in cases:
            _, rows, k = CASES[case]
            rows = QUICK_ROWS if quick else rows
            for variant in order:
                res = _child("--one", variant, str(rows), str(k), env=_env(variant))
                res["case"], res["round"] = case, r
                results.append(res)
                print(
                    f"# round {r} {case} {variant}: {_fmt(res['seconds'])}; CPU "
                    f"{_fmt(res['cpu'])}; {_load()}",
                    flush=True,
                )
    return results


def _fmt(seconds):
    return ", ".join(f"{op} {s:.2f} s" for op, s in seconds.items())


def _load():
    try:
        return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:
        return "load average ?"


#: CPU-time ratios: the work of each variant against the threaded scheduler's.
CPU_RATIOS = (("threads trim", 1.1), ("2x1", 1.15), ("1x2", 1.1), ("1x1", None))


def _medians(results, case, op, what):
    out = {}
    for v in VARIANTS:
        values = [r[what][op] for r in results if r["case"] == case and r["variant"] == v]
        out[v] = statistics.median(values) if values else float("nan")
    return out


def _ratio_cell(ratio, target, kind):
    if target is None:
        return f"{ratio:.2f}"
    ok = ratio <= target if kind == "max" else ratio >= target
    return f"{ratio:.2f} ({'<=' if kind == 'max' else '>='} {target}: {'yes' if ok else 'no'})"


def print_cases(results, cases):
    measured = {r["variant"] for r in results}
    names = [v for v in VARIANTS if v in measured]
    rounds = max(r["round"] for r in results) + 1
    tables = (
        ("Wall seconds", "seconds", [(v, ref, t, kind) for v, ref, t, kind in TARGETS]),
        (
            "CPU seconds (driver + workers)",
            "cpu",
            [(v, "threads", t, "max") for v, t in CPU_RATIOS],
        ),
    )
    tables = [
        (title, what, [r for r in ratios if r[0] in measured and r[1] in measured])
        for title, what, ratios in tables
    ]
    for title, what, ratios in tables:
        print(f"\n{title}, medians of {rounds} round(s):\n")
        cols = names + [f"{v} / {ref}" for v, ref, _, _ in ratios]
        print("| case | op | " + " | ".join(cols) + " |")
        print("|" + "---|" * (2 + len(cols)))
        for case in cases:
            for op in OPS:
                med = _medians(results, case, op, what)
                cells = [f"{med[v]:.2f}" for v in names]
                cells += [_ratio_cell(med[v] / med[ref], t, kind) for v, ref, t, kind in ratios]
                print(f"| {CASES[case][0]} | {op} | " + " | ".join(cells) + " |")
    if {"1x1", "2x1"} <= measured:
        _print_solve_bound(results, cases, rounds)
    print()
    for case in cases:
        for op in OPS:
            hashes = {r["hashes"][op] for r in results if r["case"] == case}
            same = "the same" if len(hashes) == 1 else f"DIFFERENT ({len(hashes)} values)"
            print(f"- {CASES[case][0]}, {op}: results of every variant and round {same}.")


def _print_solve_bound(results, cases, rounds):
    """The final solve's share f of the 1x1 fit (it runs on the client, one at a time) and
    the most that two workers can gain over one with it, 2 / (1 + f) (Amdahl), beside the
    measured 1x1 / 2x1."""
    print(f"\nThe final solve on the client, medians of {rounds} round(s):\n")
    print("| case | op | solve s (1x1) | 1x1 s | f = solve / 1x1 | bound 2 / (1 + f) | 1x1 / 2x1 |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        for op in ("fit", "fit r1"):
            solve = statistics.median(
                r["solve"][op]
                for r in results
                if r["case"] == case and r["variant"] == "1x1" and "solve" in r
            )
            wall = _medians(results, case, op, "seconds")
            f = solve / wall["1x1"]
            print(
                f"| {CASES[case][0]} | {op} | {solve:.2f} | {wall['1x1']:.2f} | {f:.2f} "
                f"| {2 / (1 + f):.2f} | {wall['1x1'] / wall['2x1']:.2f} |"
            )


def run_task_memory(sizes, tasks=TASKS):
    out = []
    for mb in sizes:
        for task in tasks:
            res = _child("--task", task, str(mb))
            out.append(res)
            print(f"# {task} {mb} MB: working {res['working_bytes'] / 1e6:.0f} MB", flush=True)
    return out


def print_task_memory(rows):
    print(
        "| task | chunk | working | peak / chunk | guard's estimate / chunk | seconds "
        "| CPU seconds | rows/s per core (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        chunk = r["chunk_bytes"]
        est = r["estimate_bytes"]
        print(
            f"| {r['task']} | {chunk / 1e6:.0f} MB | {r['working_bytes'] / 1e6:.0f} MB | "
            f"{(chunk + r['working_bytes']) / chunk:.2f} | "
            f"{'' if est is None else f'{est / chunk:.2f}'} | {r['seconds']:.1f} | "
            f"{r.get('cpu_seconds', float('nan')):.1f} | "
            f"{r.get('rows', 0) / r.get('cpu_seconds', float('nan')):,.0f} |"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="V"
    )
    p.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows, 1 round")
    p.add_argument("--task-memory", nargs="*", type=float, default=[], metavar="MB")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="T")
    p.add_argument("--json", help="also write every measurement to this file")
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--task", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(_measure(args.one[0], int(args.one[1]), int(args.one[2]))))
        return
    if args.task:
        print(json.dumps(_task_memory(args.task[0], float(args.task[1]))))
        return
    start = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    print(f"# cluster benchmark, {start}, {os.cpu_count()} cores, {_load()} at start")
    results = (
        run_cases(args.cases, 1 if args.quick else args.rounds, args.quick, args.variants)
        if args.cases
        else []
    )
    memory = run_task_memory(args.task_memory, args.tasks)
    print(f"\n{os.cpu_count()} cores; {_load()} at the end; started {start}.\n")
    if results:
        print_cases(results, args.cases)
    if memory:
        print()
        print_task_memory(memory)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cases": results, "task_memory": memory}, fh, indent=1)


if __name__ == "__main__":
    main()
