"""python benchmarks/host_vs_device.py [--small] [--json out.json]

Where a CuPy case's time goes: host time (Python issuing the kernels, up to the
last launch) against device time (CUDA events around the same call), from
cupyx.profiler.benchmark. For work with no sync inside, host time close to
device time means the GPU waits on Python: launch-bound, and fewer, larger
kernels are what would help; host time well under device time means the kernels
themselves are the cost. The decoder step ends by copying its loss to the host
and beam search reads scores every word, so their host time includes the wait:
for them the batch-256 row is the test.

Cases: the decoder training step (run.py's case c) with fused kernels on and off
and at batch 256 as well as 64 (a launch-bound step barely grows with the batch);
beam-3 decoding (case d) with fused kernels on and off; VGG-16 at batch 1, 2, 4,
8 and 16 by Winograd and by im2col, to find where one overtakes the other.
Needs CuPy and a GPU; worker.py builds every case, so the work is what run.py times.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from scratchcap.atomic import write_json  # noqa: E402
from worker import FULL, IM2COL, SMALL, case_spec, scratch_case  # noqa: E402


def cases(shapes=FULL):
    """(label, worker case, batch, shapes, environment to set) for every row."""
    big = 4 * shapes["N"]
    rows = [(f"decoder N{n} fused {f}", "decoder", 1, dict(shapes, N=n), {"SCRATCHCAP_FUSED": f})
            for n, f in ((shapes["N"], "1"), (shapes["N"], "0"), (big, "1"))]
    rows += [(f"beam fused {f}", "beam", 1, shapes, {"SCRATCHCAP_FUSED": f}) for f in ("1", "0")]
    rows += [(f"vgg16 b{b} {how}", "vgg16", b, shapes, {IM2COL: "1" if how == "im2col" else "0"})
             for b in (1, 2, 4, 8, 16) for how in ("winograd", "im2col")]
    return rows


def main(argv=None):
    from scratchcap.paths import default_weights_path  # no NumPy: the thread settings come first
    p = argparse.ArgumentParser(prog="python benchmarks/host_vs_device.py", description=__doc__.splitlines()[2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--weights", default=default_weights_path(),
                   help="VGG-16 weights (default: the user cache's; random ones where missing)")
    p.add_argument("--small", action="store_true", help="tiny shapes: checks that it runs, measures nothing")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    from scratchcap.backend import gpu_status
    ok, why = gpu_status()
    if not ok:
        p.exit(2, f"error: needs a GPU: {why}\n")
    import cupy
    from cupyx.profiler import benchmark

    from scratchcap.threads import count  # the host's pool, for the host side of each call

    gpu = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    gpu = gpu.decode() if isinstance(gpu, bytes) else gpu
    rows = []
    print(f"{gpu}, cupy {cupy.__version__}")
    print(f"{'case':<28}{'host ms':>10}{'device ms':>11}{'host/device':>13}")
    for label, case, batch, shapes, env in cases(SMALL if args.small else FULL):
        os.environ.update(env)
        work, _ = scratch_case(cupy, case_spec(case, batch, small=args.small, weights=args.weights), shapes)
        r = benchmark(work, n_repeat=args.repeats, n_warmup=2)
        host, device = float(r.cpu_times.mean()) * 1e3, float(r.gpu_times[0].mean()) * 1e3
        rows.append(dict(case=label, host_ms=host, device_ms=device, repeats=args.repeats))
        print(f"{label:<28}{host:>10.2f}{device:>11.2f}{host / device:>13.2f}", flush=True)
        if args.json:  # after every row: a run cut short keeps what it measured
            write_json(args.json, dict(gpu=gpu, small=args.small, threads=count(), rows=rows), indent=1)


if __name__ == "__main__":
    main()
