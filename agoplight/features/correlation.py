"""How well two matrices agree: Pearson correlation and cosine similarity of their entries.

The neural feature ansatz (NFA) is scored by these between a layer's NFM and a power of its AGOP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from agoplight.features.linalg import Spectrum

__all__ = ["cosine", "nfa_correlations", "pearson"]


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the entries of two equally shaped matrices (NaN when either is constant)."""
    _check_shapes(a, b)
    # torch's own corrcoef: torchmetrics' functional form costs ~10x more per call for the same number
    return torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1).to(a.dtype)]))[0, 1]


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of two flattened matrices: ``<A, B>_F / (||A||_F ||B||_F)``."""
    _check_shapes(a, b)
    # torch's rather than torchmetrics' cosine: the latter computes in float32 whatever the input dtype
    return F.cosine_similarity(a.reshape(-1), b.reshape(-1).to(a.dtype), dim=0)


def nfa_correlations(
    nfm: Tensor, agop: Tensor, alphas: dict[str, float] | None = None, spectrum: Spectrum | None = None
) -> dict[str, Tensor]:
    """Pearson and cosine agreement of an NFM with powers of an AGOP.

    Args:
        nfm: the neural feature matrix, ``(d, d)``.
        agop: the AGOP of the same layer's input, ``(d, d)``.
        alphas: ``{suffix: alpha}``; default ``{"_sqrt": 0.5, "": 1.0}``.
        spectrum: the AGOP's eigendecomposition, when the caller has it already.

    Returns:
        ``{"pearson<suffix>": ..., "cosine<suffix>": ...}`` for each alpha.
    """
    scores = {}
    for suffix, alpha in (alphas or {"_sqrt": 0.5, "": 1.0}).items():
        target = agop if alpha == 1 else (spectrum or Spectrum.of(agop)).power(alpha)
        scores[f"pearson{suffix}"] = pearson(nfm, target)
        scores[f"cosine{suffix}"] = cosine(nfm, target)
    return scores


def _check_shapes(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"Expected matrices of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}.")
