import json
import os

import numpy as np
import pytest
from PIL import Image

from scratchcap.data.shapes import (COLOURS, SHAPES, _relation, colour_shape_pairs, ensure_shapes,
                                    generate_shapes, load_shapes, render)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes") / "s"
    generate_shapes(str(out), n_train=30, n_dev=6, n_test=4, size=96, seed=5, progress=False)
    return str(out)


def test_generation_is_deterministic(small, tmp_path):
    again = tmp_path / "again"
    generate_shapes(str(again), n_train=30, n_dev=6, n_test=4, size=96, seed=5, progress=False)
    a = json.load(open(os.path.join(small, "annotations.json")))
    b = json.load(open(again / "annotations.json"))
    assert a == b
    im1 = np.asarray(Image.open(os.path.join(small, "images", "train_00003.png")))
    im2 = np.asarray(Image.open(again / "images" / "train_00003.png"))
    assert (im1 == im2).all()
    other = render(np.random.default_rng([6, 3]), 96)[1]
    assert other != a["images"][3]["objects"]


def test_records_objects_and_captions(small):
    recs = load_shapes(small)
    assert [r.split for r in recs].count("dev") == 6 and len(recs) == 40
    for r in recs:
        assert 1 <= len(r.objects) <= 3 and len(r.captions) == 5
        truth = {(o["colour"], o["shape"]) for o in r.objects}
        assert len(truth) == len(r.objects)
        for c in r.captions:
            assert colour_shape_pairs(c) == truth, (c, truth)
            if len(r.objects) > 1:
                assert any(w in c for w in ("left", "right", "above", "below", "over", "under"))
        im = Image.open(r.path)
        assert im.size == (96, 96)
        for o in r.objects:
            x0, y0, x1, y1 = o["box"]
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            centre = np.asarray(im)[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            if o["shape"] in ("circle", "square", "cross", "diamond"):
                assert np.abs(centre.astype(int) - COLOURS[o["colour"]]).max() < 3  # drawn where the box says


def test_relations_follow_the_boxes():
    a = {"box": [0, 40, 10, 50]}
    b = {"box": [60, 40, 70, 50]}
    assert _relation(a, b) == "left" and _relation(b, a) == "right"
    c = {"box": [60, 0, 70, 10]}
    assert _relation(c, b) == "above"


def test_colour_shape_pairs_parses_captions():
    assert colour_shape_pairs("a big red circle left of an orange star") == {("red", "circle"), ("orange", "star")}
    assert colour_shape_pairs("a circle") == set()
    assert set(SHAPES) >= {"circle", "square", "triangle", "star", "cross"}


def test_ensure_shapes_generates_once(tmp_path):
    logs = []
    a = ensure_shapes(str(tmp_path), log=logs.append, progress=False, n_train=4, n_dev=2, n_test=2, size=64)
    b = ensure_shapes(str(tmp_path), log=logs.append, progress=False, n_train=4, n_dev=2, n_test=2, size=64)
    assert a == b and len(logs) == 1
    with pytest.raises(ValueError, match="image size"):
        generate_shapes(str(tmp_path / "x"), size=8, progress=False)
