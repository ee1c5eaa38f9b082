"""A strict stand-in for CuPy on a machine without a GPU: NumPy computes, CuPy's rules apply.

It rehearses the GPU path where no GPU is lent (tests/test_hostcupy.py, and
``PYTHONPATH=tests/hostcupy bash benchmarks/gpu_check.sh OUT``). What it checks is
the discipline that real CuPy enforces and NumPy does not:

- no implicit device-to-host copy: ``numpy.asarray(x)``, ``x.__array__()``, h5py
  writes and ``json`` of an array raise TypeError, as CuPy's do;
- no mixing: a NumPy array as an operand, a ufunc or function argument, an index or an
  assigned value raises TypeError ("Unsupported type"), as CuPy's ufuncs do;
- reductions and scalar indexing return 0-d arrays, never NumPy scalars;
- host-to-device (``asarray``, ``array``) copies, and ``asnumpy``/``x.get()`` are the
  explicit ways back;
- ``ElementwiseKernel`` runs only the bodies of scratchcap.ops.fused, interpreted by
  ``fused.evaluate``, with CuPy's broadcasting and output conventions.

``counts`` tallies what a GPU would be asked to do: ``kernels`` (operations that make
or write array data), ``views`` (no data touched), ``to_device`` copies and ``to_host``
copies and syncs (``get``, ``float(x)``, ``bool(x)``, ``item``): benchmarks/launches.py
reads it.

It is at least as strict as CuPy (it refuses NumPy index arrays, which CuPy may copy),
and it proves nothing about CUDA numerics or speed: scratchcap.parity on a GPU does.
"""
from __future__ import annotations

import collections
import time
import types

import numpy as _np

__version__ = "host-stand-in"

counts = collections.Counter()

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


def _dev(x):
    """The host array behind an argument; NumPy arrays are refused as CuPy refuses them."""
    if isinstance(x, ndarray):
        return x._host
    if isinstance(x, _np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    if isinstance(x, (list, tuple)):
        return type(x)(_dev(v) for v in x)
    if isinstance(x, dict):
        return {k: _dev(v) for k, v in x.items()}
    return x


def _wrap(y):
    if isinstance(y, _np.ndarray):
        return ndarray(y)
    if isinstance(y, _np.generic):
        return ndarray(_np.asarray(y))  # CuPy returns 0-d arrays where NumPy returns scalars
    if isinstance(y, (list, tuple)):
        return type(y)(_wrap(v) for v in y)
    return y


def _counted(y, given=()):
    """Tally a result: new data is a kernel's work, a view of old data is not, an input handed back is neither."""
    for a in y if isinstance(y, tuple) else (y,):
        if isinstance(a, (_np.ndarray, _np.generic)) and not any(a is g for g in given):
            counts["views" if isinstance(a, _np.ndarray) and a.base is not None else "kernels"] += 1
    return y


def _call(func, args, kwargs):
    args, kwargs = _dev(args), _dev(kwargs)
    result = func(*args, **kwargs)
    if kwargs.get("out") is not None:
        counts["kernels"] += 1  # written into the output it was given, which may well be a view
    else:
        _counted(result, (getattr(func, "__self__", None),) + args)
    return _wrap(result)


def _function(func):
    def run(*args, **kwargs):
        return _call(func, args, kwargs)
    run.__name__ = getattr(func, "__name__", "function")
    return run


class ndarray:
    """A device array: a NumPy array that only this module's functions may touch."""

    __slots__ = ("_host",)
    __hash__ = None

    def __init__(self, host):
        if not isinstance(host, _np.ndarray):
            raise TypeError("use cupy.asarray to make an array")
        self._host = host

    def get(self, stream=None, order="C", out=None):
        counts["to_host"] += 1
        return self._host.copy(order=order)

    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _call(getattr(ufunc, method), inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _call(func, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self._host, name)
        if name in ("item", "tolist"):
            counts["to_host"] += 1
            return value
        return _function(value) if callable(value) else _wrap(_counted(value))

    def __getitem__(self, key):
        return _wrap(_counted(self._host[_dev(key)]))

    def __setitem__(self, key, value):
        counts["kernels"] += 1
        self._host[_dev(key)] = _dev(value)

    def __len__(self):
        return len(self._host)

    def __iter__(self):
        return (_wrap(row) for row in self._host)

    def __bool__(self):
        counts["to_host"] += 1
        return bool(self._host)

    def __float__(self):
        counts["to_host"] += 1
        return float(self._host)

    def __int__(self):
        counts["to_host"] += 1
        return int(self._host)

    def __format__(self, spec):
        return format(self._host, spec)

    def __repr__(self):
        return repr(self._host)

    def __str__(self):
        return str(self._host)


def _operator(name):
    def op(self, *args):
        result = getattr(self._host, name)(*_dev(args))
        return NotImplemented if result is NotImplemented else _wrap(_counted(result))
    return op


def _inplace(name):
    def op(self, other):
        counts["kernels"] += 1
        getattr(self._host, name)(_dev(other))
        return self
    return op


for _name in ("add sub mul truediv floordiv mod pow matmul and or xor lshift rshift".split()):
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _operator(f"__r{_name}__"))
    setattr(ndarray, f"__i{_name}__", _inplace(f"__i{_name}__"))
for _name in ("neg pos abs invert lt le gt ge eq ne".split()):
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__"))


# Explicit transfers: the only ways across.
def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        host = _np.asarray(a._host, dtype=dtype, order=order)
        return a if host is a._host else ndarray(_counted(host))  # CuPy hands back the array itself
    counts["to_device"] += 1
    return ndarray(_np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a, dtype=None, copy=True, order="K"):
    counts["kernels" if isinstance(a, ndarray) else "to_device"] += 1
    host = a._host if isinstance(a, ndarray) else a
    return ndarray(_np.array(host, dtype=dtype, order=order, copy=True))


def asnumpy(a, stream=None, order="C", out=None):
    return a.get(order=order) if isinstance(a, ndarray) else _np.asarray(a, order=order)


def get_array_module(*arrays):
    import sys
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in arrays) else _np


class ElementwiseKernel:
    """cupy.ElementwiseKernel for the bodies of scratchcap.ops.fused only (others are refused)."""

    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        from scratchcap.ops import fused

        body = fused.KERNELS.get(name)
        if body is None or (body.in_params, body.out_params, body.code) != (in_params, out_params, operation):
            raise NotImplementedError(f"the host stand-in runs only the kernels of scratchcap.ops.fused, not {name!r}")
        self.name, self._evaluate = name, fused.evaluate
        self._n_in, self._n_out = len(body.names(in_params)), len(body.names(out_params))

    def __call__(self, *args):
        ins, outs = args[:self._n_in], args[self._n_in:]
        if len(args) < self._n_in or len(outs) not in (0, self._n_out):
            raise TypeError(f"{self.name}: wrong number of arguments ({len(args)})")
        if not all(isinstance(a, ndarray) for a in args):  # kernels take device arrays only
            raise TypeError(f"{self.name}: Unsupported type {[type(a) for a in args]}")
        if len({a.dtype for a in args}) > 1:  # every parameter is typed T: one dtype for all
            raise TypeError(f"{self.name}: Type is mismatched: {[str(a.dtype) for a in args]}")
        counts["kernels"] += 1
        hosts = [a._host for a in ins]
        shape = _np.broadcast_shapes(*(h.shape for h in hosts))
        results = self._evaluate(self.name, *hosts)
        if not outs:
            outs = tuple(ndarray(_np.empty(shape, dtype=hosts[0].dtype)) for _ in results)
        for out, y in zip(outs, results):
            if out.shape != shape:
                raise ValueError(f"{self.name}: output shape {out.shape} is not the broadcast shape {shape}")
            out._host[...] = y
        return outs if self._n_out > 1 else outs[0]


class _Device:
    id = 0
    compute_capability = "00"

    def __init__(self, device=0):
        self.id = device

    def synchronize(self):
        return None

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Event:
    """A CUDA event: here the host clock when recorded (every stand-in kernel has finished by then)."""

    def __init__(self, *args, **kwargs):
        self._time = None

    def record(self, stream=None):
        self._time = time.perf_counter()

    def synchronize(self):
        return None


def _get_elapsed_time(start, end):
    """Milliseconds between two recorded events, as cupy.cuda.get_elapsed_time."""
    if start._time is None or end._time is None:
        raise RuntimeError("get_elapsed_time: both events must be recorded")
    return (end._time - start._time) * 1e3


_runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1,
    getDeviceProperties=lambda device: {"name": b"host stand-in (NumPy, no GPU)", "totalGlobalMem": 0},
    runtimeGetVersion=lambda: 0,
    driverGetVersion=lambda: 0,
)
cuda = types.SimpleNamespace(Device=_Device, runtime=_runtime, Stream=types.SimpleNamespace(null=None),
                             Event=_Event, get_elapsed_time=_get_elapsed_time)
lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(
    as_strided=_function(_np.lib.stride_tricks.as_strided)))


def _compute_type_switch():
    """CuPy's cuBLAS compute type per dtype (cupy._core._routines_linalg, behind CUPY_TF32): recorded, not used."""
    kinds = {}
    return types.SimpleNamespace(
        COMPUTE_TYPE_DEFAULT=1, COMPUTE_TYPE_TF32=7,
        get_compute_type=lambda dtype: kinds.get(_np.dtype(dtype).name, 1),
        set_compute_type=lambda dtype, kind: kinds.__setitem__(_np.dtype(dtype).name, kind))


_core = types.SimpleNamespace(_routines_linalg=_compute_type_switch())


def __getattr__(name):
    """NumPy's functions with CuPy's rules; dtypes and constants as they are; no NumPy submodules."""
    value = getattr(_np, name)
    if isinstance(value, types.ModuleType):
        raise AttributeError(f"the host stand-in has no cupy.{name}")
    if isinstance(value, type) or not callable(value):
        return value
    wrapped = globals()[name] = _function(value)  # later lookups skip this hook
    return wrapped
