"""The real assets a developer's machine may hold, looked up before the tests point SCRATCHCAP_HOME elsewhere.

conftest.py imports this first, so these paths are the user's own: the fetched ImageNet
VGG-16 weights (or SCRATCHCAP_VGG_WEIGHTS) and ../shared/flickr8k. Tests that need
them skip cleanly where they are missing.
"""
import os

from scratchcap.paths import WEIGHTS_FILE, default_weights_path

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _real_weights():
    if os.environ.get("SCRATCHCAP_VGG_WEIGHTS"):
        return os.environ["SCRATCHCAP_VGG_WEIGHTS"]
    for path in (default_weights_path(), os.path.join(_REPO, "weights", WEIGHTS_FILE)):
        if os.path.exists(path):
            return path
    return default_weights_path()


REAL_WEIGHTS = _real_weights()
SHARED_FLICKR8K = os.path.join(_REPO, "..", "shared", "flickr8k")
