"""python benchmarks/op_times.py [--device cpu|gpu] [--lib scratchcap|torch] [--case decoder|beam] [--json out.json]

Where one decoder training step (run.py's case c) or one beam-3 decoding (case d)
spends its time, operation by operation, at the benchmark's shapes.

--lib scratchcap (default): every function of scratchcap.ops is wrapped while the
case runs, and its time is summed by call site (function, file and line of the
caller). On the GPU the times come from CUDA events recorded on the stream around
each call: device time, idle gaps included where the GPU waited for Python. The
row "between the ops" is the rest: the model's own array code, checks and syncs.
--lib torch: PyTorch's version of the same case under torch.profiler, its
operators by self time on the device (CUDA time on the GPU, CPU time on the CPU).
Run the two in separate processes, as run.py does, so their thread pools do not
meet. Numbers are for finding the slow part, not for comparing totals: run.py
does that.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from scratchcap.atomic import write_json  # noqa: E402
from worker import FULL, SMALL, case_spec, scratch_case, torch_case  # noqa: E402


class HostClock:
    """Wall-clock marks: on the CPU, where every call finishes before it returns."""

    def mark(self):
        return time.perf_counter()

    def elapsed_ms(self, start, end):
        return (end - start) * 1e3

    def sync(self):
        pass


class CudaClock:
    """CUDA events recorded on the current stream: the device's own timeline."""

    def __init__(self, cupy):
        self.cupy = cupy

    def mark(self):
        event = self.cupy.cuda.Event()
        event.record()
        return event

    def elapsed_ms(self, start, end):
        return self.cupy.cuda.get_elapsed_time(start, end)

    def sync(self):
        self.cupy.cuda.Device().synchronize()


@contextlib.contextmanager
def timed_ops(clock, records):
    """While inside, each call of a scratchcap.ops function appends (call site, start mark, end mark) to records."""
    from scratchcap import ops

    originals = {name: getattr(ops, name) for name in ops.__all__ if inspect.isfunction(getattr(ops, name))}

    def wrap(name, fn):
        def timed(*args, **kwargs):
            caller = sys._getframe(1)
            site = f"{name} ({os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno})"
            start = clock.mark()
            out = fn(*args, **kwargs)
            records.append((site, start, clock.mark()))
            return out
        return timed

    for name, fn in originals.items():
        setattr(ops, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(ops, name, fn)


def scratchcap_rows(work, clock, repeats):
    """([(site, calls per run, ms per run)] slowest first, [the rest between them, the whole call])."""
    work()  # warm-up: kernels compiled, memory pool filled
    clock.sync()
    per_site, calls, total = {}, {}, 0.0
    for _ in range(repeats):
        records = []
        with timed_ops(clock, records):
            start = clock.mark()
            work()
            end = clock.mark()
        clock.sync()
        total += clock.elapsed_ms(start, end)
        for site, a, b in records:
            per_site[site] = per_site.get(site, 0.0) + clock.elapsed_ms(a, b)
            calls[site] = calls.get(site, 0) + 1
    rows = sorted(((site, calls[site] // repeats, ms / repeats) for site, ms in per_site.items()),
                  key=lambda r: -r[2])
    inside = sum(r[2] for r in rows)
    return rows, [("between the ops", 0, total / repeats - inside), ("whole call", 1, total / repeats)]


def torch_rows(work, device, repeats):
    """([(operator, calls per run, self ms per run on the device)] slowest first, [their sum])."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    work()
    sync()
    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        for _ in range(repeats):
            work()
        sync()
    attr = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    rows = []
    for event in prof.key_averages():
        us = getattr(event, attr, None)
        if us is None and device == "cuda":
            us = getattr(event, "self_cuda_time_total", 0)
        if us:
            rows.append((event.key, event.count // repeats, us / 1e3 / repeats))
    rows.sort(key=lambda r: -r[2])
    return rows, [("all operators", 1, sum(r[2] for r in rows))]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/op_times.py", description=__doc__.splitlines()[2])
    p.add_argument("--device", choices=["cpu", "gpu"], default="gpu")
    p.add_argument("--lib", choices=["scratchcap", "torch"], default="scratchcap")
    p.add_argument("--case", choices=["decoder", "beam"], default="decoder")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--small", action="store_true", help="tiny shapes: checks that it runs, measures nothing")
    p.add_argument("--top", type=int, default=25, help="rows to print")
    p.add_argument("--json", help="write every row here")
    args = p.parse_args(argv)
    shapes = SMALL if args.small else FULL
    spec = case_spec(args.case, small=args.small, threads=args.threads)
    if args.lib == "torch":
        import torch
        if args.device == "gpu" and not torch.cuda.is_available():
            p.exit(2, "error: PyTorch has no usable CUDA device here\n")
        device = "cuda" if args.device == "gpu" else "cpu"
        work, _ = torch_case(spec, shapes, device)
        rows, summary = torch_rows(work, device, args.repeats)
    else:
        if args.device == "gpu":
            from scratchcap.backend import gpu_status
            ok, why = gpu_status()
            if not ok:
                p.exit(2, f"error: --device gpu needs a GPU: {why}\n")
            import cupy as xp
            clock = CudaClock(xp)
        else:
            import numpy as xp
            clock = HostClock()
        from scratchcap.memory import keep_freed_memory
        from scratchcap.threads import set_threads
        keep_freed_memory()
        set_threads(args.threads)
        work, _ = scratch_case(xp, spec, shapes)
        rows, summary = scratchcap_rows(work, clock, args.repeats)
    whole = summary[-1][2]
    print(f"{args.lib} on {args.device}, {args.threads} threads, case {args.case}, mean of {args.repeats} runs"
          + (" (--small: measures nothing)" if args.small else ""))
    print(f"{'ms per run':>11}{'share':>7}{'calls':>7}  where")
    for name, calls, ms in rows[:args.top] + summary:
        print(f"{ms:>11.2f}{100 * ms / whole if whole else 0:>6.0f}%{calls:>7}  {name}")
    if args.json:
        write_json(args.json, dict(lib=args.lib, device=args.device, case=args.case, repeats=args.repeats,
                                   small=args.small, threads=args.threads,
                                   rows=[dict(where=n, calls=c, ms=m) for n, c, m in rows + summary]),
                   indent=1)


if __name__ == "__main__":
    main()
