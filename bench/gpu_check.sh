#!/bin/bash
# One prepared check on a CUDA machine (issue 10): CUDA tests, bench_gpu.py, engine tests, in about
# 7 minutes; logs under $OUT (default /tmp/unet-gpu-check). Where rasterio / shapely are not installed, put
# their wheels (and affine, cligj, click-plugins) for that machine's Python in .whl/ first, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       -d .whl rasterio shapely affine==2.4.0 cligj click-plugins
cd "$(dirname "$0")/.."  # the repository root
OUT=${OUT:-/tmp/unet-gpu-check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nproc;
  python3 -c "import torch, numpy, rasterio, shapely; print(torch.__version__, torch.version.cuda, numpy.__version__, rasterio.__version__, shapely.__version__, torch.backends.cudnn.version())"; } 2>&1 | tee $OUT/env.txt
start=$(date +%s)
timeout 100 python3 -m pytest -p no:pytest_qgis -q -rfEs tests/engine/test_cuda.py tests/engine/test_device.py > $OUT/tests_cuda.txt 2>&1
tail -n 25 $OUT/tests_cuda.txt
echo "== cuda tests: $(( $(date +%s) - start )) s"
timeout 190 python3 bench/bench_gpu.py --seconds 8 2>&1 | tee $OUT/bench_gpu.txt
echo "== bench done at $(( $(date +%s) - start )) s"
left=$(( 375 - ($(date +%s) - start) ))
timeout $left python3 -m pytest -p no:pytest_qgis -q -rfE --durations=5 tests/engine/test_inference.py tests/engine/test_training.py > $OUT/tests_engine.txt 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" $OUT/tests_engine.txt | tail -n 25
echo "== all done at $(( $(date +%s) - start )) s"
