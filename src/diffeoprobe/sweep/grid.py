"""Grid files: a YAML file of settings and axes becomes runs with deterministic ids.

A grid file describes a set of runs once (see :mod:`diffeoprobe.sweep` for the format). Every value
is checked where it stands in the file, with the rules of :mod:`diffeoprobe.config`, before any run
starts; :func:`run_id` names a run by the hash of its two configs.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffeoprobe.config import (
    MeasureConfig,
    TrainConfig,
    check_options,
    coerce,
    field_types,
    to_dict,
    validate,
)
from diffeoprobe.errors import DiffeoProbeError, one_line
from diffeoprobe.limits import check_runs

__all__ = ["GRID_KEYS", "RunSpec", "describe", "expand_grid", "load_grid", "run_id"]

GRID_KEYS = ("description", "train", "measure", "axes", "grids")
SECTIONS: dict[str, type] = {"train": TrainConfig, "measure": MeasureConfig}
ID_LENGTH = 16  # hex digits of sha256 kept: 64 bits, P(collision) ~ n^2 / 2^65, 3e-8 at 1e6 runs
ID_SCHEMA = "diffeoprobe-run-v1"  # hashed with the configs; change it if the id rule changes


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its two configs, its id, and where in the grid it came from."""

    id: str
    train: TrainConfig
    measure: MeasureConfig
    grid: str = ""  # sub-grid path, "cifar/noisy"; "" for a file without sub-grids
    axes: dict[str, Any] = field(default_factory=dict)  # axis path -> this run's value


class _GridLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float (YAML 1.2), not as a string."""


_GridLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_grid(path: str | Path, *, only: Sequence[str] = ()) -> list[RunSpec]:
    """Read, validate and expand a grid file into its runs (duplicates dropped, file order kept).

    Args:
        path: a YAML grid file (see the module docstring).
        only: keep the runs of these sub-grids (a name selects its nested sub-grids too).

    Raises:
        DiffeoProbeError: a missing or unparsable file, an unknown key (with the closest valid one
            and the key's path), a value of the wrong type or out of range, an unknown model or
            data set name, a model or data set option the factory does not take.
    """
    path = Path(path)
    if not path.is_file():
        raise DiffeoProbeError(f"grid file {str(path)!r} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_GridLoader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError:
        raise DiffeoProbeError(f"{path}: not a text file (a grid file is YAML)") from None
    except yaml.YAMLError as exc:
        raise DiffeoProbeError(f"{path}: not valid YAML ({one_line(exc)})") from None
    if data is None:
        raise DiffeoProbeError(f"{path}: the grid file is empty (see docs/sweeps.md for its keys)")
    return expand_grid(data, source=str(path), only=only)


def expand_grid(
    data: dict[str, Any], *, source: str = "grid", only: Sequence[str] = ()
) -> list[RunSpec]:
    """Validate and expand a grid given as plain values (what :func:`load_grid` reads).

    >>> specs = expand_grid({"train": {"model": "simplecnn1d", "dataset": "scale-detection"},
    ...                      "axes": {"seed": [0, 1], "model_options.depth": [2, 3]}})
    >>> [(s.axes["seed"], s.train.model_options["depth"]) for s in specs]
    [(0, 2), (0, 3), (1, 2), (1, 3)]
    >>> expand_grid({"train": {"modle": "vgg11"}})
    Traceback (most recent call last):
    ...
    diffeoprobe.errors.DiffeoProbeError: grid: train.modle: unknown setting; did you mean 'model'?
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DiffeoProbeError(
            f"{source}: a grid file is a mapping with keys {', '.join(GRID_KEYS)}, got {type(data).__name__}"
        )
    leaves: list[tuple[str, str, dict[str, Any], dict[str, tuple[str, list]]]] = []
    _walk(data, source, "", "", {}, {}, leaves)
    names = sorted({name for _, name, _, _ in leaves})
    for wanted in only:
        if not any(name == wanted or name.startswith(wanted + "/") for name in names):
            close = difflib.get_close_matches(wanted, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; sub-grids: {', '.join(names)}"
            raise DiffeoProbeError(f"only: {source} has no sub-grid {wanted!r}{hint}")
    chosen = [
        leaf
        for leaf in leaves
        if not only or any(leaf[1] == w or leaf[1].startswith(w + "/") for w in only)
    ]
    runs = sum(math.prod(len(values) for _, values in axes.values()) for *_, axes in chosen)
    check_runs(runs, f"{source}: axes")
    specs: dict[str, RunSpec] = {}
    for where, name, fixed, axes in chosen:
        for spec in _product(where, name, fixed, axes):
            specs.setdefault(spec.id, spec)
    return list(specs.values())


def _walk(
    node: object,
    source: str,
    prefix: str,
    name: str,
    fixed: dict[str, Any],
    axes: dict[str, tuple[str, list]],
    leaves: list,
) -> None:
    """Collect (location, sub-grid name, fixed values, axes) for every leaf grid below ``node``."""

    def at(key: str) -> str:
        return f"{source}: {prefix}{key}"

    if not isinstance(node, dict):
        raise DiffeoProbeError(
            f"{at('').rstrip(': .')}: a grid is a mapping with keys {', '.join(GRID_KEYS)}, got {node!r}"
        )
    _check_grid_keys(node, at)
    fixed, axes = _fixed_values(node, at, fixed, axes)
    axes = _node_axes(node, at, axes)
    grids = node.get("grids")
    if grids is None:
        leaves.append((at("").rstrip(": .") if prefix else source, name, fixed, axes))
        return
    if not isinstance(grids, dict) or not grids:
        raise DiffeoProbeError(f"{at('grids')}: expected a mapping NAME: grid, got {grids!r}")
    for sub, child in grids.items():
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(sub)):
            raise DiffeoProbeError(
                f"{at(f'grids.{sub}')}: a sub-grid name uses letters, digits, '_', '-', '.'"
            )
        _walk(
            child or {},
            source,
            f"{prefix}grids.{sub}.",
            f"{name}/{sub}" if name else str(sub),
            fixed,
            axes,
            leaves,
        )


def _check_grid_keys(node: dict, at: Callable[[str], str]) -> None:
    """Refuse a key a grid does not take, pointing a setting to its section."""
    for key in node:
        if key in GRID_KEYS:
            continue
        if _is_field(TrainConfig, key) or _is_field(MeasureConfig, key):
            section = "train" if _is_field(TrainConfig, key) else "measure"
            hint = f"; settings go under '{section}:' (or vary them under 'axes:')"
        else:
            close = difflib.get_close_matches(str(key), GRID_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DiffeoProbeError(
            f"{at(str(key))}: unknown key{hint}; a grid takes {', '.join(GRID_KEYS)}"
        )


def _fixed_values(
    node: dict,
    at: Callable[[str], str],
    fixed: dict[str, Any],
    axes: dict[str, tuple[str, list]],
) -> tuple[dict[str, Any], dict[str, tuple[str, list]]]:
    """The inherited fixed values and axes with this node's ``train:`` and ``measure:`` values
    applied (a deeper fixed value replaces an inherited axis on the same path).
    """
    fixed, axes = dict(fixed), dict(axes)
    for section in SECTIONS:
        values = node.get(section) or {}
        if not isinstance(values, dict):
            raise DiffeoProbeError(f"{at(section)}: expected a mapping of settings, got {values!r}")
        for key, value in values.items():
            path = _resolve(f"{section}.{key}", at(f"{section}.{key}"), explicit=True)
            for leaf, leaf_value in _assignments(path, value, at(f"{section}.{key}")):
                fixed[leaf] = leaf_value
                for axis in [a for a in axes if a == leaf or leaf.startswith(a + ".")]:
                    del axes[axis]
    return fixed, axes


def _node_axes(
    node: dict, at: Callable[[str], str], axes: dict[str, tuple[str, list]]
) -> dict[str, tuple[str, list]]:
    """The inherited axes with this node's ``axes:`` added (each value checked in place; an axis
    replaces an inherited one on the same or an enclosing path).
    """
    node_axes = node.get("axes") or {}
    if not isinstance(node_axes, dict):
        raise DiffeoProbeError(
            f"{at('axes')}: expected a mapping of KEY: [values], got {node_axes!r}"
        )
    axes = dict(axes)
    seen: dict[str, str] = {}
    for key, values in node_axes.items():
        where = at(f"axes.{key}")
        path = _resolve(str(key), where)
        if path in seen:
            raise DiffeoProbeError(f"{where}: the same setting as axes.{seen[path]}")
        seen[path] = str(key)
        if not isinstance(values, list) or not values:
            raise DiffeoProbeError(
                f"{where}: an axis takes a non-empty list of values, got {values!r} (a single value goes under train: or measure:)"
            )
        kept = [v for a, (_, v) in axes.items() if not _overlaps(a, path)]
        check_runs(len(values) * math.prod(map(len, kept)), where)  # before checking each value
        for index, value in enumerate(values):
            list(_assignments(path, value, f"{where}[{index}]"))  # checks each value in place
        for inherited in [a for a in axes if a.startswith(path + ".") or path.startswith(a + ".")]:
            del axes[inherited]
        axes[path] = (where, values)
    return axes


def _overlaps(axis: str, path: str) -> bool:
    """Whether ``axis`` is ``path``, inside it or encloses it (one replaces the other)."""
    return axis == path or axis.startswith(path + ".") or path.startswith(axis + ".")


def _is_field(cls: type, name: object) -> bool:
    return name in {f.name for f in dataclasses.fields(cls)}


def _resolve(key: str, where: str, *, explicit: bool = False) -> str:
    """``seed`` -> ``train.seed``; ``model_options.depth`` -> ``train.model_options.depth``."""
    parts = key.split(".")
    prefixed = len(parts) > 1 and parts[0] in SECTIONS
    section = parts[0] if prefixed else "train"
    rest = parts[1:] if prefixed else parts
    cls = SECTIONS[section]
    names = [f.name for f in dataclasses.fields(cls)]
    if rest[0] not in names:
        other = "measure" if section == "train" else "train"
        if _is_field(SECTIONS[other], rest[0]):
            hint = (
                f"; it is a {other} setting: put it under '{other}:'"
                if explicit
                else f"; did you mean '{other}.{rest[0]}'?"
            )
        else:
            close = difflib.get_close_matches(rest[0], names, n=1)
            spelled = f"{section}.{close[0]}" if close and prefixed and not explicit else ""
            hint = (
                f"; did you mean {spelled or close[0]!r}?"
                if close
                else f"; valid: {', '.join(names)}"
            )
        raise DiffeoProbeError(f"{where}: unknown setting{hint}")
    hint = field_types(cls)[rest[0]]
    if len(rest) > 1 and typing.get_origin(hint) is not dict:
        raise DiffeoProbeError(f"{where}: {rest[0]!r} is not a mapping, it has no key {rest[1]!r}")
    if len(rest) > 2:
        raise DiffeoProbeError(f"{where}: paths go one level into a mapping ({rest[0]}.KEY)")
    return ".".join([section, *rest])


def _assignments(path: str, value: object, where: str) -> Iterator[tuple[str, object]]:
    """The leaf paths a value sets (a mapping given to an options field sets one path per key),
    each value checked against the field's type and range.
    """
    section, name, *key = path.split(".")
    cls = SECTIONS[section]
    if key:
        yield path, value
        return
    value = coerce(value, field_types(cls)[name], where)
    if isinstance(value, dict):
        for option, option_value in value.items():
            yield f"{path}.{option}", option_value
        return
    _check_value(cls, name, value, where)
    yield path, value


def _check_value(cls: type, name: str, value: object, where: str) -> None:
    """Range and name checks of one setting, reported at its place in the grid file."""
    try:
        validate(dataclasses.replace(cls(), **{name: value}))
    except DiffeoProbeError as exc:
        raise DiffeoProbeError(f"{where}: {exc}") from None


def _product(
    where: str, name: str, fixed: dict[str, Any], axes: dict[str, tuple[str, list]]
) -> Iterator[RunSpec]:
    paths = list(axes)
    for combination in itertools.product(*(axes[p][1] for p in paths)):
        values = dict(fixed)
        labels = {}
        for path, value in zip(paths, combination, strict=True):
            for leaf, leaf_value in _assignments(path, value, axes[path][0]):
                values[leaf] = leaf_value
            labels[path.removeprefix("train.")] = value
        train, measure = _build(values)
        _check_run(train, f"{where} ({describe(labels)})" if labels else where)
        yield RunSpec(run_id(train, measure), train, measure, name, labels)


def _build(values: dict[str, Any]) -> tuple[TrainConfig, MeasureConfig]:
    built = {}
    for section, cls in SECTIONS.items():
        kwargs: dict[str, Any] = {}
        for path, value in values.items():
            head, name, *key = path.split(".")
            if head != section:
                continue
            if key:
                kwargs.setdefault(name, {})[key[0]] = value
            else:
                kwargs[name] = value
        built[section] = cls(**kwargs)
    return built["train"], built["measure"]


def _check_run(config: TrainConfig, where: str) -> None:
    """Checks across settings: the model's and the data set's options against their factories."""
    try:
        check_options(config)
    except DiffeoProbeError as exc:
        raise DiffeoProbeError(f"{where}: {exc}") from None


def describe(labels: dict[str, Any]) -> str:
    """``{"seed": 0, "lr": 0.1}`` -> ``"seed=0, lr=0.1"`` (a run's axis values, for messages)."""
    return ", ".join(f"{k}={v}" for k, v in labels.items())


def run_id(train: TrainConfig, measure: MeasureConfig) -> str:
    """The run's id: the first hex digits of the sha256 of its configs' canonical JSON.

    Canonical: keys sorted, no spaces, floats with integral values written as integers (so
    ``noise_norm: 1`` and ``1.0`` are the same run). The id does not depend on the package version,
    so an upgrade does not invalidate finished runs (each records its versions).

    >>> run_id(TrainConfig(lr=1), MeasureConfig()) == run_id(TrainConfig(lr=1.0), MeasureConfig())
    True
    """
    payload = {"schema": ID_SCHEMA, "train": to_dict(train), "measure": to_dict(measure)}
    text = json.dumps(_canonical(payload), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:ID_LENGTH]


def _canonical(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() else value
    return value
