"""``AGOPSums``: the per-layer sums of a measurement as a torchmetrics ``Metric``, summed across processes."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from agoplight.features.agop import sum_shape
from agoplight.features.layers import View


class AGOPSums(Metric):
    """Accumulates ``agop_sums`` results; ``compute()`` returns them summed over every process.

    Under DDP each rank measures its shard of the probe set and calls ``update``; ``compute`` then takes part in
    one collective per state (``dist_reduce_fx="sum"``), so every rank must call it, even with an empty shard.

    Args:
        views: the measured views; one ``(d, d)`` state each, in their ``sum_shape``.
        dtype: accumulation dtype.
    """

    full_state_update = False

    def __init__(self, views: list[View], dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.names = [view.name for view in views]
        for i, view in enumerate(views):  # state names must be identifiers; layer names have dots
            self.add_state(f"sum_{i}", default=torch.zeros(sum_shape(view), dtype=dtype), dist_reduce_fx="sum")
        self.add_state("n", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sums: dict[str, Tensor], n: int) -> None:
        for i, name in enumerate(self.names):
            state = getattr(self, f"sum_{i}")
            state += sums[name].to(state.device, state.dtype)
        self.n += n

    def compute(self) -> tuple[dict[str, Tensor], Tensor]:
        return {name: getattr(self, f"sum_{i}") for i, name in enumerate(self.names)}, self.n
