import io
import os
import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features
from torchvision.transforms.v2 import functional as F

import captioner
from captioner.images import ImageLoadError, Preprocess, load_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    """(h, w, 3) int array, so differences do not wrap around."""
    return np.asarray(image).astype(int)


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- pixel modes -------------------------------------------------------------------------------

def palette_image(with_transparency: bool) -> Image.Image:
    """2x1 "P" image: a red pixel and a pixel whose palette entry is transparent (or green)."""
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.putdata([0, 1])
    if with_transparency:
        image.info["transparency"] = 1
    return image


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("RGB", (3, 2), (10, 20, 30)), (10, 20, 30)),
        (Image.new("L", (3, 2), 77), (77, 77, 77)),
        (Image.new("1", (3, 2), 1), WHITE),
        (Image.new("CMYK", (3, 2), (0, 255, 255, 0)), RED),
        (Image.new("RGBA", (3, 2), (255, 0, 0, 255)), RED),
        (Image.new("RGBA", (3, 2), (255, 0, 0, 0)), WHITE),
        (Image.new("LA", (3, 2), (0, 0)), WHITE),
        (Image.new("LA", (3, 2), (0, 255)), (0, 0, 0)),
    ],
    ids=["RGB", "L", "1", "CMYK", "RGBA-opaque", "RGBA-transparent", "LA-transparent", "LA-opaque"],
)
def test_uniform_images_of_every_mode_become_the_expected_rgb(image, expected):
    loaded = load_image(image)
    assert loaded.mode == "RGB" and loaded.size == image.size
    assert (pixels(loaded) == expected).all()


def test_half_transparent_red_is_blended_with_white():
    loaded = load_image(Image.new("RGBA", (1, 1), (255, 0, 0, 128)))
    assert np.abs(pixels(loaded)[0, 0] - (255, 127, 127)).max() <= 1


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited_over_white(tmp_path, fmt):
    path = write(tmp_path, f"p.{fmt.lower()}", encode(palette_image(True), fmt))
    assert Image.open(path).mode == "P"  # the file really is a palette image
    assert pixels(load_image(path)).tolist() == [[list(RED), list(WHITE)]]


def test_palette_without_transparency_keeps_its_colours(tmp_path):
    path = write(tmp_path, "p.png", encode(palette_image(False), "PNG"))
    assert pixels(load_image(path)).tolist() == [[list(RED), list(GREEN)]]


def test_16_bit_grey_png_is_rescaled_not_clipped(tmp_path):
    grey = np.array([[65535, 32768, 1000, 0]], dtype=np.uint16)
    path = write(tmp_path, "grey16.png", encode(Image.fromarray(grey), "PNG"))
    assert Image.open(path).mode.startswith("I")
    loaded = pixels(load_image(path))[0, :, 0]
    assert loaded.tolist() == [255, 128, 4, 0]


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I", [70000, 35000, 0], [255, 128, 0]),  # outside 16 bits: stretched min..max
        ("I", [200, 100, 0], [200, 100, 0]),  # already within 8 bits
        ("F", [1.0, 0.5, 0.0], [255, 128, 0]),  # float in 0..1
    ],
)
def test_integer_and_float_grey_keep_relative_intensity(mode, values, expected):
    image = Image.new(mode, (3, 1))
    image.putdata(values)
    assert pixels(load_image(image))[0, :, 0].tolist() == expected


def test_exif_orientation_is_applied(tmp_path):
    # Stored wide with red on the left; orientation 6 says "rotate 90° clockwise to view".
    stored = Image.new("RGB", (64, 32), RED)
    stored.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write(tmp_path, "rotated.jpg", encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    loaded = pixels(load_image(path))
    assert loaded.shape == (64, 32, 3)
    assert np.abs(loaded[8, 16] - RED).max() < 30  # left half of the stored image → top
    assert np.abs(loaded[56, 16] - BLUE).max() < 30


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_give_their_first_frame(tmp_path, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **options)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    loaded = load_image(write(tmp_path, f"anim.{fmt.lower()}", data))
    assert np.abs(pixels(loaded) - RED).max() <= 2


def test_raw_bytes_are_decoded():
    loaded = load_image(encode(Image.new("RGB", (5, 4), GREEN), "PNG"))
    assert loaded.size == (5, 4) and (pixels(loaded) == GREEN).all()


def test_result_is_independent_of_the_source_image():
    source = Image.new("RGB", (2, 2), RED)
    loaded = load_image(source)
    source.putpixel((0, 0), BLUE)
    assert loaded.getpixel((0, 0)) == RED


# --- errors ------------------------------------------------------------------------------------

def assert_load_error(source, *phrases, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as caught:
        load_image(source, **kwargs)
    message = str(caught.value)
    for phrase in (str(source), *phrases):
        assert phrase in message, message
    return caught.value


def test_empty_file(tmp_path):
    assert_load_error(write(tmp_path, "empty.jpg", b""), "empty (0 bytes)")


def test_truncated_jpeg_fails_at_load_time(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG")
    assert_load_error(write(tmp_path, "cut.jpg", data[: len(data) // 2]), "truncated or corrupt")


def test_text_file(tmp_path):
    path = write(tmp_path, "notes.jpg", b"these are not pixels\n")
    assert_load_error(path, "not an image format Pillow can read")


def test_svg_file_gets_a_conversion_hint(tmp_path):
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>\n'
    assert_load_error(write(tmp_path, "logo.svg", svg), "SVG is not supported", "PNG")


def test_missing_file(tmp_path):
    assert_load_error(tmp_path / "nowhere.png", "not found")


def test_directory(tmp_path):
    assert_load_error(tmp_path, "directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, "secret.png", encode(Image.new("RGB", (2, 2)), "PNG"))
    path.chmod(0)
    try:
        assert_load_error(path, "permission denied")
    finally:
        path.chmod(0o600)


def test_empty_bytes():
    with pytest.raises(ImageLoadError, match="0 bytes"):
        load_image(b"")


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR chunk is rewritten to claim width x height."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    # Signature (8) + chunk length (4) + b"IHDR" (4), then width, height; the chunk CRC covers
    # the type and the 13 data bytes.
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (20000, 20000, None),  # beyond Pillow's hard limit: Pillow's DecompressionBombError
        (10000, 10000, None),  # beyond Pillow's warning limit only: its warning, escalated
        (5000, 5000, 1_000_000),  # within Pillow's limits, beyond ours
    ],
)
def test_decompression_bombs_are_refused_from_the_header(tmp_path, monkeypatch, width, height, max_pixels):
    path = write(tmp_path, "bomb.png", png_claiming_size(width, height))
    with monkeypatch.context() as unguarded:  # the crafted header is valid, CRC included
        unguarded.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert Image.open(path).size == (width, height)
    limit_before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    kwargs = {} if max_pixels is None else {"max_pixels": max_pixels}
    assert_load_error(path, "too large", "decompression-bomb guard", **kwargs)
    assert Image.MAX_IMAGE_PIXELS == limit_before
    assert warnings.filters == filters_before


def test_own_limit_message_gives_the_size(tmp_path):
    path = write(tmp_path, "big.png", encode(Image.new("RGB", (100, 60)), "PNG"))
    assert_load_error(path, "100x60", "limit", max_pixels=5000)


# --- preprocessing -----------------------------------------------------------------------------

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


def test_preprocess_shape_dtype_and_normalisation():
    colour = (255, 51, 0)
    tensor = Preprocess(image_size=16, mean=MEAN, std=STD)(Image.new("RGB", (40, 30), colour))
    assert tensor.shape == (3, 16, 16) and tensor.dtype == torch.float32
    expected = [(c / 255 - m) / s for c, m, s in zip(colour, MEAN, STD)]
    torch.testing.assert_close(tensor, torch.tensor(expected).view(3, 1, 1).expand(3, 16, 16))


def test_preprocess_keeps_the_whole_image_without_cropping():
    # Three vertical bands; a centre crop of the square would keep only the green one.
    image = Image.new("RGB", (90, 30), GREEN)
    image.paste(RED, (0, 0, 30, 30))
    image.paste(BLUE, (60, 0, 90, 30))
    tensor = Preprocess(image_size=12, mean=(0, 0, 0), std=(1, 1, 1))(image)
    assert tensor[:, :, 0].argmax(0).eq(0).all()  # left column red
    assert tensor[:, :, 6].argmax(0).eq(1).all()  # middle green
    assert tensor[:, :, -1].argmax(0).eq(2).all()  # right column blue


def test_preprocess_accepts_lists_from_configs_and_validates():
    assert Preprocess(8, [0.1, 0.2, 0.3], [1, 1, 1]).mean == (0.1, 0.2, 0.3)
    with pytest.raises(ValueError, match="std"):
        Preprocess(8, MEAN, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="RGB"):
        Preprocess(8, MEAN, STD)(Image.new("L", (4, 4)))


def resized_in_float(image: Image.Image, size: int) -> torch.Tensor:
    """(3, S, S) pixels in [0, 1], the image converted to float at full resolution, then resized."""
    pixels = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
    return F.resize(pixels, [size, size], interpolation=F.InterpolationMode.BILINEAR, antialias=True)


def comparison_image(name: str) -> Image.Image:
    """The coffee photo, or random pixels larger or smaller than the sizes resized to."""
    if name == "coffee":
        return load_image(Path(__file__).parent / "fixtures" / "coffee.png")
    height, width = {"noise": (480, 640), "small noise": (50, 90)}[name]
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [224, 96, 17])
@pytest.mark.parametrize("name", ["coffee", "noise", "small noise"])
def test_preprocess_matches_resizing_in_float(name, size):
    image = comparison_image(name)
    # mean 0, std 1 keeps pixel units; normalisation is the same affine map on both paths.
    difference = (Preprocess(size, (0, 0, 0), (1, 1, 1))(image) - resized_in_float(image, size)).abs()
    # The 8-bit resize rounds to 1/255 twice (after its horizontal and its vertical pass, 0.5/255
    # each); 1.02 leaves room for its fixed-point filter weights. Rounding errors average
    # about 0.3/255, so a systematic shift would show in the mean.
    assert float(difference.max()) <= 1.02 / 255
    assert float(difference.mean()) <= 0.4 / 255


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads resident memory from /proc")
def test_preprocess_never_converts_the_full_resolution_image_to_float():
    side = 6000
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a child of this
    # test process would start with the parent's peak (models loaded by earlier tests included).
    script = textwrap.dedent(f"""
        import torch
        from PIL import Image
        from captioner.images import Preprocess

        def kib(field):
            return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))

        torch.set_num_threads(1)
        preprocess = Preprocess(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        preprocess(Image.new("RGB", (64, 48), (10, 20, 30)))  # lazy imports and allocator set-up
        image = Image.new("RGB", ({side}, {side}), (10, 20, 30))  # filled, so every page is resident
        resident = kib("VmRSS:")
        preprocess(image)
        print(kib("VmHWM:") - resident)
    """)
    # Run where the `captioner` under test lives, so the child imports the same code.
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(captioner.__file__).parent.parent,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout.split()[-1]) * 1024
    # The peak after minus what was resident before can only overstate the growth. A float32
    # copy of the image is side² × 3 × 4 bytes (432 MB here); the bound, one 8-bit copy
    # (side² × 3 bytes), rules that out while leaving room for an 8-bit intermediate.
    assert growth < side * side * 3, f"preprocessing a {side}x{side} image grew the peak by {growth / 1e6:.0f} MB"
