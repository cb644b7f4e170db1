"""Convolutional LightningModules: a VGG-style stack and a small ResNet, BatchNorm optional."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from agoplight.errors import ConfigurationError
from agoplight.models.hparams import save_own_hyperparameters
from agoplight.models.mlp import ACTIVATIONS
from agoplight.models.task import TaskMixin


class ConvNet(TaskMixin, LightningModule):
    """An image classifier whose convolutions the AGOP monitor measures patch by patch.

    ``arch="vgg"``: for each entry of ``channels`` a stage of ``convs_per_stage`` 3x3 convolutions (BatchNorm,
    activation) and a 2x2 max-pool while the image is at least 2 pixels wide; then a linear classifier on the
    flattened features. Layers are named ``features.<i>`` and ``classifier``.

    ``arch="resnet"``: a 3x3 stem, then per entry of ``channels`` a stage of ``convs_per_stage`` basic residual
    blocks (two 3x3 convolutions and a skip; the first block of a stage after the first halves the resolution,
    with a 1x1 convolution on the skip), global average pooling and a linear classifier. Layers are named ``stem.0``,
    ``stages.<s>.<b>.conv1``, ``.conv2``, ``.shortcut`` and ``classifier``.

    Args:
        input_shape: ``(C, H, W)`` of one image (linked from the DataModule by the CLI).
        output_dim: number of classes (linked from the DataModule by the CLI).
        arch: ``"vgg"`` or ``"resnet"``.
        channels: output channels of each stage.
        convs_per_stage: convolutions (vgg) or residual blocks (resnet) per stage.
        kernel_size: size of the square kernels (odd; padding keeps the resolution).
        batch_norm: BatchNorm after every convolution.
        activation: one of ``relu``, ``gelu``, ``silu``, ``tanh``, ``identity``.
        loss: ``cross_entropy`` or ``mse`` (on one-hot targets).
        init_scale: factor on PyTorch's default initialisation of every weight (see ``MLP``).
        optimizer: optimizer factory, e.g. ``torch.optim.SGD``; in yaml a ``class_path`` with ``init_args``.
        lr_scheduler: optional scheduler factory, stepped every epoch.

    Example::

        >>> net = ConvNet(input_shape=(1, 8, 8), output_dim=10, channels=[8, 16])
        >>> net(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 8, 8),
        output_dim: int = 10,
        arch: Literal["vgg", "resnet"] = "vgg",
        channels: Sequence[int] = (32, 64),
        convs_per_stage: int = 1,
        kernel_size: int = 3,
        batch_norm: bool = True,
        activation: str = "relu",
        loss: Literal["cross_entropy", "mse"] = "cross_entropy",
        init_scale: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ConfigurationError(
                f"ConvNet needs image inputs `input_shape=(C, H, W)`, got {input_shape}. With DigitsDataModule "
                "set `as_images: true`."
            )
        if arch not in ("vgg", "resnet"):
            raise ConfigurationError(f"`arch` must be 'vgg' or 'resnet', got {arch!r}.")
        if activation not in ACTIVATIONS:
            raise ConfigurationError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        if not channels or convs_per_stage < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigurationError(
                "`channels` must be non-empty, `convs_per_stage` >= 1 and `kernel_size` odd; got "
                f"channels={list(channels)}, convs_per_stage={convs_per_stage}, kernel_size={kernel_size}."
            )
        save_own_hyperparameters(self, ignore=("optimizer", "lr_scheduler"))
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

        def conv(c_in: int, c_out: int, stride: int = 1, k: int = kernel_size) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=not batch_norm)]
            return layers + ([nn.BatchNorm2d(c_out)] if batch_norm else [])

        act = ACTIVATIONS[activation]
        c, size = input_shape[0], input_shape[1:]
        if arch == "vgg":
            layers: list[nn.Module] = []
            for width in channels:
                for _ in range(convs_per_stage):
                    layers += conv(c, width) + [act()]
                    c = width
                if min(size) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size = (size[0] // 2, size[1] // 2)
            self.features = nn.Sequential(*layers, nn.Flatten())
            self.classifier = nn.Linear(c * size[0] * size[1], output_dim)
        else:
            self.stem = nn.Sequential(*conv(c, channels[0]), act())
            c = channels[0]
            stages = []
            for s, width in enumerate(channels):
                blocks = []
                for b in range(convs_per_stage):
                    stride = 2 if s > 0 and b == 0 else 1
                    blocks.append(BasicBlock(c, width, stride, conv, act))
                    c = width
                stages.append(nn.Sequential(*blocks))
            self.stages = nn.Sequential(*stages)
            self.features = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # pooled features
            self.classifier = nn.Linear(c, output_dim)

        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    module.weight.mul_(init_scale)
        self.configure_task(loss, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.hparams.arch == "resnet":
            x = self.stages(self.stem(x))  # (n, c, h, w)
        return self.classifier(self.features(x))  # (n, output_dim)

    def configure_optimizers(self) -> Any:
        return self.build_optimizers(self.parameters())


class BasicBlock(nn.Module):
    """Two convolutions and a skip connection; a 1x1 convolution on the skip where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, conv: Any, act: type[nn.Module]) -> None:
        super().__init__()
        first, second = conv(c_in, c_out, stride), conv(c_out, c_out)
        self.conv1, self.bn1 = first[0], (first[1] if len(first) > 1 else nn.Identity())
        self.conv2, self.bn2 = second[0], (second[1] if len(second) > 1 else nn.Identity())
        self.act = act()
        self.shortcut: nn.Module | None = None
        self.shortcut_bn: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            projection = conv(c_in, c_out, stride, k=1)
            self.shortcut = projection[0]
            self.shortcut_bn = projection[1] if len(projection) > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut_bn(self.shortcut(x))
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(h)) + skip)
