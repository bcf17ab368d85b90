"""``--set KEY=VALUE``: a preset's fields changed from the command line, checked before any work.

A :class:`~diffeoprobe.experiments.presets.Preset` is data: ``diffeoprobe reproduce quick --set
sd_width=128 --set seeds=0,1,2`` makes the ``quick`` figures with a wider 1D CNN and three seeds.
Each value is read as the type the field is annotated with:

- ``int``, ``float``, ``str``; ``bool`` as ``true/false``, ``1/0``, ``yes/no``;
- ``X | None``: ``none`` for ``None``, else an ``X``;
- ``tuple[int, ...]``, ``tuple[float, ...]``, ``tuple[str, ...]``: comma-separated (``seeds=0,1,2``);
  ``tuple[int, int]``: exactly two (``sd_stride1=5,8``);
- ``dict[str, Any]``: a JSON object, or comma-separated ``k=v`` pairs whose values are read as
  JSON scalars when they are one (``zoo_dataset_options=normalize=true,download=false``);
- ``tuple[ZooNet, ...]``: comma-separated model names (a name the preset has keeps its training
  settings, another gets :class:`~diffeoprobe.experiments.presets.ZooNet`'s defaults), or a JSON
  list of objects with ZooNet's fields (``[{"model": "lenet", "lr": 0.01}]``).

Runs are named by a hash of their configurations, so a changed setting trains new runs next to
the old ones instead of reusing them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.experiments.presets import Preset, ZooNet

__all__ = ["FLAG", "apply_overrides", "describe_overrides", "parse_overrides"]

FLAG = "--set"
FIXED = ("name",)  # identifies the preset; its settings change, its name does not
ZERO_ALLOWED = frozenset({"checkpoints"})  # int fields where 0 means something (none between)
MINIMUM = {"probe_size": 2}  # int fields with a larger floor (statistics over probes need 2)
POSITIVE = frozenset(  # float fields that must be > 0 (the others must be >= 0)
    {"sd_lr_per_width", "sd_stride1_lr_per_width", "theory_tolerance", "r_drop", "time_budget_s"}
)
CHOICES: dict[str, tuple[Any, ...]] = {
    "executor": ("serial", "local", "dask"),
    "noisy_task": (1, 2),
    "sd_tasks": (1, 2),
}
MODEL_FIELDS = frozenset({"sd2d_models", "zoo", "noisy_models", "pooling_models"})
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_NONE = ("none", "null")


class _WrongType(ValueError):
    """A value that does not read as the field's type (``str(exc)``: an optional detail)."""


def parse_overrides(items: Sequence[str] | None) -> dict[str, str]:
    """``["sd_width=256", "seeds=0,1,2"]`` -> ``{"sd_width": "256", "seeds": "0,1,2"}``.

    Keys are stripped and ``-`` becomes ``_`` (``sd-width`` is ``sd_width``); values are kept as
    text (:func:`apply_overrides` reads them); a later item overrides an earlier one.

    Raises:
        DiffeoProbeError: an item without ``=`` or with an empty key.

    >>> parse_overrides(["sd-width=256", "seeds = 0,1,2"])
    {'sd_width': '256', 'seeds': '0,1,2'}
    """
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise DiffeoProbeError(
                f"{FLAG} takes KEY=VALUE (a preset field and its value, e.g. {FLAG} "
                f"sd_width=256), got {item!r}"
            )
        out[key] = value.strip()
    return out


def apply_overrides(preset: Preset, overrides: Mapping[str, str]) -> Preset:
    """``preset`` with each field of ``overrides`` replaced by its value read as the field's type.

    Raises:
        DiffeoProbeError: (one line) an unknown field (the preset's fields are listed, with the
            closest name), ``name``, a value that is not of the field's type (the field, the
            type expected and the value are named), or one out of range (a count below 1, a
            negative seed, an unknown model or data set, ...).

    >>> from diffeoprobe.experiments.presets import get_preset
    >>> p = apply_overrides(get_preset("tiny"), {"sd_width": "12", "seeds": "0,1"})
    >>> p.sd_width, p.seeds, p.name
    (12, (0, 1), 'tiny')
    """
    if not overrides:
        return preset
    hints = typing.get_type_hints(Preset)
    fields = [f.name for f in dataclasses.fields(Preset)]
    changes: dict[str, Any] = {}
    for key, text in overrides.items():
        where = f"{FLAG} {key}={text}"
        if key in FIXED:
            raise DiffeoProbeError(
                f"{where}: {key!r} names the preset and cannot be set; pick another preset "
                "(the other fields can be set)"
            )
        if key not in hints:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DiffeoProbeError(
                f"{where}: {preset.name!r} has no field {key!r}{hint}; its fields: "
                f"{', '.join(f for f in fields if f not in FIXED)}"
            )
        try:
            value = _coerce(text, hints[key], getattr(preset, key))
        except _WrongType as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise DiffeoProbeError(
                f"{where}: {key} takes {_type_name(hints[key])}, got {text!r}{detail}"
            ) from None
        _check_range(key, value, where)
        changes[key] = value
    result = dataclasses.replace(preset, **changes)
    _check_option_values(result, overrides)
    return result


def _check_option_values(preset: Preset, overrides: Mapping[str, str]) -> None:
    """Model and data set options set by ``overrides`` that their factories declare ``bool``
    must be true or false (``download=maybe`` would otherwise count as true). Option names are
    checked where the runs are configured.
    """
    from diffeoprobe.data import DATASETS
    from diffeoprobe.models import MODELS

    for key, text in overrides.items():
        where = f"{FLAG} {key}={text}"
        try:
            if key in ("zoo_dataset", "zoo_dataset_options"):
                DATASETS.check_values(
                    preset.zoo_dataset, preset.zoo_dataset_options, where="zoo_dataset_options"
                )
            elif key == "sd2d_data":
                DATASETS.check_values("scale-detection", preset.sd2d_data, where=key)
            elif key in MODEL_FIELDS:
                for net in getattr(preset, key):
                    if isinstance(net, ZooNet) and ":" not in net.model:
                        MODELS.check_values(net.model, net.options, where=f"{net.model}.options")
        except DiffeoProbeError as exc:
            raise DiffeoProbeError(f"{where}: {exc}") from None


def describe_overrides(overrides: Mapping[str, Any] | None) -> str:
    """One line for reports: ``sd_width=256, seeds=0,1,2`` (empty without overrides).

    >>> describe_overrides({"sd_width": "256", "seeds": "0,1,2"})
    'sd_width=256, seeds=0,1,2'
    """
    return ", ".join(f"{key}={value}" for key, value in (overrides or {}).items())


# ---- reading values --------------------------------------------------------------------------------


def _coerce(text: str, hint: Any, current: Any = None) -> Any:
    """``text`` as a value of the type ``hint`` (``current``: the field's value, for zoo nets)."""
    text = text.strip()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if type(None) in args and text.lower() in _NONE:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(text, inner, current)
    if hint in (bool, int, float, str):
        return _coerce_scalar(text, hint)
    if origin is tuple:
        return _coerce_tuple(text, args, current)
    if origin is dict:
        return _mapping(text)
    raise _WrongType(f"no reader for {hint}")  # pragma: no cover (every Preset field has one)


def _coerce_scalar(text: str, hint: type) -> bool | int | float | str:
    """``text`` (stripped) as a ``bool``, ``int``, finite ``float`` or ``str``."""
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise _WrongType()
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise _WrongType() from None
    if hint is float:
        try:
            value = float(text)
        except ValueError:
            raise _WrongType() from None
        if not math.isfinite(value):
            raise _WrongType("not a finite number")
        return value
    return text


def _coerce_tuple(text: str, args: tuple[Any, ...], current: Any) -> tuple[Any, ...]:
    """``text`` as a ``tuple[args]``: ``tuple[X, ...]`` of any length, or one item per arg."""
    if len(args) == 2 and args[1] is Ellipsis:
        if args[0] is ZooNet:
            return _zoo_nets(text, current or ())
        return tuple(_coerce(item, args[0]) for item in _items(text))
    items = _items(text)
    if len(items) != len(args):
        raise _WrongType(f"{len(args)} values needed, {len(items)} given")
    return tuple(_coerce(item, arg) for item, arg in zip(items, args, strict=True))


def _items(text: str) -> list[str]:
    """``"0, 1,2"``, ``"[0, 1, 2]"``, ``"(0,1,2)"`` -> ``["0", "1", "2"]`` (quotes dropped)."""
    text = text.strip()
    if len(text) >= 2 and text[0] + text[-1] in ("[]", "()"):
        text = text[1:-1]
    return [item.strip().strip("\"'") for item in text.split(",") if item.strip()]


def _scalar(text: str) -> Any:
    """A JSON scalar (number, true/false, null, "string") when ``text`` is one, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if not isinstance(value, (dict, list)) else text


def _mapping(text: str) -> dict[str, Any]:
    """A JSON object, or comma-separated ``k=v`` pairs (values read by :func:`_scalar`)."""
    if text.startswith("{"):
        return _json(text)  # a "{" that parses is an object
    out: dict[str, Any] = {}
    for pair in (p for p in text.split(",") if p.strip()):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _WrongType(f"{pair.strip()!r} is not k=v")
        out[key.strip()] = _scalar(value.strip())
    return out


def _zoo_nets(text: str, current: Sequence[ZooNet]) -> tuple[ZooNet, ...]:
    """Model names (the preset's own ZooNet where it has one) or a JSON list of ZooNet objects."""
    known: dict[str, ZooNet] = {}
    for net in current:
        known.setdefault(net.model, net)
    if not text.startswith("["):
        return tuple(known.get(name, ZooNet(name)) for name in _items(text))
    return tuple(_zoo_net(entry, known) for entry in _json(text))  # "[" parses to a list


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _WrongType(f"not valid JSON: {exc}") from None


def _zoo_net(entry: Any, known: Mapping[str, ZooNet]) -> ZooNet:
    if isinstance(entry, str):
        return known.get(entry, ZooNet(entry))
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        raise _WrongType(f"each entry needs a model name, got {json.dumps(entry)}")
    names = [f.name for f in dataclasses.fields(ZooNet)]
    unknown = sorted(set(entry) - set(names))
    if unknown:
        raise _WrongType(
            f"ZooNet has no field {', '.join(unknown)}; its fields: {', '.join(names)}"
        )
    hints = typing.get_type_hints(ZooNet)
    values: dict[str, Any] = {}
    for key, value in entry.items():
        hint = hints[key]
        if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = float(value)
        elif (
            (hint is str and isinstance(value, str))
            or (typing.get_origin(hint) is dict and isinstance(value, dict))
            or (hint == int | None and (value is None or _is_int(value)))
        ):
            values[key] = value
        else:
            raise _WrongType(f"{entry['model']}: {key} takes {_type_name(hint)}, got {value!r}")
    return ZooNet(**values)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(hint: Any) -> str:
    """The type a user types: ``an int``, ``comma-separated ints (e.g. 0,1,2)``, ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return f"{_type_name(inner[0])} or none"
    simple = {bool: "true or false", int: "an int", float: "a number", str: "a string"}
    if hint in simple:
        return simple[hint]
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if args[0] is ZooNet:
            return (
                "comma-separated model names or a JSON list of ZooNet objects (e.g. lenet,fc2 "
                'or [{"model": "lenet", "lr": 0.01}])'
            )
        element = {int: "ints", float: "numbers", str: "names"}[args[0]]
        example = {int: "0,1,2", float: "0,0.1,1", str: "vgg11,lenet"}[args[0]]
        return f"comma-separated {element} (e.g. {example})"
    if origin is tuple:
        return f"{len(args)} comma-separated ints (e.g. 5,8)"
    if origin is dict:
        return "a JSON object or comma-separated k=v pairs (e.g. normalize=true,download=false)"
    return str(hint)  # pragma: no cover


# ---- ranges ----------------------------------------------------------------------------------------


def _check_range(key: str, value: Any, where: str) -> None:
    """Refuse values that make no sense for the field (naming it): a count or size below 1, a
    negative seed, an empty list of seeds, a negative or infinite number, an unknown choice.
    """
    values = value if isinstance(value, tuple) else (value,)
    if value is None:
        return
    if isinstance(value, tuple) and not value and key not in MODEL_FIELDS:
        raise DiffeoProbeError(f"{where}: {key} needs at least one value")
    for item in values:
        if not (isinstance(item, bool) or item is None):
            _check_item(key, item, isinstance(value, tuple), where)
    if key in MODEL_FIELDS:
        from diffeoprobe.models import MODELS

        for item in values:
            name = item.model if isinstance(item, ZooNet) else item
            if ":" not in name:  # timm:NAME and package.module:factory are checked when built
                _known(MODELS.get, name, where)
    if key == "zoo_dataset":
        from diffeoprobe.data import DATASETS

        _known(DATASETS.get, value, where)


def _check_item(key: str, item: Any, in_tuple: bool, where: str) -> None:
    """Refuse one value of the field ``key`` (an item of a tuple when ``in_tuple``)."""
    if key in CHOICES and item not in CHOICES[key]:
        choices = ", ".join(str(c) for c in CHOICES[key])
        raise DiffeoProbeError(f"{where}: {key} must be one of {choices}, got {item!r}")
    if isinstance(item, int):
        if in_tuple and "seeds" in key:
            floor, what = 0, "seeds are >= 0"
        elif key in ZERO_ALLOWED:
            floor, what = 0, f"{key} is >= 0"
        else:
            floor = MINIMUM.get(key, 1)
            what = f"{key} is >= {floor}" + (" (a count or size)" if floor == 1 else "")
        if item < floor:
            raise DiffeoProbeError(f"{where}: {what}, got {item}")
    elif isinstance(item, float):
        if key in POSITIVE and item <= 0:
            raise DiffeoProbeError(f"{where}: {key} must be > 0, got {item:g}")
        if item < 0:
            raise DiffeoProbeError(f"{where}: {key} must be >= 0, got {item:g}")


def _known(lookup: Any, name: str, where: str) -> None:
    try:
        lookup(name)
    except DiffeoProbeError as exc:
        raise DiffeoProbeError(f"{where}: {exc}") from None
