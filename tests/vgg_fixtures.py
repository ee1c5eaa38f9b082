"""Small weight files in the exact layouts of Keras, torchvision (zip and legacy) and ONNX, written without those frameworks."""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

import h5py
import numpy as np

from scratchcap.weights.format import CONV_LAYERS

TINY_WIDTHS = (4, 4, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8)
TORCH_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
POOLS_AFTER = {"block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3"}


def random_layers(seed=0, widths=TINY_WIDTHS):
    """{layer: (kernel HWIO, bias)} float32, scaled to keep activations O(1) through 13 layers."""
    rng = np.random.default_rng(seed)
    layers, c_in = {}, 3
    for name, c_out in zip(CONV_LAYERS, widths):
        k = rng.standard_normal((3, 3, c_in, c_out)) * np.sqrt(2.0 / (9 * c_in))
        layers[name] = (k.astype(np.float32), (rng.standard_normal(c_out) * 0.1).astype(np.float32))
        c_in = c_out
    return layers


def write_keras_h5(path, layers, keras1=False, split=False, full_model=False):
    """Keras application layout: root layer_names, each group weight_names."""
    order = ["input_1"]
    for name in CONV_LAYERS:
        order.append(name)
        if name in POOLS_AFTER:
            order.append(name[:6] + "_pool")
    order += ["flatten", "fc1"] if full_model else []
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        names = [n.encode() for n in order]
        if split:
            half = len(names) // 2
            root.attrs["layer_names0"] = names[:half]
            root.attrs["layer_names1"] = names[half:]
        else:
            root.attrs["layer_names"] = names
        root.attrs["backend"] = b"tensorflow"
        for lname in order:
            g = root.create_group(lname)
            if lname in layers:
                kernel, bias = layers[lname]
                if keras1:
                    wn = [f"{lname}_W_1:0", f"{lname}_b_1:0"]
                else:
                    wn = [f"{lname}/kernel:0", f"{lname}/bias:0"]
                g.create_dataset(wn[0], data=kernel)
                g.create_dataset(wn[1], data=bias)
                g.attrs["weight_names"] = [w.encode() for w in wn]
            elif lname == "fc1":
                g.create_dataset("fc1/kernel:0", data=np.zeros((8, 3), np.float32))
                g.create_dataset("fc1/bias:0", data=np.zeros(3, np.float32))
                g.attrs["weight_names"] = [b"fc1/kernel:0", b"fc1/bias:0"]
            else:
                g.attrs["weight_names"] = np.array([], dtype="S1")


def torchvision_state(layers):
    state = collections.OrderedDict()
    for name, idx in zip(CONV_LAYERS, TORCH_INDICES):
        kernel, bias = layers[name]
        state[f"features.{idx}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
        state[f"features.{idx}.bias"] = bias
    return state


class _StorageRef:
    def __init__(self, key, array):
        self.key, self.array = key, array


def _fake_torch():
    """Stand-ins for torch's pickled names, so that pickle can write them without torch."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils, utils._rebuild_tensor_v2 = FloatStorage, utils, _rebuild_tensor_v2
    return torch, utils


class _Tensor:
    def __init__(self, ref, shape, rebuild):
        self.ref, self.shape, self.rebuild = ref, shape, rebuild

    def __reduce__(self):
        strides = tuple(int(s) for s in np.cumprod((self.shape[1:] + (1,))[::-1])[::-1]) if self.shape else ()
        return self.rebuild, (self.ref, 0, self.shape, strides, False, collections.OrderedDict())


def _pickle_state(state, legacy, monkeypatch):
    torch, utils = _fake_torch()
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    refs = []
    obj = collections.OrderedDict()
    for key, array in state.items():
        ref = _StorageRef(str(len(refs)), np.ascontiguousarray(array, dtype="<f4"))
        refs.append(ref)
        obj[key] = _Tensor(ref, tuple(array.shape), utils._rebuild_tensor_v2)

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _StorageRef):
                pid = ("storage", torch.FloatStorage, o.key, "cpu", o.array.size)
                return pid + (None,) if legacy else pid
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue(), refs


def write_torch_zip(path, state, monkeypatch, payload=None):
    data, refs = _pickle_state(state, False, monkeypatch)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload if payload is not None else data)
        z.writestr("archive/byteorder", b"little")
        for ref in refs:
            z.writestr(f"archive/data/{ref.key}", ref.array.tobytes())
        z.writestr("archive/version", b"3\n")


def write_torch_legacy(path, state, monkeypatch):
    data, refs = _pickle_state(state, True, monkeypatch)
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 8}}):
            pickle.dump(header, f, protocol=2)
        f.write(data)
        pickle.dump([r.key for r in refs], f, protocol=2)
        for r in refs:
            f.write(struct.pack("<q", r.array.size))
            f.write(r.array.tobytes())


def write_onnx(path, layers, producer="tf2onnx"):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "input"
    for name in CONV_LAYERS:
        kernel, bias = layers[name]
        inits.append(numpy_helper.from_array(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), f"{name}/W"))
        inits.append(numpy_helper.from_array(bias, f"{name}/b"))
        nodes.append(helper.make_node("Conv", [prev, f"{name}/W", f"{name}/b"], [f"{name}/conv"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"{name}/conv"], [f"{name}/relu"]))
        prev = f"{name}/relu"
        if name in POOLS_AFTER:
            nodes.append(helper.make_node("MaxPool", [prev], [f"{name}/pool"], kernel_shape=[2, 2], strides=[2, 2]))
            prev = f"{name}/pool"
    graph = helper.make_graph(
        nodes, "vgg", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 32, 32])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, producer_name=producer)
    onnx.save(model, str(path))


def tiny_captioner_config(cfg, weights, **changes):
    """A decoder config over the tiny VGG-16: 32 px images, a 2x2 block5_conv3 grid, shapes captions."""
    out = dict(cfg, image_size=32, layer="block5_conv3", weights=str(weights), grid=[2, 2], dataset="shapes",
               max_length=6)
    out.update(changes)
    return out
