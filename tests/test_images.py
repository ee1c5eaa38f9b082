"""Images from users: bombs, truncated and hostile files, formats we do not open, EXIF orientation.

Every file is generated here: PNGs are written chunk by chunk, so that their headers
can claim what their pixel data does not hold.
"""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from scratchcap.images import ImageError, decode_image, load_image, png_pixel_data_short


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(w, h, rows=None, interlace=0, raw=None):
    """An RGB PNG whose header says w x h and whose IDAT holds ``rows`` rows (all, by default)."""
    rows = h if rows is None else rows
    if raw is None:
        raw = b"".join(b"\x00" + bytes([40 + r % 200]) * (w * 3) for r in range(rows))
    head = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, interlace))
    body = _chunk(b"IDAT", zlib.compress(raw)) if raw else b""
    return b"\x89PNG\r\n\x1a\n" + head + body + _chunk(b"IEND", b"")


def _adam7_raw(w, h):
    """The decompressed pixel data of an interlaced (Adam7) RGB PNG: seven passes of filtered rows."""
    out = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        pw, ph = len(range(x0, w, dx)), len(range(y0, h, dy))
        out += b"".join(b"\x00" + b"\x99" * (pw * 3) for _ in range(ph)) if pw else b""
    return out


def test_a_header_only_png_claiming_40000_by_40000_pixels_is_a_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(40000, 40000, raw=b""))
    assert path.stat().st_size < 100
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path)


def test_a_png_claiming_12000_by_12000_pixels_with_a_few_rows_is_refused_before_decoding():
    data = _png(12000, 12000, rows=4)
    with pytest.raises(ImageError, match="12000x12000|decompression bomb"):
        decode_image(data)


def test_a_caller_may_lower_or_raise_the_pixel_budget():
    data = _png(300, 200)
    assert decode_image(data).size == (300, 200)
    with pytest.raises(ImageError, match="300x200 = 60000 pixels, more than the limit of 59999"):
        decode_image(data, max_pixels=59999)
    big = _png(10000, 9000, rows=9000)  # 90 Mpx: over Pillow's budget, under twice it
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(big)
    assert decode_image(big, max_pixels=100_000_000).size == (10000, 9000)


def test_a_png_whose_pixel_data_stops_short_is_truncated_never_decoded(tmp_path):
    data = _png(300, 200, rows=64)
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # Pillow itself decodes it without a word: the zlib stream ended cleanly
    assert "64" not in (png_pixel_data_short(_png(300, 200)) or "")
    with pytest.raises(ImageError, match="truncated.*stops short: 57664 of 180200 bytes"):
        decode_image(data)
    (tmp_path / "short.png").write_bytes(data)
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "short.png")


def test_an_interlaced_png_counts_all_seven_passes():
    raw = _adam7_raw(13, 11)
    whole = _png(13, 11, interlace=1, raw=raw)
    assert png_pixel_data_short(whole) is None
    with Image.open(io.BytesIO(whole)) as im:
        im.load()
        assert im.size == (13, 11)
    assert decode_image(whole).size == (13, 11)
    assert "stops short" in png_pixel_data_short(_png(13, 11, interlace=1, raw=raw[:-5]))


def test_pngs_of_every_mode_that_pillow_writes_decode_complete():
    for mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        buf = io.BytesIO()
        Image.new(mode, (37, 23)).save(buf, "PNG")
        assert png_pixel_data_short(buf.getvalue()) is None, mode
        assert decode_image(buf.getvalue()).size == (37, 23)


def test_a_truncated_jpeg_is_reported_as_truncated(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "cut.jpg")


def _fits(w=8, h=6):
    cards = ["SIMPLE  =                    T", "BITPIX  =                    8", "NAXIS   =                    2",
             f"NAXIS1  = {w:>20}", f"NAXIS2  = {h:>20}", "END"]
    header = "".join(c.ljust(80) for c in cards).ljust(2880).encode("ascii")
    return header + bytes(range(w * h)).ljust(2880, b"\0")


def test_a_fits_file_is_not_opened_although_pillow_could():
    with Image.open(io.BytesIO(_fits())) as im:
        assert im.format == "FITS"  # so the refusal below is ours, not Pillow's
    with pytest.raises(ImageError, match="accepted format"):
        decode_image(_fits())


def test_exif_orientation_turns_a_phone_photo_upright(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, right half blue, as the sensor stored it
    pixels[:, 20:] = (0, 0, 255)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    im.save(tmp_path / "phone.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    up = np.asarray(load_image(tmp_path / "phone.jpg").convert("RGB")).astype(int)
    assert up.shape == (40, 20, 3)
    assert up[5, 10, 0] > 200 and up[5, 10, 2] < 60  # the red half is on top now
    assert up[35, 10, 2] > 200 and up[35, 10, 0] < 60


def test_missing_empty_and_non_image_files_are_image_errors(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageError, match="a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageError, match="accepted format"):
        decode_image(b"GIF89a but not really" + bytes(40))
    with pytest.raises(ImageError, match="accepted format"):
        decode_image(b"%PDF-1.4 hello")


def test_each_failure_says_which_kind_it_is(tmp_path):
    cases = {"too_large": _png(40000, 40000, raw=b""), "truncated": _png(300, 200, rows=64),
             "format": _fits(), "unreadable": b""}
    for kind, data in cases.items():
        with pytest.raises(ImageError) as err:
            decode_image(data)
        assert err.value.kind == kind, (kind, err.value)
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "nowhere.png")
    assert err.value.kind == "unreadable"
