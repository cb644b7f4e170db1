"""Small shared pieces of the tests."""

from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer


def quiet_trainer(tmp_path: Path, **overrides: Any) -> Trainer:
    """A CPU Trainer without logger, checkpoints, progress bar or model summary; ``overrides`` win."""
    options: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return Trainer(**{**options, **overrides})
