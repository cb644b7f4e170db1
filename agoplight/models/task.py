"""Losses, metrics, steps and optimizers shared by the networks that learn from ``(x, y)`` batches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Accuracy, MeanSquaredError, R2Score

from agoplight.errors import ConfigurationError


class TaskMixin:
    """Supervised classification or regression for a LightningModule whose ``forward`` returns outputs.

    ``cross_entropy`` takes integer class targets and logs accuracy; ``mse`` takes either float targets
    (regression, logs R^2) or integer targets, which it one-hot encodes (the kernel-machine convention; logs
    accuracy). Logged keys: ``train/loss``, ``val/loss``, ``val/acc`` or ``val/r2``, and the same under ``test/``.
    """

    def configure_task(self, loss: str, output_dim: int) -> None:
        if loss not in ("cross_entropy", "mse"):
            raise ConfigurationError(f"`loss` must be 'cross_entropy' or 'mse', got {loss!r}.")
        self.loss_name = loss
        self.output_dim = output_dim
        self.metrics = nn.ModuleDict()
        for stage in ("val", "test"):
            if output_dim > 1:
                self.metrics[f"{stage}_acc"] = Accuracy(task="multiclass", num_classes=output_dim)
            else:
                self.metrics[f"{stage}_r2"] = R2Score()
                self.metrics[f"{stage}_mse"] = MeanSquaredError()

    def loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        if self.loss_name == "cross_entropy":
            return F.cross_entropy(outputs, y)
        if not torch.is_floating_point(y):
            y = F.one_hot(y, self.output_dim).to(outputs.dtype)
        return F.mse_loss(outputs, y.reshape(outputs.shape).to(outputs.dtype))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        outputs = self(x)
        return outputs.argmax(-1) if self.output_dim > 1 else outputs.squeeze(-1)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        outputs = self(x)
        self.log(f"{stage}/loss", self.loss(outputs, y), prog_bar=stage == "val", sync_dist=True)
        if self.output_dim > 1:
            self.metrics[f"{stage}_acc"](outputs.argmax(-1), y)
            self.log(f"{stage}/acc", self.metrics[f"{stage}_acc"], prog_bar=stage == "val")
        else:
            for name in ("r2", "mse"):
                metric = self.metrics[f"{stage}_{name}"]
                metric(outputs.reshape(-1), y.reshape(-1).to(outputs.dtype))
                self.log(f"{stage}/{name}", metric, prog_bar=name == "r2" and stage == "val")

    def build_optimizers(self, parameters: Iterable[nn.Parameter]) -> Any:
        optimizer = self.optimizer(parameters)
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler(optimizer)}
