"""A user's own photos: a CSV or JSON list of image paths and captions.

CSV: a header with ``image`` and ``caption`` columns (and optionally ``split``),
one caption per row; an image may appear on several rows.
JSON: a list of {"image": path, "caption": text} or {"image": path, "captions": [...]}
objects, each optionally with "split".
Relative paths are taken from the list file's folder. Without a split column,
images are split 80/10/10 at random with the given seed.
"""
from __future__ import annotations

import csv
import json
import os

from .records import SPLITS, DatasetError, ImageRecord, LoadReport, keep_existing, random_split


def load_custom(path, seed=0, log=print):
    if not os.path.exists(path):
        raise DatasetError(f"{path} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    report = LoadReport()
    caps, splits = {}, {}
    if path.lower().endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                items = json.load(f)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(items, list):
            raise DatasetError(f"{path}: expected a JSON list of {{'image', 'caption(s)'}} objects")
        for n, item in enumerate(items):
            if not isinstance(item, dict) or "image" not in item or not (item.get("caption") or item.get("captions")):
                report.malformed.append((n, json.dumps(item)[:80]))
                continue
            texts = item.get("captions") or [item["caption"]]
            caps.setdefault(item["image"], []).extend(str(t) for t in texts)
            if "split" in item:
                splits[item["image"]] = item["split"]
    else:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            fields = [h.strip().lower() for h in (reader.fieldnames or [])]
            if "image" not in fields or "caption" not in fields:
                raise DatasetError(f"{path}: expected a CSV header with 'image' and 'caption', got {reader.fieldnames}")
            for row in reader:
                row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
                if not row.get("image") or not row.get("caption"):
                    report.malformed.append((reader.line_num, str(row)[:80]))
                    continue
                caps.setdefault(row["image"], []).append(row["caption"])
                if row.get("split"):
                    splits[row["image"]] = row["split"]
    bad = {s for s in splits.values() if s not in SPLITS}
    if bad:
        raise DatasetError(f"{path}: unknown split names {sorted(bad)}; use {SPLITS}")
    assignment = splits if len(splits) == len(caps) else {**random_split(caps, seed), **splits}
    records = [ImageRecord(os.path.basename(img), os.path.join(base, img), c, assignment[img])
               for img, c in sorted(caps.items())]
    return keep_existing(records, report, log)
