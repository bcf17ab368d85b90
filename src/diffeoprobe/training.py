"""Training with checkpoints at initialisation, at log-spaced steps and at the end.

Read it top to bottom: set-up, then the loop, with the checkpoint schedule visible in it. Every
random choice (initialisation, subset, data order, augmentation, measurement draws) derives from
``config.seed``, and everything the loop needs to continue (weights, optimiser, scheduler, RNG) is
saved at each checkpoint, so a run killed at any moment and started again with the same directory
continues from its last checkpoint and ends with the same weights and tables as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from diffeoprobe import runs
from diffeoprobe.atomic import check_out_dir
from diffeoprobe.config import MeasureConfig, TrainConfig, measure_arguments, to_dict, validate
from diffeoprobe.data.tensors import head, labels, size, take
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.measurement.fit import PROBE_IMAGES, check_model_fits
from diffeoprobe.validate import check_device

__all__ = [
    "EVAL_BATCH",
    "TRAIN_EVAL_MAX",
    "RunSummary",
    "TrainingDiverged",
    "check_config",
    "checkpoint_steps",
    "train",
]

EVAL_BATCH = 1024  # images per forward pass when evaluating errors
TRAIN_EVAL_MAX = 10_000  # training error is measured on at most this many training points


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run directory keeps its last good checkpoint."""


@dataclass(frozen=True)
class RunSummary:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path | None
    steps: int
    epochs: float
    train_error: float
    test_error: float
    seconds: float
    checkpoints: list[int]
    table: pd.DataFrame | None
    loop_seconds: float = math.nan  # time in training steps only (no evaluation, checkpoints)
    images: int = 0  # training images processed in this call


def checkpoint_steps(total_steps: int, count: int) -> list[int]:
    """Step 0 (initialisation), ``count`` log-spaced steps in ``[1, total_steps]``, and the last.

    >>> checkpoint_steps(1000, 4)
    [0, 1, 10, 100, 1000]
    """
    steps = {0, total_steps}
    if count > 0 and total_steps > 0:
        steps.update(int(round(s)) for s in np.geomspace(1, total_steps, count))
    return sorted(steps)


def check_config(config: TrainConfig, measure: MeasureConfig | None = None) -> None:
    """:func:`diffeoprobe.config.validate` on both configs, and the device present on this
    machine: every check before any work starts (one clear error naming the field).
    """
    if not isinstance(config, TrainConfig):
        raise DiffeoProbeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if measure is not None and not isinstance(measure, MeasureConfig):
        raise DiffeoProbeError(f"measure must be a MeasureConfig, got {type(measure).__name__}")
    validate(config)
    if measure is not None:
        validate(measure)
    check_device(config.device)


def train(
    config: TrainConfig,
    out: str | Path | None = None,
    *,
    measure: MeasureConfig | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> RunSummary:
    """Train ``config.model`` on ``config.dataset``; checkpoint, measure and resume in ``out``.

    Args:
        config: the run (see :class:`~diffeoprobe.config.TrainConfig`).
        out: run directory. ``None`` trains in memory without checkpoints. An existing directory
            made by the same config is resumed from its last complete checkpoint (a finished run
            returns at once); one made by another config is refused. One process at a time per
            directory: the call holds the sweep's run lock (``out/.lock``, taken here unless this
            thread holds it already, as a sweep does) and refuses a directory another process is
            training in. Files half-written by a killed process (``.NAME.XXXX.tmp``) are deleted
            when the run resumes. ``config.json`` is written only once the data sets, the model
            and the first checkpoint's evaluation (and measurement) went through, so a call that
            fails on its settings leaves the directory free for the corrected one.
        measure: settings for the layer-wise measurement at every checkpoint (used when
            ``config.measure``; defaults to :class:`MeasureConfig`).
        progress: show a progress bar with loss and accuracy.
        log: called with one line per checkpoint.

    Raises:
        DiffeoProbeError: a bad config, a run directory holding another config, or one another
            process is training in.
        TrainingDiverged: the loss became NaN/inf (the last good checkpoint stays).
    """
    measure = measure or MeasureConfig()
    check_config(config, measure)
    if out is None:
        return _train(config, None, measure, progress, log)
    run_dir = check_out_dir(out, flag="out")
    with _run_lock(run_dir):
        return _train(config, run_dir, measure, progress, log)


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s run lock (the sweep's) for the block; one this thread holds is reused.

    Raises:
        DiffeoProbeError: another process (or another thread) holds it; names it and ``run_dir``.
    """
    from diffeoprobe.runs import LOCK_NAME, RunLock

    lock = RunLock(run_dir / LOCK_NAME)
    if lock.held_here():  # a sweep, an ensemble or a seed group took it to call us
        yield
        return
    if not lock.acquire():
        owner = lock.owner() or "owner unknown"
        raise DiffeoProbeError(
            f"out: another process ({owner}) is training in {str(run_dir)!r}; wait for it to end "
            "or choose another directory"
        )
    try:
        lock.mark_owner()
        yield
    finally:
        lock.release()


def _training_batch(
    config: TrainConfig, train_set: Dataset, index: torch.Tensor, step: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of ``index``: augmented (2D, with the step's own generator), on ``device``."""
    x, y = take(train_set, index)
    if config.augment and x.dim() == 4:
        from diffeoprobe.data.transforms import augment

        x = augment(x, generator=_generator(config.seed, 2, step))
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if config.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _diverged(loss: float, step: int, epoch: int, run_dir: Path | None) -> TrainingDiverged:
    """The error of a non-finite loss, naming the last good checkpoint."""
    kept = runs.completed_checkpoints(run_dir)[-1] if run_dir is not None else None
    where = f"the last good checkpoint is step {kept} in {run_dir}; " if kept is not None else ""
    return TrainingDiverged(
        f"the loss became {loss} at step {step} (epoch {epoch}); {where}try a smaller lr"
    )


# The training loop reads better whole: step, running sums, checkpoints and the stop rule are
# state that every branch shares; its parts with no shared state are the helpers above.
def _train(  # noqa: C901
    config: TrainConfig,
    run_dir: Path | None,
    measure: MeasureConfig,
    progress: bool,
    log: Callable[[str], None],
) -> RunSummary:
    """The body of :func:`train` (the config checked, the run lock held)."""
    if run_dir is not None:
        _check_run_dir(run_dir, config, measure)  # refused before any work, nothing written
        if (run_dir / "done.json").is_file():
            return _finished(run_dir)
    start_time = time.perf_counter()
    device = torch.device(config.device)

    # ---- data ---------------------------------------------------------------------------------
    train_set, test_set = _load_data(config)
    x_test, y_test = head(test_set, config.test_size)
    n_train = size(train_set)
    num_classes = int(max(labels(train_set).max(), y_test.max())) + 1
    probe = x_test[: measure.probe_size] if config.measure else None

    # ---- model and optimiser ------------------------------------------------------------------
    torch.manual_seed(config.seed)
    model = _build_model(
        config, in_channels=x_test.shape[1], num_classes=num_classes, input_size=x_test.shape[-1]
    ).to(device)
    check_model_fits(model, x_test[:PROBE_IMAGES].to(device), name=config.model)
    if config.channels_last and x_test.dim() == 4:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = _optimizer(config, model)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(config.schedule, total_steps)
    )
    schedule = checkpoint_steps(total_steps, config.checkpoints)
    forward = torch.compile(model) if config.compile else model

    step = 0
    if run_dir is not None and (done := runs.completed_checkpoints(run_dir)):
        step = done[-1]
        _restore(run_dir, step, model, optimizer, scheduler)
        log(f"resuming from step {step}")

    def evaluate(step: int, train_loss: float) -> tuple[dict, pd.DataFrame | None]:
        metrics = dict(
            step=step,
            epoch=step / steps_per_epoch,
            train_loss=train_loss,
            train_error=_error(model, train_set, TRAIN_EVAL_MAX, device),
            test_error=_error_tensors(model, x_test, y_test, device),
        )
        measured = run_dir is not None and config.measure
        return metrics, _measure_table(model, probe, config, measure, metrics) if measured else None

    def checkpoint(
        step: int, train_loss: float, evaluated: tuple[dict, pd.DataFrame | None] | None = None
    ) -> dict:
        metrics, table = evaluated or evaluate(step, train_loss)
        if run_dir is not None:
            _save_checkpoint(
                run_dir, config, measure, model, optimizer, scheduler, metrics, probe, table=table
            )
        log(
            f"step {step} (epoch {metrics['epoch']:.2f}): train error {metrics['train_error']:.4f}, test error {metrics['test_error']:.4f}"
        )
        return metrics

    # the first checkpoint's errors and measurement run before anything is written: a model or a
    # measurement that fails on this data leaves no config.json to block the corrected call
    first = (
        evaluate(0, math.nan)
        if step == 0 and (run_dir is None or 0 not in runs.completed_checkpoints(run_dir))
        else None
    )
    if run_dir is not None:
        _claim_run_dir(run_dir, config, measure)
        for stale in run_dir.rglob(".*.tmp"):  # half-written by a process killed mid-write
            stale.unlink(missing_ok=True)
    last = checkpoint(0, math.nan, first) if first is not None else None

    # ---- the loop -----------------------------------------------------------------------------
    bar = _progress_bar(progress, total_steps, step)
    running_loss, running_correct, running_seen = 0.0, 0, 0
    loop_seconds, images = 0.0, 0
    stopped = False
    with bar:
        while step < total_steps and not stopped:
            epoch = step // steps_per_epoch
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            order = torch.randperm(n_train, generator=_generator(config.seed, 1, epoch))
            model.train()
            tick = time.perf_counter()
            for batch in range(step % steps_per_epoch, steps_per_epoch):
                index = order[batch * config.batch_size : (batch + 1) * config.batch_size]
                x, y = _training_batch(config, train_set, index, step, device)
                logits = config.alpha * forward(x)
                loss = _loss(config.loss, logits, y) / config.alpha**2
                if not torch.isfinite(loss):
                    raise _diverged(float(loss.item()), step, epoch, run_dir)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                running_loss += loss.item() * y.shape[0]
                running_correct += int((logits.argmax(1) == y).sum())
                running_seen += y.shape[0]
                bar.update(step, running_loss / running_seen, running_correct / running_seen)
                images += y.shape[0]
                if step in schedule:  # train_loss: mean over the steps since the last checkpoint
                    loop_seconds += time.perf_counter() - tick
                    last = checkpoint(step, running_loss / running_seen)
                    running_loss, running_correct, running_seen = 0.0, 0, 0
                    model.train()
                    tick = time.perf_counter()
            loop_seconds += time.perf_counter() - tick
            if config.stop_at_zero_error and _error(model, train_set, None, device) == 0.0:
                stopped = True
                if last is None or last["step"] != step:
                    last = checkpoint(step, math.nan)
    if last is None or last["step"] != step:  # resumed at the final checkpoint
        last = (
            runs.read_json(runs.checkpoint_path(run_dir, step, ".json"))
            if run_dir
            else checkpoint(step, math.nan)
        )

    summary = dict(
        steps=step,
        epochs=step / steps_per_epoch,
        train_error=last["train_error"],
        test_error=last["test_error"],
        seconds=time.perf_counter() - start_time,
    )
    table = None
    if run_dir is not None:
        table = _collect_tables(run_dir) if config.measure else None
        if table is not None:
            runs.write_table(table, run_dir / "table.parquet")
        runs.write_json(
            run_dir / "done.json", {**summary, "checkpoints": runs.completed_checkpoints(run_dir)}
        )
    elif config.measure:
        table = _measure_table(model, probe, config, measure, last)
    return RunSummary(
        run_dir,
        checkpoints=runs.completed_checkpoints(run_dir) if run_dir else [step],
        table=table,
        loop_seconds=loop_seconds,
        images=images,
        **summary,
    )


# ---- helpers (set-up) -------------------------------------------------------------------------


def _check_run_dir(run_dir: Path, config: TrainConfig, measure: MeasureConfig) -> bool:
    """Whether ``run_dir`` holds this run's ``config.json`` already; writes nothing.

    Raises:
        DiffeoProbeError: it holds another configuration's.
    """
    path = run_dir / "config.json"
    if not path.is_file():
        return False
    wanted = {"train": to_dict(config), "measure": to_dict(measure)}
    if runs.read_json(path).get("config") != _jsonable(wanted):
        raise DiffeoProbeError(
            f"out: {str(run_dir)!r} holds a run with another configuration; choose another directory"
        )
    return True


def _claim_run_dir(run_dir: Path, config: TrainConfig, measure: MeasureConfig) -> None:
    """Write ``config.json`` (call it once the run's settings are known to work), or check it."""
    if not _check_run_dir(run_dir, config, measure):
        wanted = {"train": to_dict(config), "measure": to_dict(measure)}
        runs.write_json(run_dir / "config.json", {"config": wanted, "versions": runs.versions()})


def _jsonable(value: object) -> object:
    import json

    return json.loads(json.dumps(value, default=str))


def _finished(run_dir: Path) -> RunSummary:
    done = runs.read_json(run_dir / "done.json")
    table_path = run_dir / "table.parquet"
    table = runs.read_table(table_path) if table_path.is_file() else None
    return RunSummary(
        run_dir,
        done["steps"],
        done["epochs"],
        done["train_error"],
        done["test_error"],
        done["seconds"],
        done["checkpoints"],
        table,
    )


def _load_data(config: TrainConfig) -> tuple[Dataset, Dataset]:
    from diffeoprobe import data as datasets

    common = dict(data_dir=config.data_dir, seed=config.seed, **config.dataset_options)
    train_set = datasets.build(config.dataset, split="train", **common)
    test_set = datasets.build(config.dataset, split="test", **common)
    for split, part in (("train", train_set), ("test", test_set)):
        if size(part) == 0:
            raise DiffeoProbeError(
                f"dataset {config.dataset!r}: its {split} split is empty; training needs images "
                "in both splits"
            )
    if config.train_size is not None:
        if config.train_size > size(train_set):
            raise DiffeoProbeError(
                f"train_size must be <= {size(train_set)} (the size of the training set), got {config.train_size}"
            )
        subset = torch.randperm(size(train_set), generator=_generator(config.seed, 0, 0))[
            : config.train_size
        ]
        train_set = _subset(train_set, subset)
    return train_set, test_set


def _subset(dataset: Dataset, index: torch.Tensor) -> Dataset:
    from diffeoprobe.data.noisy import NoisyDataset

    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[index] for t in dataset.tensors))
    if isinstance(dataset, NoisyDataset):  # keep set_epoch reachable: fresh noise per epoch
        inner = _subset(dataset.dataset, index)
        return NoisyDataset(inner, dataset.noise_norm, mode=dataset.mode, seed=dataset.seed)
    return torch.utils.data.Subset(dataset, index.tolist())


def _build_model(
    config: TrainConfig, *, in_channels: int, num_classes: int, input_size: int
) -> nn.Module:
    from diffeoprobe.models import build

    return build(
        config.model, in_channels, num_classes, input_size=input_size, **dict(config.model_options)
    )


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _schedule(name: str, total_steps: int) -> Callable[[int], float]:
    if name == "constant":
        return lambda step: 1.0
    return lambda step: (
        0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    )


def _generator(seed: int, stream: int, index: int) -> torch.Generator:
    """An independent generator per (seed, purpose, epoch or step): resumable data order."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def _loss(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "cross-entropy":
        return F.cross_entropy(logits, y)
    if logits.shape[1] == 2:  # binary hinge on the margin f = logit_1 - logit_0, labels +-1
        margin = (logits[:, 1] - logits[:, 0]) * (2 * y - 1)
        return F.relu(1 - margin).mean()
    return F.multi_margin_loss(logits, y)


@torch.no_grad()
def _error_tensors(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> float:
    was_training = model.training
    model.eval()
    wrong = 0
    for i in range(0, x.shape[0], EVAL_BATCH):
        logits = model(x[i : i + EVAL_BATCH].to(device))
        wrong += int((logits.argmax(1).cpu() != y[i : i + EVAL_BATCH]).sum())
    model.train(was_training)
    return wrong / max(x.shape[0], 1)


def _error(model: nn.Module, dataset: Dataset, limit: int | None, device: torch.device) -> float:
    x, y = head(dataset, limit)
    return _error_tensors(model, x, y, device)


def _save_checkpoint(
    run_dir: Path,
    config: TrainConfig,
    measure: MeasureConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    metrics: dict,
    probe: torch.Tensor | None,
    *,
    table: pd.DataFrame | None = None,
) -> None:
    """Weights, resume state, measurement (``table`` when measured already) and metadata of
    ``metrics["step"]``; the metadata last, as the mark of a complete checkpoint.
    """
    step = metrics["step"]
    runs.save_weights(model, runs.checkpoint_path(run_dir, step, ".safetensors"))
    runs.save_training_state(
        runs.checkpoint_path(run_dir, step, ".resume.pt"),
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        },
    )
    if config.measure:
        if table is None:
            table = _measure_table(model, probe, config, measure, metrics)
        runs.write_table(table, run_dir / "measure" / f"step_{step:08d}.parquet")
    runs.write_json(
        runs.checkpoint_path(run_dir, step, ".json"),
        {**metrics, "config": to_dict(config), "versions": runs.versions()},
    )
    for older in (run_dir / "checkpoints").glob("step_*.resume.pt"):  # keep only the newest state
        if older.name != runs.checkpoint_path(run_dir, step, ".resume.pt").name:
            older.unlink(missing_ok=True)


def _restore(run_dir: Path, step: int, model: nn.Module, optimizer, scheduler) -> None:
    runs.load_weights(model, runs.checkpoint_path(run_dir, step, ".safetensors"))
    state = runs.load_training_state(runs.checkpoint_path(run_dir, step, ".resume.pt"))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])


def _measure_table(
    model: nn.Module,
    probe: torch.Tensor | None,
    config: TrainConfig,
    measure: MeasureConfig,
    metrics: dict,
) -> pd.DataFrame:
    from diffeoprobe.measurement import measure as run_measure

    if probe is None:
        raise ValueError("a measured run needs its probe images")

    arguments = measure_arguments(
        measure, dataset=config.dataset, dataset_options=config.dataset_options
    )
    table = run_measure(model, probe, **arguments, seed=config.seed)
    for key in ("step", "epoch", "train_error", "test_error"):
        table.insert(0, key, metrics[key])
    table.insert(0, "seed", config.seed)
    table.insert(0, "dataset", config.dataset)
    table.insert(0, "model", config.model)
    return table


def _collect_tables(run_dir: Path) -> pd.DataFrame:
    parts = [runs.read_table(p) for p in sorted((run_dir / "measure").glob("step_*.parquet"))]
    return pd.concat(parts, ignore_index=True) if parts else None


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, step: int, loss: float, accuracy: float) -> None:
        return None


class _RichBar(_NoBar):
    def __init__(self, total: int, start: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}"),
        )
        self._task = self._progress.add_task(
            "train", total=total, completed=start, loss=math.nan, acc=math.nan
        )

    def __enter__(self) -> _RichBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, step: int, loss: float, accuracy: float) -> None:
        self._progress.update(self._task, completed=step, loss=loss, acc=accuracy)


def _progress_bar(show: bool, total: int, start: int) -> _NoBar:
    return _RichBar(total, start) if show else _NoBar()
