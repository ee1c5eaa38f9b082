"""VGG-16's convolutional part, built from scratchcap.ops, on weights from scratchcap.weights.

    model = VGG16.load(ensure_weights())                    # the user cache's ImageNet weights; or device="gpu"
    x = model.preprocess([pil_image, ...])                  # (N, 224, 224, 3) float32
    feats = model.forward(x, layers=("block5_conv3",))      # {"block5_conv3": (N, 14, 14, 512)}

Layers, in order (every conv is 3x3, stride 1, 'same', followed by ReLU; every
pool is 2x2, stride 2): block1_conv1, block1_conv2, block1_pool, block2_conv1,
block2_conv2, block2_pool, block3_conv1..3, block3_pool, block4_conv1..3,
block4_pool, block5_conv1..3, block5_pool. A conv layer's named output is
after its ReLU, as in Keras.
"""
from __future__ import annotations

import contextlib
import importlib

import numpy as np

from . import ops
from .backend import get_array_module, to_device
from .weights import VGG16_WIDTHS, load_weights
from .weights.format import CONV_LAYERS

LAYERS = (
    "block1_conv1", "block1_conv2", "block1_pool",
    "block2_conv1", "block2_conv2", "block2_pool",
    "block3_conv1", "block3_conv2", "block3_conv3", "block3_pool",
    "block4_conv1", "block4_conv2", "block4_conv3", "block4_pool",
    "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool",
)
# Convolutions run by Winograd's F(2x2, 3x3) (ops/winograd.py): 2.25x fewer flops, measured
# 1.3-1.8x faster from block2 on. In block1 (3 and 64 input channels) its GEMMs are too thin to pay.
WINOGRAD_LAYERS = tuple(name for name in CONV_LAYERS if not name.startswith("block1_"))
# On a GPU a small batch is launch-bound, and Winograd's transforms are extra launches: on an H100
# (benchmarks/results/RESULTS.md, host_vs_device.py) im2col took 2.9-3.4 ms at batch 1 and 3.2-3.5 ms at 2
# against Winograd's 5.9-12.8 and 9.1-9.5. At batch 4 Winograd was 7% faster on one machine and 30%
# slower on the next (a slower host); from batch 8 it was 8-9% faster on both. NumPy uses Winograd
# at every batch size.
GPU_WINOGRAD_MIN_BATCH = 8
# How the GPU multiplies in VGG-16: float32 throughout; tf32, float32 arrays whose GEMMs run on TF32 tensor
# cores (10 mantissa bits kept, as PyTorch's convolutions do by default); float16 arrays whose GEMMs accumulate
# in float32. The cache stores float16, whose 10 mantissa bits both keep; the CPU always computes float32.
PRECISIONS = ("float32", "tf32", "float16")
DEFAULT_PRECISION = "float32"  # the faster two wait for scratchcap.parity's real-photo check on a GPU


def to_rgb_image(image):
    """A PIL RGB image from a PIL image of any mode or an array (H, W), (H, W, 3) or (H, W, 4) of uint8."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 0-255, got {image.dtype}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise ValueError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
        image = Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white rather than whatever colour they hide.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_image(image, size: int = 224, crop: bool = False):
    """Resize to size x size: squashed by default, or keeping the aspect ratio and centre-cropping."""
    from PIL import Image

    if crop:
        w, h = image.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        return image.crop((left, top, left + size, top + size))
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.BILINEAR)


class VGG16:
    """VGG-16 up to block5_pool. Parameters are {layer: (kernel HWIO, bias)} on one device."""

    def __init__(self, layers: dict, attrs: dict, winograd: bool = True,
                 gpu_winograd_min_batch: int = GPU_WINOGRAD_MIN_BATCH, precision: str = DEFAULT_PRECISION):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        xp = get_array_module(layers[CONV_LAYERS[0]][0])
        if precision != "float32" and xp is np:
            raise ValueError(f"precision {precision} is for the GPU (CuPy); on the CPU VGG-16 computes in float32")
        self.precision = precision
        self.params = layers
        self.attrs = attrs
        self.preprocessing = str(attrs["preprocessing"])
        self.channel_order = str(attrs["channel_order"])
        self.input_scale = float(attrs["input_scale"])
        self.mean = np.asarray(attrs["mean"], dtype=np.float32)
        self.std = np.asarray(attrs["std"], dtype=np.float32)
        self.workspace = ops.Workspace()
        # Transformed kernels, made once: 16/9 the size of the kernels they come from.
        self.winograd = {name: ops.winograd_kernel(layers[name][0]) for name in WINOGRAD_LAYERS} if winograd else {}
        self.gpu_winograd_min_batch = gpu_winograd_min_batch
        self._layers = layers  # what the convolutions multiply by: params, or their float16 copies
        if precision == "float16":  # kernels transformed in float32 first, then rounded once
            self._layers = {k: (w.astype(xp.float16), b.astype(xp.float16)) for k, (w, b) in layers.items()}
            self.winograd = {k: u.astype(xp.float16) for k, u in self.winograd.items()}

    @classmethod
    def load(cls, path, device: str = "cpu", widths=VGG16_WIDTHS, winograd: bool = True,
             precision: str = DEFAULT_PRECISION):
        """Load and check a scratchcap weight file (see scratchcap.weights).

        ``winograd=False`` runs every convolution by im2col, as a reference; ``precision``: see PRECISIONS.
        """
        layers, attrs = load_weights(path, widths=widths)
        return cls(to_device(layers, device), attrs, winograd=winograd, precision=precision)

    @property
    def xp(self):
        return get_array_module(self.params[CONV_LAYERS[0]][0])

    def preprocess(self, images, size: int = 224, crop: bool = False):
        """Turn images into the (N, size, size, 3) float32 batch that the weights expect.

        images: a list of PIL images (any mode: grayscale, RGBA and palette are
        converted to RGB) or uint8 arrays, of any size. Each is resized to
        size x size (squashed; ``crop=True`` keeps the aspect ratio and crops the
        centre), then put in the channel order and value range recorded in the
        weight file: for 'caffe', BGR in 0..255 minus the mean
        [103.939, 116.779, 123.68]; for 'torch', RGB in 0..1 minus the ImageNet
        mean, divided by its std. The batch is on the model's device.
        """
        batch = np.empty((len(images), size, size, 3), dtype=np.float32)
        for i, image in enumerate(images):
            rgb = np.asarray(resize_image(to_rgb_image(image), size, crop), dtype=np.float32)
            if self.channel_order == "BGR":
                rgb = rgb[:, :, ::-1]
            batch[i] = (rgb * (self.input_scale / 255.0) - self.mean) / self.std
        return self.xp.asarray(batch)

    def forward(self, x, layers=("block5_conv3",)):
        """Run x (N, H, W, 3) float32 through the network; return {name: activation} for ``layers``.

        It stops as soon as every requested layer has been computed. Activations are NHWC.
        On CuPy a batch under ``gpu_winograd_min_batch`` images runs by im2col (faster there).
        """
        wanted = set(layers)
        unknown = wanted - set(LAYERS)
        if unknown:
            raise ValueError(f"unknown VGG-16 layers {sorted(unknown)}; choose from {LAYERS}")
        if x.ndim != 4 or x.shape[3] != 3:
            raise ValueError(f"x must have shape (N, H, W, 3), got {tuple(x.shape)}")
        out = {}
        winograd = self.winograd
        if len(x) < self.gpu_winograd_min_batch and self.xp.__name__ == "cupy":
            winograd = {}
        dtype = x.dtype
        if self.precision == "float16":
            x = x.astype(self.xp.float16)
        with gemm_precision(self.xp, self.precision):
            for name in LAYERS:
                if name.endswith("pool"):
                    x, _ = ops.max_pool2d_forward(x)
                else:
                    kernel, bias = self._layers[name]
                    x, _ = ops.conv2d_forward(x, kernel, bias, workspace=self.workspace, relu=True,
                                              winograd=winograd.get(name))
                if name in wanted:
                    out[name] = x.astype(dtype, copy=False)
                    if len(out) == len(wanted):
                        break
        return out


@contextlib.contextmanager
def gemm_precision(xp, precision):
    """Inside: CuPy's float32 GEMMs on TF32 tensor cores when precision is 'tf32'; as before, after.

    CuPy's switch is the one behind its CUPY_TF32 variable, read once per process; setting it here
    instead confines TF32 to VGG-16, so the decoder's training never runs on it.
    """
    if precision != "tf32":
        yield
        return
    try:
        linalg = getattr(getattr(xp, "_core", None), "_routines_linalg", None) or importlib.import_module(
            f"{xp.__name__}._core._routines_linalg")
        before = linalg.get_compute_type(np.float32)
        linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32)
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"this CuPy ({getattr(xp, '__version__', '?')}) has no TF32 switch for its GEMMs "
                           f"({exc}); use precision float32 or float16") from None
    try:
        yield
    finally:
        linalg.set_compute_type(np.float32, before)
