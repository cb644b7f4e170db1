"""The pictures researchers look at: AGOP and NFM side by side, top eigenvectors as images, the spectrum.

Figures use matplotlib's object API (no pyplot state), so they can be drawn in callbacks and scripts alike.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator
from PIL import Image
from torch import Tensor

__all__ = ["eigenvector_grid", "matrix_panels", "save_png", "spectrum", "to_array"]

TITLES = {"agop": "AGOP", "nfm": "NFM  W^T W", "nfm_delta": "NFM of W - W0", "M": "M"}


def matrix_panels(matrices: Mapping[str, Tensor], title: str = "") -> Figure:
    """Heatmaps of several ``(d, d)`` matrices side by side, each with its own colour scale."""
    n = len(matrices)
    fig = Figure(figsize=(3.4 * n, 3.3), dpi=90)
    width = 1 / n
    for i, (name, matrix) in enumerate(matrices.items()):
        # fixed rectangles rather than a layout engine: layouts with colour bars cost most of the drawing time
        ax = fig.add_axes((i * width + 0.02 * width, 0.04, 0.78 * width, 0.78))
        image = ax.imshow(_numpy(matrix), cmap="viridis", interpolation="nearest")
        ax.set_title(TITLES.get(name, name), fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        colorbar = fig.colorbar(image, cax=fig.add_axes((i * width + 0.83 * width, 0.1, 0.04 * width, 0.66)))
        colorbar.locator = MaxNLocator(4)
        colorbar.formatter = FormatStrFormatter("%.2g")  # no separate "1e-6" multiplier above the bar
        colorbar.update_ticks()
        colorbar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=11, y=0.97)
    return fig


def eigenvector_grid(matrix: Tensor, shape: Sequence[int], k: int = 8, title: str = "") -> Figure:
    """The top ``k`` eigenvectors of a symmetric matrix drawn as images of ``shape``.

    ``shape`` is ``(H, W)``, ``(C, H, W)`` for an image input (``C`` of 1 or 3 drawn as one picture) or
    ``(c_in, k, k)`` for a convolution patch (each channel a small filter, up to 8 channels per row).
    """
    values, vectors = torch.linalg.eigh(matrix.double())
    order = values.flip(0)[:k]
    vectors = vectors.flip(1)[:, :k].T  # (k, d)
    shape = tuple(shape)
    channels = shape[0] if len(shape) == 3 else 1
    per_row = 1 if channels in (1, 3) else min(channels, 8)

    fig = Figure(figsize=(1.1 * len(order) + 0.4, 1.1 * per_row + 0.6), dpi=90)
    axes = fig.subplots(per_row, len(order), squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.03, top=1 - 0.55 / (1.1 * per_row + 0.6), wspace=0.1)
    for i, vector in enumerate(vectors):
        image = vector.reshape(shape).numpy()
        for row in range(per_row):
            ax = axes[row][i]
            ax.set_xticks([])
            ax.set_yticks([])
            if channels == 3:
                ax.imshow(_rgb(image), interpolation="nearest")
            else:
                plane = image if len(shape) == 2 else image[row]
                limit = np.abs(plane).max() or 1.0
                ax.imshow(plane, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            if row == 0:
                ax.set_title(f"{order[i].item():.2g}", fontsize=8)
            if i == 0 and per_row > 1:
                ax.set_ylabel(f"in ch {row}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def spectrum(matrices: Mapping[str, Tensor], title: str = "") -> Figure:
    """Eigenvalues of each matrix, divided by the largest, as ``log10`` (a linear axis of logarithms draws 4x
    faster than matplotlib's log axis, whose tick labels are typeset one by one)."""
    fig = Figure(figsize=(4.2, 3.0), dpi=90)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.2, right=0.97, bottom=0.15, top=0.9)
    for name, matrix in matrices.items():
        values = torch.linalg.eigvalsh(matrix.double()).flip(0).clamp_min(0).numpy()
        if values[0] > 0:
            ratios = np.log10(np.maximum(values / values[0], 1e-12))
            ax.plot(np.arange(1, len(values) + 1), ratios, label=TITLES.get(name, name))
    ax.set_xlabel("index")
    ax.set_ylabel("log10 (eigenvalue / largest)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def to_array(fig: Figure) -> np.ndarray:
    """The figure rendered as an ``(H, W, 3)`` uint8 array."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure | np.ndarray, path: str | Path) -> Path:
    """Write a figure, or an array ``to_array`` rendered already (no second drawing), as a PNG file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(fig, np.ndarray):
        Image.fromarray(fig).save(path, compress_level=1)
        return path
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    path.write_bytes(buffer.getvalue())
    return path


def _numpy(matrix: Tensor) -> np.ndarray:
    return matrix.detach().double().cpu().numpy()


def _rgb(image: np.ndarray) -> np.ndarray:
    """A ``(3, H, W)`` eigenvector as an RGB picture, mapped so that 0 is mid-grey."""
    limit = np.abs(image).max() or 1.0
    return np.clip(0.5 + 0.5 * image.transpose(1, 2, 0) / limit, 0, 1)
