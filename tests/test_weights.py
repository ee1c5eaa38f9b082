"""scratchcap's weight file, and conversion from Keras, torchvision and ONNX layouts."""
import os
import pickle
import zipfile

import h5py
import numpy as np
import pytest

from scratchcap.weights import WeightFileError, load_weights, save_weights
from scratchcap.weights.__main__ import main as weights_main
from scratchcap.weights.convert import convert, detect_format
from scratchcap.weights.torch_pth import load_state_dict
from vgg_fixtures import (TINY_WIDTHS, random_layers, torchvision_state, write_keras_h5, write_onnx,
                          write_torch_legacy, write_torch_zip)


def _assert_same_layers(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name][0], b[name][0], err_msg=name)
        np.testing.assert_array_equal(a[name][1], b[name][1], err_msg=name)


def test_save_and_load_round_trip(tmp_path):
    layers = random_layers()
    path = tmp_path / "w.h5"
    save_weights(path, layers, preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    got, attrs = load_weights(path, widths=TINY_WIDTHS)
    _assert_same_layers(layers, got)
    assert attrs["preprocessing"] == "caffe" and attrs["channel_order"] == "BGR"
    np.testing.assert_allclose(attrs["mean"], [103.939, 116.779, 123.68])
    assert attrs["format_version"] == 1 and attrs["source"] == "test"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_load_names_the_layer_and_shapes_when_the_file_is_wrong(tmp_path):
    path = tmp_path / "w.h5"
    save_weights(path, random_layers(), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    with pytest.raises(WeightFileError, match=r"block1_conv1 has kernel \(3, 3, 3, 4\).*expected kernel \(3, 3, 3, 64\)"):
        load_weights(path)  # the real VGG-16 widths
    with h5py.File(path, "a") as f:
        del f["block4_conv2"]
    with pytest.raises(WeightFileError, match="layer block4_conv2 is missing"):
        load_weights(path, widths=TINY_WIDTHS)


def test_load_rejects_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(WeightFileError, match="does not exist"):
        load_weights(tmp_path / "nope.h5")
    good = tmp_path / "w.h5"
    save_weights(good, random_layers(), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="truncated|cannot be read|not a readable"):
        load_weights(truncated, widths=TINY_WIDTHS)
    keras = tmp_path / "keras.h5"
    write_keras_h5(keras, random_layers())
    with pytest.raises(WeightFileError, match="looks like a Keras weight file"):
        load_weights(keras)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(WeightFileError, match="not a readable HDF5"):
        load_weights(text)


@pytest.mark.parametrize("keras1,split,full_model", [(False, False, False), (True, False, False),
                                                     (False, True, False), (False, False, True)])
def test_convert_keras(tmp_path, keras1, split, full_model):
    layers = random_layers(1)
    src = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_h5(src, layers, keras1=keras1, split=split, full_model=full_model)
    assert detect_format(src) == "keras"
    convert(src, tmp_path / "out.h5", widths=TINY_WIDTHS)
    got, attrs = load_weights(tmp_path / "out.h5", widths=TINY_WIDTHS)
    _assert_same_layers(layers, got)
    assert attrs["preprocessing"] == "caffe"
    assert len(attrs["source_sha256"]) == 64


@pytest.mark.parametrize("writer", [write_torch_zip, write_torch_legacy])
def test_convert_torchvision_without_torch(tmp_path, monkeypatch, writer):
    layers = random_layers(2)
    src = tmp_path / "vgg16-397923af.pth"
    writer(src, torchvision_state(layers), monkeypatch)
    monkeypatch.undo()
    assert detect_format(src) == "torch"
    convert(src, tmp_path / "out.h5", widths=TINY_WIDTHS)
    got, attrs = load_weights(tmp_path / "out.h5", widths=TINY_WIDTHS)
    _assert_same_layers(layers, got)
    assert attrs["preprocessing"] == "torch" and attrs["channel_order"] == "RGB"
    np.testing.assert_allclose(attrs["std"], [0.229, 0.224, 0.225])


def test_torch_reader_refuses_code_in_the_pickle(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "evil.pth"
    write_torch_zip(src, torchvision_state(random_layers()), monkeypatch,
                    payload=pickle.dumps({"features.0.weight": Evil()}, protocol=2))
    monkeypatch.undo()
    with pytest.raises(WeightFileError, match=r"refusing to load (posix|os)\.system"):
        load_state_dict(src)
    assert not marker.exists()


def test_torch_reader_reports_truncated_files(tmp_path, monkeypatch):
    src = tmp_path / "w.pth"
    write_torch_legacy(src, torchvision_state(random_layers()), monkeypatch)
    monkeypatch.undo()
    data = src.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightFileError, match="truncated"):
        load_state_dict(tmp_path / "cut.pth")
    with zipfile.ZipFile(tmp_path / "z.pth", "w") as z:
        z.writestr("archive/version", b"3")
    with pytest.raises(WeightFileError, match="no data.pkl"):
        load_state_dict(tmp_path / "z.pth")


def test_convert_onnx(tmp_path):
    pytest.importorskip("onnx")
    layers = random_layers(3)
    src = tmp_path / "model.onnx"
    write_onnx(src, layers)
    assert detect_format(src) == "onnx"
    convert(src, tmp_path / "out.h5", widths=TINY_WIDTHS)
    got, attrs = load_weights(tmp_path / "out.h5", widths=TINY_WIDTHS)
    _assert_same_layers(layers, got)
    assert attrs["preprocessing"] == "caffe"
    write_onnx(tmp_path / "other.onnx", layers, producer="pytorch")
    with pytest.raises(WeightFileError, match="--preprocessing"):
        convert(tmp_path / "other.onnx", tmp_path / "o2.h5", widths=TINY_WIDTHS)
    convert(tmp_path / "other.onnx", tmp_path / "o2.h5", widths=TINY_WIDTHS, preprocessing="torch")
    assert load_weights(tmp_path / "o2.h5", widths=TINY_WIDTHS)[1]["preprocessing"] == "torch"


def test_convert_refuses_a_file_of_the_wrong_architecture(tmp_path):
    src = tmp_path / "k.h5"
    write_keras_h5(src, random_layers())
    with pytest.raises(WeightFileError, match="block1_conv1 has kernel"):
        convert(src, tmp_path / "out.h5")  # tiny widths are not VGG-16's
    assert not (tmp_path / "out.h5").exists()


def test_weights_command_line(tmp_path, capsys):
    src = tmp_path / "k.h5"
    write_keras_h5(src, random_layers())
    assert weights_main(["convert", str(src), "--out", str(tmp_path / "o.h5")]) == 2
    assert "block1_conv1" in capsys.readouterr().err
    assert weights_main(["info", str(tmp_path / "missing.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err


torch = None
try:  # the trusted writer, where installed
    import torch
except ImportError:
    pass


@pytest.mark.skipif(torch is None, reason="PyTorch is an optional reference")
@pytest.mark.parametrize("zip_format", [True, False])
def test_reads_files_written_by_pytorch(tmp_path, zip_format):
    layers = random_layers(4)
    state = {k: torch.from_numpy(v.copy()) for k, v in torchvision_state(layers).items()}
    src = tmp_path / "vgg.pth"
    torch.save(state, src, _use_new_zipfile_serialization=zip_format)
    convert(src, tmp_path / "out.h5", widths=TINY_WIDTHS)
    _assert_same_layers(layers, load_weights(tmp_path / "out.h5", widths=TINY_WIDTHS)[0])
