"""A trained captioner, loaded from a checkpoint: images in, captions (and attention) out.

    cap = Captioner.load("runs/flickr8k-gru-attention/checkpoint-best.h5")
    results = cap.caption([pil_image, ...], beam=3)     # [{"words", "logprob", "alphas"?}]
    save_png("map.png", attention_figure(pil_image, results[0], cap.grid))   # from scratchcap.plots
"""
from __future__ import annotations

import os

from .checkpoint import CheckpointError, load_checkpoint
from .data import Vocabulary
from .decode import decode
from .ensemble import decoder
from .models.fine_tune import feature_layer
from .paths import released_dir


RELEASED_MANIFEST = "released.json"  # {"default": FILE, "ensemble": [FILE, ...]}: which shipped file is which


def released_manifest():
    """The released folder's manifest ({} when it has none or it is unreadable: the files speak for themselves)."""
    import json

    try:
        with open(os.path.join(released_dir(), RELEASED_MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def released_checkpoint():
    """The released Flickr8k model that ships with the package (the manifest's default, else the first
    flickr8k-*.h5), or a clear error when there is none."""
    folder = released_dir()
    default = released_manifest().get("default")
    if isinstance(default, str) and os.path.isfile(os.path.join(folder, os.path.basename(default))):
        return os.path.join(folder, os.path.basename(default))
    names = sorted(n for n in os.listdir(folder) if n.startswith("flickr8k-") and n.endswith(".h5")) \
        if os.path.isdir(folder) else []
    if not names:
        raise CheckpointError(f"no released model in {folder} (flickr8k-<model>.h5); pass --checkpoint "
                              "runs/NAME/checkpoint-best.h5 from a training run")
    return os.path.join(folder, names[0])


class Captioner:
    """One checkpoint, or several (an ensemble: scratchcap.ensemble) of one vocabulary and feature layer.

    With several, the first gives the configuration, the name and the attention maps."""

    def __init__(self, ckpt, device="cpu", weights=None, log=print, combine="prob", names=None):
        from .vgg16 import VGG16
        from .weights.fetch import ensure_weights

        ckpts = list(ckpt) if isinstance(ckpt, (list, tuple)) else [ckpt]
        self.model, self.params = decoder(ckpts, device, combine, names)
        ckpt = ckpts[0]
        self.cfg = ckpt["config"]
        self.name, self.attrs, self.progress = ckpt["model"], ckpt.get("attrs", {}), ckpt.get("progress", {})
        self.vocab = Vocabulary.from_json(ckpt["vocabulary"])
        self.members = len(ckpts)
        self.device = device
        self.vgg = VGG16.load(ensure_weights(weights or self.cfg.get("weights"), log=log), device=device, widths=None)
        self.grid = tuple(self.cfg.get("grid") or (0, 0))

    @classmethod
    def load(cls, path=None, device="cpu", weights=None, log=print, combine="prob"):
        """path: a checkpoint, several (an ensemble), or None for the released model."""
        paths = [str(p) for p in path] if isinstance(path, (list, tuple)) and path else [path or released_checkpoint()]
        return cls([load_checkpoint(p) for p in paths], device, weights, log, combine, names=paths)

    def features(self, images):
        x = self.vgg.preprocess(images, size=self.cfg["image_size"])
        layer = feature_layer(self.cfg)  # a fine-tuned model runs its own last layers in decode_start
        act = self.vgg.forward(x, layers=(layer,))[layer]
        n, rows, cols, d = act.shape
        self.grid = (rows, cols)
        return act.reshape(n, rows * cols, d)

    def caption(self, images, beam=3, max_length=None, batch_size=8, **options):
        """Results of decode() for PIL images; options: allow_unk, length_penalty_alpha, block_trigrams,
        block_bad_endings."""
        out = []
        for s in range(0, len(images), batch_size):
            feats = self.features(images[s:s + batch_size])
            out += decode(self.model, self.params, feats, self.cfg, self.vocab, beam=beam,
                          max_length=max_length or self.cfg["max_length"], **options)
        return out
