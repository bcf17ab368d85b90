"""What the figures share: run construction, reading finished runs, re-measuring checkpoints,
averaging over seeds.

A figure's builder receives a :class:`Context`; ``context.table(run)`` gives the run's layer-wise
table at initialisation and at the end of training (``state`` = ``init`` / ``trained``), measured
as docs/science.md prescribes for its data set:

- On ``scale-detection`` the diffeo is the task's pixel shift. For Task 2 a move that crosses a
  block of side ``xi`` is undone (docs/science.md section 6); ``train()``'s own measurement uses the
  unconstrained shift, so Task-2 checkpoints are measured again here.
- A pixel shift moves every nonzero pixel, so on noisy scale-detection signals it would move the
  noise too: nets trained on noisy signals are probed on the clean test signals.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from diffeoprobe import runs
from diffeoprobe.config import MeasureConfig, TrainConfig, measure_arguments
from diffeoprobe.data.tensors import head, labels
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.experiments.preconditions import chance_error
from diffeoprobe.experiments.presets import Preset, ZooNet
from diffeoprobe.experiments.spec import Run

__all__ = [
    "Context",
    "available",
    "availability",
    "host_reachable",
    "how_to_get",
    "MissingRuns",
    "measure_config",
    "noise_norms",
    "representations",
    "run_id",
    "sd_run",
    "seed_mean",
    "typical_norm",
    "zoo_run",
]

QUANTITIES = ("D", "G", "R")
INIT, TRAINED = "init", "trained"


class MissingRuns(DiffeoProbeError):
    """A figure needs runs that are not finished; the message says which and how to make them."""


# ---- runs ----------------------------------------------------------------------------------------


def run_id(config: TrainConfig, measure: MeasureConfig) -> str:
    """The run's directory name under ``DIR/runs/``: :func:`diffeoprobe.sweep.run_id` (a hash of
    both configs), so ``diffeoprobe sweep`` and the store read reproduce's runs as their own.
    """
    from diffeoprobe.sweep import run_id as sweep_id

    return sweep_id(config, measure)


def measure_config(preset: Preset) -> MeasureConfig:
    """The measurement of every run: docs/science.md section 4 with ``P = preset.probe_size``."""
    return MeasureConfig(probe_size=preset.probe_size)


def sd_run(
    preset: Preset,
    *,
    task: int,
    seed: int,
    activation: str = "relu",
    stride: int = 2,
    filter_size: int = 2,
    depth: int | None = None,
    noise_norm: float = 0.0,
    noise_level: float | None = None,
    width: int | None = None,
    lr_per_width: float | None = None,
    epochs: int | None = None,
    adam_lr: float | None = None,
    batch_size: int | None = None,
) -> Run:
    """The 1D scale-detection CNN on Task ``task`` (docs/science.md section 6), hinge loss, plain SGD
    at ``lr = lr_per_width * width`` (the preset's by default; Adam at ``adam_lr`` when given),
    stopped at zero training error.
    """
    width = width or preset.sd_width
    lr_per_width = lr_per_width or preset.sd_lr_per_width
    options: dict[str, Any] = dict(width=width)
    if activation != "relu":
        options["activation"] = activation
    if (stride, filter_size) != (2, 2) or depth is not None:
        options.update(stride=stride, filter_size=filter_size)
    options["depth"] = depth or preset.sd_depth
    data: dict[str, Any] = dict(
        dim=1,
        task=task,
        d=preset.sd_d,
        xi=preset.sd_xi,
        train_size=preset.sd_train,
        test_size=preset.sd_test,
    )
    if noise_norm:
        data["noise_norm"] = float(noise_norm)
    config = TrainConfig(
        model="scalecnn1d",
        model_options=options,
        dataset="scale-detection",
        dataset_options=data,
        epochs=epochs or preset.sd_epochs,
        batch_size=batch_size or preset.sd_batch,
        optimizer="adam" if adam_lr else "sgd",
        lr=adam_lr or lr_per_width * width,
        momentum=0.0,
        weight_decay=preset.sd_weight_decay,
        schedule="constant",
        loss="hinge",
        stop_at_zero_error=True,
        checkpoints=preset.checkpoints,
        measure=True,
        seed=seed,
        device=preset.device,
    )
    tags = dict(task=task, stride=stride, activation=activation, noise_norm=float(noise_norm))
    if noise_level is not None:
        tags["noise_level"] = float(noise_level)
    return Run(config, measure_config(preset), tags)


def zoo_run(
    preset: Preset,
    net: ZooNet,
    *,
    seed: int,
    noise_norm: float = 0.0,
    noise_level: float | None = None,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    epochs: int | None = None,
    loss: str = "cross-entropy",
    augment: bool | None = None,
) -> Run:
    """A zoo net on the preset's real-image data set (or ``dataset``), docs/science.md section 8."""
    data = dict(preset.zoo_dataset_options if dataset_options is None else dataset_options)
    if noise_norm:
        data["noise_norm"] = float(noise_norm)
    config = TrainConfig(
        model=net.model,
        model_options=dict(net.options),
        dataset=dataset or preset.zoo_dataset,
        dataset_options=data,
        train_size=preset.zoo_train_size if dataset is None else None,
        test_size=preset.zoo_test_size if dataset is None else None,
        epochs=epochs or net.epochs or preset.zoo_epochs,
        batch_size=preset.zoo_batch,
        optimizer=net.optimizer,
        lr=net.lr,
        weight_decay=net.weight_decay,
        schedule="cosine",
        loss=loss,
        augment=preset.zoo_augment if augment is None else augment,
        checkpoints=preset.checkpoints,
        measure=True,
        seed=seed,
        device=preset.device,
    )
    label = net.model + (
        "(" + ",".join(f"{k}={v}" for k, v in net.options.items()) + ")" if net.options else ""
    )
    tags: dict[str, Any] = dict(net=label, noise_norm=float(noise_norm))
    if noise_level is not None:
        tags["noise_level"] = float(noise_level)
    return Run(config, measure_config(preset), tags)


def noise_norms(
    preset: Preset, dataset: str, options: dict[str, Any]
) -> list[tuple[float, float | None]]:
    """(total noise norm s, s / ||x|| or ``None``) for each noise level of the preset.

    With ``preset.noise_levels`` the levels are relative to the data set's mean image norm
    (:func:`typical_norm`, rounded to 4 significant digits so that run ids are stable); without,
    ``preset.noise_norms`` are absolute (the papers' CIFAR-10 scale).
    """
    if not preset.noise_levels:
        return [(float(s), None) for s in preset.noise_norms]
    norm = typical_norm(dataset, json.dumps(options, sort_keys=True, default=str))
    return [(float(f"{level * norm:.4g}"), float(level)) for level in preset.noise_levels]


@functools.cache
def typical_norm(dataset: str, options: str) -> float:
    """The mean L2 norm of the first 10,000 training images of ``dataset`` (``options`` as JSON;
    noise options are ignored): the scale the relative noise levels refer to.

    >>> round(typical_norm("scale-detection", '{"dim": 1, "d": 128, "xi": 32}'), 4)  # two 1s
    1.4142
    """
    from diffeoprobe import data as datasets

    values = {k: v for k, v in json.loads(options).items() if k not in ("noise_norm", "noise_mode")}
    values.pop("download", None)
    data = datasets.build(dataset, split="train", seed=0, **values)
    x, _ = head(data, 10_000)
    return float(x.flatten(1).norm(dim=1).mean())


# ---- reading and probing finished runs -----------------------------------------------------------


@dataclass
class Context:
    """What a figure's builder may use: the finished runs of its spec and the preset."""

    preset: Preset
    root: Path  # the reproduce directory; runs live in root / "runs" / <id>
    log: Callable[[str], None] = lambda message: None
    _cache: dict[str, Any] = field(default_factory=dict)

    def run_dir(self, run: Run) -> Path:
        """The directory of ``run`` under ``root``."""
        return self.root / "runs" / run_id(run.config, run.measure)

    def require(self, needed: Iterable[Run], figure: str) -> None:
        """Raise :class:`MissingRuns` naming every run of ``needed`` that is not finished."""
        missing = [r for r in needed if not (self.run_dir(r) / "done.json").is_file()]
        if missing:
            lines = "; ".join(f"{self.run_dir(r).name} = {r.describe()}" for r in missing)
            raise MissingRuns(
                f"figure {figure!r} needs {len(missing)} unfinished run(s) under {self.root / 'runs'}: "
                f"{lines}; make them with `diffeoprobe reproduce {self.preset.name} --only {figure} "
                f"--out {self.root}`"
            )

    def done(self, run: Run) -> dict[str, Any]:
        """The run's ``done.json`` (steps, epochs, final errors, seconds)."""
        return runs.read_json(self.run_dir(run) / "done.json")

    def steps(self, run: Run) -> tuple[int, int]:
        """(first, last) complete checkpoint: initialisation and the end of training."""
        done = runs.completed_checkpoints(self.run_dir(run))
        return done[0], done[-1]

    def table(self, run: Run) -> pd.DataFrame:
        """The run's layer-wise table at init and at the end (``state`` column), tags and the
        chance error (``1 - 1 / classes``, for the claims' preconditions) added.
        """
        key = f"table:{self.run_dir(run).name}"
        if key not in self._cache:
            first, last = self.steps(run)
            if _needs_remeasure(run):
                parts = [self.measure(run, step) for step in (first, last)]
                table = pd.concat(parts, ignore_index=True)
            else:
                table = runs.read_table(self.run_dir(run) / "table.parquet")
                table = table[table["step"].isin([first, last])].reset_index(drop=True)
            table.insert(0, "state", np.where(table["step"] == first, INIT, TRAINED))
            table.insert(0, "run", self.run_dir(run).name)
            table["chance_error"] = chance_error(self._data(run)[1])
            for name, value in run.tags.items():
                table[name] = value
            self._cache[key] = table
        return self._cache[key].copy()

    def measure(
        self,
        run: Run,
        step: int,
        *,
        model: nn.Module | None = None,
        **overrides: Any,
    ) -> pd.DataFrame:
        """``measure`` of the run's model at ``step`` (or of ``model``) on its probe images, with
        the run's settings and seed, the data set's proper diffeo, and ``overrides``.
        """
        from diffeoprobe.measurement import measure

        net = self.model(run, step) if model is None else model
        table = measure(
            net, self.probe(run), **{**measure_options(run), **overrides}, seed=run.config.seed
        )
        meta = runs.read_json(runs.checkpoint_path(self.run_dir(run), step, ".json"))
        for key in ("step", "epoch", "train_error", "test_error"):
            table.insert(0, key, meta[key])
        table.insert(0, "seed", run.config.seed)
        table.insert(0, "dataset", run.config.dataset)
        table.insert(0, "model", run.config.model)
        return table

    def init_tables(self, run: Run, count: int) -> pd.DataFrame:
        """The run's representations at initialisation for seeds ``0 .. count - 1``: the paper
        averages the untrained value over 5 initialisations (docs/science.md section 4). Seeds that
        were trained come from their init checkpoint (``table``); the others are fresh nets built
        and measured with that seed, as ``train()`` would have.
        """
        from diffeoprobe.measurement import measure

        seeds = [s for s in range(count) if s != run.config.seed]
        first = self.table(run)
        parts = [first[first["state"] == INIT]]
        x, num_classes = self._data(run)
        for seed in seeds:
            torch.manual_seed(seed)
            net = self._build(run, x, num_classes).eval()
            table = measure(net, self.probe(run), **measure_options(run), seed=seed)
            table.insert(0, "state", INIT)
            table.insert(1, "run", f"{self.run_dir(run).name}/init-seed{seed}")
            table["seed"], table["step"], table["epoch"] = seed, 0, 0.0
            for name, value in run.tags.items():
                table[name] = value
            parts.append(table)
        return pd.concat(parts, ignore_index=True)

    def _build(self, run: Run, x: torch.Tensor, num_classes: int) -> nn.Module:
        from diffeoprobe.models import build

        config = run.config
        return build(
            config.model,
            x.shape[1],
            num_classes,
            input_size=x.shape[-1],
            **dict(config.model_options),
        )

    def model(self, run: Run, step: int) -> nn.Module:
        """The run's model with the weights of checkpoint ``step``, in eval mode."""
        x, num_classes = self._data(run)
        torch.manual_seed(run.config.seed)
        net = self._build(run, x, num_classes)
        runs.load_weights(net, runs.checkpoint_path(self.run_dir(run), step, ".safetensors"))
        return net.eval()

    def probe(self, run: Run) -> torch.Tensor:
        """The probe images of the run: the first P test images (clean on scale-detection)."""
        x, _ = self._data(run)
        return x[: run.measure.probe_size]

    def _data(self, run: Run) -> tuple[torch.Tensor, int]:
        from diffeoprobe import data as datasets

        config = run.config
        options = dict(config.dataset_options)
        if config.dataset == "scale-detection":  # probe with clean signals (module docstring)
            options.pop("noise_norm", None)
            options.pop("noise_mode", None)
        key = json.dumps([config.dataset, options, config.seed, config.data_dir], default=str)
        if key not in self._cache:
            common = dict(data_dir=config.data_dir, seed=config.seed, **options)
            test = datasets.build(config.dataset, split="test", **common)
            x, y = head(test, config.test_size)
            train_labels = labels(datasets.build(config.dataset, split="train", **common))
            classes = int(max(int(train_labels.max()), int(y.max()))) + 1
            self._cache[key] = (x, classes)
        return self._cache[key]


def _needs_remeasure(run: Run) -> bool:
    options = run.config.dataset_options
    return run.config.dataset == "scale-detection" and (
        options.get("task", 1) == 2 or bool(options.get("noise_norm", 0))
    )


def measure_options(run: Run) -> dict[str, Any]:
    """``measure`` keyword arguments from the run's MeasureConfig, with the proper diffeo."""
    config = run.config
    arguments = measure_arguments(
        run.measure, dataset=config.dataset, dataset_options=config.dataset_options
    )
    return dict(arguments, device=config.device)


# ---- shaping tables --------------------------------------------------------------------------------


def representations(table: pd.DataFrame) -> pd.DataFrame:
    """The representations the theory speaks of, with a layer index ``k``.

    For nets built of ``blockN.conv -> blockN.act`` (scalecnn1d, simplecnn): the input (k = 0),
    each block's activation (k = N) and the output (k = blocks + 1). Other nets keep every layer,
    ``k`` = depth.
    """
    act = table["layer"].str.fullmatch(r"block\d+\.act")
    if not act.any():
        return table.assign(k=table["depth"].astype(float))
    keep = act | table["layer"].isin(["input", "output"])
    out = table[keep].copy()
    blocks = out["layer"].str.extract(r"block(\d+)\.act", expand=False).astype(float)
    last = blocks.max()
    out["k"] = np.where(
        out["layer"] == "input", 0.0, np.where(out["layer"] == "output", last + 1, blocks)
    )
    out["rel_depth"] = out["k"] / (last + 1)
    return out


def seed_mean(
    table: pd.DataFrame, by: Sequence[str], quantities: Sequence[str] = QUANTITIES
) -> pd.DataFrame:
    """Mean over seeds of each quantity, grouped by ``by``; ``*_se`` the standard error over
    seeds (the measurement's own error when there is one seed); ``seeds`` the count.
    """
    rows = []
    for key, part in table.groupby(list(by), sort=False, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        n = part["seed"].nunique() if "seed" in part else len(part)
        for q in quantities:
            values = part[q].to_numpy(dtype=float)
            row[q] = float(np.mean(values))
            if n > 1:
                row[f"{q}_se"] = float(np.std(values, ddof=1) / math.sqrt(len(values)))
            else:
                row[f"{q}_se"] = float(part[f"{q}_se"].mean()) if f"{q}_se" in part else math.nan
        row["seeds"] = n
        rows.append(row)
    return pd.DataFrame(rows)


def fmt(value: float, digits: int = 3) -> str:
    """A number for a claim's text: ``0.0123``, ``1.2e-05``."""
    if value is None or not math.isfinite(value):
        return "nan"
    return f"{value:.{digits}g}"


FILE_BACKED = ("fashionmnist", "mnist", "cifar10", "svhn")
CONNECT_TIMEOUT = 3.0  # seconds: how long a download host gets to accept a connection
OFFLINE_ENV = "DIFFEOPROBE_OFFLINE"  # set (to anything but 0 / empty): never try the network
_REACHABLE: dict[tuple[str, int], bool] = {}


def available(dataset: str, options: dict[str, Any] | None = None) -> bool:
    """Whether ``dataset`` can be loaded here: see :func:`availability`."""
    return availability(dataset, options) is None


def availability(dataset: str, options: dict[str, Any] | None = None) -> str | None:
    """``None`` when ``dataset`` (with its ``options``) can be loaded here, else the reason.

    Synthetic data sets always can. A file-backed one can when its files are present; when they
    are absent and ``download`` is asked for, when its download host accepts a connection within
    :data:`CONNECT_TIMEOUT` seconds (checked once per host and process; never with
    ``DIFFEOPROBE_OFFLINE`` set), so a figure that cannot have its data is skipped in seconds.
    The reason says what is missing where and how to make the data available.
    """
    if dataset not in FILE_BACKED:
        return None
    options = dict(options or {})
    download = bool(options.pop("download", False))
    if _loads(dataset, json.dumps(options, sort_keys=True, default=str)):
        return None
    where = f"{dataset} not found under {data_directory(dataset, options)}"
    if download:
        hosts = download_hosts(dataset)
        if any(host_reachable(host, port) for host, port in hosts):
            return None
        names = " or ".join(host for host, _ in hosts)
        where += f" and {names} cannot be reached (no network)"
    return f"{where}; {how_to_get(dataset, options)}"


def data_directory(dataset: str, options: dict[str, Any] | None = None) -> Path:
    """Where the file-backed ``dataset`` is looked for (its ``data_dir`` option, else its default)."""
    from diffeoprobe.data import default_data_dir
    from diffeoprobe.data.idx import FASHION_MNIST_DIR

    chosen = (options or {}).get("data_dir")
    if chosen is not None:
        return Path(str(chosen)).expanduser()
    if dataset == "fashionmnist" and FASHION_MNIST_DIR.is_dir():
        return FASHION_MNIST_DIR
    return default_data_dir(dataset)


def download_hosts(dataset: str) -> list[tuple[str, int]]:
    """The (host, port) pairs the file-backed ``dataset`` is downloaded from, official first."""
    from urllib.parse import urlsplit

    from diffeoprobe.data.cifar import CIFAR10_REMOTE
    from diffeoprobe.data.idx import idx_remote_files
    from diffeoprobe.data.svhn import SVHN_REMOTE

    if dataset == "cifar10":
        urls = list(CIFAR10_REMOTE.urls)
    elif dataset == "svhn":
        urls = [url for remote in SVHN_REMOTE.values() for url in remote.urls]
    else:
        urls = [url for remote in idx_remote_files(dataset, "test") for url in remote.urls]
    hosts: dict[tuple[str, int], None] = {}
    for url in urls:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        hosts[(parts.hostname or "", port)] = None
    return list(hosts)


def host_reachable(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether ``host`` accepts a TCP connection on ``port`` within ``timeout`` seconds (cached per
    host and port; ``False`` without trying when the environment sets ``DIFFEOPROBE_OFFLINE``).
    """
    import os
    import socket

    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return False
    key = (host, port)
    if key not in _REACHABLE:
        try:
            with socket.create_connection(key, timeout=timeout):
                _REACHABLE[key] = True
        except OSError:
            _REACHABLE[key] = False
    return _REACHABLE[key]


def how_to_get(dataset: str, options: dict[str, Any] | None = None) -> str:
    """The command that makes the file-backed ``dataset`` available, or where to put its files."""
    options = {k: v for k, v in (options or {}).items() if k != "download"}
    directory = data_directory(dataset, options)
    where = f", data_dir={str(directory)!r}" if "data_dir" in options else ""
    calls = "; ".join(  # no square brackets: rich would read them as markup
        f"b({dataset!r}, split={split!r}, download=True{where})" for split in ("train", "test")
    )
    command = f'python -c "from diffeoprobe.data import build as b; {calls}"'
    text = (
        f"to make it available, run `{command}` on a machine with network (and copy {directory} "
        "here)"
    )
    if dataset == "fashionmnist":
        text += ", or install the Debian package (`apt-get install dataset-fashion-mnist`)"
    elif dataset == "cifar10":
        text += f", or put cifar-10-python.tar.gz (or cifar-10-batches-py/) into {directory}"
    else:
        text += f", or put its official files into {directory}"
    return text


@functools.cache
def _loads(dataset: str, options: str) -> bool:
    from diffeoprobe import data as datasets

    try:
        datasets.build(dataset, split="test", **json.loads(options))
    except DiffeoProbeError:
        return False
    return True
