"""Make docs/demo.png and docs/demo-full.png: screenshots of the real web demo on the bundled model.

    .venv/bin/python docs/make_screenshot.py            # -> docs/demo.png, docs/demo-full.png
    .venv/bin/python docs/make_screenshot.py --image examples/shapes_3.jpg --word cross --out-dir shots/

It starts demo/app.py (the program `make run` serves) on a free port of 127.0.0.1, opens the
page in headless Chromium, uploads the image, presses Caption, picks a word, waits until the
caption, that word's attention overlay and the overlays of every word are drawn, and saves
two PNGs of the page: demo.png from the title down to the large overlay (the README's picture),
demo-full.png down to the table of best captions and the per-word gallery (docs/demo.md).
Needs chromium and chromedriver, as the demo's browser test does (`make system-deps` installs
them on Debian). Nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT / "examples" / "shapes_8.jpg"
DEFAULT_OUT_DIR = ROOT / "docs"
START_TIMEOUT_S = 240  # importing gradio and torch and loading the model on a busy 2-core machine
PAGE_TIMEOUT_S = 120


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the web demo captioning an example image.")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="image to upload (default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help="folder for demo.png and demo-full.png (default: docs/)")
    parser.add_argument("--width", type=int, default=1280, help="browser width in CSS pixels (default 1280)")
    parser.add_argument("--word", default="star",
                        help="word whose attention to show large, if the caption has it (default: %(default)s; "
                             "otherwise the demo's own choice, the first content word)")
    parser.add_argument("--port", type=int, default=None, help="port for the demo (default: a free one)")
    args = parser.parse_args(argv)

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        print("error: needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver, "
              "or `make system-deps`)", file=sys.stderr)
        return 2
    if not args.image.is_file():
        print(f"error: no image at {args.image}", file=sys.stderr)
        return 2

    port = args.port or _free_port()
    url = f"http://127.0.0.1:{port}/"
    # The real program, as `make run` starts it; one torch thread leaves a core to the browser.
    server = subprocess.Popen([sys.executable, str(ROOT / "demo" / "app.py"), "--port", str(port), "--threads", "1"],
                              cwd=ROOT, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        _wait_for_server(url, server)
        shots = _screenshots(url, args.image.resolve(), args.word, args.width, chromium, chromedriver)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, png in shots.items():
        (args.out_dir / name).write_bytes(png)
        print(f"wrote {args.out_dir / name}", file=sys.stderr)
    return 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"error: the demo exited with code {server.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise SystemExit(f"error: the demo did not answer at {url} within {START_TIMEOUT_S} s")


def _screenshots(url: str, image: Path, word: str, width: int, chromium: str, chromedriver: str) -> dict[str, bytes]:
    """Upload `image`, caption it, pick `word`, wait for every overlay, and return the PNGs
    {"demo.png": title to the large overlay, "demo-full.png": title to the per-word gallery}."""
    from PIL import Image  # noqa: PLC0415
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={width},1600"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    wait = WebDriverWait(driver, PAGE_TIMEOUT_S)
    try:
        driver.get(url)
        file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        file_input.send_keys(str(image))
        # The upload must have landed before the click, or the button captions nothing.
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "is ready"))
        driver.find_element(By.CSS_SELECTOR, "#caption-button").click()

        caption_box = (By.CSS_SELECTOR, "#caption textarea")
        wait.until(lambda d: d.find_element(*caption_box).get_attribute("value"))
        caption = driver.find_element(*caption_box).get_attribute("value")
        words = len(caption.split())
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "log-probability"))
        wait.until(lambda d: _all_drawn(d, "#overlay img", 1))
        wait.until(lambda d: _all_drawn(d, "#all-words img", words))
        if word in caption.split():
            choice = (By.XPATH, f"//*[@id='words']//label[normalize-space()='{word}']")
            wait.until(ec.element_to_be_clickable(choice)).click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "overlay"), f'Attention for "{word}"'))
            wait.until(lambda d: _all_drawn(d, "#overlay img", 1))
        time.sleep(1)  # let the last layout settle (image sizes, table widths)

        overlay_bottom, bottom = (_bottom(driver, selector) for selector in ("#overlay", "#all-words"))
        bottom = min(bottom, driver.execute_script("return document.documentElement.scrollHeight"))
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": bottom, "scale": 1},
        })
        print(f"caption: {caption}", file=sys.stderr)
    finally:
        driver.quit()

    page = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    return {"demo.png": _png(page.crop((0, 0, page.width, min(overlay_bottom, page.height)))),
            "demo-full.png": _png(page)}


def _bottom(driver, selector: str, margin: int = 16) -> int:
    """Page y coordinate (CSS pixels) just below the element `selector`."""
    return int(driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return Math.ceil(r.bottom + window.scrollY) + arguments[1];", selector, margin))


def _png(picture) -> bytes:
    """A palette PNG: small, and the page has few colours besides the overlays' heat scale."""
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def _all_drawn(driver, selector: str, count: int) -> bool:
    """Whether at least `count` images match `selector` and every one has finished loading."""
    return bool(driver.execute_script(
        "const images = [...document.querySelectorAll(arguments[0])];"
        "return images.length >= arguments[1] && images.every(i => i.complete && i.naturalWidth > 0);",
        selector, count))


if __name__ == "__main__":
    sys.exit(main())
