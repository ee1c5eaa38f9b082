"""The one form every data set loader produces, and the report of what it had to leave out.

ImageRecord(image_id, path, captions, split): split is "train", "dev" or "test".
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "dev", "test")


class DatasetError(ValueError):
    """A data set that cannot be used: missing folder, wrong caption format, nothing usable."""


@dataclass
class ImageRecord:
    image_id: str
    path: str
    captions: list
    split: str
    objects: list = field(default_factory=list)  # ground-truth boxes, for synthetic data


@dataclass
class LoadReport:
    """What a loader skipped, with line numbers where there are lines."""
    missing_images: dict = field(default_factory=dict)  # split -> count
    skipped: list = field(default_factory=list)  # (line number, reason)
    malformed: list = field(default_factory=list)  # (line number, text)

    def lines(self) -> list:
        out = []
        for split, n in self.missing_images.items():
            if n:
                out.append(f"{n} {split} images are listed but missing; going on without them")
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} lines: " + "; ".join(
                f"line {n}: {why}" for n, why in self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else ""))
        if self.malformed:
            out.append(f"{len(self.malformed)} malformed lines: " + "; ".join(
                f"line {n}: {text[:40]!r}" for n, text in self.malformed[:5])
                + (" ..." if len(self.malformed) > 5 else ""))
        return out


def random_split(ids, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> dict:
    """Seeded random train/dev/test assignment, as the ICapNet paper split Flickr8k 80/10/10."""
    ids = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(fractions[0] * len(ids)))
    n_dev = int(round(fractions[1] * len(ids)))
    split = {}
    for rank, i in enumerate(order):
        split[ids[i]] = "train" if rank < n_train else "dev" if rank < n_train + n_dev else "test"
    return split


def keep_existing(records, report: LoadReport, log=print) -> list:
    """Drop records whose image file is missing, count them per split, and say so."""
    kept = []
    for r in records:
        if os.path.exists(r.path):
            kept.append(r)
        else:
            report.missing_images[r.split] = report.missing_images.get(r.split, 0) + 1
    for line in report.lines():
        log(line)
    if not kept:
        raise DatasetError("no usable images are left: every listed image is missing or unreadable")
    return kept
