"""cupyx.profiler for the host stand-in: ``benchmark`` with host and "device" times from one clock."""
import time
import types

import numpy as _np


def benchmark(func, args=(), kwargs=None, n_repeat=10000, n_warmup=10, name=None):
    """func(*args, **kwargs) timed n_repeat times after n_warmup calls; the result's cpu_times and
    gpu_times[0] (seconds) are the same wall-clock times, as on a GPU that never runs ahead."""
    kwargs = kwargs or {}
    for _ in range(n_warmup):
        func(*args, **kwargs)
    times = []
    for _ in range(n_repeat):
        start = time.perf_counter()
        func(*args, **kwargs)
        times.append(time.perf_counter() - start)
    times = _np.array(times)
    return types.SimpleNamespace(name=name or getattr(func, "__name__", "func"), cpu_times=times,
                                 gpu_times=_np.array([times]))
