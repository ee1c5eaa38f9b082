"""``scratchcap serve`` / ``python -m scratchcap.serve``: load the model once, bind, serve until Ctrl-C.

The server is Uvicorn running the Starlette app of app.py. It binds 127.0.0.1 unless
--host says otherwise; --port 0 takes a free port, and the first line printed is the
address it listens on. A missing model or missing weights fail here, at start-up.
"""
from __future__ import annotations

import argparse
import io
import socket
import sys

from ..images import MAX_PIXELS


def _parser():
    p = argparse.ArgumentParser(prog="python -m scratchcap.serve", description="Serve a captioning page and JSON API.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 takes a free one)")
    p.add_argument("--checkpoint", nargs="+", metavar="CKPT",
                   help="the model to serve, or several of one vocabulary as an ensemble (default: the released "
                        "Flickr8k model that ships with the package)")
    p.add_argument("--weights", help="VGG-16 weights (default: the checkpoint's, from the user cache)")
    p.add_argument("--beam", type=int, default=3, help="the default beam size (1: greedy)")
    p.add_argument("--max-beam", type=int, default=10, help="the largest beam a request may ask for")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload, in MB (default 10)")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help=f"refuse images whose header claims more pixels (default {MAX_PIXELS})")
    p.add_argument("--queue", type=int, default=16, help="most requests allowed to wait (default 16); more get 503")
    p.add_argument("--batch-window-ms", type=float, default=10.0,
                   help="requests arriving within this window are captioned as one batch (default 10; 0: none)")
    p.add_argument("--max-batch", type=int, default=16, help="most images in one batch (default 16)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait for its caption (504)")
    p.add_argument("--read-timeout", type=float, default=10.0, help="seconds a request's body may take (408)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    from ..backend import add_device_argument
    from ..decode import add_decoding_arguments
    from ..ensemble import add_ensemble_argument
    add_device_argument(p)
    add_decoding_arguments(p)
    add_ensemble_argument(p)
    return p


def example_images(count=3, size=224) -> dict:
    """{name: PNG bytes}: generated scenes (the shapes generator), so the page has something to try."""
    import numpy as np

    from ..data.shapes import render

    out = {}
    for k in range(count):
        image, _ = render(np.random.default_rng(100 + k), size)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out[f"example-{k + 1}.png"] = buf.getvalue()
    return out


def bind(host, port) -> socket.socket:
    """A listening socket on host:port (IPv4 or IPv6, whichever the host names)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def build(args, log=print):
    """(app, worker): the model loaded and the worker started; raises on a missing model or weights."""
    from ..captioner import Captioner, released_checkpoint
    from .app import Limits, create_app, model_summary
    from .worker import CaptionWorker

    paths = args.checkpoint or [released_checkpoint()]
    from ..backend import resolve_device
    captioner = Captioner.load(paths, device=resolve_device(args.device), weights=args.weights, log=log,
                               combine=args.ensemble_average)
    if not 1 <= args.beam <= args.max_beam:
        raise ValueError(f"--beam must be from 1 to --max-beam ({args.max_beam}), got {args.beam}")
    worker = CaptionWorker(captioner, queue_size=args.queue, batch_window_ms=args.batch_window_ms,
                           max_batch=args.max_batch, decode_options=dict(length_penalty_alpha=args.length_penalty,
                                                                         block_trigrams=args.block_trigrams,
                                                                         block_bad_endings=args.block_bad_endings))
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2 ** 20), max_pixels=args.max_pixels,
                    read_timeout=args.read_timeout, deadline=args.timeout, max_beam=args.max_beam)
    app = create_app(worker, model_summary(captioner, paths), limits, default_beam=args.beam,
                     examples=example_images())
    return app, worker


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        print("error: serving needs the 'serve' extra: pip install 'scratchcap[serve]'", file=sys.stderr)
        return 2
    from ..backend import DeviceUnavailableError
    from ..checkpoint import CheckpointError
    from ..weights import WeightFileError

    try:
        app, worker = build(args, log=lambda m: print(m, file=sys.stderr))
        sock = bind(args.host, args.port)
    except (CheckpointError, WeightFileError, DeviceUnavailableError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_keep_alive=5, access_log=False,
                            h11_max_incomplete_event_size=16 * 1024)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        worker.close()
        sock.close()
    return 0
