#!/usr/bin/env bash
# The GPU checks in one call, for a lent CUDA machine: the CUDA tests, then the GPU benchmarks.
# Needs data/prepared/<data.name> (dvc repro prepare) and the machine's own torch; writes logs
# and the benchmarks' results to $OUT (default: /tmp/gpu-out).
#   bash benchmarks/gpu_run.sh      (without a CUDA device it says so in one line and exits 1)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
$PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
'gpu_run.sh: no CUDA device on this machine; these are the GPU checks (the CPU paths are make test)')" || exit 1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version())" | tee -a "$OUT/gpu.txt"
status=0
$PY -m pytest -q -p no:cacheprovider -o addopts="-ra" tests/test_cuda.py tests/test_conv_grad.py 2>&1 \
    | tee "$OUT/pytest.log" || status=1
$PY benchmarks/bench_gpu.py 2>&1 | grep -v "it/s]" | tee "$OUT/bench_gpu.log" || status=1
$PY benchmarks/bench_train_speed.py --skip accuracy --images 2048 --r50-images 512 --tag gpu 2>&1 \
    | tee "$OUT/bench_train_speed.log" || status=1
cp benchmarks/results/bench_gpu.* benchmarks/results/bench_train_speed-gpu.* "$OUT/" 2>/dev/null
exit $status
