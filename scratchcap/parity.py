"""NumPy against CuPy on identical inputs: the proof that the GPU path computes what the CPU path does.

    python -m scratchcap.parity [--weights FILE] [--images DIR]

It compares, in float32 (rtol 1e-4) and float64 (rtol 1e-10):
- every layer of scratchcap.ops, forward and backward, on the gradient-check cases
  (on CuPy the GRU, LSTM and attention layers run their fused kernels);
- each fused kernel of ops/fused.py against its body run by NumPy;
- dropout's uniforms (scratchcap.counter_random), bit for bit;
- one training step of each decoder (loss and every gradient) and one Adam step;
- beam-3 decoding (the same words);
- VGG-16 block5_conv3 features of images: the photos in --images (default: the
  Flickr8k folder next to the checkout, where present), else generated ones.

The error of an array is max|a - b| / max|a|, so that tiny entries of a large
gradient do not dominate. The test suite runs the same checks where CuPy and a
GPU are present (tests/test_gpu_parity.py); this command needs no pytest.
Exit status: 0 all within tolerance, 1 some are not, 2 no usable GPU.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy

from .threads import add_threads_argument

RTOL = {"float32": 1e-4, "float64": 1e-10}
# The feature cache stores float16, whose resolution relative to the largest feature is 2^-10 (11 bits kept):
# a faster GPU precision (tf32, float16) passes when its features stay within 4 such steps of float32's.
PRECISION_RTOL = 4 * 2.0 ** -10
FLICKR8K_IMAGES = os.path.join("..", "shared", "flickr8k", "originals")  # real photos of several sizes


def relative_error(a, b) -> float:
    """max|a - b| / max|a| (0 for two all-zero arrays); either may be NumPy or CuPy."""
    from .backend import to_numpy

    a, b = (numpy.asarray(to_numpy(x), dtype=numpy.float64) for x in (a, b))
    if a.shape != b.shape:
        return float("inf")
    scale = float(numpy.abs(a).max()) if a.size else 0.0
    diff = float(numpy.abs(a - b).max()) if a.size else 0.0
    return diff / scale if scale > 0 else diff


def _flat(x):
    if x is None:
        return []
    if isinstance(x, (tuple, list)):
        return [y for v in x for y in _flat(v)]
    if isinstance(x, dict):
        return [y for k in sorted(x) for y in _flat(x[k])]
    return [x]


def _cast(a, dtype):
    return a.astype(dtype) if getattr(a, "dtype", None) is not None and a.dtype.kind == "f" else a


def layer_parity(other, dtype="float32"):
    """[(case, error)] for every layer case: NumPy against ``other`` (cupy; numpy checks the plumbing)."""
    from .gradcheck_cases import layer_cases

    rows = []
    ref_cases, other_cases = layer_cases(numpy), layer_cases(other)
    for ref, oth in zip(ref_cases, other_cases):
        rng = numpy.random.default_rng(7)
        errs = []
        outs = {}
        for case, xp in ((ref, numpy), (oth, other)):
            inputs = [_cast(a, dtype) for a in case.inputs]
            kwargs = {k: _cast(v, dtype) for k, v in case.kwargs.items()}
            out, cache = case.forward(*inputs, **kwargs)
            outs[xp] = (out, cache)
        out_ref, cache_ref = outs[numpy]
        out_oth, cache_oth = outs[other]
        for a, b in zip(_flat(out_ref), _flat(out_oth)):
            errs.append(relative_error(a, b))
        douts = tuple(rng.standard_normal(o.shape).astype(dtype) for o in _flat(out_ref))
        single = not isinstance(out_ref, tuple)
        g_ref = ref.backward(douts[0] if single else douts, cache_ref)
        d_oth = tuple(other.asarray(d) for d in douts)
        g_oth = oth.backward(d_oth[0] if single else d_oth, cache_oth)
        for a, b in zip(_flat(g_ref), _flat(g_oth)):
            errs.append(relative_error(a, b))
        rows.append((ref.name, max(errs)))
    return rows


def fused_parity(other, dtype="float32"):
    """[(what, error)] for each fused kernel (ops/fused.py) on ``other`` against its body run by NumPy.

    Where ``other`` has no compiled kernel (NumPy, or SCRATCHCAP_FUSED=0) the body runs on ``other``.
    """
    from .ops import fused

    rows = []
    rng = numpy.random.default_rng(11)
    for name, body in sorted(fused.KERNELS.items()):
        inputs = [rng.standard_normal((6, 9)).astype(dtype) for _ in body.names(body.in_params)]
        want = fused.evaluate(name, *inputs)
        compiled = fused.kernel(other, name)
        moved = [other.asarray(a) for a in inputs]
        got = compiled(*moved) if compiled is not None else fused.evaluate(name, *moved)
        got = got if isinstance(got, tuple) else (got,)
        rows.append((f"fused kernel {name}", max(relative_error(a, b) for a, b in zip(want, got))))
    return rows


def random_parity(other, dtype="float32"):
    """[(what, error)]: dropout's uniforms (scratchcap.counter_random) on ``other``, bit for bit (0 or inf)."""
    from .backend import to_numpy
    from .counter_random import counter_uniform

    rows = []
    for shape in ((7, 9, 11), (4096,)):  # an odd count (one unused half-hash in float32), and an even one
        want = counter_uniform(numpy, 2**63 + 12345, shape, dtype)
        got = counter_uniform(other, 2**63 + 12345, shape, dtype)
        same = got.dtype == want.dtype and numpy.array_equal(to_numpy(got), want)
        rows.append((f"dropout uniforms {shape}, bit for bit", 0.0 if same else float("inf")))
    return rows


def decoder_parity(other, dtype="float32"):
    """[(what, error)] for a training step of each decoder (and one on a fine-tuned VGG-16 layer), one Adam step
    and beam-3 decoding."""
    from .backend import to_device
    from .data import Vocabulary
    from .decode import beam_search
    from .gradcheck_cases import caption_batch
    from .models import MODELS
    from .optim import Adam

    device = "cpu" if other is numpy else "gpu"
    rows = []
    rng = numpy.random.default_rng(3)
    N, T, L, V = 4, 6, 9, 30
    cfg = dict(D=16, E=12, H=10, A=8, V=V, dropout=0.3, feature_scale=0.5, **{"lambda": 0.5})
    batch = caption_batch(rng, N, T, L, cfg["D"], V, dtype, min_words=1)
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + [f"w{k}" for k in range(V - 4)])
    from .models.fine_tune import BLOCKS, FineTuned, vgg_params

    block = "block5_conv3"  # one decoder on a fine-tuned VGG-16 layer too: conv2d's forward and backward
    conv = {layer: (rng.standard_normal((3, 3, cfg["D"], cfg["D"])) * 0.1, rng.standard_normal(cfg["D"]) * 0.1)
            for layer in BLOCKS[block][1]}
    cases = [(name, model, cfg) for name, model in sorted(MODELS.items())]
    cases.append((f"gru-attention fine-tuning {block}", FineTuned(MODELS["gru-attention"], block),
                  dict(cfg, grid=[3, 3], fine_tune=block)))
    for name, model, cfg in cases:
        params = model.init_params(cfg, numpy.random.default_rng(1), dtype)
        if cfg.get("fine_tune"):
            params.update(vgg_params(conv, block, dtype))
        p_oth = to_device(params, device)
        b_oth = {k: to_device(v, device) for k, v in batch.items()}
        loss_r, g_r, _ = model.loss_and_grads(params, batch, cfg, numpy.random.default_rng(5))
        loss_o, g_o, _ = model.loss_and_grads(p_oth, b_oth, cfg, numpy.random.default_rng(5))
        rows.append((f"{name} loss", relative_error(numpy.array(loss_r), numpy.array(loss_o))))
        rows.append((f"{name} gradients", max(relative_error(g_r[k], g_o[k]) for k in sorted(g_r))))
        opt_r, opt_o = Adam(lr=1e-2), Adam(lr=1e-2)
        opt_r.step(params, g_r)
        opt_o.step(p_oth, g_o)
        rows.append((f"{name} Adam step", max(relative_error(params[k], p_oth[k]) for k in sorted(params))))
        words_r = [r["words"] for r in beam_search(model, params, batch["features"], cfg, vocab, beam=3,
                                                   max_length=T)]
        words_o = [r["words"] for r in beam_search(model, p_oth, b_oth["features"], cfg, vocab, beam=3,
                                                   max_length=T)]
        rows.append((f"{name} beam-3 words", 0.0 if words_r == words_o else float("inf")))
    return rows


def vgg_parity(other, weights=None, images=None, count=4, precisions=None):
    """[(what, error, tolerance)]: block5_conv3 features of ``count`` images on NumPy and on ``other``, and on
    the GPU in each of its faster precisions too (``precisions``: default all of vgg16.PRECISIONS but float32)."""
    from .images import load_image
    from .vgg16 import VGG16

    device = "cpu" if other is numpy else "gpu"
    paths = []
    if images and os.path.isdir(images):
        paths = sorted(os.path.join(images, f) for f in os.listdir(images)
                       if f.lower().endswith((".jpg", ".jpeg", ".png")))[:count]
    if paths:
        pics, what = [load_image(p) for p in paths], f"{len(paths)} photos from {images}"
    else:
        from PIL import Image, ImageDraw
        pics = []
        for k in range(count):
            im = Image.new("RGB", (160 + 16 * k, 120), (30 * k, 120, 200 - 30 * k))
            ImageDraw.Draw(im).ellipse((20, 10 + 5 * k, 100, 90), fill=(250, 200 - 40 * k, 20))
            pics.append(im)
        what = f"{count} generated images"
    from .paths import resolve_weights
    weights = resolve_weights(weights)
    if os.path.exists(weights):
        ref, oth = VGG16.load(weights), VGG16.load(weights, device=device)
        what += ", ImageNet weights"
    else:
        from .weights.format import layer_shapes
        rng = numpy.random.default_rng(0)
        layers = {n: ((rng.standard_normal(k) * numpy.sqrt(2 / (9 * k[2]))).astype(numpy.float32),
                      numpy.zeros(b, numpy.float32)) for n, (k, b) in layer_shapes().items()}
        attrs = dict(preprocessing="caffe", channel_order="BGR", input_scale=255.0,
                     mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0))
        from .backend import to_device
        ref, oth = VGG16(layers, attrs), VGG16(to_device(layers, device), attrs)
        what += ", random weights"
    x = ref.preprocess(pics, size=224)
    a = ref.forward(x)["block5_conv3"]
    b = oth.forward(other.asarray(x))["block5_conv3"]
    rows = [(f"VGG-16 block5_conv3 ({what})", relative_error(a, b), RTOL["float32"])]
    if other is not numpy:  # the GPU's faster precisions, against the float16 that the feature cache keeps
        from .vgg16 import PRECISIONS
        for precision in PRECISIONS[1:] if precisions is None else precisions:
            fast = VGG16(oth.params, ref.attrs, precision=precision).forward(other.asarray(x))["block5_conv3"]
            rows.append((f"VGG-16 block5_conv3 in {precision} ({what})", relative_error(a, fast), PRECISION_RTOL))
    return rows


def run_all(other, weights=None, images=None, log=print, precisions=None):
    """Every check in float32 and float64 (VGG-16 in float32, and in ``precisions``, default tf32 and float16).
    Returns [(what, dtype, error, ok)]."""
    rows = []
    for dtype in ("float32", "float64"):
        checks = layer_parity(other, dtype) + fused_parity(other, dtype) + random_parity(other, dtype)
        for what, err in checks + decoder_parity(other, dtype):
            rows.append((what, dtype, err, err <= RTOL[dtype]))
            log(f"{'ok ' if rows[-1][3] else 'BAD'} {dtype:<8} {err:9.2e}  {what}")
    for what, err, tol in vgg_parity(other, weights, images, precisions=precisions):
        rows.append((what, "float32", err, err <= tol))
        log(f"{'ok ' if rows[-1][3] else 'BAD'} float32  {err:9.2e}  {what}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m scratchcap.parity", description="NumPy against CuPy, layer by layer.")
    p.add_argument("--weights", default=None,
                   help="VGG-16 weights (default: the user cache's ImageNet weights; random ones where missing)")
    p.add_argument("--images", default=FLICKR8K_IMAGES, help="a folder of photos for the VGG-16 check")
    p.add_argument("--vgg-precisions", default="tf32,float16",
                   help="the GPU precisions of VGG-16 checked against float32 (comma-separated; default tf32,float16)")
    add_threads_argument(p)
    args = p.parse_args(argv)
    precisions = tuple(x for x in args.vgg_precisions.split(",") if x)
    from .vgg16 import PRECISIONS
    if set(precisions) - set(PRECISIONS):
        p.error(f"--vgg-precisions takes some of {', '.join(PRECISIONS)}, got {args.vgg_precisions!r}")
    from .backend import gpu_status
    ok, reason = gpu_status()
    if not ok:
        print(f"no usable GPU: {reason}", file=sys.stderr)
        return 2
    import cupy
    rows = run_all(cupy, args.weights, args.images, precisions=precisions)
    bad = [r for r in rows if not r[3]]
    print(f"{len(rows) - len(bad)} of {len(rows)} checks within tolerance (float32 rtol {RTOL['float32']:g}, "
          f"float64 rtol {RTOL['float64']:g})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
