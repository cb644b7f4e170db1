"""Neural feature matrices: ``W^T W`` of a layer, and ``(W - W0)^T (W - W0)`` against its initial weights."""

from __future__ import annotations

import torch
from torch import Tensor

from agoplight.errors import ConfigurationError
from agoplight.features.layers import View

__all__ = ["nfm", "nfm_of"]


def nfm(weight: Tensor, initial: Tensor | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """The neural feature matrix ``W^T W`` (``(in, in)``) of a weight ``W`` shaped ``(out, in)``.

    Args:
        weight: ``W``, ``(out, in)``.
        initial: ``W0``; when given, the NFM of the change ``(W - W0)^T (W - W0)``, as the reference code does.
        dtype: the dtype of the result.

    Raises:
        ConfigurationError: ``weight`` is not a matrix (a bias, or a conv kernel not flattened to ``(c_out, -1)``).
    """
    if weight.dim() != 2:
        raise ConfigurationError(
            f"The NFM needs a weight matrix shaped (out, in), got a tensor of shape {tuple(weight.shape)}. Pass the "
            "layer's `.weight` (a bias has no NFM); flatten a conv kernel with `.flatten(1)`."
        )
    w = weight.detach().to(dtype)
    if initial is not None:
        w = w - initial.detach().to(device=w.device, dtype=dtype)
    return w.T @ w


def nfm_of(view: View, initial: Tensor | None = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """The NFM of one view of a layer; ``initial`` is that view's ``W0`` (``(out_v, in)``)."""
    return nfm(view.weight(), initial, dtype)
