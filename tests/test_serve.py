"""scratchcap serve against a real server on 127.0.0.1 (port 0) with a tiny checkpoint: every row of the error
table, every option, concurrency and dynamic batching, load, faults, and the command itself."""
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra: pip install '.[serve]'")

from serve_fixtures import Server, bomb_png, jpeg_bytes, png_bytes, tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(ckpt):
    s = Server(ckpt[0], "--weights", str(ckpt[1]), "--batch-window-ms", "5", "--read-timeout", "1",
               "--max-upload-mb", "1")
    yield s
    s.close()


def _raw(port, data, read=True, timeout=10):
    """Send raw bytes to the server; the status line of its answer (or '' when it closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if not read:
            return ""
        reply = b""
        while b"\r\n" not in reply:
            part = sock.recv(4096)
            if not part:
                break
            reply += part
        return reply.split(b"\r\n")[0].decode()


# ---- the answer ---------------------------------------------------------------------------------------

def test_a_caption_with_every_field(server):
    status, headers, body = server.caption(png_bytes(), "beam=3&n=2&attention=1")
    assert status == 200, body
    assert body["caption"] == " ".join(body["words"]) and body["words"]
    assert isinstance(body["logprob"], float) and body["beam"] == 3
    assert len(body["hypotheses"]) == 2 and body["hypotheses"][0]["caption"] == body["caption"]
    assert body["hypotheses"][0]["score"] >= body["hypotheses"][1]["score"]  # best first, by what ranked them
    att = np.asarray(body["attention"])
    # one map per word, and one for the <end> that closed the caption (none where max_length cut it)
    assert att.shape[1] == 4 and att.shape[0] in (len(body["words"]), len(body["words"]) + 1)
    assert np.allclose(att.sum(axis=1), 1, atol=1e-4)
    assert body["model"] == "gru-attention" and body["grid"] == [2, 2]
    assert set(body["timing_ms"]) == {"queue", "vgg16", "decode"}
    assert headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in headers["content-security-policy"]


def test_a_sentinel_model_returns_each_words_beta(tmp_path_factory):
    path, weights = tiny_checkpoint(tmp_path_factory.mktemp("serve-adaptive"), "lstm-adaptive")
    s = Server(path, "--weights", str(weights), "--batch-window-ms", "5")
    try:
        status, _, body = s.caption(png_bytes(), "beam=2&attention=1")
    finally:
        s.close()
    assert status == 200, body
    att, beta = np.asarray(body["attention"]), np.asarray(body["sentinel"])
    assert att.shape[1] == 4 and beta.shape == (att.shape[0],) and ((beta > 0) & (beta < 1)).all()
    assert np.allclose(att.sum(axis=1) + beta, 1, atol=1e-4)  # the regions share what the sentinel leaves


def test_defaults_no_attention_unless_asked_and_greedy_on_request(server):
    status, _, body = server.caption(jpeg_bytes())
    assert status == 200 and "attention" not in body and body["beam"] == 3 and len(body["hypotheses"]) == 1
    status, _, greedy = server.caption(jpeg_bytes(), "beam=1")
    assert status == 200 and greedy["beam"] == 1 and len(greedy["hypotheses"]) == 1


def test_model_health_page_and_examples(server):
    status, headers, model = server.request("GET", "/api/model")
    assert status == 200 and model["model"] == "gru-attention" and model["vocabulary"] == 13
    assert model["grid"] == [2, 2] and model["training_data"] == "shapes" and "dev_scores" in model
    assert server.request("GET", "/healthz")[:1] == (200,)
    status, headers, page = server.request("GET", "/")
    assert status == 200 and b'<script src="/app.js"' in page and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, _ = server.request("GET", path)
        assert status == 200 and headers["content-type"].startswith(kind)
    status, _, listing = server.request("GET", "/api/examples")
    assert status == 200 and len(listing["examples"]) == 3
    status, headers, image = server.request("GET", "/examples/" + listing["examples"][0])
    assert status == 200 and image.startswith(b"\x89PNG") and headers["content-type"] == "image/png"
    assert server.caption(image)[0] == 200


# ---- the error table ----------------------------------------------------------------------------------

def test_no_body_and_wrong_lengths(server):
    status, _, body = server.caption(b"")
    assert status == 400 and "no body" in body["error"]
    assert _raw(server.port, b"POST /api/caption HTTP/1.1\r\nHost: x\r\n\r\n").split()[1] == "411"
    chunked = b"POST /api/caption HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert _raw(server.port, chunked).split()[1] == "411"
    assert _raw(server.port, b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n").split()[1] == "400"


def test_too_large_is_refused_from_the_header_before_the_body_is_read(server):
    started = time.monotonic()
    line = _raw(server.port, b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
    assert line.split()[1] == "413" and time.monotonic() - started < 5  # no 50 MB was waited for
    status, _, body = server.caption(b"\xff\xd8\xff" + bytes(2 << 20))  # a real 2 MB body over the 1 MB limit
    assert status == 413 and "limit is 1048576 bytes" in body["error"]


def test_not_an_image_or_not_an_allowed_format_is_415(server):
    for data, why in ((b"hello, not an image", "first bytes"), (b"SIMPLE  =                    T" + bytes(3000),
                                                              "first bytes"), (b"%PDF-1.4\n" + bytes(100), "first")):
        status, _, body = server.caption(data, headers={"Content-Type": "image/png"})  # the type is not trusted
        assert status == 415 and why in body["error"]
    status, _, body = server.caption(png_bytes(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert status == 415 and "multipart" in body["error"]


def test_truncated_and_corrupt_images_are_422(server):
    whole = jpeg_bytes(seed=3, size=(120, 90))
    status, _, body = server.caption(whole[: len(whole) // 2])
    assert status == 422 and "truncated" in body["error"]
    status, _, body = server.caption(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    assert status == 422


def test_a_decompression_bomb_is_413(server):
    status, _, body = server.caption(bomb_png())
    assert status == 413 and "pixels" in body["error"]


@pytest.mark.parametrize("query, message", [("beam=0", "beam must be from 1 to 10"), ("beam=x", "whole number"),
                                            ("beam=11", "beam must be from 1 to 10"), ("beam=2&n=3", "n must be from 1 to 2"),
                                            ("attention=2", "attention must be from 0 to 1"),
                                            ("size=9", "unknown query parameter")])
def test_bad_options_are_400(server, query, message):
    status, _, body = server.caption(png_bytes(), query)
    assert status == 400 and message in body["error"], body


def test_unknown_paths_and_methods_are_json(server):
    status, headers, body = server.request("GET", "/nowhere")
    assert status == 404 and body["status"] == 404 and headers["x-content-type-options"] == "nosniff"
    status, _, body = server.request("GET", "/api/caption")
    assert status == 405 and "GET is not allowed" in body["error"]


def _slow_worker(server, seconds):
    real = server.worker._caption

    def slow(jobs):
        time.sleep(seconds)
        return real(jobs)
    return real, slow


def test_a_full_queue_answers_503_with_retry_after(ckpt):
    s = Server(ckpt[0], "--weights", str(ckpt[1]), "--queue", "1", "--batch-window-ms", "0", "--max-batch", "1")
    try:
        real, slow = _slow_worker(s, 0.5)
        s.worker._caption = slow
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: s.caption(png_bytes()), range(6)))
        statuses = sorted(a[0] for a in answers)
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
        busy = next(a for a in answers if a[0] == 503)
        assert busy[1]["retry-after"] == "1" and "busy" in busy[2]["error"]
    finally:
        s.close()


def test_a_request_past_its_deadline_is_504_and_the_server_goes_on(ckpt):
    s = Server(ckpt[0], "--weights", str(ckpt[1]), "--timeout", "0.3", "--batch-window-ms", "0")
    try:
        real, slow = _slow_worker(s, 1.0)
        s.worker._caption = slow
        status, _, body = s.caption(png_bytes())
        assert status == 504 and "0.3 s" in body["error"]
        s.worker._caption = real
        time.sleep(1.0)
        assert s.caption(png_bytes())[0] == 200
    finally:
        s.close()


# ---- concurrency, batching, load ------------------------------------------------------------------------

def test_concurrent_requests_all_get_their_own_correct_answer(server):
    images = [png_bytes(seed=k, size=(32 + k, 32)) for k in range(6)]
    alone = [server.caption(im, "beam=2")[2]["caption"] for im in images]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda k: (k, server.caption(images[k % 6], "beam=2")), range(24)))
    for k, (status, _, body) in together:
        assert status == 200 and body["caption"] == alone[k % 6]


def test_requests_within_the_window_are_one_batch(ckpt):
    s = Server(ckpt[0], "--weights", str(ckpt[1]), "--batch-window-ms", "300")
    try:
        images = [png_bytes(seed=k) for k in range(4)]
        alone = [s.caption(im, "beam=1")[2] for im in images]
        s.worker.batches.clear()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda im: s.caption(im, "beam=1"), images))
        assert max(s.worker.batches) >= 2  # one VGG-16 forward for several requests
        assert any(body["batch"] >= 2 for _, _, body in together)
        for (status, _, body), single in zip(together, alone):
            assert status == 200 and body["words"] == single["words"]
            assert body["logprob"] == pytest.approx(single["logprob"], rel=1e-4)  # float32, another batch shape
    finally:
        s.close()


def _rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="resident memory is read from /proc")
def test_load_200_requests_from_8_clients_every_answer_documented_memory_flat(server):
    good, bad = png_bytes(seed=1), [b"nope", bomb_png(), jpeg_bytes()[:200], b""]
    mix = [good if k % 3 else bad[(k // 3) % len(bad)] for k in range(200)]
    for data in mix[:40]:  # warm up: allocator pools and caches fill before the baseline
        server.caption(data, timeout=30)
    before = _rss_mb()
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda d: server.caption(d, timeout=30)[0], mix))
    assert time.monotonic() - start < 120
    assert set(statuses) <= {200, 400, 413, 415, 422, 503} and statuses.count(200) >= 100
    grown = _rss_mb() - before
    assert grown < 40, f"resident memory grew {grown:.1f} MB over 200 requests"


# ---- faults -------------------------------------------------------------------------------------------

def test_a_client_that_disconnects_mid_upload_leaves_the_server_serving(server):
    body = jpeg_bytes(seed=5, size=(200, 150))
    _raw(server.port, b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
         + body[:300], read=False)
    assert server.caption(png_bytes())[0] == 200


def test_a_body_sent_too_slowly_is_408_and_the_server_goes_on(server):
    body = png_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /api/caption HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
        started = time.monotonic()
        reply = sock.recv(4096).split(b"\r\n")[0].decode()
    assert reply.split()[1] == "408" and time.monotonic() - started < 5
    assert server.caption(png_bytes())[0] == 200


def test_a_worker_that_raises_fails_that_request_only(server):
    real = server.worker._caption
    calls = []

    def broken(jobs):
        calls.append(len(jobs))
        raise RuntimeError("simulated failure in the model")

    server.worker._caption = broken
    try:
        status, _, body = server.caption(png_bytes())
    finally:
        server.worker._caption = real
    assert status == 500 and "simulated failure" in body["error"] and calls
    assert server.request("GET", "/healthz")[0] == 200 and server.caption(png_bytes())[0] == 200


def test_nothing_a_user_sends_is_written_to_disk(server, monkeypatch, tmp_path):
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    before = set(os.listdir(os.getcwd()))
    for data in (png_bytes(), jpeg_bytes(size=(600, 400)), bomb_png(), b"junk" * 1000):
        server.caption(data)
    assert os.listdir(spool) == [] and set(os.listdir(os.getcwd())) == before


# ---- the command --------------------------------------------------------------------------------------

def test_the_command_binds_loopback_by_default_and_serves(ckpt, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "scratchcap.serve", "--checkpoint", str(ckpt[0]), "--weights",
                             str(ckpt[1]), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving on http://127.0.0.1:"), line + proc.stderr.read()
        port = int(line.split(":")[2].split("/")[0])
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
    finally:
        proc.terminate()
        proc.wait(10)
    assert os.listdir(tmp_path) == []


def test_a_missing_model_or_weights_fails_at_start_up(ckpt, tmp_path):
    for extra, message in ((["--checkpoint", str(tmp_path / "none.h5")], "does not exist"),
                           (["--checkpoint", str(ckpt[0]), "--weights", str(tmp_path / "w.h5")], "does not exist")):
        proc = subprocess.run([sys.executable, "-m", "scratchcap.serve", "--port", "0", *extra], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_several_checkpoints_are_served_as_an_ensemble(ckpt):
    from scratchcap.ensemble import Ensemble
    from scratchcap.serve import cli

    args = cli._parser().parse_args(["--checkpoint", str(ckpt[0]), str(ckpt[0]), "--weights", str(ckpt[1])])
    app, worker = cli.build(args)
    try:
        assert isinstance(worker.captioner.model, Ensemble) and len(worker.captioner.model.members) == 2
    finally:
        worker.close()


def test_the_worker_thread_is_the_only_one_that_captions(server):
    seen = []
    real = server.worker._caption

    def spy(jobs):
        seen.append(threading.current_thread().name)
        return real(jobs)

    server.worker._caption = spy
    try:
        assert server.caption(png_bytes())[0] == 200
    finally:
        server.worker._caption = real
    assert seen == ["scratchcap-caption-worker"]


def test_api_model_reports_the_dev_scores_a_release_recorded(ckpt, tmp_path):
    from scratchcap.checkpoint import load_checkpoint, save_checkpoint
    from scratchcap.data import Vocabulary

    c = load_checkpoint(ckpt[0])
    path = save_checkpoint(tmp_path / "released.h5", model=c["model"], params=c["params"], config=c["config"],
                           vocab=Vocabulary.from_json(c["vocabulary"]),
                           extra={"dev_scores": {"Bleu_4": 0.25, "CIDEr": 0.5, "decoding": "greedy"}})
    s = Server(path, "--weights", str(ckpt[1]))
    try:
        status, _, model = s.request("GET", "/api/model")
    finally:
        s.close()
    assert status == 200 and model["dev_scores"] == {"Bleu_4": 0.25, "CIDEr": 0.5, "decoding": "greedy"}
    assert model["checkpoint"] == "released.h5"
