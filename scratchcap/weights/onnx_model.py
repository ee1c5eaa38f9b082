"""ONNX models that contain a VGG-16 convolutional base (needs the optional ``onnx`` package).

The graph's Conv nodes are taken in execution order; the first 13 are matched
to block1_conv1 ... block5_conv3 and their weight initializers are checked
against VGG-16's shapes. ONNX stores kernels as (O, I, KH, KW); they are
transposed to HWIO.
"""
from __future__ import annotations

import os

import numpy as np

from .format import CONV_LAYERS, WeightFileError


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightFileError(
            "reading ONNX files needs the onnx package: pip install 'scratchcap[onnx]'") from None
    return onnx, numpy_helper


def read_onnx(path, preprocessing: str | None = None) -> tuple[dict, str, str]:
    """Returns ({layer: (kernel HWIO, bias)}, preprocessing, description).

    Without ``preprocessing``, a model converted from Keras (tf2onnx, NHWC input)
    is taken to expect Keras's 'caffe' input; anything else must say.
    """
    onnx, numpy_helper = _onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise WeightFileError(f"{path} is not a readable ONNX model: {exc}") from None
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    if len(convs) < len(CONV_LAYERS):
        raise WeightFileError(f"{path} has {len(convs)} Conv nodes; a VGG-16 base has {len(CONV_LAYERS)}")
    layers = {}
    for name, node in zip(CONV_LAYERS, convs):
        if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            raise WeightFileError(f"{path}: Conv node {node.name!r} ({name}) lacks constant weights and bias")
        w = numpy_helper.to_array(inits[node.input[1]])
        b = numpy_helper.to_array(inits[node.input[2]])
        if w.ndim != 4:
            raise WeightFileError(f"{path}: Conv node {node.name!r} ({name}) has weight shape {w.shape}")
        layers[name] = (w.transpose(2, 3, 1, 0).astype(np.float32), b.astype(np.float32))
    if preprocessing is None:
        if model.producer_name in ("tf2onnx", "keras2onnx"):
            preprocessing = "caffe"
        else:
            raise WeightFileError(
                f"{path} was made by {model.producer_name or 'an unknown producer'}; say which input "
                "it expects with --preprocessing caffe|torch")
    return layers, preprocessing, f"ONNX model by {model.producer_name} ({os.path.basename(str(path))})"
