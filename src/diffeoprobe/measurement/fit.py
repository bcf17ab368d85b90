"""One probe batch through a model before any work: a model that does not fit the data fails in
one line (the model, the input shape, the first line of what went wrong), not in a traceback from
deep inside torch.fx or a training step.
"""

from __future__ import annotations

import torch
from torch import nn

from diffeoprobe.errors import DiffeoProbeError

__all__ = ["PROBE_IMAGES", "check_model_fits"]

PROBE_IMAGES = 2
"""Images in the probe batch (two, so that layers that need a batch of more than one work)."""


def check_model_fits(model: nn.Module, x: torch.Tensor, *, name: str | None = None) -> None:
    """Run the first :data:`PROBE_IMAGES` images of ``x`` through ``model`` (eval mode, no grad).

    The model's mode, its parameters and buffers and the global CPU random state are left as
    they were, so a run that goes on gives the same results as without the probe.

    Raises:
        DiffeoProbeError: the forward pass raised (a shape or dtype mismatch, a model made for
            other data); the message names the model, the input shape and the first line of the
            exception. Out-of-memory errors and the model's own DiffeoProbeErrors pass through.
    """
    label = name or type(model).__name__
    batch = x[:PROBE_IMAGES]
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model(batch)
    except (DiffeoProbeError, torch.OutOfMemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # whatever the model raises: shape, dtype, device mismatches
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise DiffeoProbeError(
            f"model {label!r} does not fit the data: a batch of shape {tuple(batch.shape)} "
            f"(images, channels, {_sides(batch)}) fails in its forward pass ({what})"
        ) from None
    finally:
        for module, training in modes:
            module.training = training


def _sides(x: torch.Tensor) -> str:
    return "length" if x.dim() == 3 else "height, width" if x.dim() == 4 else "..."
