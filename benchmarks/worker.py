"""Benchmark cases for one library, in its own process; prints one JSON line of timings per case.

    python benchmarks/worker.py --lib numpy|cupy|torch|torch-cuda --case CASE [--batch N] [--repeats R]
                                [--threads T[,T...]] [--small]
    python benchmarks/worker.py --lib LIB --jobs '[{"case": "gemm"}, {"case": "vgg16", "batch": 16}]' ...

run.py starts this once per (library, variant, round) with all of that round's
cases as --jobs, so that two libraries' thread pools never share a process and
a process start (seconds with a CUDA context) is paid once per round, not once
per case; it alternates the libraries between rounds. A case that fails prints
an "error" line instead of timings, and the next case runs (exit status 1).
With several thread counts (--threads 1,2) each case's calls alternate between
them (1, 2, 2, 1, 1, 2, ...), so that a machine that slows down or speeds up
for a while slows every count alike and the speed-ups compare calls made
side by side; the line then holds "times" for each count.
numpy and cupy run the same scratchcap code (the array module comes from the
inputs); torch and torch-cuda run the same maths with PyTorch as the reference.
Every library gets identical inputs, drawn from NumPy with a fixed seed.

Cases (shapes in the notation of scratchcap.ops; --small shrinks them all for a smoke test):
    gemm            float32 (2048, 2048) @ (2048, 2048), the machine's GEMM peak
    vgg16           VGG-16 to block5_conv3 at 224x224, batch --batch, images/s
    conv:<layer>    one VGG-16 convolution (batch 1), forward + backward
    attention       additive attention, N 64, L 196, D 512, H 512, A 512, forward + backward
    gru_step        one GRU step, N 64, input 1024, H 512, forward + backward
    lstm_step       one LSTM step, N 64, input 1024, H 512, forward + backward
    output          output layer and masked cross-entropy, N*T 1280 rows, H 512, V 5000, forward + backward
    decoder         one gru-attention training step, N 64, T 20, L 196, D=E=H=A 512, V 5000
    beam            beam-3 decoding of 16 images, at most 20 words, V 5000, captions/s
    beam1           the same for one image: what the server and the caption command decode for a photo
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CONV_CASES = {"block1_conv2": (224, 64, 64), "block3_conv2": (56, 256, 256), "block5_conv2": (14, 512, 512)}
FULL = dict(N=64, T=20, L=196, D=512, E=512, H=512, A=512, V=5000, beam_images=16, image=224, gemm=2048,
            conv_scale=1)
SMALL = dict(N=3, T=4, L=9, D=8, E=8, H=8, A=8, V=40, beam_images=2, image=32, gemm=64, conv_scale=16)
LIBS = ("numpy", "cupy", "torch", "torch-cuda")
# "1": VGG-16 by im2col alone (run.py's "im2col" variant); "0": Winograd at every batch size, on the GPU too;
# unset: scratchcap's default (on the GPU, im2col below vgg16.GPU_WINOGRAD_MIN_BATCH).
IM2COL = "SCRATCHCAP_BENCH_IM2COL"
TORCH_TF32 = "SCRATCHCAP_BENCH_TORCH_TF32"  # "1": PyTorch CUDA as by default, TF32 in convolutions
PRECISION = "SCRATCHCAP_BENCH_PRECISION"  # tf32 or float16: scratchcap's VGG-16 on the GPU in that precision
CASES = ("gemm", "vgg16", "attention", "gru_step", "lstm_step", "output", "decoder", "beam", "beam1") + tuple(
    f"conv:{name}" for name in CONV_CASES)


def vgg_flops(size=224):
    from scratchcap.weights.format import CONV_LAYERS, VGG16_WIDTHS

    flops, side, c_in = 0, size, 3
    for name, c_out in zip(CONV_LAYERS, VGG16_WIDTHS):
        flops += 2 * side * side * 9 * c_in * c_out
        c_in = c_out
        if name in ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3"):
            side //= 2
    return flops


def vgg_layers(weights, small):
    import numpy as np

    from scratchcap.weights import load_weights
    from scratchcap.weights.format import layer_shapes

    if weights and os.path.exists(weights) and not small:
        return load_weights(weights)[0], "imagenet"
    rng = np.random.default_rng(0)
    shapes = layer_shapes()
    if small:  # a narrow VGG: the same 13 layers, every width / 16
        shapes = {n: ((3, 3, max(k[2] // 16, 3) if k[2] != 3 else 3, k[3] // 16), (b[0] // 16,))
                  for n, (k, b) in shapes.items()}
    return {name: ((rng.standard_normal(k) * 0.01).astype(np.float32), np.zeros(b, np.float32))
            for name, (k, b) in shapes.items()}, "random"


def time_calls(fn, repeats, sync, warmup=1):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times


def alternate_calls(fn, repeats, sync, counts, use_threads):
    """({count: [seconds]}, {count: BLAS as it ran}): ``repeats`` calls at each thread count, the counts' order
    reversed every repeat (1, 2, 2, 1, ...), each timed call right after an untimed one at its count: the first
    call after a switch ran 14% slower (a 64-caption training step, its memory newly touched by other threads)."""
    blas, times = {}, {n: [] for n in counts}
    for r in range(repeats):
        for n in (counts if r % 2 == 0 else counts[::-1]):
            use_threads(n)
            fn()
            blas[n] = blas_info()
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[n].append(time.perf_counter() - t)
    return times, blas


def inputs(case, s):
    """The NumPy inputs of a case (float32), the same for every library."""
    import numpy as np

    rng = np.random.default_rng(0)

    def r(*shape, scale=0.05):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    N, L, D, H, A, V = s["N"], s["L"], s["D"], s["H"], s["A"], s["V"]
    if case.startswith("conv:"):
        side, c, f = CONV_CASES[case[5:]]
        side, c, f = max(side // s["conv_scale"], 4), max(c // s["conv_scale"], 3), max(f // s["conv_scale"], 3)
        return dict(x=r(1, side, side, c, scale=1.0), w=r(3, 3, c, f), b=r(f), dout=r(1, side, side, f, scale=1.0))
    if case == "attention":
        return dict(features=r(N, L, D, scale=1.0), query=r(N, H, scale=1.0), w1=r(D, A), b1=r(A), w2=r(H, A),
                    b2=r(A), v=r(A), dcontext=r(N, D, scale=1.0))
    if case in ("gru_step", "lstm_step"):
        g = 3 if case == "gru_step" else 4
        return dict(x=r(N, 2 * H, scale=1.0), h=r(N, H, scale=1.0), c=r(N, H, scale=1.0), wx=r(2 * H, g * H),
                    wh=r(H, g * H), bx=r(g * H), bh=r(g * H), dh=r(N, H, scale=1.0))
    if case == "output":
        rows = N * s["T"]
        targets = rng.integers(3, V, size=(N, s["T"]))
        mask = np.ones((N, s["T"]), dtype=bool)
        mask[:, s["T"] * 2 // 3:] = rng.random((N, s["T"] - s["T"] * 2 // 3)) < 0.5
        return dict(hs=r(rows // s["T"], s["T"], H, scale=1.0), w=r(H, V), b=r(V), targets=targets, mask=mask)
    if case in ("decoder", "beam", "beam1"):
        caps = rng.integers(3, V, size=(N, s["T"] + 1))
        caps[:, 0] = 1
        lengths = rng.integers(min(8, s["T"]), s["T"] + 1, size=N)
        for n, k in enumerate(lengths):
            caps[n, k] = 2
            caps[n, k + 1:] = 0
        feats = rng.standard_normal((N, L, D)).astype(np.float32)
        if case != "decoder":
            feats = feats[:s["beam_images"] if case == "beam" else 1]
        return dict(features=feats, captions=caps)
    raise ValueError(case)


def decoder_config(s):
    return dict(D=s["D"], E=s["E"], H=s["H"], A=s["A"], V=s["V"], dropout=0.3)


def decoder_params(s):
    import numpy as np

    from scratchcap.models import gru_attention
    return gru_attention.init_params(decoder_config(s), np.random.default_rng(0))


def case_spec(case, batch=1, small=False, weights="", threads=1):
    """What scratch_case and torch_case read of the command line, for callers that build cases themselves."""
    return argparse.Namespace(case=case, batch=batch, small=small, weights=weights, threads=threads)


# ---- scratchcap, on NumPy or CuPy -------------------------------------------------------------------

def scratch_case(xp, args, s):
    """(the work to time, its flops) for ``args.case`` on NumPy or CuPy."""
    import numpy as np

    from scratchcap import ops
    from scratchcap.backend import to_device
    device = "cpu" if xp is np else "gpu"
    case = args.case

    def dev(d):
        return {k: to_device(v, device) for k, v in d.items()}

    if case == "gemm":
        a = to_device(np.random.default_rng(0).standard_normal((s["gemm"],) * 2).astype(np.float32), device)
        b = a.T.copy()
        from scratchcap.threads import matmul  # the pool's split, as every layer's GEMM: OpenBLAS runs at 1 thread
        return lambda: matmul(a, b), 2 * s["gemm"] ** 3
    if case == "vgg16":
        from scratchcap.vgg16 import GPU_WINOGRAD_MIN_BATCH, VGG16
        layers, _ = vgg_layers(args.weights, args.small)
        how = os.environ.get(IM2COL)
        model = VGG16(to_device(layers, device), dict(preprocessing="caffe", channel_order="BGR", input_scale=255.0,
                                                      mean=(0, 0, 0), std=(1, 1, 1)),
                      winograd=how != "1", gpu_winograd_min_batch=1 if how == "0" else GPU_WINOGRAD_MIN_BATCH,
                      precision=os.environ.get(PRECISION) or "float32")
        size = s["image"]
        x = to_device(np.random.default_rng(1).standard_normal((args.batch, size, size, 3)).astype(np.float32) * 50,
                      device)
        return lambda: model.forward(x), vgg_flops(size) * args.batch
    i = dev(inputs(case, s))
    if case.startswith("conv:"):
        def fb():
            out, cache = ops.conv2d_forward(i["x"], i["w"], i["b"])
            return ops.conv2d_backward(i["dout"], cache)
        kh, kw, c, f = i["w"].shape
        return fb, 3 * 2 * i["x"].shape[1] * i["x"].shape[2] * kh * kw * c * f
    if case == "attention":
        def fb():
            (ctx, alpha), cache = ops.additive_attention_forward(i["features"], i["query"], i["w1"], i["b1"],
                                                                 i["w2"], i["b2"], i["v"])
            return ops.additive_attention_backward((i["dcontext"], None), cache)
        return fb, 0
    if case == "gru_step":
        def fb():
            h, cache = ops.gru_step_forward(i["x"], i["h"], i["wx"], i["wh"], i["bx"], i["bh"])
            return ops.gru_step_backward(i["dh"], cache)
        return fb, 0
    if case == "lstm_step":
        def fb():
            (h, c), cache = ops.lstm_step_forward(i["x"], i["h"], i["c"], i["wx"], i["wh"], i["bx"])
            return ops.lstm_step_backward((i["dh"], None), cache)
        return fb, 0
    if case == "output":
        def fb():
            logits, c1 = ops.linear_forward(i["hs"], i["w"], i["b"])
            loss, c2 = ops.temporal_cross_entropy_forward(logits, i["targets"], i["mask"])
            (dlogits,) = ops.temporal_cross_entropy_backward(1.0, c2)
            return ops.linear_backward(dlogits, c1)
        return fb, 0
    from scratchcap.models import gru_attention
    cfg = decoder_config(s)
    p = dev(decoder_params(s))
    if case == "decoder":
        caps = i["captions"]
        batch = dict(features=i["features"], captions=caps, mask=caps[:, 1:] != 0)
        rng = np.random.default_rng(1)
        # the step train.py runs: on NumPy with several threads, each thread takes its rows of the batch
        from scratchcap import thread_shards
        return lambda: thread_shards.loss_and_grads(gru_attention, p, batch, cfg, rng), 0
    if case in ("beam", "beam1"):
        from scratchcap.data import Vocabulary
        from scratchcap.decode import beam_search
        vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + [f"w{k}" for k in range(s["V"] - 4)])
        return lambda: beam_search(gru_attention, p, i["features"], cfg, vocab, beam=3, max_length=s["T"]), 0
    raise ValueError(case)


# ---- PyTorch, the reference --------------------------------------------------------------------------

def torch_case(args, s, device):
    """(the work to time, its flops) for ``args.case`` in PyTorch on ``device``."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    # Full float32, as scratchcap computes: PyTorch's default lets cuDNN convolutions use TF32 tensor
    # cores (10-bit mantissa). run.py times that default too, as the variant TORCH_TF32.
    tf32 = os.environ.get(TORCH_TF32) == "1"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    case = args.case

    def t(a, grad=False):
        x = torch.from_numpy(np.ascontiguousarray(a)).to(device)
        return x.requires_grad_() if grad else x

    if case == "gemm":
        a = t(np.random.default_rng(0).standard_normal((s["gemm"],) * 2).astype(np.float32))
        b = a.T.contiguous()
        return lambda: a @ b, 2 * s["gemm"] ** 3
    if case == "vgg16":
        layers, _ = vgg_layers(args.weights, args.small)
        convs = [(t(k.transpose(3, 2, 0, 1)), t(b)) for k, b in layers.values()]
        pools = {1, 3, 6, 9}
        size = s["image"]
        x = t((np.random.default_rng(1).standard_normal((args.batch, size, size, 3)).astype(np.float32) * 50)
              .transpose(0, 3, 1, 2))

        def forward():
            h = x
            with torch.no_grad():
                for k, (w, b) in enumerate(convs):
                    h = torch.relu(F.conv2d(h, w, b, padding=1))
                    if k in pools:
                        h = F.max_pool2d(h, 2)
            return h
        return forward, vgg_flops(size) * args.batch
    i = inputs(case, s)
    if case.startswith("conv:"):
        x, w, b = t(i["x"].transpose(0, 3, 1, 2), True), t(i["w"].transpose(3, 2, 0, 1), True), t(i["b"], True)
        dout = t(i["dout"].transpose(0, 3, 1, 2))

        def fb():
            F.conv2d(x, w, b, padding=1).backward(dout)
        kh, kw, c, f = i["w"].shape
        return fb, 3 * 2 * i["x"].shape[1] * i["x"].shape[2] * kh * kw * c * f
    if case == "attention":
        feats = t(i["features"], True)
        q, w1, b1, w2, b2, v = (t(i[k], True) for k in ("query", "w1", "b1", "w2", "b2", "v"))
        dctx = t(i["dcontext"])

        def fb():
            alpha = torch.softmax(torch.tanh(feats @ w1 + b1 + (q @ w2 + b2)[:, None, :]) @ v, dim=1)
            torch.bmm(alpha[:, None, :], feats)[:, 0].backward(dctx)
        return fb, 0
    if case in ("gru_step", "lstm_step"):
        H = s["H"]
        cell = (torch.nn.GRUCell if case == "gru_step" else torch.nn.LSTMCell)(2 * H, H).to(device)
        x, h, c, dh = t(i["x"], True), t(i["h"], True), t(i["c"], True), t(i["dh"])

        def fb():
            out = cell(x, h) if case == "gru_step" else cell(x, (h, c))[0]
            out.backward(dh)
        return fb, 0
    if case == "output":
        hs, w, b = t(i["hs"], True), t(i["w"], True), t(i["b"], True)
        targets, mask = t(i["targets"]), t(i["mask"])

        def fb():
            logits = hs @ w + b
            F.cross_entropy(logits[mask], targets[mask]).backward()
        return fb, 0
    p = {k: t(v, case == "decoder") for k, v in decoder_params(s).items()}
    feats, caps = t(i["features"]), t(i["captions"])
    H = s["H"]

    def gru(x, h):
        gx, gh = x @ p["gru/wx"] + p["gru/bx"], h @ p["gru/wh"] + p["gru/bh"]
        r = torch.sigmoid(gx[:, :H] + gh[:, :H])
        z = torch.sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
        n = torch.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
        return n + z * (h - n)

    def attend(f, proj, h):
        alpha = torch.softmax(torch.tanh(proj + (h @ p["attention/w2"] + p["attention/b2"])[:, None, :])
                              @ p["attention/v"], dim=1)
        return torch.bmm(alpha[:, None, :], f)[:, 0]

    def encode(x, train):
        f = torch.relu(x @ p["encoder/w"] + p["encoder/b"])
        f = F.dropout(f, 0.3, training=train)
        return f, f @ p["attention/w1"] + p["attention/b1"]

    def out(h):
        return (h @ p["output/w1"] + p["output/b1"]) @ p["output/w2"] + p["output/b2"]

    if case == "decoder":
        words, targets = caps[:, :-1], caps[:, 1:]
        mask = targets != 0

        def step():
            f, proj = encode(feats, True)
            emb = p["embedding/w"][words]
            h = torch.zeros(feats.shape[0], H, device=device)
            hs = []
            for k in range(words.shape[1]):
                h = gru(torch.cat([attend(f, proj, h), emb[:, k]], dim=1), h)
                hs.append(h)
            logits = out(torch.stack(hs, 1))
            loss = F.cross_entropy(logits[mask], targets[mask])
            loss.backward()
            return loss
        return step, 0
    if case in ("beam", "beam1"):
        k, V, T = 3, s["V"], s["T"]

        def attend_k(f, proj, h):  # an image's beams ask k queries of one copy of it, as scratchcap's attend does
            N, L, A = proj.shape
            q = (h @ p["attention/w2"] + p["attention/b2"]).view(N, -1, 1, A)
            alpha = torch.softmax(torch.tanh(proj[:, None] + q) @ p["attention/v"], dim=2)
            return torch.bmm(alpha, f).reshape(h.shape[0], -1)

        def beam():  # the same search as scratchcap.decode.beam_search, kept on the device
            with torch.no_grad():
                N = feats.shape[0]
                f, proj = encode(feats, False)
                h = torch.zeros(N, H, device=device)  # the first word: one live beam per image
                words = torch.full((N,), 1, dtype=torch.long, device=device)
                scores = torch.zeros(N, 1, device=device, dtype=torch.float64)
                finished = torch.zeros(N, 1, dtype=torch.bool, device=device)
                history = torch.zeros(N, 1, 0, dtype=torch.long, device=device)
                for _ in range(T):
                    width = scores.shape[1]
                    h = gru(torch.cat([attend_k(f, proj, h), p["embedding/w"][words]], dim=1), h)
                    logp = torch.log_softmax(out(h), dim=1).double().reshape(N, width, V)
                    logp[finished] = -float("inf")
                    logp[..., 0][finished] = 0.0
                    total = (scores[:, :, None] + logp).reshape(N, width * V)
                    scores, order = total.topk(k, dim=1)
                    src, word = order // V, order % V
                    rows = (torch.arange(N, device=device)[:, None] * width + src).reshape(-1)
                    finished = torch.gather(finished, 1, src) | (word == 2)
                    history = torch.cat([torch.gather(history, 1, src[:, :, None].expand(-1, -1, history.shape[2])),
                                         word[:, :, None]], dim=2)
                    h, words = h[rows], word.reshape(-1)
                    if bool(finished.all()):
                        break
                return history[torch.arange(N), scores.argmax(1)].cpu()
        return beam, 0
    raise ValueError(case)


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"note": "pip install threadpoolctl to see which BLAS kernel ran"}]
    keep = ("internal_api", "architecture", "num_threads", "version", "prefix")
    return [{k: i.get(k) for k in keep} for i in threadpool_info()]


def gpu_info(lib):
    if lib == "cupy":
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        return dict(gpu=props["name"].decode(), cupy=cupy.__version__,
                    cuda_runtime=cupy.cuda.runtime.runtimeGetVersion())
    if lib == "torch-cuda":
        import torch
        return dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, cuda=torch.version.cuda)
    return {}


def main(argv=None):
    from scratchcap.paths import default_weights_path  # no NumPy: the thread settings come first
    p = argparse.ArgumentParser()
    p.add_argument("--lib", choices=LIBS, required=True)
    p.add_argument("--case", choices=CASES, help="one case (with --batch); or give --jobs")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--jobs", help='a JSON list of cases to time in turn: [{"case": CASE, "batch": N}, ...]')
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", default="2", help="a thread count, or several (1,2): each case's calls alternate")
    p.add_argument("--small", action="store_true", help="tiny shapes: a smoke test, not a measurement")
    p.add_argument("--weights", default=default_weights_path(),
                   help="VGG-16 weights (default: the user cache's; random ones where missing)")
    args = p.parse_args(argv)
    if (args.case is None) == (args.jobs is None):
        p.error("give one of --case and --jobs")
    jobs = json.loads(args.jobs) if args.jobs else [dict(case=args.case, batch=args.batch)]
    try:
        counts = [int(n) for n in str(args.threads).split(",")]
    except ValueError:
        p.error(f"--threads takes a count or counts separated by commas, got {args.threads!r}")
    args.threads = counts[0]
    s = SMALL if args.small else FULL
    if args.lib in ("numpy", "cupy"):
        from scratchcap.memory import keep_freed_memory
        from scratchcap.threads import set_threads
        keep_freed_memory()  # as the scratchcap commands do
        set_threads(args.threads)  # as --threads does: the pool's size, OpenBLAS at one thread

        def use_threads(n):
            set_threads(n, explicit=True)
        if args.lib == "cupy":
            import cupy as xp
            sync = xp.cuda.Device().synchronize
        else:
            import numpy as xp

            def sync():
                return None
    else:
        import torch
        sync = torch.cuda.synchronize if args.lib == "torch-cuda" else (lambda: None)
        use_threads = torch.set_num_threads
    failed = 0
    for job in jobs:
        line = {"job": job}
        try:
            if job.get("case") not in CASES:
                raise ValueError(f"unknown case {job.get('case')!r}; the cases are {', '.join(CASES)}")
            spec = case_spec(job["case"], job.get("batch", 1), args.small, args.weights, args.threads)
            if args.lib in ("numpy", "cupy"):
                work, flops = scratch_case(xp, spec, s)
            else:
                work, flops = torch_case(spec, s, "cuda" if args.lib == "torch-cuda" else "cpu")
            if len(counts) == 1:
                line.update(times=time_calls(work, args.repeats, sync), blas=blas_info())
            else:
                times, blas = alternate_calls(work, args.repeats, sync, counts, use_threads)
                line.update(times_by_threads=times, blas_by_threads=blas)
            line.update(flops=flops, gpu=gpu_info(args.lib))
        except Exception:  # one case's failure must not cost the others their numbers
            failed += 1
            line["error"] = traceback.format_exc()[-2000:]
        work = None  # the case's arrays go before the next case's are made
        gc.collect()
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
