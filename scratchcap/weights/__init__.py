"""scratchcap's VGG-16 weight file (HDF5), and converters into it.

Layout of the file:

    /                       attrs: format = "scratchcap-vgg16", format_version = 1,
                                   source (text), source_sha256,
                                   preprocessing = "caffe" | "torch", channel_order,
                                   input_scale (255 or 1), mean (3,), std (3,)
    /block1_conv1/kernel    (3, 3, C_in, C_out) float32, HWIO as Keras stores it
    /block1_conv1/bias      (C_out,) float32
    ...
    /block5_conv3/...

``python -m scratchcap.weights convert SRC --out DST`` converts Keras .h5,
torchvision .pth and ONNX files; ``... fetch`` obtains the ImageNet weights.
"""
from .format import (CONV_LAYERS, PREPROCESSING, VGG16_WIDTHS, WeightFileError, layer_shapes,
                     load_weights, save_weights)

__all__ = ["CONV_LAYERS", "PREPROCESSING", "VGG16_WIDTHS", "WeightFileError", "layer_shapes",
           "load_weights", "save_weights"]
