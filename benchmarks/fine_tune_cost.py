"""python benchmarks/fine_tune_cost.py [--rounds 3] [--batch 32] [--device cpu|gpu] [--json OUT]

What --fine-tune costs per training step, in one run: an lstm-attention step at the Flickr8k configuration
(E 256, H 512, A 256, V 2526, L 196 = 14 x 14, D 512, 16 words) on frozen features, against the same step
with VGG-16's block5_conv3 trained too (one 3x3 convolution, 512 -> 512 channels, forward and backward),
and with all of block 5 (three). The three settings alternate, round by round, in one process; the report
gives each one's median and its ratio to the frozen step.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

CFG = dict(E=256, H=512, A=256, V=2526, D=512, L=196, grid=[14, 14], dropout=0.5, feature_scale=0.14,
           **{"lambda": 1.0})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=32, help="captions per step (the Flickr8k runs: 64 over 2 ranks)")
    p.add_argument("--words", type=int, default=16)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    import numpy as np

    from scratchcap.backend import to_device
    from scratchcap.gradcheck_cases import caption_batch
    from scratchcap.models import model_for
    from scratchcap.models.fine_tune import BLOCKS, vgg_params
    from scratchcap.threads import count

    rng = np.random.default_rng(0)
    batch = caption_batch(rng, args.batch, args.words, CFG["L"], CFG["D"], CFG["V"], "float32", min_words=args.words // 2)
    batch["features"] = np.abs(batch["features"])  # a ReLU's output, as the cache holds
    batch = {k: to_device(v, args.device) for k, v in batch.items()}
    settings = {}
    for block in (None, "block5_conv3", "block5"):
        cfg = dict(CFG, fine_tune=block)
        model = model_for("lstm-attention", cfg)
        params = model.init_params(cfg, np.random.default_rng(1), "float32")
        if block:
            layers = {name: (rng.standard_normal((3, 3, 512, 512)).astype("float32") * 0.02,
                             np.zeros(512, "float32")) for name in BLOCKS[block][1]}
            params.update(vgg_params(layers, block))
        settings[block or "frozen"] = (model, to_device(params, args.device), cfg)
    times = {name: [] for name in settings}
    for name, (model, params, cfg) in settings.items():  # a warm-up step each
        model.loss_and_grads(params, batch, cfg, np.random.default_rng(5))
    for _ in range(args.rounds):
        for name, (model, params, cfg) in settings.items():
            t0 = time.perf_counter()
            _, grads, _ = model.loss_and_grads(params, batch, cfg, np.random.default_rng(5))
            sum(float(g.ravel()[0]) for g in grads.values())  # on a GPU: waits for the last kernels
            times[name].append(time.perf_counter() - t0)
    out = dict(device=args.device, threads=count(), batch=args.batch, words=args.words, rounds=args.rounds,
               config={k: v for k, v in CFG.items()}, seconds=times,
               median_s={k: statistics.median(v) for k, v in times.items()})
    base = out["median_s"]["frozen"]
    out["ratio_to_frozen"] = {k: v / base for k, v in out["median_s"].items()}
    for k, v in out["median_s"].items():
        print(f"{k:<14} {v * 1e3:9.1f} ms per step  x{out['ratio_to_frozen'][k]:.2f}")
    if args.json:
        from scratchcap.atomic import write_json
        write_json(args.json, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
