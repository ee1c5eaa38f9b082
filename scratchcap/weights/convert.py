"""Detect a weight file's format and convert it to scratchcap's HDF5 layout."""
from __future__ import annotations

import hashlib
import zipfile

from .format import VGG16_WIDTHS, WeightFileError, check_layers, save_weights


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def detect_format(path) -> str:
    """'keras', 'torch' or 'onnx', from the file's contents rather than its name."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras"
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return "torch"
    if str(path).lower().endswith(".onnx") or head[:1] == b"\x08":  # ModelProto field 1 (ir_version)
        return "onnx"
    raise WeightFileError(
        f"{path}: unknown weight format (expected a Keras .h5, a PyTorch .pth or an ONNX model)")


def read_any(path, preprocessing: str | None = None):
    """Returns (layers, preprocessing, description) for a file of any supported format."""
    kind = detect_format(path)
    if kind == "keras":
        from .keras_h5 import read_keras_h5
        layers, pre, desc = read_keras_h5(path)
    elif kind == "torch":
        from .torch_pth import read_torchvision_pth
        layers, pre, desc = read_torchvision_pth(path)
    else:
        from .onnx_model import read_onnx
        layers, pre, desc = read_onnx(path, preprocessing)
    return layers, preprocessing or pre, desc


def convert(src, out, *, preprocessing: str | None = None, widths=VGG16_WIDTHS,
            extra_attrs: dict | None = None, expected_checksums: dict | None = None):
    """Convert ``src`` to scratchcap's format at ``out`` (written atomically). Returns the layers."""
    layers, pre, desc = read_any(src, preprocessing)
    check_layers(layers, widths, source=str(src))
    if expected_checksums:
        from .format import layer_checksum
        for name, digest in expected_checksums.items():
            got = layer_checksum(*layers[name])
            if got != digest:
                raise WeightFileError(
                    f"{src}: layer {name} has checksum {got}, the project records {digest}")
    save_weights(out, layers, preprocessing=pre, source=desc, source_sha256=file_sha256(src),
                 widths=widths, extra_attrs=extra_attrs)
    return layers
