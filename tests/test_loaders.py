"""Data set loaders on small fixture files, and on ../shared/flickr8k where it exists."""
import json
import os
from collections import Counter

import pytest
from PIL import Image

from scratchcap.data import DatasetError, load_dataset
from scratchcap.data.flickr8k import load_flickr8k
from scratchcap.data.records import random_split

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "flickr8k")


def _images(folder, names):
    os.makedirs(folder, exist_ok=True)
    for n in names:
        Image.new("RGB", (8, 8)).save(os.path.join(folder, n))


@pytest.fixture
def flickr(tmp_path):
    """A Flickr8k-shaped folder: 4 images listed, 3 present, both caption layouts, split files."""
    d = tmp_path / "f8k"
    _images(d / "images", ["a.jpg", "b.jpg", "c.jpg"])
    token = ["a.jpg#0\tA dog runs .", "a.jpg#1\tA dog, running.", "b.jpg#0\tTwo cats", "c.jpg#0\tA bird",
             "d.jpg#0\tA fish", "b.jpg.1#0\tstray line", "garbage without a tab", "c.jpg#1\t"]
    (d / "Flickr8k.token.txt").write_text("\n".join(token) + "\n")
    (d / "captions.txt").write_text('image,caption\na.jpg,A dog runs .\na.jpg,"A dog, running."\n'
                                    "b.jpg,Two cats\nc.jpg,A bird\nd.jpg,A fish\n")
    (d / "Flickr_8k.trainImages.txt").write_text("a.jpg\nb.jpg\n")
    (d / "Flickr_8k.devImages.txt").write_text("c.jpg\n")
    (d / "Flickr_8k.testImages.txt").write_text("d.jpg\n")
    return d


def test_token_file_with_stray_and_malformed_lines(flickr):
    logs = []
    recs = load_flickr8k(str(flickr), log=logs.append)
    assert [(r.image_id, r.split, r.captions) for r in recs] == [
        ("a.jpg", "train", ["A dog runs .", "A dog, running."]), ("b.jpg", "train", ["Two cats"]),
        ("c.jpg", "dev", ["A bird"])]
    text = "\n".join(logs)
    assert "line 6: b.jpg.1 is not an image file name" in text
    assert "line 7" in text and "line 8" in text  # malformed lines, with their numbers
    assert "1 test images are listed but missing" in text


def test_both_caption_layouts_give_the_same_records(flickr):
    a = load_flickr8k(str(flickr), log=lambda *_: None)
    b = load_flickr8k(str(flickr), caption_file=str(flickr / "captions.txt"), log=lambda *_: None)
    assert [(r.image_id, r.captions, r.split) for r in a] == [(r.image_id, r.captions, r.split) for r in b]


def test_wrong_caption_format_and_missing_things_are_clear_errors(flickr, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not a caption file\n")
    with pytest.raises(DatasetError, match="line 1 is neither"):
        load_flickr8k(str(flickr), caption_file=str(bad))
    csv_bad = tmp_path / "captions.txt"
    csv_bad.write_text("image,caption\n")
    (tmp_path / "x.csv").write_text("file,text\na.jpg,hi\n")
    with pytest.raises(DatasetError, match="header"):
        load_dataset("custom:" + str(tmp_path / "x.csv"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_flickr8k(str(tmp_path / "nowhere"))
    for name in os.listdir(flickr / "images"):
        os.remove(flickr / "images" / name)
    with pytest.raises(DatasetError, match="no usable images"):
        load_flickr8k(str(flickr), log=lambda *_: None)


def test_random_split_is_seeded_80_10_10():
    ids = [f"{i}.jpg" for i in range(1000)]
    a, b = random_split(ids, seed=3), random_split(ids, seed=3)
    assert a == b and a != random_split(ids, seed=4)
    assert Counter(a.values()) == {"train": 800, "dev": 100, "test": 100}


def test_flickr8k_random_split(flickr):
    recs = load_flickr8k(str(flickr), split="random", seed=1, log=lambda *_: None)
    assert {r.image_id for r in recs} == {"a.jpg", "b.jpg", "c.jpg"}


def test_karpathy_and_coco_json(tmp_path):
    _images(tmp_path / "img", ["x.jpg", "y.jpg", "z.jpg"])
    k = {"dataset": "flickr8k", "images": [
        {"filename": "x.jpg", "split": "train", "sentences": [{"raw": "A man .", "tokens": ["a", "man"]}]},
        {"filename": "y.jpg", "split": "val", "sentences": [{"tokens": ["a", "dog"]}]},
        {"filename": "z.jpg", "split": "restval", "sentences": [{"raw": "A cat"}]},
        {"filename": "gone.jpg", "split": "test", "sentences": [{"raw": "A car"}]},
        {"nonsense": 1}]}
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps(k))
    logs = []
    recs = load_dataset("karpathy:" + str(tmp_path / "dataset_flickr8k.json"), str(tmp_path / "img"), log=logs.append)
    assert [(r.image_id, r.split, r.captions) for r in recs] == [
        ("x.jpg", "train", ["A man ."]), ("y.jpg", "dev", ["a dog"]), ("z.jpg", "train", ["A cat"])]
    assert any("1 test images" in line for line in logs) and any("malformed" in line for line in logs)
    coco = {"images": [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "y.jpg"}],
            "annotations": [{"image_id": 1, "caption": "A man."}, {"image_id": 1, "caption": "Man"},
                            {"image_id": 2, "caption": "Dog"}, {"image_id": 9, "caption": "orphan"}]}
    (tmp_path / "captions_val2014.json").write_text(json.dumps(coco))
    recs = load_dataset("coco:" + str(tmp_path / "captions_val2014.json"), str(tmp_path / "img"), log=lambda *_: None)
    assert [(r.image_id, r.split, r.captions) for r in recs] == [("x.jpg", "dev", ["A man.", "Man"]),
                                                                 ("y.jpg", "dev", ["Dog"])]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset("coco:" + str(tmp_path / "broken.json"), str(tmp_path))


def test_custom_csv_and_json(tmp_path):
    _images(tmp_path / "photos", ["p1.jpg", "p2.png"])
    (tmp_path / "list.csv").write_text('image,caption,split\nphotos/p1.jpg,"A cat, asleep",train\n'
                                       "photos/p1.jpg,A cat,train\nphotos/p2.png,A hill,dev\n,no image,train\n")
    recs = load_dataset("custom:" + str(tmp_path / "list.csv"), log=lambda *_: None)
    assert [(r.image_id, r.split, r.captions) for r in recs] == [("p1.jpg", "train", ["A cat, asleep", "A cat"]),
                                                                 ("p2.png", "dev", ["A hill"])]
    (tmp_path / "list.json").write_text(json.dumps([{"image": "photos/p1.jpg", "captions": ["a", "b"]},
                                                    {"image": "photos/p2.png", "caption": "c"}]))
    recs = load_dataset("custom:" + str(tmp_path / "list.json"), log=lambda *_: None)
    assert sorted(r.image_id for r in recs) == ["p1.jpg", "p2.png"]
    assert all(r.split in ("train", "dev", "test") for r in recs)
    (tmp_path / "s.csv").write_text("image,caption,split\nphotos/p1.jpg,x,validation\n")
    with pytest.raises(DatasetError, match="unknown split names"):
        load_dataset("custom:" + str(tmp_path / "s.csv"))


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/flickr8k is not present")
def test_real_flickr8k():
    logs = []
    a = load_flickr8k(SHARED, log=logs.append)
    b = load_flickr8k(SHARED, caption_file=os.path.join(SHARED, "captions.txt"), log=lambda *_: None)
    assert [(r.image_id, r.captions, r.split) for r in a] == [(r.image_id, r.captions, r.split) for r in b]
    assert Counter(r.split for r in a) == {"train": 6000, "dev": 1000}
    assert all(len(r.captions) == 5 for r in a)
    assert any("1000 test images are listed but missing" in line for line in logs)
    assert sum("2258277193_586949ec62.jpg.1" in line for line in logs) == 5
    from scratchcap.data import Vocabulary, normalize
    vocab = Vocabulary.build([normalize(c) for r in a if r.split == "train" for c in r.captions], min_count=5)
    assert len(vocab) == 2532  # recorded in the README
