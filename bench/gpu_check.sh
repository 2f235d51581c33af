#!/bin/bash
# The GPU device check: CUDA tests, then the device phase of bench/run.py.
# Run from the repository root on a machine with a CUDA GPU; results go to ${OUT:-bench/results}.
# Packages the machine lacks (msgspec) may be given as wheels in .whl/ (installed to /tmp/site).
set -u
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, safetensors, msgspec, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'safetensors', safetensors.__version__, 'numpy', numpy.__version__)"
[ -n "${GPU_SKIP_TESTS:-}" ] || python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_everyday.py -k "cuda or device or builder" 2>&1 | tee "$OUT/pytest.txt" | tail -25
python3 bench/run.py --phases device --device cuda --sizes ${GPU_SIZES:-256M,2G} --reps ${GPU_REPS:-3} --out "$OUT" --tmp /tmp --threads 1 2>&1 | tee "$OUT/bench.txt" | grep -v "^  cuda" | tail -40
