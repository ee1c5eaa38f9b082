"""--flip: mirrored images as extra training data (captions, epochs, the mirrored cache, training, resume)."""
import h5py
import numpy as np
import pytest
from PIL import Image, ImageOps

from scratchcap import train as train_module
from scratchcap.checkpoint import load_checkpoint
from scratchcap.data.flip import FLIPPED, FlipFeatures, epoch_examples, flipped_examples
from scratchcap.data.vocab import Vocabulary
from scratchcap.feature_cache import CacheError, FeatureCache
from scratchcap.features import extract
from scratchcap.models import get_model
from scratchcap.vgg16 import VGG16
from scratchcap.weights import save_weights
from test_train import _args
from vgg_fixtures import TINY_WIDTHS, random_layers


def _vocab(*words):
    return Vocabulary.build([list(words)], min_count=1)


def test_a_mirrored_caption_exchanges_left_and_right_and_nothing_else():
    vocab = _vocab("a", "dog", "left", "of", "right", "tree")
    caption = vocab.encode("a dog left of a tree right".split())
    (image_id, twin), = flipped_examples([("1.jpg", caption)], vocab)
    assert image_id == FLIPPED + "1.jpg"
    assert vocab.decode(twin) == "a dog right of a tree left".split()
    assert len(twin) == len(caption)
    only_left = _vocab("a", "dog", "left")  # "right" is not a word of this vocabulary: "left" has no partner
    caption = only_left.encode("a dog left".split())
    assert flipped_examples([("1.jpg", caption)], only_left)[0][1] == caption


def test_each_epoch_mirrors_about_half_the_captions_and_a_resumed_epoch_the_same_ones():
    examples = [(f"{k}.jpg", [1, 4 + k % 7, 2]) for k in range(2000)]
    twins = [(FLIPPED + i, t) for i, t in examples]
    first = epoch_examples(examples, twins, seed=3, epoch=0)
    assert first == epoch_examples(examples, twins, seed=3, epoch=0)
    share = np.mean([i.startswith(FLIPPED) for i, _ in first])
    assert 0.45 < share < 0.55
    assert first != epoch_examples(examples, twins, seed=3, epoch=1)
    assert first != epoch_examples(examples, twins, seed=4, epoch=0)
    assert [len(t) for _, t in first] == [len(t) for _, t in examples]  # bucketing sees the same lengths


class _Table:
    def __init__(self, rows):
        self.rows, self.region_shape = rows, next(iter(rows.values())).shape

    def get(self, ids):
        return np.stack([self.rows[i] for i in ids]).astype(np.float32)

    def close(self):
        pass


def test_flip_features_read_mirrored_ids_from_the_mirrored_cache():
    plain = _Table({"a": np.full((2, 3), 1.0), "b": np.full((2, 3), 2.0)})
    mirrored = _Table({"a": np.full((2, 3), -1.0), "b": np.full((2, 3), -2.0)})
    both = FlipFeatures(plain, mirrored)
    got = both.get(["b", FLIPPED + "a", "a", FLIPPED + "b"])
    np.testing.assert_array_equal(got[:, 0, 0], [2.0, -1.0, 1.0, -2.0])
    np.testing.assert_array_equal(both.get(["a"]), plain.get(["a"]))
    with pytest.raises(ValueError, match="regions"):
        FlipFeatures(plain, _Table({"a": np.zeros((3, 3))}))


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.h5"
    save_weights(path, random_layers(5), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    return VGG16.load(path, widths=TINY_WIDTHS)


def _quiet(**kw):
    return dict(image_size=32, progress=False, log=lambda *_: None, **kw)


@pytest.mark.parametrize("crop", [False, True])
def test_flip_caches_the_features_of_the_mirrored_image_and_never_mixes_with_unmirrored(tmp_path, model, crop):
    rng = np.random.default_rng(1)
    original = Image.fromarray(rng.integers(0, 256, size=(40, 57, 3), dtype=np.uint8))
    original.save(tmp_path / "photo.png")
    (tmp_path / "mirror").mkdir()
    ImageOps.mirror(original).save(tmp_path / "mirror" / "photo.png")
    flipped, mirrored = str(tmp_path / "flipped.h5"), str(tmp_path / "mirrored.h5")
    extract([str(tmp_path / "photo.png")], flipped, model, crop=crop, flip=True, **_quiet())
    extract([str(tmp_path / "mirror" / "photo.png")], mirrored, model, crop=crop, **_quiet())
    with FeatureCache(flipped) as a, FeatureCache(mirrored) as b:
        assert a.identity()["flip"] == 1 and b.identity()["flip"] == 0
        x, y = a.read(["photo.png"]).astype(np.float64), b.read(["photo.png"]).astype(np.float64)
    # the resize of a mirrored image is the mirror of the resized image up to PIL's rounding to uint8;
    # the float16 cache keeps 11 bits
    assert np.abs(x - y).max() <= 2e-2 * np.abs(y).max()
    unmirrored = str(tmp_path / "unmirrored.h5")  # VGG-16's filters are not symmetric: mirroring matters
    extract([str(tmp_path / "photo.png")], unmirrored, model, crop=crop, **_quiet())
    with FeatureCache(unmirrored) as c:
        assert np.abs(c.read(["photo.png"]).astype(np.float64) - x).max() > 5e-2 * np.abs(x).max()
    with pytest.raises(CacheError, match="flip: 1 vs 0"):
        extract([str(tmp_path / "photo.png")], flipped, model, crop=crop, **_quiet())


def test_a_cache_from_before_the_flip_attribute_reads_as_unmirrored_and_extends(tmp_path, model):
    for k in range(2):
        Image.new("RGB", (20 + k, 30), (40 * k, 90, 200)).save(tmp_path / f"{k}.png")
    out = str(tmp_path / "old.h5")
    extract([str(tmp_path / "0.png")], out, model, **_quiet())
    with h5py.File(out, "a") as f:
        del f.attrs["flip"]
    with FeatureCache(out) as cache:
        assert cache.identity()["flip"] == 0
    summary = extract([str(tmp_path / f"{k}.png") for k in range(2)], out, model, **_quiet())
    assert summary["computed"] == 1 and summary["cached"] == 2


def test_a_flip_run_caches_the_mirrored_images_trains_and_resumes_to_the_same_parameters(workspace, monkeypatch):
    root, weights = workspace
    straight = root / "flip-straight"
    assert train_module.main(_args(root, weights, straight, "--flip", "--bucket")) == 0
    cfg = load_checkpoint(straight / "checkpoint-last.h5")["config"]
    assert cfg["flip"] is True and cfg["flip_features"] == str(root / "cache-flipped.h5")
    with FeatureCache(cfg["flip_features"]) as mirrored, FeatureCache(cfg["features"]) as plain:
        assert mirrored.identity()["flip"] == 1 and plain.identity()["flip"] == 0
        train_ids = {r.image_id for r in train_module.prepare_data(dict(cfg, progress=False),
                                                                     log=lambda *_: None)["train"]}
        assert set(mirrored.ids) | set(mirrored.failed) == train_ids  # the train images only, not dev's

    seen = []
    real = get_model("gru-attention").loss_and_grads

    def crash_on_the_eleventh_batch(p, batch, cfg, rng=None, train=True):
        if train:
            seen.append(batch["features"].copy())
            if len(seen) == 11:
                raise RuntimeError("simulated crash")
        return real(p, batch, cfg, rng, train)

    broken = root / "flip-broken"
    monkeypatch.setattr(get_model("gru-attention"), "loss_and_grads", crash_on_the_eleventh_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_module.train(train_module.build_parser().parse_args(_args(root, weights, broken, "--flip", "--bucket")))
    monkeypatch.undo()
    assert train_module.main(["--resume", str(broken), "--no-progress", "--device", "cpu"]) == 0
    a, b = load_checkpoint(straight / "checkpoint-last.h5"), load_checkpoint(broken / "checkpoint-last.h5")
    for name in a["params"]:
        np.testing.assert_array_equal(a["params"][name], b["params"][name], err_msg=name)

    # the batches held both: rows found only in the mirrored cache, and rows found only in the plain one
    def rows_of(path):
        with FeatureCache(path) as cache:
            return cache.read(sorted(cache.ids)).astype(np.float32).reshape(len(cache.ids), -1)

    rows = np.concatenate([s.reshape(s.shape[0], -1) for s in seen])

    def found(table):
        return (np.abs(rows[:, None] - table[None]).max(axis=2) < 1e-6).any(axis=1)
    in_mirrored, in_plain = found(rows_of(cfg["flip_features"])), found(rows_of(cfg["features"]))
    assert (in_mirrored | in_plain).all()
    assert (in_mirrored & ~in_plain).sum() > 0.2 * len(rows) and (in_plain & ~in_mirrored).sum() > 0.2 * len(rows)


def test_flip_refuses_what_it_cannot_do(workspace, capsys):
    root, weights = workspace
    assert train_module.main(_args(root, weights, root / "ff", "--flip-features", str(root / "x.h5"))) == 2
    assert "give --flip too" in capsys.readouterr().err
    assert train_module.main(_args(root, weights, root / "scst", "--flip", "--objective", "scst",
                                   "--init-from", str(root / "none.h5"))) == 2
    capsys.readouterr()
    assert train_module.main(_args(root, weights, root / "plain", "--epochs", "1")) == 0
    assert train_module.main(_args(root, weights, root / "scst", "--flip", "--objective", "scst",
                                   "--init-from", str(root / "plain" / "checkpoint-best.h5"))) == 2
    assert "cross-entropy" in capsys.readouterr().err
    assert train_module.main(_args(root, weights, root / "self", "--flip", "--flip-features",
                                   str(root / "cache.h5"))) == 2
    assert "holds unmirrored images" in capsys.readouterr().err


def test_the_features_command_line_takes_flip(tmp_path):
    from scratchcap.features import main as features_main

    weights = tmp_path / "tiny.h5"
    save_weights(weights, random_layers(5), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    Image.new("RGB", (30, 20), (10, 200, 30)).save(tmp_path / "a.png")
    out = tmp_path / "mirrored.h5"
    assert features_main([str(tmp_path / "a.png"), "--out", str(out), "--weights", str(weights), "--image-size", "32",
                          "--flip", "--no-progress", "--device", "cpu"]) == 0
    with FeatureCache(out) as cache:
        assert cache.identity()["flip"] == 1 and cache.ids == ["a.png"]


def test_a_mirrored_cache_is_refused_as_the_plain_features(workspace, capsys):
    root, weights = workspace
    assert train_module.main(_args(root, weights, root / "flip-once", "--flip", "--epochs", "1")) == 0
    capsys.readouterr()
    assert train_module.main(_args(root, weights, root / "wrong", "--epochs", "1", "--features",
                                   str(root / "cache-flipped.h5"))) == 2
    assert "flip: 1 vs 0" in capsys.readouterr().err  # its dev images are missing: extract refuses to add them
