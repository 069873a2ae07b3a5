"""Loading any image a user may hand us as RGB, and the encoder's tensor preprocessing.

`load_image` is the single entry point for pixels from outside (dataset files, CLI paths,
demo uploads): every failure becomes an `ImageLoadError` that names the input and the problem,
so a caller processing many images can report one and carry on with the rest.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

# Pillow's own default for Image.MAX_IMAGE_PIXELS (about 0.25 GB of RGBA pixels).
DEFAULT_MAX_PIXELS = 89_478_485

_WHITE = (255, 255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Pillow raises these from decoders and metadata parsers on damaged files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


class ImageLoadError(ValueError):
    """An image could not be loaded; the message names the input and says why.

    Attributes: `source` (the path, or a short description of bytes / an in-memory image)
    and `problem` (the reason in plain words).
    """

    def __init__(self, source: str, problem: str):
        super().__init__(f"cannot read image {source!r}: {problem}")
        self.source = source
        self.problem = problem


def load_image(
    source: str | os.PathLike | bytes | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Fully decoded RGB copy of `source` (a path, raw encoded bytes, or a PIL image).

    EXIF orientation is applied, animated files give their first frame, and every pixel mode
    is mapped to 8-bit RGB (transparency composited over white, 16-bit / integer / float
    grey rescaled rather than clipped). Images whose header claims more than `max_pixels`
    pixels are refused before decoding. Pillow's global `Image.MAX_IMAGE_PIXELS` guard is
    left untouched and still applies, so `max_pixels` can only make the limit stricter.

    Raises `ImageLoadError` for anything unreadable: missing, empty, unreadable or
    non-image files, truncated or corrupt data, and decompression bombs.
    """
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or f"<in-memory {source.mode} image>"
        return _decode(source, name, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = f"<{len(data)} bytes>"
        if not data:
            raise ImageLoadError(name, "no data (0 bytes)")
        return _open_and_decode(io.BytesIO(data), name, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _load_path(Path(source), max_pixels)
    raise TypeError(f"load_image expects a path, bytes or a PIL image, not {type(source).__name__}")


def _load_path(path: Path, max_pixels: int) -> Image.Image:
    name = str(path)
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found") from None
    except IsADirectoryError:
        raise ImageLoadError(name, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageLoadError(name, "permission denied") from None
    except OSError as error:
        raise ImageLoadError(name, f"cannot open: {error.strerror or error}") from None
    with file:
        if os.fstat(file.fileno()).st_size == 0:
            raise ImageLoadError(name, "file is empty (0 bytes)")
        return _open_and_decode(file, name, max_pixels)


def _open_and_decode(file: io.IOBase, name: str, max_pixels: int) -> Image.Image:
    with _bomb_guard(name):
        try:
            image = Image.open(file)  # reads the header only
        except UnidentifiedImageError:
            raise ImageLoadError(name, _unidentified_problem(file, name)) from None
        except _DECODE_ERRORS as error:
            raise ImageLoadError(name, f"truncated or corrupt: {error}") from None
    with image:
        return _decode(image, name, max_pixels)


def _decode(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """Check the header size, decode every pixel, orient, and convert to RGB."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageLoadError(
            name,
            f"too large: {width}x{height} = {_megapixels(width * height)} MP exceeds the limit "
            f"of {_megapixels(max_pixels)} MP (decompression-bomb guard)",
        )
    with _bomb_guard(name):
        try:
            # Decode now so a truncated file fails here, while we still know its name.
            image.load()
            oriented = ImageOps.exif_transpose(image)
        except _DECODE_ERRORS as error:
            raise ImageLoadError(name, f"truncated or corrupt: {error}") from None
    try:
        return to_rgb(oriented)
    except ValueError as error:
        raise ImageLoadError(name, f"unsupported pixel mode {image.mode!r}: {error}") from None


@contextlib.contextmanager
def _bomb_guard(name: str) -> Iterator[None]:
    """Turn Pillow's decompression-bomb warning and error into an `ImageLoadError`.

    The warning is escalated only inside this block; `Image.MAX_IMAGE_PIXELS` is never touched.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageLoadError(name, f"too large: {error} (decompression-bomb guard)") from None


def _unidentified_problem(file: io.IOBase, name: str) -> str:
    file.seek(0)
    head = file.read(512)
    if name.lower().endswith((".svg", ".svgz")) or b"<svg" in head:
        return "not an image format Pillow can read (SVG is not supported; convert it to PNG)"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"):
        return "not an image format Pillow can read (HEIC is not supported; convert it to JPEG)"
    if _looks_like_text(head):
        return "not an image format Pillow can read (the file contains text)"
    return "not an image format Pillow can read"


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.0f}" if pixels >= 10e6 else f"{pixels / 1e6:.2g}"


def to_rgb(image: Image.Image) -> Image.Image:
    """New 8-bit RGB image from a decoded image of any Pillow mode.

    Transparent pixels are composited over white (how viewers show them on a page);
    16-bit, 32-bit integer and float grey are rescaled to 0..255 (see `_grey_to_uint8`).
    """
    if image.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_grey_to_uint8(image), "L").convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_uint8(image: Image.Image) -> np.ndarray:
    """(h, w) uint8 array: grey values divided by the full scale of the data's bit depth.

    "I;16*" modes are 16-bit by definition. "I" and "F" carry no bit depth, so the smallest
    standard range holding every value is used (0..1 for float, 0..255, 0..65535), and
    anything else (negative values, wider ranges) is stretched from its min to its max.
    """
    values = np.asarray(image).astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    elif low >= 0 and high <= 1 and image.mode == "F":
        low, high = 0.0, 1.0
    elif low >= 0 and high <= 255:
        low, high = 0.0, 255.0
    elif low >= 0 and high <= 65535:
        low, high = 0.0, 65535.0
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip(np.rint((values - low) * scale), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Preprocess:
    """RGB PIL image → normalised (3, S, S) float32 tensor, S = `image_size`.

    The whole image is resized to S×S (bilinear, antialiased) without cropping: a caption
    describes everything in the picture, so nothing at the borders may be cut away.
    `mean` / `std` are the per-channel statistics the encoder's weights were trained with.

    The resize runs on the 8-bit PIL image and only the S×S result becomes float, so no
    full-resolution float copy is ever made (12 bytes a pixel, about 1 GB at the largest
    image `load_image` accepts, in every data-loader worker). Pillow rounds to 8 bits after
    each of its two separable passes, so values differ from resizing in float by at most
    about 1/255 before normalisation.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        # Configs deliver lists; tuples keep the dataclass hashable and immutable.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"std values must be positive, got {self.std}")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """(3, S, S) float32 tensor of the RGB `image`."""
        if image.mode != "RGB":
            raise ValueError(f"Preprocess expects an RGB image (use load_image), got mode {image.mode!r}")
        # Pillow's bilinear resize always antialiases when shrinking.
        resized = F.resize(image, [self.image_size, self.image_size], interpolation=F.InterpolationMode.BILINEAR)
        pixels = F.to_dtype(F.pil_to_tensor(resized), torch.float32, scale=True)
        return F.normalize(pixels, list(self.mean), list(self.std))
