"""A multilayer perceptron LightningModule: the simplest network whose features the monitor watches."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from agoplight.errors import ConfigurationError
from agoplight.models.hparams import save_own_hyperparameters
from agoplight.models.task import TaskMixin

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "identity": nn.Identity,
}


class MLP(TaskMixin, LightningModule):
    """``depth`` hidden layers of ``width`` units; layers are named ``net.0``, ``net.2``, ... (``net.0`` first).

    Args:
        input_dim: features per sample (linked from the DataModule by the CLI).
        output_dim: classes, or regression targets (linked from the DataModule by the CLI).
        depth: number of hidden layers.
        width: units per hidden layer.
        activation: one of ``relu``, ``gelu``, ``silu``, ``tanh``, ``identity``.
        bias: whether the linear layers have biases.
        loss: ``cross_entropy`` (classification) or ``mse`` (regression, or one-hot targets for classes).
        init_scale: factor on PyTorch's default initialisation of every weight. Below 1 the network leaves the
            lazy regime: its NFM is then dominated by learned features rather than by the near-identity
            ``W0^T W0`` of a random start, which is where the neural feature ansatz is sharpest.
        optimizer: optimizer factory, e.g. ``torch.optim.Adam``; in yaml a ``class_path`` with ``init_args``.
        lr_scheduler: optional scheduler factory, stepped every epoch.

    Example::

        >>> model = MLP(input_dim=64, output_dim=10, depth=2, width=32)
        >>> model(torch.randn(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(
        self,
        input_dim: int = 64,
        output_dim: int = 10,
        depth: int = 2,
        width: int = 256,
        activation: str = "relu",
        bias: bool = True,
        loss: Literal["cross_entropy", "mse"] = "cross_entropy",
        init_scale: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigurationError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        if depth < 0 or width < 1:
            raise ConfigurationError(f"`depth` must be >= 0 and `width` >= 1, got depth={depth}, width={width}.")
        save_own_hyperparameters(self, ignore=("optimizer", "lr_scheduler"))
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

        sizes = [input_dim] + [width] * depth
        layers: list[nn.Module] = []
        for d_in, d_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(d_in, d_out, bias=bias), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], output_dim, bias=bias))
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for layer in self.net[::2]:
                layer.weight.mul_(init_scale)
        self.configure_task(loss, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))  # (n, output_dim)

    def configure_optimizers(self) -> Any:
        return self.build_optimizers(self.parameters())
