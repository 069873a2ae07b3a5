"""Attention overlays: where the model looked for each word, drawn over the image.

The decoder's attention for one word is an (h, w) grid of weights over the encoder's feature
cells. `attention_heatmap` upsamples it smoothly to the image's size and rescales it so the
most-looked-at point is 1; `overlay` draws it over the image in one of two styles:

- "paper" (the default), as in Xu et al.'s figures: the image is dimmed to near black where
  the word's attention is about 0 and shown at full brightness where it is at its maximum;
- "heatmap": the map painted in the inferno colour scale over the slightly dimmed image.

`bright_share` is the share of a word's attention that falls in its bright region, the grid
cells at or above half the map's maximum (the region the paper style shows clearly);
`overlay_with_legend` adds a colour scale (0 to the map's maximum) and that share under one
overlay (demo). `overlay_grid` lays out one overlay per word of a caption, each labelled with
its word and bright share, above one legend, and `save_overlays` writes that grid to disk
atomically (batch CLI `--attention-dir`, run report gallery).

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
STYLES = ("paper", "heatmap")
DEFAULT_STYLE = "paper"
# Heatmap style: fraction by which unattended pixels are darkened, so the looked-at region
# stands out while the rest of the scene stays recognisable under the colours.
DIM = 0.2
# Paper style: brightness left where attention is 0. Near black, as in the paper's figures,
# yet not quite, so the outline of the scene can still be made out.
PAPER_FLOOR = 0.12
# The bright region of a map: cells holding at least this fraction of its maximum.
BRIGHT_FRACTION = 0.5
BRIGHT_REGION = "cells at or above half the maximum"
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


def overlay(image: Image.Image, attention: torch.Tensor | np.ndarray, opacity: float = 0.6,
            style: str = DEFAULT_STYLE) -> Image.Image:
    """RGB image of `image`'s size with one word's (h, w) attention drawn over it.

    "paper": each pixel keeps `PAPER_FLOOR` + (1 − `PAPER_FLOOR`) × heat of its brightness, so
    unattended areas go near black and the attended region shows the image as it is
    (`opacity` is not used). "heatmap": each pixel blends the image towards the colormap's
    colour for its heat, with weight `opacity` × heat, over the image darkened by `DIM` where
    attention is low.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    rgb = to_rgb(image)
    heat = attention_heatmap(attention, rgb.size)[..., None]  # (H, W, 1)
    pixels = np.asarray(rgb, dtype=np.float32)
    if style == "paper":
        blended = pixels * (PAPER_FLOOR + (1.0 - PAPER_FLOOR) * heat)
    else:
        dimmed = pixels * (1.0 - DIM * (1.0 - heat))
        alpha = opacity * heat
        blended = (1.0 - alpha) * dimmed + alpha * _colormap(heat[..., 0])
    return Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8), "RGB")


def bright_share(attention: torch.Tensor | np.ndarray) -> float:
    """Share of a word's (h, w) attention inside its bright region (`BRIGHT_REGION`), in [0, 1].

    Measured on the grid itself, not on the smoothed picture: it is the model's own weighting.
    0.0 for an all-zero map.
    """
    grid = _as_float_tensor(attention)
    total, peak = float(grid.sum()), float(grid.max()) if grid.numel() else 0.0
    if total <= 0 or peak <= 0:
        return 0.0
    return float(grid[grid >= BRIGHT_FRACTION * peak].sum()) / total


def bright_share_text(attention: torch.Tensor | np.ndarray, word: str | None = None) -> str:
    """A sentence saying how much of the word's attention is in the bright region, and what that is."""
    whose = f'the attention for "{word}"' if word else "this word's attention"
    return f"{bright_share(attention):.0%} of {whose} falls in the bright region (grid {BRIGHT_REGION})"


def legend(style: str, peak: float | None, width: int, font_size: int = 12) -> Image.Image:
    """A white band `width` pixels wide: the style's colour scale from 0 to `peak`, labelled.

    `peak` is the map's largest cell weight (a word's weights sum to 1 over the grid); None
    labels the right end "max", for grids whose words each have their own maximum.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    font = ImageFont.load_default(size=font_size)
    ascent, descent = font.getmetrics()
    text_h = ascent + descent
    bar_h = max(6, font_size)
    band = Image.new("RGB", (max(1, width), bar_h + text_h + 3 * GAP), BACKGROUND)
    draw = ImageDraw.Draw(band)
    left_label, right_label = "0", "max" if peak is None else f"{peak:.2g} (max)"
    title = "attention per cell"
    left_w, right_w = draw.textlength(left_label, font=font), draw.textlength(right_label, font=font)
    bar_left, bar_right = GAP + int(left_w) + GAP, width - GAP - int(right_w) - GAP
    if bar_right - bar_left >= 16:
        band.paste(_scale_strip(style, bar_right - bar_left, bar_h), (bar_left, GAP))
        draw.rectangle((bar_left, GAP, bar_right - 1, GAP + bar_h - 1), outline=(160, 160, 160))
        draw.text((GAP, GAP + (bar_h - text_h) / 2), left_label, fill=TEXT_COLOUR, font=font)
        draw.text((bar_right + GAP, GAP + (bar_h - text_h) / 2), right_label, fill=TEXT_COLOUR, font=font)
    title = _fit(draw, title, font, width)
    draw.text(((width - draw.textlength(title, font=font)) / 2, 2 * GAP + bar_h), title, fill=TEXT_COLOUR, font=font)
    return band


def _scale_strip(style: str, width: int, height: int) -> Image.Image:
    """The colours `overlay` gives heat 0 → 1, left to right; the paper style's are greys
    (the brightness a pixel keeps)."""
    heat = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    if style == "paper":
        colours = np.repeat((255.0 * (PAPER_FLOOR + (1.0 - PAPER_FLOOR) * heat))[..., None], 3, axis=-1)
    else:
        colours = _colormap(heat)
    return Image.fromarray(np.rint(colours).clip(0, 255).astype(np.uint8), "RGB")


def overlay_with_legend(image: Image.Image, attention: torch.Tensor | np.ndarray, style: str = DEFAULT_STYLE,
                        word: str | None = None) -> Image.Image:
    """`overlay` with, underneath, the colour scale from 0 to the map's maximum and the share
    of the word's attention in its bright region (`bright_share_text`)."""
    return add_legend(overlay(image, attention, style=style), attention, style, word)


def add_legend(picture: Image.Image, attention: torch.Tensor | np.ndarray, style: str = DEFAULT_STYLE,
               word: str | None = None) -> Image.Image:
    """An overlay already drawn with `style` (the demo keeps them), with `overlay_with_legend`'s
    band added underneath."""
    font_size = max(11, round(picture.width * 0.028))
    band = legend(style, float(_as_float_tensor(attention).max()), picture.width, font_size)
    font = ImageFont.load_default(size=font_size)
    line_h = sum(font.getmetrics())
    lines = _wrap(bright_share_text(attention, word), font, picture.width - 2 * GAP)
    canvas = Image.new("RGB", (picture.width, picture.height + band.height + len(lines) * line_h + GAP), BACKGROUND)
    canvas.paste(picture, (0, 0))
    canvas.paste(band, (0, picture.height))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((GAP, picture.height + band.height + k * line_h), line, fill=TEXT_COLOUR, font=font)
    return canvas


def overlay_grid(
    image: Image.Image,
    words: Sequence[str],
    attention: torch.Tensor | np.ndarray,
    columns: int = 5,
    tile: int = 224,
    style: str = DEFAULT_STYLE,
) -> Image.Image:
    """Grid of T + 1 labelled tiles, the image itself then one overlay per word, above a legend.

    `attention` is (T, h, w) with T == len(words). Every tile is the image resized to `tile`
    pixels on its long side, with a band underneath naming its word and the share of its
    attention in its bright region ("star 62%"); tiles fill rows of `columns` (fewer if there
    are fewer tiles), `GAP` pixels apart, on a white background. Under the grid, `grid_legend`
    says how to read it.
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
    tiles = [thumb] + [overlay(thumb, grid, style=style) for grid in maps]
    labels = [IMAGE_LABEL, *(f"{word} {bright_share(grid):.0%}" for word, grid in zip(words, maps))]

    font = ImageFont.load_default(size=max(10, round(tile * 0.08)))
    ascent, descent = font.getmetrics()
    band = ascent + descent + 2 * GAP
    cell_w, cell_h = thumb_size[0], thumb_size[1] + band
    used_columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / used_columns)
    width = used_columns * cell_w + (used_columns - 1) * GAP
    footer = grid_legend(style, width, font_size=max(10, round(tile * 0.06)))
    canvas = Image.new("RGB", (width, rows * cell_h + (rows - 1) * GAP + GAP + footer.height), BACKGROUND)
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
    canvas.paste(footer, (0, canvas.height - footer.height))
    return canvas


def grid_legend(style: str, width: int, font_size: int = 12) -> Image.Image:
    """The footer of `overlay_grid`: the colour scale (0 to each word's own maximum) and what
    the percentages under the tiles mean, wrapped to `width` pixels."""
    scale = legend(style, None, min(width, 40 * font_size), font_size)
    font = ImageFont.load_default(size=font_size)
    ascent, descent = font.getmetrics()
    note = (f"Each map is scaled to its own maximum. % = share of the word's attention in its bright "
            f"region ({BRIGHT_REGION}).")
    lines = _wrap(note, font, width - 2 * GAP)
    band = Image.new("RGB", (width, scale.height + len(lines) * (ascent + descent) + GAP), BACKGROUND)
    band.paste(scale, (0, 0))
    draw = ImageDraw.Draw(band)
    for k, line in enumerate(lines):
        draw.text((GAP, scale.height + k * (ascent + descent)), line, fill=TEXT_COLOUR, font=font)
    return band


def save_overlays(
    image: Image.Image,
    words: Sequence[str],
    attention: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    columns: int = 5,
    tile: int = 224,
    style: str = DEFAULT_STYLE,
) -> Path:
    """Write `overlay_grid(image, words, attention, ...)` to `path` atomically and return the path.

    The format follows the suffix (.png, .jpg, ... anything Pillow can write); parent folders
    are created, and a crash mid-write leaves any old file intact and no temporary file behind.
    """
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(f"cannot tell an image format Pillow can write from the suffix of {path} (use .png or .jpg)")
    grid = overlay_grid(image, words, attention, columns=columns, tile=tile, style=style)
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


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """`text` broken at spaces into lines at most `width` pixels wide (a longer word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """`text`, shortened with an ellipsis if it would overflow a tile `width` pixels wide."""
    room = width - 2 * GAP
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "...", font=font) > room:
        text = text[:-1]
    return text + "..."
