"""The web demo (demo/app.py): prediction, stored overlays, the truth panel, the photo notice,
the served app, and a real browser.

The app is launched once per module on a free local port and driven with gradio_client; the
browser test (headless Chromium via Selenium) is skipped only where Chromium or chromedriver is
not installed, and saves screenshots of what it checks: under pytest's tmp folder, or in the
folder named by CAPTIONER_SCREENSHOTS (the docs' pictures are made that way, docs/demo.md).
Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import shutil
import socket
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
sys.path.insert(0, str(DEMO_DIR))
import app  # noqa: E402 - demo/ is a script folder, not a package

from captioner.data.shapes import ShapeObject, ShapesImage, parse_caption  # noqa: E402
from captioner.inference import Captioner  # noqa: E402

EXAMPLES = app.EXAMPLES_DIR
OBJECTS = json.loads((EXAMPLES / "objects.json").read_text())
# Scenes of one or two objects; the bundled model is most reliable there (docs/shapes-world.md).
SIMPLE_EXAMPLES = sorted(name for name, objects in OBJECTS.items() if len(objects) <= 2)
LONE_TRIANGLE = EXAMPLES / "shapes_5.jpg"
# Two objects: the truth panel lists both (the model before the self-critical stage said "two
# purple stars" for its one star, and the panel marked it).
TRUTH_EXAMPLE = "shapes_8.jpg"
# A photo in this checkout (CC0, tests/fixtures/README.md): the bundled model must say it is not shapes.
PHOTO = Path(__file__).resolve().parent / "fixtures" / "coffee.png"
SHAPES_WORLD = Path("data/shapes")  # the bundled model's data.root, when generated on this machine
NOTICE_TEXT = "does not look like a shapes image"
BROWSER_TIMEOUT_S = 60
SCREENSHOTS_ENV = "CAPTIONER_SCREENSHOTS"
VIEWPORT = (1280, 900)  # a typical laptop browser window, in CSS pixels

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
def checks(captioner):
    return app.Checks.for_model(captioner)


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

    return client.predict(handle_file(str(path)), 3, 20, 3, "paper", api_name="/caption")


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


def test_model_card_says_whether_photos_are_checked(captioner, checks):
    assert "Photo check:** on" in app.model_card(captioner, checks)
    assert "Photo check:** off" in app.model_card(captioner, app.Checks())


# --- the truth beside the caption -----------------------------------------------------------

TWO_OBJECTS = ShapesImage(224, 224, (ShapeObject((10, 10, 40, 40), "circle", "red", "small"),
                                     ShapeObject((100, 100, 80, 80), "square", "blue", "large")))


def test_check_caption_marks_named_missed_and_invented_objects():
    words = "a red circle and a green star".split()
    check = app.check_caption(words, TWO_OBJECTS)
    assert [(obj.shape, named) for obj, named in check.objects] == [("circle", True), ("square", False)]
    assert [i for i, mark in enumerate(check.marks) if mark] == [5, 6]  # "green star"
    assert "no green star" in check.marks[6]
    assert (check.recall, check.hallucination, check.mentions) == (0.5, 0.5, 2)

    html = app.truth_html(app.Prediction(text=" ".join(words), words=words, truth=check))
    assert "✓ named: small red circle" in html and "✗ missed: large blue square" in html
    assert '<mark class="hallucinated" title="there is no green star in the image">green star</mark>' in html
    assert "Named 1 of 2 objects; 1 of 2 object mentions not in the image" in html


def test_check_caption_honours_counts_and_bare_shapes():
    too_many = app.check_caption("two red circles and a blue square".split(), TWO_OBJECTS)
    assert all(named for _, named in too_many.objects)
    assert [i for i, mark in enumerate(too_many.marks) if mark] == [0, 1, 2]  # "two red circles"
    assert "says 2, the image has 1 red circle" in too_many.marks[2]

    bare = app.check_caption("a circle beside a triangle".split(), TWO_OBJECTS)
    assert [i for i, mark in enumerate(bare.marks) if mark] == [4]  # the circle is there, no triangle
    exact = app.check_caption("a small red circle above a large blue square".split(), TWO_OBJECTS)
    assert exact.marks == (None,) * 9 and exact.recall == 1.0 and exact.hallucination == 0.0


def test_check_caption_honours_sizes():
    wrong_size = app.check_caption("a large red circle above a large blue square".split(), TWO_OBJECTS)
    assert [named for _, named in wrong_size.objects] == [False, True]
    assert [i for i, mark in enumerate(wrong_size.marks) if mark] == [1, 2, 3]  # "large red circle"
    assert "no large red circle" in wrong_size.marks[3]
    assert (wrong_size.recall, wrong_size.hallucination) == (0.5, 0.5)


def test_truth_panel_lists_the_objects_of_a_known_example(captioner, checks):
    prediction = app.predict(captioner, str(EXAMPLES / TRUTH_EXAMPLE), checks=checks)

    expected = sorted((o["size"], o["colour"], o["shape"]) for o in OBJECTS[TRUTH_EXAMPLE])
    assert sorted((o.size, o.colour, o.shape) for o, _ in prediction.truth.objects) == expected
    named = Counter(parse_caption(prediction.text))
    assert all(is_named == (named[(o.colour, o.shape)] > 0) for o, is_named in prediction.truth.objects)
    html = app.truth_html(prediction)
    assert all(" ".join(kind) in html for kind in expected)


def test_only_the_very_file_gets_a_truth_panel(captioner, checks, tmp_path):
    impostor = tmp_path / TRUTH_EXAMPLE  # a photo that only shares an example's name
    impostor.write_bytes(PHOTO.read_bytes())
    assert app.predict(captioner, str(impostor), checks=checks).truth is None
    assert app.predict(captioner, Image.open(EXAMPLES / TRUTH_EXAMPLE), checks=checks).truth is None
    copy = tmp_path / "copy" / TRUTH_EXAMPLE  # an upload is a copy under another folder, same bytes
    copy.parent.mkdir()
    copy.write_bytes((EXAMPLES / TRUTH_EXAMPLE).read_bytes())
    assert app.predict(captioner, str(copy), checks=checks).truth is not None


@pytest.mark.skipif(not (SHAPES_WORLD / "annotations" / "shapes_objects.json").is_file(),
                    reason="the shapes world is not generated on this machine (captioner shapes)")
def test_images_of_the_training_world_get_their_truth_too(captioner, checks):
    image = next((SHAPES_WORLD / "val2014").glob("*.jpg"))
    prediction = app.predict(captioner, str(image), checks=checks)
    assert prediction.truth is not None and len(prediction.truth.objects) >= 1


# --- the notice on photos -------------------------------------------------------------------


def test_a_photo_gets_the_notice_and_a_shapes_example_does_not(captioner, checks):
    assert checks.familiarity is not None
    photo = app.predict(captioner, str(PHOTO), checks=checks)
    assert photo.ok and NOTICE_TEXT in photo.notice and photo.familiarity > checks.familiarity.threshold
    assert f"{photo.familiarity:.1f}" in photo.notice
    for name in OBJECTS:
        shapes = app.predict(captioner, str(EXAMPLES / name), checks=checks)
        assert shapes.notice is None, (name, shapes.familiarity)


def test_a_coco_model_gets_no_shapes_notice(captioner):
    data = dataclasses.replace(captioner.config.data, root="data/coco", split_file="data/coco/dataset_coco.json")
    coco = Captioner(captioner.model, captioner.vocab, dataclasses.replace(captioner.config, data=data),
                     captioner.device, checkpoint="runs/coco/checkpoint_best.pt", evaluation={})
    checks = app.Checks.for_model(coco)
    assert checks.familiarity is None
    prediction = app.predict(coco, str(PHOTO), checks=checks)
    assert prediction.ok and prediction.notice is None and prediction.familiarity is None
    assert "Photo check:** off" in app.model_card(coco, checks)
    # The bundled examples' objects are known whatever the model.
    assert app.predict(coco, str(EXAMPLES / TRUTH_EXAMPLE), checks=checks).truth is not None


def test_another_encoder_gets_no_shapes_notice(captioner):
    model = dataclasses.replace(captioner.config.model,
                                encoder=dataclasses.replace(captioner.config.model.encoder, grid=7))
    other = Captioner(captioner.model, captioner.vocab, dataclasses.replace(captioner.config, model=model),
                      captioner.device)
    assert app.familiarity_for(other) is None


# --- overlay styles -------------------------------------------------------------------------


def test_switching_the_overlay_style_redraws_without_running_the_model(captioner, model_calls):
    paper = app.predict(captioner, str(LONE_TRIANGLE))
    calls = len(model_calls)

    heatmap = app.restyle(paper, "heatmap")
    assert paper.style == "paper" and heatmap.style == "heatmap"
    assert heatmap.attention is paper.attention and heatmap.words == paper.words
    assert all(a.tobytes() != b.tobytes() for a, b in zip(paper.overlays, heatmap.overlays))
    back = app.restyle(heatmap, "paper")
    assert [o.tobytes() for o in back.overlays] == [o.tobytes() for o in paper.overlays]
    assert app.restyle(None, "heatmap") is None
    assert len(model_calls) == calls


def test_the_shown_overlay_has_its_scale_and_bright_share_underneath(captioner):
    prediction = app.predict(captioner, str(LONE_TRIANGLE))
    index = prediction.words.index("triangle")
    picture = app.focus_picture(prediction, index)
    # The 224-px example is enlarged to FOCUS_MIN_WIDTH, with the legend band under it.
    scale = app.FOCUS_MIN_WIDTH / prediction.image.width
    assert picture.width == app.FOCUS_MIN_WIDTH
    assert picture.height > round(prediction.image.height * scale) + 20
    on_top = np.asarray(picture)[: round(prediction.image.height * scale)].astype(int)
    enlarged = prediction.overlays[index].resize((picture.width, round(prediction.image.height * scale)),
                                                 Image.Resampling.LANCZOS)
    assert (on_top == np.asarray(enlarged)).all()
    assert app.focus_picture(prediction, len(prediction.words)) is None


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


def test_client_gets_the_notice_for_a_photo_and_the_truth_for_an_example(client):
    *_, notice, truth = _caption_via_client(client, PHOTO)
    assert NOTICE_TEXT in _update_value(notice) and not _update_value(truth)

    caption, *_, notice, truth = _caption_via_client(client, EXAMPLES / TRUTH_EXAMPLE)
    assert caption and not _update_value(notice)
    assert "What is really in the image" in _update_value(truth)


def _update_value(output) -> str:
    """The text of a Markdown or HTML output, which gradio_client returns as an update dict."""
    return (output.get("value") if isinstance(output, dict) else output) or ""


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


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Folder for the browser test's screenshots: $CAPTIONER_SCREENSHOTS, else a tmp folder."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser():
    """Headless Chromium at a typical laptop window size, logging every request it makes."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size={},{}".format(*VIEWPORT)):
        options.add_argument(argument)
    # Every request the page makes, to check that none leaves this machine.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    yield driver
    driver.quit()


def test_browser_example_word_photo_and_bad_file(server, browser, screenshots, tmp_path):
    """The four things a visitor does, each checked in the page and saved as a screenshot."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415
    from selenium.webdriver.support.ui import WebDriverWait  # noqa: PLC0415

    driver, wait = browser, WebDriverWait(browser, BROWSER_TIMEOUT_S)
    driver.get(server)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    assert _clipped_text(driver, "#upload") == []

    # 1. An example is captioned as soon as it is picked, its true objects beside the caption.
    example = (By.XPATH, f"//button[contains(@class, 'gallery-item')][.//img[contains(@src, '{TRUTH_EXAMPLE}')]]")
    wait.until(ec.element_to_be_clickable(example)).click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "truth"), "What is really in the image"))
    caption = _caption(driver)
    truth = driver.find_element(By.ID, "truth").text
    for obj in OBJECTS[TRUTH_EXAMPLE]:
        assert f"{obj['size']} {obj['colour']} {obj['shape']}" in truth
    assert ("✓ named" in truth or "✗ missed" in truth) and not _shown(driver, "#notice")
    wait.until(lambda d: _all_drawn(d, "#overlay img", 1) and _all_drawn(d, "#all-words img", len(caption.split())))
    _save_page(driver, screenshots / "example.png", below="#overlay")

    # 2. Picking a word shows its overlay, with the colour scale and bright share drawn under it.
    word = next(w for w in reversed(caption.split()) if w in ("triangle", "star", "stars"))
    _pick(driver, wait, "words", word)
    wait.until(ec.text_to_be_present_in_element((By.ID, "overlay"), f'Attention for "{word}"'))
    wait.until(lambda d: _all_drawn(d, "#overlay img", 1))
    overlay = driver.find_element(By.CSS_SELECTOR, "#overlay img")
    assert overlay.get_attribute("src").startswith(server.rstrip("/"))
    width, height = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", overlay)
    assert height > width  # the square example plus the legend band
    _save_page(driver, screenshots / "word.png", below="#overlay")
    # The heatmap view is one click away, and back; neither runs the model.
    paper_src = overlay.get_attribute("src")
    _pick(driver, wait, "style", "Heatmap")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#overlay img").get_attribute("src") != paper_src)
    heatmap_src = driver.find_element(By.CSS_SELECTOR, "#overlay img").get_attribute("src")
    _pick(driver, wait, "style", "Paper")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#overlay img").get_attribute("src") != heatmap_src)

    # 3. A photo is captioned, and the caption panel says the model does not know photos.
    _upload(driver, wait, PHOTO)
    driver.find_element(By.CSS_SELECTOR, "#caption-button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "notice"), NOTICE_TEXT))
    assert _caption(driver) and not _shown(driver, "#truth")
    wait.until(lambda d: _all_drawn(d, "#overlay img", 1))
    _save_page(driver, screenshots / "photo.png", below="#overlay")

    # 4. A file that is not an image is explained as soon as it is uploaded.
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("these are my holiday notes, not a picture\n")
    _upload(driver, wait, not_an_image, ready="Could not read notes.jpg")
    assert "Please upload a JPEG, PNG" in driver.find_element(By.ID, "status").text
    assert _caption(driver) == "" and not _shown(driver, "#notice") and not _shown(driver, "#truth")
    _save_page(driver, screenshots / "bad-file.png", below="#status", at_least=VIEWPORT[1])

    assert _external_requests(driver, server) == []


def _caption(driver) -> str:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return driver.find_element(By.CSS_SELECTOR, "#caption textarea").get_attribute("value") or ""


def _pick(driver, wait, radio: str, label: str) -> None:
    """Click the choice `label` of the radio group `#radio`."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415

    choice = (By.XPATH, f"//*[@id='{radio}']//label[normalize-space()='{label}' or starts-with(normalize-space(), "
                        f"'{label}')]")
    wait.until(ec.element_to_be_clickable(choice)).click()


def _upload(driver, wait, path: Path, ready: str = "is ready") -> None:
    """Empty the upload box if it holds a file, put `path` in it, and wait for the status `ready`."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions as ec  # noqa: PLC0415

    clear = driver.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']")
    if clear:
        clear[0].click()
        wait.until(lambda d: _caption(d) == "")
    file_input = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    file_input.send_keys(str(path))
    # The upload must have landed before the click, or the button captions nothing.
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), ready))


def _shown(driver, selector: str) -> bool:
    """Whether an element matching `selector` is displayed (hidden components may not exist)."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return any(element.is_displayed() and element.text.strip()
               for element in driver.find_elements(By.CSS_SELECTOR, selector))


def _clipped_text(driver, selector: str) -> list[str]:
    """Texts inside `selector` that are cut off: not wholly inside its box and every box on the
    way up to it that hides overflow."""
    return driver.execute_script("""
        const root = document.querySelector(arguments[0]);
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        const clipped = [];
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
            if (!node.textContent.trim()) continue;
            const range = document.createRange();
            range.selectNodeContents(node);
            const text = range.getBoundingClientRect();
            if (text.height === 0) continue;
            for (let box = node.parentElement; box; box = box.parentElement) {
                const style = getComputedStyle(box);
                if (box === root || style.overflow !== 'visible' || style.overflowY !== 'visible') {
                    const r = box.getBoundingClientRect();
                    if (text.top < r.top - 0.5 || text.bottom > r.bottom + 0.5 ||
                        text.left < r.left - 0.5 || text.right > r.right + 0.5) {
                        clipped.push(node.textContent.trim());
                        break;
                    }
                }
                if (box === root) break;
            }
        }
        return clipped;""", selector)


def _all_drawn(driver, selector: str, count: int) -> bool:
    """Whether at least `count` images match `selector` and every one has finished loading."""
    return bool(driver.execute_script(
        "const images = [...document.querySelectorAll(arguments[0])];"
        "return images.length >= arguments[1] && images.every(i => i.complete && i.naturalWidth > 0);",
        selector, count))


def _save_page(driver, path: Path, below: str, at_least: int = 0, margin: int = 16) -> None:
    """Save the page from its top to just below the element `below` (at least `at_least` CSS
    pixels), the viewport's width, as a PNG (full colour: a palette shifts the shapes' colours)."""
    time.sleep(0.5)  # let the last layout settle (image sizes, table widths)
    bottom = driver.execute_script(
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return Math.min(Math.ceil(r.bottom + window.scrollY) + arguments[1], document.documentElement.scrollHeight);",
        below, margin)
    width = driver.execute_script("return document.documentElement.clientWidth")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": max(bottom, at_least), "scale": 1},
    })
    page = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    page.save(path, "PNG", optimize=True)
    assert Image.open(path).size == (width, max(bottom, at_least))


def _external_requests(driver, server: str) -> list[str]:
    """URLs the page requested from anywhere but the demo's own server."""
    own = urlparse(server).netloc
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return [url for url in urls if urlparse(url).scheme not in ("data", "blob") and urlparse(url).netloc != own]
