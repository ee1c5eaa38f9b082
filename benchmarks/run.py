"""python benchmarks/run.py [--device cpu|gpu|all] [--quick] [--threads-sweep 1,2] [--json out.json]

Times scratchcap on NumPy (CPU) and CuPy (GPU) against PyTorch on the same
device, with identical inputs. Each library runs in its own process with the
same pinned thread count, the libraries alternating round by round: a round
starts one worker process per library (and per variant, below) that times all
of the round's cases in turn, so a process start, seconds with a CUDA context,
is paid once per round rather than once per case. With --threads-sweep a
worker times every count, each case's calls alternating between them: a
speed-up compares calls made side by side, not processes a minute apart on a
machine whose speed drifts (PyTorch's one-thread beam 3 took 179, 287 and 258
ms in three runs within an hour on the shared Xeon). The report gives medians and
the ratios NumPy/PyTorch-CPU, CuPy/PyTorch-CUDA and the GPU speed-up over the
CPU. PyTorch is optional: its columns stay empty without it.

Cases (see worker.py for the shapes): the float32 GEMM peak; (a) each layer's
forward + backward at the real shapes (three VGG-16 convolutions, attention,
a GRU and an LSTM step, the output layer with its loss); (b) VGG-16 to
block5_conv3 at batch 1 and 16, images/s; (c) one gru-attention training step,
ms; (d) beam-3 decoding of 16 images and of one, captions/s. --quick keeps
batch 1 and fewer rounds.
Without --quick, NumPy's VGG-16 and decoder cases also run with OPENBLAS_CORETYPE
changed (unset where it is set, Haswell where it is not), because some machines
set it to a slower kernel. On the GPU, CuPy's attention, cell, decoder and beam
cases also run with SCRATCHCAP_FUSED=0: the plain code without fused kernels;
VGG-16 runs by im2col alone as well as with Winograd; PyTorch CUDA runs in full
float32 like scratchcap, and for VGG-16 also as by default ("TF32": cuDNN's
convolutions on TF32 tensor cores); CuPy's VGG-16 also runs in its "tf32" and "float16" precisions.
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]
from scratchcap.atomic import write_json  # noqa: E402
from worker import CONV_CASES, IM2COL, PRECISION, TORCH_TF32  # noqa: E402

LAYER_CASES = [f"conv:{n}" for n in CONV_CASES] + ["attention", "gru_step", "lstm_step", "output"]
REFERENCE = {"numpy": "torch", "cupy": "torch-cuda"}


def run_worker(lib, jobs, counts, env_change, small=False, repeats=3):
    """Time ``jobs`` (dicts of a case and its options) in one worker process for ``lib``, at the thread
    ``counts`` (a list; with several, each case's calls alternate between them).

    Returns [(job, result)] in the order given; a result holds "times", or "error" for a case that failed,
    or whose line never came because the process died.
    """
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(max(counts))
    for k, v in env_change.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    cmd = [sys.executable, os.path.join(HERE, "worker.py"), "--lib", lib, "--jobs", json.dumps(jobs),
           "--threads", ",".join(map(str, counts)), "--repeats", str(repeats)] + (["--small"] if small else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith('{"job"')]
    out = []
    for k, job in enumerate(jobs):
        if k < len(lines):
            out.append((job, lines[k]))
        else:
            out.append((job, dict(error=f"worker.py --lib {lib} exited {proc.returncode} before case {job}:\n"
                                        f"{proc.stderr[-2000:]}")))
    return out


def coretype_variants():
    """NumPy's environment as it is (label ""), and with OPENBLAS_CORETYPE changed."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        return [("", {}), ("OPENBLAS_CORETYPE unset", {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None})]
    return [("", {}), ("OPENBLAS_CORETYPE=Haswell", {"OPENBLAS_CORETYPE": "Haswell"})]


# Cases whose CuPy run uses the fused kernels of scratchcap/ops/fused.py; timed with them switched off too.
FUSED_CASES = ("attention", "gru_step", "lstm_step", "decoder", "beam", "beam1")


def variants_for(lib, case, coretypes):
    """[(label, environment change)] to time ``lib`` under for ``case``; coretypes is [] with --quick."""
    if lib == "numpy" and case in ("vgg16", "decoder", "gemm") and coretypes:
        return coretypes
    if lib == "torch-cuda" and case == "vgg16":
        return [("", {}), ("TF32", {TORCH_TF32: "1"})]
    if lib == "cupy" and case in FUSED_CASES:
        return [("", {}), ("SCRATCHCAP_FUSED=0", {"SCRATCHCAP_FUSED": "0"})]
    if lib == "cupy" and case == "vgg16":  # the default (Winograd from batch 8 on the GPU), im2col alone, and
        return [("", {}), ("im2col", {IM2COL: "1"}),  # the faster precisions (--precision of features)
                ("tf32", {PRECISION: "tf32"}), ("float16", {PRECISION: "float16"})]
    return [("", {})]


def available_libs(device):
    """The libraries to time on this machine, and why any is missing."""
    libs, missing = [], {}
    if device in ("cpu", "all"):
        libs.append("numpy")
        if importlib.util.find_spec("torch"):
            libs.append("torch")
        else:
            missing["torch"] = "PyTorch is not installed"
    if device in ("gpu", "all"):
        from scratchcap.backend import gpu_status
        ok, reason = gpu_status()
        if ok:
            libs.append("cupy")
        else:
            missing["cupy"] = reason
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            libs.append("torch-cuda")
        else:
            missing["torch-cuda"] = "PyTorch with CUDA is not available"
    return libs, missing


def plan(quick):
    """(case, worker options, images per call or None, unit)."""
    cases = [("gemm", {}, None)]
    cases += [(c, {}, None) for c in LAYER_CASES]
    cases += [("vgg16", {"batch": b}, b) for b in ([1] if quick else [1, 16])]
    cases += [("decoder", {}, None), ("beam", {}, 16), ("beam1", {}, 1)]
    return cases


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__.splitlines()[2])
    p.add_argument("--device", choices=["cpu", "gpu", "all"], default="cpu", help="which libraries to time")
    p.add_argument("--quick", action="store_true",
                   help="fewer rounds and repeats, VGG-16 at batch 1 only, no OPENBLAS_CORETYPE variant")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every library")
    p.add_argument("--threads-sweep", metavar="N,N,...",
                   help="time every case at each of these thread counts (e.g. 1,2) and report each library's "
                        "speed-up over the first count")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per case")
    p.add_argument("--cases", help="comma-separated subset of the cases (e.g. decoder,vgg16)")
    p.add_argument("--small", action="store_true", help="tiny shapes: checks that every case runs, measures nothing")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    libs, missing = available_libs(args.device)
    for lib, why in missing.items():
        print(f"note: no {lib} columns: {why}")
    if not any(lib in libs for lib in ("numpy", "cupy")):
        p.exit(2, "error: nothing to time on this device: " + "; ".join(missing.values()) + "\n")
    rounds = args.rounds or (2 if args.quick else 3)
    repeats = 2 if args.quick else 3
    variants = [] if args.quick else coretype_variants()
    cases = plan(args.quick)
    try:
        counts = [int(n) for n in args.threads_sweep.split(",")] if args.threads_sweep else [args.threads]
    except ValueError:
        p.error(f"--threads-sweep takes thread counts separated by commas, got {args.threads_sweep!r}")
    if min(counts) < 1:
        p.error("thread counts must be >= 1")
    if args.cases:
        keep = set(args.cases.split(","))
        cases = [c for c in cases if c[0] in keep]
    import numpy
    info = dict(date=time.strftime("%Y-%m-%d"), commit=_commit(), machine=platform.machine(),
                processor=platform.processor(), cpus=os.cpu_count(), threads=counts,
                python=platform.python_version(), numpy=numpy.__version__,
                torch=_version("torch"), cupy=_version("cupy"), gpu={}, blas={}, small=args.small,
                missing=missing, failed=[], complete=False)
    times, flops = {}, {}  # (case, params as JSON, library label, threads) -> seconds; (case, params) -> flops
    # A sweep's counts share each worker process, its calls alternating between them (worker.alternate_calls),
    # so that each library's speed-up compares calls made side by side; the rounds alternate the libraries.
    for _ in range(rounds):
        for lib in libs:
            for label, change, jobs in groups(lib, cases, variants):
                key = f"{lib} {label}".strip()
                for job, r in run_worker(lib, jobs, counts, change, args.small, repeats=repeats):
                    case, kw = job["case"], {k: v for k, v in job.items() if k != "case"}
                    if "error" in r:  # one broken case or library must not cost the others their numbers
                        print(f"FAILED {key} {case} {kw or ''}: {r['error']}", file=sys.stderr)
                        info["failed"].append(dict(case=case, params=kw, library=key, threads=counts,
                                                   error=r["error"]))
                        continue
                    by_count = r.get("times_by_threads") or {str(counts[0]): r["times"]}
                    blas = r.get("blas_by_threads") or {str(counts[0]): r["blas"]}
                    for n in counts:
                        times.setdefault((case, json.dumps(kw), key, n), []).extend(by_count[str(n)])
                        info["blas"][f"{key} ({n} threads)"] = blas[str(n)]
                    flops[case, json.dumps(kw)] = r["flops"]
                    info["gpu"].update(r.get("gpu") or {})
                results = summarize(cases, times, flops, counts)
                if args.json:  # after every process, so that a run cut short keeps what it measured
                    write_json(args.json, dict(info=info, results=results), indent=1)
    results = summarize(cases, times, flops, counts)
    info["complete"] = True
    _print(info, results)
    if args.json:
        write_json(args.json, dict(info=info, results=results), indent=1)
        print(f"wrote {args.json}")
    if info["failed"]:
        p.exit(1, f"error: {len(info['failed'])} timed run(s) failed; see 'failed' in the JSON and the messages above\n")


def groups(lib, cases, coretypes):
    """[(label, environment change, jobs)]: the worker processes one round of ``lib`` takes, one per variant,
    each with the cases that variant applies to, in the plan's order."""
    out = {}
    for case, kw, _ in cases:
        for label, change in variants_for(lib, case, coretypes):
            out.setdefault(label, (change, []))[1].append(dict(case=case, **kw))
    return [(label, change, jobs) for label, (change, jobs) in out.items()]


def summarize(cases, times, flops, counts=(None,)):
    """One row per (case, library, thread count) with its median, in the plan's order, and the ratios between
    them; ``counts`` are the thread counts timed, the first being the one that speed-ups are taken over."""
    results = []
    for case, kw, images in cases:
        for n in counts:
            for (c, params, key, threads), ts in times.items():
                if (c, params, threads) != (case, json.dumps(kw), n):
                    continue
                med = statistics.median(ts)
                f = flops.get((case, params))
                results.append(dict(case=case, params=kw, library=key, threads=n, median_s=med, runs=len(ts),
                                    times_s=list(ts), gflops=f / med / 1e9 if f else None,
                                    per_s=images / med if images else None))
    _ratios(results, counts[0])
    _paired_speedups(results, times, counts[0])
    return results


def _paired_speedups(results, times, first_count):
    """Each row's speed-up call by call: a worker times the counts of one repeat side by side (worker.alternate_calls),
    so the k-th call at each count ran within seconds of the other. The ratio of each such pair cancels the machine's
    drift from minute to minute, which moves the ratio of the medians by 0.1 or more between runs; its quartiles say
    how far the pairs spread. ``thread_speedup_paired`` = [lower quartile, median, upper quartile].

    ``thread_speedup_best`` is the fastest call at the first count over the fastest at this one. Another tenant
    of a shared host only ever adds time, and in the rounds it is there it can cost a many-thread call more than a
    one-thread call: on a 2-core KVM guest, a worker's three 2-thread beam calls took 305-330 ms in some rounds and
    430-560 in others, its 1-thread calls 530-560 in both. The fastest call is the nearest to the machine's own
    speed, as timeit's documentation says of repeated timings."""
    for r in results:
        r["thread_speedup_paired"] = r["thread_speedup_best"] = None
        if r["threads"] == first_count:
            continue
        key = (r["case"], json.dumps(r["params"]), r["library"])
        one, this = times.get(key + (first_count,), []), times.get(key + (r["threads"],), [])
        ratios = sorted(a / b for a, b in zip(one, this))
        if one and this:
            r["thread_speedup_best"] = min(one) / min(this)
        if ratios:
            q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
            r["thread_speedup_paired"] = [q[0], statistics.median(ratios), q[2]]


def _ratios(results, first_count=None):
    by = {(r["case"], json.dumps(r["params"]), r["library"], r["threads"]): r["median_s"] for r in results}
    peak = {(lib, n): max((r["gflops"] for r in results if r["case"] == "gemm" and r["library"] == lib
                           and r["threads"] == n), default=None)
            for lib, n in {(r["library"], r["threads"]) for r in results}}
    for r in results:
        key, n = (r["case"], json.dumps(r["params"])), r["threads"]
        base = r["library"].split()[0]
        ref = by.get(key + (REFERENCE.get(base, ""), n))
        r["time_vs_reference"] = r["median_s"] / ref if ref else None  # < 1: faster than PyTorch
        r["reference"] = REFERENCE.get(base) if ref else None
        cpu = by.get(key + ("numpy", n))
        r["gpu_speedup"] = cpu / r["median_s"] if base == "cupy" and cpu else None
        top = peak.get((r["library"], n)) or peak.get((base, n))
        r["fraction_of_gemm_peak"] = r["gflops"] / top if r["gflops"] and top else None
        one = by.get(key + (r["library"], first_count))
        r["thread_speedup"] = one / r["median_s"] if one and n != first_count else None  # > 1: faster


def _commit():
    """The checkout's commit (with '+changes' when the tree differs from it), or None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+changes" if dirty else "")


def _print(info, results):
    print(f"OPENBLAS_CORETYPE here: {os.environ.get('OPENBLAS_CORETYPE') or 'unset'}")
    print(f"commit {info['commit'] or '-'}, {info['date']}")
    print(f"machine: {info['machine']}, {info['cpus']} CPUs, threads {info['threads']}, numpy {info['numpy']}, "
          f"torch {info['torch'] or '-'}, cupy {info['cupy'] or '-'}" + (f", GPU {info['gpu']}" if info["gpu"] else ""))
    for key, b in info["blas"].items():
        print(f"  {key:<36} BLAS: " + ", ".join(f"{x.get('internal_api')} {x.get('architecture')} "
                                                 f"({x.get('num_threads')} threads)" for x in b))
    if info["small"]:
        print("(--small: tiny shapes; these numbers measure nothing)")
    print(f"{'case':<20}{'library':<36}{'thr':>4}{'median ms':>10}{'GFLOP/s':>9}{'% peak':>8}{'per s':>8}"
          f"{'time/ref':>9}{'GPU x':>7}{'thr x':>7}{'paired thr x':>18}{'best thr x':>11}")
    for r in results:
        name = r["case"] + (f" b{r['params']['batch']}" if "batch" in r["params"] else "")
        print(f"{name:<20}{r['library']:<36}{r['threads']:>4}{r['median_s'] * 1e3:>10.1f}{_num(r['gflops']):>9}"
              f"{_pct(r['fraction_of_gemm_peak']):>8}{_num(r['per_s']):>8}{_num(r['time_vs_reference']):>9}"
              f"{_num(r['gpu_speedup']):>7}{_num(r.get('thread_speedup')):>7}{_paired(r):>18}"
              f"{_num(r.get('thread_speedup_best')):>11}")
    print("time/ref: the median time over PyTorch's on the same device and thread count (NumPy vs PyTorch CPU, "
          "CuPy vs PyTorch CUDA); per s: images/s (vgg16) or captions/s (beam); GPU x: NumPy's time over CuPy's; "
          "thr x: the library's speed-up over its own time at the sweep's first thread count (medians); paired thr x: "
          "the median speed-up of calls timed side by side, and its quartiles; best thr x: the fastest call's over the "
          "fastest at the first count")


def _paired(r):
    q = r.get("thread_speedup_paired")
    return "" if not q else f"{q[1]:.2f} ({q[0]:.2f}-{q[2]:.2f})"


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
