"""Send figures to whatever loggers a Trainer has: W&B and TensorBoard get images, any other logger (CSV, ...)
gets PNG files in the run folder, ``<trainer.log_dir>/images/<key>/step_<step>.png``."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer
from matplotlib.figure import Figure
from torch import Tensor

from agoplight.plots import eigenvector_grid, matrix_panels, save_png, spectrum, to_array


def log_figures(trainer: Trainer, figures: dict[str, Figure], step: int, run_dir: Path) -> None:
    """Log ``{key: figure}`` at ``step`` on rank zero. ``run_dir`` is resolved beforehand on every rank:
    ``trainer.log_dir`` is a collective call and cannot be made here."""
    if not trainer.is_global_zero or not figures:
        return
    png_needed = not trainer.loggers
    for logger in trainer.loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            for key, fig in figures.items():
                logger.log_image(key=key, images=[to_array(fig)], step=step)
        elif kind == "TensorBoardLogger":
            for key, fig in figures.items():
                logger.experiment.add_image(key, to_array(fig), global_step=step, dataformats="HWC")
        else:
            png_needed = True

    if png_needed:
        folder = run_dir / "images"
        for key, fig in figures.items():
            save_png(fig, folder / key / f"step_{step:07d}.png")


def measurement_figures(
    matrices: dict[str, dict[str, Tensor]], shapes: dict[str, tuple[int, ...] | None], step: int
) -> dict[str, Figure]:
    """Per layer: AGOP and NFM heatmaps, their spectra, and the AGOP's top eigenvectors where they are pictures
    (``shapes[layer]``: the input image for a first linear layer, ``(c_in, k, k)`` for a convolution)."""
    figures = {}
    for name, entry in matrices.items():
        figures[f"pictures/{name}/matrices"] = matrix_panels(entry, f"{name}, step {step}")
        figures[f"pictures/{name}/spectrum"] = spectrum(entry, f"{name}, step {step}")
        if shapes.get(name) is not None:
            figures[f"pictures/{name}/eigenvectors"] = eigenvector_grid(
                entry["agop"], shapes[name], title=f"{name}: top AGOP eigenvectors, step {step}"
            )
    return figures
