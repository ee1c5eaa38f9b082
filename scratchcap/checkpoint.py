"""Checkpoints in HDF5, written atomically and read without unpickling.

    /params/<name>            the model's parameters ("gru/wx", ...: nested groups)
    /optim/<slot>/<name>      optimizer state under the same names ("m/gru/wx", "v/gru/wx")
    attrs: format = "scratchcap-checkpoint", format_version, model, config (JSON),
           vocabulary (JSON), progress (JSON: epoch, batch, step, best, bad_epochs),
           optimizer (JSON: step, lr), rng (JSON: the dropout generator's state)
"""
from __future__ import annotations

import json

import numpy as np

from .atomic import atomic_path
from .backend import to_numpy

FORMAT = "scratchcap-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    pass


def _walk(group, prefix=""):
    import h5py

    out = {}
    for key, item in group.items():
        name = f"{prefix}{key}"
        if isinstance(item, h5py.Group):
            out.update(_walk(item, name + "/"))
        else:
            out[name] = item[...]
    return out


def save_checkpoint(path, *, model, params, config, vocab, optimizer=None, progress=None, rng=None,
                    dtype=None, extra=None):
    """Write a checkpoint atomically. ``dtype`` (e.g. float16) stores the parameters smaller."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["model"] = model
        f.attrs["config"] = json.dumps(config)
        f.attrs["vocabulary"] = vocab.to_json()
        f.attrs["progress"] = json.dumps(progress or {})
        for k, v in (extra or {}).items():
            f.attrs[k] = json.dumps(v)
        for name in sorted(params):
            arr = to_numpy(params[name])
            f.create_dataset(f"params/{name}", data=arr.astype(dtype) if dtype else arr)
        if optimizer is not None:
            state = optimizer.state_dict()
            f.attrs["optimizer"] = json.dumps({"step": state["step"], "lr": state["lr"]})
            for key in sorted(k for k in state if "/" in k):
                f.create_dataset(f"optim/{key}", data=to_numpy(state[key]))
        if rng is not None:
            f.attrs["rng"] = json.dumps(rng.bit_generator.state)
    return path


def load_checkpoint(path) -> dict:
    """{model, params, config, vocabulary (JSON text), progress, optimizer, rng_state, attrs}."""
    from .hdf5 import open_readonly

    f = open_readonly(path, CheckpointError, "checkpoint")
    with f:
        if f.attrs.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a scratchcap checkpoint")
        if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise CheckpointError(f"{path} has checkpoint format {f.attrs.get('format_version')}, "
                                  f"this scratchcap reads {FORMAT_VERSION}")
        try:
            out = dict(model=str(f.attrs["model"]), config=json.loads(f.attrs["config"]),
                       vocabulary=str(f.attrs["vocabulary"]), progress=json.loads(f.attrs.get("progress", "{}")),
                       params=_walk(f["params"]), optimizer=None, rng_state=None,
                       attrs={k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()})
            if "optim" in f:
                state = json.loads(f.attrs["optimizer"])
                state.update(_walk(f["optim"]))
                out["optimizer"] = state
            if "rng" in f.attrs:
                out["rng_state"] = json.loads(f.attrs["rng"])
        except (KeyError, OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} is damaged: {exc}") from None
    size = out["config"].get("V")
    try:
        words = len(json.loads(out["vocabulary"])["words"])
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{path} is damaged: its vocabulary is not scratchcap's JSON") from None
    if size is not None and words != int(size):
        raise CheckpointError(f"{path}: its vocabulary has {words} entries but its model was built for V = {size}: "
                              "a checkpoint mixed from two trainings")
    for name, a in out["params"].items():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{path}: parameter {name} holds NaN or infinite values")
    return out
