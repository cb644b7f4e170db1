"""LightningDataModules shared by the networks and the RFM."""

from agoplight.data.base import TensorDataModule
from agoplight.data.digits import DigitsDataModule
from agoplight.data.modular import ModularArithmeticDataModule
from agoplight.data.synthetic import LowRankDataModule
from agoplight.data.tabular import TabularDataModule
from agoplight.data.text import TextDataModule
from agoplight.data.vision import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SVHNDataModule,
    TorchvisionDataModule,
)

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "LowRankDataModule",
    "MNISTDataModule",
    "ModularArithmeticDataModule",
    "SVHNDataModule",
    "TabularDataModule",
    "TensorDataModule",
    "TextDataModule",
    "TorchvisionDataModule",
]
