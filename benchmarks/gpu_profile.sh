#!/usr/bin/env bash
# benchmarks/gpu_profile.sh OUT_DIR
#
# After gpu_check.sh, on the same GPU machine: where the decoder step's time goes, in under 6 minutes.
#   1. the decoder step and beam-3 on the GPU against PyTorch CUDA, with and without fused kernels, 3 rounds;
#   2. host time against device time per case, the decoder at batch 64 and 256 (host_vs_device.py);
#   3. the decoder step by operation: scratchcap.ops call sites by CUDA events, PyTorch's operators by its
#      profiler; then beam-3 by operation.
# Installs nothing. Each step has a time limit; together they come to 6 minutes, so this and gpu_check.sh
# each fit one 10-minute call. Writes OUT_DIR/gpu_profile.log and one JSON file per step (6 files in all).
# Exit status: the number of failed steps.
# Rehearsal without a GPU, on the strict CuPy stand-in (numbers mean nothing; PyTorch CUDA's profile fails
# there, and host_vs_device at full shapes outruns its limit): PYTHONPATH=tests/hostcupy bash benchmarks/gpu_profile.sh /tmp/r
set -u
out=${1:?usage: benchmarks/gpu_profile.sh OUT_DIR}
py=${PYTHON:-python3}
mkdir -p "$out"
log="$out/gpu_profile.log"
. "$(dirname "$0")/steps.sh"  # step NAME SECONDS COMMAND...
echo "gpu_profile at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%FT%TZ)" >"$log"
step decoder-and-beam 180 "$py" benchmarks/run.py --device gpu --cases decoder,beam --rounds 3 \
  --json "$out/results-gpu-decoder-beam.json"
step host-vs-device 60 "$py" benchmarks/host_vs_device.py --json "$out/host-vs-device.json"
step ops-decoder 40 "$py" benchmarks/op_times.py --device gpu --json "$out/ops-decoder.json"
step ops-decoder-torch 40 "$py" benchmarks/op_times.py --device gpu --lib torch --json "$out/ops-decoder-torch.json"
step ops-beam 40 "$py" benchmarks/op_times.py --device gpu --case beam --json "$out/ops-beam.json"
tail -n 60 "$log"
exit $failed
