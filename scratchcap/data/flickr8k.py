"""Flickr8k: Flickr8k.token.txt or Kaggle's captions.txt, and the official or a seeded random split.

Token file lines are ``name.jpg#i<TAB>caption``; the Kaggle file is a CSV with a
header ``image,caption`` in which captions that contain commas are quoted.
The token file famously holds five lines for ``2258277193_586949ec62.jpg.1``,
an image that does not exist; they are skipped with a warning.
"""
from __future__ import annotations

import csv
import os

from ..images import IMAGE_EXTENSIONS
from .records import DatasetError, ImageRecord, LoadReport, keep_existing, random_split

SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
               "test": "Flickr_8k.testImages.txt"}


def _image_name_ok(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_token_file(path, report: LoadReport) -> dict:
    """{image name: [captions]} from a Flickr8k.token.txt."""
    captions = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            left, tab, caption = line.partition("\t")
            name, hash_, index = left.rpartition("#")
            if not tab or not hash_ or not index.isdigit() or not caption.strip():
                report.malformed.append((n, line))
                continue
            if not _image_name_ok(name):
                report.skipped.append((n, f"{name} is not an image file name"))
                continue
            captions.setdefault(name, []).append(caption.strip())
    return captions


def read_captions_csv(path, report: LoadReport) -> dict:
    """{image name: [captions]} from Kaggle's captions.txt (CSV with an image,caption header)."""
    captions = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != ["image", "caption"]:
            raise DatasetError(
                f"{path}: expected a CSV header 'image,caption', got {header!r}; "
                "for Flickr8k.token.txt lines use the token file instead")
        for row in reader:
            n = reader.line_num
            if not row:
                continue
            if len(row) != 2 or not row[1].strip():
                report.malformed.append((n, ",".join(row)))
                continue
            name, caption = row[0].strip(), row[1].strip()
            if not _image_name_ok(name):
                report.skipped.append((n, f"{name} is not an image file name"))
                continue
            captions.setdefault(name, []).append(caption)
    return captions


def read_captions(path, report: LoadReport) -> dict:
    """Either layout, told apart by the first line."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    if "\t" in first and "#" in first.split("\t")[0]:
        return read_token_file(path, report)
    if first.strip().lower().replace(" ", "") == "image,caption":
        return read_captions_csv(path, report)
    raise DatasetError(
        f"{path}: line 1 is neither 'name.jpg#0<TAB>caption' (Flickr8k.token.txt) nor the header "
        f"'image,caption' (captions.txt): {first.strip()[:60]!r}")


def _find(data_dir, names):
    for name in names:
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    return None


def load_flickr8k(data_dir, caption_file=None, split="official", seed=0, log=print):
    """Records of every Flickr8k image that has captions, a split and an image file."""
    if not os.path.isdir(data_dir):
        raise DatasetError(f"data directory {data_dir} does not exist")
    caption_file = caption_file or _find(data_dir, ["Flickr8k.token.txt", "captions.txt"])
    if caption_file is None:
        raise DatasetError(f"{data_dir} has neither Flickr8k.token.txt nor captions.txt")
    image_dir = _find(data_dir, ["images", "Flicker8k_Dataset", "Flickr8k_Dataset", "Images"]) or data_dir
    report = LoadReport()
    captions = read_captions(caption_file, report)
    for n, why in report.skipped:
        log(f"warning: {os.path.basename(caption_file)} line {n}: {why}; skipped")
    report.skipped = []
    if split == "official":
        assignment = {}
        for name, filename in SPLIT_FILES.items():
            path = os.path.join(data_dir, filename)
            if not os.path.exists(path):
                raise DatasetError(f"split file {path} is missing (or use split='random')")
            with open(path) as f:
                for line in f:
                    if line.strip():
                        assignment[line.strip()] = name
    elif split == "random":
        assignment = random_split(captions, seed)
    else:
        raise DatasetError(f"split must be 'official' or 'random', got {split!r}")
    records = [ImageRecord(name, os.path.join(image_dir, name), caps, assignment[name])
               for name, caps in sorted(captions.items()) if name in assignment]
    return keep_existing(records, report, log)
