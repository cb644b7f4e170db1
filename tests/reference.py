"""Brute-force references for the tests: per-sample Jacobians of a model's outputs w.r.t. a layer's input patches.

The layer's output is recomputed from a patch matrix ``U`` (``(positions, in)``: the layer input itself for linear
layers, ``unfold`` patches for convolutions), and ``torch.func.jacrev`` differentiates the outputs w.r.t. ``U``
directly. This is the definition of the AGOP, independent of the ``W^T G W`` mechanism under test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import jacrev


def to_patches(layer: nn.Module, h: Tensor) -> Tensor:
    """The layer's input for one sample as rows ``(positions, in)``."""
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if isinstance(layer, nn.Conv1d):
            h = h.unsqueeze(-2)  # (1, c, 1, L): treat as a 2-d image of height 1
        kernel, dilation, padding, stride = _conv2d_params(layer)
        u = F.unfold(h, kernel, dilation=dilation, padding=padding, stride=stride)  # (1, c*k*k, L)
        return u[0].T
    return h.reshape(-1, h.shape[-1])


def from_patches(layer: nn.Module, u: Tensor, out_shape: torch.Size) -> Tensor:
    """The layer's output recomputed from patch rows ``u``: ``u W^T + b`` laid out like the real output."""
    weight = layer.weight
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        z = u @ weight.reshape(weight.shape[0], -1).T  # (positions, c_out)
        if layer.bias is not None:
            z = z + layer.bias
        return z.T.reshape(out_shape)
    if type(layer).__name__ == "Conv1D":  # transformers' GPT-2 layer: weight stored (in, out)
        weight = weight.T
    z = u @ weight.T
    if layer.bias is not None:
        z = z + layer.bias
    return z.reshape(out_shape)


def _conv2d_params(layer: nn.Module) -> tuple[tuple[int, int], ...]:
    """kernel, dilation, padding, stride as pairs; a Conv1d is a Conv2d of height 1 (no vertical padding)."""
    if isinstance(layer.padding, str):
        raise ValueError("string padding is not supported by the reference")
    if isinstance(layer, nn.Conv1d):
        return (1, layer.kernel_size[0]), (1, layer.dilation[0]), (0, layer.padding[0]), (1, layer.stride[0])
    return layer.kernel_size, layer.dilation, layer.padding, layer.stride


def brute_force_agop(
    model: nn.Module,
    inputs: Tensor,
    layer: nn.Module,
    forward: Callable[[nn.Module, Tensor], Tensor] = lambda model, x: model(x),
    out: slice | None = None,
) -> Tensor:
    """``mean over samples, sum over positions of J_p^T J_p``, ``J_p`` the Jacobian of all outputs of one sample
    w.r.t. the layer's input patch at position ``p``; one ``jacrev`` per sample.

    With ``out``, only the output channels ``out`` are recomputed from the input (the others keep their recorded
    values): the AGOP of that view of the layer, e.g. the query third of a fused attention projection."""
    terms = [_sample_agop(model, inputs[i : i + 1], layer, forward, out) for i in range(inputs.shape[0])]
    return torch.stack(terms).mean(0)


def _sample_agop(model: nn.Module, x: Tensor, layer: nn.Module, forward: Callable, out: slice | None) -> Tensor:
    seen: dict[str, Any] = {}

    def record(module: nn.Module, args: tuple[Tensor, ...], z: Tensor) -> None:
        seen["h"], seen["z"] = args[0].detach(), z.detach()

    handle = layer.register_forward_hook(record)
    with torch.no_grad():
        forward(model, x)
    handle.remove()
    recorded = seen["z"]

    def outputs(u: Tensor) -> Tensor:
        def replace(module: nn.Module, args: Any, z: Tensor) -> Tensor:
            fresh = from_patches(layer, u, recorded.shape)
            if out is None:
                return fresh
            return torch.cat([recorded[..., : out.start], fresh[..., out], recorded[..., out.stop :]], dim=-1)

        handle = layer.register_forward_hook(replace)
        try:
            return forward(model, x).reshape(-1)
        finally:
            handle.remove()

    jac = jacrev(outputs)(to_patches(layer, seen["h"]))  # (C, positions, in)
    return torch.einsum("cpi,cpj->ij", jac, jac)
