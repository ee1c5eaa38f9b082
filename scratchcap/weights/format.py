"""Reading and writing scratchcap's VGG-16 weight file, with every layer checked."""
from __future__ import annotations

import hashlib

import numpy as np

from ..atomic import atomic_path

FORMAT = "scratchcap-vgg16"
FORMAT_VERSION = 1

# Keras's names for VGG-16's 13 convolutions, in order, and their output channels.
CONV_LAYERS = (
    "block1_conv1", "block1_conv2",
    "block2_conv1", "block2_conv2",
    "block3_conv1", "block3_conv2", "block3_conv3",
    "block4_conv1", "block4_conv2", "block4_conv3",
    "block5_conv1", "block5_conv2", "block5_conv3",
)
VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)

# What the weights expect as input (Keras's preprocess_input modes).
PREPROCESSING = {
    "caffe": dict(channel_order="BGR", input_scale=255.0,
                  mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0)),
    "torch": dict(channel_order="RGB", input_scale=1.0,
                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}


class WeightFileError(ValueError):
    """A weight file that is missing, truncated, foreign or of the wrong shape."""


def layer_shapes(widths=VGG16_WIDTHS, in_channels: int = 3) -> dict:
    """{layer: (kernel shape, bias shape)} for a VGG-16 with the given widths."""
    if len(widths) != len(CONV_LAYERS):
        raise ValueError(f"VGG-16 has {len(CONV_LAYERS)} convolutions, got {len(widths)} widths")
    shapes, c_in = {}, in_channels
    for name, c_out in zip(CONV_LAYERS, widths):
        shapes[name] = ((3, 3, c_in, c_out), (c_out,))
        c_in = c_out
    return shapes


def layer_checksum(kernel, bias) -> str:
    """sha256 of a layer's float32 little-endian kernel (HWIO, C order) followed by its bias."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(kernel, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(bias, dtype="<f4").tobytes())
    return h.hexdigest()


def check_layers(layers: dict, widths=VGG16_WIDTHS, source: str = "weights"):
    """Raise WeightFileError unless ``layers`` has every conv with the expected shapes."""
    for name, (kshape, bshape) in layer_shapes(widths).items():
        if name not in layers:
            raise WeightFileError(f"{source}: layer {name} is missing")
        kernel, bias = layers[name]
        if tuple(kernel.shape) != kshape or tuple(bias.shape) != bshape:
            raise WeightFileError(
                f"{source}: layer {name} has kernel {tuple(kernel.shape)} and bias "
                f"{tuple(bias.shape)}, expected kernel {kshape} and bias {bshape}")


def save_weights(path, layers: dict, *, preprocessing: str, source: str, source_sha256: str = "",
                 widths=VGG16_WIDTHS, extra_attrs: dict | None = None):
    """Write {layer: (kernel HWIO, bias)} atomically in scratchcap's format."""
    import h5py

    if preprocessing not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSING)}, got {preprocessing!r}")
    check_layers(layers, widths)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["source"] = source
            f.attrs["source_sha256"] = source_sha256
            f.attrs["preprocessing"] = preprocessing
            for key, value in PREPROCESSING[preprocessing].items():
                f.attrs[key] = value
            f.attrs["widths"] = np.asarray(widths, dtype=np.int64)
            for key, value in (extra_attrs or {}).items():
                f.attrs[key] = value
            for name in CONV_LAYERS:
                kernel, bias = layers[name]
                g = f.create_group(name)
                g.create_dataset("kernel", data=np.asarray(kernel, dtype=np.float32))
                g.create_dataset("bias", data=np.asarray(bias, dtype=np.float32))
                g.attrs["sha256"] = layer_checksum(kernel, bias)


def load_weights(path, widths=VGG16_WIDTHS):
    """Read and check a weight file. Returns (layers {name: (kernel, bias)}, attrs dict).

    ``widths=None`` accepts any widths the file records (for small test networks).
    """
    from ..hdf5 import open_readonly

    path = str(path)
    f = open_readonly(path, WeightFileError, "weight file")
    with f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        if attrs.get("format") != FORMAT:
            hint = ""
            if "layer_names" in attrs or "layer_names0" in attrs or "model_weights" in f:
                hint = " It looks like a Keras weight file: convert it with `python -m scratchcap.weights convert`."
            raise WeightFileError(f"{path} is not a scratchcap VGG-16 weight file.{hint}")
        if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise WeightFileError(
                f"{path} has format version {attrs.get('format_version')}, this scratchcap reads {FORMAT_VERSION}")
        if attrs.get("preprocessing") not in PREPROCESSING:
            raise WeightFileError(f"{path} records unknown preprocessing {attrs.get('preprocessing')!r}")
        file_widths = tuple(int(w) for w in attrs.get("widths", VGG16_WIDTHS))
        expected = file_widths if widths is None else tuple(widths)
        layers = {}
        try:
            for name in CONV_LAYERS:
                if name in f and "kernel" in f[name] and "bias" in f[name]:
                    layers[name] = (f[name]["kernel"][...], f[name]["bias"][...])
        except OSError as exc:
            raise WeightFileError(f"{path}: layer data cannot be read (truncated file?): {exc}") from None
        check_layers(layers, expected, source=path)
        for name, (kernel, bias) in layers.items():
            if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
                raise WeightFileError(f"{path}: layer {name} holds NaN or infinite values")
    attrs["widths"] = expected
    return layers, attrs
