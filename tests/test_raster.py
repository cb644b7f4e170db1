"""The monitor's fast pictures: sizes, and pixels that show the matrix they were drawn from."""

import numpy as np
import torch
from matplotlib import colormaps

from agoplight.raster import PANEL, TILE, eigenvector_tiles, heatmaps, spectrum_plot


def _find(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``(row, col)`` whose RGB equals ``colour``."""
    return np.argwhere((image == colour).all(axis=-1))


def test_heatmap_draws_each_matrix_on_its_own_scale():
    diagonal = torch.diag(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    image = heatmaps({"agop": diagonal, "nfm": 5 * diagonal}, title="layer")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[1] >= 2 * PANEL

    brightest = colormaps["viridis"](1.0, bytes=True)[:3]
    spots = _find(image, np.array(brightest))
    # One bright 56x56 block per panel, at the top-left entry of each 4x4 matrix (both scaled to their own maximum).
    assert len(spots) == 2 * (PANEL // 4) ** 2
    columns = np.unique(spots[:, 1] // PANEL)
    assert len(columns) == 2


def test_heatmap_of_a_constant_matrix_and_a_large_one():
    assert heatmaps({"agop": torch.ones(3, 3)}).shape[2] == 3  # no division by a zero range
    large = heatmaps({"agop": torch.eye(1000)})
    assert large.shape[1] < 2 * PANEL  # averaged down to one panel, not 1000 pixels wide


def test_eigenvector_tiles_show_the_top_eigenvector_where_it_lives():
    image_shape = (1, 8, 8)
    pixel = torch.zeros(64)
    pixel[2 * 8 + 5] = 1.0  # row 2, column 5 of the 8x8 image
    matrix = 10 * torch.outer(pixel, pixel) + 0.1 * torch.eye(64)

    picture = eigenvector_tiles(matrix, image_shape, k=3)
    first_tile_side = (TILE // 8) * 8
    assert picture.shape[1] >= 3 * first_tile_side

    # The top eigenvector is +-e_(2,5): the only saturated pixel block of the first tile lies at row 2, column 5.
    blue, red = (np.array(colormaps["RdBu_r"](v, bytes=True)[:3]) for v in (0.0, 1.0))
    spots = np.concatenate([_find(picture, blue), _find(picture, red)])
    first = spots[spots[:, 1] < picture.shape[1] // 3]
    rows, cols = first[:, 0], first[:, 1]
    scale = TILE // 8
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (scale, scale)


def test_eigenvector_tiles_of_conv_patches_give_one_row_per_channel():
    matrix = torch.eye(4 * 3 * 3) + 0.01
    one_channel = eigenvector_tiles(torch.eye(9) + 0.01, (1, 3, 3), k=4)
    four_channels = eigenvector_tiles(matrix, (4, 3, 3), k=4)
    assert four_channels.shape[0] > 3 * one_channel.shape[0] // 2
    rgb = eigenvector_tiles(torch.eye(3 * 4 * 4) + 0.01, (3, 4, 4), k=2)
    assert rgb.shape[2] == 3


def test_spectrum_plot_size_and_a_zero_matrix():
    values = torch.tensor([1.0, 0.1, 0.01, 0.001])
    image = spectrum_plot({"agop": torch.diag(values), "nfm": torch.zeros(4, 4)}, title="net.0", width=300, height=200)
    assert image.shape == (200, 300, 3)
    # The curve of the AGOP is drawn in the first line colour; the zero matrix has no curve and no error.
    first = np.array(colormaps["tab10"](0)[:3]) * 255
    assert len(_find(image, first.astype(np.uint8))) > 50
