"""What goes to each kind of logger beyond scalars.

Figures: PNG files in the run folder, ``<run_dir>/images/<key>/step_<step>.png``, for every logger (CSV, ...);
W&B and TensorBoard get them as images too. Tables: W&B gets a ``wandb.Table``; the others have the same numbers
as scalars already. Every call goes through the Lightning logger, whose step is ``trainer/global_step``: nothing
is sent to W&B behind its back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from matplotlib.figure import Figure
from torch import Tensor

from agoplight.features import all_finite
from agoplight.plots import save_png, to_array
from agoplight.raster import eigenvector_tiles, heatmaps, spectrum_plot


def log_figures(trainer: Trainer, figures: dict[str, Figure | np.ndarray], step: int, run_dir: Path) -> None:
    """Log ``{key: matplotlib figure or (H, W, 3) uint8 array}`` at ``step`` on rank zero.

    Each picture is written once as ``<run_dir>/images/<key>/step_<step>.png``; W&B is handed that file (encoding
    the array again costs W&B ~10x more), TensorBoard the array. ``run_dir`` is resolved beforehand on every rank:
    ``trainer.log_dir`` is a collective call and cannot be made here.
    """
    if not trainer.is_global_zero or not figures:
        return
    arrays = {key: fig if isinstance(fig, np.ndarray) else to_array(fig) for key, fig in figures.items()}
    paths = {key: save_png(array, run_dir / "images" / key / f"step_{step:07d}.png") for key, array in arrays.items()}
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            for key, path in paths.items():
                logger.log_image(key=key, images=[str(path)], step=step)
        elif kind == "TensorBoardLogger":
            for key, array in arrays.items():
                logger.experiment.add_image(key, array, global_step=step, dataformats="HWC")


def log_table(trainer: Trainer, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
    """A table at ``step`` for the W&B loggers (rank zero)."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.log_table(key=key, columns=columns, data=rows, step=step)


def define_step_axis(trainer: Trainer, prefixes: list[str]) -> None:
    """Plot the W&B keys under each prefix (``"nfa"``, ``"agop"``) against ``trainer/global_step``."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            run = logger.experiment
            run.define_metric("trainer/global_step")
            for prefix in prefixes:
                run.define_metric(f"{prefix}/*", step_metric="trainer/global_step")


def measurement_pictures(
    matrices: dict[str, dict[str, Tensor]], shapes: dict[str, tuple[int, ...] | None], step: int, prefix: str = ""
) -> dict[str, np.ndarray]:
    """Per layer: AGOP and NFM heatmaps, their spectra, and the AGOP's top eigenvectors where they are pictures
    (``shapes[layer]``: the input image for a first linear layer, ``(c_in, k, k)`` for a convolution). Drawn with
    ``agoplight.raster``: milliseconds each, so that pictures do not weigh on training. Layers whose matrices are
    not finite (a diverged model) are left out."""
    pictures = {}
    for name, entry in matrices.items():
        if not all_finite(*entry.values()):
            continue
        pictures[f"{prefix}pictures/{name}/matrices"] = heatmaps(entry, f"{name}, step {step}")
        pictures[f"{prefix}pictures/{name}/spectrum"] = spectrum_plot(entry, f"{name}, step {step}")
        if shapes.get(name) is not None:
            pictures[f"{prefix}pictures/{name}/eigenvectors"] = eigenvector_tiles(
                entry["agop"], shapes[name], title=f"{name}: top AGOP eigenvectors, step {step}"
            )
    return pictures
