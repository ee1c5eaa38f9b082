"""CuPy against NumPy (scratchcap.parity): runs where CuPy and a GPU are present, skips otherwise.

The plumbing tests run everywhere: NumPy against itself must agree exactly, and
the error measure must see a difference.
"""
import os

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


def test_the_checks_cover_every_layer_and_decoder_and_agree_on_numpy():
    from scratchcap.models import MODELS
    from scratchcap.ops import LAYERS

    from scratchcap.ops.fused import KERNELS

    rows = (parity.layer_parity(np, "float64") + parity.fused_parity(np, "float64")
            + parity.random_parity(np, "float64") + parity.decoder_parity(np, "float64"))
    names = " ".join(r[0] for r in rows)
    for layer in LAYERS:
        assert layer in names, layer
    for kernel in KERNELS:
        assert f"fused kernel {kernel}" in names, kernel
    for model in MODELS:
        assert f"{model} gradients" in names and f"{model} beam-3 words" in names
    assert "dropout uniforms" in names
    assert all(err == 0.0 for _, err in rows), [r for r in rows if r[1] != 0.0]


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("check", ["layer_parity", "fused_parity", "random_parity", "decoder_parity"])
def test_cupy_matches_numpy(check, dtype):
    """Every layer; each fused kernel against its body; a decoder step, Adam and beam search."""
    import cupy
    bad = [(name, err) for name, err in getattr(parity, check)(cupy, dtype) if not err <= parity.RTOL[dtype]]
    assert not bad, bad


@needs_gpu
def test_vgg16_features_match_numpy():
    import cupy
    ((what, err),) = parity.vgg_parity(cupy, REAL_WEIGHTS, parity.FLICKR8K_IMAGES)
    assert err <= parity.RTOL["float32"], what


def test_the_vgg16_check_runs_on_numpy(tmp_path):
    ((what, err),) = parity.vgg_parity(np, weights=None, images=str(tmp_path), count=1)
    assert err == 0.0 and "generated" in what and "random weights" in what
