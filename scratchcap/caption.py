"""python -m scratchcap.caption IMAGE [IMAGE ...]: caption your own photos.

Any JPEG, PNG, BMP, GIF, WebP or TIFF of any size or mode, turned upright by its
EXIF orientation. Unreadable, truncated and oversized images (decompression
bombs) are reported, and the rest are captioned. --attention-map writes, for attention models, the image
next to one panel per word showing where the model looked.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .backend import DeviceUnavailableError, add_device_argument, resolve_device
from .checkpoint import CheckpointError
from .decode import add_decoding_arguments
from .ensemble import add_ensemble_argument
from .images import MAX_PIXELS, ImageError, load_image
from .weights import WeightFileError


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m scratchcap.caption", description="Caption images.")
    p.add_argument("images", nargs="+", help="JPEG or PNG files")
    p.add_argument("--checkpoint", nargs="+", metavar="CKPT",
                   help="a checkpoint, or several of one vocabulary to decode as an ensemble (default: the released "
                        "Flickr8k model that ships with the package)")
    p.add_argument("--beam", type=int, default=3, help="beam size (1: greedy)")
    p.add_argument("--weights", help="VGG-16 weights (default: the checkpoint's, fetched on first use)")
    p.add_argument("--attention-map", metavar="PNG", help="write the attention of every word here "
                   "(with several images, one file each: NAME-1.png, NAME-2.png, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--allow-unk", action="store_true", help="let decoding emit <unk> (for analysis)")
    add_decoding_arguments(p)
    add_ensemble_argument(p)
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"refuse images whose header claims more pixels (default {MAX_PIXELS}, Pillow's)")
    add_device_argument(p)
    args = p.parse_args(argv)
    images, names, failed = [], [], {}
    for path in args.images:
        try:
            images.append(load_image(path, max_pixels=args.max_pixels))
            names.append(path)
        except ImageError as exc:
            failed[path] = exc.reason
            print(f"skipping {exc}", file=sys.stderr)
    if not images:
        print("error: no readable image", file=sys.stderr)
        return 2
    try:
        from .captioner import Captioner
        from .plots import attention_figure, save_png
        cap = Captioner.load(args.checkpoint, device=resolve_device(args.device), weights=args.weights,
                             log=lambda m: print(m, file=sys.stderr), combine=args.ensemble_average)
        results = cap.caption(images, beam=args.beam, allow_unk=args.allow_unk,
                              length_penalty_alpha=args.length_penalty, block_trigrams=args.block_trigrams,
                              block_bad_endings=args.block_bad_endings)
    except (CheckpointError, WeightFileError, DeviceUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for k, (name, image, res) in enumerate(zip(names, images, results), start=1):
        res["caption"] = " ".join(res["words"])
        if args.attention_map:
            if res.get("alphas") is None:
                print(f"note: {cap.cfg['model']} has no attention; no map written", file=sys.stderr)
            else:
                root, ext = os.path.splitext(args.attention_map)
                out = args.attention_map if len(images) == 1 else f"{root}-{k}{ext or '.png'}"
                save_png(out, attention_figure(image, res, cap.grid))
                res["attention_map"] = out
    if args.json:
        print(json.dumps([{"image": n, "caption": r["caption"], "logprob": r["logprob"],
                           **({"attention_map": r["attention_map"]} if "attention_map" in r else {}),
                           **({"sentinel": [round(float(b), 4) for b in r["sentinel"]]} if "sentinel" in r else {})}
                          for n, r in zip(names, results)] + [{"image": n, "error": why} for n, why in failed.items()],
                         indent=1))
    else:
        for n, r in zip(names, results):
            print(f"{n}\t{r['caption']}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
