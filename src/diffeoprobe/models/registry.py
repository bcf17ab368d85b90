"""Models by name: ``build("simplecnn", in_channels=1, num_classes=10, depth=6)``.

A factory takes ``(in_channels, num_classes, **options)``; :func:`build` checks the options against
its signature, so a misspelt option is a :class:`~diffeoprobe.errors.DiffeoProbeError` listing the
accepted ones. Models take no seed: call ``torch.manual_seed`` before :func:`build`.
"""

from __future__ import annotations

import inspect
from functools import partial

from torch import nn

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.registry import Registry

from .simple_cnn import SimpleCNN

__all__ = ["MODELS", "available", "build"]

MODELS: Registry[nn.Module] = Registry("model")


def build(name: str, in_channels: int, num_classes: int, **options: object) -> nn.Module:
    """Build the model registered as ``name`` (case-insensitive).

    Args:
        name: a name from :func:`available`.
        in_channels: input channels ``C`` of ``(B, C, L)`` or ``(B, C, H, W)`` inputs.
        num_classes: number of outputs (logits).
        **options: the model's own options (for ``"simplecnn"``: see :class:`SimpleCNN`).

    >>> import torch
    >>> _ = torch.manual_seed(0)  # reproducible initialisation
    >>> net = build("simplecnn1d", 1, 2, depth=3, width=8)
    >>> net(torch.zeros(4, 1, 128)).shape
    torch.Size([4, 2])
    """
    factory = MODELS.get(name)
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        accepted = [p for p in parameters if p not in ("in_channels", "num_classes")]
        raise DiffeoProbeError(
            f"model {name!r} does not accept {', '.join(unknown)}; it takes: {', '.join(accepted)}"
        )
    return factory(in_channels=in_channels, num_classes=num_classes, **options)


def available() -> list[str]:
    """The registered model names, sorted."""
    return MODELS.available()


MODELS.register("simplecnn")(partial(SimpleCNN, dim=2))
MODELS.register("simplecnn1d")(partial(SimpleCNN, dim=1))
