"""python -m scratchcap.features: turn a folder of images into an HDF5 feature cache.

    python -m scratchcap.features ../shared/flickr8k/images --out cache/flickr8k-block5_conv3.h5

Resumable and safe to kill: finished images are written in small shard files
(each written atomically) beside the output, and the output itself is
assembled atomically at the end. Running the command again skips every image
that is already in the output or in a shard. Unreadable images are reported
and recorded in the cache, not fatal. Memory stays constant: images stream
through in batches.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import sys
import time
import traceback

import numpy as np

from .backend import DeviceUnavailableError, add_device_argument, resolve_device, to_numpy
from .feature_cache import IDENTITY, CacheError, FeatureCache, merge_caches, write_cache
from .images import ImageError, list_images, load_image
from .progress import progress_bar

SHARD_SIZE = 64


def weights_fingerprint(model) -> str:
    """sha256 over the per-layer checksums: names the weights, whatever file they came from."""
    from .weights.format import CONV_LAYERS, layer_checksum

    h = hashlib.sha256()
    for name in CONV_LAYERS:
        kernel, bias = model.params[name]
        h.update(layer_checksum(to_numpy(kernel), to_numpy(bias)).encode())
    return h.hexdigest()


def _shard_dir(out):
    return out + ".parts"


def _check_identity(path, cache, identity):
    got = cache.identity()
    diff = {k: (got.get(k), identity[k]) for k in IDENTITY if str(got.get(k)) != str(identity[k])}
    if diff:
        raise CacheError(
            f"{path} was built with other settings ({', '.join(f'{k}: {a} vs {b}' for k, (a, b) in diff.items())}); "
            "choose another --out or delete it")


def _merge(out, shard_dir, failed, attrs, dtype):
    """Rank 0, after every rank is done: out and every shard (any rank's) into out, atomically; shards removed."""
    parts = ([out] if os.path.exists(out) else []) + sorted(glob.glob(os.path.join(shard_dir, "shard-*.h5")))
    if failed:  # failures of ranks that read no image: a shard of their own, shaped like the others
        if not parts:
            raise CacheError(f"none of the {len(failed)} images could be read, e.g. "
                             + "; ".join(f"{i}: {why}" for i, why in failed[:3]))
        with FeatureCache(parts[-1]) as previous:
            region = previous.region_shape
        os.makedirs(shard_dir, exist_ok=True)
        shard = os.path.join(shard_dir, "shard-failed-000000.h5")
        write_cache(shard, np.zeros((0,) + tuple(region), dtype=dtype), [], failed, attrs=attrs)
        parts.append(shard)
    if parts and parts != [out]:
        with FeatureCache(parts[-1]) as last:
            attrs = dict(last.attrs)
        attrs.pop("format", None)
        attrs.pop("format_version", None)
        merge_caches(out, parts, attrs)
        for shard in parts:
            if shard != out:
                os.remove(shard)
    # half-written shards of a killed rank (SIGKILL leaves atomic_path's temporary file behind)
    for tmp in glob.glob(os.path.join(shard_dir, ".tmp-shard-*")):
        os.remove(tmp)
    if os.path.isdir(shard_dir) and not os.listdir(shard_dir):
        os.rmdir(shard_dir)


def _still_to_do(paths, out, shard_dir, identity):
    """The paths that neither ``out`` nor any shard holds (as features or as a recorded failure)."""
    done = set()
    for part in ([out] if os.path.exists(out) else []) + sorted(glob.glob(os.path.join(shard_dir, "shard-*.h5"))):
        with FeatureCache(part) as cache:
            _check_identity(part, cache, identity)
            done.update(cache.ids)
            done.update(cache.failed)
    return [p for p in paths if os.path.basename(p) not in done]


def extract(paths, out, model, *, layer="block5_conv3", image_size=224, crop=False, flip=False, dtype="float16",
            batch_size=8, progress=True, log=print, shard_size=SHARD_SIZE, world=None):
    """Compute ``layer`` for every image path not yet in ``out``; returns a summary dict.

    ``flip=True`` mirrors every image left to right first (training's --flip augmentation); the cache
    records it (``flip`` = 1), so mirrored and unmirrored features never mix in one file.

    With an MPI ``world`` (scratchcap.distributed) the images still to do are dealt out over the ranks;
    each rank writes its own shard files (shard-RANK-K.h5, atomically), and rank 0 merges every shard
    into ``out`` once all ranks are done. A killed job resumes with any number of ranks: whatever
    any shard holds is skipped.
    """
    from .distributed import SingleProcess

    world = world or SingleProcess()
    identity = dict(weights_sha256=weights_fingerprint(model), layer=layer,
                    preprocessing=model.preprocessing, image_size=image_size, crop=int(crop), flip=int(flip),
                    dtype=dtype)
    shard_dir = _shard_dir(out)
    todo = None
    if world.rank == 0:  # one reading of what is done: a rank that started late would see others' new shards
        todo = _still_to_do(paths, out, shard_dir, identity)
        log(f"{len(paths)} images: {len(paths) - len(todo)} already cached, {len(todo)} to compute"
            + (f" on {world.size} ranks" if world.size > 1 else ""))
    todo = world.bcast(todo)
    todo = todo[world.rank::world.size]  # dealt out: neighbouring images (similar sizes) spread over the ranks
    bar = progress_bar(len(todo), f"VGG-16 {layer}", "img", enabled=progress and bool(todo))
    feats, ids, failed = [], [], []
    n_failed = 0
    start = time.perf_counter()
    mine = glob.glob(os.path.join(shard_dir, f"shard-{world.rank:03d}-*.h5"))  # this rank's, from an earlier try
    next_shard = 1 + max((int(os.path.basename(m)[10:16]) for m in mine), default=-1)

    def flush():
        nonlocal feats, ids, failed, next_shard
        if not ids and not failed:
            return
        os.makedirs(shard_dir, exist_ok=True)
        shard = os.path.join(shard_dir, f"shard-{world.rank:03d}-{next_shard:06d}.h5")  # no two ranks share a name
        region = feats[0].shape[1:] if feats else grid_shape  # flushed only once some image was read
        block = np.concatenate(feats) if feats else np.zeros((0,) + region, dtype=dtype)
        write_cache(shard, block, ids, failed, attrs=attrs)
        next_shard += 1
        feats, ids, failed = [], [], []

    grid_shape = None
    attrs = dict(identity)
    for b in range(0, len(todo), batch_size):
        batch_paths = todo[b:b + batch_size]
        images, names = [], []
        for p in batch_paths:
            try:
                images.append(load_image(p))
                names.append(os.path.basename(p))
            except ImageError as exc:
                failed.append((os.path.basename(p), exc.reason))
                n_failed += 1
                log(f"skipping unreadable image {exc}")
        if images:
            x = model.preprocess(images, size=image_size, crop=crop)
            if flip:  # after resizing: a centre crop and a squash are both symmetric, so this mirrors the input
                x = model.xp.ascontiguousarray(x[:, :, ::-1])
            act = to_numpy(model.forward(x, layers=(layer,))[layer])
            n, rows, cols, d = act.shape
            grid_shape = (rows * cols, d)
            attrs["grid"] = np.array([rows, cols])
            feats.append(act.reshape(n, rows * cols, d).astype(dtype))
            ids.extend(names)
        bar.update(len(batch_paths))
        if grid_shape is not None and len(ids) + len(failed) >= shard_size:
            flush()
    if grid_shape is not None:
        flush()  # features and failures; a rank that read no image hands its failures to rank 0 below
    bar.close()
    elapsed = time.perf_counter() - start
    counts = world.gather((failed if grid_shape is None else [], len(todo) - n_failed, n_failed)) or []
    computed, n_failed = sum(c[1] for c in counts), sum(c[2] for c in counts)  # rank 0's summary is the job's
    world.barrier()  # every rank's shards are written
    if world.rank == 0:
        _merge(out, shard_dir, [f for c in counts for f in c[0]], attrs, dtype)
    world.barrier()  # the merged cache is whole before anyone reads it
    with FeatureCache(out) as cache:
        total, total_failed = len(cache), len(cache.failed)
    summary = dict(images=len(paths), computed=computed, failed_now=n_failed, cached=total,
                   failed_total=total_failed, seconds=round(elapsed, 2),
                   images_per_second=round(computed / elapsed, 3) if computed and elapsed > 0 else None)
    return summary


def main(argv=None) -> int:
    from .weights.fetch import FetchError, ensure_weights
    from .weights.format import WeightFileError

    parser = argparse.ArgumentParser(prog="python -m scratchcap.features",
                                     description="Cache VGG-16 features of a folder of images in HDF5.")
    parser.add_argument("images", nargs="+", help="image folders or image files")
    parser.add_argument("--out", required=True, help="the HDF5 cache to create or extend")
    parser.add_argument("--weights", help="VGG-16 weight file (default: the ImageNet weights in the user "
                        "cache, fetched on first use)")
    parser.add_argument("--layer", default="block5_conv3", help="VGG-16 layer to cache (default block5_conv3)")
    parser.add_argument("--image-size", type=int, default=224, help="side of the square input (default 224)")
    parser.add_argument("--crop", action="store_true", help="keep the aspect ratio and centre-crop")
    parser.add_argument("--flip", action="store_true",
                        help="mirror each image left to right first (the features that training's --flip reads)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16",
                        help="storage precision (default float16)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    from .vgg16 import DEFAULT_PRECISION, PRECISIONS
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="how the GPU multiplies: float32, tf32 (tensor cores, 10 mantissa bits as the float16 "
                             f"cache keeps) or float16 (float32 accumulation); the CPU: float32 (default "
                             f"{DEFAULT_PRECISION})")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (quick runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_argument(parser)
    from .distributed import DistributedError, add_distributed_argument, get_world, stop_job
    add_distributed_argument(parser)
    args = parser.parse_args(argv)
    from .memory import keep_freed_memory
    keep_freed_memory()

    paths = []
    for item in args.images:
        paths.extend(list_images(item) if os.path.isdir(item) else [item])
    if args.limit is not None:
        paths = paths[:args.limit]
    if not paths:
        print("error: no images found", file=sys.stderr)
        return 2
    world = None
    try:
        from .vgg16 import VGG16
        world = get_world(args.distributed)
        device = resolve_device(args.device)
        if world.rank == 0:  # the weights are fetched once, not by every rank at the same time
            ensure_weights(args.weights)
        world.barrier()
        model = VGG16.load(ensure_weights(args.weights), device=device, widths=None, precision=args.precision)
        quiet = world.rank != 0
        summary = extract(paths, args.out, model, layer=args.layer, image_size=args.image_size,
                          crop=args.crop, flip=args.flip, dtype=args.dtype, batch_size=args.batch_size,
                          progress=not args.no_progress and not quiet,
                          log=(lambda *_: None) if quiet else print, world=world)
    except (WeightFileError, FetchError, CacheError, DeviceUnavailableError, DistributedError, ValueError) as exc:
        stop_job(world, f"error: {exc}", 2)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        stop_job(world, f"failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", 1)
        raise
    if world.rank != 0:
        return 0
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
