"""Device work of a decoder step, a beam search and VGG-16, counted without a GPU: scratchcap against PyTorch.

    python benchmarks/launches.py [--small] [--json out.json]

At the benchmark's shapes (batch 64, 20 words, L = 196, H = A = 512, V = 5000) a decoder step is
a few GFLOP, about a millisecond of a current GPU's arithmetic, so its GPU time is set mostly by how
many kernels are launched and how often the host waits for the device. This counts both:

- scratchcap runs on the CuPy stand-in of tests/hostcupy, whose counters tally kernels (operations
  that write array data), views, and copies or syncs to the host; with the fused kernels on, and
  off (SCRATCHCAP_FUSED=0); VGG-16 by Winograd and by im2col;
- PyTorch's CPU profiler lists the aten operations of the reference in benchmarks/worker.py: those
  that compute rather than make views are the kernels it would launch on CUDA, and
  aten::_local_scalar_dense is a sync.

The batch, the 20 steps, the beam and the image size are the benchmark's; the widths are tiny.
The decoder's and the beam's counts do not depend on them; VGG-16's blocks do, a little. A count is not a time: a CuPy launch costs more Python than a
PyTorch one, PyTorch's backward pass runs in C++, and a cuDNN convolution may launch more than one
kernel. gpu_check.sh measures the times.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "tests", "hostcupy"), ROOT, HERE]  # the stand-in shadows any real CuPy

import worker  # noqa: E402
from run import _commit, variants_for  # noqa: E402

# (case, batch): the variants of each are the benchmark's own for CuPy (run.variants_for).
CASES = (("decoder", 1), ("beam", 1), ("vgg16", 1), ("vgg16", 16))
VIEWS = {"aten::" + n for n in (
    "view _unsafe_view _reshape_alias reshape as_strided alias t transpose permute select slice narrow unsqueeze "
    "squeeze expand expand_as split unbind detach lift_fresh empty empty_like empty_strided new_empty "
    "new_empty_strided resolve_conj resolve_neg result_type size stride contiguous view_as numpy_T").split()}


def scratchcap_counts(case, batch, s):
    """{label: counts} for scratchcap on the stand-in, in each variant's environment."""
    import cupy

    if cupy.__version__ != "host-stand-in":
        raise RuntimeError(f"expected the CuPy stand-in of tests/hostcupy, got cupy {cupy.__version__}")
    rows = {}
    for label, env in variants_for("cupy", case, None):
        os.environ.update(env)
        try:
            work, _ = worker.scratch_case(cupy, worker.case_spec(case, batch, small=True), s)
            work()  # warm-up: allocations made once are not per-step work
            cupy.counts.clear()
            work()
        finally:
            for k in env:
                os.environ.pop(k)
        rows[f"scratchcap {label}".strip()] = {k: cupy.counts[k] for k in ("kernels", "views", "to_host")}
    return rows


def torch_counts(case, batch, s):
    """{"torch": counts} from PyTorch's profiler, or {} without PyTorch."""
    try:
        import torch  # noqa: F401
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return {}
    work, _ = worker.torch_case(worker.case_spec(case, batch, small=True), s, "cpu")
    work()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    aten = [e for e in prof.events() if e.name.startswith("aten::")]

    def computes(e):  # a kernel of its own: not a view, and no computing op inside it
        return e.name not in VIEWS and e.name != "aten::_local_scalar_dense" and all(
            c.name in VIEWS for c in e.cpu_children)

    return {"torch": dict(kernels=sum(computes(e) for e in aten),
                          views=sum(e.name in VIEWS and not e.cpu_children for e in aten),
                          to_host=sum(e.name == "aten::_local_scalar_dense" for e in aten))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="4 steps instead of 20: a smoke test")
    p.add_argument("--json", help="write the counts here")
    args = p.parse_args(argv)
    s = dict(worker.SMALL, N=worker.FULL["N"], T=4 if args.small else worker.FULL["T"],
             beam_images=worker.FULL["beam_images"], image=worker.FULL["image"])
    results = []
    print(f"{'case':<11}{'library':<32}{'kernels':>9}{'per word':>10}{'views':>8}{'to host':>9}")
    for case, batch in CASES:
        name = f"{case} b{batch}" if case == "vgg16" else case
        steps = 1 if case == "vgg16" else s["T"]
        for label, c in {**scratchcap_counts(case, batch, s), **torch_counts(case, batch, s)}.items():
            results.append(dict(case=name, library=label, steps=steps, **c))
            per_word = f"{c['kernels'] / steps:.1f}" if steps > 1 else ""
            print(f"{name:<11}{label:<32}{c['kernels']:>9}{per_word:>10}{c['views']:>8}{c['to_host']:>9}")
    print(f"decoder: one training step, batch {s['N']}, {s['T']} words; beam: beam-3 search of "
          f"{s['beam_images']} images, at most {s['T']} words; vgg16: to block5_conv3 at {s['image']} px "
          "(layers 1/16 as wide)")
    if args.json:
        import time

        import numpy

        from scratchcap.atomic import write_json
        from scratchcap.threads import count
        torch = sys.modules.get("torch")
        info = dict(date=time.strftime("%Y-%m-%d"), commit=_commit(), numpy=numpy.__version__,
                    torch=torch.__version__ if torch else None, shapes=s, threads=count())
        write_json(args.json, dict(info=info, results=results), indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
