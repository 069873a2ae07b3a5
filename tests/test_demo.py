"""The web demo (demo/app.py): prediction, stored overlays, the served app, and a real browser.

The app is launched once per module on a free local port and driven with gradio_client; the
browser test (headless Chromium via Selenium) is skipped only where Chromium or chromedriver is
not installed. Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from PIL import Image

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
sys.path.insert(0, str(DEMO_DIR))
import app  # noqa: E402 - demo/ is a script folder, not a package

from captioner.data.shapes import parse_caption  # noqa: E402
from captioner.inference import Captioner  # noqa: E402

EXAMPLES = app.EXAMPLES_DIR
OBJECTS = json.loads((EXAMPLES / "objects.json").read_text())
# Scenes of one or two objects; the bundled model is most reliable there (docs/shapes-world.md).
SIMPLE_EXAMPLES = sorted(name for name, objects in OBJECTS.items() if len(objects) <= 2)
LONE_TRIANGLE = EXAMPLES / "shapes_5.jpg"
BROWSER_TIMEOUT_S = 60

# Gradio 6.31's queue calls pandas 3 APIs that pandas has deprecated; nothing of ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


@pytest.fixture(scope="module")
def captioner():
    """The bundled model on CPU, with one torch thread as the demo uses on a 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(app.default_threads())
    yield Captioner.load(None, "cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_calls(captioner):
    """A list that grows by one entry every time the encoder runs, i.e. every time the model is used."""
    calls = []
    handle = captioner.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


@pytest.fixture(scope="module")
def server(captioner, model_calls):
    """URL of the demo served on a free local port for this module's tests."""
    demo = app.build_demo(captioner)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                            quiet=True, **app.launch_options())
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client  # noqa: PLC0415

    return Client(server, verbose=False, download_files=False, analytics_enabled=False)


@pytest.fixture
def bad_uploads(tmp_path):
    """Files a visitor might upload that are not readable images, each named like a photo."""
    text = tmp_path / "notes.jpg"
    text.write_text("these are my holiday notes, not a picture\n")
    truncated = tmp_path / "truncated.jpg"
    data = LONE_TRIANGLE.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return {"notes.jpg": text, "truncated.jpg": truncated, "empty.png": empty}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _caption_via_client(client, path: Path) -> tuple:
    from gradio_client import handle_file  # noqa: PLC0415

    return client.predict(handle_file(str(path)), 3, 20, 3, api_name="/caption")


# --- the prediction function ----------------------------------------------------------------


@pytest.mark.parametrize("name", SIMPLE_EXAMPLES)
def test_predict_names_the_objects_with_one_overlay_per_word(captioner, name):
    prediction = app.predict(captioner, str(EXAMPLES / name), beam_size=3, max_len=20, top_n=3)

    assert prediction.ok, prediction.error
    truth = Counter((obj["colour"], obj["shape"]) for obj in OBJECTS[name])
    named = Counter(parse_caption(prediction.text))
    if len(OBJECTS[name]) == 1:  # lone objects are named right (all of them on the 1,000-image test set)
        assert named == truth, prediction.text
    else:  # 2-object scenes: the model sometimes gets an object wrong (docs/shapes-world.md)
        assert sum((named & truth).values()) >= 1, prediction.text
    assert prediction.text == " ".join(prediction.words)
    assert len(prediction.overlays) == len(prediction.words) > 0
    # The examples are 224 px, under the display limit, so they are shown at their own size.
    assert prediction.image.size == Image.open(EXAMPLES / name).size
    assert all(picture.size == prediction.image.size and picture.mode == "RGB" for picture in prediction.overlays)
    # Two different words looked at different places.
    assert len({picture.tobytes() for picture in prediction.overlays}) > 1
    assert 1 <= len(prediction.alternatives) <= 3
    assert prediction.alternatives[0] == (prediction.text, prediction.log_prob, prediction.score)
    assert prediction.log_prob < 0 and prediction.score <= 0


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_predict_shrinks_large_uploads_for_display_and_overlays(captioner, tmp_path, suffix):
    large = tmp_path / f"large{suffix}"
    Image.open(LONE_TRIANGLE).convert("RGB").resize((2400, 1200)).save(large)

    prediction = app.predict(captioner, str(large))

    assert prediction.ok, prediction.error
    assert prediction.image.size == (app.DISPLAY_MAX_SIDE, app.DISPLAY_MAX_SIDE // 2)
    assert {picture.size for picture in prediction.overlays} == {prediction.image.size}
    assert parse_caption(prediction.text) == [("yellow", "triangle")]


def test_uploads_are_turned_upright_from_their_exif_orientation(tmp_path):
    # Stored 1200 wide and 600 high, with EXIF orientation 6: viewers show it rotated, 600 x 1200.
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (1200, 600), "yellow").save(sideways, exif=exif)

    assert app.load_upload(str(sideways)).size == (app.DISPLAY_MAX_SIDE // 2, app.DISPLAY_MAX_SIDE)


def test_predict_accepts_bytes_and_pil_images(captioner):
    from_path = app.predict(captioner, str(LONE_TRIANGLE))
    from_bytes = app.predict(captioner, LONE_TRIANGLE.read_bytes())
    from_pil = app.predict(captioner, Image.open(LONE_TRIANGLE))
    assert from_path.text == from_bytes.text == from_pil.text


def test_top_n_is_capped_by_the_beam_size(captioner):
    # A beam of 2 holds exactly 2 hypotheses (finished, or filled with unfinished ones), so
    # asking for 5 gives 2 distinct captions, best first; without the cap the search would refuse.
    prediction = app.predict(captioner, str(LONE_TRIANGLE), beam_size=2, top_n=5)
    assert prediction.ok, prediction.error
    texts, scores = [a[0] for a in prediction.alternatives], [a[2] for a in prediction.alternatives]
    assert len(texts) == 2 and len(set(texts)) == 2 and scores == sorted(scores, reverse=True)


def test_selecting_a_word_returns_its_stored_overlay_without_running_the_model(captioner, model_calls):
    prediction = app.predict(captioner, str(LONE_TRIANGLE))
    calls = len(model_calls)

    for index in reversed(range(len(prediction.words))):
        assert app.select_word(prediction, index) is prediction.overlays[index]
    assert app.select_word(prediction, len(prediction.words)) is None
    assert app.select_word(None, 0) is None

    assert len(model_calls) == calls


def test_the_first_word_shown_is_a_content_word():
    assert app.first_content_word(["a", "picture", "showing", "a", "yellow", "triangle"]) == 4
    assert app.first_content_word(["a", "the"]) == 0


def test_unreadable_uploads_get_a_friendly_message(captioner, bad_uploads):
    for name, path in bad_uploads.items():
        prediction = app.predict(captioner, str(path))
        assert not prediction.ok and prediction.overlays == [] and prediction.text == ""
        assert name in prediction.error and "Could not read" in prediction.error
        # The message names the visitor's file, not the server's copy of it.
        assert str(path.parent) not in prediction.error
    assert "text" in app.predict(captioner, str(bad_uploads["notes.jpg"])).error
    assert "truncated" in app.predict(captioner, str(bad_uploads["truncated.jpg"])).error
    assert not app.predict(captioner, None).ok


def test_model_card_says_which_model_is_loaded(captioner):
    card, banner = app.model_card(captioner), app.model_banner(captioner)
    assert "shapes" in banner and "photos" in banner
    assert "shapes world" in card and "efficientnet_lite0" in card and "blocks.3" in card
    assert f"{len(captioner.vocab)} words" in card
    recall = captioner.evaluation["shapes"]["object_recall"]
    assert f"{recall:.3f}" in card and "CIDEr" in card and "BLEU-4" in card
    assert "captioner demo --checkpoint runs/coco/checkpoint_best.pt" in card


def test_main_reports_a_missing_checkpoint(tmp_path, capsys):
    threads = torch.get_num_threads()  # main sets the process's thread count
    try:
        assert app.main(["--checkpoint", str(tmp_path / "missing.pt"), "--port", str(_free_port())]) == 2
    finally:
        torch.set_num_threads(threads)
    assert "missing.pt" in capsys.readouterr().err


def test_main_reports_a_port_in_use(server, capsys):
    threads = torch.get_num_threads()
    try:
        assert app.main(["--port", str(urlparse(server).port)]) == 2
    finally:
        torch.set_num_threads(threads)
    assert "--port" in capsys.readouterr().err


# --- the served app -------------------------------------------------------------------------


def test_client_gets_the_caption_and_word_selection_does_not_rerun_the_model(client, model_calls):
    caption, status, words, _focus, table, gallery, *_ = _caption_via_client(client, LONE_TRIANGLE)

    assert parse_caption(caption) == [("yellow", "triangle")]
    assert "log-probability" in status
    assert [label for label, _ in words["choices"]] == caption.split()
    assert len(gallery) == len(caption.split())
    assert table["data"][0][1] == caption

    calls = len(model_calls)
    shown = client.predict(len(caption.split()) - 1, api_name="/select_word")
    assert "triangle" in shown["label"]
    assert len(model_calls) == calls


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(client, bad_uploads):
    for name, path in bad_uploads.items():
        caption, status, *_ = _caption_via_client(client, path)
        assert caption == ""
        assert "Could not read" in status and name in status

    caption, status, *_ = _caption_via_client(client, LONE_TRIANGLE)
    assert parse_caption(caption) == [("yellow", "triangle")]


def test_the_page_loads_no_google_fonts(server):
    for path in ("", "config", "theme.css"):
        with urllib.request.urlopen(server.rstrip("/") + "/" + path, timeout=30) as response:
            body = response.read().decode("utf-8", errors="replace")
        assert "googleapis" not in body, f"/{path} refers to Google Fonts"


# --- a real browser -------------------------------------------------------------------------


def test_browser_upload_caption_and_attention(server, tmp_path):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,2000"):
        options.add_argument(argument)
    # Every request the page makes, to check that none leaves this machine.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    wait = WebDriverWait(driver, BROWSER_TIMEOUT_S)
    try:
        driver.get(server)
        file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        file_input.send_keys(str(LONE_TRIANGLE))
        # The upload must have landed before the click, or the button captions nothing.
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "is ready"))
        assert driver.find_element(By.CSS_SELECTOR, "#caption textarea").get_attribute("value") == ""
        driver.find_element(By.CSS_SELECTOR, "#caption-button").click()

        caption_box = (By.CSS_SELECTOR, "#caption textarea")
        wait.until(lambda d: "triangle" in (d.find_element(*caption_box).get_attribute("value") or ""))
        caption = driver.find_element(*caption_box).get_attribute("value")
        overlay = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#overlay img")))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
        assert parse_caption(caption) == [("yellow", "triangle")]
        assert overlay.get_attribute("src").startswith(server.rstrip("/"))

        # Picking another word swaps the overlay.
        triangle = (By.XPATH, "//*[@id='words']//label[normalize-space()='triangle']")
        wait.until(ec.element_to_be_clickable(triangle)).click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "overlay"), 'Attention for "triangle"'))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#all-words img")) >= len(caption.split())

        screenshot = tmp_path / "demo.png"
        assert driver.save_screenshot(str(screenshot))
        assert Image.open(io.BytesIO(screenshot.read_bytes())).size[0] > 0

        # A file that is not an image is explained as soon as it is uploaded.
        driver.find_element(By.CSS_SELECTOR, "#upload button[aria-label='Clear']").click()
        wait.until(lambda d: d.find_element(*caption_box).get_attribute("value") == "")
        not_an_image = tmp_path / "notes.jpg"
        not_an_image.write_text("these are my holiday notes, not a picture\n")
        file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
        file_input.send_keys(str(not_an_image))
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Could not read notes.jpg"))

        assert _external_requests(driver, server) == []
    finally:
        driver.quit()


def _external_requests(driver, server: str) -> list[str]:
    """URLs the page requested from anywhere but the demo's own server."""
    own = urlparse(server).netloc
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return [url for url in urls if urlparse(url).scheme not in ("data", "blob") and urlparse(url).netloc != own]
