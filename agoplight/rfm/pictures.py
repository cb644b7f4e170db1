"""The RFM's picture beside ``agoplight.plots``: the top features by ``diag(M)``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["feature_bars", "top_features"]


def top_features(diagonal: Tensor, names: Sequence[str] | None = None, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` features with the largest ``diag(M)``, as ``(name, value)``; names default to ``x<i>``."""
    values = diagonal.detach().double().cpu()
    order = values.argsort(descending=True)[:k].tolist()
    return [(names[i] if names is not None else f"x{i}", values[i].item()) for i in order]


def feature_bars(features: Sequence[tuple[str, float]], title: str = "") -> Figure:
    """A horizontal bar chart of ``(name, value)`` pairs, the largest on top."""
    fig = Figure(figsize=(4.6, 0.28 * len(features) + 1.0), dpi=90, layout="constrained")
    ax = fig.subplots()
    names = [name for name, _ in features][::-1]
    ax.barh(np.arange(len(names)), [value for _, value in features][::-1], color="tab:blue")
    ax.set_yticks(np.arange(len(names)), names, fontsize=8)
    ax.set_xlabel("diag(M)")
    if title:
        ax.set_title(title, fontsize=10)
    return fig
