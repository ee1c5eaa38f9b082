"""CuPy against NumPy (scratchcap.parity): runs where CuPy and a GPU are present, skips otherwise.

Everywhere else the same checks run against the CuPy stand-in (tests/hostcupy), which takes the
GPU branches (fused kernels, one block per layer), and must catch a kernel that is wrong on the
device side only.
"""

import numpy as np
import pytest

from scratchcap import parity
from scratchcap.backend import gpu_status
from real_assets import REAL_WEIGHTS

GPU_OK, GPU_REASON = gpu_status()
needs_gpu = pytest.mark.skipif(not GPU_OK, reason=f"CuPy parity: {GPU_REASON}")


def test_relative_error_sees_a_difference():
    a = np.array([1.0, -2.0, 4.0])
    assert parity.relative_error(a, a.copy()) == 0.0
    assert parity.relative_error(a, a + np.array([0, 0, 4e-3])) == pytest.approx(1e-3)
    assert parity.relative_error(a, a[:2]) == float("inf")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_checks_cover_every_layer_and_decoder_and_pass_on_the_cupy_stand_in(hostcupy, dtype):
    """The stand-in takes the GPU branches (fused kernels interpreted, one block per layer): a second code path."""
    from scratchcap.models import MODELS
    from scratchcap.ops import LAYERS
    from scratchcap.ops.fused import KERNELS

    rows = (parity.layer_parity(hostcupy, dtype) + parity.fused_parity(hostcupy, dtype)
            + parity.random_parity(hostcupy, dtype) + parity.decoder_parity(hostcupy, dtype))
    names = " ".join(r[0] for r in rows)
    for layer in LAYERS:
        assert layer in names, layer
    for kernel in KERNELS:
        assert f"fused kernel {kernel}" in names, kernel
    for model in MODELS:
        assert f"{model} gradients" in names and f"{model} beam-3 words" in names
    assert "fine-tuning block5_conv3 gradients" in names  # the VGG-16 layer trained with a decoder
    assert "dropout uniforms" in names
    bad = [r for r in rows if not r[1] <= parity.RTOL[dtype]]
    assert not bad, bad


def test_the_checks_catch_a_wrong_kernel_on_the_device_side(hostcupy, monkeypatch):
    """A fused kernel that computes tanh(a + 2b) on the device only: the attention layers must fail parity."""
    from scratchcap.ops import fused

    monkeypatch.setitem(fused.KERNELS, "scratchcap_add_tanh", fused.Body("T a, T b", "T t", "t = tanh(a + b + b);"))
    fused._compiled.cache_clear()
    rows = dict(parity.layer_parity(hostcupy, "float64"))
    assert rows["additive_attention"] > 1e-3 and rows["attend"] > 1e-3
    assert rows["linear"] <= parity.RTOL["float64"]  # the rest still agree
    fused._compiled.cache_clear()


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("check", ["layer_parity", "fused_parity", "random_parity", "decoder_parity"])
def test_cupy_matches_numpy(check, dtype):
    """Every layer; each fused kernel against its body; a decoder step, Adam and beam search."""
    import cupy
    bad = [(name, err) for name, err in getattr(parity, check)(cupy, dtype) if not err <= parity.RTOL[dtype]]
    assert not bad, bad


@needs_gpu
def test_vgg16_features_match_numpy_in_float32_and_to_the_caches_resolution_in_tf32_and_float16():
    """float32 to float32's tolerance; tf32 and float16 within 4 float16 steps (the cache's resolution), on real
    photos: vgg16.DEFAULT_PRECISION may become the fastest of them only while this holds."""
    import cupy
    rows = parity.vgg_parity(cupy, REAL_WEIGHTS, parity.FLICKR8K_IMAGES)
    assert [what.split(" (")[0] for what, _, _ in rows] == [
        "VGG-16 block5_conv3", "VGG-16 block5_conv3 in tf32", "VGG-16 block5_conv3 in float16"]
    assert rows[0][2] == parity.RTOL["float32"]
    bad = [(what, err) for what, err, tol in rows if not err <= tol]
    assert not bad, bad


def test_the_vgg16_check_runs_on_the_cupy_stand_in(tmp_path, hostcupy):
    rows = parity.vgg_parity(hostcupy, weights=str(tmp_path / "none.h5"), images=str(tmp_path), count=1,
                             precisions=("tf32",))  # float16 on NumPy has no BLAS: test_vgg16 checks it small
    (what, err, tol), (what_tf32, err_tf32, tol_tf32) = rows
    assert err <= tol == parity.RTOL["float32"] and "generated" in what and "random weights" in what
    assert "in tf32" in what_tf32 and err_tf32 <= tol_tf32 == parity.PRECISION_RTOL
