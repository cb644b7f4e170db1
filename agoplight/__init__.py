"""agoplight: watch how neural networks learn features, through their average gradient outer product (AGOP)."""

from agoplight.errors import ConfigurationError

__version__ = "0.1.0"
__all__ = ["ConfigurationError", "__version__"]
