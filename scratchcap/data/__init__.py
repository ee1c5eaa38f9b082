"""Data: loaders (Flickr8k, Karpathy, COCO, custom lists, synthetic shapes), text, vocabulary, batches.

Every loader returns a list of ImageRecord(image_id, path, captions, split).
``load_dataset(name, data_dir)`` picks the loader by name.
"""
from .records import SPLITS, DatasetError, ImageRecord, LoadReport
from .text import normalize
from .vocab import Vocabulary


def load_dataset(name, data_dir=None, log=print, **kw):
    """'flickr8k' (data_dir holds the caption and split files), 'shapes', 'karpathy:<json>',
    'coco:<captions json>' (data_dir: image folder) or 'custom:<csv or json>'."""
    if name == "flickr8k":
        from .flickr8k import load_flickr8k
        return load_flickr8k(data_dir, log=log, **kw)
    if name == "shapes":
        from .shapes import load_shapes
        return load_shapes(data_dir, log=log)
    kind, _, path = name.partition(":")
    if kind == "karpathy":
        from .json_formats import load_karpathy
        return load_karpathy(path, data_dir, log=log)
    if kind == "coco":
        from .json_formats import load_coco
        return load_coco(path, data_dir, log=log, **kw)
    if kind == "custom":
        from .custom import load_custom
        return load_custom(path, log=log, **kw)
    raise DatasetError(f"unknown data set {name!r}: use flickr8k, shapes, karpathy:FILE, coco:FILE or custom:FILE")


__all__ = ["SPLITS", "DatasetError", "ImageRecord", "LoadReport", "Vocabulary", "load_dataset", "normalize"]
