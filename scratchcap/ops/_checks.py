"""Argument checks shared by the layers.

Every failure is a ValueError that names the layer, the argument and the shapes,
so that a wrong call is caught at its source rather than as a broadcasting error
three layers later.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_numpy


def _dtype_kind(a) -> str:
    return np.dtype(a.dtype).kind


def floats(layer: str, **arrays):
    """Check that the named arrays are floating point and share one dtype; return it."""
    dtype = None
    first = None
    for name, a in arrays.items():
        if a is None:
            continue
        if not hasattr(a, "dtype") or _dtype_kind(a) != "f":
            got = getattr(a, "dtype", type(a).__name__)
            raise ValueError(f"{layer}: {name} must be a floating-point array, got {got}")
        if dtype is None:
            dtype, first = a.dtype, name
        elif a.dtype != dtype:
            raise ValueError(
                f"{layer}: {name} has dtype {a.dtype} but {first} has {dtype}; "
                "all floating-point arguments must share one dtype")
    return dtype


def index_range(layer: str, what: str, idx, V: int, against: str):
    """Check 0 <= idx < V, fetching both bounds in one copy: on a GPU each copy is a sync."""
    if not idx.size:
        return
    lo, hi = (int(b) for b in to_numpy(get_array_module(idx).stack((idx.min(), idx.max()))))
    if lo < 0 or hi >= V:
        raise ValueError(f"{layer}: {what} must lie in [0, {V}) for {against}, got range [{lo}, {hi}]")


def integers(layer: str, name: str, a):
    if not hasattr(a, "dtype") or _dtype_kind(a) not in "iu":
        got = getattr(a, "dtype", type(a).__name__)
        raise ValueError(f"{layer}: {name} must be an integer array, got {got}")


def booleans(layer: str, name: str, a):
    if not hasattr(a, "dtype") or _dtype_kind(a) != "b":
        got = getattr(a, "dtype", type(a).__name__)
        raise ValueError(f"{layer}: {name} must be a boolean array, got {got}")


def ndim(layer: str, name: str, a, n: int, letters: str):
    if a.ndim != n:
        raise ValueError(f"{layer}: {name} must have shape ({letters}), got {tuple(a.shape)}")


def shape(layer: str, name: str, a, expected: tuple, letters: str, source: str = ""):
    """Check ``a.shape == expected``; ``letters`` spells the expected shape, e.g. 'H, 4H'."""
    if tuple(a.shape) != tuple(expected):
        where = f" (from {source})" if source else ""
        raise ValueError(
            f"{layer}: {name} has shape {tuple(a.shape)} but expected ({letters}) = "
            f"{tuple(expected)}{where}")
