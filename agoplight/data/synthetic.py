"""Generated tasks whose true features are known, so that learned features can be checked against them."""

from __future__ import annotations

import torch
from torch import Tensor

from agoplight.data.base import TensorDataModule
from agoplight.errors import ConfigurationError


class LowRankDataModule(TensorDataModule):
    """``x ~ N(0, I_d)``, ``y = x_1 * x_2 + noise * eps``: a target that depends on two coordinates only.

    A network (or RFM) that learns the right features concentrates its AGOP on coordinates 0 and 1.

    Args:
        d: input dimension (>= 2).
        n_train: training samples.
        n_val: validation samples.
        n_test: test samples.
        noise: standard deviation of the Gaussian label noise.
        **kwargs: ``batch_size``, ``num_workers``, ``seed`` (see ``TensorDataModule``).
    """

    def __init__(
        self, d: int = 20, n_train: int = 4000, n_val: int = 1000, n_test: int = 1000, noise: float = 0.0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if d < 2:
            raise ConfigurationError(f"`d` must be at least 2 (the target uses x_1 and x_2), got {d}.")
        if min(n_train, n_val, n_test) < 1:
            raise ConfigurationError(f"Sample counts must be positive, got {n_train}, {n_val}, {n_test}.")
        self.d = d
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.noise = noise

    @property
    def input_dim(self) -> int:
        return self.d

    @property
    def output_dim(self) -> int:
        return 1

    def build(self) -> tuple[tuple[Tensor, Tensor], ...]:
        generator = torch.Generator().manual_seed(self.seed)
        n = self.n_train + self.n_val + self.n_test
        x = torch.randn(n, self.d, generator=generator)  # (n, d)
        y = x[:, 0] * x[:, 1] + self.noise * torch.randn(n, generator=generator)  # (n,)
        bounds = [0, self.n_train, self.n_train + self.n_val, n]
        return tuple((x[a:b], y[a:b, None]) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
