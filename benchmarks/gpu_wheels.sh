#!/usr/bin/env bash
# Download, on a machine with network, the wheels that benchmarks/gpu_check.sh installs offline
# on a GPU machine (x86-64 Linux, CPython 3.12 by default) into ./wheels (ignored by git).
#
#   bash benchmarks/gpu_wheels.sh            # -> wheels/
#   GPU_PYTHON_VERSION=3.11 bash benchmarks/gpu_wheels.sh other_dir/
#
# The closure of dask[array], distributed, zarr, scikit-learn, threadpoolctl, array-api-compat,
# hatchling and editables (the build backend of `pip install -e .`) is resolved for that Python,
# at the versions installed here where there are any, so the GPU run uses what CPU CI uses.
# Wheels of packages the GPU image already has and that are too big to carry (numpy, scipy) are
# dropped: GPU_WHEELS_SKIP overrides that list. cupy is not downloaded unless WITH_CUPY=1 (GPU
# machines usually have cupy already, and a cupy wheel is larger than a run may carry).
# dask-cuda and rapids-dask-dependency are added without their dependencies (WITH_DASK_CUDA=0
# leaves them out) so that the check can also run the dask-cuda example.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-wheels}
PYVER=${GPU_PYTHON_VERSION:-3.12}
SKIP=${GPU_WHEELS_SKIP:-numpy scipy}
PY=${PYTHON:-python}

pin() {  # "name==installed version", or the bare name when it is not installed here
    "$PY" - "$1" "${2:-}" <<'PYEOF'
import importlib.metadata as m, sys
name, extra = sys.argv[1], sys.argv[2]
try:
    print(f"{name}{extra}=={m.version(name)}")
except m.PackageNotFoundError:
    print(f"{name}{extra}")
PYEOF
}

reqs=(
    "$(pin dask '[array]')"
    "$(pin distributed)"
    "$(pin zarr)"
    "$(pin scikit-learn)"
    "$(pin threadpoolctl)"
    "$(pin array-api-compat)"
    "$(pin hatchling)"
    "$(pin editables)"
)
if [ "${WITH_CUPY:-0}" = 1 ]; then
    reqs+=("cupy-cuda12x")
fi

rm -rf "$DEST"
mkdir -p "$DEST"
echo "downloading for CPython $PYVER, x86-64 Linux: ${reqs[*]}"
"$PY" -m pip download --quiet --only-binary=:all: \
    --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 \
    -d "$DEST" "${reqs[@]}"
if [ "${WITH_DASK_CUDA:-1}" = 1 ]; then
    # For the example (examples/dask_cuda_cluster.py) only, installed with --no-deps: its pinned
    # dask may differ from ours by a release, and the check reports whether it runs.
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "$PYVER" --implementation cp --platform manylinux_2_28_x86_64 \
        -d "$DEST" dask-cuda rapids-dask-dependency
fi
for name in $SKIP; do
    rm -f "$DEST/$name"-[0-9]*.whl
done
ls -1 "$DEST"
size=$(du -sm "$DEST" | cut -f1)
echo "$(ls "$DEST" | wc -l) wheels, ${size} MiB in $DEST (carry it with the run: carry=[\"$DEST\"])"
if [ "$size" -gt 56 ]; then
    echo "warning: $DEST is over 56 MiB; a GPU run carries at most 64 MiB with the tree" >&2
fi
