"""The ``scratchcap`` command: one entry point whose subcommands are the ``python -m scratchcap.<name>`` modules.

    scratchcap train [...]      is    python -m scratchcap.train [...]
    scratchcap caption IMAGE    is    python -m scratchcap.caption IMAGE

Each subcommand's arguments go to that module's ``main`` untouched, so the two
spellings are the same code and take the same options.
"""
from __future__ import annotations

import importlib
import sys

from . import __version__

SUBCOMMANDS = {
    "train": ("scratchcap.train", "train a captioner (no arguments: the built-in shapes data, end to end)"),
    "caption": ("scratchcap.caption", "caption your own photos (default: the released Flickr8k model)"),
    "evaluate": ("scratchcap.evaluate", "score checkpoints on a split with BLEU, METEOR, ROUGE-L and CIDEr"),
    "features": ("scratchcap.features", "cache VGG-16 features of a folder of images in HDF5"),
    "weights": ("scratchcap.weights", "fetch, convert or inspect VGG-16 weight files"),
    "release": ("scratchcap.release", "make a small release file from training checkpoints"),
    "serve": ("scratchcap.serve", "serve a captioning web page and JSON API (pip install '.[serve]')"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: scratchcap [--version] [--help] <command> [<args>]", "",
             "scratchcap: image captioning (Show, Attend and Tell) written from scratch on NumPy.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    lines += ["", "'scratchcap <command> --help' shows a command's options."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"scratchcap {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"scratchcap: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    if not hasattr(module, "main"):  # a package: its __main__ holds the command
        module = importlib.import_module(SUBCOMMANDS[name][0] + ".__main__")
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
