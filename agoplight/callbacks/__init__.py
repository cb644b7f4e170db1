"""Lightning callbacks that watch feature learning. Importing this package loads neither transformers,
torchvision nor wandb."""

from agoplight.callbacks.agop_monitor import AGOPMonitor

__all__ = ["AGOPMonitor"]
