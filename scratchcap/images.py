"""Reading image files and uploads, which come from users: every way one can fail is an ImageError.

Images are opened only as the formats we accept (no FITS, no PSD, none of
Pillow's rarer plugins), checked against a pixel budget from their header
*before* any pixel is decoded (a 2.5 KB PNG can claim 40000 x 40000 pixels),
decoded in full at once (so a file whose pixel data stops short fails here, as
truncated, and is never captioned), and turned upright by their EXIF
orientation, as phone photos expect.
"""
from __future__ import annotations

import io
import os
import struct
import warnings

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")  # Pillow's names for the formats we open
MAX_PIXELS = 89_478_485  # Pillow's own default budget (about 9500 x 9500); a 100-megapixel photo needs more


class ImageError(ValueError):
    """An image that cannot be read; ``reason`` says why in a few words, ``kind`` which way it failed.

    kind: "unreadable" (missing, a folder, empty), "format" (not one we open), "too_large" (over the pixel
    budget), "truncated", "corrupt", "memory".
    """

    def __init__(self, path, reason: str, kind: str = "corrupt"):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.kind = str(path), reason, kind


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_bytes_needed(header) -> int:
    """Decompressed bytes that a PNG's IHDR promises: per row a filter byte and the row's pixels."""
    w, h, depth, colour, _, _, interlace = header
    bits = depth * PNG_CHANNELS.get(colour, 4)
    need = 0
    for x0, y0, dx, dy in ADAM7 if interlace else ((0, 0, 1, 1),):
        pw = -(-(w - x0) // dx) if w > x0 else 0
        ph = -(-(h - y0) // dy) if h > y0 else 0
        if pw and ph:
            need += ph * (1 + -(-(pw * bits) // 8))
    return need


def png_pixel_data_short(data: bytes) -> str | None:
    """Why a PNG's pixel data is shorter than its header promises, or None when it is complete.

    Pillow's PNG decoder stops without an error where the zlib stream ends, so a file
    whose IDAT holds 64 of 12000 rows decodes "successfully" into a mostly blank image.
    We count the decompressed bytes (in 1 MB pieces, discarded) up to what the header needs.
    """
    import zlib

    if len(data) < 33 or data[12:16] != b"IHDR":
        return "no image header"
    need = _png_bytes_needed(struct.unpack(">IIBBBBB", data[16:29]))
    pos, z, got = 33, zlib.decompressobj(), 0
    while pos + 8 <= len(data) and got < need:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IEND":
            break
        if kind == b"IDAT":
            piece = data[pos + 8:pos + 8 + length]
            try:
                while piece and got < need:
                    got += len(z.decompress(piece, 1 << 20))
                    piece = z.unconsumed_tail
            except zlib.error as exc:
                return f"corrupt pixel data ({exc})"
        pos += 12 + length
    return None if got >= need else f"the pixel data stops short: {got} of {need} bytes"


def _decode(data: bytes, name, max_pixels):
    from PIL import Image, ImageOps, UnidentifiedImageError

    budget = MAX_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its budget and twice that; here any excess is an error, unless the
            # caller allows more (Pillow still refuses beyond twice its budget).
            warnings.simplefilter("error" if budget <= Image.MAX_IMAGE_PIXELS else "ignore",
                                  Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as im:
                w, h = im.size
                if w * h > budget:
                    raise ImageError(name, f"the image claims {w}x{h} = {w * h} pixels, more than the "
                                           f"limit of {budget} (a decompression bomb, or a very large photo)",
                                     "too_large")
                if im.format == "PNG":
                    short = png_pixel_data_short(data)
                    if short:
                        raise ImageError(name, f"truncated image ({short})", "truncated")
                im.load()  # decode every pixel now: a truncated file fails here and not later
                return ImageOps.exif_transpose(im)  # a copy, upright
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, "not an image in an accepted format (" + ", ".join(FORMATS) +
                         "), or a corrupt header", "format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, f"more pixels than the limit of {min(budget, 2 * Image.MAX_IMAGE_PIXELS)} "
                               f"(a decompression bomb, or a very large photo): {exc}", "too_large") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
            struct.error) as exc:
        # Pillow's decoders raise many types on hostile input; each one means the same to the user.
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        what = "truncated image (the pixel data stops short)" if kind == "truncated" else "corrupt image"
        raise ImageError(name, f"{what}: {exc}", kind) from None
    except MemoryError:
        raise ImageError(name, "not enough memory to decode this image", "memory") from None


def load_image(path, max_pixels: int | None = None):
    """Open and fully decode an image file (any mode, upright); raise ImageError when that is impossible."""
    if not os.path.exists(path):
        raise ImageError(path, "file not found", "unreadable")
    if os.path.isdir(path):
        raise ImageError(path, "a folder, not an image file", "unreadable")
    with open(path, "rb") as f:
        return _decode(f.read(), path, max_pixels)


def decode_image(data: bytes, name: str = "upload", max_pixels: int | None = None):
    """The same as load_image, for bytes in memory (nothing is written to disk)."""
    if not data:
        raise ImageError(name, "empty: no image data", "unreadable")
    return _decode(bytes(data), name, max_pixels)


def list_images(folder) -> list:
    """Image files directly in ``folder``, sorted by name."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith(IMAGE_EXTENSIONS))
