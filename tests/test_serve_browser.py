"""The page in a real browser: Debian's Chromium driven by Playwright (which downloads no browser here).

Skipped, with the reason shown, where Playwright or a Chromium cannot be had; .ci/run installs
Chromium with apt-get where it is missing. SCRATCHCAP_SCREENSHOT=PATH keeps the screenshot.
"""
import base64
import os
import shutil

import pytest

pytest.importorskip("starlette", reason="the serve extra: pip install '.[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra brings playwright")

from serve_fixtures import Server, jpeg_bytes, png_bytes, tiny_checkpoint  # noqa: E402

CHROMIUM = next((p for p in (os.environ.get("SCRATCHCAP_CHROMIUM"), shutil.which("chromium"),
                             shutil.which("chromium-browser"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install -y chromium)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ckpt, weights = tiny_checkpoint(tmp_path_factory.mktemp("browser"))
    s = Server(ckpt, "--weights", str(weights), "--batch-window-ms", "0")
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        except Exception as exc:  # a browser that will not start here is a skip, with its reason
            pytest.skip(f"Chromium did not start: {exc}")
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    pg = context.new_page()
    pg.console_errors = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
    pg.goto(f"http://127.0.0.1:{server.port}/")
    yield pg
    context.close()


def _canvas(pg):
    return pg.eval_on_selector("#photo", "c => c.toDataURL()")


def test_upload_caption_hover_and_screenshot(page, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(seed=1, size=(160, 120)))
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#caption .word", timeout=20000)
    words = page.locator("#caption .word")
    assert words.count() >= 1 and page.locator("#hypotheses li").count() >= 1
    before = _canvas(page)
    words.nth(0).hover()
    page.wait_for_function("document.querySelector('#photo').dataset.word === '0'")
    after_first = _canvas(page)
    assert after_first != before  # the overlay of the first word is drawn
    assert "peak attention" in page.text_content("#peak")
    if words.count() > 1:
        words.nth(1).hover()
        page.wait_for_function("document.querySelector('#photo').dataset.word === '1'")
    assert page.locator("#error").is_hidden()
    shot = os.environ.get("SCRATCHCAP_SCREENSHOT") or str(tmp_path / "page.png")
    page.screenshot(path=shot, full_page=True)
    assert os.path.getsize(shot) > 1000
    assert page.console_errors == []


def test_drop_an_image_through_a_data_transfer(page):
    data = base64.b64encode(png_bytes(seed=4, size=(50, 40))).decode()
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        const drop = document.querySelector("#drop");
        drop.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
        drop.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", data)
    page.wait_for_selector("#caption .word", timeout=20000)
    assert page.locator("#result").is_visible() and page.console_errors == []


def test_an_error_from_the_api_is_a_readable_message_and_words_are_text(page, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"<img src=x onerror=alert(1)> not an image")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#error:not([hidden])", timeout=20000)
    text = page.text_content("#error")
    assert "accepted format" in text and "HTTP 415" in text
    assert page.locator("#error img").count() == 0  # inserted as text, never as HTML


def test_examples_and_the_beam_control(page):
    page.wait_for_selector("#examples button", timeout=10000)
    assert page.locator("#examples button").count() == 3
    page.select_option("#beam", "5")
    page.locator("#examples button").nth(0).click()
    page.wait_for_selector("#caption .word", timeout=20000)
    assert "beam 5" in page.text_content("#timing") and page.console_errors == []


def test_usable_on_a_phone_sized_viewport(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(f"http://127.0.0.1:{server.port}/")
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= 375  # nothing wider than the screen
    assert pg.locator("#file").is_visible() and pg.locator("#beam").is_visible()
    context.close()
