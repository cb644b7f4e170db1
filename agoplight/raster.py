"""Pictures drawn straight into pixel arrays, in milliseconds, for logging while a model trains.

matplotlib figures with axes and colour bars cost 0.1-0.3 s each to draw, more than a whole measurement of a small
model; the monitor's pictures are therefore composed here from matplotlib's colour maps and Pillow's text, and the
report (``agoplight report``) draws the full matplotlib figures from the saved matrices afterwards.
Every function returns an ``(H, W, 3)`` uint8 array.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from agoplight.plots import TITLES

__all__ = ["eigenvector_tiles", "heatmaps", "spectrum_plot"]

PANEL = 224  # pixels of a heatmap panel's side
TILE = 56  # pixels of an eigenvector tile's side
LINE_COLOURS = [tuple(int(255 * c) for c in colormaps["tab10"](i)[:3]) for i in range(10)]


def heatmaps(matrices: Mapping[str, Tensor], title: str = "") -> np.ndarray:
    """Square matrices side by side, each on its own colour scale (its range written under it); matrices wider
    than a panel are averaged down in blocks."""
    panels, captions = [], []
    for name, matrix in matrices.items():
        m = matrix.detach().double().cpu()
        if m.shape[0] > PANEL:
            m = F.adaptive_avg_pool2d(m[None, None], PANEL)[0, 0]
        low, high = m.min().item(), m.max().item()
        panels.append(_fit(_colour(m.numpy(), "viridis", low, high), PANEL))
        captions.append((TITLES.get(name, name), f"{low:.3g} to {high:.3g}"))
    return _compose([panels], captions, title)


def eigenvector_tiles(matrix: Tensor, shape: Sequence[int], k: int = 8, title: str = "") -> np.ndarray:
    """The top ``k`` eigenvectors as images of ``shape``: ``(C, H, W)`` with 1 or 3 channels as one tile each
    (blue negative, red positive; RGB around mid-grey), or ``(c_in, kh, kw)`` patches with up to 8 channels as rows."""
    values, vectors = torch.linalg.eigh(matrix.detach().double().cpu())
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k].T  # (k,), (k, d)
    shape = tuple(shape)
    channels = shape[0] if len(shape) == 3 else 1
    rows = 1 if channels in (1, 3) else min(channels, 8)

    grid = []
    for row in range(rows):
        tiles = []
        for vector in vectors:
            image = vector.reshape(shape).numpy()
            limit = float(np.abs(image).max()) or 1.0
            if channels == 3:
                rgb = np.clip(0.5 + 0.5 * image.transpose(1, 2, 0) / limit, 0, 1)
                tiles.append(_fit((255 * rgb).astype(np.uint8), TILE))
            else:
                plane = image if len(shape) == 2 else image[0 if channels == 1 else row]
                tiles.append(_fit(_colour(plane, "RdBu_r", -limit, limit), TILE))
        grid.append(tiles)
    captions = [(f"{value:.3g}", "") for value in values.tolist()]
    return _compose(grid, captions, title, row_labels=[f"ch {r}" for r in range(rows)] if rows > 1 else None)


def spectrum_plot(matrices: Mapping[str, Tensor], title: str = "", width: int = 360, height: int = 240) -> np.ndarray:
    """``log10(eigenvalue / largest)`` against the index for each matrix, one colour each."""
    curves = {}
    for name, matrix in matrices.items():
        values = torch.linalg.eigvalsh(matrix.detach().double().cpu()).flip(0).clamp_min(0).numpy()
        if values[0] > 0:
            curves[name] = np.log10(np.maximum(values / values[0], 1e-12))
    floor = min([np.floor(curve.min()) for curve in curves.values()] + [-1.0])
    size = max([len(curve) for curve in curves.values()] + [2])

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=11)
    left, top, right, bottom = 30, 26, width - 10, height - 30
    draw.rectangle((left, top, right, bottom), outline=(80, 80, 80))
    for value, y in ((0, top), (floor, bottom)):
        draw.text((left - 6, y), f"{value:.0f}", fill="black", font=font, anchor="rm")
    draw.text((left, bottom + 4), "1", fill="black", font=font, anchor="mt")
    draw.text((right, bottom + 4), str(size), fill="black", font=font, anchor="rt")
    draw.text(((left + right) / 2, bottom + 16), "index", fill="black", font=font, anchor="mt")
    heading = f"{title}: log10 (eigenvalue / largest)" if title else "log10 (eigenvalue / largest)"
    draw.text(((left + right) / 2, 4), heading, fill="black", font=font, anchor="mt")
    for i, (name, curve) in enumerate(curves.items()):
        xs = left + (right - left) * np.arange(len(curve)) / max(size - 1, 1)
        ys = top + (bottom - top) * curve / floor
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=2)
        draw.text((right - 6, top + 6 + 14 * i), TITLES.get(name, name), fill=colour, font=font, anchor="ra")
    return np.asarray(image)


def _colour(values: np.ndarray, cmap: str, low: float, high: float) -> np.ndarray:
    """Values mapped through a matplotlib colour map to uint8 RGB."""
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return colormaps[cmap](scaled, bytes=True)[..., :3]


def _fit(image: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour scaling of an ``(h, w, 3)`` image so that its longer side is about ``side`` pixels."""
    scale = max(1, side // max(image.shape[:2]))
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _compose(
    grid: list[list[np.ndarray]],
    captions: list[tuple[str, str]],
    title: str,
    row_labels: list[str] | None = None,
    gap: int = 10,
) -> np.ndarray:
    """Tiles on a white canvas: a title, a caption (two lines) over each column, optional labels of the rows."""
    font = ImageFont.load_default(size=11)
    cell_h = max(tile.shape[0] for row in grid for tile in row)
    cell_w = max(tile.shape[1] for row in grid for tile in row)
    margin = 42 if row_labels else gap
    head = 20 + (14 if any(line for _, line in captions) else 0) + 16
    width = margin + len(grid[0]) * (cell_w + gap)
    canvas = Image.new("RGB", (max(width, 200), head + len(grid) * (cell_h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((canvas.width / 2, 3), title, fill="black", font=font, anchor="mt")
    for c, (caption, line) in enumerate(captions):
        x = margin + c * (cell_w + gap) + cell_w / 2
        draw.text((x, 20), caption, fill="black", font=font, anchor="mt")
        if line:
            draw.text((x, 34), line, fill=(90, 90, 90), font=font, anchor="mt")
    for r, row in enumerate(grid):
        y = head + r * (cell_h + gap)
        if row_labels:
            draw.text((4, y + cell_h / 2), row_labels[r], fill="black", font=font, anchor="lm")
        for c, tile in enumerate(row):
            canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (margin + c * (cell_w + gap), y))
    return np.asarray(canvas)
