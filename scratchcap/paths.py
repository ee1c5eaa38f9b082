"""Where scratchcap keeps what it downloads, converts and generates, and where the released model is.

As Keras (``~/.keras/models``) and PyTorch (``~/.cache/torch/hub``) do, assets that
cost time to make live in one per-user folder, so every working folder shares them:

    $SCRATCHCAP_HOME                       if set, else
    $XDG_CACHE_HOME/scratchcap             if XDG_CACHE_HOME is set, else
    ~/.cache/scratchcap

        weights/vgg16_imagenet.h5          the ImageNet VGG-16 weights (scratchcap.weights fetch)
        data/shapes-.../                   generated shapes data sets
        features/NAME-LAYER-SIZEpx.h5      feature caches of training runs

Run outputs stay in ``runs/`` under the current folder. The released model is
package data (``scratchcap/released/`` once installed; ``weights/`` in the source
tree, which setup.cfg maps to that package folder), so it is found from any folder.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

IMAGENET = "imagenet"  # stands for the default ImageNet weights wherever a weight path is asked for
WEIGHTS_FILE = "vgg16_imagenet.h5"


def cache_home() -> Path:
    """The per-user folder for downloaded and generated assets (not created here)."""
    if os.environ.get("SCRATCHCAP_HOME"):
        return Path(os.environ["SCRATCHCAP_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "scratchcap"
    return Path.home() / ".cache" / "scratchcap"


def default_weights_path() -> str:
    return str(cache_home() / "weights" / WEIGHTS_FILE)


def data_root() -> str:
    return str(cache_home() / "data")


def features_dir() -> str:
    return str(cache_home() / "features")


def is_default_weights(path) -> bool:
    """True for the names that mean 'the ImageNet weights, wherever the user cache keeps them'.

    Checkpoints written before the user cache hold the name weights/vgg16_imagenet.h5; it is read as this
    name, never as a path under the current folder.
    """
    return path in (None, "", IMAGENET) or Path(str(path)).parts == ("weights", WEIGHTS_FILE)


def resolve_weights(path=None) -> str:
    """The weight file to open for ``path``: the user cache's for the default names, else ``path`` itself."""
    return default_weights_path() if is_default_weights(path) else str(path)


def released_dir():
    """The folder of released models: the installed package's ``released/``, else the source tree's ``weights/``."""
    installed = resources.files("scratchcap") / "released"
    if installed.is_dir():
        return Path(str(installed))
    return Path(__file__).resolve().parent.parent / "weights"
