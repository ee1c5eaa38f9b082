"""python -m scratchcap.feature_neighbours: do cached VGG-16 features mean something?

For every dev image, find its nearest train image by the cosine similarity of
mean-pooled features, and ask whether the two share a salient caption word: a
content word (not a function word) that at least two of an image's five
captions use. Compare with random train images. Real features should share
words far more often than chance.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import numpy as np

from .data.flickr8k import load_flickr8k
from .data.text import normalize
from .feature_cache import FeatureCache
from .threads import add_threads_argument

FUNCTION_WORDS = set("""a an the and or of in on at to with from by for into onto over under up down out near
next while as is are was were be being been it its his her their them they he she his him this that these those
there here some two three four five one several many other another each who which what two very front behind
through across around off has have having does do doing while""".split())


def salient_words(captions, min_captions=2) -> set:
    counts = Counter(w for c in captions for w in set(normalize(c)) if w not in FUNCTION_WORDS and len(w) > 2)
    return {w for w, n in counts.items() if n >= min_captions}


def pooled(cache, ids, block=256):
    out = np.empty((len(ids), cache.region_shape[1]), dtype=np.float32)
    for s in range(0, len(ids), block):
        out[s:s + block] = cache.read(ids[s:s + block]).mean(axis=1)
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-8
    return out


def neighbour_agreement(cache_path, data_dir, seed=0):
    records = {r.image_id: r for r in load_flickr8k(data_dir, log=lambda *_: None)}
    with FeatureCache(cache_path) as cache:
        train = [i for i, r in records.items() if r.split == "train" and i in cache]
        dev = [i for i, r in records.items() if r.split == "dev" and i in cache]
        ft, fd = pooled(cache, train), pooled(cache, dev)
    words = {i: salient_words(records[i].captions) for i in train + dev}
    nearest = np.argmax(fd @ ft.T, axis=1)
    rng = np.random.default_rng(seed)
    random = rng.integers(0, len(train), size=len(dev))
    share_nn = np.mean([bool(words[d] & words[train[k]]) for d, k in zip(dev, nearest)])
    share_rand = np.mean([bool(words[d] & words[train[k]]) for d, k in zip(dev, random)])
    return dict(dev_images=len(dev), train_images=len(train), nearest_shares_word=float(share_nn),
                random_shares_word=float(share_rand), ratio=float(share_nn / max(share_rand, 1e-9)))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m scratchcap.feature_neighbours", description=__doc__.splitlines()[0])
    p.add_argument("--cache", required=True, help="feature cache of the Flickr8k images")
    p.add_argument("--data-dir", required=True, help="Flickr8k folder (captions and split files)")
    p.add_argument("--seed", type=int, default=0)
    add_threads_argument(p)
    args = p.parse_args(argv)
    print(json.dumps(neighbour_agreement(args.cache, args.data_dir, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
