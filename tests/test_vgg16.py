"""VGG-16 forward pass and preprocessing."""
import glob
import os

import numpy as np
import pytest
from PIL import Image

from scratchcap import vgg16 as vgg_module
from scratchcap.vgg16 import LAYERS, VGG16
from scratchcap.weights import save_weights
from real_assets import REAL_WEIGHTS
from tolerances import assert_close
from vgg_fixtures import TINY_WIDTHS, random_layers

scipy_signal = pytest.importorskip("scipy.signal")

PHOTOS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "flickr8k",
                                       "originals", "*.jpg")))


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.h5"
    save_weights(path, random_layers(7), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    return VGG16.load(path, widths=TINY_WIDTHS)


def _reference_scipy(model, x, upto):
    """Direct correlation with scipy, float64, one output channel at a time."""
    h = x.astype(np.float64)
    out = {}
    for name in LAYERS:
        if name.endswith("pool"):
            n, hh, ww, c = h.shape
            h = h[:, :hh // 2 * 2, :ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
        else:
            k, b = (a.astype(np.float64) for a in model.params[name])
            hp = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
            h = np.stack([np.stack([scipy_signal.correlate(hp[i], k[:, :, :, f], mode="valid")[:, :, 0]
                                    for f in range(k.shape[3])], axis=-1) for i in range(len(hp))]) + b
            h = np.maximum(h, 0)
        out[name] = h
        if name == upto:
            return out


def test_forward_matches_scipy_correlation(tiny):
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32) * 50
    got = tiny.forward(x, layers=LAYERS)
    ref = _reference_scipy(tiny, x, "block5_pool")
    for name in LAYERS:
        assert got[name].dtype == np.float32
        err = np.linalg.norm(got[name] - ref[name]) / max(np.linalg.norm(ref[name]), 1e-12)
        assert err < 1e-5, (name, err)
    assert got["block5_conv3"].shape == (2, 2, 2, 8) and got["block5_pool"].shape == (2, 1, 1, 8)


def test_forward_stops_at_the_last_requested_layer(tiny, monkeypatch):
    calls = []
    real = vgg_module.ops.conv2d_forward
    monkeypatch.setattr(vgg_module.ops, "conv2d_forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tiny.forward(np.zeros((1, 32, 32, 3), np.float32), layers=("block2_conv1", "block1_conv1"))
    assert sorted(out) == ["block1_conv1", "block2_conv1"] and len(calls) == 3
    with pytest.raises(ValueError, match="unknown VGG-16 layers"):
        tiny.forward(np.zeros((1, 32, 32, 3), np.float32), layers=("fc7",))


def test_forward_with_row_blocks_equals_one_gemm(tiny, monkeypatch):
    x = np.random.default_rng(1).standard_normal((3, 40, 40, 3)).astype(np.float32)
    whole = tiny.forward(x, layers=("block3_conv3",))["block3_conv3"]
    for name in ("BLOCK_BYTES", "WINOGRAD_BLOCK_BYTES", "WINOGRAD_CHUNK_BYTES"):
        monkeypatch.setattr(vgg_module.ops.conv, name, 2000)  # forces blocks of a few rows
    blocked = VGG16(tiny.params, tiny.attrs).forward(x, layers=("block3_conv3",))["block3_conv3"]
    # blocks of rows change the GEMMs' shapes, hence their summation order, through six float32 layers
    assert_close(blocked, whole, "float32", depth=6 * 64)


def test_winograd_layers_equal_im2col(tiny, monkeypatch):
    assert set(tiny.winograd) == set(vgg_module.WINOGRAD_LAYERS) and "block2_conv1" in tiny.winograd
    calls = []
    real = vgg_module.ops.conv2d_forward
    monkeypatch.setattr(vgg_module.ops, "conv2d_forward",
                        lambda *a, **k: calls.append(k["winograd"] is not None) or real(*a, **k))
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 3)).astype(np.float32) * 50
    fast = tiny.forward(x, layers=("block5_conv3",))["block5_conv3"]
    assert calls == [False, False] + [True] * 11
    plain = VGG16(tiny.params, tiny.attrs, winograd=False)
    assert plain.winograd == {}
    ref = plain.forward(x, layers=("block5_conv3",))["block5_conv3"]
    assert calls[13:] == [False] * 13
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("batch", [1, vgg_module.GPU_WINOGRAD_MIN_BATCH - 1, vgg_module.GPU_WINOGRAD_MIN_BATCH])
def test_on_the_gpu_a_small_batch_runs_by_im2col(tiny, monkeypatch, hostcupy, batch):
    from scratchcap.backend import to_device

    gpu = VGG16(to_device(tiny.params, "gpu"), tiny.attrs)
    calls = []
    real = vgg_module.ops.conv2d_forward
    monkeypatch.setattr(vgg_module.ops, "conv2d_forward",
                        lambda *a, **k: calls.append(k["winograd"] is not None) or real(*a, **k))
    x = np.random.default_rng(3).standard_normal((batch, 32, 32, 3)).astype(np.float32) * 50
    got = gpu.forward(hostcupy.asarray(x), layers=("block5_conv3",))["block5_conv3"]
    assert calls == [False, False] + [batch >= vgg_module.GPU_WINOGRAD_MIN_BATCH] * 11
    ref = tiny.forward(x, layers=("block5_conv3",))["block5_conv3"]  # NumPy: Winograd at every batch
    np.testing.assert_allclose(hostcupy.asnumpy(got), ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())
    calls.clear()  # the threshold is the model's: 1 asks for Winograd at every batch size, as the benchmark does
    VGG16(gpu.params, tiny.attrs, gpu_winograd_min_batch=1).forward(hostcupy.asarray(x), layers=("block5_conv3",))
    assert calls == [False, False] + [True] * 11


def logged_tf32_switch(hostcupy, monkeypatch):
    """The stand-in's copy of CuPy's GEMM compute-type switch, logging what is set; returns the log."""
    linalg, log = hostcupy._core._routines_linalg, []
    real = linalg.set_compute_type
    monkeypatch.setattr(linalg, "set_compute_type", lambda dtype, kind: log.append(kind) or real(dtype, kind))
    return log


def test_the_cpu_refuses_the_gpu_precisions(tiny):
    for precision in ("tf32", "float16"):
        with pytest.raises(ValueError, match=f"precision {precision} is for the GPU"):
            VGG16(tiny.params, tiny.attrs, precision=precision)
    with pytest.raises(ValueError, match="precision must be one of float32, tf32, float16"):
        VGG16(tiny.params, tiny.attrs, precision="bfloat16")


def test_float16_on_the_gpu_keeps_the_caches_resolution_and_returns_float32(tiny, hostcupy):
    from scratchcap.backend import to_device
    from scratchcap.parity import PRECISION_RTOL, relative_error

    x = np.random.default_rng(4).standard_normal((2, 32, 32, 3)).astype(np.float32) * 50
    ref = tiny.forward(x, layers=("block4_conv3", "block5_conv3"))
    half = VGG16(to_device(tiny.params, "gpu"), tiny.attrs, precision="float16")
    got = half.forward(hostcupy.asarray(x), layers=("block4_conv3", "block5_conv3"))
    assert half.params["block1_conv1"][0].dtype == np.float32  # what the cache's fingerprint reads
    for name in ref:
        assert got[name].dtype == np.float32
        err = relative_error(ref[name], got[name])
        assert 1e-6 < err <= PRECISION_RTOL, (name, err)  # it did compute in float16, and close enough


def test_tf32_switches_cupys_gemms_for_vgg16_alone_and_says_when_cupy_has_no_switch(tiny, hostcupy, monkeypatch):
    import types

    from scratchcap.backend import to_device

    x = hostcupy.asarray(np.random.default_rng(5).standard_normal((1, 32, 32, 3)).astype(np.float32))
    model = VGG16(to_device(tiny.params, "gpu"), tiny.attrs, precision="tf32")
    log, seen = logged_tf32_switch(hostcupy, monkeypatch), []
    linalg = hostcupy._core._routines_linalg
    real = vgg_module.ops.conv2d_forward
    monkeypatch.setattr(vgg_module.ops, "conv2d_forward",
                        lambda *a, **k: seen.append(linalg.get_compute_type(np.float32)) or real(*a, **k))
    model.forward(x)
    assert seen and set(seen) == {linalg.COMPUTE_TYPE_TF32}  # every convolution ran with TF32 on
    assert log == [linalg.COMPUTE_TYPE_TF32, linalg.COMPUTE_TYPE_DEFAULT]  # and the switch is back as it was
    monkeypatch.setattr(hostcupy, "_core", types.SimpleNamespace())
    with pytest.raises(RuntimeError, match="has no TF32 switch"):
        model.forward(x)


def test_preprocess_caffe_is_bgr_minus_the_mean(tiny):
    red = Image.new("RGB", (50, 30), (255, 0, 0))
    x = tiny.preprocess([red], size=16)
    assert x.shape == (1, 16, 16, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0, 0], [-103.939, -116.779, 255 - 123.68], rtol=1e-5)


def test_preprocess_torch_is_rgb_scaled_and_standardized(tmp_path):
    path = tmp_path / "t.h5"
    save_weights(path, random_layers(), preprocessing="torch", source="test", widths=TINY_WIDTHS)
    model = VGG16.load(path, widths=TINY_WIDTHS)
    x = model.preprocess([Image.new("RGB", (8, 8), (255, 0, 0))], size=8)
    np.testing.assert_allclose(x[0, 0, 0], [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-5)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1", "CMYK", "I;16"])
def test_preprocess_accepts_every_image_mode(tiny, mode):
    image = Image.new("RGB", (37, 23), (10, 200, 30)).convert(mode)
    assert tiny.preprocess([image], size=24).shape == (1, 24, 24, 3)


def test_preprocess_accepts_arrays_and_crops_the_centre(tiny):
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, 20:40] = 255  # a white band in the middle third
    cropped = tiny.preprocess([arr], size=20, crop=True)
    squashed = tiny.preprocess([arr], size=20)
    assert (cropped[0, :, :, 0] > 0).all()  # the crop sees only the white centre
    assert (squashed[0, :, 0, 0] < 0).all()  # the squash keeps the black border
    assert tiny.preprocess([arr[:, :, 0]], size=20).shape == (1, 20, 20, 3)
    transparent = np.zeros((4, 4, 4), np.uint8)
    x = tiny.preprocess([transparent], size=4)
    np.testing.assert_allclose(x[0, 0, 0], [255 - 103.939, 255 - 116.779, 255 - 123.68], rtol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        tiny.preprocess([arr.astype(np.float32)])


def _reference_shifted_gemm(model, x):
    """Independent float64 formulation: nine shifted GEMMs per convolution."""
    h = x.astype(np.float64)
    for name in LAYERS[:LAYERS.index("block5_conv3") + 1]:
        if name.endswith("pool"):
            n, hh, ww, c = h.shape
            h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
            continue
        k, b = (a.astype(np.float64) for a in model.params[name])
        n, hh, ww, _ = h.shape
        hp = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
        out = np.zeros((n, hh, ww, k.shape[3])) + b
        for i in range(3):
            for j in range(3):
                out += hp[:, i:i + hh, j:j + ww, :] @ k[i, j]
        h = np.maximum(out, 0)
    return h


@pytest.mark.skipif(not os.path.exists(REAL_WEIGHTS), reason="real VGG-16 weights not fetched")
@pytest.mark.skipif(not PHOTOS, reason="../shared/flickr8k/originals not present")
def test_real_weights_on_real_photos_match_an_independent_float64_reference():
    model = VGG16.load(REAL_WEIGHTS)
    images = [Image.open(p) for p in PHOTOS[:2]]
    x = model.preprocess(images)
    got = model.forward(x)["block5_conv3"]
    ref = _reference_shifted_gemm(model, x)
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert got.shape == (2, 14, 14, 512) and err < 1e-4, err
    assert (got > 0).mean() > 0.01  # real features are sparse but not dead


@pytest.mark.skipif(not os.path.exists(REAL_WEIGHTS), reason="real VGG-16 weights not fetched")
@pytest.mark.skipif(not PHOTOS, reason="../shared/flickr8k/originals not present")
def test_real_weights_match_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is an optional reference")
    model = VGG16.load(REAL_WEIGHTS)
    x = model.preprocess([Image.open(p) for p in PHOTOS[2:4]])
    got = model.forward(x)["block5_conv3"]
    h = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        for name in LAYERS[:LAYERS.index("block5_conv3") + 1]:
            if name.endswith("pool"):
                h = torch.nn.functional.max_pool2d(h, 2)
                continue
            k, b = model.params[name]
            h = torch.relu(torch.nn.functional.conv2d(
                h, torch.from_numpy(k.transpose(3, 2, 0, 1).copy()), torch.from_numpy(b), padding=1))
    ref = h.numpy().transpose(0, 2, 3, 1)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4
