"""The one exception type for user errors."""

__all__ = [
    "DiffeoProbeError",
]


class DiffeoProbeError(ValueError):
    """A user error: bad input, a missing file, an unknown name.

    The message always names the offending parameter and what is allowed, so the CLI can print it
    without a traceback (exit code 2).
    """
