"""Keras application weight files (vgg16_weights_tf_dim_ordering_tf_kernels[_notop].h5, or a full model file).

Keras lists the layers in the root attribute ``layer_names`` and, in each
layer's group, the datasets in ``weight_names``. Attributes larger than HDF5's
64 KiB header limit are split as ``layer_names0``, ``layer_names1``, ...
A full model file keeps the same layout under ``/model_weights``. Dataset names
are ``block1_conv1/kernel:0`` (Keras 2) or ``block1_conv1_W_1:0`` (Keras 1);
the kernel is told from the bias by its rank, so both spellings work.
"""
from __future__ import annotations

import os

import numpy as np

from .format import CONV_LAYERS, WeightFileError


def _decode(values):
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def split_attribute(obj, name: str) -> list:
    """Read a list attribute that Keras may have split as name0, name1, ..."""
    if name in obj.attrs:
        return _decode(obj.attrs[name])
    values, i = [], 0
    while f"{name}{i}" in obj.attrs:
        values.extend(_decode(obj.attrs[f"{name}{i}"]))
        i += 1
    if i == 0:
        raise KeyError(name)
    return values


def is_keras_h5(f) -> bool:
    root = f["model_weights"] if "model_weights" in f else f
    return any(k == "layer_names" or (k.startswith("layer_names") and k[11:].isdigit())
               for k in root.attrs)


def read_keras_h5(path) -> tuple[dict, str, str]:
    """Returns ({layer: (kernel HWIO, bias)}, preprocessing, description)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightFileError(f"{path} is not a readable HDF5 file: {exc}") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        try:
            names = split_attribute(root, "layer_names")
        except KeyError:
            raise WeightFileError(f"{path}: no 'layer_names' attribute; not a Keras weight file") from None
        layers = {}
        for lname in names:
            if lname not in CONV_LAYERS:
                continue  # pooling, flatten and the classifier are not needed
            group = root[lname]
            arrays = [np.asarray(group[w]) for w in split_attribute(group, "weight_names")]
            kernels = [a for a in arrays if a.ndim == 4]
            biases = [a for a in arrays if a.ndim == 1]
            if len(kernels) != 1 or len(biases) != 1:
                raise WeightFileError(
                    f"{path}: layer {lname} holds {[a.shape for a in arrays]}, expected one kernel and one bias")
            layers[lname] = (kernels[0].astype(np.float32), biases[0].astype(np.float32))
    return layers, "caffe", f"Keras application weights ({os.path.basename(str(path))})"
