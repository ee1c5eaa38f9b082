"""torchvision VGG-16 state dicts (vgg16-397923af.pth), read without PyTorch and without running pickled code.

A .pth file is a pickle of an OrderedDict of tensors, in one of two layouts:

* zip (PyTorch >= 1.6): ``<dir>/data.pkl`` holds the pickle, each tensor's
  storage is the raw bytes of ``<dir>/data/<key>``.
* legacy: five pickles in a row (magic number, protocol 1001, system info, the
  object, the list of storage keys), then each storage as an int64 element
  count followed by its raw bytes.

The unpickler below resolves only an allow-list of names (OrderedDict, the
tensor rebuild functions, storage types) to our own NumPy builders; any other
global, such as an os or builtins function, is refused before it is called.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile

import os

import numpy as np

from .format import CONV_LAYERS, WeightFileError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torchvision's nn.Sequential indices of VGG-16's 13 convolutions.
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class _Storage:
    """A storage's dtype and its bytes, filled in once the bytes are known."""

    def __init__(self, dtype, key):
        self.dtype, self.key, self.array = dtype, key, None


def _rebuild_tensor(storage, offset, size, stride, *rest):
    # rest: requires_grad, backward_hooks[, metadata] for _rebuild_tensor_v2
    return ("tensor", storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that maps an allow-list of globals to safe builders and refuses the rest."""

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only tensors and plain containers are accepted")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r:.80}")
        view = pid[5] if len(pid) > 5 else None
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype, key)
        if view is not None:  # legacy views: (view key, element offset, element count)
            return ("view", self.storages[key], int(view[1]), int(view[2]))
        return self.storages[key]


def _materialize(obj):
    """Replace ('tensor', storage, offset, size, stride) placeholders by NumPy arrays."""
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not (obj and obj[0] == "tensor"):
        return type(obj)(_materialize(v) for v in obj)
    if isinstance(obj, tuple) and obj[0] == "tensor":
        _, storage, offset, size, stride = obj
        if isinstance(storage, tuple) and storage[0] == "view":
            _, base, view_offset, _ = storage
            storage, offset = base, offset + view_offset
        flat = storage.array
        if flat is None:
            raise WeightFileError(f"storage {storage.key} has no data")
        if size and (offset + sum((s - 1) * st for s, st in zip(size, stride)) >= flat.size):
            raise WeightFileError(f"tensor of size {size} runs past its storage (truncated file?)")
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(st * item for st in stride))
        return view.astype(view.dtype.newbyteorder("="), copy=True)
    return obj


def _load_zip(path):
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise WeightFileError(f"{path}: zip file has no data.pkl; not a PyTorch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        if prefix + "byteorder" in z.namelist() and z.read(prefix + "byteorder").strip() != b"little":
            raise WeightFileError(f"{path}: big-endian checkpoints are not supported")
        storages = {}
        obj = RestrictedUnpickler(io.BytesIO(z.read(pkl[0])), storages).load()
        for key, st in storages.items():
            try:
                raw = z.read(f"{prefix}data/{key}")
            except KeyError:
                raise WeightFileError(f"{path}: storage data/{key} is missing") from None
            st.array = np.frombuffer(raw, dtype=st.dtype)
    return obj


def _load_legacy(path):
    with open(path, "rb") as f:
        storages = {}
        try:
            magic = RestrictedUnpickler(f, storages).load()
            if magic != LEGACY_MAGIC:
                raise WeightFileError(f"{path} is neither a zip nor a legacy PyTorch checkpoint")
            protocol = RestrictedUnpickler(f, storages).load()
            if protocol != LEGACY_PROTOCOL:
                raise WeightFileError(f"{path}: unsupported legacy protocol {protocol}")
            sys_info = RestrictedUnpickler(f, storages).load()
            if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
                raise WeightFileError(f"{path}: big-endian checkpoints are not supported")
            obj = RestrictedUnpickler(f, storages).load()
            keys = RestrictedUnpickler(f, storages).load()
        except (EOFError, struct.error) as exc:
            raise WeightFileError(f"{path} is truncated: {exc}") from None
        for key in keys:
            st = storages[str(key)]
            head = f.read(8)
            if len(head) < 8:
                raise WeightFileError(f"{path} is truncated in storage {key}")
            (count,) = struct.unpack("<q", head)
            raw = f.read(count * st.dtype.itemsize)
            if len(raw) < count * st.dtype.itemsize:
                raise WeightFileError(f"{path} is truncated in storage {key}")
            st.array = np.frombuffer(raw, dtype=st.dtype)
    return obj


def load_state_dict(path) -> dict:
    """A PyTorch state dict as {name: NumPy array}, without importing torch or running pickled code."""
    try:
        obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except pickle.UnpicklingError as exc:
        raise WeightFileError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, EOFError) as exc:
        raise WeightFileError(f"{path} is truncated or corrupt: {exc}") from None
    obj = _materialize(obj)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def read_torchvision_pth(path) -> tuple[dict, str, str]:
    """Returns ({layer: (kernel HWIO, bias)}, 'torch', description)."""
    state = load_state_dict(path)
    layers = {}
    for name, index in zip(CONV_LAYERS, TORCHVISION_CONV_INDICES):
        wkey, bkey = f"features.{index}.weight", f"features.{index}.bias"
        if wkey not in state or bkey not in state:
            raise WeightFileError(f"{path}: {wkey} or {bkey} is missing; not a torchvision VGG-16 state dict")
        w = state[wkey]
        if w.ndim != 4:
            raise WeightFileError(f"{path}: {wkey} has shape {w.shape}, expected (O, I, 3, 3)")
        layers[name] = (w.transpose(2, 3, 1, 0).astype(np.float32), state[bkey].astype(np.float32))
    return layers, "torch", f"torchvision VGG-16 state dict ({os.path.basename(str(path))})"
