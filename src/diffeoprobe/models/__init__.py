"""Models by name, and the configurable :class:`SimpleCNN` (1D and 2D)."""

from .registry import MODELS, available, build
from .simple_cnn import SimpleCNN

__all__ = ["MODELS", "SimpleCNN", "available", "build"]
