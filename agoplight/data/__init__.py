"""LightningDataModules shared by the networks and the RFM."""

from agoplight.data.base import TensorDataModule
from agoplight.data.digits import DigitsDataModule
from agoplight.data.synthetic import LowRankDataModule

__all__ = ["DigitsDataModule", "LowRankDataModule", "TensorDataModule"]
