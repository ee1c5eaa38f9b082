"""Karpathy's split files (dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json) and COCO captions_*.json."""
from __future__ import annotations

import json
import os

from .records import DatasetError, ImageRecord, LoadReport, keep_existing

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "dev", "test": "test"}


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None


def load_karpathy(path, image_dir, log=print):
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: expected Karpathy's layout {{'images': [...]}}")
    report, records = LoadReport(), []
    for n, im in enumerate(data["images"]):
        try:
            name = im["filename"]
            split = KARPATHY_SPLITS[im["split"]]
            caps = [s["raw"] if "raw" in s else " ".join(s["tokens"]) for s in im["sentences"]]
        except (KeyError, TypeError):
            report.malformed.append((n, json.dumps(im)[:80]))
            continue
        rel = os.path.join(im.get("filepath", ""), name)
        records.append(ImageRecord(name, os.path.join(image_dir, rel), caps, split))
    return keep_existing(records, report, log)


def load_coco(path, image_dir, split=None, log=print):
    """COCO captions_<split>.json; the split comes from the file name unless given."""
    data = _read_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DatasetError(f"{path}: expected COCO's layout with 'images' and 'annotations'")
    if split is None:
        base = os.path.basename(path)
        split = "train" if "train" in base else "dev" if "val" in base else "test"
    report = LoadReport()
    names = {}
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            report.malformed.append((n, json.dumps(im)[:80]))
            continue
        names[im["id"]] = im["file_name"]
    caps = {}
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or ann.get("image_id") not in names or not ann.get("caption"):
            report.malformed.append((n, json.dumps(ann)[:80]))
            continue
        caps.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    records = [ImageRecord(names[i], os.path.join(image_dir, names[i]), c, split)
               for i, c in sorted(caps.items())]
    return keep_existing(records, report, log)
