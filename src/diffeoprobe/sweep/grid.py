"""Sweeps: a grid file becomes runs with deterministic ids, executed on a pool, resumable.

A grid file (YAML) describes a set of runs once::

    description: scale detection, 2 depths x 2 seeds
    train:                      # fixed TrainConfig values
      model: simplecnn1d
      dataset: scale-detection
      dataset_options: {d: 32, xi: 8, train_size: 128, test_size: 64}
      measure: true
    measure:                    # fixed MeasureConfig values
      probe_size: 32
    axes:                       # the product of these is taken
      model_options.depth: [2, 3]
      seed: [0, 1]
    grids:                      # named sub-grids (optional): each inherits the above, runs = union
      adam: {train: {optimizer: adam, lr: 0.01}}
      sgd:  {axes: {lr: [0.1, 0.05]}}

Keys are paths into the run's two configs: ``seed`` or ``train.seed`` (a TrainConfig field),
``model_options.depth`` (a key of a mapping field), ``measure.delta`` (a MeasureConfig field).
Deeper definitions win: a sub-grid's fixed value replaces an inherited axis on the same path and a
sub-grid's axis replaces an inherited value; mappings (``model_options``) are merged key by key.

Each run is identified by :func:`run_id`, a hash of its two configs, and lives in
``OUT/runs/<id>/``: the directory of :func:`diffeoprobe.train.train` (checkpoints, tables,
``done.json``) plus ``run.json`` (sub-grid, axis values, configs, versions, attempts and timings),
``log.txt`` and, after a failure, ``error.json`` with the traceback.

:func:`run_sweep` hands the runs that are not done to a :class:`concurrent.futures.Executor` (a
local process pool, a Dask cluster, or any executor you pass). A run is trained only by the process
holding its lock (:class:`RunLock`, ``fcntl.flock`` on ``runs/<id>/.lock``), so sweeps started at
once on the same directory never train a configuration twice, and a run whose process died is
resumed from its last checkpoint by whoever takes the lock next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fcntl
import hashlib
import inspect
import itertools
import json
import math
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import types
import typing
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffeoprobe import processes, runs
from diffeoprobe.config import MeasureConfig, TrainConfig, field_types, to_dict
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.publish import Destination, default_stage, is_url

EXECUTORS = ("local", "dask", "serial")
GRID_KEYS = ("description", "train", "measure", "axes", "grids")
SECTIONS: dict[str, type] = {"train": TrainConfig, "measure": MeasureConfig}
ID_LENGTH = 16  # hex digits of sha256 kept: 64 bits, P(collision) ~ n^2 / 2^65, 3e-8 at 1e6 runs
ID_SCHEMA = "diffeoprobe-run-v1"  # hashed with the configs; change it if the id rule changes
RUNS_DIR = "runs"
LOCK_NAME = ".lock"
POLL_SECONDS = 0.2  # how often the driver wakes up to refresh the progress bar
MAX_LOST = 3  # a run whose worker process dies this many times is recorded as failed
_IDLE_DEATHS = (
    "the pool's worker processes died {n} times in a row before any of them started a run "
    "(their error output is above). From a Python script, call run_sweep / reproduce under "
    "`if __name__ == '__main__':` (workers import the script's module); the sweep resumes "
    "where it stopped"
)


# ---- grid files -------------------------------------------------------------------------------


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
    except yaml.YAMLError as exc:
        raise DiffeoProbeError(f"{path}: not valid YAML ({exc})") from None
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
    specs: dict[str, RunSpec] = {}
    for where, name, fixed, axes in leaves:
        if only and not any(name == w or name.startswith(w + "/") for w in only):
            continue
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
    for key in node:
        if key not in GRID_KEYS:
            if _is_field(TrainConfig, key) or _is_field(MeasureConfig, key):
                section = "train" if _is_field(TrainConfig, key) else "measure"
                hint = f"; settings go under '{section}:' (or vary them under 'axes:')"
            else:
                close = difflib.get_close_matches(str(key), GRID_KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DiffeoProbeError(
                f"{at(str(key))}: unknown key{hint}; a grid takes {', '.join(GRID_KEYS)}"
            )
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
                    del axes[axis]  # a deeper fixed value replaces an inherited axis
    node_axes = node.get("axes") or {}
    if not isinstance(node_axes, dict):
        raise DiffeoProbeError(
            f"{at('axes')}: expected a mapping of KEY: [values], got {node_axes!r}"
        )
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
        for index, value in enumerate(values):
            list(_assignments(path, value, f"{where}[{index}]"))  # checks each value in place
        for inherited in [a for a in axes if a.startswith(path + ".") or path.startswith(a + ".")]:
            del axes[inherited]
        axes[path] = (where, values)
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
    each value checked against the field's type and range."""
    section, name, *key = path.split(".")
    cls = SECTIONS[section]
    if key:
        yield path, value
        return
    value = _coerce(value, field_types(cls)[name], where)
    if isinstance(value, dict):
        for option, option_value in value.items():
            yield f"{path}.{option}", option_value
        return
    _check_value(cls, name, value, where)
    yield path, value


def _coerce(value: object, hint: object, where: str) -> object:
    """``value`` as the field's type (an int where a float is wanted becomes a float)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0]
        optional = " or null"
    else:
        optional = ""
    if typing.get_origin(hint) is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise DiffeoProbeError(f"{where}: expected a mapping KEY: VALUE{optional}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise DiffeoProbeError(f"{where}: expected true or false{optional}, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise DiffeoProbeError(f"{where}: expected an integer{optional}, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise DiffeoProbeError(f"{where}: expected a number{optional}, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise DiffeoProbeError(f"{where}: expected a string{optional}, got {value!r}")
    return value


def _check_value(cls: type, name: str, value: object, where: str) -> None:
    """Range and name checks of one setting, reported at its place in the grid file."""
    try:
        if cls is TrainConfig:
            if name == "model" and ":" not in str(value):
                from diffeoprobe.models import MODELS

                MODELS.get(value)
            elif name == "dataset":
                from diffeoprobe.data import DATASETS

                DATASETS.get(value)
            elif name == "device":
                _check_device(value)
            else:
                from diffeoprobe.train import validate_config

                validate_config(dataclasses.replace(TrainConfig(), **{name: value}))
        else:
            validate_measure(dataclasses.replace(MeasureConfig(), **{name: value}))
    except DiffeoProbeError as exc:
        raise DiffeoProbeError(f"{where}: {exc}") from None


def _check_device(value: object) -> None:
    import torch

    try:
        torch.device(str(value))
    except RuntimeError:
        raise DiffeoProbeError(f"device must be cpu, cuda or cuda:N, got {value!r}") from None


def validate_measure(config: MeasureConfig) -> MeasureConfig:
    """Check every field of a :class:`MeasureConfig` (one error naming the field)."""
    from diffeoprobe.measure.core import DIFFEOS, INTERPOLATIONS, NOISES
    from diffeoprobe.validate import (
        check_choice,
        check_cut,
        check_int,
        check_positive,
        check_temperature,
    )

    check_int(config.probe_size, "probe_size", minimum=2)
    check_positive(config.delta, "delta", allow_zero=True)
    if config.temperature is not None:
        check_temperature(config.temperature, "temperature")
    check_cut(config.cut, "cut")
    check_choice(config.interp, "interp", INTERPOLATIONS)
    check_choice(config.diffeo, "diffeo", ("auto", *DIFFEOS))
    check_choice(config.noise, "noise", NOISES)
    check_int(config.draws, "draws", minimum=1)
    check_int(config.batch_size, "batch_size", minimum=1)
    return config


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
        _check_run(train, f"{where} ({_describe(labels)})" if labels else where)
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
    from diffeoprobe.data import DATASETS, build_dataset
    from diffeoprobe.models import MODELS

    checks = []
    if ":" not in config.model:
        taken = set(inspect.signature(MODELS.get(config.model)).parameters)
        checks.append(("model", config.model, config.model_options, taken))
    wrappers = {
        p.name
        for p in inspect.signature(build_dataset).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }
    taken = set(inspect.signature(DATASETS.get(config.dataset)).parameters) | wrappers
    checks.append(("dataset", config.dataset, config.dataset_options, taken))
    for kind, name, options, parameters in checks:
        accepted = sorted(parameters - _NOT_OPTIONS)
        for option in options:
            if option not in accepted:
                close = difflib.get_close_matches(option, accepted, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise DiffeoProbeError(
                    f"{where}: {kind}_options.{option}: {kind} {name!r} does not take {option!r}; "
                    f"{hint}it takes: {', '.join(accepted) or 'no options'}"
                )


# arguments the training loop passes itself (data_dir and seed are TrainConfig fields)
_NOT_OPTIONS = {"in_channels", "num_classes", "split", "seed", "data_dir"}


def _describe(labels: dict[str, Any]) -> str:
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


# ---- run directories: state and locks ---------------------------------------------------------


def run_dir(out: str | Path, spec_or_id: RunSpec | str) -> Path:
    """``OUT/runs/<id>``."""
    key = spec_or_id.id if isinstance(spec_or_id, RunSpec) else spec_or_id
    return Path(out) / RUNS_DIR / key


def is_done(directory: Path) -> bool:
    """A run's results are final when train() has written its ``done.json`` (its last file)."""
    return (directory / "done.json").is_file()


def is_complete(directory: Path) -> bool:
    """Done, and its ``run.json`` says so (written after ``done.json``): nothing left to do.

    A sweep killed between the two files leaves a run that is done but not complete; the next
    sweep completes it (train() returns at once, the record is written) without training.
    """
    path = directory / "run.json"
    return is_done(directory) and path.is_file() and runs.read_json(path).get("status") == "done"


_HELD: dict[tuple[int, int], tuple[int, int]] = {}  # (st_dev, st_ino) -> (pid, thread) holding it
_HELD_GUARD = threading.Lock()


class RunLock:
    """An exclusive ``fcntl.flock`` on ``runs/<id>/.lock``, held by the process training the run.

    The kernel drops the lock when the process dies, SIGKILL included, so there is no stale lock to
    clean up and no timeout to guess. The file keeps ``host pid`` of the last holder, for messages.
    ``flock`` locks belong to an open file, so a second ``RunLock`` on the same file, in the same
    process, cannot take it: :meth:`held_here` tells code called under the lock (``train()`` in a
    sweep) that its caller, in this thread, holds it already.
    Limits: on NFS, Linux maps ``flock`` to NFS byte-range locks (NFSv4, or NFSv3 with lockd),
    and a client that dies holds its lock until the server's lease expires (~90 s); file systems
    mounted with local-only locks (``nolock``, Lustre ``localflock``, some FUSE/SMB mounts) lock
    per machine only: there, do not start two sweeps on one directory from different machines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._key: tuple[int, int] = (-1, -1)  # (st_dev, st_ino) of the file, once acquired

    def acquire(self, *, wait: bool = False) -> bool:
        """Take the lock; ``False`` if another process holds it (``wait`` blocks until it is free)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        info = os.fstat(fd)
        self._key = (info.st_dev, info.st_ino)
        with _HELD_GUARD:
            _HELD[self._key] = (os.getpid(), threading.get_ident())
        return True

    def held_here(self) -> bool:
        """Whether this thread of this process holds the lock (through any ``RunLock`` object).

        A forked child inherits the registry but is another process: it does not count as holding.
        """
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        with _HELD_GUARD:
            holder = _HELD.get((info.st_dev, info.st_ino))
        return holder == (os.getpid(), threading.get_ident())

    def mark_owner(self) -> None:
        """Write ``host pid`` of this process into the lock file (for ``sweep --dry-run``)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)

    def owner(self) -> str:
        """``host pid`` of the last process that trained under this lock ('' if none)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Drop the lock (nothing if not held)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with _HELD_GUARD:  # one holder per file and process: the kernel sees to that
                if _HELD.get(self._key, (None, None))[0] == os.getpid():
                    del _HELD[self._key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (takes and drops it when free)."""
        if not self.path.is_file():
            return False
        if self.acquire():
            self.release()
            return False
        return True

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_status(directory: Path) -> str:
    """``done``, ``running`` (locked by a live process), ``failed``, ``partial`` or ``todo``."""
    if is_done(directory):
        return "done"
    if RunLock(directory / LOCK_NAME).held_elsewhere():
        return "running"
    if (directory / "error.json").is_file():
        return "failed"
    return "partial" if runs.completed_checkpoints(directory) else "todo"


def check_out(out: str | Path) -> Path:
    """``out`` as a Path, refused when it is a URL or an existing file (a sweep needs a directory
    on a local or shared file system: locks, renames)."""
    if "://" in str(out):
        raise DiffeoProbeError(
            f"out: {str(out)!r}: a sweep runs on a local or shared file system, not a URL "
            "(copy the finished directory there; `results` and `report` read URLs)"
        )
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DiffeoProbeError(f"out: {str(root)!r} exists and is not a directory")
    return root


def resolve_out(
    out: str | Path, stage: str | Path | None = None
) -> tuple[Path, Destination | None]:
    """The directory runs are trained in, and where they are published when ``out`` is a URL.

    ``out`` a path: runs live there (``stage`` must be None). ``out`` an fsspec URL: runs are
    trained in ``stage`` (default :func:`diffeoprobe.publish.default_stage`) and published to the
    URL when they finish (:mod:`diffeoprobe.publish`).
    """
    if not is_url(out):
        if stage is not None:
            raise DiffeoProbeError(
                f"stage: {str(stage)!r}: a stage is only used when out is a URL "
                f"(out is the path {str(out)!r}, where runs are trained)"
            )
        return check_out(out), None
    destination = Destination(str(out))
    if stage is not None and is_url(stage):
        raise DiffeoProbeError(
            f"stage: {str(stage)!r} must be a directory on a local or shared file system"
        )
    return check_out(stage if stage is not None else default_stage(str(out))), destination


def plan(
    specs: Sequence[RunSpec], out: str | Path, stage: str | Path | None = None
) -> list[dict[str, Any]]:
    """One row per run: id, sub-grid, axis values, status and last checkpoint (for --dry-run).

    With ``out`` a URL, a run published there is ``done``; the others are looked up in the stage.
    """
    root, destination = resolve_out(out, stage)
    published = destination.complete_runs() if destination is not None else set()
    rows = []
    for spec in specs:
        directory = run_dir(root, spec)
        if spec.id in published:
            status = "done"
        else:
            status = run_status(directory) if directory.is_dir() else "todo"
        steps = runs.completed_checkpoints(directory) if status != "todo" else []
        rows.append(
            dict(
                id=spec.id,
                grid=spec.grid,
                axes=_describe(spec.axes),
                status=status,
                checkpoint=steps[-1] if steps else None,
            )
        )
    return rows


# ---- one run, in a worker process -------------------------------------------------------------

_WORKER_SLOT: int | None = None  # this pool worker's index (set by _init_pool_worker)


def _init_pool_worker(slots: Any) -> None:
    global _WORKER_SLOT
    _WORKER_SLOT = slots.get()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker inherits the CLI's handler


def _worker_slot() -> int | None:
    """The index of this worker: from the local pool's initializer, or a LocalCluster's name."""
    if _WORKER_SLOT is not None:
        return _WORKER_SLOT
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return int(name) if str(name).isdigit() else None


def _assign_gpu(spec: RunSpec, gpus: Sequence[str]) -> str:
    """One GPU per worker: ``CUDA_VISIBLE_DEVICES`` set from the worker's index, before CUDA starts.

    Only for cuda runs and only when the driver listed the GPUs (a pool or cluster it started);
    workers of an existing cluster keep the devices their launcher gave them.
    """
    import torch

    slot = _worker_slot()
    if (
        gpus
        and slot is not None
        and str(spec.train.device).startswith("cuda")
        and not torch.cuda.is_initialized()
    ):
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


def execute_run(
    spec: RunSpec,
    out: str,
    *,
    wait: bool = False,
    threads: int | None = None,
    gpus: Sequence[str] = (),
) -> dict[str, Any]:
    """Train one run under its lock; never raises for a failing run (the outcome says ``failed``).

    Returns a dict with ``id``, ``status`` (``trained``, ``skipped`` when already done, ``busy``
    when another process holds the lock and ``wait`` is false, ``failed``), ``seconds``, ``error``.
    """
    directory = run_dir(out, spec)
    lock = RunLock(directory / LOCK_NAME)
    if not lock.acquire(wait=wait):
        return dict(id=spec.id, status="busy", owner=lock.owner(), seconds=0.0, error="")
    try:
        if is_complete(directory):
            return dict(id=spec.id, status="skipped", seconds=0.0, error="")
        lock.mark_owner()
        for stale in directory.rglob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        return _train_locked(spec, directory, threads, gpus)
    finally:
        lock.release()


def _train_locked(
    spec: RunSpec, directory: Path, threads: int | None, gpus: Sequence[str]
) -> dict[str, Any]:
    import torch

    from diffeoprobe.train import train

    record = _run_record(spec, directory)
    visible = _assign_gpu(spec, gpus)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    attempt = dict(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=_now(),
        threads=torch.get_num_threads(),
        cuda_visible_devices=visible,
        resumed_from=(runs.completed_checkpoints(directory) or [None])[-1],
    )
    record["attempts"].append(attempt)
    record["status"] = "running"
    runs.write_json(directory / "run.json", record)
    start = time.perf_counter()
    with open(directory / "log.txt", "a", buffering=1) as log_file:

        def log(message: str) -> None:
            log_file.write(f"{_now()} {message}\n")

        log(
            f"attempt {len(record['attempts'])} on {attempt['host']} pid {attempt['pid']}, "
            f"{attempt['threads']} threads, device {spec.train.device}"
            + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible else "")
        )
        try:
            summary = train(spec.train, directory, measure=spec.measure, log=log)
        except Exception as exc:
            seconds = time.perf_counter() - start
            text = traceback.format_exc()
            log(f"failed after {seconds:.1f} s:\n{text}")
            attempt.update(finished=_now(), seconds=seconds, status="failed")
            record.update(status="failed", seconds=_total(record))
            runs.write_json(directory / "run.json", record)
            runs.write_json(
                directory / "error.json",
                dict(
                    id=spec.id,
                    type=type(exc).__name__,
                    message=str(exc),
                    traceback=text,
                    attempt=len(record["attempts"]),
                    host=attempt["host"],
                    pid=attempt["pid"],
                    time=_now(),
                ),
            )
            return dict(
                id=spec.id, status="failed", seconds=seconds, error=f"{type(exc).__name__}: {exc}"
            )
        finally:
            torch.set_num_threads(previous_threads)
        seconds = time.perf_counter() - start
        log(f"done in {seconds:.1f} s: test error {summary.test_error:.4f}")
    attempt.update(finished=_now(), seconds=seconds, status="done")
    record.update(status="done", seconds=_total(record), test_error=summary.test_error)
    runs.write_json(directory / "run.json", record)
    (directory / "error.json").unlink(missing_ok=True)
    return dict(id=spec.id, status="trained", seconds=seconds, error="")


def _run_record(spec: RunSpec, directory: Path) -> dict[str, Any]:
    path = directory / "run.json"
    previous = runs.read_json(path) if path.is_file() else {}
    return dict(
        id=spec.id,
        grid=spec.grid,
        axes=spec.axes,
        config={"train": to_dict(spec.train), "measure": to_dict(spec.measure)},
        versions=runs.versions(),
        status="todo",
        attempts=previous.get("attempts", []),
    )


def _total(record: dict[str, Any]) -> float:
    return float(sum(a.get("seconds", 0.0) for a in record["attempts"]))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---- executors --------------------------------------------------------------------------------


class SerialExecutor(Executor):
    """Runs each call at once in this process (``--executor serial``: debugging, profiling)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Call ``fn`` now; the returned future holds its result or exception."""
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class _Backend:
    """An executor plus what the driver needs around it: capacity and recovery from a broken pool."""

    generation = 0

    def __init__(self, executor: Executor, capacity: float) -> None:
        self.executor, self._capacity = executor, capacity

    def capacity(self) -> float:
        return self._capacity

    def running(self, in_flight: int) -> int:
        return int(min(in_flight, self._capacity))

    def describe(self) -> str:
        """What runs the runs, for the sweep's log."""
        return type(self.executor).__name__

    def broken(self, exc: BaseException) -> bool:
        return False

    def recover(self) -> set[int] | None:
        """Replace a broken executor; the pids of the workers that broke it, None if unknown."""
        return None

    def close(self, *, abort: bool) -> None:
        """Release what the back-end started; ``abort``: the sweep was interrupted, stop runs."""
        return None


class _LocalPool(_Backend):
    """``ProcessPoolExecutor`` rebuilt when a worker dies (a BrokenProcessPool)."""

    def __init__(self, workers: int, start_method: str | None = None) -> None:
        self.workers, self.start_method, self.method = workers, start_method, ""
        super().__init__(self._make(), workers)

    def describe(self) -> str:
        return f"a local pool of {self.workers} workers ({self.method})"

    def _make(self) -> Executor:
        from concurrent.futures import ProcessPoolExecutor

        method = self.method = processes.start_method(self.start_method)
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(list(processes.PRELOAD))
        slots = context.SimpleQueue()  # no feeder thread: nothing running while we fork
        for index in range(self.workers):
            slots.put(index)
        executor = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init_pool_worker, initargs=(slots,)
        )
        if method == "fork":  # fork every worker now, while this process has one Python thread
            sys.stdout.flush()  # (a copy would write out what is still buffered)
            sys.stderr.flush()
            executor.submit(int)  # with fork, the first submit starts all the workers
        return executor

    def broken(self, exc: BaseException) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        return isinstance(exc, BrokenProcessPool)

    def recover(self) -> set[int] | None:
        """A new pool. The broken one SIGTERMs its other workers, so the workers that died of
        anything else (SIGKILL, the OOM killer, a crash) are the ones that broke it."""
        workers = dict(getattr(self.executor, "_processes", None) or {})
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._make()
        self.generation += 1
        culprits = {pid for pid, p in workers.items() if p.exitcode != -signal.SIGTERM}
        return culprits or None

    def close(self, *, abort: bool) -> None:
        if abort:  # an interrupted sweep must not wait hours for its runs: they resume later
            terminate = getattr(self.executor, "terminate_workers", None)  # Python >= 3.14
            if terminate is not None:
                terminate()
            for process in list(getattr(self.executor, "_processes", {}).values()):
                process.terminate()
        self.executor.shutdown(wait=True, cancel_futures=True)


class _Dask(_Backend):
    """A ``distributed.Client``'s executor: every run submitted at once, the scheduler queues."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._threads, self._checked = 1, 0.0
        super().__init__(client.get_executor(pure=False), math.inf)

    def describe(self) -> str:
        workers = len(self.client.nthreads())
        return f"the Dask cluster at {self.client.scheduler.address} ({workers} workers now)"

    def running(self, in_flight: int) -> int:
        if time.monotonic() - self._checked > 1.0:
            self._threads = sum(self.client.nthreads().values())
            self._checked = time.monotonic()
        return min(in_flight, self._threads)

    def close(self, *, abort: bool) -> None:
        if abort:  # queued runs are dropped; a run already started finishes and records itself
            self.executor.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def open_executor(
    kind: str | Executor,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    capacity: int | None = None,
    start_method: str | None = None,
) -> Iterator[_Backend]:
    """The execution back-end for a sweep, closed (cluster, pool and all) on exit.

    Args:
        kind: ``"local"`` (a process pool of ``workers``), ``"dask"`` (the cluster at ``scheduler``,
            or a ``distributed.LocalCluster`` of ``workers`` processes on 127.0.0.1 when
            ``scheduler`` is None), ``"serial"`` (in this process), or any
            :class:`concurrent.futures.Executor` (used as given; ``capacity`` runs in flight).
        start_method: how the local pool starts its workers (see :func:`run_sweep`).
    """
    if isinstance(kind, Executor):
        with _closing(_Backend(kind, capacity or math.inf)) as backend:
            yield backend
        return
    if kind not in EXECUTORS:
        raise DiffeoProbeError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if scheduler is not None and kind != "dask":
        raise DiffeoProbeError("scheduler: an address is only used with executor 'dask'")
    if kind == "serial":
        yield _Backend(SerialExecutor(), 1)
        return
    if kind == "local":
        with _closing(_LocalPool(workers or os.cpu_count() or 1, start_method)) as backend:
            yield backend
        return
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise DiffeoProbeError(
            "executor 'dask' needs dask.distributed: pip install 'diffeoprobe[dask]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            # A fork server already running (the sweep command starts one before it imports
            # torch, see processes.py) is used as it is. Otherwise distributed replaces this
            # preload list with its own (numpy, pandas, ...) when it starts the server, and its
            # workers import torch themselves, in parallel: measured, starting the server here
            # with torch preloaded was slower (5.1 s vs 4.1 s), its one import not overlapping.
            method = processes.start_method()
            if method == "forkserver":
                multiprocessing.get_context(method).set_forkserver_preload(
                    [*processes.PRELOAD, "distributed"]
                )
            stack.enter_context(
                dask.config.set({"distributed.worker.multiprocessing-method": method})
            )
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers or os.cpu_count() or 1,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except OSError as exc:
                raise DiffeoProbeError(
                    f"scheduler: cannot reach a Dask scheduler at {scheduler!r} ({exc})"
                ) from None
        with _closing(_Dask(client)) as backend:
            yield backend


@contextlib.contextmanager
def _closing(backend: _Backend) -> Iterator[_Backend]:
    try:
        yield backend
    except BaseException:
        backend.close(abort=True)
        raise
    backend.close(abort=False)


def local_gpus() -> tuple[str, ...]:
    """The GPUs this machine's workers may use: ``CUDA_VISIBLE_DEVICES`` if set, else all."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(d.strip() for d in visible.split(",") if d.strip())
    import torch

    return tuple(str(i) for i in range(torch.cuda.device_count()))


# ---- the driver -------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What a sweep did: ids trained now, already done (before or by another sweep), failed."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # id -> last error
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No run failed."""
        return not self.failed


def run_sweep(
    specs: Sequence[RunSpec],
    out: str | Path,
    *,
    executor: str | Executor = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    retries: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
    start_method: str | None = None,
    stage: str | Path | None = None,
) -> SweepResult:
    """Run every spec that is not done in ``out/runs/<id>/``; failures are recorded, not raised.

    Args:
        specs: the runs (:func:`load_grid`).
        out: the sweep directory (a local or shared file system path), or an fsspec URL
            (``s3://bucket/sweep``): runs are then trained in ``stage`` and each is copied to the
            URL when it finishes (:mod:`diffeoprobe.publish`).
        executor: ``"local"``, ``"dask"``, ``"serial"`` or a :class:`concurrent.futures.Executor`.
        scheduler: a Dask scheduler address (``tcp://host:8786``) for ``executor="dask"``.
        workers: processes of the local pool or of the LocalCluster started for ``"dask"``
            (default: one per GPU when the runs use CUDA and GPUs are visible, else one per core).
        threads: torch threads per run (default: cores / workers for the local pool; the worker's
            setting elsewhere). Float sums depend on it: equal threads give bit-identical tables.
        retries: a failing run is tried again this many times.
        progress: show a progress bar (done / failed / running, ETA) on stderr.
        log: called with one line per finished, failed or retried run.
        start_method: how the local pool starts its workers: ``"forkserver"`` (the default: a
            server process imports the training code once and forks each worker; safe from any
            process), ``"fork"`` (copies of this process: no start-up at all, but only for a
            process that has run no multi-threaded torch code, like the ``sweep`` command's),
            ``"spawn"``.
        stage: where runs are trained when ``out`` is a URL (a local or shared directory;
            default: this user's cache, see :func:`diffeoprobe.publish.default_stage`). Workers
            on other machines need a stage they all see.

    Raises:
        DiffeoProbeError: a bad executor, scheduler, ``workers``, ``threads``, ``retries``,
            ``out`` or ``stage``.
    """
    from diffeoprobe.validate import check_int

    check_int(retries, "retries", minimum=0)
    if workers is not None:
        check_int(workers, "workers", minimum=1)
    if threads is not None:
        check_int(threads, "threads", minimum=1)
    processes.start_method(start_method)  # an unknown one is refused before anything is written
    if isinstance(executor, str) and executor not in EXECUTORS:
        raise DiffeoProbeError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if scheduler is not None and executor != "dask":
        raise DiffeoProbeError("scheduler: an address is only used with executor 'dask'")
    start = time.perf_counter()
    root, destination = resolve_out(out, stage)
    try:
        (root / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "stage" if destination is not None else "out"
        raise DiffeoProbeError(f"{where}: cannot create {str(root / RUNS_DIR)!r} ({exc})") from None
    published = destination.complete_runs() if destination is not None else set()
    complete = {s.id for s in specs if s.id in published or is_complete(run_dir(root, s))}
    result = SweepResult(skipped=[s.id for s in specs if s.id in complete])
    todo = [s for s in specs if s.id not in complete]
    uses_cuda = any(str(s.train.device).startswith("cuda") for s in todo)
    starts_workers = executor in ("local", "dask") and scheduler is None  # on this machine
    gpus = local_gpus() if uses_cuda and starts_workers else ()
    if uses_cuda and start_method == "fork":
        start_method = None  # this process may have started CUDA (counting GPUs): no copies of it
    if workers is None and gpus:
        workers = len(gpus)
    if threads is None and executor == "local":
        threads = max(1, (os.cpu_count() or 1) // (workers or os.cpu_count() or 1))
    journal = _Journal(root / "sweep.log", log)
    journal(
        f"sweep of {len(specs)} runs: {len(result.skipped)} done already, {len(todo)} to run "
        f"(executor {executor if isinstance(executor, str) else type(executor).__name__})"
    )
    driver = _Driver(root, retries, journal, result, deque((s, False) for s in todo), destination)
    for spec in specs:  # finished in the stage by an earlier sweep, not yet at the URL
        if destination is not None and spec.id in complete and spec.id not in published:
            driver.publish(spec)
    if not todo:
        result.seconds = time.perf_counter() - start
        driver.publish_log()
        return result
    in_flight: dict[Future, tuple[RunSpec, bool, int]] = {}
    culprits: dict[int, set[int] | None] = {}  # pool generation -> pids of the workers that died
    charged: dict[int, bool] = {}  # pool generation -> whether its break was charged to a run
    idle_deaths = 0  # pool breaks in a row that no run caused (workers dying as they start)
    with (
        open_executor(
            executor, workers=workers, scheduler=scheduler, start_method=start_method
        ) as backend,
        _SweepProgress(progress, len(todo)) as bar,
    ):
        journal(f"runs go to {backend.describe()}")
        try:
            while driver.queue or in_flight:
                while driver.queue and len(in_flight) < backend.capacity():
                    spec, wait_for_lock = driver.queue.popleft()
                    future = backend.executor.submit(
                        execute_run, spec, str(root), wait=wait_for_lock, threads=threads, gpus=gpus
                    )
                    in_flight[future] = (spec, wait_for_lock, backend.generation)
                finished, _ = wait(list(in_flight), POLL_SECONDS, FIRST_COMPLETED)
                for future in finished:
                    spec, wait_for_lock, generation = in_flight.pop(future)
                    try:
                        driver.settle(spec, future.result())
                        idle_deaths = 0
                    except Exception as exc:  # the worker died (SIGKILL, OOM, a lost node)
                        if backend.broken(exc) and generation == backend.generation:
                            journal(f"a worker process died ({exc!r}); restarting the pool")
                            culprits[backend.generation - 1] = backend.recover()
                        lost = driver.lost(spec, wait_for_lock, exc, culprits.get(generation))
                        charged[generation] = charged.get(generation, False) or lost
                        if generation in culprits and not any(
                            g == generation for _, _, g in in_flight.values()
                        ):  # the whole broken pool is accounted for
                            idle_deaths = 0 if charged[generation] else idle_deaths + 1
                            if idle_deaths >= MAX_LOST:
                                raise DiffeoProbeError(_IDLE_DEATHS.format(n=idle_deaths)) from None
                done = len(result.trained) + len(result.skipped) - (len(specs) - len(todo))
                bar.update(done, driver.settled_failures(), backend.running(len(in_flight)))
        except BaseException as exc:  # Ctrl-C, SIGTERM: queued runs are dropped
            for future in in_flight:
                future.cancel()
            journal(f"sweep interrupted ({type(exc).__name__}); a rerun resumes its runs")
            raise
    result.seconds = time.perf_counter() - start
    journal(
        f"sweep finished in {result.seconds:.1f} s: {len(result.trained)} trained, "
        f"{len(result.skipped)} already done, {len(result.failed)} failed"
    )
    driver.publish_log()
    return result


@dataclass
class _Driver:
    """The sweep's book-keeping: what to submit next and what each outcome means."""

    root: Path
    retries: int
    journal: Callable[[str], None]
    result: SweepResult
    queue: deque[tuple[RunSpec, bool]]  # (run, wait for its lock)
    destination: Destination | None = None  # the URL finished runs are copied to
    attempts: Counter[str] = field(default_factory=Counter)  # failed attempts per run
    losses: Counter[str] = field(default_factory=Counter)  # worker deaths per run

    def publish(self, spec: RunSpec) -> None:
        """Copy a finished run to the URL; a failed copy fails the run (a rerun copies it)."""
        if self.destination is None:
            return
        try:
            self.destination.publish(run_dir(self.root, spec))
        except Exception as exc:  # a network or permission error: the run stays in the stage
            message = f"publishing to {self.destination.url} failed: {exc!r}"
            self.result.failed[spec.id] = message
            for ids in (self.result.trained, self.result.skipped):
                if spec.id in ids:
                    ids.remove(spec.id)
            self.journal(f"{spec.id} {message}; a rerun publishes it from {self.root}")

    def publish_log(self) -> None:
        """Copy ``sweep.log`` next to the runs at the URL (best effort)."""
        if self.destination is not None:
            try:
                self.destination.put_file(self.root / "sweep.log", "sweep.log")
            except Exception as exc:
                self.journal(f"sweep.log not copied to {self.destination.url}: {exc!r}")

    def settle(self, spec: RunSpec, outcome: dict[str, Any]) -> None:
        status = outcome["status"]
        if status == "busy":  # another sweep trains it: come back at the end and wait
            self.journal(f"{spec.id} is being trained by {outcome['owner'] or 'another process'}")
            self.queue.append((spec, True))
        elif status == "skipped":
            self.result.skipped.append(spec.id)
            self.journal(f"{spec.id} was finished by another process")
            self.publish(spec)
        elif status == "trained":
            self.result.trained.append(spec.id)
            self.result.failed.pop(spec.id, None)
            self.journal(f"{spec.id} done in {outcome['seconds']:.1f} s ({_describe(spec.axes)})")
            self.publish(spec)
        else:
            self.attempts[spec.id] += 1
            self.result.failed[spec.id] = outcome["error"]
            if self.attempts[spec.id] <= self.retries:
                self.journal(
                    f"{spec.id} failed ({outcome['error']}); retry {self.attempts[spec.id]} of {self.retries}"
                )
                self.queue.append((spec, False))
            else:
                where = run_dir(self.root, spec) / "error.json"
                self.journal(f"{spec.id} failed: {outcome['error']} (traceback in {where})")

    def lost(
        self, spec: RunSpec, wait_for_lock: bool, exc: Exception, culprits: set[int] | None
    ) -> bool:
        """The run's worker died: try it again first, up to MAX_LOST deaths. A run whose worker
        was only stopped because another one died (``culprits``: their pids) is not charged.
        Returns whether the death was charged to this run."""
        holder = RunLock(run_dir(self.root, spec) / LOCK_NAME).owner().split()
        if culprits is not None and not (
            holder and holder[-1].isdigit() and int(holder[-1]) in culprits
        ):
            self.queue.appendleft((spec, wait_for_lock))
            return False
        self.losses[spec.id] += 1
        if self.losses[spec.id] < MAX_LOST:
            self.queue.appendleft((spec, wait_for_lock))
            return True
        deaths = self.losses[spec.id]
        message = f"its worker process died ({deaths} of {MAX_LOST} deaths allowed; last: {exc!r})"
        _record_lost(run_dir(self.root, spec), spec, message)
        self.result.failed[spec.id] = message
        self.journal(f"{spec.id} failed: {message}")
        return True

    def settled_failures(self) -> int:
        queued = {spec.id for spec, _ in self.queue}
        return sum(1 for key in self.result.failed if key not in queued)


def _record_lost(directory: Path, spec: RunSpec, message: str) -> None:
    runs.write_json(
        directory / "error.json",
        dict(id=spec.id, type="WorkerDied", message=message, traceback="", time=_now()),
    )


class _Journal:
    """``OUT/sweep.log`` (appended, one line per event, safe for concurrent sweeps) and ``log``."""

    def __init__(self, path: Path, log: Callable[[str], None]) -> None:
        self.path, self.log = path, log
        self.tag = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, message: str) -> None:
        line = f"{_now()} [{self.tag}] {message}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())  # one write with O_APPEND: lines of two sweeps don't mix
        finally:
            os.close(fd)
        self.log(message)


class _SweepProgress:
    """One rich progress bar: runs done of the total, failed, running, elapsed, ETA."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}  running {task.fields[running]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task("sweep", total=total, failed=0, running=0)

    def __enter__(self) -> _SweepProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: int, failed: int, running: int) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task, completed=done + failed, failed=failed, running=running
            )
