"""A trained captioner, loaded from a checkpoint: images in, captions (and attention) out.

    cap = Captioner.load("runs/flickr8k-gru-attention/checkpoint-best.h5")
    results = cap.caption([pil_image, ...], beam=3)     # [{"words", "logprob", "alphas"?}]
    save_png("map.png", attention_figure(pil_image, results[0], cap.grid))   # from scratchcap.plots
"""
from __future__ import annotations

import os

import numpy as np

from .backend import to_device
from .checkpoint import CheckpointError, load_checkpoint
from .data import Vocabulary
from .decode import decode
from .models import get_model
from .paths import released_dir

def released_checkpoint():
    """The released Flickr8k model that ships with the package, or a clear error when there is none."""
    folder = released_dir()
    names = sorted(n for n in os.listdir(folder) if n.startswith("flickr8k-") and n.endswith(".h5")) \
        if os.path.isdir(folder) else []
    if not names:
        raise CheckpointError(f"no released model in {folder} (flickr8k-<model>.h5); pass --checkpoint "
                              "runs/NAME/checkpoint-best.h5 from a training run")
    return os.path.join(folder, names[0])


class Captioner:
    def __init__(self, ckpt, device="cpu", weights=None, log=print):
        from .vgg16 import VGG16
        from .weights.fetch import ensure_weights

        self.cfg = ckpt["config"]
        self.name, self.attrs, self.progress = ckpt["model"], ckpt.get("attrs", {}), ckpt.get("progress", {})
        self.model = get_model(ckpt["model"])
        self.vocab = Vocabulary.from_json(ckpt["vocabulary"])
        self.params = to_device({k: v.astype(np.float32) for k, v in ckpt["params"].items()}, device)
        self.device = device
        self.vgg = VGG16.load(ensure_weights(weights or self.cfg.get("weights"), log=log), device=device, widths=None)
        self.grid = tuple(self.cfg.get("grid") or (0, 0))

    @classmethod
    def load(cls, path=None, device="cpu", weights=None, log=print):
        return cls(load_checkpoint(path or released_checkpoint()), device, weights, log)

    def features(self, images):
        x = self.vgg.preprocess(images, size=self.cfg["image_size"])
        act = self.vgg.forward(x, layers=(self.cfg["layer"],))[self.cfg["layer"]]
        n, rows, cols, d = act.shape
        self.grid = (rows, cols)
        return act.reshape(n, rows * cols, d)

    def caption(self, images, beam=3, max_length=None, batch_size=8, **options):
        """Results of decode() for PIL images; options: allow_unk, length_penalty_alpha, block_trigrams."""
        out = []
        for s in range(0, len(images), batch_size):
            feats = self.features(images[s:s + batch_size])
            out += decode(self.model, self.params, feats, self.cfg, self.vocab, beam=beam,
                          max_length=max_length or self.cfg["max_length"], **options)
        return out
