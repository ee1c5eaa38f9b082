"""Draws docs/figures/serve-page.png: the page of ``scratchcap serve`` (released model) with a photo captioned and
one word's attention shown, in Debian's Chromium driven by Playwright.

    pip install ".[serve]" playwright && apt-get install -y chromium
    python docs/figures/make_serve_screenshot.py PHOTO [--word K] [--out docs/figures/serve-page.png]
"""
import argparse
import os
import subprocess
import sys


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("photo")
    p.add_argument("--word", type=int, default=2, help="which word's attention to show")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve-page.png"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    server = subprocess.Popen([sys.executable, "-m", "scratchcap.serve", "--port", "0"], stdout=subprocess.PIPE,
                              text=True)
    try:
        url = server.stdout.readline().split()[2]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1000, "height": 720})
            page.goto(url)
            page.set_input_files("#file", args.photo)
            page.wait_for_selector("#caption .word", timeout=60000)
            page.locator("#caption .word").nth(args.word).hover()
            page.wait_for_function(f"document.querySelector('#photo').dataset.word === '{args.word}'")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
