"""The strict CuPy stand-in (tests/hostcupy) refuses what CuPy refuses, and the GPU path passes on it.

The stand-in runs the ``--device gpu`` code on machines without a GPU, so that a NumPy
array leaking into device code, or a device array handed to NumPy, fails here and
not on a borrowed GPU. Other modules run their commands on it too (features, train,
caption, evaluate); on a GPU, scratchcap.parity checks the real thing.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from scratchcap import ops
from scratchcap.backend import get_array_module, to_device, to_numpy
from conftest import HOSTCUPY


def test_the_stand_in_refuses_what_cupy_refuses(hostcupy):
    x = hostcupy.arange(6.0).reshape(2, 3)
    host = np.ones((2, 3))
    refused = {
        "numpy.asarray of a device array": lambda: np.asarray(x),
        "a NumPy operand": lambda: x + host,
        "a NumPy operand on the left": lambda: host * x,
        "a NumPy argument to a device function": lambda: hostcupy.maximum(x, host),
        "a NumPy array assigned into a device array": lambda: x.__setitem__(slice(None), host),
        "a NumPy index array": lambda: x[np.array([0, 1])],
        "a NumPy array in a list argument": lambda: hostcupy.concatenate([x, host]),
    }
    for what, call in refused.items():
        with pytest.raises(TypeError):
            call()
            pytest.fail(what)
    from scratchcap.ops import fused
    add_tanh = fused.kernel(hostcupy, "scratchcap_add_tanh")
    with pytest.raises(TypeError, match="Unsupported type"):
        add_tanh(x, host)
    with pytest.raises(TypeError, match="Type is mismatched"):
        add_tanh(x, x.astype(np.float32))
    np.testing.assert_allclose(to_numpy(add_tanh(x, x)), np.tanh(2 * to_numpy(x)))
    assert isinstance(x.sum(), hostcupy.ndarray) and x.sum().ndim == 0  # 0-d arrays, not NumPy scalars
    assert isinstance(x[0, 1], hostcupy.ndarray) and float(x[0, 1]) == 1.0
    assert isinstance(np.tanh(x), hostcupy.ndarray)  # NumPy's ufuncs dispatch to the device, as in CuPy
    assert get_array_module(x) is hostcupy and get_array_module(host) is np


def test_the_explicit_transfers_copy(hostcupy):
    host = np.arange(4.0)
    dev = to_device(host, "gpu")
    host[0] = 9.0
    assert float(dev[0]) == 0.0  # host-to-device copies
    back = to_numpy(dev)
    back[1] = 9.0
    assert float(dev[1]) == 1.0 and type(back) is np.ndarray


def test_a_host_array_slipping_into_a_layer_is_caught(hostcupy):
    x, b = hostcupy.ones((2, 3)), hostcupy.zeros(4)
    with pytest.raises(TypeError, match="Unsupported type"):
        ops.linear_forward(x, np.ones((3, 4)), b)
    out, _ = ops.linear_forward(x, hostcupy.ones((3, 4)), b)
    np.testing.assert_array_equal(to_numpy(out), np.full((2, 4), 3.0))


def test_the_parity_command_passes_on_the_stand_in(tmp_path):
    """What benchmarks/gpu_check.sh runs first, with the stand-in on PYTHONPATH as its header says."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HOSTCUPY, root]))
    # float16 on the stand-in is NumPy's float16, which has no BLAS: minutes at 224 px (test_vgg16 checks it small)
    run = subprocess.run([sys.executable, "-m", "scratchcap.parity", "--weights", str(tmp_path / "none.h5"),
                          "--images", str(tmp_path), "--vgg-precisions", "tf32"], capture_output=True, text=True,
                         env=env, cwd=root, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert "checks within tolerance" in lines[-1] and not any(line.startswith("BAD") for line in lines)
    assert sum(line.startswith("ok ") for line in lines) > 80
    assert "generated images, random weights" in run.stdout and "in tf32" in run.stdout


def test_on_the_gpu_a_vgg16_layer_is_one_block_whatever_the_batch(hostcupy, monkeypatch):
    """The CPU's cache-sized blocks would cost a GPU launches per block: there the kernel count stays flat."""
    from scratchcap.ops import conv
    from scratchcap.vgg16 import GPU_WINOGRAD_MIN_BATCH, VGG16
    from vgg_fixtures import random_layers

    model = VGG16(to_device(random_layers(5), "gpu"), dict(preprocessing="caffe", channel_order="BGR",
                                                          input_scale=255.0, mean=(0, 0, 0), std=(1, 1, 1)))

    def kernels(batch):
        x = hostcupy.asarray(np.random.default_rng(0).standard_normal((batch, 224, 224, 3)).astype(np.float32))
        model.forward(x, layers=("block2_conv2",))
        hostcupy.counts.clear()
        model.forward(x, layers=("block2_conv2",))
        return hostcupy.counts["kernels"]

    small = GPU_WINOGRAD_MIN_BATCH  # from there on the GPU runs Winograd, like the CPU
    assert kernels(2 * small) == kernels(small)
    monkeypatch.setattr(conv, "GPU_BLOCK_BYTES", 0)  # the CPU's budgets: block1_conv2 goes image by image
    assert kernels(2 * small) > kernels(small)
