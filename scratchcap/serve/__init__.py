"""``scratchcap serve``: a captioning web page and JSON API on the released model (or any checkpoint).

    pip install ".[serve]" && scratchcap serve            # http://127.0.0.1:8000/

The pieces, in the order a request meets them:
- cli.py: the options, loading the model once at start-up, binding the socket (127.0.0.1 by default);
- app.py: the Starlette application: the page, the API, the error table, the limits;
- worker.py: the one thread that owns the model, a bounded queue and dynamic batching;
- page/: the self-contained page (HTML, JS, CSS; no CDN, works offline).
Starlette and Uvicorn are the optional extra ``serve``; nothing here imports them at import time.
"""
from .cli import main

__all__ = ["main"]
