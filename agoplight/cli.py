"""The command line: ``python train.py fit --config configs/mlp_digits.yaml`` (LightningCLI), and ``agoplight``.

Without a ``trainer.logger`` in the config, a run writes everything under one run folder,
``<trainer.default_root_dir>/<timestamp>/``: ``metrics.csv`` (CSVLogger), an offline W&B run under ``wandb/``
(no account, no network; ``wandb sync`` uploads it later), ``checkpoints/``, ``config.yaml`` and the matrices and
pictures of the AGOP monitor. ``WANDB_MODE=online`` makes the W&B run online instead.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger

from agoplight.errors import ConfigurationError
from agoplight.features import find_views

# Dimensions a DataModule knows and a model needs; a link applies only where both sides have the attribute.
LINKS = ("input_dim", "output_dim", "input_shape", "vocab_size")


class AgoplightCLI(LightningCLI):
    """LightningCLI with data-to-model links and agoplight's default run folder and loggers."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        for name in LINKS:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    run_dir: Path | None = None  # the run folder this CLI made, if it made one

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") is None:
            self.run_dir = _new_run_dir(Path(config.get("default_root_dir") or "runs"))
            kwargs["logger"] = _default_loggers(self.run_dir)
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        self._check_monitors()

    before_validate = before_test = before_fit

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(run_report(self.trainer))

    def _check_monitors(self) -> None:
        """Resolve every AGOPMonitor's layers before the run starts: a wrong name then fails at once, and the run
        folder made for it, still empty, is removed rather than left behind."""
        from agoplight.callbacks import AGOPMonitor

        try:
            for callback in self.trainer.callbacks:
                if isinstance(callback, AGOPMonitor):
                    find_views(self.model, callback.layers, callback.split)
        except ConfigurationError:
            if self.run_dir is not None and self.trainer.is_global_zero:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise


def _new_run_dir(root: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = root / stamp
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = root / f"{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def _default_loggers(run_dir: Path) -> list[Logger]:
    """CSV first (so ``trainer.log_dir`` and checkpoints are the run folder itself), then W&B, offline by default."""
    from lightning.pytorch.loggers import WandbLogger

    offline = os.environ.get("WANDB_MODE", "offline") != "online"
    csv = CSVLogger(save_dir=run_dir, name="", version="")
    _ = csv.experiment  # claim the folder while it is empty, before W&B writes into it
    return [csv, WandbLogger(save_dir=run_dir, project="agoplight", name=run_dir.parent.name, offline=offline)]


def run_report(trainer: Trainer) -> str:
    """Where a finished run's logs are, and how to upload an offline W&B run."""
    lines = [f"\nRun folder: {trainer.log_dir}"]
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            lines.append(f"  metrics (CSV):  {Path(logger.log_dir) / 'metrics.csv'}")
        elif type(logger).__name__ == "WandbLogger":
            run = logger.experiment
            if getattr(run, "offline", False) or getattr(run.settings, "mode", "") == "offline":
                lines.append(f"  W&B (offline):  {run.dir.rsplit('/files', 1)[0]}")
                lines.append(f"  upload with:    {_wandb_command()} sync {run.dir.rsplit('/files', 1)[0]}")
            else:
                lines.append(f"  W&B:            {run.url}")
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path:
        lines.append(f"  checkpoint:     {trainer.checkpoint_callback.best_model_path}")
    return "\n".join(lines)


def _wandb_command() -> str:
    """``wandb`` when it is on the PATH as this Python's; otherwise the path of the one beside this Python (a
    virtualenv that is not activated, e.g. ``.venv/bin/wandb``)."""
    beside = Path(sys.executable).with_name("wandb")
    if not beside.exists() or shutil.which("wandb") == str(beside):
        return "wandb"
    relative = os.path.relpath(beside)
    return str(beside) if relative.startswith("..") else relative


def train(args: list[str] | None = None) -> AgoplightCLI | None:
    """Run the training CLI. A bad setting prints one ``error:`` line (the cause, not a traceback) and exits with
    status 2; an unknown option or a malformed config prints jsonargparse's message the same way."""
    try:
        return AgoplightCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False},
            args=args,
        )
    except Exception as error:
        cause = _configuration_error(error)
        if cause is None and type(error).__name__ != "ArgumentError":  # a real failure: keep its traceback
            raise
        print(f"error: {cause or error}", file=sys.stderr)
        sys.exit(2)


def _configuration_error(error: BaseException | None) -> ConfigurationError | None:
    """The ConfigurationError behind ``error``, also when jsonargparse or Lightning wrapped it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigurationError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def main() -> None:
    """``agoplight``: ``agoplight fit --config ...`` trains, like ``python train.py``; ``agoplight report RUN_DIR``
    draws a run folder's HTML report (``agoplight.report``)."""
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print("usage: agoplight report RUN_DIR [--help]   draw a run folder's HTML report")
        print("   or: agoplight {fit,validate,test,predict} --config CONFIG ...   train and evaluate (below)\n")
    if sys.argv[1:2] == ["report"]:
        from agoplight.report import main as report

        sys.exit(report(sys.argv[2:]))
    train()
