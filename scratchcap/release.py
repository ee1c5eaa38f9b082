"""python -m scratchcap.release CKPT --out weights/flickr8k-<model>.h5: a small file to ship a trained model in.

Keeps the parameters (float16 by default), the vocabulary, the configuration and
the preprocessing the VGG-16 weights expect; drops the optimizer state and the
training position. Captioner and evaluate read it like any checkpoint.
"""
from __future__ import annotations

import argparse
import os
import sys

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import Vocabulary


def release(src, out, dtype="float16"):
    ckpt = load_checkpoint(src)
    cfg = dict(ckpt["config"])
    cfg.pop("progress", None)
    cfg["weights"] = os.path.join("weights", "vgg16_imagenet.h5")  # the fetched ImageNet weights
    preprocessing = {"preprocessing": "caffe", "channel_order": "BGR", "mean": [103.939, 116.779, 123.68],
                     "image_size": cfg.get("image_size"), "layer": cfg.get("layer")}
    save_checkpoint(out, model=ckpt["model"], params=ckpt["params"], config=cfg,
                    vocab=Vocabulary.from_json(ckpt["vocabulary"]), progress=ckpt["progress"], dtype=dtype,
                    extra={"preprocessing": preprocessing, "released_from": os.path.basename(str(src))})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m scratchcap.release", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="checkpoint to release (usually runs/NAME/checkpoint-best.h5)")
    p.add_argument("--out", required=True, help="the file to write, e.g. weights/flickr8k-gru-attention.h5")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="parameter precision")
    args = p.parse_args(argv)
    try:
        release(args.checkpoint, args.out, args.dtype)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
