"""Attention overlays: where the model looked for each word, drawn over the image.

The decoder's attention for one word is an (h, w) grid of weights over the encoder's feature
cells. `attention_heatmap` upsamples it smoothly to the image's size and rescales it so the
most-looked-at point is 1; `overlay` paints that heatmap in colour over the image;
`overlay_grid` lays out one overlay per word of a caption, each labelled with its word, and
`save_overlays` writes that grid to disk atomically (batch CLI `--attention-dir`, demo).

Attention may come as a torch tensor (any device, any float dtype, bfloat16 included) or a
numpy array; images may be any Pillow mode.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from captioner.atomic import AtomicFile
from captioner.images import to_rgb

# matplotlib's "inferno" sampled at 0, 0.1, ..., 1 (viridisLite::inferno(11)): perceptually
# uniform and readable in greyscale, so weak attention never looks stronger than it is.
INFERNO = np.array(
    [
        (0, 0, 4), (22, 11, 57), (66, 10, 104), (106, 23, 110), (147, 38, 103), (188, 55, 84),
        (221, 81, 58), (243, 120, 25), (252, 165, 10), (246, 215, 70), (252, 255, 164),
    ],
    dtype=np.float32,
)
# Fraction by which unattended pixels are darkened, so the looked-at region stands out
# while the rest of the scene stays recognisable.
DIM = 0.2
# Pixels between tiles of a grid, and around each label.
GAP = 4
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
IMAGE_LABEL = "<image>"


def attention_heatmap(attention: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 heatmap in [0, 1] of one word's (h, w) attention, at `size` = (W, H).

    The grid is upsampled bicubically (cell centres aligned with the centres of the image
    regions they cover, `align_corners=False`), its overshoot clamped away, and divided by
    its maximum, so the most-attended point is 1; an all-zero map stays zero.
    """
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"heatmap size must be positive (width, height), got {size}")
    grid = _as_float_tensor(attention)
    if grid.ndim != 2:
        raise ValueError(f"attention must be an (h, w) grid for one word, got shape {tuple(grid.shape)}")
    heat = F.interpolate(
        grid[None, None], size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )[0, 0].clamp_(min=0.0)
    peak = heat.max()
    if peak > 0:
        heat /= peak
    return heat.clamp_(max=1.0).numpy()


def overlay(image: Image.Image, attention: torch.Tensor | np.ndarray, opacity: float = 0.6) -> Image.Image:
    """RGB image of `image`'s size with one word's (h, w) attention painted over it.

    Each pixel blends the image towards the colormap's colour for its heat, with weight
    `opacity` × heat: the colour dominates where attention is high, the image shows through
    where it is low, darkened by `DIM` so the attended region stands out.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    rgb = to_rgb(image)
    heat = attention_heatmap(attention, rgb.size)[..., None]  # (H, W, 1)
    pixels = np.asarray(rgb, dtype=np.float32)
    dimmed = pixels * (1.0 - DIM * (1.0 - heat))
    alpha = opacity * heat
    blended = (1.0 - alpha) * dimmed + alpha * _colormap(heat[..., 0])
    return Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8), "RGB")


def overlay_grid(
    image: Image.Image,
    words: Sequence[str],
    attention: torch.Tensor | np.ndarray,
    columns: int = 5,
    tile: int = 224,
) -> Image.Image:
    """Grid of T + 1 labelled tiles: the image itself, then one overlay per word.

    `attention` is (T, h, w) with T == len(words). Every tile is the image resized to `tile`
    pixels on its long side, with its word written in a band underneath; tiles fill rows of
    `columns` (fewer if there are fewer tiles), `GAP` pixels apart, on a white background.
    """
    if columns < 1 or tile < 1:
        raise ValueError(f"columns and tile must be positive, got columns={columns}, tile={tile}")
    maps = _as_float_tensor(attention)
    if maps.ndim != 3:
        raise ValueError(f"attention must be (T, h, w), one grid per word, got shape {tuple(maps.shape)}")
    if maps.shape[0] != len(words):
        raise ValueError(
            f"attention has {maps.shape[0]} maps but the caption has {len(words)} words; "
            "they must match one to one"
        )
    rgb = to_rgb(image)
    scale = tile / max(rgb.size)
    thumb_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    # Overlays are drawn at tile size: same picture, and no full-resolution heatmap per word.
    thumb = rgb.resize(thumb_size, Image.Resampling.LANCZOS)
    tiles = [thumb] + [overlay(thumb, grid) for grid in maps]
    labels = [IMAGE_LABEL, *words]

    font = ImageFont.load_default(size=max(10, round(tile * 0.08)))
    ascent, descent = font.getmetrics()
    band = ascent + descent + 2 * GAP
    cell_w, cell_h = thumb_size[0], thumb_size[1] + band
    used_columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / used_columns)
    canvas = Image.new(
        "RGB",
        (used_columns * cell_w + (used_columns - 1) * GAP, rows * cell_h + (rows - 1) * GAP),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas)
    for index, (picture, label) in enumerate(zip(tiles, labels)):
        row, column = divmod(index, used_columns)
        left, top = column * (cell_w + GAP), row * (cell_h + GAP)
        canvas.paste(picture, (left, top))
        text = _fit(draw, label, font, cell_w)
        draw.text(
            (left + (cell_w - draw.textlength(text, font=font)) / 2, top + thumb_size[1] + GAP),
            text,
            fill=TEXT_COLOUR,
            font=font,
        )
    return canvas


def save_overlays(
    image: Image.Image,
    words: Sequence[str],
    attention: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    columns: int = 5,
    tile: int = 224,
) -> Path:
    """Write `overlay_grid(image, words, attention)` to `path` atomically and return the path.

    The format follows the suffix (.png, .jpg, ... anything Pillow can write); parent folders
    are created, and a crash mid-write leaves any old file intact and no temporary file behind.
    """
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(f"cannot tell an image format Pillow can write from the suffix of {path} (use .png or .jpg)")
    grid = overlay_grid(image, words, attention, columns=columns, tile=tile)
    with AtomicFile(path, "wb") as handle:
        grid.save(handle, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return path


def _as_float_tensor(attention: torch.Tensor | np.ndarray) -> torch.Tensor:
    """CPU float32 copy of `attention`: bfloat16 and half have no numpy or bicubic-CPU path."""
    if isinstance(attention, torch.Tensor):
        return attention.detach().to(device="cpu", dtype=torch.float32, copy=True)
    return torch.from_numpy(np.array(attention, dtype=np.float32))


def _colormap(heat: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 RGB colours of `INFERNO` for (H, W) values in [0, 1]."""
    anchors = np.linspace(0.0, 1.0, len(INFERNO))
    return np.stack([np.interp(heat, anchors, INFERNO[:, channel]) for channel in range(3)], axis=-1).astype(
        np.float32
    )


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """`text`, shortened with an ellipsis if it would overflow a tile `width` pixels wide."""
    room = width - 2 * GAP
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "...", font=font) > room:
        text = text[:-1]
    return text + "..."
