"""PNG figures drawn with Pillow alone: loss curves (and, in decoding, attention maps)."""
from __future__ import annotations

import numpy as np

from .atomic import atomic_path

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def save_png(path, *panels):
    """Stack PIL images vertically and write them as one PNG, atomically."""
    from PIL import Image

    fig = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels)), "white")
    y = 0
    for p in panels:
        fig.paste(p, (0, y))
        y += p.height
    with atomic_path(path) as tmp:
        fig.save(tmp, format="PNG")
    return path


def line_plot(series: dict, title: str, xlabel: str, ylabel: str, size=(720, 380)):
    """series: {label: (x values, y values)}. Returns a PIL image."""
    from PIL import Image, ImageDraw

    W, H = size
    left, right, top, bottom = 70, 20, 40, 50
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values() if len(x)] or [np.zeros(1)])
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values() if len(y)] or [np.zeros(1)])
    ys = ys[np.isfinite(ys)] if np.isfinite(ys).any() else np.zeros(1)
    x0, x1 = float(xs.min()), float(xs.max()) or 1.0
    y0, y1 = float(ys.min()), float(ys.max())
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (W - left - right),
                H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

    d.rectangle((left, top, W - right, H - bottom), outline="black")
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        _, yy = px(x0, yv)
        d.line((left - 4, yy, left, yy), fill="black")
        d.text((5, yy - 6), f"{yv:.3g}", fill="black")
        xv = x0 + (x1 - x0) * k / 4
        xx, _ = px(xv, y0)
        d.line((xx, H - bottom, xx, H - bottom + 4), fill="black")
        d.text((xx - 10, H - bottom + 8), f"{xv:.3g}", fill="black")
    d.text((W / 2 - 40, H - 20), xlabel, fill="black")
    d.text((5, 10), f"{title}   ({ylabel})", fill="black")
    for i, (label, (x, y)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = [px(a, b) for a, b in zip(x, y) if np.isfinite(b)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        for p in pts if len(pts) < 60 else []:
            d.ellipse((p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3), fill=colour)
        d.text((W - right - 230, top + 8 + 14 * i), label, fill=colour)
    return im


# ---- attention maps ------------------------------------------------------------------------------------

def _gaussian_blur(a, sigma):
    """a (H, W) smoothed by a separable Gaussian (reflected edges); sigma in pixels."""
    radius = max(1, int(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(a, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, pad)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)


def attention_heat(alpha, grid, size, sigma=None):
    """alpha (L,) over a grid (rows, cols) as a smooth (size, size) map in [0, 1], peak at 1.

    Upsampled bilinearly, then smoothed by a Gaussian of one cell's width over two (as
    Show, Attend and Tell's figures and the PyTorch tutorial's pyramid_expand with sigma 8 do
    at 16 pixels a cell), then stretched from its minimum to its maximum, so the attended
    region stands out whatever the spread; the panel prints the raw peak beside it.
    """
    from PIL import Image

    att = np.asarray(alpha, dtype=np.float32).reshape(grid)
    up = np.asarray(Image.fromarray(att, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float64)
    up = _gaussian_blur(up, sigma or size / max(grid) / 2)
    lo, hi = up.min(), up.max()
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def _font(size):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw, text, font, width):
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def attention_figure(image, result, grid, panel=224, columns=5, title=None):
    """The caption, wrapped, above one panel per word (and <end>), after the photo itself.

    Each panel shows the photo dimmed and grey where the word did not look and in full colour
    where it did (attention_heat), the word, and the largest alpha of its raw map against
    the uniform 1/L, so that a flat map cannot pass for a sharp one. A model with a visual
    sentinel also shows beta, the weight of the sentinel, at every word.
    """
    from PIL import Image, ImageDraw

    alphas = result.get("alphas")
    if alphas is None:
        raise ValueError("this model has no attention to draw")
    words = list(result["words"]) + ["<end>"]
    alphas = np.asarray(alphas, dtype=np.float64)[: len(words)]
    sentinel = result.get("sentinel")
    rgb = image.convert("RGB").resize((panel, panel), Image.BICUBIC)
    photo = np.asarray(rgb, dtype=np.float64)
    dim = np.repeat(photo.mean(axis=2, keepdims=True), 3, axis=2) * 0.3

    font, small = _font(max(12, panel // 12)), _font(max(10, panel // 16))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text = (f"{title}: " if title else "") + " ".join(result["words"])
    lines = _wrap(measure, text, font, columns * panel - 16)
    line_h = font.getbbox("Hg")[3] + 6
    top = 10 + line_h * len(lines) + 6
    n = 1 + len(alphas)
    rows = -(-n // columns)
    fig = Image.new("RGB", (columns * panel, top + rows * panel), "white")
    draw = ImageDraw.Draw(fig)
    for i, line in enumerate(lines):
        draw.text((8, 8 + i * line_h), line, fill="black", font=font)

    def label(x, y, first, second=None):
        h = line_h + (small.getbbox("Hg")[3] + 4 if second else 0)
        band = Image.new("RGB", (panel, h), (0, 0, 0))
        fig.paste(Image.blend(fig.crop((x, y + panel - h, x + panel, y + panel)), band, 0.65),
                  (x, y + panel - h))
        draw.text((x + 6, y + panel - h + 3), first, fill="white", font=font)
        if second:
            draw.text((x + 6, y + panel - h + line_h), second, fill=(255, 220, 120), font=small)

    fig.paste(rgb, (0, top))
    label(0, top, "input")
    uniform = 1.0 / alphas.shape[1]
    for k, (word, alpha) in enumerate(zip(words, alphas), start=1):
        heat = attention_heat(alpha, grid, panel)[:, :, None] ** 1.5  # the peak region brighter than its skirt
        shown = dim * (1 - heat) + photo * heat
        x, y = (k % columns) * panel, top + (k // columns) * panel
        fig.paste(Image.fromarray(np.clip(shown, 0, 255).astype(np.uint8)), (x, y))
        if sentinel is None:
            label(x, y, word, f"peak {alpha.max():.3f} = {alpha.max() / uniform:.1f}x uniform")
        else:  # beta: the share of the word taken from the language model, not the image
            label(x, y, word, f"beta {sentinel[k - 1]:.2f}, peak {alpha.max() / uniform:.1f}x uniform")
    return fig
