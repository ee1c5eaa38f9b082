"""The feature cache: contents, bad images, resuming, interruption, and reading."""
import os

import numpy as np
import pytest
from PIL import Image

from scratchcap.feature_cache import CacheError, FeatureCache
from scratchcap.features import extract, main as features_main
from scratchcap.vgg16 import VGG16
from scratchcap.weights import save_weights
from tolerances import assert_close
from vgg_fixtures import TINY_WIDTHS, random_layers

SIZE = 32


@pytest.fixture
def tiny_weights(tmp_path):
    path = tmp_path / "tiny.h5"
    save_weights(path, random_layers(3), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    return path


@pytest.fixture
def model(tiny_weights):
    return VGG16.load(tiny_weights, widths=TINY_WIDTHS)


@pytest.fixture
def images(tmp_path):
    """Nine readable images of assorted sizes and modes, one corrupt and one truncated."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(9):
        arr = rng.integers(0, 256, size=(20 + 3 * i, 30 + i, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        if i % 3 == 1:
            im = im.convert("L")
        p = folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        im.save(p)
        paths.append(str(p))
    (folder / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = (folder / "img00.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return sorted(paths + [str(folder / "corrupt.jpg"), str(folder / "truncated.jpg")])


def _quiet(**kw):
    return dict(image_size=SIZE, progress=False, log=lambda *_: None, **kw)


def test_cache_holds_features_ids_failures_and_settings(tmp_path, model, images):
    out = str(tmp_path / "cache.h5")
    summary = extract(images, out, model, batch_size=4, shard_size=3, **_quiet())
    assert summary["computed"] == 9 and summary["failed_total"] == 2
    with FeatureCache(out) as cache:
        assert sorted(cache.ids) == sorted(os.path.basename(p) for p in images
                                           if "corrupt" not in p and "truncated" not in p)
        assert set(cache.failed) == {"corrupt.jpg", "truncated.jpg"}
        assert "not an image" in cache.failed["corrupt.jpg"] and "truncated" in cache.failed["truncated.jpg"]
        assert cache.dtype == np.float16 and cache.region_shape == (4, 8)  # 2x2 grid of 8 channels
        assert cache.attrs["layer"] == "block5_conv3" and cache.attrs["image_size"] == SIZE
        assert list(cache.attrs["grid"]) == [2, 2] and len(cache.attrs["weights_sha256"]) == 64
        first = next(p for p in images if p.endswith("img00.jpg"))
        direct = model.forward(model.preprocess([Image.open(first)], size=SIZE))["block5_conv3"]
        got = cache.read(["img00.jpg"])
        np.testing.assert_allclose(got[0], direct[0].reshape(4, 8), rtol=2e-3, atol=2e-3)
    assert not os.path.exists(out + ".parts")


def test_rerun_skips_done_images_and_matches_one_full_run(tmp_path, model, images, monkeypatch):
    full = str(tmp_path / "full.h5")
    extract(images, full, model, batch_size=4, **_quiet())
    out = str(tmp_path / "resumed.h5")
    extract(images[:5], out, model, batch_size=2, **_quiet())
    calls = []
    real = model.forward
    monkeypatch.setattr(model, "forward", lambda x, **k: calls.append(len(x)) or real(x, **k))
    summary = extract(images, out, model, batch_size=2, **_quiet())
    assert sum(calls) == summary["computed"] == len(images) - 5 - 1  # one of the rest is unreadable
    again = extract(images, out, model, batch_size=2, **_quiet())
    assert again["computed"] == 0
    with FeatureCache(full) as a, FeatureCache(out) as b:
        assert sorted(a.ids) == sorted(b.ids) and a.failed.keys() == b.failed.keys()
        # Batches of 4 and of 2 sum the same float32 products in another order (BLAS blocks by batch), and the
        # float16 cache may then round a value to its neighbour: one float16 rounding, not bit-equality.
        assert_close(b.read(sorted(a.ids)), a.read(sorted(a.ids)), "float16", depth=2)


def test_an_interrupted_run_loses_nothing_and_resumes(tmp_path, model, images, monkeypatch):
    out = str(tmp_path / "cache.h5")
    real = model.forward
    calls = []

    def dies_on_the_fourth_batch(x, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(x, **k)

    monkeypatch.setattr(model, "forward", dies_on_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        extract(images, out, model, batch_size=2, shard_size=2, **_quiet())
    assert not os.path.exists(out)
    shards = sorted(os.listdir(out + ".parts"))
    assert shards and all(s.startswith("shard-") for s in shards)
    (tmp_path / "cache.h5.parts" / ".tmp-shard-000009.h5-x").write_bytes(b"half a file")  # a write cut short
    monkeypatch.setattr(model, "forward", real)
    calls.clear()
    summary = extract(images, out, model, batch_size=2, shard_size=2, **_quiet())
    assert summary["cached"] == 9 and summary["computed"] < 9
    assert not os.path.exists(out + ".parts")  # the half-written file went with the shards
    reference = str(tmp_path / "reference.h5")
    extract(images, reference, model, batch_size=2, **_quiet())
    with FeatureCache(out) as a, FeatureCache(reference) as b:
        np.testing.assert_array_equal(a.read(sorted(b.ids)), b.read(sorted(b.ids)))


def test_a_cache_built_with_other_settings_is_not_mixed(tmp_path, model, images):
    out = str(tmp_path / "cache.h5")
    extract(images[:3], out, model, **_quiet())
    with pytest.raises(CacheError, match="dtype: float16 vs float32"):
        extract(images, out, model, dtype="float32", **_quiet())


def test_read_returns_rows_in_the_order_asked(tmp_path, model, images):
    out = str(tmp_path / "cache.h5")
    extract(images, out, model, **_quiet())
    with FeatureCache(out) as cache:
        ids = cache.ids
        order = [ids[5], ids[0], ids[1], ids[5], ids[3]]
        got = cache.read(order)
        for k, image_id in enumerate(order):
            np.testing.assert_array_equal(got[k], cache.features[cache.index[image_id]])
        with pytest.raises(KeyError, match="not in"):
            cache.read(["nope.jpg"])


def test_reading_a_damaged_cache_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(CacheError, match="not a readable HDF5"):
        FeatureCache(bad)
    with pytest.raises(CacheError, match="does not exist"):
        FeatureCache(tmp_path / "none.h5")


def test_command_line(tmp_path, tiny_weights, images, capsys):
    out = tmp_path / "cli.h5"
    folder = os.path.dirname(images[0])
    code = features_main([folder, "--out", str(out), "--weights", str(tiny_weights), "--image-size", "32",
                          "--limit", "4", "--no-progress", "--device", "cpu"])
    assert code == 0
    assert "computed=" in capsys.readouterr().out
    with FeatureCache(out) as cache:
        assert len(cache) + len(cache.failed) == 4
    assert features_main([folder, "--out", str(out), "--weights", str(tmp_path / "nope.h5"),
                          "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_gpu_path_caches_the_same_features(tmp_path, tiny_weights, images, hostcupy):
    """--device gpu on the strict CuPy stand-in (tests/hostcupy): same features, same failures."""
    folder = os.path.dirname(images[0])
    caches = {}
    for device in ("cpu", "gpu"):
        caches[device] = tmp_path / f"{device}.h5"
        assert features_main([folder, "--out", str(caches[device]), "--weights", str(tiny_weights),
                              "--image-size", "32", "--no-progress", "--device", device]) == 0
    with FeatureCache(caches["cpu"]) as cpu, FeatureCache(caches["gpu"]) as gpu:
        assert len(cpu) == len(gpu) == 9 and sorted(cpu.failed) == sorted(gpu.failed) and len(gpu.failed) == 2
        ids = sorted(cpu.ids)
        # Stored as float16: the GPU runs batches under GPU_WINOGRAD_MIN_BATCH by im2col where the CPU runs
        # Winograd, so a value may round to the neighbouring float16 (a relative step of at most 2^-10).
        assert cpu.dtype == gpu.dtype == np.float16
        np.testing.assert_allclose(gpu.read(ids), cpu.read(ids), rtol=2.0 ** -10, atol=1e-6)


def test_unreadable_images_first_or_only_are_handled(tmp_path, model, images):
    bad = [p for p in images if "corrupt" in p or "truncated" in p]
    good = [p for p in images if p not in bad]
    out = str(tmp_path / "cache.h5")
    summary = extract(bad + good, out, model, batch_size=2, shard_size=1, **_quiet())
    assert summary["failed_total"] == 2 and summary["cached"] == len(good)
    with pytest.raises(CacheError, match="none of the 2 images could be read"):
        extract(bad, str(tmp_path / "only-bad.h5"), model, **_quiet())
