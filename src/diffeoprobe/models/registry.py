"""Models by name: ``build("simplecnn", in_channels=1, num_classes=10, depth=6)``.

A factory takes ``(in_channels, num_classes, **options)``; :func:`build` checks the options against
its signature, so a misspelt option is a :class:`~diffeoprobe.errors.DiffeoProbeError` listing the
accepted ones. Models take no seed: call ``torch.manual_seed`` before :func:`build`.

The zoo of the papers (docs/science.md section 8), CIFAR-sized and working on 28 x 28 inputs too:
``vgg11 vgg11bn vgg13bn vgg16bn vgg19bn resnet18 resnet34 resnet50 alexnet lenet efficientnetb0``;
the fully connected ``fc2 fc4 fc6``; the 1D scale-detection net ``scalecnn1d``; the configurable
``simplecnn`` / ``simplecnn1d``. Models whose first dense layer depends on the image side (``lenet``,
``fc*``) take ``input_size`` (the side in pixels, default 32); the others adapt to any side.
``timm:NAME`` builds ``timm.create_model(NAME)`` when the optional package timm is installed;
``hf:NAME_OR_DIR`` loads a pretrained Hugging Face image model (:mod:`.pretrained`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from functools import partial

from torch import nn

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.registry import Registry
from diffeoprobe.validate import check_int

from .alexnet import AlexNet
from .efficientnet import EfficientNet
from .fully_connected import FullyConnected
from .lenet import LeNet
from .pretrained import HF_PREFIX, build_hf
from .resnet import ResNet
from .scale_cnn import ScaleCNN1d
from .simple_cnn import SimpleCNN
from .vgg import VGG

__all__ = ["MODELS", "available", "build"]

MODELS: Registry[nn.Module] = Registry("model", passed=("in_channels", "num_classes"))
TIMM_PREFIX = "timm:"


def build(
    name: str,
    in_channels: int,
    num_classes: int,
    *,
    input_size: int | None = None,
    **options: object,
) -> nn.Module:
    """Build the model registered as ``name`` (case-insensitive).

    Args:
        name: a name from :func:`available`, or ``"timm:NAME"`` for
            ``timm.create_model(NAME, pretrained=False, num_classes=..., in_chans=...)`` (options go
            to timm; needs ``pip install timm``).
        in_channels: input channels ``C`` of ``(B, C, L)`` or ``(B, C, H, W)`` inputs.
        num_classes: number of outputs (logits).
        input_size: the side length of the inputs; passed on to factories that take an
            ``input_size`` option (LeNet, fully connected nets) unless ``options`` sets it.
        **options: the model's own options (for ``"simplecnn"``: see :class:`SimpleCNN`).

    A ``name`` of the form ``"package.module:factory"`` imports ``factory`` and calls it with
    ``in_channels``, ``num_classes`` and ``options`` (a user's own model).

    >>> import torch
    >>> _ = torch.manual_seed(0)  # reproducible initialisation
    >>> net = build("simplecnn1d", 1, 2, depth=3, width=8)
    >>> net(torch.zeros(4, 1, 128)).shape
    torch.Size([4, 2])
    """
    if input_size is not None:
        check_int(input_size, "input_size", minimum=1)
    if str(name).lower().startswith(HF_PREFIX):
        return build_hf(str(name)[len(HF_PREFIX) :], in_channels, options)
    if str(name).lower().startswith(TIMM_PREFIX):
        return _build_timm(str(name)[len(TIMM_PREFIX) :], in_channels, num_classes, options)
    if ":" in str(name):
        return _build_imported(str(name), in_channels, num_classes, options)
    factory = MODELS.get(name)
    parameters = inspect.signature(factory).parameters
    if input_size is not None and "input_size" in parameters and "input_size" not in options:
        options = {**options, "input_size": input_size}
    MODELS.check_options(name, options)
    return factory(in_channels=in_channels, num_classes=num_classes, **options)


def _build_imported(
    name: str, in_channels: int, num_classes: int, options: dict[str, object]
) -> nn.Module:
    module_name, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DiffeoProbeError(
            f"model {name!r}: cannot import {attr!r} from {module_name!r} ({exc})"
        ) from None
    try:
        model = factory(in_channels=in_channels, num_classes=num_classes, **options)
    except TypeError as exc:  # a factory that does not take (in_channels, num_classes, **options)
        raise DiffeoProbeError(
            f"model {name!r}: {attr}(in_channels={in_channels}, num_classes={num_classes}"
            f"{''.join(f', {k}={v!r}' for k, v in options.items())}) failed ({exc}); a factory "
            "must take in_channels, num_classes and the model options"
        ) from None
    if not isinstance(model, nn.Module):
        raise DiffeoProbeError(
            f"model {name!r}: the factory returned {type(model).__name__}, not an nn.Module"
        )
    return model


def _build_timm(
    name: str, in_channels: int, num_classes: int, options: dict[str, object]
) -> nn.Module:
    """``timm.create_model`` with random weights; timm's own errors become DiffeoProbeErrors."""
    try:
        import timm
    except ImportError:
        raise DiffeoProbeError(
            f"model 'timm:{name}' needs the optional package timm: pip install timm"
        ) from None
    try:
        return timm.create_model(
            name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options
        )
    except (RuntimeError, TypeError) as exc:  # unknown model name, unknown option
        raise DiffeoProbeError(f"model 'timm:{name}': {exc}") from exc


def available() -> list[str]:
    """The registered model names, sorted."""
    return MODELS.available()


def _variant(cls: Callable[..., nn.Module], **fixed: object) -> Callable[..., nn.Module]:
    """``cls`` with ``fixed`` options, whose signature shows only the options left to choose."""
    factory = partial(cls, **fixed)
    signature = inspect.signature(cls)
    factory.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for n, p in signature.parameters.items() if n not in fixed]
    )
    return factory


MODELS.register("simplecnn")(partial(SimpleCNN, dim=2))
MODELS.register("simplecnn1d")(partial(SimpleCNN, dim=1))
MODELS.register("scalecnn1d")(ScaleCNN1d)
MODELS.register("vgg11")(_variant(VGG, config="vgg11", batch_norm=False))
for _depth in (11, 13, 16, 19):
    MODELS.register(f"vgg{_depth}bn")(_variant(VGG, config=f"vgg{_depth}", batch_norm=True))
MODELS.register("resnet18")(_variant(ResNet, block="basic", layers=(2, 2, 2, 2)))
MODELS.register("resnet34")(_variant(ResNet, block="basic", layers=(3, 4, 6, 3)))
MODELS.register("resnet50")(_variant(ResNet, block="bottleneck", layers=(3, 4, 6, 3)))
MODELS.register("alexnet")(AlexNet)
MODELS.register("lenet")(LeNet)
MODELS.register("efficientnetb0")(EfficientNet)
for _depth in (2, 4, 6):
    MODELS.register(f"fc{_depth}")(_variant(FullyConnected, depth=_depth))
