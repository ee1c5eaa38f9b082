"""python -m scratchcap.train: train a captioner on cached VGG-16 features.

With no arguments it does the whole job on the built-in `shapes` data: generate
the images, fetch the ImageNet VGG-16 weights if they are missing, cache the
features, train gru-attention, and print the validation metrics.

    python -m scratchcap.train
    python -m scratchcap.train --dataset flickr8k --data-dir ../shared/flickr8k --model lstm-attention
    python -m scratchcap.train --resume runs/shapes-gru-attention

A run leaves in runs/NAME: checkpoint-best.h5, checkpoint-last.h5 (atomic
writes), metrics.jsonl (one line per epoch), summary.json and loss.png.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback

import numpy as np

from . import thread_shards
from .atomic import atomic_path, write_json
from .backend import DeviceUnavailableError, add_device_argument, resolve_device, to_device, to_numpy
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DatasetError, Vocabulary, load_dataset, normalize
from .data.batches import Features, encode_records, iterate_batch_indices, make_batch
from .data.flip import FlipFeatures, epoch_examples, flipped_examples
from .decode import decode
from .distributed import (DistributedError, ShardRng, SingleProcess, add_distributed_argument, batch_totals,
                          get_world, make_allreducer, params_checksum, shard_bounds, stop_job)
from .models import MODELS, model_for
from .models.fine_tune import BLOCKS, OUTPUT_LAYER, PREFIX, check_block, feature_layer
from .optim import Adam, clip_grad_norm
from .paths import IMAGENET, data_root, features_dir
from .progress import progress_bar

DEFAULTS = dict(dataset="shapes", data_dir=None, model="gru-attention", embed=256, hidden=256, attention=128,
                epochs=None, batch_size=None, lr=None, lam=0.0, dropout=0.3, feature_norm=None, max_length=20,
                min_count=5, seed=0, image_size=None, layer=None, clip=5.0, lr_decay=0.5, decay_patience=2,
                patience=5, checkpoint_every=100, keep_epochs=False, bucket=False, val_images=None,
                shapes_images=(2000, 200, 200), dtype="float32", label_smoothing=0.0, objective="xe", scst_samples=5,
                scst_baseline="mean", fine_tune=None, encoder_lr=None, flip=False)

# What an --init-from checkpoint fixes: the decoder, and the data and features it was trained on.
ARCHITECTURE = ("model", "embed", "hidden", "attention", "dropout", "lam", "feature_norm", "max_length", "min_count",
                "image_size", "layer")
DATA = ("dataset", "data_dir", "features", "weights")


class TrainingError(RuntimeError):
    pass


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scratchcap.train",
                                description="Train an attention captioner on cached VGG-16 features.")
    d = DEFAULTS
    p.add_argument("--dataset", default=d["dataset"],
                   help="shapes (built in), flickr8k, karpathy:FILE, coco:FILE or custom:FILE")
    p.add_argument("--data-dir", help="data folder (shapes: where to generate it, default data/)")
    p.add_argument("--model", default=d["model"], choices=sorted(MODELS),
                   help="decoder to train")
    p.add_argument("--embed", type=int, default=d["embed"], help="embedding and encoder size E")
    p.add_argument("--hidden", type=int, default=d["hidden"], help="recurrent state size H")
    p.add_argument("--attention", type=int, default=d["attention"], help="attention size A")
    p.add_argument("--epochs", type=int, default=d["epochs"],
                   help="most epochs to train (default 15; 20 on shapes); with --resume, extends a run")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help="captions per batch (default 64); with --objective scst, images per batch (default 16)")
    p.add_argument("--lr", type=float, default=d["lr"],
                   help="Adam learning rate (default 4e-4; 1e-3 on shapes, whose small vocabulary trains fast; "
                        "5e-5 for scst)")
    p.add_argument("--objective", choices=["xe", "scst"], default=d["objective"],
                   help="xe: cross-entropy with teacher forcing; scst: self-critical training on CIDEr-D (needs "
                        "--init-from)")
    p.add_argument("--init-from", metavar="CKPT",
                   help="start from this checkpoint's parameters (its decoder, vocabulary and features), with a "
                        "fresh optimizer and run folder")
    p.add_argument("--scst-samples", type=int, default=d["scst_samples"], help="scst: captions sampled per image")
    p.add_argument("--scst-baseline", choices=["mean", "greedy"], default=d["scst_baseline"],
                   help="scst: mean reward of the image's other samples, or the greedy caption's reward")
    p.add_argument("--lambda", dest="lam", type=float, default=d["lam"],
                   help="weight of the doubly stochastic attention penalty")
    p.add_argument("--dropout", type=float, default=d["dropout"], help="dropout probability")
    p.add_argument("--label-smoothing", type=float, default=d["label_smoothing"], metavar="EPS",
                   help="cross-entropy against (1 - EPS) onehot + EPS / V in training (validation loss: plain)")
    p.add_argument("--feature-norm", choices=["rms", "none"], default=d["feature_norm"],
                   help="scale the features by 1/RMS over train images, or feed them raw (default rms; none on shapes)")
    p.add_argument("--max-length", type=int, default=d["max_length"], help="longest caption, in words")
    p.add_argument("--min-count", type=int, default=d["min_count"], help="vocabulary: least count of a word")
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of initialisation, shuffling and dropout")
    p.add_argument("--image-size", type=int, default=d["image_size"],
                   help="VGG-16 input side (default: 128 for shapes, 224 otherwise)")
    p.add_argument("--layer", default=d["layer"],
                   help="VGG-16 layer whose grid is attended (default: block4_pool on shapes, whose 8 x 8 cells at "
                        "128 px see about one object each; block5_conv3 elsewhere)")
    p.add_argument("--fine-tune", choices=sorted(BLOCKS), default=d["fine_tune"],
                   help="train VGG-16's last convolution (block5_conv3) or all of block 5 with the decoder; the "
                        "cache then holds the block's input (block5_conv2 or block4_pool)")
    p.add_argument("--encoder-lr", type=float, default=d["encoder_lr"], metavar="LR",
                   help="with --fine-tune: the VGG-16 layers' learning rate (default: a tenth of --lr)")
    p.add_argument("--clip", type=float, default=d["clip"], help="global gradient-norm clip (0: off)")
    p.add_argument("--lr-decay", type=float, default=d["lr_decay"], help="learning-rate factor on a CIDEr plateau")
    p.add_argument("--decay-patience", type=int, default=d["decay_patience"],
                   help="epochs without a better CIDEr before the learning rate decays")
    p.add_argument("--patience", type=int, default=d["patience"], help="epochs without a better CIDEr before stopping")
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"],
                   help="also save checkpoint-last.h5 every N batches")
    p.add_argument("--keep-epochs", action="store_true",
                   help="also keep checkpoint-epoch-N.h5 after every epoch (to average with scratchcap.release)")
    p.add_argument("--bucket", action="store_true", help="batch captions of similar length together")
    p.add_argument("--shapes-images", type=lambda s: tuple(int(x) for x in s.split(",")),
                   default=d["shapes_images"], metavar="TRAIN,DEV,TEST", help="size of the generated shapes splits")
    p.add_argument("--val-images", type=int, default=d["val_images"], help="decode only the first N dev images")
    p.add_argument("--features", help="feature cache (default: <user cache>/features/<data set>-<layer>-<size>px.h5)")
    p.add_argument("--flip", action="store_true",
                   help="each epoch, train on half the captions' images mirrored left to right, with \"left\" and "
                        "\"right\" exchanged (cross-entropy only; the mirrored features are cached beside --features)")
    p.add_argument("--flip-features", metavar="CACHE",
                   help="with --flip: the mirrored images' cache (default: --features' name with -flipped)")
    p.add_argument("--weights", default=IMAGENET,
                   help="VGG-16 weights (default: the ImageNet weights in the user cache, fetched on first use)")
    p.add_argument("--out", help="run folder (default runs/<data set>-<model>)")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder where it stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dtype", choices=["float32", "float64"], default=d["dtype"],
                   help="parameters and arithmetic (float64: for exact comparisons, e.g. of 1 and N ranks)")
    add_device_argument(p)
    add_distributed_argument(p)
    return p


def _log(*a):
    print(*a, flush=True)


def _quiet(*a):
    """The log of ranks other than 0: rank 0 speaks for the job."""


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except OSError:
        return None


# ---- data and features -------------------------------------------------------------------------

def prepare_data(cfg, log=_log):
    """Records of the train and dev splits; shapes is generated on first use."""
    if cfg["dataset"] == "shapes":
        from .data.shapes import ensure_shapes
        root = cfg["data_dir"] or data_root()
        if not os.path.exists(os.path.join(root, "annotations.json")):  # a root to generate into
            n_train, n_dev, n_test = cfg["shapes_images"]
            cfg["data_dir"] = ensure_shapes(root, log=log, progress=cfg["progress"], n_train=n_train, n_dev=n_dev,
                                            n_test=n_test, size=cfg["image_size"], seed=cfg["seed"])
    elif cfg["dataset"] == "flickr8k" and not cfg["data_dir"]:
        raise DatasetError("--data-dir is needed for flickr8k (the folder with Flickr8k.token.txt)")
    records = load_dataset(cfg["dataset"], cfg["data_dir"], log=log)
    splits = {s: [r for r in records if r.split == s] for s in ("train", "dev")}
    for s, recs in splits.items():
        if not recs:
            raise DatasetError(f"the {s} split of {cfg['dataset']} is empty")
    return splits


def feature_cache_path(cfg):
    if cfg.get("features"):
        return cfg["features"]
    if cfg["dataset"] == "shapes":  # the folder's name holds the generator's parameters
        name = os.path.basename(os.path.normpath(cfg["data_dir"]))
    else:  # the same data set name from two folders must not share a cache
        where = hashlib.sha256(os.path.abspath(str(cfg["data_dir"] or "")).encode()).hexdigest()[:8]
        name = cfg["dataset"].replace(":", "-").replace("/", "_") + "-" + where
    return os.path.join(features_dir(), f"{name}-{feature_layer(cfg)}-{cfg['image_size']}px.h5")


def flip_cache_path(cfg):
    """The mirrored images' cache: --flip-features, else --features' path with -flipped before .h5."""
    if cfg.get("flip_features"):
        return cfg["flip_features"]
    root, ext = os.path.splitext(feature_cache_path(cfg))
    return f"{root}-flipped{ext or '.h5'}"


def ensure_features(cfg, records, device, log=_log, flip=False):
    """Compute the features of every record that the cache lacks (``flip``: of the mirrored images, in
    flip_cache_path)."""
    from .feature_cache import FeatureCache

    path = flip_cache_path(cfg) if flip else feature_cache_path(cfg)
    have = set()
    if os.path.exists(path):
        with FeatureCache(path) as cache:
            have = set(cache.ids) | set(cache.failed)
    todo = [r.path for r in records if r.image_id not in have]
    if todo:
        from .features import extract
        from .vgg16 import VGG16
        from .weights.fetch import ensure_weights

        model = VGG16.load(ensure_weights(cfg["weights"], log=log), device=device, widths=None)
        log(f"caching {feature_layer(cfg)} features of {len(todo)}{' mirrored' if flip else ''} images in {path}")
        extract(todo, path, model, layer=feature_layer(cfg), image_size=cfg["image_size"], flip=flip,
                progress=cfg["progress"], log=log)
    with FeatureCache(path) as cache:
        failed = set(cache.failed)
        grid = [int(v) for v in cache.attrs.get("grid", [0, 0])]
        mirrored = str(cache.identity()["flip"]) == "1"
    if mirrored != flip:  # a complete cache is never checked by extract: a mirrored one must not pass for plain
        raise DatasetError(f"{path} holds {'un' if flip else ''}mirrored images; choose another "
                           f"{'--flip-features' if flip else '--features'} or delete it")
    return path, failed, grid


def feature_rms(features, ids, through=None, sample=256):
    """Root mean square of the features of (the first ``sample`` of) ids, in float64; ``through`` maps the
    cached features to the decoder's input first (a fine-tuned block)."""
    x = features.get(ids[:sample])
    if through is not None:
        x = np.concatenate([through(x[s:s + 32]) for s in range(0, len(x), 32)])
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if not rms > 0:
        raise DatasetError(f"the features of the first {min(sample, len(ids))} train images are all zero")
    return rms


# ---- one epoch of validation ----------------------------------------------------------------------

def validate(model, params, cfg, vocab, records, features, device, with_meteor=False, beam=1, world=None):
    """(metrics, hyps, results) of the dev records: teacher-forced loss and greedy (or beam) decoding.

    Under MPI each rank takes a contiguous share of the captions and of the images, rank 0 gathers
    them in order and scores once (BLEU and CIDEr cannot be averaged over ranks), and every rank
    gets the metrics; hyps and results are rank 0's only (None elsewhere).
    """
    from .metrics import score

    world = world or SingleProcess()
    dtype = np.dtype(cfg.get("dtype", "float32"))
    examples = encode_records(records, vocab, cfg["max_length"])
    lo, hi = shard_bounds(len(examples), world.rank, world.size)
    total, tokens = 0.0, 0
    for s in range(lo, hi, cfg["batch_size"]):
        batch = make_batch(examples, list(range(s, min(s + cfg["batch_size"], hi))), features)
        n_tok = int(batch["mask"].sum())
        batch["features"] = batch["features"].astype(dtype, copy=False)
        batch = {k: (to_device(v, device) if k != "image_ids" else v) for k, v in batch.items()}
        _, _, info = model.loss_and_grads(params, batch, cfg, None, train=False)
        total += info["cross_entropy"] * n_tok
        tokens += n_tok
    results = []
    lo, hi = shard_bounds(len(records), world.rank, world.size)
    for s in range(lo, hi, 64):
        chunk = records[s:min(s + 64, hi)]
        f = to_device(features.get([r.image_id for r in chunk]).astype(dtype, copy=False), device)
        results += decode(model, params, f, cfg, vocab, beam=beam, max_length=cfg["max_length"])
    parts = world.gather((total, tokens, results))
    if world.rank != 0:
        return world.bcast(None), None, None
    total, tokens = sum(p[0] for p in parts), sum(p[1] for p in parts)
    results = [r for p in parts for r in p[2]]
    hyps = {r.image_id: " ".join(res["words"]) for r, res in zip(records, results)}
    refs = {r.image_id: r.captions for r in records}
    metrics = {"val_loss": total / max(tokens, 1)}
    metrics.update(score(refs, hyps, with_meteor=with_meteor, notice=lambda *_: None))
    if cfg["dataset"] == "shapes":
        from .data.shapes import shapes_scores
        metrics.update(shapes_scores(records, results, cfg["grid"], cfg["image_size"]))
    return world.bcast(metrics), hyps, results


# ---- the run -----------------------------------------------------------------------------------------

def _given(argv):
    """The destinations of the options that ``argv`` sets, as opposed to those left at their defaults."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv or [])[0]))


def _config_from_args(args, init=None):
    """A fresh run's config: the options, presets for those left out, and what an --init-from checkpoint fixes."""
    cfg = {k: getattr(args, k) for k in DEFAULTS}
    cfg["features"], cfg["weights"] = args.features, args.weights
    cfg["flip_features"] = args.flip_features
    cfg["shapes_images"] = list(cfg["shapes_images"])
    if init is not None:
        base, given = init["config"], _given(getattr(args, "argv", None))
        for key in ARCHITECTURE:
            if key in given and cfg[key] != base.get(key):
                raise TrainingError(f"--{key.replace('_', '-')} {cfg[key]} differs from the --init-from checkpoint's "
                                    f"{base.get(key)}: the decoder comes from the checkpoint, leave it out")
            cfg[key] = base.get(key)
        for key in DATA:
            if key not in given:
                cfg[key] = base.get(key)
        cfg["feature_scale"] = base.get("feature_scale", 1.0)  # the scale its parameters were trained with
        if base.get("fine_tune") and cfg["fine_tune"] != base["fine_tune"]:
            if "fine_tune" in given:
                raise TrainingError(f"--fine-tune {cfg['fine_tune']} differs from the --init-from checkpoint's "
                                    f"{base['fine_tune']}, whose VGG-16 layers it carries")
            cfg["fine_tune"] = base["fine_tune"]
        cfg["init_from"] = os.path.abspath(args.init_from)
    elif cfg["objective"] == "scst":
        raise TrainingError("--objective scst improves a trained captioner: give --init-from CKPT, a cross-entropy "
                            "run's checkpoint-best.h5 or a released model")
    shapes = cfg["dataset"] == "shapes"
    scst = cfg["objective"] == "scst"
    # On shapes, block5_conv3's cells each see most of the 128 px image and its attention does not localize;
    # block4_pool's, with features at their RMS, do (docs/results.md, the grounding table). A fine-tuned
    # block ends at block5_conv3.
    presets = (("image_size", 128, 224), ("lr", 1e-3, 5e-5 if scst else 4e-4), ("epochs", 20, 15),
               ("feature_norm", "rms", "rms"),
               ("layer", "block5_conv3" if cfg["fine_tune"] else "block4_pool", "block5_conv3"))
    for key, on_shapes, otherwise in presets:
        if cfg[key] is None:
            cfg[key] = on_shapes if shapes and not (scst and key == "lr") else otherwise
    if cfg["batch_size"] is None:
        cfg["batch_size"] = 16 if scst else 64  # scst: images, each with --scst-samples captions
    if cfg["fine_tune"]:
        try:
            check_block(cfg["fine_tune"], cfg["layer"])
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        if cfg["encoder_lr"] is None:
            cfg["encoder_lr"] = cfg["lr"] / 10
    elif cfg["encoder_lr"] is not None:
        raise TrainingError("--encoder-lr is the learning rate of fine-tuned VGG-16 layers: give --fine-tune too")
    if cfg["flip_features"] and not cfg["flip"]:
        raise TrainingError("--flip-features names the mirrored images' cache: give --flip too")
    if cfg["flip"] and scst:
        raise TrainingError("--flip augments cross-entropy training; self-critical training samples its own "
                            "captions, whose 'left' and 'right' nothing would exchange")
    if scst and cfg["scst_samples"] < (2 if cfg["scst_baseline"] == "mean" else 1):
        raise TrainingError("--scst-samples must be at least 2 with the mean baseline (1 with --scst-baseline greedy)")
    return cfg


def _run_dir(cfg, out):
    if out:
        return out
    base = os.path.join("runs", f"{cfg['dataset'].replace(':', '-').replace('/', '_')}-{cfg['model']}")
    name, k = base, 2
    while os.path.exists(name):
        name, k = f"{base}-{k}", k + 1
    return name


def _open_run(args):
    """(cfg, run_dir, resume, init): a fresh run's config and folder, or those of the run that --resume continues;
    init is the --init-from checkpoint of a fresh run (None otherwise)."""
    init = None
    if args.resume:
        resume = load_checkpoint(os.path.join(args.resume, "checkpoint-last.h5"))
        cfg = resume["config"]
        if args.epochs is not None:  # a finished run can be extended; nothing else may change
            cfg["epochs"] = args.epochs
        cfg["keep_epochs"] = cfg.get("keep_epochs") or args.keep_epochs
        run_dir = args.resume
        _read_history(os.path.join(run_dir, "metrics.jsonl"))  # unreadable: say so now, not after an epoch
    else:
        init = load_checkpoint(args.init_from) if getattr(args, "init_from", None) else None
        resume, cfg = None, _config_from_args(args, init)
        run_dir = _run_dir(cfg, args.out)
        held = [n for n in ("checkpoint-last.h5", "checkpoint-best.h5", "metrics.jsonl")
                if os.path.exists(os.path.join(run_dir, n))]
        if held:
            raise TrainingError(f"{run_dir} already holds a run ({', '.join(held)}); continue it with --resume "
                                f"{run_dir}, or give another --out")
    cfg["progress"] = not args.no_progress
    return cfg, run_dir, resume, init


def _mirrored_features(cfg, records, device, log):
    """--flip: the train images' mirrored features, from a cache that says it holds them and otherwise agrees
    with the plain one (weights, layer, size, preprocessing, dtype)."""
    from .feature_cache import FeatureCache

    path, failed, _ = ensure_features(cfg, records, device, log, flip=True)
    cfg["flip_features"] = path
    with FeatureCache(path) as mirrored, FeatureCache(cfg["features"]) as original:
        got, plain = mirrored.identity(), original.identity()
    diff = [f"{k}: {got[k]} vs {plain[k]}" for k in plain if k != "flip" and str(got[k]) != str(plain[k])]
    if diff:  # ensure_features has checked each cache's flip
        raise DatasetError(f"{path} is not the mirror of {cfg['features']} ({'; '.join(diff)}); choose another "
                           "--flip-features or delete it")
    return Features(path, [r.image_id for r in records if r.image_id not in failed]), failed


def _load_data(cfg, resume, device, log):
    """(splits, vocab, features, train_features): the records, the vocabulary (a resumed or --init-from
    checkpoint's must match), the feature cache, and what training reads (with --flip, the plain and the
    mirrored features; otherwise the same cache).

    Fills in the config entries that follow from the data: the cache path, the grid, L, D, V and feature_scale.
    """
    splits = prepare_data(cfg, log)
    vocab = Vocabulary.build([normalize(c, cfg["max_length"]) for r in splits["train"] for c in r.captions],
                             min_count=cfg["min_count"])
    if resume is not None:
        saved = Vocabulary.from_json(resume["vocabulary"])
        if saved != vocab:
            raise CheckpointError(
                f"the checkpoint's vocabulary ({len(saved)} words, {saved.fingerprint()[:12]}) differs from the one "
                f"built from {cfg['dataset']} ({len(vocab)} words, {vocab.fingerprint()[:12]}): different data?")
    cache_path, failed, grid = ensure_features(cfg, splits["train"] + splits["dev"], device, log)
    cfg["features"], cfg["grid"] = cache_path, grid
    for s in splits:
        splits[s] = [r for r in splits[s] if r.image_id not in failed]
    if cfg.get("val_images"):
        splits["dev"] = splits["dev"][:cfg["val_images"]]
    features = Features(cache_path, [r.image_id for s in splits.values() for r in s])
    cfg["L"], cfg["D"] = features.region_shape
    if cfg.get("fine_tune"):  # the decoder reads the block's output, as wide as its last layer
        cfg["D"] = int(_imagenet_block(cfg)[f"{PREFIX}{OUTPUT_LAYER}/bias"].shape[0])
    cfg.update(E=cfg["embed"], H=cfg["hidden"], A=cfg["attention"], V=len(vocab))
    cfg["lambda"] = cfg["lam"]
    if "feature_scale" not in cfg:  # a resumed run keeps its own
        train_ids = [r.image_id for r in splits["train"]]
        cfg["feature_scale"] = 1.0 / feature_rms(features, train_ids, _frozen_block(cfg)) \
            if cfg.get("feature_norm") == "rms" else 1.0
    train_features = features
    if cfg.get("flip"):
        mirrored, failed = _mirrored_features(cfg, splits["train"], device, log)
        splits["train"] = [r for r in splits["train"] if r.image_id not in failed]  # unreadable since the plain cache
        train_features = FlipFeatures(features, mirrored)
    return splits, vocab, features, train_features


@functools.lru_cache(maxsize=2)
def _imagenet_layers(weights, block):
    """{layer: (kernel, bias)} of the layers that --fine-tune trains, read (and checksummed) once per process."""
    from .weights import load_weights
    from .weights.fetch import ensure_weights

    layers, _ = load_weights(ensure_weights(weights, log=_quiet), widths=None)
    return {name: layers[name] for name in BLOCKS[block][1]}


def _imagenet_block(cfg):
    """The ImageNet weights of the layers that --fine-tune trains, named as parameters (fresh copies: the
    optimizer updates them in place)."""
    from .models.fine_tune import vgg_params

    return vgg_params(_imagenet_layers(cfg["weights"], cfg["fine_tune"]), cfg["fine_tune"], cfg.get("dtype", "float32"))


def _frozen_block(cfg):
    """What the decoder sees at the start of a fine-tuned run, from the cache's (N, L, C): the ImageNet
    block's output (its RMS sets feature_scale); None without --fine-tune."""
    if not cfg.get("fine_tune"):
        return None
    model, p = model_for(cfg["model"], cfg), _imagenet_block(cfg)
    return lambda x: to_numpy(model.features(p, x.astype(cfg.get("dtype", "float32")), cfg)[0])


def _starting_state(model, cfg, resume, device, init_from=None):
    """(params, optimizer, rng, progress): fresh from the seed (or the --init-from checkpoint's parameters),
    or as the resumed checkpoint left them."""
    dtype = cfg.get("dtype", "float32")
    init = model.init_params(cfg, np.random.default_rng(cfg["seed"]), dtype)
    lr_scale = None
    if cfg.get("fine_tune"):
        block = _imagenet_block(cfg)
        init.update(block)
        lr_scale = {PREFIX: cfg["encoder_lr"] / cfg["lr"]}
        if resume is None and init_from is not None and not set(block) & set(init_from["params"]):
            init_from = dict(init_from, params=dict(init_from["params"], **block))  # a frozen model, fine-tuned now
    optimizer = Adam(lr=cfg["lr"], lr_scale=lr_scale)
    rng = np.random.default_rng([cfg["seed"], 1])
    progress = dict(epoch=0, batch=0, step=0, best=None, bad_epochs=0)
    source = resume if resume is not None else init_from
    if source is not None:
        got = {k: v.shape for k, v in source["params"].items()}
        want = {k: v.shape for k, v in init.items()}
        if got != want:
            raise CheckpointError(f"the checkpoint's parameters do not fit {cfg['model']}: "
                                  f"{sorted(set(got) ^ set(want)) or 'shapes differ'}")
        init = {k: v.astype(dtype) for k, v in source["params"].items()}  # a released model is float16
    if resume is not None:
        progress.update(resume["progress"])
        rng.bit_generator.state = resume["rng_state"]
    params = to_device(init, device)
    if resume is not None and resume["optimizer"] is not None:
        optimizer.load_state_dict(resume["optimizer"], params)
    return params, optimizer, rng, progress


def _share_starting_state(world, params, optimizer, rng, progress, device):
    """Rank 0's parameters, optimizer state, generator and position, on every rank."""
    if world.size == 1:
        return params, progress
    state = world.bcast(dict(params={k: to_numpy(v) for k, v in params.items()},
                             optimizer={k: (to_numpy(v) if hasattr(v, "shape") else v)
                                        for k, v in optimizer.state_dict().items()},
                             rng=rng.bit_generator.state, progress=progress) if world.rank == 0 else None)
    params = to_device(state["params"], device)
    if len(state["optimizer"]) > 2:  # moments exist (a resumed run)
        optimizer.load_state_dict(state["optimizer"], params)
    optimizer.t, optimizer.lr = int(state["optimizer"]["step"]), float(state["optimizer"]["lr"])
    rng.bit_generator.state = state["rng"]
    return params, state["progress"]


def train_step(model, params, examples, indices, features, cfg, rng, world, allreduce, device):
    """(loss, grads) of the whole batch ``indices``: this rank's rows, then the sum over ranks.

    The loss and gradients are divided by the whole batch's tokens and captions, so the sum is one
    process's. A rank whose share is empty (a batch smaller than the world) still runs the model on a
    row, and drops what it computed, so that every rank draws the same dropout keys and joins the sum.
    """
    lo, hi = shard_bounds(len(indices), world.rank, world.size)
    mine = indices[lo:hi] or indices[:1]
    batch = make_batch(examples, mine, features, length=max(len(examples[k][1]) for k in indices))
    batch["features"] = batch["features"].astype(cfg.get("dtype", "float32"), copy=False)
    batch = {k: (to_device(v, device) if k != "image_ids" else v) for k, v in batch.items()}
    batch.update(batch_totals(examples, indices))
    loss, grads, _ = thread_shards.loss_and_grads(model, params, batch, cfg, ShardRng(rng, lo), train=True)
    if hi == lo:
        loss, grads = 0.0, {k: v * 0 for k, v in grads.items()}
    grads, (loss,) = allreduce(grads, float(loss))
    return loss, grads


def scst_step(model, params, images, indices, features, cfg, rng, world, allreduce, device, vocab, reward):
    """(loss, grads, stats) of the images ``indices`` of ``images``: self-critical, this rank's images, then the
    sum over ranks.

    One key from the run's generator seeds the whole batch's samples; rank r draws the rows of its images
    (scratchcap.scst.sampling), and divides by the whole batch's samples, so the sum is one process's.
    stats: the batch's reward and advantage sums and sample count, and this rank's seconds in the reward.
    """
    from .scst import scst_loss_and_grads

    k = cfg["scst_samples"]
    lo, hi = shard_bounds(len(indices), world.rank, world.size)
    mine = indices[lo:hi] or indices[:1]
    ids = [images[i][0] for i in mine]
    f = to_device(features.get(ids).astype(cfg.get("dtype", "float32"), copy=False), device)
    key = int(rng.integers(0, 2**64, dtype=np.uint64))
    loss, grads, stats = scst_loss_and_grads(model, params, f, ids, cfg, vocab, reward, key, k=k,
                                             baseline=cfg["scst_baseline"], max_length=cfg["max_length"],
                                             row_offset=lo * k, samples_total=len(indices) * k)
    sums = (loss, stats["reward_sum"], stats["advantage_sum"], stats["samples"])
    if hi == lo:
        sums, grads = (0.0, 0.0, 0.0, 0), {name: g * 0 for name, g in grads.items()}
    grads, (loss, reward_sum, advantage_sum, samples) = allreduce(grads, *sums)
    return loss, grads, dict(reward_sum=reward_sum, advantage_sum=advantage_sum, samples=int(round(samples)),
                             reward_seconds=stats["reward_seconds"])


def train(args, log=_log, world=None):
    """One run: set up (or resume), then epochs of batches, each epoch validated and checkpointed, then the dev
    scores of the best checkpoint. Returns (run_dir, summary).

    Under mpiexec with several ranks it trains data-parallel (scratchcap.distributed): every rank walks the same
    batches and takes its rows, the gradients are summed in one allreduce before the optimizer, and only rank 0
    writes files. The result does not depend on the number of ranks.
    """
    start_time = time.time()
    world = world or get_world(getattr(args, "distributed", "auto"))
    root = world.rank == 0
    if not root:
        log = _quiet
    commit = _commit()  # the code that this run starts with
    device = resolve_device(args.device)
    if device == "gpu" and world.size > 1:
        from .distributed.world import use_local_gpu
        log(f"rank {world.rank} on GPU {use_local_gpu(world)}")
    cfg, run_dir, resume, init_from = world.bcast(_open_run(args) if root else None)
    model = model_for(cfg["model"], cfg)
    if not root:
        world.barrier()  # rank 0 generates the data and caches the features first; the others wait
    splits, vocab, features, train_features = _load_data(cfg, resume if resume is not None else init_from, device,
                                                         log)
    if root:
        world.barrier()
    params, optimizer, rng, progress = _starting_state(model, cfg, resume, device, init_from)
    params, progress = _share_starting_state(world, params, optimizer, rng, progress, device)
    allreduce = make_allreducer(world, device, log)
    if root:
        os.makedirs(run_dir, exist_ok=True)
    ckpt = dict(model=cfg["model"], config={k: v for k, v in cfg.items() if k != "progress"}, vocab=vocab)

    def save(name, where):
        if root:
            save_checkpoint(os.path.join(run_dir, name), params=params, optimizer=optimizer, progress=where,
                            rng=rng, **ckpt)

    scst = cfg.get("objective", "xe") == "scst"
    if scst:  # an example is an image: its samples are drawn in the step
        from .scst import CiderReward
        examples, reward = [(r.image_id, None) for r in splits["train"]], CiderReward(splits["train"])
        log(f"self-critical training from {cfg['init_from']}: {cfg['scst_samples']} samples per image, "
            f"baseline {cfg['scst_baseline']}, reward CIDEr-D on the train references")
    else:
        examples = encode_records(splits["train"], vocab, cfg["max_length"])
    twins = flipped_examples(examples, vocab) if cfg.get("flip") else None
    if twins:
        log(f"--flip: each epoch about half the captions come from mirrored images ({cfg['flip_features']})")
    n_batches = math.ceil(len(examples) / cfg["batch_size"])
    per_epoch = f"{len(examples)} images x {cfg['scst_samples']} samples" if scst else f"{len(examples)} captions"
    log(f"{cfg['model']} on {cfg['dataset']}: {len(splits['train'])} train / {len(splits['dev'])} dev images, "
        f"{per_epoch}, vocabulary {len(vocab)}, regions {cfg['L']}x{cfg['D']}, device {device}; run folder {run_dir}")
    if world.size > 1:
        log(f"data-parallel on {world.size} ranks ({world.name}); each takes its rows of every batch of "
            f"{cfg['batch_size']}")
    history_path = os.path.join(run_dir, "metrics.jsonl")
    batch_losses = []
    stopped_early = False
    for epoch in range(progress["epoch"], cfg["epochs"]):
        bar = progress_bar(n_batches, f"epoch {epoch + 1}/{cfg['epochs']}", "batch", enabled=cfg["progress"] and root,
                           initial=progress["batch"])
        t0, tokens, epoch_loss, seen = time.perf_counter(), 0, 0.0, 0
        sampled = dict(reward_sum=0.0, advantage_sum=0.0, samples=0, reward_seconds=0.0)
        this_epoch = epoch_examples(examples, twins, cfg["seed"], epoch) if twins else examples
        try:
            for b, indices in iterate_batch_indices(this_epoch, cfg["batch_size"], cfg["seed"], epoch,
                                                    cfg["bucket"] and not scst, start=progress["batch"]):
                if scst:
                    loss, grads, stats = scst_step(model, params, examples, indices, features, cfg, rng, world,
                                                   allreduce, device, vocab, reward)
                    for key in sampled:
                        sampled[key] += stats[key]
                else:
                    loss, grads = train_step(model, params, this_epoch, indices, train_features, cfg, rng, world,
                                             allreduce, device)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {loss} at epoch {epoch + 1}, batch {b + 1} (step {progress['step'] + 1}); "
                        f"checkpoint-last.h5 holds the last good state. Try a lower --lr (now {optimizer.lr:g}) "
                        "or a smaller --clip.")
                grads, _ = clip_grad_norm(grads, cfg["clip"])  # the global norm: after the sum over ranks
                optimizer.step(params, grads)
                progress.update(batch=b + 1, step=progress["step"] + 1)
                seen += 1
                epoch_loss += loss
                batch_losses.append((progress["step"], loss))
                bar.update(1)
                if scst:
                    n = max(sampled["samples"], 1)
                    bar.set_postfix(reward=f"{sampled['reward_sum'] / n:.3f}", adv=f"{sampled['advantage_sum'] / n:+.3f}",
                                    samples_s=f"{sampled['samples'] / (time.perf_counter() - t0):.0f}")
                else:
                    tokens += batch_totals(this_epoch, indices)["tokens_total"]
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
                if cfg["checkpoint_every"] and progress["batch"] % cfg["checkpoint_every"] == 0:
                    save("checkpoint-last.h5", dict(progress, epoch=epoch))
        except KeyboardInterrupt:
            save("checkpoint-last.h5", dict(progress, epoch=epoch))
            bar.close()
            log(f"interrupted: saved {run_dir}/checkpoint-last.h5 at epoch {epoch + 1}, batch {progress['batch']}; "
                f"continue with: python -m scratchcap.train --resume {run_dir}")
            raise
        bar.close()
        train_seconds = time.perf_counter() - t0
        if world.size > 1:
            sums = world.allgather(params_checksum(params))
            if len(set(sums)) != 1:
                raise TrainingError(f"after epoch {epoch + 1} the ranks' parameters differ (checksums {sums})")
        metrics, _, _ = validate(model, params, cfg, vocab, splits["dev"], features, device, world=world)
        metrics.update(epoch=epoch + 1, train_loss=epoch_loss / max(seen, 1), lr=optimizer.lr,
                       seconds=round(time.perf_counter() - t0, 1))
        if scst and sampled["samples"]:  # this session's batches of the epoch (a resumed epoch counts its rest)
            n = sampled["samples"]
            metrics.update(reward=sampled["reward_sum"] / n, advantage=sampled["advantage_sum"] / n,
                           samples_per_s=n / train_seconds, reward_share=sampled["reward_seconds"] / train_seconds)
        log(f"epoch {epoch + 1}: train loss {metrics['train_loss']:.3f}, val loss {metrics['val_loss']:.3f}, "
            f"BLEU-4 {metrics['Bleu_4']:.3f}, CIDEr {metrics['CIDEr']:.3f}"
            + (f", exact {metrics['exact']:.3f}" if "exact" in metrics else "")
            + (f", mean reward {metrics['reward']:.3f} ({metrics['samples_per_s']:.0f} samples/s, reward "
               f"{100 * metrics['reward_share']:.1f}% of the time)" if "reward" in metrics else ""))
        if root:
            _record_epoch(history_path, metrics)
        progress.update(epoch=epoch + 1, batch=0)
        if progress["best"] is None or metrics["CIDEr"] > progress["best"]:
            progress.update(best=metrics["CIDEr"], bad_epochs=0)
            save("checkpoint-best.h5", progress)
        else:
            progress["bad_epochs"] += 1
            if progress["bad_epochs"] % cfg.get("decay_patience", 1) == 0:
                optimizer.lr *= cfg["lr_decay"]
            log(f"no better CIDEr for {progress['bad_epochs']} epoch(s); learning rate {optimizer.lr:g}")
        save("checkpoint-last.h5", progress)
        if cfg.get("keep_epochs"):
            save(f"checkpoint-epoch-{epoch + 1}.h5", progress)
        if progress["bad_epochs"] >= cfg["patience"]:
            stopped_early = True
            log(f"stopping early: CIDEr has not improved for {cfg['patience']} epochs")
            break

    world.barrier()  # checkpoint-best.h5 is whole before anyone reads it
    best = load_checkpoint(os.path.join(run_dir, "checkpoint-best.h5"))
    best_params = to_device({k: v.astype(cfg.get("dtype", "float32")) for k, v in best["params"].items()}, device)
    final, hyps, _ = validate(model, best_params, cfg, vocab, splits["dev"], features, device, with_meteor=True,
                              world=world)
    summary = dict(final, model=cfg["model"], dataset=cfg["dataset"], best_epoch=best["progress"]["epoch"],
                   epochs_run=progress["epoch"], stopped_early=stopped_early,
                   wall_seconds=round(time.time() - start_time, 1),
                   command=shlex.join(["python", "-m", "scratchcap.train", *getattr(args, "argv", sys.argv[1:])]),
                   commit=commit, device=device, ranks=world.size)
    if root:
        write_json(os.path.join(run_dir, "summary.json"), summary, indent=1)
        write_json(os.path.join(run_dir, "captions-dev.json"),
                   [{"image_id": k, "caption": v} for k, v in hyps.items()], indent=0)
        _plot(run_dir, history_path, batch_losses)
    train_features.close()  # the plain cache, and with --flip the mirrored one too
    world.barrier()
    return run_dir, summary


def _read_history(path):
    """The rows of metrics.jsonl, one per epoch; none where the run has not finished an epoch yet."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except ValueError as exc:
                row = exc
            if not (isinstance(row, dict) and isinstance(row.get("epoch"), int)):
                raise TrainingError(f"{path}, line {k}, is not a row of epoch metrics ({row!r:.60}); mend or "
                                    "delete that line (the checkpoints do not need it), then resume")
            rows.append(row)
    return rows


def _record_epoch(path, row):
    """Write metrics.jsonl again, atomically, as the rows of the epochs before ``row``'s, then ``row``.

    Rewriting instead of appending: a run killed mid-write leaves the old file whole, and a resumed run that
    redoes an epoch (killed after this write but before its checkpoint) replaces that epoch's row, not adds one.
    """
    rows = [r for r in _read_history(path) if r["epoch"] < row["epoch"]] + [row]
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _plot(run_dir, history_path, batch_losses):
    """loss.png: training and validation loss, and validation BLEU-4, by epoch (the paper's Fig. 7)."""
    from .plots import line_plot, save_png

    rows = _read_history(history_path)
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    losses = {"train loss (epoch mean)": (epochs, [r["train_loss"] for r in rows]),
              "validation loss": (epochs, [r["val_loss"] for r in rows])}
    if batch_losses:  # this session's batches, placed on the epoch axis
        steps, values = np.asarray(batch_losses, dtype=float).T
        k = max(1, len(values) // 200)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        per_epoch = max(steps) / max(epochs)
        losses["train loss (batches, smoothed)"] = (steps[k - 1:] / per_epoch, smooth)
    bleu = {"validation BLEU-4 (greedy)": (epochs, [r["Bleu_4"] for r in rows])}
    save_png(os.path.join(run_dir, "loss.png"),
             line_plot(losses, "loss", "epoch", "cross-entropy"),
             line_plot(bleu, "validation BLEU-4", "epoch", "BLEU-4"))


def _stop_on_sigterm():
    """Make SIGTERM (kill, a job scheduler) stop a run the way Ctrl-C does: saved, and resumable."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the options as given, for summary.json
    from .memory import keep_freed_memory
    keep_freed_memory()
    previous = _stop_on_sigterm()
    world = None
    try:
        world = get_world(args.distributed)
        run_dir, summary = train(args, world=world)
    except (DatasetError, CheckpointError, TrainingError, DeviceUnavailableError, DistributedError, ValueError,
            KeyError, FileNotFoundError) as exc:
        stop_job(world, f"error: {exc}", 2)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stop_job(world, "interrupted; checkpoint-last.h5 holds the last saved state", 130)
        return 130
    except Exception as exc:
        stop_job(world, f"failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}", 1)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if world.rank != 0:
        return 0
    keys = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "exact", "grounding",
            "grounding_chance"]
    print("validation (best checkpoint, greedy): " + ", ".join(f"{k} {summary[k]:.3f}" for k in keys if summary.get(k) is not None))
    print(f"wrote {run_dir}/: checkpoint-best.h5, checkpoint-last.h5, metrics.jsonl, summary.json, loss.png, "
          f"captions-dev.json ({summary['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
