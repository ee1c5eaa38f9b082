"""`shapes`: the built-in synthetic captioning data set, generated deterministically with Pillow.

Each square image shows 1-3 objects on a lightly textured background. An
object has a shape, a colour, a size and a position; no two objects of an
image share both colour and shape. Five captions per image come from a small
grammar with paraphrases; every caption names each object's colour and shape,
and, where there is more than one object, a spatial relation. The box of every
object is kept, so that attention maps can be checked against the object a
word names.

    root = ensure_shapes("data")          # generates once, then reuses the folder
    records = load_shapes(root)           # ImageRecord(..., objects=[{shape, colour, size, box}])
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..atomic import write_json
from ..progress import progress_bar
from .records import DatasetError, ImageRecord

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS = {"red": (215, 35, 35), "green": (35, 160, 55), "blue": (40, 75, 215),
           "yellow": (230, 200, 20), "purple": (135, 50, 175), "orange": (240, 130, 20)}
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
RELATIONS = {"left": ("to the left of", "left of"), "right": ("to the right of", "right of"),
             "above": ("above", "over"), "below": ("below", "under")}
INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}
FORMAT_VERSION = 1
DEFAULTS = dict(n_train=2000, n_dev=200, n_test=200, size=128, seed=0)


def _texture(rng, size):
    """Light grey with soft blotches and fine grain."""
    coarse = rng.normal(0, 8, size=(8, 8))
    from PIL import Image
    blotch = np.asarray(Image.fromarray(coarse.astype(np.float32)).resize((size, size), Image.BILINEAR))
    base = 205 + blotch[:, :, None] + rng.normal(0, 4, size=(size, size, 1)) + rng.normal(0, 2, size=(size, size, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def _polygon(shape, box):
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.45
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + r * rx * np.cos(a), cy + r * ry * np.sin(a)))
        return pts
    raise ValueError(shape)


def _draw(draw, shape, box, colour):
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "cross":
        w = (x1 - x0) / 3
        draw.rectangle((x0 + w, y0, x1 - w, y1), fill=colour)
        draw.rectangle((x0, y0 + w, x1, y1 - w), fill=colour)
    else:
        draw.polygon(_polygon(shape, box), fill=colour)


def _objects(rng, size):
    """1-3 objects in distinct cells of a 3x3 grid, with distinct (colour, shape) pairs."""
    n = int(rng.integers(1, 4))
    cells = rng.choice(9, size=n, replace=False)
    pairs = set()
    objects = []
    cell = size / 3
    for c in cells:
        while True:
            colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
            if (colour, shape) not in pairs:
                pairs.add((colour, shape))
                break
        big = bool(rng.random() < 0.5)
        side = cell * (rng.uniform(0.8, 0.95) if big else rng.uniform(0.45, 0.6))
        if n == 1 and big:
            side *= 1.4  # a lone object may be larger than one cell
        r, k = divmod(int(c), 3)
        cx = (k + 0.5) * cell + rng.uniform(-0.1, 0.1) * cell
        cy = (r + 0.5) * cell + rng.uniform(-0.1, 0.1) * cell
        x0 = float(np.clip(cx - side / 2, 0, size - side))
        y0 = float(np.clip(cy - side / 2, 0, size - side))
        objects.append(dict(shape=shape, colour=colour, size="large" if big else "small",
                            box=[round(x0, 1), round(y0, 1), round(x0 + side, 1), round(y0 + side, 1)]))
    return objects


def _relation(a, b):
    """Where a is relative to b: left, right, above or below (by the larger offset)."""
    ax, ay = (a["box"][0] + a["box"][2]) / 2, (a["box"][1] + a["box"][3]) / 2
    bx, by = (b["box"][0] + b["box"][2]) / 2, (b["box"][1] + b["box"][3]) / 2
    if abs(ax - bx) >= abs(ay - by):
        return "left" if ax < bx else "right"
    return "above" if ay < by else "below"


def _phrase(rng, obj, with_size):
    words = []
    if with_size:
        words.append(str(rng.choice(SIZE_WORDS[obj["size"]])))
    words += [obj["colour"], obj["shape"]]
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


def _captions(rng, objects, k=5):
    caps = []
    for _ in range(k):
        with_size = bool(rng.random() < 0.5)
        ps = [_phrase(rng, o, with_size) for o in objects]
        if len(objects) == 1:
            template = rng.integers(0, 4)
            caps.append([f"{ps[0]}", f"there is {ps[0]}", f"{ps[0]} on a grey background",
                         f"a picture of {ps[0]}"][template])
            continue
        i, j = rng.choice(len(objects), size=2, replace=False)
        rel = _relation(objects[i], objects[j])
        rel_words = str(rng.choice(RELATIONS[rel]))
        rest = [ps[m] for m in range(len(objects)) if m not in (i, j)]
        core = [f"{ps[i]} {rel_words} {ps[j]}", f"{ps[i]} is {rel_words} {ps[j]}",
                f"{ps[j]} {rng.choice(RELATIONS[INVERSE[rel]])} {ps[i]}"][rng.integers(0, 3)]
        caps.append(core + (f" and {rest[0]}" if rest else ""))
    return caps


def colour_shape_pairs(caption) -> set:
    """The (colour, shape) pairs a caption names: each shape word with the colour just before it."""
    tokens = caption.split() if isinstance(caption, str) else list(caption)
    pairs = set()
    for k, t in enumerate(tokens):
        if t in SHAPES and k > 0 and tokens[k - 1] in COLOURS:
            pairs.add((tokens[k - 1], t))
    return pairs


def render(rng, size):
    """One image (PIL) and its objects."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(_texture(rng, size))
    objects = _objects(rng, size)
    draw = ImageDraw.Draw(image)
    for o in objects:
        _draw(draw, o["shape"], o["box"], COLOURS[o["colour"]])
    return image, objects


def folder_name(n_train, n_dev, n_test, size, seed):
    return f"shapes-{size}px-{n_train}-{n_dev}-{n_test}-seed{seed}"


def generate_shapes(out_dir, n_train=2000, n_dev=200, n_test=200, size=128, seed=0, progress=True):
    """Write images/*.png and annotations.json (last, atomically) into out_dir."""
    if not 32 <= size <= 512:
        raise ValueError(f"image size must lie in [32, 512], got {size}")
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    splits = [("train", n_train), ("dev", n_dev), ("test", n_test)]
    total = sum(n for _, n in splits)
    bar = progress_bar(total, "generating shapes", "img", enabled=progress)
    entries, index = [], 0
    for split, n in splits:
        for _ in range(n):
            rng = np.random.default_rng([seed, index])  # one stream per image: order-independent
            image, objects = render(rng, size)
            name = f"{split}_{index:05d}.png"
            image.save(os.path.join(out_dir, "images", name), optimize=False, compress_level=1)
            entries.append(dict(id=name, split=split, objects=objects, captions=_captions(rng, objects)))
            index += 1
            bar.update(1)
    bar.close()
    meta = dict(format="scratchcap-shapes", format_version=FORMAT_VERSION, size=size, seed=seed,
                counts={s: n for s, n in splits}, images=entries)
    write_json(os.path.join(out_dir, "annotations.json"), meta)
    return out_dir


def ensure_shapes(root="data", log=print, progress=True, **params):
    """The folder of a shapes data set with these parameters, generated if it is not there yet."""
    p = dict(DEFAULTS, **params)
    out = os.path.join(root, folder_name(p["n_train"], p["n_dev"], p["n_test"], p["size"], p["seed"]))
    if os.path.exists(os.path.join(out, "annotations.json")):
        return out
    log(f"generating the shapes data set in {out}")
    return generate_shapes(out, progress=progress, **p)


def load_shapes(data_dir, log=print):
    path = os.path.join(data_dir, "annotations.json")
    if not os.path.exists(path):
        raise DatasetError(f"{data_dir} holds no shapes data set (annotations.json is missing)")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != "scratchcap-shapes":
        raise DatasetError(f"{path} is not a shapes annotation file")
    records = [ImageRecord(e["id"], os.path.join(data_dir, "images", e["id"]), e["captions"], e["split"],
                           e["objects"]) for e in meta["images"]]
    missing = [r for r in records if not os.path.exists(r.path)]
    if missing:
        log(f"{len(missing)} shapes images are missing; going on without them")
        records = [r for r in records if os.path.exists(r.path)]
    if not records:
        raise DatasetError(f"{data_dir}: no usable images")
    return records


def region_boxes_mask(box, grid, image_size):
    """(rows*cols,) bool: the grid cells whose centre lies inside box = [x0, y0, x1, y1]."""
    rows, cols = grid
    cy = (np.arange(rows) + 0.5) * image_size / rows
    cx = (np.arange(cols) + 0.5) * image_size / cols
    x0, y0, x1, y1 = box
    inside = ((cy[:, None] >= y0) & (cy[:, None] <= y1)) & ((cx[None, :] >= x0) & (cx[None, :] <= x1))
    return inside.reshape(-1)


def shapes_scores(records, results, grid, image_size):
    """exact: the caption names exactly the image's (colour, shape) pairs.

    grounding: the fraction of colour and shape words (of objects the image
    really holds) whose attention peak, at the step that emitted the word, lies
    in a grid cell whose centre is inside that object's box.
    grounding_chance: the same fraction for a random cell, i.e. the share of
    cells inside the box, averaged over the same words.
    """
    exact, hits, chance = [], [], []
    for rec, res in zip(records, results):
        truth = {(o["colour"], o["shape"]): o for o in rec.objects}
        exact.append(colour_shape_pairs(res["words"]) == set(truth))
        alphas = res.get("alphas")
        if alphas is None:
            continue
        words = res["words"]
        for k, w in enumerate(words):
            if w in SHAPES and k > 0 and (words[k - 1], w) in truth:
                inside = region_boxes_mask(truth[(words[k - 1], w)]["box"], grid, image_size)
                if not inside.any():
                    continue
                for step in (k - 1, k):  # the colour word and the shape word
                    hits.append(bool(inside[int(np.argmax(alphas[step]))]))
                    chance.append(float(inside.mean()))
    out = {"exact": float(np.mean(exact)) if exact else 0.0}
    if any(res.get("alphas") is not None for res in results):  # None: no object word was emitted
        out["grounding"] = float(np.mean(hits)) if hits else None
        out["grounding_chance"] = float(np.mean(chance)) if chance else None
    return out
