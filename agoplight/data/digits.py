"""scikit-learn's bundled 8x8 handwritten digits: real images, no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import Tensor

from agoplight.data.base import TensorDataModule, split_indices


class DigitsDataModule(TensorDataModule):
    """1,797 handwritten digits (8x8 pixels, 10 classes), split with a seed and standardised per pixel on the
    training split (pixels constant there are centred only).

    Args:
        val_fraction: share of the samples held out for validation.
        test_fraction: share held out for testing.
        as_images: yield ``(1, 8, 8)`` images for convnets instead of 64-vectors.
        **kwargs: ``batch_size``, ``num_workers``, ``seed`` (see ``TensorDataModule``).
    """

    image_shape = (1, 8, 8)

    def __init__(
        self, val_fraction: float = 0.2, test_fraction: float = 0.2, as_images: bool = False, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.as_images = as_images
        split_indices(10, val_fraction, test_fraction, 0)  # fail early on bad fractions

    @property
    def input_dim(self) -> int:
        return 64

    @property
    def output_dim(self) -> int:
        return 10

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.image_shape if self.as_images else (64,)

    def build(self) -> tuple[tuple[Tensor, Tensor], ...]:
        digits = load_digits()
        x = torch.tensor(digits.data, dtype=torch.float32)  # (1797, 64), values 0..16
        y = torch.tensor(digits.target, dtype=torch.long)
        train, val, test = split_indices(len(x), self.val_fraction, self.test_fraction, self.seed)

        mean, std = x[train].mean(0), x[train].std(0)
        x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
        x = x.reshape(-1, *self.input_shape)
        return tuple((x[idx], y[idx]) for idx in (train, val, test))
