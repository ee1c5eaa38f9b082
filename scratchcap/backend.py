"""The array-module seam: one place that decides between NumPy and CuPy.

Code in scratchcap never imports CuPy directly. It asks this module which array
module the arrays it was handed belong to (``get_array_module``), and the caller
decides where data lives (``to_device``). There is no global GPU flag.

CuPy is optional and imported lazily: on a machine without it, nothing here
touches it unless a caller explicitly asks for ``device='gpu'``.
"""
from __future__ import annotations

import importlib
import math
import sys

import numpy

from .counter_random import counter_uniform

DEVICES = ("cpu", "gpu", "auto")


class DeviceUnavailableError(RuntimeError):
    """Raised when the GPU is requested but CuPy or a CUDA device is missing."""


def _loaded_cupy():
    """CuPy if some code has already imported it, else None (never imports it)."""
    return sys.modules.get("cupy")


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    Non-array arguments (None, Python scalars, NumPy arrays) are ignored, so a
    layer can pass all of its inputs without filtering them.
    """
    cupy = _loaded_cupy()
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return numpy


def _import_cupy():
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise DeviceUnavailableError(
            "device 'gpu' needs CuPy, which is not installed "
            f"({exc}). Install it with: pip install 'scratchcap[gpu]' "
            "(CuPy for CUDA 12), or use --device cpu."
        ) from None


def gpu_status() -> tuple[bool, str]:
    """(available, reason): whether CuPy imports and sees a CUDA device."""
    try:
        cupy = _import_cupy()
    except DeviceUnavailableError as exc:
        return False, str(exc)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing, broken install, ...
        return False, f"CuPy is installed but CUDA is not usable: {exc}"
    if count < 1:
        return False, "CuPy is installed but no CUDA device was found."
    return True, f"{count} CUDA device(s)"


def resolve_device(device: str) -> str:
    """Turn 'cpu' | 'gpu' | 'auto' into 'cpu' or 'gpu'.

    'gpu' raises DeviceUnavailableError saying what is missing; 'auto' picks the
    GPU when it is usable and the CPU otherwise.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return "cpu"
    ok, reason = gpu_status()
    if device == "gpu" and not ok:
        raise DeviceUnavailableError(reason)
    return "gpu" if ok else "cpu"


def xp_for(device: str):
    """The array module for a resolved or unresolved device name."""
    return _import_cupy() if resolve_device(device) == "gpu" else numpy


def to_numpy(x):
    """A NumPy array holding ``x`` (copied from the GPU when it is a CuPy array)."""
    cupy = _loaded_cupy()
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.asnumpy(x)
    return numpy.asarray(x)


def to_device(x, device: str):
    """Move an array, or a dict/list/tuple of arrays, to 'cpu', 'gpu' or 'auto'."""
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    if resolve_device(device) == "cpu":
        return to_numpy(x)
    return _import_cupy().asarray(x)


def add_device_argument(parser, default: str = "auto"):
    """Add the ``--device cpu|gpu|auto`` and ``--threads N`` options that every command shares."""
    parser.add_argument(
        "--device", choices=DEVICES, default=default,
        help="where to compute: cpu (NumPy), gpu (CuPy) or auto (GPU when usable)")
    from .threads import add_threads_argument  # here: threads reaches backend through row_blocks
    return add_threads_argument(parser)


def uniform(rng, shape, like):
    """Uniform [0, 1) samples of ``shape`` from an explicit generator, in like's module and dtype.

    ``rng`` may be a NumPy or CuPy Generator. A NumPy generator gives one 64-bit
    key per call, and the samples are computed from it on like's device
    (scratchcap.counter_random): a seeded run draws the same numbers on NumPy and
    CuPy, and nothing is copied to the GPU. An object with ``generator`` and
    ``row_offset`` (scratchcap.distributed.ShardRng) stands for rows row_offset...
    of a larger batch: it gives exactly those rows of the whole batch's draw.
    """
    xp = get_array_module(like)
    row_offset = getattr(rng, "row_offset", None)
    if row_offset is not None:  # a data-parallel shard: rows row_offset.. of the whole batch's draw
        key = int(rng.generator.integers(0, 2**64, dtype=numpy.uint64))
        shape = tuple(shape)
        per_row = math.prod(shape[1:])
        return counter_uniform(xp, key, shape, like.dtype, start=row_offset * per_row)
    if isinstance(rng, numpy.random.Generator):
        key = int(rng.integers(0, 2**64, dtype=numpy.uint64))
        return counter_uniform(xp, key, tuple(shape), like.dtype)
    u = rng.random(shape)
    if xp is numpy and not isinstance(u, numpy.ndarray):
        u = to_numpy(u)
    return xp.asarray(u, dtype=like.dtype)


def scatter_add(dst, idx, src):
    """dst[idx] += src with repeated indices accumulated (in place on dst, which the caller owns)."""
    xp = get_array_module(dst)
    if xp is numpy:
        numpy.add.at(dst, idx, src)
    else:
        importlib.import_module("cupyx").scatter_add(dst, idx, src)
    return dst
