"""Web demo: caption an image and see, word by word, where the model looked.

    python demo/app.py                                         # bundled shapes model, http://127.0.0.1:7860
    python demo/app.py --checkpoint runs/coco/checkpoint_best.pt --port 8080
    captioner demo --checkpoint runs/coco/checkpoint_best.pt   # the same, through the CLI

The page serves from this machine only (127.0.0.1) unless `--host` says otherwise, makes no
request to the internet (no analytics, no version check, system fonts instead of Google Fonts)
and creates a public link only with `--share`.

`predict` is the whole computation behind one click (load, caption, draw the overlays, check
the caption against the image's known objects, check that the image looks like what the model
was trained on); the Gradio event handlers only turn its `Prediction` into component updates,
and picking a word or an overlay style reads the attention stored with the prediction, so it
never runs the model. `Checks` holds what those checks need, decided once per loaded model.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import os
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Gradio reads this when an app is built; "False" means no usage reports and no version check
# against PyPI, so the demo never phones home. It must be set before gradio is imported.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from captioner import familiarity  # noqa: E402
from captioner.cli.demo import DESCRIPTION as DEMO_DESCRIPTION, add_demo_arguments  # noqa: E402
from captioner.data.shapes import Mention, ShapeObject, ShapesImage, find_mentions, load_objects  # noqa: E402
from captioner.decoding import DecodingOptions  # noqa: E402
from captioner.images import ImageLoadError, load_image  # noqa: E402
from captioner.inference import Captioner, CaptionResult  # noqa: E402
from captioner.metrics import match_objects  # noqa: E402
from captioner.visualize import BRIGHT_REGION, DEFAULT_STYLE, add_legend, bright_share, overlay  # noqa: E402

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
# Long side of the copy of an upload that is shown, overlaid and captioned. The attention grid
# is 12 x 12 or so, so larger overlays add no detail, only drawing time (they are the main cost
# of a click); the encoder resizes to its own input size (192-256 px) anyway.
DISPLAY_MAX_SIDE = 512
# Narrowest the chosen word's overlay is drawn, legend included: small uploads (the examples are
# 224 px) are enlarged first, so the page need not blow up a small legend's text.
FOCUS_MIN_WIDTH = 448
MAX_BEAM_SIZE = 5
MAX_CAPTION_WORDS = 30
DEFAULT_BEAM_SIZE = 3
DEFAULT_MAX_LEN = 20
DEFAULT_TOP_N = 3
NO_IMAGE_MESSAGE = "Upload an image, or pick one of the examples, then press **Caption**."
STYLE_CHOICES = [("Paper: dim what the word does not look at", "paper"), ("Heatmap", "heatmap")]
UNFAMILIAR_NOTICE = (
    "⚠️ **This does not look like a shapes image.** The loaded model has only ever seen synthetic "
    "pictures of coloured shapes, so the caption below names shapes that are not in this picture; "
    "to caption photos, load a model trained on COCO (see the model card). "
    "Judged from the model's own encoder: this image scores **{score:.1f}**, while 99.5% of the "
    "shapes validation images score at most {threshold:.1f} (see docs/demo.md)."
)
HOW_TO_READ = f"""
**How to read the attention.** The overlay shows, for the chosen word, how the decoder weighted
the {{grid}} × {{grid}} grid of image regions at the step that wrote that word. In the paper view the
image is dimmed to near black where the weight is about 0 and shown as it is where it is
highest; the scale under it runs from 0 to the map's largest cell weight (all weights of a word
sum to 1), and the percentage is the share of the word's attention in its bright region
({BRIGHT_REGION}).

- **A word may look at the next object.** At step *t* the decoder looks *before* it writes word
  *t*. When the LSTM already knows the word (the "triangle" after "yellow"), the glance is often
  spent on what comes next, so "triangle" may light up the star the caption mentions after it.
- **Soft attention is a weighting, not a pointer.** The context the decoder reads is a weighted
  average of all the regions; a broad or split map is normal, and a bright region is where most
  of the weight went, not a box the model drew.
- **Resolution is coarse.** Each cell covers about 1/{{grid}} of the image's side; the smooth
  look is the upsampling, and small objects fill about one cell.
- **Function words** ("a", "with", "and") look at whatever helps plan the rest of the caption;
  their maps say little.
"""
# Largest upload accepted, checked by Gradio before any of our code runs.
MAX_UPLOAD = "50mb"
# Height of the upload box: room for its icon and "Drop File Here - or - Click to Upload" (at the
# old 110 px Gradio clipped them), yet short enough to keep the examples in view.
UPLOAD_HEIGHT = 180
# Words skipped when choosing which word's attention to show first: their maps say little.
FUNCTION_WORDS = frozenset(
    "a an the of with and on in at to is are there this picture image photo showing shows "
    "next above below left right beside".split()
)
SYSTEM_FONTS = [gr.themes.Font("Helvetica Neue"), gr.themes.Font("Helvetica"), gr.themes.Font("Arial"),
                gr.themes.Font("DejaVu Sans"), "sans-serif"]
SYSTEM_MONO_FONTS = [gr.themes.Font("DejaVu Sans Mono"), gr.themes.Font("Menlo"), gr.themes.Font("Consolas"),
                     "monospace"]
CSS = """
#caption textarea { font-size: 1.35rem; font-weight: 600; }
#model-banner { border-left: 4px solid var(--color-accent); padding-left: 0.75rem; }
#status p { margin: 0.25rem 0; }
#notice { border: 2px solid #c2410c; background: #fff7ed; border-radius: 6px; padding: 0.5rem 0.75rem; }
#notice p { margin: 0; color: #431407; }
#truth ul { margin: 0.25rem 0 0.5rem 1.25rem; padding: 0; }
#truth .named { color: #166534; }
#truth .missed { color: #b91c1c; }
#truth mark.hallucinated { background: #fecaca; color: #7f1d1d; text-decoration: underline wavy #b91c1c; }
#truth .truth-caption { font-size: 1.1rem; }
/* Small uploads (the examples are 224 px) are enlarged by the browser, not redrawn by us. */
#overlay img, #preview img { width: 100%; height: 100%; object-fit: contain; }
"""
KNOWN_DATASETS = {
    "dataset_shapes.json": "the synthetic shapes world (coloured shapes on plain or textured backgrounds)",
    "dataset_coco.json": "MS COCO 2014 (Karpathy split)",
    "dataset_flickr8k.json": "Flickr8k (Karpathy split)",
    "dataset_flickr30k.json": "Flickr30k (Karpathy split)",
}


@dataclass(frozen=True)
class TruthCheck:
    """A caption compared with the objects really in its image (`check_caption`).

    `objects` pairs each true object with whether the caption names it; `marks[i]` says why
    caption word i is wrong (it names something not in the image, or more of it than there
    is), or is None; `recall` and `hallucination` are `captioner.metrics`' object recall and
    hallucination rate of this one caption, over its `mentions` colour+shape mentions.
    """

    objects: tuple[tuple[ShapeObject, bool], ...]
    marks: tuple[str | None, ...]
    recall: float
    hallucination: float
    mentions: int


@dataclass(frozen=True)
class Checks:
    """What the demo checks a caption against, decided once per loaded model (`for_model`).

    `familiarity`: the encoder statistics of the shapes training images, for the shapes model
    whose encoder they were computed with, else None (no notice). `annotations`: file name →
    (files with that name whose objects are known, their `ShapesImage`).
    """

    familiarity: familiarity.FamiliarityStats | None = None
    annotations: Mapping[str, tuple[tuple[Path, ...], ShapesImage]] = field(default_factory=dict)

    @classmethod
    def for_model(cls, captioner: Captioner) -> Checks:
        return cls(familiarity_for(captioner), known_annotations(captioner))

    def truth_of(self, source: object) -> ShapesImage | None:
        """The objects of an uploaded file, if it is byte for byte a file whose objects are known.

        Gradio keeps an upload's file name, which finds the candidate; the bytes decide, so a
        photo that happens to be called shapes_5.jpg gets no truth panel.
        """
        if not isinstance(source, (str, os.PathLike)) or Path(source).name not in self.annotations:
            return None
        candidates, image = self.annotations[Path(source).name]
        try:
            data = Path(source).read_bytes()
            same = any(c.is_file() and c.stat().st_size == len(data) and c.read_bytes() == data for c in candidates)
        except OSError:
            return None
        return image if same else None


@dataclass
class Prediction:
    """Everything one click produces, kept in the page's state so that picking a word is a lookup.

    `image` is the display copy that was captioned; `attention` (T, h, w) holds one map per
    word and `overlays[i]` is word i's map drawn over the image (same size) in `style`.
    `alternatives` holds (caption, log-probability, score) of the top-n hypotheses, best first.
    `notice` says the image does not look like the model's training images (`familiarity`
    is its score, None when the model has no statistics); `truth` compares the caption with
    the image's objects, when they are known. With `error` set, nothing else is filled in.
    """

    text: str = ""
    words: list[str] = field(default_factory=list)
    log_prob: float = float("nan")
    score: float = float("nan")
    finished: bool = True
    beam_size: int = DEFAULT_BEAM_SIZE
    alternatives: list[tuple[str, float, float]] = field(default_factory=list)
    image: Image.Image | None = None
    attention: torch.Tensor | None = None
    style: str = DEFAULT_STYLE
    overlays: list[Image.Image] = field(default_factory=list)
    familiarity: float | None = None
    notice: str | None = None
    truth: TruthCheck | None = None
    elapsed_ms: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def predict(captioner: Captioner, image: str | os.PathLike | bytes | Image.Image | None,
            beam_size: int = DEFAULT_BEAM_SIZE, max_len: int = DEFAULT_MAX_LEN,
            top_n: int = DEFAULT_TOP_N, style: str = DEFAULT_STYLE, checks: Checks | None = None) -> Prediction:
    """Caption one upload (a path, encoded bytes or a PIL image) and draw one overlay per word.

    With `checks`, also score the image's familiarity and compare the caption with its known
    objects. Never raises for a bad image: anything `load_image` refuses comes back as a
    `Prediction` whose `error` is a message meant for the person who uploaded it.
    """
    start = time.perf_counter()
    if image is None:
        return Prediction(error=NO_IMAGE_MESSAGE)
    try:
        picture = load_upload(image, max(DISPLAY_MAX_SIDE, captioner.config.model.encoder.image_size))
    except ImageLoadError as error:
        return Prediction(error=_unreadable_message(image, error))
    checks = checks or Checks()
    beam_size = int(beam_size)
    # The beam holds only `beam_size` hypotheses, so that is the most alternatives there are.
    top_n = max(1, min(int(top_n), beam_size))
    # Encoded once: the same features are captioned and scored for familiarity.
    features = _encode(captioner, picture)
    best = captioner.caption_features(features, DecodingOptions(beam_size=beam_size, max_len=int(max_len),
                                                                top_n=top_n))[0]
    score = None if checks.familiarity is None else float(checks.familiarity.score(features)[0])
    truth = checks.truth_of(image)
    return Prediction(
        text=best.text,
        words=best.words,
        log_prob=best.log_prob,
        score=best.score,
        finished=best.finished,
        beam_size=beam_size,
        alternatives=[(h.text, h.log_prob, h.score) for h in _ranked(best)],
        image=picture,
        attention=best.attention,
        style=style,
        overlays=[overlay(picture, attention, style=style) for attention in best.attention],
        familiarity=score,
        notice=_familiarity_notice(checks.familiarity, score),
        truth=None if truth is None else check_caption(best.words, truth),
        elapsed_ms=(time.perf_counter() - start) * 1000,
    )


@torch.no_grad()
def _encode(captioner: Captioner, picture: Image.Image) -> torch.Tensor:
    """Encoder features (1, P, D) of one image."""
    return captioner.model.encoder(captioner.preprocess(picture)[None].to(captioner.device))


def restyle(prediction: Prediction | None, style: str) -> Prediction | None:
    """The same prediction with its overlays redrawn in `style`, from the stored attention
    (the model does not run)."""
    if prediction is None or not prediction.ok or prediction.style == style:
        return prediction
    return dataclasses.replace(prediction, style=style, overlays=[overlay(prediction.image, attention, style=style)
                                                                  for attention in prediction.attention])


def _familiarity_notice(stats: familiarity.FamiliarityStats | None, score: float | None) -> str | None:
    if stats is None or score is None or score <= stats.threshold:
        return None
    return UNFAMILIAR_NOTICE.format(score=score, threshold=stats.threshold)


def familiarity_for(captioner: Captioner) -> familiarity.FamiliarityStats | None:
    """The bundled shapes statistics, if they belong to this model: a shapes model with the very
    encoder (config and weights) they were computed with. A COCO model gets None: its training
    images are photos, and a shapes-world yardstick would call every photo strange."""
    if not _is_shapes_model(captioner):
        return None
    try:
        stats = familiarity.load()
    except (OSError, ValueError) as error:
        print(f"warning: no photo check ({error})", file=sys.stderr)
        return None
    return stats if familiarity.matches(stats, captioner.config.model.encoder, captioner.model.encoder) else None


def known_annotations(captioner: Captioner) -> dict[str, tuple[tuple[Path, ...], ShapesImage]]:
    """File name → (candidate files, objects) for the bundled examples and, when it is on this
    machine, every image of the shapes world the model was trained on (`data.root`)."""
    known = {}
    examples = EXAMPLES_DIR / "objects.json"
    if examples.is_file():
        for name, objects in json.loads(examples.read_text()).items():
            with Image.open(EXAMPLES_DIR / name) as picture:
                size = picture.size
            known[name] = ((EXAMPLES_DIR / name,), ShapesImage(*size, tuple(
                ShapeObject(tuple(o["bbox"]), o["shape"], o["colour"], o["size"]) for o in objects), name))
    root = Path(captioner.config.data.root or "")
    objects_file = root / "annotations" / "shapes_objects.json"
    if captioner.config.data.root and objects_file.is_file():
        for image in load_objects(objects_file).values():
            known[image.file_name] = (tuple(root / folder / image.file_name for folder in ("train2014", "val2014")),
                                      image)
    return known


def check_caption(words: Sequence[str], image: ShapesImage) -> TruthCheck:
    """Compare a caption with the objects of its image, with `captioner.metrics`' rules
    (`match_objects`: colour and shape, the size when one is said, counts honoured).

    A mention is marked when it names no object of the image, or says more of them than there
    are ("two purple stars" for one); a shape said without a colour is marked when the image
    has no such shape at all.
    """
    match = match_objects(words, image)
    marks: list[str | None] = [None] * len(words)
    problems = [_mention_problem(mention, missing, image) for mention, missing in zip(match.mentions, match.unmatched)]
    problems += [_bare_shape_problem(mention, image) for mention in find_mentions(words) if mention.colour is None]
    mentions = list(match.mentions) + [m for m in find_mentions(words) if m.colour is None]
    for mention, problem in zip(mentions, problems):
        if problem:
            for position in range(mention.start, mention.index + 1):
                marks[position] = problem
    recall = sum(match.named) / len(match.named) if match.named else 1.0
    hallucination = match.wrong / match.said if match.said else 0.0
    return TruthCheck(tuple(zip(image.objects, match.named)), tuple(marks), recall, hallucination, match.said)


def _mention_problem(mention: Mention, missing: int, image: ShapesImage) -> str | None:
    """Why `missing` of a colour+shape mention's count name no object, or None."""
    if missing == 0:
        return None
    kind = f"{mention.colour} {mention.shape}"
    present = [o for o in image.objects if (o.colour, o.shape) == (mention.colour, mention.shape)]
    if not present:
        return f"there is no {kind} in the image"
    if mention.size is not None and not any(o.size == mention.size for o in present):
        return f"there is no {mention.size} {kind} in the image"
    if missing == mention.count:
        return f"named again: the image has only {len(present)} {kind}"
    return f"says {mention.count}, the image has {len(present)} {kind}"


def _bare_shape_problem(mention: Mention, image: ShapesImage) -> str | None:
    has_shape = any(o.shape == mention.shape for o in image.objects)
    return None if has_shape else f"there is no {mention.shape} in the image"


def select_word(prediction: Prediction | None, index: int | None) -> Image.Image | None:
    """The stored overlay of word `index` (None when there is no caption or no such word)."""
    if prediction is None or not prediction.ok or index is None or not 0 <= int(index) < len(prediction.overlays):
        return None
    return prediction.overlays[int(index)]


def focus_picture(prediction: Prediction | None, index: int | None) -> Image.Image | None:
    """Word `index`'s stored overlay with its colour scale and bright share underneath (None
    when there is no such word); drawn from the stored attention, so the model does not run."""
    picture = select_word(prediction, index)
    if picture is None:
        return None
    if picture.width < FOCUS_MIN_WIDTH:
        # The page shows this large; enlarging it here keeps the legend's text sharp there.
        scale = FOCUS_MIN_WIDTH / picture.width
        picture = picture.resize((FOCUS_MIN_WIDTH, round(picture.height * scale)), Image.Resampling.LANCZOS)
    position = int(index)
    return add_legend(picture, prediction.attention[position], prediction.style, prediction.words[position])


def load_upload(source: str | os.PathLike | bytes | Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """RGB copy of an upload, its long side at most `max_side` pixels; raises `ImageLoadError`.

    A JPEG is decoded at a reduced scale (Pillow's `draft`: 1/2, 1/4 or 1/8 straight from the
    DCT), which makes a 12-megapixel phone photo about 6x faster to load; everything else, and
    any file Pillow cannot even open, goes to `load_image` whole, which says what is wrong.
    """
    jpeg = _open_jpeg(source)
    if jpeg is None:
        return display_copy(load_image(source), max_side)
    with jpeg:
        jpeg.draft("RGB", (max_side, max_side))
        return display_copy(load_image(jpeg), max_side)


def _open_jpeg(source: object) -> Image.Image | None:
    """`source` opened (header only) if it is a path to a JPEG within Pillow's size limit, else None."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    with warnings.catch_warnings():
        # A would-be decompression bomb is left to load_image, which refuses it by name.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Exception:  # noqa: BLE001 - whatever the reason, load_image reports it properly
            return None
    if image.format != "JPEG":
        image.close()
        return None
    return image


def display_copy(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Image.Image:
    """`image` shrunk (never enlarged) so that its long side is at most `max_side` pixels."""
    if max(image.size) <= max_side:
        return image
    shrunk = image.copy()
    shrunk.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return shrunk


def first_content_word(words: Sequence[str]) -> int:
    """Index of the first word worth showing first (a colour, an object...), else 0."""
    return next((i for i, word in enumerate(words) if word.lower() not in FUNCTION_WORDS), 0)


def _ranked(best: CaptionResult) -> list[CaptionResult]:
    return [best, *best.alternatives]


def _unreadable_message(image: object, error: ImageLoadError) -> str:
    """A message that names the file the person chose, not the server's temporary copy."""
    name = Path(image).name if isinstance(image, (str, os.PathLike)) else "this image"
    return (f"Could not read **{name}**: {error.problem}. "
            "Please upload a JPEG, PNG, WebP, BMP, GIF or TIFF image.")


def status_markdown(prediction: Prediction) -> str:
    """One line under the caption: its scores and timing, or why there is no caption."""
    if prediction.error == NO_IMAGE_MESSAGE:
        return prediction.error
    if not prediction.ok:
        return f"⚠️ {prediction.error}"
    parts = [
        f"log-probability **{prediction.log_prob:.2f}**",
        f"score **{prediction.score:.2f}**",
        f"beam {prediction.beam_size}",
        f"{len(prediction.words)} words",
        f"{prediction.elapsed_ms:.0f} ms",
    ]
    ending = "" if prediction.finished else " (stopped at the maximum length)"
    return " · ".join(parts) + ending


def truth_html(prediction: Prediction) -> str:
    """The truth panel: the image's objects, each named or missed, and the caption with every
    word that names something not in the image marked; empty when the objects are unknown."""
    check = prediction.truth
    if check is None or not prediction.ok:
        return ""
    items = "".join(
        f'<li class="{"named" if named else "missed"}">{"✓ named" if named else "✗ missed"}: '
        f"{html.escape(f'{obj.size} {obj.colour} {obj.shape}')}</li>"
        for obj, named in check.objects)
    wrong = round(check.hallucination * check.mentions)
    found = sum(named for _, named in check.objects)
    summary = (f"Named {found} of {len(check.objects)} objects; "
               + (f"{wrong} of {check.mentions} object mentions not in the image (marked)." if wrong
                  else "nothing named that is not in the image."))
    return ('<div class="truth"><p><b>What is really in the image</b> (its objects are known: it is a '
            f"shapes-world image)</p><ul>{items}</ul>"
            f'<p class="truth-caption">{_marked_caption(prediction.words, check.marks)}</p>'
            f"<p>{html.escape(summary)}</p></div>")


def _marked_caption(words: Sequence[str], marks: Sequence[str | None]) -> str:
    """The caption as HTML, each run of words with the same problem in one <mark> saying it."""
    parts, position = [], 0
    while position < len(words):
        end = position + 1
        while end < len(words) and marks[end] == marks[position]:
            end += 1
        text = html.escape(" ".join(words[position:end]))
        problem = marks[position]
        parts.append(text if problem is None else
                     f'<mark class="hallucinated" title="{html.escape(problem)}">{text}</mark> '
                     f"<small>({html.escape(problem)})</small>")
        position = end
    return " ".join(parts)


def model_banner(captioner: Captioner) -> str:
    """One line under the title saying which model answers, so no one mistakes what it knows."""
    if _is_shapes_model(captioner):
        return ("**Loaded: the bundled shapes model.** It was trained on synthetic images of coloured "
                "shapes, so it describes every picture as coloured shapes, photos included. "
                "See the model card at the bottom for how to load a COCO model.")
    return f"**Loaded:** `{captioner.checkpoint}`, trained on {_dataset_description(captioner)}."


def model_card(captioner: Captioner, checks: Checks | None = None) -> str:
    """Markdown: which checkpoint, trained on what, its architecture, the checks the page makes
    and its measured figures."""
    config = captioner.config
    encoder = config.model.encoder
    checkpoint = ("bundled (`captioner/assets/shapes.pt`)" if captioner.checkpoint == "bundled"
                  else f"`{captioner.checkpoint}`")
    tuning = "frozen" if encoder.fine_tune == 0 else f"last {encoder.fine_tune} stage(s) fine-tuned"
    rows = [
        ("Checkpoint", checkpoint),
        ("Trained on", f"{_dataset_description(captioner)}; "
                       + (f"made with `{captioner.data_origin}`" if captioner.data_origin
                          else f"data root `{config.data.root}`")),
        ("Encoder", (f"{encoder.backbone} ({encoder.weights} weights), features from `{encoder.layer}`, "
                     f"{encoder.image_size} px input → {encoder.grid} × {encoder.grid} grid, {tuning}")),
        ("Decoder", (f"LSTM {config.model.decoder_dim}, {config.model.attention} attention, "
                     f"{config.model.gate} gate{', deep output' if config.model.deep_output else ''}")),
        ("Vocabulary", f"{len(captioner.vocab)} words"),
        ("Device", str(captioner.device)),
        ("Photo check", "on: uploads unlike the shapes training images get a notice (docs/demo.md)"
                        if checks is not None and checks.familiarity is not None
                        else "off (only the bundled shapes model's encoder has statistics)"),
    ]
    lines = [*(f"- **{name}:** {value}" for name, value in rows), ""]
    lines += _figures_markdown(captioner.evaluation)
    lines += [
        "",
        "**Captioning photos** needs a model trained on COCO (see the README, *Training on COCO*), then:",
        "",
        "```bash",
        "captioner demo --checkpoint runs/coco/checkpoint_best.pt",
        "```",
    ]
    return "\n".join(lines)


def _figures_markdown(evaluation: dict) -> list[str]:
    """Table of the figures measured when the checkpoint was exported (`captioner export --scores`)."""
    metrics, shapes = evaluation.get("metrics", {}), evaluation.get("shapes", {})
    if not metrics and not shapes:
        return [("*No measured figures are stored with this checkpoint* (attach them with "
                 "`captioner evaluate` then `captioner export --scores`).")]
    figures = [
        ("object recall (objects whose colour and shape, and size where said, the caption names)", shapes.get("object_recall")),
        ("hallucination rate (named objects not in the image)", shapes.get("hallucination_rate")),
        ("pointing accuracy (attention peak inside an object the word names, size words honoured)",
         shapes.get("grounding_pointing")),
        ("attention mass inside the named object's box", shapes.get("grounding_mass")),
        ("BLEU-4", metrics.get("Bleu_4")),
        ("ROUGE-L", metrics.get("ROUGE_L")),
        ("CIDEr-D", metrics.get("CIDEr")),
    ]
    decoding = evaluation.get("decoding", {})
    method = f"beam {decoding['beam_size']}" if decoding.get("beam_size") else decoding.get("method", "")
    where = f"{evaluation.get('num_images', '?')} {evaluation.get('split', '')} images"
    lines = [f"**Measured figures** ({where}{', ' + method + ' decoding' if method else ''}):", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in figures if value is not None]
    return lines


def _is_shapes_model(captioner: Captioner) -> bool:
    split_file = Path(captioner.config.data.split_file or "").name
    return "shapes" in captioner.evaluation or split_file == "dataset_shapes.json"


def _dataset_description(captioner: Captioner) -> str:
    split_file = Path(captioner.config.data.split_file or "").name
    if split_file in KNOWN_DATASETS:
        return KNOWN_DATASETS[split_file]
    if _is_shapes_model(captioner):
        return KNOWN_DATASETS["dataset_shapes.json"]
    return f"COCO-format captions under `{captioner.config.data.root}`"


def example_images() -> list[Path]:
    """The bundled example images, in a stable order."""
    return sorted(EXAMPLES_DIR.glob("*.jpg"))


def build_theme() -> gr.themes.Base:
    """Gradio's default look with system fonts: a `GoogleFont` would make every visitor's
    browser fetch fonts.googleapis.com, and plain `Font` entries emit no stylesheet at all."""
    return gr.themes.Default(primary_hue="orange", secondary_hue="slate", font=SYSTEM_FONTS,
                             font_mono=SYSTEM_MONO_FONTS)


def launch_options() -> dict:
    """Page-wide settings that Gradio 6 takes at launch time (theme, CSS, files it may serve);
    `main` and the tests launch with the same ones."""
    return {"theme": build_theme(), "css": CSS, "allowed_paths": [str(EXAMPLES_DIR)], "max_file_size": MAX_UPLOAD}


def build_demo(captioner: Captioner, checks: Checks | None = None) -> gr.Blocks:
    """The page: upload or example → caption, photo notice, truth panel, scores, per-word
    attention (paper or heatmap view), top-n table, every word's attention, model card.

    `checks` defaults to `Checks.for_model(captioner)`."""
    checks = Checks.for_model(captioner) if checks is None else checks

    def on_caption(image, beam_size, max_len, top_n, style):
        return _caption_updates(predict(captioner, image, beam_size, max_len, top_n, style, checks))

    with gr.Blocks(title="captioner: Show, Attend and Tell", analytics_enabled=False) as demo:
        prediction = gr.State(None)
        gr.Markdown("# Show, Attend and Tell: image captioning\n"
                    "Upload an image: the model writes a caption, and for every word shows where in "
                    "the image it looked.")
        gr.Markdown(model_banner(captioner), elem_id="model-banner")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                upload, preview, examples, settings, button = _input_column()
            with gr.Column(scale=3):
                notice = gr.Markdown(visible=False, elem_id="notice")
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption", buttons=["copy"])
                status = gr.Markdown(NO_IMAGE_MESSAGE, elem_id="status")
                truth = gr.HTML(visible=False, elem_id="truth")
                word = gr.Radio(choices=[], label="Words: pick one to see where the model looked for it",
                                elem_id="words")
                style = gr.Radio(choices=STYLE_CHOICES, value=DEFAULT_STYLE, label="Overlay", elem_id="style")
                focus = gr.Image(label="Attention", type="pil", interactive=False, elem_id="overlay",
                                 height=480, buttons=["download", "fullscreen"])
                gr.Markdown(HOW_TO_READ.format(grid=captioner.grid), elem_id="how-to-read")
        alternatives = gr.Dataframe(headers=["rank", "caption", "log-probability", "score"],
                                    datatype=["number", "str", "number", "number"], interactive=False,
                                    label="Best captions from the beam (score = log-probability after the "
                                          "length penalty; this is what the beam ranks by)",
                                    elem_id="alternatives")
        gallery = gr.Gallery(label=f"Attention for every word (% = share in its bright region, {BRIGHT_REGION})",
                             columns=8, height=330, fit_columns=False, object_fit="contain",
                             elem_id="all-words", interactive=False)
        with gr.Accordion("Model card: which model is loaded", open=True):
            gr.Markdown(model_card(captioner, checks), elem_id="model-card")

        inputs = [upload, *settings, style]
        outputs = [caption, status, word, focus, alternatives, gallery, preview, prediction, notice, truth]
        # One queue for every event that runs the model: on a small CPU, two captions computed
        # at once are each slower than one after the other.
        button.click(on_caption, inputs, outputs, api_name="caption", concurrency_id="model")
        # Picking an example asks to see it captioned. An upload waits for the button, so that
        # the settings can be chosen first, but it is checked and shown at once.
        examples.load_input_event.then(on_caption, inputs, outputs, api_visibility="private",
                                       concurrency_id="model")
        upload.upload(_upload_updates, [upload], outputs, api_visibility="private")
        upload.clear(_cleared_updates, None, outputs, api_visibility="private")
        word.input(_word_update, [prediction, word], [focus], api_name="select_word")
        style.input(_style_updates, [prediction, word, style], [focus, gallery, prediction], api_name="restyle")
    return demo


def _input_column() -> tuple:
    """The left column: upload box, preview, examples, decoding settings and the Caption button."""
    upload = gr.File(label="Image to caption (JPEG, PNG, WebP, ...)", type="filepath", elem_id="upload",
                     height=UPLOAD_HEIGHT)
    preview = gr.Image(label="Your image", type="pil", interactive=False, height=240, elem_id="preview",
                       buttons=[])
    examples = gr.Examples(examples=[[str(path), str(path)] for path in example_images()],
                           inputs=[upload, preview], visible_columns=[1],
                           label="Or pick an example (shapes from a seed the model never saw)",
                           examples_per_page=8)
    with gr.Group():
        beam_size = gr.Slider(1, MAX_BEAM_SIZE, value=DEFAULT_BEAM_SIZE, step=1, label="Beam size",
                              info="1 is greedy decoding; a wider beam searches more captions")
        max_len = gr.Slider(3, MAX_CAPTION_WORDS, value=DEFAULT_MAX_LEN, step=1,
                            label="Maximum caption length (words)")
        top_n = gr.Slider(1, MAX_BEAM_SIZE, value=DEFAULT_TOP_N, step=1, label="Captions to list",
                          info="the best ones from the beam (at most the beam size)")
    button = gr.Button("Caption", variant="primary", elem_id="caption-button")
    return upload, preview, examples, (beam_size, max_len, top_n), button


def _caption_updates(prediction: Prediction) -> tuple:
    """Component updates for one prediction, in the order of `build_demo`'s `outputs`."""
    if not prediction.ok:
        return _empty_updates(status_markdown(prediction))
    chosen = first_content_word(prediction.words)
    truth = truth_html(prediction)
    return (
        prediction.text,
        status_markdown(prediction),
        # Values are word positions, so a word that occurs twice ("a ... a") stays two choices.
        gr.Radio(choices=[(w, i) for i, w in enumerate(prediction.words)], value=chosen),
        _word_update(prediction, chosen),
        [[rank, text, round(log_prob, 3), round(score, 3)]
         for rank, (text, log_prob, score) in enumerate(prediction.alternatives, start=1)],
        _gallery_items(prediction),
        prediction.image,
        prediction,
        gr.Markdown(value=prediction.notice or "", visible=prediction.notice is not None),
        gr.HTML(value=truth, visible=bool(truth)),
    )


def _gallery_items(prediction: Prediction | None) -> list[tuple[Image.Image, str]]:
    """(overlay, "3. star · 62%") for every word of the caption."""
    if prediction is None or not prediction.ok:
        return []
    return [(picture, f"{i + 1}. {w} · {bright_share(attention):.0%}")
            for i, (w, picture, attention) in enumerate(zip(prediction.words, prediction.overlays,
                                                            prediction.attention, strict=True))]


def _style_updates(prediction: Prediction | None, index: int | None, style: str) -> tuple:
    """Focus, gallery and state after the overlay style changed; the model does not run."""
    prediction = restyle(prediction, style)
    return _word_update(prediction, index), _gallery_items(prediction), prediction


def _upload_updates(path: str | None) -> tuple:
    """Updates for a new upload, before it is captioned: shown if readable, explained if not."""
    if path is None:
        return _cleared_updates()
    try:
        picture = load_upload(path)
    except ImageLoadError as error:
        return _caption_updates(Prediction(error=_unreadable_message(path, error)))
    return _empty_updates(f"**{Path(path).name}** is ready: press **Caption**.", preview=picture)


def _cleared_updates() -> tuple:
    """Updates for an emptied upload box: no image, no caption."""
    return _empty_updates(NO_IMAGE_MESSAGE)


def _empty_updates(status: str, preview: Image.Image | None = None) -> tuple:
    """Updates that show no caption, `status` saying why; `preview` may show the upload."""
    return ("", status, gr.Radio(choices=[], value=None), gr.Image(value=None, label="Attention"), [], [],
            preview, None, gr.Markdown(value="", visible=False), gr.HTML(value="", visible=False))


def _word_update(prediction: Prediction | None, index: int | None) -> gr.Image:
    picture = focus_picture(prediction, index)
    if picture is None:
        return gr.Image(value=None, label="Attention")
    position = int(index)
    return gr.Image(value=picture, label=f'Attention for "{prediction.words[position]}" '
                                         f"(word {position + 1} of {len(prediction.words)})")


def default_threads() -> int:
    """Torch threads for the demo: half the cores. With torch's default (all cores) its threads
    spin against the web server and whatever else runs: on 2 cores shared with a training job,
    one caption took 36 ms with 1 thread but 2.7 s with 2 (on a quiet machine both took ~22 ms)."""
    return max(1, (os.cpu_count() or 2) // 2)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    # one definition of the options, shared with `captioner demo` (which parses them without gradio)
    parser = argparse.ArgumentParser(prog="captioner demo", description=DEMO_DESCRIPTION)
    add_demo_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Load the model and serve the demo until interrupted (Ctrl-C). Exit code 2 for a bad
    checkpoint, device, host or port."""
    from captioner.backbones import WeightsUnavailableError  # noqa: PLC0415 - only needed to report errors
    from captioner.checkpoint import CheckpointError  # noqa: PLC0415
    from captioner.device import DeviceError  # noqa: PLC0415

    args = parse_args(argv)
    torch.set_num_threads(args.threads or default_threads())
    try:
        captioner = Captioner.load(args.checkpoint, args.device)
    except (CheckpointError, DeviceError, WeightsUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    checks = Checks.for_model(captioner)
    # The first caption pays for lazy initialisation in torch; let that be ours, not the first visitor's.
    for example in example_images()[:1]:
        predict(captioner, example, checks=checks)
    demo = build_demo(captioner, checks)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())
    except OSError as error:  # the port is taken, or the address is not this machine's
        print(f"error: cannot serve on {args.host}:{args.port}: {error}; choose another --port or --host",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
