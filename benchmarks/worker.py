"""One benchmark case for one library, in its own process; prints one JSON line of timings.

    python benchmarks/worker.py --lib numpy|torch --case gemm|vgg16 [--batch N] [--repeats R] [--threads T]

run.py starts this once per (library, round) so that two libraries' thread
pools never share a process, and alternates the libraries between rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

VGG_FLOPS_224 = None  # computed from the layer shapes below


def vgg_flops(size=224):
    from scratchcap.weights.format import CONV_LAYERS, VGG16_WIDTHS

    flops, side, c_in = 0, size, 3
    for name, c_out in zip(CONV_LAYERS, VGG16_WIDTHS):
        flops += 2 * side * side * 9 * c_in * c_out
        c_in = c_out
        if name in ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3"):
            side //= 2
    return flops


def vgg_layers(weights):
    import numpy as np

    from scratchcap.weights import load_weights
    from scratchcap.weights.format import layer_shapes

    if weights and os.path.exists(weights):
        return load_weights(weights)[0], "imagenet"
    rng = np.random.default_rng(0)
    return {name: ((rng.standard_normal(k) * 0.01).astype(np.float32), np.zeros(b, np.float32))
            for name, (k, b) in layer_shapes().items()}, "random"


def time_calls(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


DECODER = dict(N=64, T=20, L=196, D=512, E=512, H=512, A=512, V=5000)


def decoder_batch(np):
    s = DECODER
    rng = np.random.default_rng(0)
    caps = rng.integers(3, s["V"], size=(s["N"], s["T"] + 1))
    caps[:, 0] = 1
    lengths = rng.integers(8, s["T"] + 1, size=s["N"])
    for n, k in enumerate(lengths):
        caps[n, k] = 2
        caps[n, k + 1:] = 0
    feats = rng.standard_normal((s["N"], s["L"], s["D"])).astype(np.float32)
    return feats, caps


def numpy_case(args):
    import numpy as np

    from scratchcap.memory import keep_freed_memory
    keep_freed_memory()  # as the scratchcap commands do

    if args.case == "decoder":
        from scratchcap.models import gru_attention
        s = DECODER
        cfg = dict(D=s["D"], E=s["E"], H=s["H"], A=s["A"], V=s["V"], dropout=0.3)
        p = gru_attention.init_params(cfg, np.random.default_rng(0))
        feats, caps = decoder_batch(np)
        batch = dict(features=feats, captions=caps, mask=caps[:, 1:] != 0)
        rng = np.random.default_rng(1)
        return time_calls(lambda: gru_attention.loss_and_grads(p, batch, cfg, rng), args.repeats), 0

    if args.case == "gemm":
        a = np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32)
        b = a.T.copy()
        return time_calls(lambda: a @ b, args.repeats), 2 * args.size ** 3
    from scratchcap.vgg16 import VGG16

    layers, _ = vgg_layers(args.weights)
    model = VGG16(layers, dict(preprocessing="caffe", channel_order="BGR", input_scale=255.0,
                               mean=(0, 0, 0), std=(1, 1, 1)))
    x = np.random.default_rng(1).standard_normal((args.batch, 224, 224, 3)).astype(np.float32) * 50
    return time_calls(lambda: model.forward(x), args.repeats), vgg_flops() * args.batch


def torch_decoder(args):
    """The same gru-attention training step (forward and backward) in PyTorch, GRUCell for the recurrence."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    s = DECODER
    feats, caps = (torch.from_numpy(a) for a in decoder_batch(np))
    g = torch.Generator().manual_seed(0)

    def w(*shape):
        return (torch.randn(*shape, generator=g) * 0.05).requires_grad_()

    We, be, W1, b1, W2, b2, v = w(s["D"], s["E"]), w(s["E"]), w(s["E"], s["A"]), w(s["A"]), w(s["H"], s["A"]), w(s["A"]), w(s["A"])
    emb, Wf1, bf1, Wf2, bf2 = w(s["V"], s["E"]), w(s["H"], s["H"]), w(s["H"]), w(s["H"], s["V"]), w(s["V"])
    cell = torch.nn.GRUCell(2 * s["E"], s["H"])
    words, targets = caps[:, :-1], caps[:, 1:]
    mask = targets != 0

    def step():
        f = F.dropout(torch.relu(feats @ We + be), 0.3)
        proj = f @ W1 + b1
        e_all = emb[words]
        h = torch.zeros(s["N"], s["H"])
        hs = []
        for t in range(s["T"]):
            alpha = torch.softmax(torch.tanh(proj + (h @ W2 + b2)[:, None, :]) @ v, dim=1)
            ctx = torch.bmm(alpha[:, None, :], f)[:, 0]
            h = cell(torch.cat([ctx, e_all[:, t]], dim=1), h)
            hs.append(h)
        logits = (torch.stack(hs, 1) @ Wf1 + bf1) @ Wf2 + bf2
        loss = F.cross_entropy(logits[mask], targets[mask])
        loss.backward()
        return loss

    return time_calls(step, args.repeats), 0


def torch_case(args):
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    if args.case == "decoder":
        return torch_decoder(args)
    if args.case == "gemm":
        a = torch.from_numpy(np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32))
        b = a.T.contiguous()
        return time_calls(lambda: a @ b, args.repeats), 2 * args.size ** 3
    layers, _ = vgg_layers(args.weights)
    convs = [(torch.from_numpy(k.transpose(3, 2, 0, 1).copy()), torch.from_numpy(b))
             for k, b in layers.values()]
    pools = {1, 3, 6, 9}
    x = torch.from_numpy(
        (np.random.default_rng(1).standard_normal((args.batch, 224, 224, 3)).astype(np.float32) * 50)
        .transpose(0, 3, 1, 2).copy())

    def forward():
        h = x
        with torch.no_grad():
            for i, (k, b) in enumerate(convs):
                h = torch.relu(torch.nn.functional.conv2d(h, k, b, padding=1))
                if i in pools:
                    h = torch.nn.functional.max_pool2d(h, 2)
        return h

    return time_calls(forward, args.repeats), vgg_flops() * args.batch


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "pip install threadpoolctl to see which BLAS kernel ran"}]
    keep = ("internal_api", "architecture", "num_threads", "version", "prefix")
    return [{k: i.get(k) for k in keep} for i in threadpool_info()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=["numpy", "torch"], required=True)
    p.add_argument("--case", choices=["gemm", "vgg16", "decoder"], required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default=os.path.join("weights", "vgg16_imagenet.h5"))
    args = p.parse_args()
    times, flops = (numpy_case if args.lib == "numpy" else torch_case)(args)
    print(json.dumps({"times": times, "flops": flops, "blas": blas_info()}))


if __name__ == "__main__":
    main()
