"""python benchmarks/run.py [--device cpu] [--quick] [--json out.json]

Compares scratchcap (NumPy) against PyTorch on the CPU, each library timed in
its own process with the same pinned thread count, the libraries alternating
round by round; the report gives medians and ratios. PyTorch is optional: its
columns stay empty when it is not installed.

Cases now: the machine's float32 GEMM peak (2048^3 matmul); VGG-16 to
block5_conv3 at 224x224, batch 1 and 16, in images/s and GFLOP/s; and one
gru-attention training step, forward and backward (batch 64, 20 steps, L = 196,
D = E = H = A = 512, V = 5000), in ms. Because some
machines set OPENBLAS_CORETYPE (which can select a slower OpenBLAS kernel),
NumPy's cases run with the environment as it is and with that variable
changed: unset where it is set, and set to Haswell where it is not.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run_worker(lib, case, threads, env_change, **kw):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    for k, v in env_change.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    cmd = [sys.executable, os.path.join(HERE, "worker.py"), "--lib", lib, "--case", case,
           "--threads", str(threads)] + [f"--{k}={v}" for k, v in kw.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def coretype_variants():
    current = os.environ.get("OPENBLAS_CORETYPE")
    if current:
        return {f"OPENBLAS_CORETYPE={current}": {}, "OPENBLAS_CORETYPE unset": {
            "OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}}
    return {"OPENBLAS_CORETYPE unset": {}, "OPENBLAS_CORETYPE=Haswell": {"OPENBLAS_CORETYPE": "Haswell"}}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.splitlines()[2])
    p.add_argument("--device", choices=["cpu", "gpu", "all"], default="cpu",
                   help="which device to benchmark (the GPU cases arrive with the GPU issue)")
    p.add_argument("--quick", action="store_true", help="fewer rounds and repeats, batch 1 only")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every library")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per case")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.device == "gpu":
        p.exit(2, "error: GPU benchmarks are not implemented yet; use --device cpu\n")
    has_torch = importlib.util.find_spec("torch") is not None
    rounds = args.rounds or (2 if args.quick else 3)
    repeats = 2 if args.quick else 3
    libs = ["numpy"] + (["torch"] if has_torch else [])
    variants = coretype_variants()

    cases = [("gemm", {"size": 2048}, 1)] + [("vgg16", {"batch": b}, b) for b in ([1] if args.quick else [1, 16])]
    cases.append(("decoder", {}, 0))
    results, blas = [], {}
    for case, kw, images in cases:
        times = {}
        for _ in range(rounds):  # alternate: numpy (each variant), torch, numpy, torch, ...
            for lib in libs:
                for label, change in (variants.items() if lib == "numpy" else [("", {})]):
                    key = f"{lib} {label}".strip()
                    r = run_worker(lib, case, args.threads, change, repeats=repeats, **kw)
                    times.setdefault(key, []).extend(r["times"])
                    blas[key] = r["blas"]
                    flops = r["flops"]
        for key, ts in times.items():
            med = statistics.median(ts)
            results.append(dict(case=case, params=kw, library=key, median_s=med, runs=len(ts),
                                gflops=flops / med / 1e9 if flops else None,
                                images_per_s=images / med if case == "vgg16" else None))

    peak = max(r["gflops"] for r in results if r["case"] == "gemm")  # the machine's measured sgemm peak
    for r in results:
        r["fraction_of_gemm_peak"] = r["gflops"] / peak if r["gflops"] else None
    torch_speed = {(r["case"], json.dumps(r["params"])): r["median_s"] for r in results if r["library"] == "torch"}
    for r in results:
        ref = torch_speed.get((r["case"], json.dumps(r["params"])))
        r["speed_vs_torch_cpu"] = ref / r["median_s"] if ref else None

    import numpy
    info = dict(machine=platform.machine(), processor=platform.processor(), cpus=os.cpu_count(),
                threads=args.threads, python=platform.python_version(), numpy=numpy.__version__,
                torch=_version("torch"), blas=blas)
    print(f"machine: {info['machine']}, {info['cpus']} CPUs, {args.threads} threads, numpy {info['numpy']}, "
          f"torch {info['torch'] or '-'}")
    for key, b in blas.items():
        print(f"  {key:<36} BLAS: " + ", ".join(f"{x.get('internal_api')} {x.get('architecture')} "
                                                 f"({x.get('num_threads')} threads)" for x in b))
    print(f"{'case':<18}{'library':<38}{'median ms':>10}{'GFLOP/s':>9}{'% peak':>8}{'img/s':>8}{'vs torch':>9}")
    for r in results:
        name = r["case"] + (f" b{r['params']['batch']}" if "batch" in r["params"] else "")
        print(f"{name:<18}{r['library']:<38}{r['median_s'] * 1e3:>10.1f}{_num(r['gflops']):>9}"
              f"{_pct(r['fraction_of_gemm_peak']):>8}{_num(r['images_per_s']):>8}{_num(r['speed_vs_torch_cpu']):>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info=info, results=results), f, indent=1)
        print(f"wrote {args.json}")


def _version(mod):
    try:
        return importlib.import_module(mod).__version__
    except ImportError:
        return None


def _pct(x):
    return "" if x is None else f"{100 * x:.0f}%"


def _num(x):
    return "" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    main()
