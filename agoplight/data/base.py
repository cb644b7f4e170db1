"""A DataModule over in-memory tensors, with a seeded train/val/test split: the shape all bundled data shares."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from agoplight.errors import ConfigurationError


class TensorDataModule(LightningDataModule):
    """Subclasses implement ``build()`` returning ``(train, val, test)`` as ``(x, y)`` tensor pairs.

    Every split is built in ``setup`` whatever the stage, so a probe set can be drawn from the training data
    during ``validate`` and ``test`` too.

    Args:
        batch_size: training and evaluation batch size.
        num_workers: data loader workers (the tensors are in memory, so 0 is usually fastest).
        seed: seed of the split (and of generated data).
        shuffle: shuffle the training set every epoch.
    """

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigurationError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle = shuffle
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def build(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            train, val, test = self.build()
            self.train_set, self.val_set, self.test_set = (TensorDataset(*split) for split in (train, val, test))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        self.setup()
        dataset = getattr(self, f"{split}_set")
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded random split of ``range(n)`` into train, validation and test indices."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigurationError(
            f"`val_fraction` and `test_fraction` must be in [0, 1) with a sum below 1, "
            f"got {val_fraction} and {test_fraction}."
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]
