"""The HDF5 feature cache: VGG-16 activations of every image, computed once.

Layout:

    /features        (N, L, D) float16 (default) or float32, chunked one image per chunk
    /image_ids       (N,) UTF-8 image ids (file names), in the order of /features
    /failed_ids      (M,) images that could not be read ...
    /failed_reasons  (M,) ... and why
    attrs: format = "scratchcap-features", format_version, weights_sha256, layer,
           preprocessing, image_size, crop, flip, grid (rows, cols), dtype

flip = 1 marks a cache of left-right mirrored images (training augmentation);
caches written before the attribute existed hold unmirrored images and read as 0.

L = rows * cols regions (196 for block5_conv3 at 224 px) and D channels (512).
Readers should ask for many ids at once: ``read`` sorts them and reads
contiguous runs, because h5py's fancy indexing with an index list is far
slower than reading the same rows in order.
"""
from __future__ import annotations

import numpy as np

from .atomic import atomic_path

FORMAT = "scratchcap-features"
FORMAT_VERSION = 1
# The attributes that must agree for two caches (or a cache and a run) to mix.
IDENTITY = ("weights_sha256", "layer", "preprocessing", "image_size", "crop", "flip", "dtype")
_ABSENT = {"flip": 0}  # what an attribute that older caches lack meant there


class CacheError(ValueError):
    pass


def _strings(values):
    return np.array([str(v) for v in values], dtype=object)


def write_cache(path, features, ids, failed=(), attrs=None):
    """Write a complete cache file atomically. features (N, L, D); failed: [(id, reason)]."""
    import h5py

    features = np.asarray(features)
    if features.ndim != 3 or len(ids) != features.shape[0]:
        raise ValueError(f"features must be (N, L, D) with one id each, got {features.shape} and {len(ids)} ids")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write(f, attrs or {}, features.shape[1:], features.dtype)
        _append(f, features, ids, failed)
    return path


def _write(f, attrs, region_shape, dtype):
    import h5py

    text = h5py.string_dtype("utf-8")
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    for k, v in attrs.items():
        f.attrs[k] = v
    L, D = region_shape
    f.create_dataset("features", shape=(0, L, D), maxshape=(None, L, D), dtype=dtype, chunks=(1, L, D))
    for name in ("image_ids", "failed_ids", "failed_reasons"):
        f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=text, chunks=(1024,))


def _append(f, features, ids, failed):
    n0 = f["features"].shape[0]
    n = len(ids)
    f["features"].resize(n0 + n, axis=0)
    f["features"][n0:n0 + n] = features
    f["image_ids"].resize(n0 + n, axis=0)
    f["image_ids"][n0:n0 + n] = _strings(ids)
    if failed:
        m0 = f["failed_ids"].shape[0]
        f["failed_ids"].resize(m0 + len(failed), axis=0)
        f["failed_reasons"].resize(m0 + len(failed), axis=0)
        f["failed_ids"][m0:] = _strings([i for i, _ in failed])
        f["failed_reasons"][m0:] = _strings([r for _, r in failed])


def merge_caches(out, parts, attrs, block: int = 256):
    """Write ``out`` atomically from several cache files, later ones winning on repeated ids.

    Rows are copied in blocks, so memory stays constant whatever the size.
    """
    import h5py

    sources = [FeatureCache(p) for p in parts]
    try:
        region = sources[0].region_shape
        dtype = sources[0].dtype
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
            _write(f, attrs, region, dtype)
            seen = set()
            for src in reversed(sources):  # the newest first, so that it wins
                keep = [i for i, image_id in enumerate(src.ids) if image_id not in seen]
                seen.update(src.ids[i] for i in keep)
                for start in range(0, len(keep), block):
                    rows = keep[start:start + block]
                    feats = src.read_rows(rows)
                    _append(f, feats, [src.ids[i] for i in rows], [])
            failed = {}
            for src in sources:
                failed.update(src.failed)
            failed = [(k, v) for k, v in failed.items() if k not in seen]
            _append(f, np.zeros((0,) + region, dtype=dtype), [], failed)
    finally:
        for s in sources:
            s.close()
    return out


class FeatureCache:
    """Read access to a feature cache, by image id."""

    def __init__(self, path):
        from .hdf5 import open_readonly

        self.path = str(path)
        self._f = open_readonly(self.path, CacheError, "feature cache")
        f = self._f
        if f.attrs.get("format") != FORMAT:
            self._f.close()
            raise CacheError(f"{self.path} is not a scratchcap feature cache")
        self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        self.ids = [s.decode() if isinstance(s, bytes) else s for s in f["image_ids"][...]]
        self.index = {image_id: i for i, image_id in enumerate(self.ids)}
        fids = [s.decode() if isinstance(s, bytes) else s for s in f["failed_ids"][...]]
        reasons = [s.decode() if isinstance(s, bytes) else s for s in f["failed_reasons"][...]]
        self.failed = dict(zip(fids, reasons))
        self.features = f["features"]
        if self.features.shape[0] != len(self.ids):
            raise CacheError(f"{self.path}: {self.features.shape[0]} feature rows for {len(self.ids)} ids")

    @property
    def region_shape(self):
        return tuple(self.features.shape[1:])

    @property
    def dtype(self):
        return self.features.dtype

    def identity(self) -> dict:
        return {k: self.attrs.get(k, _ABSENT.get(k)) for k in IDENTITY}

    def __len__(self):
        return len(self.ids)

    def __contains__(self, image_id):
        return image_id in self.index

    def read_rows(self, rows):
        """Rows by position, in the given order; read as sorted contiguous runs."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows),) + self.region_shape, dtype=self.dtype)
        if len(rows) == 0:
            return out
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        start = 0
        for end in range(1, len(sorted_rows) + 1):
            if end == len(sorted_rows) or sorted_rows[end] != sorted_rows[end - 1] + 1:
                lo, hi = sorted_rows[start], sorted_rows[end - 1] + 1
                out[order[start:end]] = self.features[lo:hi]
                start = end
        return out

    def read(self, ids, dtype=np.float32):
        """Features (len(ids), L, D) for the given image ids, as ``dtype``."""
        missing = [i for i in ids if i not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} ids are not in {self.path}, e.g. {missing[:3]}")
        return self.read_rows([self.index[i] for i in ids]).astype(dtype, copy=False)

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
