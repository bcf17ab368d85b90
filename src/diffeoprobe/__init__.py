"""diffeoprobe: how sensitive is each layer of a network to smooth deformations versus noise."""

__version__ = "0.1.0"

from diffeoprobe.errors import DiffeoProbeError

__all__ = ["DiffeoProbeError", "__version__"]
