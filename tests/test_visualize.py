import math

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.visualize import (
    GAP,
    PAPER_FLOOR,
    add_legend,
    attention_heatmap,
    bright_share,
    bright_share_text,
    grid_legend,
    legend,
    overlay,
    overlay_grid,
    overlay_with_legend,
    save_overlays,
)

# A non-square image and a non-square grid, so swapped (width, height) or (h, w) shows up.
WIDTH, HEIGHT = 210, 120
GRID_H, GRID_W = 4, 7


def textured_image(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def one_hot(row: int, column: int) -> torch.Tensor:
    grid = torch.zeros(GRID_H, GRID_W)
    grid[row, column] = 1.0
    return grid


def cell_region(row: int, column: int) -> tuple[slice, slice]:
    """Pixel rows and columns of the image region that grid cell (row, column) covers."""
    return (
        slice(row * HEIGHT // GRID_H, (row + 1) * HEIGHT // GRID_H),
        slice(column * WIDTH // GRID_W, (column + 1) * WIDTH // GRID_W),
    )


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


# --- heatmap -----------------------------------------------------------------------------------

def test_heatmap_has_image_shape_and_unit_range():
    attention = torch.rand(GRID_H, GRID_W, generator=torch.Generator().manual_seed(0)).softmax(-1)
    heat = attention_heatmap(attention, (WIDTH, HEIGHT))
    assert heat.shape == (HEIGHT, WIDTH)
    assert heat.dtype == np.float32
    assert heat.min() >= 0.0
    assert heat.max() == pytest.approx(1.0)


@pytest.mark.parametrize("row, column", [(0, 0), (1, 5), (3, 6), (2, 2)])
def test_heatmap_peaks_inside_the_attended_cell(row, column):
    heat = attention_heatmap(one_hot(row, column), (WIDTH, HEIGHT))
    peak_y, peak_x = np.unravel_index(np.argmax(heat), heat.shape)
    rows, columns = cell_region(row, column)
    assert rows.start <= peak_y < rows.stop
    assert columns.start <= peak_x < columns.stop


def test_heatmap_is_smooth_not_blocky():
    heat = attention_heatmap(one_hot(1, 3), (WIDTH, HEIGHT))
    rows, columns = cell_region(1, 3)
    # Nearest-neighbour upsampling would make the whole cell exactly 1.
    assert heat[rows, columns].min() < 0.99
    assert len(np.unique(heat)) > 50


def test_all_zero_attention_stays_zero():
    heat = attention_heatmap(np.zeros((GRID_H, GRID_W)), (WIDTH, HEIGHT))
    assert heat.shape == (HEIGHT, WIDTH)
    assert not heat.any()


def test_heatmap_accepts_numpy_and_bfloat16_alike():
    attention = torch.rand(GRID_H, GRID_W, generator=torch.Generator().manual_seed(1))
    attention = attention.to(torch.bfloat16)
    from_bf16 = attention_heatmap(attention, (WIDTH, HEIGHT))
    from_numpy = attention_heatmap(attention.float().numpy(), (WIDTH, HEIGHT))
    np.testing.assert_allclose(from_bf16, from_numpy, atol=1e-6)
    assert attention.dtype == torch.bfloat16  # the caller's tensor is not converted in place


def test_heatmap_rejects_a_grid_that_is_not_2d():
    with pytest.raises(ValueError, match="shape"):
        attention_heatmap(torch.ones(3, GRID_H, GRID_W), (WIDTH, HEIGHT))


# --- overlay -----------------------------------------------------------------------------------

def test_heatmap_overlay_changes_the_image_mostly_where_attention_is_high():
    image = textured_image()
    result = overlay(image, one_hot(2, 1), style="heatmap")
    assert result.mode == "RGB"
    assert result.size == image.size
    difference = np.abs(pixels(result) - pixels(image)).mean(axis=-1)
    hot = np.zeros(difference.shape, dtype=bool)
    hot[cell_region(2, 1)] = True
    assert difference[hot].mean() > 1.3 * difference[~hot].mean()
    # Low attention lets the image show through, only darkened.
    far = difference[: HEIGHT // 4, WIDTH // 2 :]
    assert 0 < far.mean() < 0.75 * difference[hot].mean()


def test_heatmap_overlay_opacity_zero_only_dims_unattended_pixels():
    image = textured_image()
    result = overlay(image, one_hot(0, 0), opacity=0.0, style="heatmap")
    rows, columns = cell_region(3, 6)
    assert (pixels(result)[rows, columns] <= pixels(image)[rows, columns]).all()
    with pytest.raises(ValueError, match="opacity"):
        overlay(image, one_hot(0, 0), opacity=1.5)


def test_paper_overlay_is_near_black_where_unattended_and_the_image_where_attended():
    image = textured_image()
    result = pixels(overlay(image, one_hot(2, 1)))  # the default style is the paper's
    original = pixels(image)
    # Far from the attended cell, only PAPER_FLOOR of the brightness is left: near black.
    far = (slice(0, HEIGHT // 4), slice(WIDTH // 2, None))
    assert (result[far] <= np.ceil(PAPER_FLOOR * original[far]) + 1).all()
    assert result[far].mean() < 0.15 * 255
    # At the attended cell's centre the image shows as it is.
    rows, columns = cell_region(2, 1)
    centre = (slice(rows.start + 5, rows.stop - 5), slice(columns.start + 5, columns.stop - 5))
    assert np.abs(result[centre] - original[centre]).mean() < 0.2 * original[centre].mean()
    # Brightness falls off smoothly, not in blocks.
    assert len(np.unique(result[..., 0])) > 50


def test_styles_differ_and_an_unknown_style_is_refused():
    image = textured_image()
    assert overlay(image, one_hot(1, 1), style="paper").tobytes() != overlay(image, one_hot(1, 1),
                                                                            style="heatmap").tobytes()
    with pytest.raises(ValueError, match="style"):
        overlay(image, one_hot(1, 1), style="xray")


def test_bright_share_is_the_attention_in_cells_at_or_above_half_the_maximum():
    assert bright_share(one_hot(1, 1)) == pytest.approx(1.0)
    assert bright_share(torch.full((GRID_H, GRID_W), 1 / (GRID_H * GRID_W))) == pytest.approx(1.0)
    grid = torch.zeros(GRID_H, GRID_W)
    grid[0, 0], grid[0, 1], grid[3, 6] = 0.5, 0.3, 0.2  # 0.3 >= 0.25 is bright, 0.2 is not
    assert bright_share(grid) == pytest.approx(0.8)
    assert bright_share(grid.numpy()) == pytest.approx(0.8)
    assert bright_share(torch.zeros(GRID_H, GRID_W)) == 0.0
    text = bright_share_text(grid, "star")
    assert text.startswith('80% of the attention for "star" falls in the bright region') and "half the maximum" in text


@pytest.mark.parametrize("style", ["paper", "heatmap"])
def test_legend_runs_from_dark_to_bright(style):
    band = legend(style, 0.42, 300)
    assert band.width == 300 and band.mode == "RGB"
    # The bar's row: darkest towards the left (0), brightest towards the right (the maximum).
    row = pixels(band)[GAP + 3].sum(axis=-1)
    inside = np.flatnonzero(row < 3 * 250)
    bar = row[inside[0] + 2 : inside[-1] - 60]
    assert bar[: len(bar) // 4].mean() < bar[-len(bar) // 4 :].mean()


def test_overlay_with_legend_keeps_the_overlay_on_top_and_adds_a_band():
    image = textured_image()
    drawn = overlay(image, one_hot(2, 3))
    with_legend = overlay_with_legend(image, one_hot(2, 3), word="star")
    assert with_legend.width == WIDTH and with_legend.height > HEIGHT + 20
    assert pixels(with_legend)[:HEIGHT].tolist() == pixels(drawn).tolist()
    assert add_legend(drawn, one_hot(2, 3), word="star").tobytes() == with_legend.tobytes()
    # The band holds dark text on white.
    band = pixels(with_legend)[HEIGHT:]
    assert (band == 255).mean() > 0.5 and (band < 100).any()


def palette_image() -> Image.Image:
    return textured_image().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)


@pytest.mark.parametrize(
    "make",
    [
        lambda: textured_image().convert("L"),
        lambda: textured_image().convert("RGBA"),
        lambda: textured_image().convert("LA"),
        palette_image,
        lambda: textured_image().convert("CMYK"),
    ],
    ids=["L", "RGBA", "LA", "P", "CMYK"],
)
def test_overlay_accepts_any_pixel_mode(make):
    image = make()
    for style in ("heatmap", "paper"):
        result = overlay(image, one_hot(1, 1), style=style)
        assert result.mode == "RGB"
        assert result.size == (WIDTH, HEIGHT)
    # The heatmap paints the attended cell; the paper view darkens everything else.
    rows, columns = cell_region(1, 1)
    heat = overlay(image, one_hot(1, 1), style="heatmap")
    assert np.abs(pixels(heat)[rows, columns] - pixels(image.convert("RGB"))[rows, columns]).mean() > 10
    far = (slice(HEIGHT // 2, None), slice(WIDTH // 2, None))
    assert np.abs(pixels(result)[far] - pixels(image.convert("RGB"))[far]).mean() > 10


def test_overlay_takes_bfloat16_tensors():
    attention = one_hot(3, 4).to(torch.bfloat16)
    as_bf16 = overlay(textured_image(), attention)
    as_float = overlay(textured_image(), attention.float())
    assert as_bf16.tobytes() == as_float.tobytes()


# --- grid --------------------------------------------------------------------------------------

def caption_attention(words: int) -> torch.Tensor:
    maps = torch.zeros(words, GRID_H, GRID_W)
    for t in range(words):
        maps[t, t % GRID_H, t % GRID_W] = 1.0
    return maps


@pytest.mark.parametrize("columns", [1, 3, 5, 8, 20])
def test_grid_lays_out_one_tile_per_word_plus_the_image(columns):
    words = ["a", "red", "circle", "above", "a", "blue", "square"]
    tile = 90
    image = textured_image()
    grid = overlay_grid(image, words, caption_attention(len(words)), columns=columns, tile=tile)

    tiles = len(words) + 1
    used = min(columns, tiles)
    rows = math.ceil(tiles / used)
    tile_w, tile_h = tile, round(HEIGHT * tile / WIDTH)  # long side (width) scaled to `tile`
    assert grid.mode == "RGB"
    assert grid.width == used * tile_w + (used - 1) * GAP
    # Under the tiles, one GAP then the legend saying how to read them.
    footer = grid_legend("paper", grid.width, font_size=max(10, round(tile * 0.06)))
    assert pixels(grid)[grid.height - footer.height :].tolist() == pixels(footer).tolist()
    cell_h, remainder = divmod(grid.height - footer.height - GAP - (rows - 1) * GAP, rows)
    assert remainder == 0
    assert cell_h > tile_h  # room for the word under each tile

    canvas = pixels(grid)
    thumb = pixels(image.resize((tile_w, tile_h), Image.Resampling.LANCZOS))
    for index in range(used * rows):
        row, column = divmod(index, used)
        top, left = row * (cell_h + GAP), column * (tile_w + GAP)
        picture = canvas[top : top + tile_h, left : left + tile_w]
        label = canvas[top + tile_h : top + cell_h, left : left + tile_w]
        if index == 0:
            assert np.abs(picture - thumb).max() <= 1  # the untouched image comes first
        elif index < tiles:
            assert np.abs(picture - thumb).mean() > 5
            assert (label < 128).any()  # the word is written under its tile
        else:
            assert (picture == 255).all() and (label == 255).all()  # unused cells stay blank


def test_grid_tiles_follow_the_long_side_of_portrait_images():
    image = textured_image(width=60, height=150)
    grid = overlay_grid(image, ["tall"], caption_attention(1), columns=4, tile=100)
    assert grid.width == 2 * 40 + GAP
    assert grid.height > 100


def test_grid_puts_each_words_attention_on_its_own_tile():
    words = ["left", "right"]
    maps = torch.zeros(2, GRID_H, GRID_W)
    maps[0, :, 0] = 1.0  # first word looks at the left edge
    maps[1, :, -1] = 1.0  # second word at the right edge
    image = Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128))
    grid = pixels(overlay_grid(image, words, maps, columns=3, tile=WIDTH, style="heatmap"))
    plain = grid[:HEIGHT, :WIDTH]
    first = grid[:HEIGHT, WIDTH + GAP : 2 * WIDTH + GAP]
    second = grid[:HEIGHT, 2 * (WIDTH + GAP) : 3 * WIDTH + 2 * GAP]
    edge = WIDTH // GRID_W

    def change(tile: np.ndarray, side: slice) -> float:
        return np.abs(tile[:, side] - plain[:, side]).mean()

    assert change(first, slice(0, edge)) > change(first, slice(-edge, None))
    assert change(second, slice(-edge, None)) > change(second, slice(0, edge))

    # In the paper view, the attended side is the bright one.
    paper = pixels(overlay_grid(image, words, maps, columns=3, tile=WIDTH))
    first = paper[:HEIGHT, WIDTH + GAP : 2 * WIDTH + GAP]
    second = paper[:HEIGHT, 2 * (WIDTH + GAP) : 3 * WIDTH + 2 * GAP]
    assert first[:, :edge].mean() > 2 * first[:, -edge:].mean()
    assert second[:, -edge:].mean() > 2 * second[:, :edge].mean()


def test_grid_rejects_mismatched_lengths_naming_both():
    with pytest.raises(ValueError, match=r"(?s)(3 maps.*2 words)"):
        overlay_grid(textured_image(), ["a", "b"], caption_attention(3))


def test_grid_shortens_long_words_instead_of_overflowing():
    grid = overlay_grid(textured_image(), ["supercalifragilisticexpialidocious" * 3], caption_attention(1),
                        columns=1, tile=60)
    assert grid.width == 60


def test_grid_takes_bfloat16_tensors():
    maps = caption_attention(3)
    as_bf16 = overlay_grid(textured_image(), ["a", "b", "c"], maps.to(torch.bfloat16), tile=64)
    as_numpy = overlay_grid(textured_image(), ["a", "b", "c"], maps.numpy(), tile=64)
    assert as_bf16.tobytes() == as_numpy.tobytes()


# --- saving ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["grid.png", "grid.jpg", "grid.JPEG"])
def test_save_overlays_round_trips_and_leaves_no_temp_files(tmp_path, name):
    words = ["a", "red", "circle"]
    maps = caption_attention(len(words))
    path = tmp_path / "nested" / "folder" / name
    returned = save_overlays(textured_image(), words, maps, path)
    assert returned == path
    expected = overlay_grid(textured_image(), words, maps)
    with Image.open(path) as saved:
        assert saved.format == ("PNG" if name.endswith(".png") else "JPEG")
        assert saved.size == expected.size
        if saved.format == "PNG":
            assert saved.convert("RGB").tobytes() == expected.tobytes()
    assert [p.name for p in path.parent.iterdir()] == [name]


def test_save_overlays_replaces_an_old_file(tmp_path):
    path = tmp_path / "grid.png"
    path.write_bytes(b"old")
    save_overlays(textured_image(), ["a"], caption_attention(1), path)
    with Image.open(path) as saved:
        saved.load()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]


def test_save_overlays_failure_leaves_nothing_behind(tmp_path):
    with pytest.raises(ValueError):
        save_overlays(textured_image(), ["a", "b"], caption_attention(3), tmp_path / "out" / "grid.png")
    with pytest.raises(ValueError, match="suffix"):
        save_overlays(textured_image(), ["a"], caption_attention(1), tmp_path / "grid.unknown")
    assert list(tmp_path.iterdir()) == []


def test_save_overlays_draws_the_style_it_is_given(tmp_path):
    words, maps = ["a", "red"], caption_attention(2)
    for style in ("paper", "heatmap"):
        path = save_overlays(textured_image(), words, maps, tmp_path / f"{style}.png", style=style)
        with Image.open(path) as saved:
            assert saved.convert("RGB").tobytes() == overlay_grid(textured_image(), words, maps,
                                                                  style=style).tobytes()
    assert (tmp_path / "paper.png").read_bytes() != (tmp_path / "heatmap.png").read_bytes()
