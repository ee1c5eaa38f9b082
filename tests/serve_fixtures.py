"""A real server on 127.0.0.1 with port 0 around a tiny checkpoint, for the API, browser and load tests."""
import http.client
import io
import json
import struct
import threading
import time
import zlib

import numpy as np
from PIL import Image

from scratchcap.checkpoint import save_checkpoint
from scratchcap.data import Vocabulary
from scratchcap.models import MODELS
from scratchcap.weights import save_weights
from vgg_fixtures import TINY_WIDTHS, random_layers

VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(9)])


def tiny_checkpoint(root, name="gru-attention"):
    """(checkpoint, weights): a tiny decoder over a tiny VGG-16's 2 x 2 block5_conv3 grid at 32 px."""
    weights = root / "tiny-vgg.h5"
    if not weights.exists():
        save_weights(weights, random_layers(2), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    cfg = dict(D=TINY_WIDTHS[-1], E=4, H=5, A=3, V=len(VOCAB), dropout=0.0, max_length=6, image_size=32,
               layer="block5_conv3", weights=str(weights), grid=[2, 2], dataset="shapes", model=name)
    params = MODELS[name].init_params(cfg, np.random.default_rng(1), "float32")
    params = {k: v * 3 for k, v in params.items()}  # sharper distributions: captions that differ by image
    path = save_checkpoint(root / f"{name}.h5", model=name, params=params, config=cfg, vocab=VOCAB)
    return path, weights


class Server:
    """scratchcap serve's app and worker under Uvicorn in a thread of this process."""

    def __init__(self, checkpoint, *options):
        import uvicorn

        from scratchcap.serve import cli

        self.args = cli._parser().parse_args(["--checkpoint", str(checkpoint), "--port", "0", "--device", "cpu",
                                              *options])
        self.app, self.worker = cli.build(self.args, log=lambda *_: None)
        self.sock = cli.bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="critical", timeout_keep_alive=5,
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs=dict(sockets=[self.sock]), daemon=True)
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            time.sleep(0.01)
        assert self.server.started, "the server did not start"

    def request(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers dict lowercased, parsed JSON or raw bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        if hdrs.get("content-type", "").startswith("application/json"):
            data = json.loads(data)
        return resp.status, hdrs, data

    def caption(self, data, query="", **kw):
        return self.request("POST", "/api/caption" + (f"?{query}" if query else ""), body=data, **kw)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.worker.close()
        self.sock.close()


def png_bytes(colour=(200, 30, 30), size=(40, 30), seed=None):
    if seed is None:
        im = Image.new("RGB", size, colour)
    else:
        im = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(seed=0, size=(64, 48)):
    im = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    return buf.getvalue()


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(w=40000, h=40000):
    """A PNG header that claims w x h pixels and holds none."""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + _chunk(b"IEND", b"")
