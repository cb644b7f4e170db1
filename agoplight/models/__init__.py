"""LightningModules whose features agoplight measures."""

from agoplight.models.mlp import MLP

__all__ = ["MLP"]
