#!/usr/bin/env bash
# The one GPU check: at most 7 minutes on a single-GPU machine with no network
# (GPU_CHECK_BUDGET_S, default 360 s, for steps 1-3; GPU_CHECK_EXAMPLE_S, default 60 s, for 4).
#
#   1. install this checkout and its dependencies from ./wheels (made by gpu_wheels.sh), offline;
#   2. python -m pytest -m gpu tests/test_gpu.py (cupy vs numpy: same centers; cupy in, cupy out;
#      no chunk copied to the host; host weights beside device chunks);
#   3. benchmarks/gpu_bench.py: 23M x 400 float32 made on the device, k=500 (wall time, rows/s,
#      inertia ratio against a GPU k-means++ + 20 Lloyd passes, what reached the host), a
#      profile of the fit's parts, then 2M x 64 on CPU and GPU;
#   4. examples/dask_cuda_cluster.py on 2M x 64, if dask-cuda is in ./wheels and time is left.
#
# Results go to $OUT (default $TMPDIR/dask_streamkm_gpu_check): nvidia-smi.txt, install.log,
# pytest_gpu.txt, gpu_bench.log, gpu_bench.json, gpu_bench.md, example.log. Exit status: 0 when
# the install, the tests and the benchmark all ran to the end (the targets are reported, not
# enforced: gpu_bench.md says whether they were met).
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine
#   bash benchmarks/gpu_check.sh --cpu-smoke  # anywhere: the same steps on numpy, tiny sizes
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-wheels}
OUT=${OUT:-${TMPDIR:-/tmp}/dask_streamkm_gpu_check}
BUDGET_S=${GPU_CHECK_BUDGET_S:-360}  # install, tests and benchmark; the example gets its own minute
SMOKE=0
[ "${1:-}" = "--cpu-smoke" ] && SMOKE=1
mkdir -p "$OUT"
START=$(date +%s)
status=0
log() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - START ))s] $*"; }
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

log "machine: $(uname -m), $($PY --version 2>&1)"
if [ "$SMOKE" = 0 ]; then
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
    head -n 15 "$OUT/nvidia-smi.txt"
    if ! $PY -c "import cupy; n = cupy.cuda.runtime.getDeviceCount()
print('cupy', cupy.__version__, n, 'GPU(s)'); assert n > 0"; then
        log "cupy with a CUDA device is needed here; nothing to check"
        exit 2
    fi
fi

# 1. Install, offline. -----------------------------------------------------------------------
# The wheels go into /tmp/site without dependency resolution (the folder holds the closure
# already) and this checkout is used in place: seconds, where an editable install builds the
# package in an isolated environment first.
log "install from $WHEELS/"
if [ ! -d "$WHEELS" ]; then
    log "no $WHEELS/ folder: run 'bash benchmarks/gpu_wheels.sh' with network, then carry it"
    exit 2
fi
SITE=${GPU_CHECK_SITE:-/tmp/site}
timeout 150 $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" \
    "$WHEELS"/*.whl > "$OUT/install.log" 2>&1 || { tail -n 20 "$OUT/install.log"; log "install failed"; exit 2; }
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import dask, distributed, zarr, sklearn, array_api_compat, dask_streamkm as m
print('dask', dask.__version__, '| sklearn', sklearn.__version__, '| dask_streamkm from', m.__file__)" \
    || { log "imports failed after the install"; exit 2; }
log "installed"

# 2. GPU tests. ------------------------------------------------------------------------------
# Other test modules may need packages this machine lacks: their collection errors must not
# stop the GPU tests from running.
if [ "$SMOKE" = 0 ]; then marker=gpu; else marker="not gpu"; fi
log "pytest -m '$marker'"
tests=tests/test_gpu.py  # the gpu tests live here; other modules need packages a GPU image lacks
per_test=()
$PY -c "import pytest_timeout" 2> /dev/null && per_test=(--timeout 60)
timeout "${GPU_CHECK_PYTEST_S:-150}" $PY -m pytest -q -p no:cacheprovider -m "$marker" -rsx \
    ${per_test[@]+"${per_test[@]}"} $tests > "$OUT/pytest_gpu.txt" 2>&1
rc=$?
tail -n 25 "$OUT/pytest_gpu.txt"
log "pytest exit status $rc"
[ $rc -ne 0 ] && status=1

# 3. Benchmark, in the time left. -------------------------------------------------------------
budget=$(left)
log "benchmark, ${budget}s left"
bench_args=(--out "$OUT")
[ "$SMOKE" = 1 ] && bench_args+=(--cpu-smoke)
if [ "$budget" -lt 60 ]; then
    log "under 60 s left: headline only, no reference, no CPU comparison"
    bench_args+=(--skip-reference --skip-speedup)
    budget=60
fi
timeout "$budget" $PY benchmarks/gpu_bench.py "${bench_args[@]}" > "$OUT/gpu_bench.log" 2>&1
rc=$?
tail -n 30 "$OUT/gpu_bench.log"
[ $rc -eq 124 ] && log "stopped at the time limit; the phases that finished are in gpu_bench.json"
log "benchmark exit status $rc"
[ $rc -ne 0 ] && status=1
# 4. The dask-cuda example, if dask-cuda came with the wheels and time is left (informational).
budget=$(( $(left) + ${GPU_CHECK_EXAMPLE_S:-60} ))
budget=$(( budget < ${GPU_CHECK_EXAMPLE_S:-60} ? budget : ${GPU_CHECK_EXAMPLE_S:-60} ))
if [ "$SMOKE" = 0 ] && ls "$WHEELS"/dask_cuda-*.whl > /dev/null 2>&1 && [ "$budget" -ge 30 ]; then
    log "dask-cuda example, ${budget}s"
    timeout "$budget" $PY examples/dask_cuda_cluster.py --rows 2000000 --features 64 \
        --n-clusters 100 > "$OUT/example.log" 2>&1
    rc=$?
    tail -n 15 "$OUT/example.log"
    log "example exit status $rc (not counted in the check's status)"
else
    log "dask-cuda example skipped (no dask_cuda wheel, smoke run, or under 30 s left)"
fi
log "done, exit status $status; results in $OUT"
exit $status
