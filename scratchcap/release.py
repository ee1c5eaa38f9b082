"""python -m scratchcap.release CKPT [CKPT ...] --out weights/flickr8k-<model>.h5: a small file to ship a model in.

Keeps the parameters (float16 by default), the vocabulary, the configuration and
the preprocessing the VGG-16 weights expect; drops the optimizer state and the
training position. Captioner and evaluate read it like any checkpoint.

Several checkpoints of one run (say the epochs that ``--keep-epochs`` kept) are
averaged parameter by parameter, which smooths out the noise of the last steps;
they must share the model, its sizes and the vocabulary.
"""
from __future__ import annotations

import argparse
import os
import sys

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import Vocabulary
from .models.fine_tune import feature_layer
from .paths import IMAGENET


SIZE_KEYS = ("D", "E", "H", "A", "V", "L", "feature_scale", "layer", "image_size")


def average_checkpoints(paths):
    """The first checkpoint with its parameters replaced by the mean over all of them (in float64)."""
    import numpy as np

    ckpts = [load_checkpoint(p) for p in paths]
    first = ckpts[0]
    for path, c in zip(paths[1:], ckpts[1:]):
        if c["model"] != first["model"] or c["vocabulary"] != first["vocabulary"]:
            raise CheckpointError(f"{path} is not the same model with the same vocabulary as {paths[0]}")
        mismatch = [k for k in SIZE_KEYS if c["config"].get(k) != first["config"].get(k)]
        if mismatch or sorted(c["params"]) != sorted(first["params"]):
            raise CheckpointError(f"{path} differs from {paths[0]} in {mismatch or 'its parameters'}")
    params = {k: np.mean([c["params"][k].astype(np.float64) for c in ckpts], axis=0).astype(v.dtype)
              for k, v in first["params"].items()}
    return dict(first, params=params)


def _run_dev_scores(checkpoint) -> dict:
    """The dev metrics that the training run wrote beside ``checkpoint`` (summary.json), or {}."""
    import json

    path = os.path.join(os.path.dirname(os.path.abspath(str(checkpoint))), "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return {}
    keys = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
    scores = {k: summary[k] for k in keys if isinstance(summary.get(k), (int, float))}
    return dict(scores, decoding="greedy", split="dev") if scores else {}


def release(srcs, out, dtype="float16"):
    srcs = [srcs] if isinstance(srcs, (str, os.PathLike)) else list(srcs)
    ckpt = average_checkpoints(srcs) if len(srcs) > 1 else load_checkpoint(srcs[0])
    cfg = dict(ckpt["config"])
    cfg.pop("progress", None)
    cfg["weights"] = IMAGENET  # the fetched ImageNet weights, wherever the user cache keeps them
    preprocessing = {"preprocessing": "caffe", "channel_order": "BGR", "mean": [103.939, 116.779, 123.68],
                     "image_size": cfg.get("image_size"), "layer": feature_layer(cfg)}  # what VGG-16 must compute
    extra = {"preprocessing": preprocessing, "released_from": " + ".join(os.path.basename(str(p)) for p in srcs)}
    scores = _run_dev_scores(srcs[0])
    if scores:
        extra["dev_scores"] = scores  # what GET /api/model of scratchcap serve reports
    save_checkpoint(out, model=ckpt["model"], params=ckpt["params"], config=cfg,
                    vocab=Vocabulary.from_json(ckpt["vocabulary"]), progress=ckpt["progress"], dtype=dtype,
                    extra=extra)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m scratchcap.release", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="+",
                   help="checkpoint to release (usually runs/NAME/checkpoint-best.h5); several are averaged")
    p.add_argument("--out", required=True, help="the file to write, e.g. weights/flickr8k-lstm-attention.h5")
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
