"""python -m scratchcap.evaluate: score checkpoints on a split, the way the captioning literature does.

    python -m scratchcap.evaluate --checkpoint runs/X/checkpoint-best.h5 --dataset flickr8k \\
        --data-dir ../shared/flickr8k --split dev --beam 3 --json scores.json --results captions.json
    python -m scratchcap.evaluate --compare runs/A/checkpoint-best.h5 runs/B/checkpoint-best.h5 ...

Features come from the checkpoint's feature cache when it holds the images (and
matches the checkpoint's layer and image size); otherwise they are computed with
VGG-16 on the fly. Generated captions are written in the COCO results format.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .atomic import write_json
from .attention_stats import attention_stats
from .backend import DeviceUnavailableError, add_device_argument, resolve_device, to_device, to_numpy
from .checkpoint import CheckpointError, load_checkpoint
from .data import DatasetError, Vocabulary, load_dataset
from .decode import add_decoding_arguments, decode
from .ensemble import add_ensemble_argument, decoder
from .feature_cache import CacheError, FeatureCache
from .metrics import score
from .models.fine_tune import feature_layer
from .progress import progress_bar
from .weights import WeightFileError

COLUMNS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def _features_for(ckpt, records, device, log, progress=False):
    """(N, L, D) float32 for records, from the cache when it can serve them, else from VGG-16."""
    cfg = ckpt["config"]
    path = cfg.get("features")
    if path and os.path.exists(path):
        try:
            with FeatureCache(path) as cache:
                same = (cache.attrs.get("layer") == feature_layer(cfg) and int(cache.attrs.get("image_size")) ==
                        int(cfg["image_size"]))
                if same and all(r.image_id in cache for r in records):
                    return np.concatenate([cache.read([r.image_id for r in records[s:s + 256]])
                                           for s in range(0, len(records), 256)])
        except CacheError:
            pass
    log(f"computing {feature_layer(cfg)} features of {len(records)} images with VGG-16")
    from .captioner import Captioner
    from .images import load_image

    cap = Captioner(ckpt, device=device, log=log)
    chunks = []
    bar = progress_bar(len(records), f"VGG-16 {feature_layer(cfg)}", "img", enabled=progress)
    for s in range(0, len(records), 16):
        images = [load_image(r.path) for r in records[s:s + 16]]
        chunks.append(to_numpy(cap.features(images)))
        bar.update(len(images))
    bar.close()
    return np.concatenate(chunks)


def flat_attention_stats(stats):
    """attention_stats as table columns: noun_entropy, noun_peak, noun_beta, function_entropy, ..."""
    short = {"nouns": "noun", "function words": "function"}
    return {f"{short[g]}_{k}": row[k] for g, row in stats.items() for k in ("entropy", "peak", "beta") if k in row}


def repeated_bigram_share(hyps: dict) -> float:
    """The share of captions in which some word pair occurs twice ("a black dog and a black dog")."""
    def repeats(words):
        pairs = list(zip(words, words[1:]))
        return len(pairs) != len(set(pairs))
    return sum(repeats(h.split()) for h in hyps.values()) / max(len(hyps), 1)


def evaluate(ckpt_path, dataset, data_dir, split="dev", beam=3, device="cpu", limit=None, log=print, progress=False,
             allow_unk=False, length_penalty_alpha=0.0, block_trigrams=False, combine="prob",
             block_bad_endings=False):
    """(scores, hyps) of a checkpoint, or of several decoded as an ensemble (a list of paths)."""
    paths = [str(p) for p in ckpt_path] if isinstance(ckpt_path, (list, tuple)) else [str(ckpt_path)]
    ckpts = [load_checkpoint(p) for p in paths]
    model, params = decoder(ckpts, device, combine, names=paths)  # several: checked for one vocabulary first
    ckpt = ckpts[0]
    cfg = ckpt["config"]
    vocab = Vocabulary.from_json(ckpt["vocabulary"])
    dataset = dataset or cfg["dataset"]
    data_dir = data_dir or cfg.get("data_dir")
    records = [r for r in load_dataset(dataset, data_dir, log=log) if r.split == split]
    if limit:
        records = records[:limit]
    if not records:
        raise DatasetError(f"the {split} split of {dataset} has no usable images")
    feats = _features_for(ckpt, records, device, log, progress)
    results = []
    bar = progress_bar(len(records), f"decoding, beam {beam}", "img", enabled=progress)
    for s in range(0, len(records), 64):
        results += decode(model, params, to_device(feats[s:s + 64], device), cfg, vocab, beam=beam,
                          max_length=cfg["max_length"], allow_unk=allow_unk,
                          length_penalty_alpha=length_penalty_alpha, block_trigrams=block_trigrams,
                          block_bad_endings=block_bad_endings)
        bar.update(min(64, len(records) - s))
    bar.close()
    hyps = {r.image_id: " ".join(res["words"]) for r, res in zip(records, results)}
    scores = score({r.image_id: r.captions for r in records}, hyps)
    scores["repeated_pairs"] = repeated_bigram_share(hyps)
    scores.update(flat_attention_stats(attention_stats(results)))
    if dataset == "shapes":
        from .data.shapes import shapes_scores
        scores.update(shapes_scores(records, results, cfg["grid"], cfg["image_size"]))
    return scores, hyps


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m scratchcap.evaluate", description="Score checkpoints on a split.")
    p.add_argument("--checkpoint", nargs="+", metavar="CKPT",
                   help="checkpoint to score, or several of one vocabulary to score as an ensemble (default: the "
                        "released Flickr8k model)")
    p.add_argument("--compare", nargs="+", metavar="CKPT", help="score several checkpoints side by side")
    p.add_argument("--dataset", help="data set (default: the checkpoint's)")
    p.add_argument("--data-dir", help="data folder (default: the checkpoint's)")
    p.add_argument("--split", default="dev", choices=["train", "dev", "test"], help="split to score")
    p.add_argument("--beam", type=int, default=3, help="beam size (1: greedy)")
    p.add_argument("--limit", type=int, help="only the first N images of the split")
    p.add_argument("--json", help="write the scores here")
    p.add_argument("--results", help="write the captions here, COCO results format")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--allow-unk", action="store_true", help="let decoding emit <unk> (for analysis)")
    add_decoding_arguments(p)
    add_ensemble_argument(p)
    add_device_argument(p)
    args = p.parse_args(argv)
    from .memory import keep_freed_memory
    keep_freed_memory()  # decoding's pool threads allocate too (scratchcap.memory)
    try:
        device = resolve_device(args.device)
        if args.compare:
            runs = {p: p for p in args.compare}
        elif args.checkpoint:
            runs = {" + ".join(args.checkpoint): args.checkpoint}
        else:
            from .captioner import released_checkpoint
            runs = {released_checkpoint(): released_checkpoint()}
        paths = list(runs)
        table, captions = {}, {}
        for path, ckpts in runs.items():
            table[path], captions[path] = evaluate(ckpts, args.dataset, args.data_dir, args.split, args.beam, device,
                                                   args.limit, log=lambda m: print(m, file=sys.stderr),
                                                   progress=not args.no_progress, allow_unk=args.allow_unk,
                                                   length_penalty_alpha=args.length_penalty,
                                                   block_trigrams=args.block_trigrams,
                                                   block_bad_endings=args.block_bad_endings,
                                                   combine=args.ensemble_average)
    except (CheckpointError, DatasetError, WeightFileError, DeviceUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    extra = sorted({k for s in table.values() for k in s} - set(COLUMNS))
    cols = [c for c in COLUMNS if any(c in s for s in table.values())] + extra
    width = max(len(p) for p in table) + 2
    w = {c: max(9, len(c)) + 1 for c in cols}
    print(f"{'checkpoint':<{width}}" + "".join(f"{c:>{w[c]}}" for c in cols))
    for path, s in table.items():
        print(f"{path:<{width}}" + "".join(f"{s[c]:>{w[c]}.4f}" if s.get(c) is not None else f"{'-':>{w[c]}}"
                                           for c in cols))
    if args.json:
        write_json(args.json, table if len(table) > 1 else next(iter(table.values())), indent=1)
    if args.results:
        items = captions[paths[0]]
        write_json(args.results, [{"image_id": k, "caption": v} for k, v in items.items()], indent=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
