"""python benchmarks/serve_bench.py [--requests 48] [--json benchmarks/results/serve-COMMIT.json]

Captions per second and latency (p50, p95) of ``scratchcap serve`` on the released model, at 1, 4 and
8 concurrent clients, with dynamic batching (--batch-window-ms 20) and without it (0). Each setting
runs its own server process on 127.0.0.1 (port 0), warmed up first; the clients are threads of this
process that POST the same photo-sized JPEG again and again over fresh connections. Loopback only.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]
from scratchcap.atomic import write_json  # noqa: E402


def photo_jpeg(seed=0, size=(500, 375)):
    """A photo-sized JPEG with some structure (smoothed noise), so the decoder has something to say."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)).resize(size)
    buf = io.BytesIO()
    im.filter(ImageFilter.GaussianBlur(3)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def start_server(window_ms, extra):
    proc = subprocess.Popen([sys.executable, "-m", "scratchcap.serve", "--port", "0", "--batch-window-ms",
                             str(window_ms), "--queue", "64", "--timeout", "120", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("serving on"):
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()}")
    return proc, int(line.split(":")[2].split("/")[0])


def post(port, body, beam):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", f"/api/caption?beam={beam}", body=body, headers={"Content-Type": "image/jpeg"})
        resp = conn.getresponse()
        data = json.loads(resp.read())
        return resp.status, data
    finally:
        conn.close()


def run_clients(port, body, clients, requests, beam):
    latencies, batches, errors = [], [], []
    lock, todo = threading.Lock(), list(range(requests))

    def client():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            t0 = time.perf_counter()
            status, data = post(port, body, beam)
            dt = time.perf_counter() - t0
            with lock:
                if status == 200:
                    latencies.append(dt)
                    batches.append(data["batch"])
                else:
                    errors.append(status)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) * 1e3
    return dict(clients=clients, requests=requests, ok=len(latencies), errors=errors, wall_s=round(wall, 3),
                captions_per_s=round(len(latencies) / wall, 3), p50_ms=round(float(np.percentile(lat, 50)), 1),
                p95_ms=round(float(np.percentile(lat, 95)), 1), mean_batch=round(float(np.mean(batches)), 2))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/serve_bench.py", description=__doc__.splitlines()[2])
    p.add_argument("--requests", type=int, default=48, help="requests per setting")
    p.add_argument("--clients", default="1,4,8")
    p.add_argument("--windows", default="0,20", help="batch windows to compare, in ms")
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--checkpoint", help="default: the released model")
    p.add_argument("--json")
    args = p.parse_args(argv)
    extra = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    body = photo_jpeg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip() or None
    rows = []
    for window in (float(w) for w in args.windows.split(",")):
        proc, port = start_server(window, extra)
        try:
            for _ in range(3):
                post(port, body, args.beam)  # warm-up
            for clients in (int(c) for c in args.clients.split(",")):
                row = dict(batch_window_ms=window, **run_clients(port, body, clients, args.requests, args.beam))
                rows.append(row)
                print(f"window {window:>4g} ms, {clients} clients: {row['captions_per_s']:.2f} captions/s, "
                      f"p50 {row['p50_ms']:.0f} ms, p95 {row['p95_ms']:.0f} ms, mean batch {row['mean_batch']}",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
    from scratchcap.threads import resolve_threads
    info = dict(commit=commit, cpus=os.cpu_count(), threads=resolve_threads(), beam=args.beam, image="500x375 JPEG",
                checkpoint=args.checkpoint or "released", python=sys.version.split()[0])
    if args.json:
        write_json(args.json, dict(info=info, results=rows), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
