import numpy as np
from PIL import Image

from scratchcap.feature_cache import write_cache
from scratchcap.feature_neighbours import neighbour_agreement, salient_words


def test_salient_words_need_two_captions_and_skip_function_words():
    assert salient_words(["A dog on the grass", "the dog runs", "a cat"]) == {"dog"}


def test_neighbours_by_meaningful_features_share_words_more_than_random(tmp_path):
    """Images about dogs have features near one direction, images about boats near another."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    names, feats, token, train, dev = [], [], [], [], []
    for i in range(40):
        topic = "dog" if i % 2 else "boat"
        name = f"{i}.jpg"
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / name)
        centre = np.eye(8)[0 if topic == "dog" else 1] * 5
        feats.append(rng.standard_normal((3, 8)) * 0.3 + centre)
        names.append(name)
        token += [f"{name}#{k}\ta {topic} in the {chr(97 + i % 26) * 4}" for k in range(5)]
        (dev if i < 10 else train).append(name)
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(token) + "\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("\n".join(train))
    (tmp_path / "Flickr_8k.devImages.txt").write_text("\n".join(dev))
    (tmp_path / "Flickr_8k.testImages.txt").write_text("")
    write_cache(tmp_path / "cache.h5", np.array(feats, dtype=np.float16), names)
    out = neighbour_agreement(str(tmp_path / "cache.h5"), str(tmp_path))
    assert out["dev_images"] == 10 and out["nearest_shares_word"] == 1.0
    assert out["random_shares_word"] < 0.9
