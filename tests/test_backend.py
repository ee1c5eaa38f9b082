import argparse
import subprocess
import sys

import numpy as np
import pytest

from scratchcap import backend


def test_get_array_module_picks_numpy_for_numpy_and_non_arrays():
    assert backend.get_array_module(np.zeros(2), None, 3.0) is np
    assert backend.get_array_module() is np


def test_get_array_module_follows_the_arrays(xp):
    a = xp.zeros(3)
    assert backend.get_array_module(np.zeros(1), a) is xp


def test_to_numpy_and_to_device_round_trip(xp):
    x = np.arange(6.0).reshape(2, 3)
    dev = "gpu" if xp.__name__ == "cupy" else "cpu"
    moved = backend.to_device({"a": x, "b": [x, x]}, dev)
    assert backend.get_array_module(moved["a"]) is xp
    np.testing.assert_array_equal(backend.to_numpy(moved["b"][1]), x)


def test_resolve_device_rejects_unknown_names():
    with pytest.raises(ValueError, match="device must be one of"):
        backend.resolve_device("tpu")


def test_gpu_request_without_a_gpu_says_what_is_missing():
    ok, reason = backend.gpu_status()
    if ok:
        pytest.skip("a GPU is usable here")
    with pytest.raises(backend.DeviceUnavailableError) as err:
        backend.resolve_device("gpu")
    assert "CuPy" in str(err.value) or "CUDA" in str(err.value)
    assert backend.resolve_device("auto") == "cpu"


def test_device_option_is_shared():
    parser = backend.add_device_argument(argparse.ArgumentParser())
    assert parser.parse_args([]).device == "auto"
    assert parser.parse_args(["--device", "cpu"]).device == "cpu"
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "tpu"])


def test_uniform_keeps_dtype_and_replays_with_the_same_seed(xp):
    like = xp.zeros((3, 4), dtype=xp.float32)
    a = backend.uniform(np.random.default_rng(5), (3, 4), like)
    b = backend.uniform(np.random.default_rng(5), (3, 4), like)
    assert a.dtype == xp.float32 and backend.get_array_module(a) is xp
    assert bool((a == b).all()) and 0 <= float(a.min()) and float(a.max()) < 1


def test_scatter_add_accumulates_repeats(xp):
    dst = xp.zeros((3, 2))
    backend.scatter_add(dst, xp.asarray([0, 2, 0]), xp.ones((3, 2)))
    np.testing.assert_array_equal(backend.to_numpy(dst), [[2, 2], [0, 0], [1, 1]])


def test_keep_freed_memory_sets_both_glibc_thresholds_and_one_arena(monkeypatch):
    import platform

    from scratchcap import memory

    calls = []

    class FakeLibc:
        def __init__(self, answer):
            self.answer = answer

        def mallopt(self, option, value):
            calls.append((option, value))
            return self.answer

    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: FakeLibc(1))
    assert memory.keep_freed_memory(1 << 20) is True
    assert calls == [(memory.M_MMAP_THRESHOLD, 1 << 20), (memory.M_TRIM_THRESHOLD, 2 << 20), (memory.M_ARENA_MAX, 1)]
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: FakeLibc(0))  # glibc refused the value
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: object())  # a libc without mallopt (musl, macOS)
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: None)
    assert memory.keep_freed_memory() is False
    monkeypatch.undo()
    if platform.libc_ver()[0] == "glibc":
        assert memory.keep_freed_memory() is True  # the real glibc takes the thresholds


_THREAD_FAULTS = """
import resource, sys, threading
import numpy as np
from scratchcap.memory import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    print("not glibc"); sys.exit()
out = {}
def step():  # 160 MB live at once, more than one of a thread arena's 64 MB heaps, then all freed
    for i in range(6):
        if i == 1:
            out["start"] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        arrays = [np.ones(5_000_000, np.float32) for _ in range(8)]
        del arrays
    out["faults"] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - out["start"]
t = threading.Thread(target=step)
t.start()
t.join()
print(out["faults"])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RUSAGE_THREAD and glibc's mallopt are Linux's")
def test_a_pool_thread_keeps_its_freed_memory_instead_of_faulting_it_back_in():
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _THREAD_FAULTS, mode], capture_output=True, text=True,
                             check=True).stdout.strip()
        if out == "not glibc":
            pytest.skip("not glibc: keep_freed_memory does nothing here")
        return int(out)
    assert faults("plain") > 20_000  # 5 steps of 40k pages: the thread's arena gave its heaps back each time
    assert faults("keep") < 2_000
