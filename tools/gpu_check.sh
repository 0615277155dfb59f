#!/usr/bin/env bash
# Issue 13's GPU checks as one run, for a machine with CUDA (e.g. the `device` tool's H200): the CUDA tests,
# then tools/bench/bench_gpu, each under its own time limit. Logs, the GPU's name and the BENCHMARKS.md that
# bench_gpu rewrote go to $OUT (default ./gpu-check-out). Run from the repository root:
#
#     bash tools/gpu_check.sh                 # CUDA tests (up to 4 min), then the benchmark (up to 5.5 min)
#     BENCH_ARGS="--resident-gb 8" bash tools/gpu_check.sh
#
# Packages the machine lacks (zstandard on the H200 image) travel as wheels in ./.whl (see the device tool's
# README: `pip download --only-binary=:all: --python-version 3.12 ... -d .whl zstandard==VERSION`).
set -u
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import zstandard" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; free -g | head -2
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
} 2>&1 | tee "$OUT/machine.txt"

timeout 240 python3 -m pytest -m cuda -q -rs -p no:cacheprovider tests/test_build.py tests/test_build_devices.py \
    tests/test_tracker.py tests/test_train.py tests/test_delta.py tests/test_count_changes.py 2>&1 | tee "$OUT/tests.log"
tests=${PIPESTATUS[0]}

timeout 330 python3 -m tools.bench.bench_gpu ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}
cp BENCHMARKS.md "$OUT/"
echo "cuda tests: exit $tests; bench_gpu: exit $bench (124: ran past its limit)" | tee -a "$OUT/machine.txt"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
