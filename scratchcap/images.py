"""Reading image files, with a clear error for missing, corrupt or truncated ones."""
from __future__ import annotations

import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageError(ValueError):
    """An image that cannot be read; ``reason`` says why in a few words."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


def load_image(path):
    """Open and fully decode an image (any mode); raise ImageError when that is impossible."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.exists(path):
        raise ImageError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here and not later
            return im.copy()
    except UnidentifiedImageError:
        raise ImageError(path, "not an image file (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(path, f"corrupt or truncated image ({exc})") from None


def list_images(folder) -> list:
    """Image files directly in ``folder``, sorted by name."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_EXTENSIONS))
