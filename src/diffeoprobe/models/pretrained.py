"""Pretrained image models from Hugging Face ``transformers`` (``hf:NAME_OR_DIR``), an optional extra.

``hf:DIR`` loads a model saved with ``save_pretrained`` (no network); ``hf:org/name`` loads it from
the hub when the user has a network (``DIFFEOPROBE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` forbid it).
The model is returned as it is: its forward takes the pixel values as first argument and returns
a ``ModelOutput``, whose ``logits`` :func:`diffeoprobe.measure` takes as the output; its layers keep
their module paths (``vit.layers.3.mlp.fc2``). :func:`preprocessing` reads the image size and the
mean and std the model was trained with from its ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from diffeoprobe.errors import DiffeoProbeError, first_line

__all__ = ["HF_PREFIX", "Preprocessing", "build_hf", "preprocessing"]

HF_PREFIX = "hf:"
Preprocessing = dict[str, Any]  # size (pixels), mean and std (per channel, pixels in [0, 1])


def _offline() -> bool:
    return any(
        os.environ.get(v, "") not in ("", "0") for v in ("DIFFEOPROBE_OFFLINE", "HF_HUB_OFFLINE")
    )


def _source(name: str) -> tuple[str, bool]:
    """(what ``from_pretrained`` reads, whether it must stay local)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists() or name.startswith((".", "/", "~")):
        raise DiffeoProbeError(f"model 'hf:{name}': {name!r} is not a model directory")
    return name, _offline()


def build_hf(name: str, in_channels: int, options: dict[str, Any]) -> nn.Module:
    """``AutoModelForImageClassification.from_pretrained(name, **options)``, in eval mode.

    Raises:
        DiffeoProbeError: transformers absent, a name that does not resolve (offline: not a local
            directory), a directory that holds no image model, or a model whose input channels
            differ from the data's ``in_channels``.
    """
    try:
        import transformers
    except ImportError:
        raise DiffeoProbeError(
            f"model 'hf:{name}' needs the optional package transformers: "
            "pip install 'diffeoprobe[hf]'"
        ) from None
    source, local = _source(name)
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            source, local_files_only=local, **options
        )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = first_line(exc)
        where = "" if not local or Path(source).is_dir() else " (offline: only local directories)"
        raise DiffeoProbeError(f"model 'hf:{name}' could not be loaded{where}: {first}") from None
    channels = getattr(model.config, "num_channels", in_channels)
    if channels != in_channels:
        raise DiffeoProbeError(
            f"model 'hf:{name}' takes {channels}-channel images, the data have {in_channels} "
            "(for a folder: -d mode=rgb or mode=grey)"
        )
    return model.eval()


def preprocessing(name: str) -> Preprocessing | None:
    """The input size and normalisation a ``hf:`` model declares (``None`` when it declares none).

    Read from ``preprocessor_config.json`` (``size``: ``height``/``shortest_edge``, ``crop_size``
    when the processor centre-crops, ``image_mean``, ``image_std``).
    """
    source, local = _source(name.removeprefix(HF_PREFIX))
    path = Path(source) / "preprocessor_config.json"
    if not path.is_file():
        if local:
            return None
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "preprocessor_config.json"))
        except Exception:  # no network, no such file: the model declares nothing we can read
            return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    size = config.get("crop_size") if config.get("do_center_crop") else config.get("size")
    side = _side(size)
    mean, std = config.get("image_mean"), config.get("image_std")
    if side is None and mean is None:
        return None
    out: Preprocessing = {}
    if side is not None:
        out["size"] = side
    if config.get("do_normalize", True) and mean is not None and std is not None:
        out["mean"], out["std"] = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    return out


def _side(size: object) -> int | None:
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        for key in ("height", "shortest_edge"):
            if isinstance(size.get(key), int):
                return int(size[key])
    return None
