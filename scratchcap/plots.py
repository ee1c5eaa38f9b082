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
