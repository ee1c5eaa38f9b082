"""The web application: the page, ``POST /api/caption``, ``GET /api/model`` and ``GET /healthz`` (Starlette).

Every error is JSON ``{"error": message, "status": code}`` with a message a person can
act on. The request body is read into memory only, never to disk: its size is checked
against the limit from ``Content-Length`` before a byte of it is read, again while it
is read, and the read has a time limit, so a client that trickles its body cannot hold
a connection for ever. Images are decoded off the event loop, checked by their magic
bytes (the Content-Type is not trusted), and captioned by the CaptionWorker.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from importlib import resources

from ..images import FORMATS, ImageError, decode_image
from .worker import Busy, DeadlineExceeded

# First bytes of the formats images.FORMATS opens; anything else is refused before Pillow sees it.
MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
}
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
              "/style.css": ("style.css", "text/css"), "/favicon.svg": ("favicon.svg", "image/svg+xml"),
              "/favicon.ico": ("favicon.svg", "image/svg+xml")}


@dataclass
class Limits:
    max_upload_bytes: int = 10 << 20
    max_pixels: int | None = None
    read_timeout: float = 10.0  # seconds for the whole body
    deadline: float = 30.0  # seconds a request may wait for its caption
    max_beam: int = 10


class HTTPError(Exception):
    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def sniff(data: bytes):
    """The format named by the first bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in MAGIC:
        if data.startswith(magic):
            return name
    return None


def _int_param(query, name, default, lo, hi):
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"{name} must be a whole number from {lo} to {hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise HTTPError(400, f"{name} must be from {lo} to {hi}, got {value}")
    return value


async def read_body(request, limits: Limits) -> bytes:
    """The whole body, in memory, or HTTPError: 411 without a length, 413 over the limit, 408 too slow."""
    length = request.headers.get("content-length")
    if length is None:
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            raise HTTPError(411, "send a Content-Length header with the image (chunked uploads are not taken)")
        raise HTTPError(411, "no Content-Length header: send the image bytes as the request body")
    try:
        expected = int(length)
    except ValueError:
        raise HTTPError(400, f"Content-Length must be a number of bytes, got {length!r}") from None
    if expected < 0:
        raise HTTPError(400, f"Content-Length must not be negative, got {expected}")
    if expected == 0:
        raise HTTPError(400, "the request has no body: send the image bytes as the request body")
    if expected > limits.max_upload_bytes:
        raise HTTPError(413, f"the upload is {expected} bytes; the limit is {limits.max_upload_bytes} bytes "
                             f"({limits.max_upload_bytes / 2 ** 20:g} MB)")
    chunks, got = [], 0
    stream = request.stream().__aiter__()
    until = time.monotonic() + limits.read_timeout
    while True:
        left = until - time.monotonic()
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(left, 0.001))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise HTTPError(408, f"the body took longer than {limits.read_timeout:g} s to arrive") from None
        got += len(chunk)
        if got > expected:
            raise HTTPError(400, f"the body is longer than its Content-Length of {expected} bytes")
        chunks.append(chunk)
    if got != expected:
        raise HTTPError(400, f"the body has {got} bytes, its Content-Length says {expected}")
    return b"".join(chunks)


def create_app(worker, model_info: dict, limits: Limits | None = None, default_beam=3, examples=None):
    """The Starlette application around a CaptionWorker. ``examples``: {name: PNG bytes} for the page."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    limits = limits or Limits()
    examples = examples or {}
    page = {path: (resources.files(__package__).joinpath("page", name).read_bytes(), kind)
            for path, (name, kind) in PAGE_FILES.items()}

    def error(status, message, headers=None):
        return JSONResponse({"error": message, "status": status}, status_code=status,
                            headers={**SECURITY_HEADERS, **(headers or {})})

    def ok(body):
        return JSONResponse(body, headers=SECURITY_HEADERS)

    async def caption(request):
        try:
            q = request.query_params
            unknown = sorted(set(q) - {"beam", "n", "attention"})
            if unknown:
                raise HTTPError(400, f"unknown query parameter(s) {', '.join(unknown)}: use beam, n, attention")
            beam = _int_param(q, "beam", default_beam, 1, limits.max_beam)
            n = _int_param(q, "n", 1, 1, beam)
            attention = _int_param(q, "attention", 0, 0, 1)
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind.startswith("multipart/"):
                raise HTTPError(415, "send the image bytes themselves as the body, not a multipart form")
            data = await read_body(request, limits)
            if sniff(data) is None:
                raise HTTPError(415, "not an image in an accepted format (" + ", ".join(FORMATS) + "): its first "
                                     "bytes match none of them")
            try:
                image = await run_in_threadpool(decode_image, data, "the upload", limits.max_pixels)
            except ImageError as exc:
                if exc.kind == "too_large":
                    raise HTTPError(413, f"{exc.reason}; the server takes at most --max-pixels") from None
                raise HTTPError(415 if exc.kind == "format" else 422, exc.reason) from None
            del data
            try:
                future = worker.submit(image, beam=beam, n=n, attention=bool(attention), timeout=limits.deadline)
            except Busy as exc:
                raise HTTPError(503, f"the server is busy ({exc}); try again in a second",
                                {"Retry-After": "1"}) from None
            try:
                result = await asyncio.wait_for(asyncio.wrap_future(future), timeout=limits.deadline)
            except (asyncio.TimeoutError, DeadlineExceeded):
                future.cancel()
                raise HTTPError(504, f"no caption within {limits.deadline:g} s; the server is overloaded") from None
            except Exception as exc:  # the model failed on this batch; the server goes on
                raise HTTPError(500, f"captioning failed: {type(exc).__name__}: {exc}") from None
            body = dict(result, model=model_info["model"], grid=model_info["grid"], beam=beam)
            if not attention:
                body.pop("attention", None)
            return ok(body)
        except HTTPError as exc:
            return error(exc.status, exc.message, exc.headers)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; the connection is gone

    async def model(request):
        return ok(model_info)

    async def healthz(request):
        alive = worker.alive()
        return JSONResponse({"status": "ok" if alive else "worker stopped"}, status_code=200 if alive else 503,
                            headers=SECURITY_HEADERS)

    async def static(request):
        body, kind = page[request.url.path]
        return Response(body, media_type=kind, headers=SECURITY_HEADERS)

    async def example_list(request):
        return ok({"examples": sorted(examples)})

    async def example(request):
        name = request.path_params["name"]
        if name not in examples:
            return error(404, f"no example named {name!r}")
        return Response(examples[name], media_type="image/png", headers=SECURITY_HEADERS)

    async def http_error(request, exc):
        return error(exc.status_code, {404: f"nothing at {request.url.path}",
                                       405: f"{request.method} is not allowed on {request.url.path}"}.get(
                                           exc.status_code, str(exc.detail)))

    routes = [Route("/api/caption", caption, methods=["POST"]), Route("/api/model", model, methods=["GET"]),
              Route("/healthz", healthz, methods=["GET"]), Route("/api/examples", example_list, methods=["GET"]),
              Route("/examples/{name}", example, methods=["GET"])]
    routes += [Route(path, static, methods=["GET"]) for path in PAGE_FILES]
    return Starlette(routes=routes, exception_handlers={StarletteHTTPException: http_error})


def model_summary(captioner, checkpoint_path) -> dict:
    """What GET /api/model tells: read from the checkpoint (its dev scores where the release recorded them)."""
    import os

    cfg, attrs = captioner.cfg, captioner.attrs
    scores = attrs.get("dev_scores")
    if isinstance(scores, str):
        scores = json.loads(scores)
    if not scores and captioner.progress.get("best") is not None:
        scores = {"CIDEr (greedy, at model selection)": captioner.progress["best"]}
    paths = checkpoint_path if isinstance(checkpoint_path, (list, tuple)) else [checkpoint_path]
    return dict(model=captioner.name if len(paths) == 1 else f"ensemble of {len(paths)}: {captioner.name}, ...",
                checkpoint=" + ".join(os.path.basename(str(p)) for p in paths), vocabulary=len(captioner.vocab),
                grid=list(captioner.grid), layer=cfg["layer"], fine_tuned=cfg.get("fine_tune"),
                image_size=cfg["image_size"],
                training_data=cfg.get("dataset"), dev_scores=scores or {},
                attention=captioner.name != "lstm-noattention")
