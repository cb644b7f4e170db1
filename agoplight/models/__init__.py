"""LightningModules whose features agoplight measures."""

from agoplight.models.convnet import ConvNet
from agoplight.models.lm import CausalLM
from agoplight.models.mlp import MLP

__all__ = ["CausalLM", "ConvNet", "MLP"]
