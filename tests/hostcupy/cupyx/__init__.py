"""cupyx for the host stand-in of CuPy (tests/hostcupy/cupy): what scratchcap calls of it."""
import numpy as _np

import cupy as _cupy


def scatter_add(a, slices, value):
    """a[slices] += value with repeated indices accumulated, on device arrays only."""
    if not isinstance(a, _cupy.ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    _np.add.at(a._host, _cupy._dev(slices), _cupy._dev(value))
