#!/usr/bin/env bash
# benchmarks/gpu_check.sh OUT_DIR
#
# On a fresh GPU machine, from the repository root, installing nothing, in under 9 minutes and a half:
#   1. the CuPy parity suite (python -m scratchcap.parity: needs no pytest), VGG-16 on the photos in
#      $PHOTOS (default ../shared/flickr8k/originals; generated images where there are none);
#   2. the quick benchmarks, CPU and GPU, with PyTorch where it is installed, then VGG-16 on the GPU at
#      batch 1 and 16, with Winograd and by im2col, in float32, tf32 and float16;
#   3. the host's threads: VGG-16, the decoder step and beam search at 1, 4 and 16 threads (issue 22);
#   4. a short --device gpu training run on a small generated shapes set.
# Each step has a time limit; together they come to 9 minutes and a half.
# Writes OUT_DIR/gpu_check.log, OUT_DIR/results-gpu.json, OUT_DIR/results-gpu-vgg16.json,
# OUT_DIR/threads-sweep-cpu.json and OUT_DIR/run/. Exit status: the number of failed steps.
# Rehearsal without a GPU, on the strict CuPy stand-in (numbers mean nothing):
#   PYTHONPATH=tests/hostcupy bash benchmarks/gpu_check.sh /tmp/rehearsal
set -u
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}  # the interpreter with CuPy (and PyTorch); set PYTHON to choose another
mkdir -p "$out"
log="$out/gpu_check.log"
. "$(dirname "$0")/steps.sh"  # step NAME SECONDS COMMAND...
{
  echo "gpu_check at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$py" -c "import sys, cupy; print(sys.executable, 'cupy', cupy.__version__)" 2>&1 || true
} >"$log"
step parity 70 "$py" -m scratchcap.parity --images "${PHOTOS:-../shared/flickr8k/originals}"
# A round starts one process per library and variant (7 for the quick cases), not one per case.
step benchmarks 220 "$py" benchmarks/run.py --device all --quick --rounds 2 --json "$out/results-gpu.json"
step vgg16 80 "$py" benchmarks/run.py --device gpu --cases vgg16 --rounds 1 --json "$out/results-gpu-vgg16.json"
step threads 120 "$py" benchmarks/run.py --device cpu --quick --cases vgg16,decoder,beam --threads-sweep 1,4,16 \
  --rounds 1 --json "$out/threads-sweep-cpu.json"
step training 55 "$py" -m scratchcap.train --device gpu --shapes-images 300,40,20 --data-dir "$out/shapes" \
  --features "$out/shapes-features.h5" --epochs 2 --out "$out/run" --no-progress
tail -n 40 "$log"
exit $failed
