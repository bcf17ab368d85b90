"""Train the seeds of one configuration together, as one batched model.

:func:`train_together` takes N :class:`~diffeoprobe.config.TrainConfig` that differ only in
``seed`` and trains them as one model whose parameters carry a leading member axis: the members'
weights are stacked (``torch.func.stack_module_state``, every tensor ``(N, *shape)``), one forward
pass ``torch.func.vmap(functional_call(model, ...))`` maps a batch ``(N, B, *sample)`` to logits
``(N, B, classes)``, and autograd on the sum of the N member losses gives every member its own
gradient (the members share no parameter, so the sum separates). Plain autograd on the summed
loss measured faster than ``vmap(torch.func.grad(...))`` on CPU (a prototype with scalecnn1d,
width 64, 8 members, batch 8: 9.5 ms against 13 ms a step, on a loaded 2-core machine).

Everything else stays per member and is what :func:`~diffeoprobe.training.train` does alone: the
initialisation (``torch.manual_seed(seed)``, then build), the data set (built with
``seed=config.seed``), the training subset, the order of every epoch, the checkpoints (weights,
metadata, optimiser/scheduler/RNG state, measurement table, each written from the member's own
``nn.Module`` loaded with its slice of the stacked weights) and the stop at zero training error:
a member that stops is checkpointed at that step as ``train`` does, finished (``table.parquet``,
``done.json``) and taken out of the stacked model, so it gets no further update while the others
go on. Each member's run directory is the one ``train(config, out, measure=measure)`` writes:
same files, names and metadata keys, and it can be resumed or read by everything that reads
``train``'s directories. The errors (at checkpoints, and the zero-error test after each epoch) are
counted by the stacked model in eval mode, all members in one pass.

Equality with training alone (tests/test_ensemble.py, CPU): weights bit-identical with the hinge
loss as long as the number of members in the stack stays the same, although nothing guarantees
it: the batched forward and backward are other kernels (batched matrix products instead of one
convolution per member). Cross-entropy, averaged under vmap, differs by rounding in the loss, and
once members stop, the products of the rest have fewer rows and may round differently; training
then carries the difference along (1.2e-7 absolute after 64 steps with cross-entropy; 2.6e-5 of the
largest weight after 200 steps at lr 1.6 with momentum). The tests assert 1e-5 of the largest
weight (1e-3 in the stopping test) and equal errors, epochs and checkpoints.

Convolutions ``conv1d`` with stride equal to the kernel size (non-overlapping windows, as in
scalecnn1d) are computed inside the vmap as a reshape and a matrix product on CPU
(:class:`_WindowConv1d`): vmap's own rule for a convolution with batched weights is a grouped
convolution, about twice as slow there. Other layers use vmap's own batching rules.

SGD is applied to the stacked tensors exactly as ``torch.optim.SGD`` does (weight decay added to
the gradient, momentum buffer ``b <- m b + g`` started at the first gradient, ``p <- p - lr b``);
the learning rate of step ``t`` is ``lr * schedule(t)`` as ``LambdaLR`` computes it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.overrides import TorchFunctionMode
from torch.utils.data import Dataset, TensorDataset

from diffeoprobe import runs
from diffeoprobe.config import MeasureConfig, TrainConfig, to_dict
from diffeoprobe.data.tensors import head, labels, take
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.measurement.fit import PROBE_IMAGES, check_model_fits
from diffeoprobe.training import (
    EVAL_BATCH,
    TRAIN_EVAL_MAX,
    RunSummary,
    TrainingDiverged,
    _build_model,
    _claim_run_dir,
    _collect_tables,
    _error,
    _error_tensors,
    _finished,
    _generator,
    _load_data,
    _loss,
    _optimizer,
    _run_lock,
    _save_checkpoint,
    _schedule,
    check_config,
    checkpoint_steps,
    train,
)

__all__ = ["batchable", "train_together"]


def batchable(configs: Sequence[TrainConfig]) -> str | None:
    """Why ``configs`` cannot be trained together by :func:`train_together`, or ``None`` if they can.

    They can when every field but ``seed`` is equal, the optimiser is ``"sgd"``, there is no
    augmentation and no ``compile``, and the model's training forward pass neither updates a
    buffer (BatchNorm's running statistics) nor draws random numbers (dropout). The model check
    builds the first config's model on its data (so it loads that data set).

    Returns:
        ``None``, or one line naming the field (``"optimizer: ..."``, ``"lr: ..."``,
        ``"model: ..."``) that stands in the way.
    """
    problem = _config_problem(configs)
    if problem is not None:
        return problem
    try:
        check_config(configs[0])
        with torch.random.fork_rng(devices=[]):  # no side effect on the caller's RNG
            member = _Member.prepare(configs[0], "", MeasureConfig())
    except DiffeoProbeError as exc:
        return str(exc)
    return _model_problem(member)


def train_together(
    configs: Sequence[TrainConfig],
    outs: Sequence[str | Path],
    *,
    measure: MeasureConfig | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> list[RunSummary]:
    """Train configs that differ only in ``seed`` as one batched model; one run directory each.

    Each ``outs[i]`` ends up as ``train(configs[i], outs[i], measure=measure)`` would leave it
    (equal up to float rounding, see the module's docstring), and the summaries come back in the
    order of ``configs``. Members whose directory holds ``done.json`` are skipped (their summary is
    read back). Resuming: when the other members' last complete checkpoints are all at step 0 (or
    there is none), they start together from their initialisation; when any of them got further,
    every unfinished member is resumed alone by :func:`~diffeoprobe.training.train`, one after the
    other (the members are no longer at the same step, so they cannot share batched steps).

    Args:
        configs: N training configs, equal in every field but ``seed`` (see :func:`batchable`).
        outs: N distinct run directories, one per config.
        measure: settings of the measurement at every checkpoint (with ``config.measure``).
        log: called with one line per member and checkpoint.

    Returns:
        One :class:`~diffeoprobe.training.RunSummary` per config. ``seconds`` counts from the start of
        this call to the member's end; ``loop_seconds`` is the time of the batched training steps
        the member took part in (shared with the others, not divided among them); ``images`` are
        the member's own training images.

    Raises:
        DiffeoProbeError: the configs cannot be trained together (the reason of :func:`batchable`),
            a bad config, ``outs`` of another length or repeated, a run directory holding another
            config, or members whose training sets differ in size. All before any training.
            Also a run directory another process is training in: each unfinished member's run
            lock, the one :func:`~diffeoprobe.training.train` takes, is held from before the first
            write to the end of the call.
        TrainingDiverged: the loss of some members became NaN/inf; the others were trained to the
            end and finished first, the diverged ones keep their last good checkpoint.
    """
    for name, value in (("configs", configs), ("outs", outs)):
        if isinstance(value, (str, bytes, Path)) or not isinstance(value, Sequence):
            raise DiffeoProbeError(f"{name} must be a list, got {type(value).__name__}")
    if not all(isinstance(c, TrainConfig) for c in configs):
        raise DiffeoProbeError("configs must hold TrainConfig objects only")
    configs, dirs = list(configs), [Path(o) for o in outs]
    problem = _config_problem(configs)
    if problem is not None:
        raise DiffeoProbeError(problem)
    if len(dirs) != len(configs):
        raise DiffeoProbeError(
            f"outs: one run directory per config is needed, got {len(dirs)} for {len(configs)} configs"
        )
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise DiffeoProbeError("outs: the run directories must be distinct")
    measure = measure or MeasureConfig()
    for config in configs:
        check_config(config, measure)
    start = time.perf_counter()
    with contextlib.ExitStack() as locks:  # released when the call ends, however it ends
        return _train_locked(configs, dirs, measure, log, start, locks)


def _train_locked(
    configs: list[TrainConfig],
    outs: list[Path],
    measure: MeasureConfig,
    log: Callable[[str], None],
    start: float,
    locks: contextlib.ExitStack,
) -> list[RunSummary]:
    """The body of :func:`train_together` (the configs checked): plans from what the directories
    hold, then takes each unfinished member's run lock (into ``locks``) before its first write.
    """
    # a directory of another config is refused before anything is written
    for config, out in zip(configs, outs, strict=True):
        if (out / "config.json").is_file():
            _claim_run_dir(out, config, measure)
    planned = _progress(outs)  # what the plan below is made from
    pending = [i for i, out in enumerate(outs) if not (out / "done.json").is_file()]
    if not pending:
        return [_finished(out) for out in outs]
    fresh = all(not (done := runs.completed_checkpoints(outs[i])) or done[-1] == 0 for i in pending)
    members = [
        _Member.prepare(configs[i], outs[i], measure) for i in (pending if fresh else pending[:1])
    ]
    problem = _model_problem(members[0]) or _data_problem(members)
    if problem is not None:
        raise DiffeoProbeError(problem)
    _lock_and_claim(configs, outs, measure, pending, planned, locks)

    summaries: dict[int, RunSummary] = {}
    if fresh:
        diverged = _Together(members, log, start).run()
        for i, member in zip(pending, members, strict=True):
            if member.summary is not None:
                summaries[i] = member.summary
        if diverged:
            raise TrainingDiverged("; ".join(diverged))
    else:
        log("members resumed past step 0: each is resumed alone with train()")
        for i in pending:
            summaries[i] = train(configs[i], outs[i], measure=measure, log=log)
    return [summaries[i] if i in summaries else _finished(outs[i]) for i in range(len(configs))]


def _lock_and_claim(
    configs: list[TrainConfig],
    outs: list[Path],
    measure: MeasureConfig,
    pending: list[int],
    planned: list[tuple[bool, list[int]]],
    locks: contextlib.ExitStack,
) -> None:
    """Take the run locks of the ``pending`` members (into ``locks``), check that no other process
    trained since the plan was made from ``planned``, then claim their directories.
    """
    for i in pending:  # the lock train() takes; one this thread holds (a seed group's) is reused
        locks.enter_context(_run_lock(outs[i]))
    if _progress(outs) != planned:
        raise DiffeoProbeError(
            "outs: another process trained in "
            + ", ".join(repr(str(outs[i])) for i in pending)
            + " while this call prepared; nothing was written, run it again"
        )
    for i in pending:
        _claim_run_dir(outs[i], configs[i], measure)
        for stale in outs[i].rglob(".*.tmp"):  # half-written by a process killed mid-write
            stale.unlink(missing_ok=True)


def _progress(outs: Sequence[Path]) -> list[tuple[bool, list[int]]]:
    """Whether each run is done, and its complete checkpoints: what the plan was made from."""
    return [((out / "done.json").is_file(), runs.completed_checkpoints(out)) for out in outs]


# ---- checks ---------------------------------------------------------------------------------


def _config_problem(configs: Sequence[TrainConfig]) -> str | None:
    if len(configs) == 0:
        return "configs: at least one config is needed"
    first = to_dict(configs[0])
    for config in configs[1:]:
        other = to_dict(config)
        for key, value in first.items():
            if key != "seed" and other[key] != value:
                return (
                    f"{key}: differs between the configs ({value!r} vs {other[key]!r}); only seed "
                    "may differ to train them together"
                )
    config = configs[0]
    if config.optimizer != "sgd":
        return f"optimizer: {config.optimizer!r} cannot be trained together (only 'sgd')"
    if config.augment:
        return "augment: random augmentation cannot be trained together"
    if config.compile:
        return "compile: torch.compile cannot be trained together"
    return None


def _model_problem(member: _Member) -> str | None:
    """A training forward pass that updates buffers or draws random numbers cannot be batched."""
    model, x = member.model, member.x_test[:2].to(member.device)
    before = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        first, second = model(x), model(x)
    changed = [name for name, b in model.named_buffers() if not torch.equal(b, before[name])]
    with torch.no_grad():  # put the buffers back (the model is trained next)
        for name, b in model.named_buffers():
            b.copy_(before[name])
    model.train(was_training)
    name = member.config.model
    if changed:
        return (
            f"model: {name!r} updates buffers in its training forward pass ({', '.join(changed)}; "
            "BatchNorm running statistics?), which cannot be trained together"
        )
    if not torch.equal(first, second):
        return (
            f"model: {name!r} is random in its training forward pass (dropout?), which cannot be "
            "trained together"
        )
    return None


def _data_problem(members: Sequence[_Member]) -> str | None:
    """Members step together, so their training sets must have one size (and one class count)."""
    sizes = sorted({len(cast(Sized, m.train_set)) for m in members})  # all ours have a length
    classes = sorted({m.num_classes for m in members})
    if len(sizes) > 1 or len(classes) > 1:
        return (
            f"train_size: the members' training sets differ in size {sizes} or number of classes "
            f"{classes}; train them one by one with train()"
        )
    return None


# ---- one member -----------------------------------------------------------------------------


@dataclass
class _Member:
    """One config's data, model, optimiser and checkpoint state, set up as ``train`` does."""

    config: TrainConfig
    run_dir: Path
    measure: MeasureConfig
    train_set: Dataset
    x_test: torch.Tensor  # (test points, *sample)
    y_test: torch.Tensor  # (test points,) int64
    num_classes: int
    probe: torch.Tensor | None
    model: nn.Module
    device: torch.device
    rng: torch.Tensor  # the global CPU RNG state this member's solo run would have now
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    last: dict | None = None  # metrics of the newest checkpoint
    images: int = 0
    summary: RunSummary | None = None
    diverged: str | None = None
    checkpointed: list[int] = field(default_factory=list)

    @classmethod
    def prepare(cls, config: TrainConfig, run_dir: str | Path, measure: MeasureConfig) -> _Member:
        """Data, then ``torch.manual_seed(seed)`` and the model: the set-up of ``train``."""
        device = torch.device(config.device)
        train_set, test_set = _load_data(config)
        x_test, y_test = head(test_set, config.test_size)
        num_classes = int(max(labels(train_set).max(), y_test.max())) + 1
        probe = x_test[: measure.probe_size] if config.measure else None
        torch.manual_seed(config.seed)
        model = _build_model(
            config,
            in_channels=x_test.shape[1],
            num_classes=num_classes,
            input_size=x_test.shape[-1],
        ).to(device)
        check_model_fits(model, x_test[:PROBE_IMAGES].to(device), name=config.model)
        if config.channels_last and x_test.dim() == 4:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        rng = torch.get_rng_state()
        return cls(
            config,
            Path(run_dir),
            measure,
            train_set,
            x_test,
            y_test,
            num_classes,
            probe,
            model,
            device,
            rng,
        )

    def schedule_optimizer(self, total_steps: int) -> None:
        self.optimizer = _optimizer(self.config, self.model)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(self.config.schedule, total_steps)
        )

    def load(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], row: int
    ) -> None:
        """Copy this member's slice ``row`` of the stacked tensors into its own model."""
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(params[name][row])
            for name, b in self.model.named_buffers():
                b.copy_(buffers[name][row])

    def checkpoint(
        self,
        step: int,
        steps_per_epoch: int,
        train_loss: float,
        errors: tuple[float, float],
        lr: float,
        momentum: dict[str, torch.Tensor],
        row: int,
        log: Callable[[str], None],
    ) -> None:
        """``train``'s checkpoint files, with the errors ``(train, test)`` given (weights loaded).

        The optimiser and scheduler are brought to the state ``train``'s would have after ``step``
        steps (learning rate ``lr``, momentum buffers ``momentum[name][row]``), and the global RNG
        to this member's, so ``.resume.pt`` holds what a solo run saves.
        """
        optimizer, scheduler = self.optimizer, self.scheduler
        if optimizer is None or scheduler is None:
            raise RuntimeError("checkpoint() before schedule_optimizer()")
        for name, p in self.model.named_parameters():
            if name in momentum:
                optimizer.state[p]["momentum_buffer"] = momentum[name][row].clone()
        for group in optimizer.param_groups:
            group["lr"] = lr
        state = scheduler.state_dict()
        state.update(last_epoch=step, _step_count=step + 1, _last_lr=[lr])
        scheduler.load_state_dict(state)
        torch.set_rng_state(self.rng)
        metrics = dict(
            step=step,
            epoch=step / steps_per_epoch,
            train_loss=train_loss,
            train_error=errors[0],
            test_error=errors[1],
        )
        _save_checkpoint(
            self.run_dir,
            self.config,
            self.measure,
            self.model,
            optimizer,
            scheduler,
            metrics,
            self.probe,
        )
        self.rng = torch.get_rng_state()
        self.last = metrics
        log(
            f"seed {self.config.seed}: step {step} (epoch {metrics['epoch']:.2f}): train error "
            f"{metrics['train_error']:.4f}, test error {metrics['test_error']:.4f}"
        )

    def finish(self, step: int, steps_per_epoch: int, start: float, loop_seconds: float) -> None:
        """``table.parquet`` and ``done.json``, as at the end of ``train``."""
        if self.last is None or self.last["step"] != step:
            self.last = runs.read_json(runs.checkpoint_path(self.run_dir, step, ".json"))
        summary = dict(
            steps=step,
            epochs=step / steps_per_epoch,
            train_error=self.last["train_error"],
            test_error=self.last["test_error"],
            seconds=time.perf_counter() - start,
        )
        table = _collect_tables(self.run_dir) if self.config.measure else None
        if table is not None:
            runs.write_table(table, self.run_dir / "table.parquet")
        checkpoints = runs.completed_checkpoints(self.run_dir)
        runs.write_json(self.run_dir / "done.json", {**summary, "checkpoints": checkpoints})
        self.summary = RunSummary(
            self.run_dir,
            checkpoints=checkpoints,
            table=table,
            loop_seconds=loop_seconds,
            images=self.images,
            **summary,
        )


# ---- the batched loop -----------------------------------------------------------------------


class _Together:
    """The members' stacked state and the loop over batched steps (all members at one step)."""

    def __init__(self, members: list[_Member], log: Callable[[str], None], start: float) -> None:
        self.members, self.log, self.start = members, log, start
        config = members[0].config
        self.config, self.device = config, members[0].device
        self.n_train = len(cast(Sized, members[0].train_set))
        self.steps_per_epoch = math.ceil(self.n_train / config.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.schedule = set(checkpoint_steps(self.total_steps, config.checkpoints))
        self.lr_factor = _schedule(config.schedule, self.total_steps)
        for member in members:
            member.schedule_optimizer(self.total_steps)

        # stacked state, one row per active member: params and buffers (N, *shape)
        self.active = list(range(len(members)))
        params, buffers = stack_module_state([m.model for m in members])
        self.params = {k: v.detach().requires_grad_() for k, v in params.items()}
        self.buffers = {k: v.detach() for k, v in buffers.items()}
        self.momentum: dict[str, torch.Tensor] = {}
        self.base = copy.deepcopy(members[0].model).to("meta")
        self.running_loss = torch.zeros(len(members), dtype=torch.float64)
        self.running_seen = 0
        # training sets as tensors (N, n, *sample) when they are fixed tensors, else read per batch
        fixed = [
            m.train_set
            for m in members
            if isinstance(m.train_set, TensorDataset) and not hasattr(m.train_set, "set_epoch")
        ]
        self.tensors = len(fixed) == len(members)
        if self.tensors:
            self.x = torch.stack([s.tensors[0] for s in fixed]).to(self.device)
            self.y = torch.stack([s.tensors[1] for s in fixed]).to(self.device)
        self.x_test = self.y_test = None
        if len({tuple(m.x_test.shape) for m in members}) == 1:
            self.x_test = torch.stack([m.x_test for m in members])
            self.y_test = torch.stack([m.y_test for m in members])
        self.patch = _WindowConv1d() if self.device.type == "cpu" else None

    # -- stacked forward and update --

    def _forward(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        """One member's logits ``(B, classes)`` for its batch ``x`` ``(B, *sample)`` (vmapped)."""
        if self.patch is None:
            return functional_call(self.base, (params, buffers), (x,))
        with self.patch:
            return functional_call(self.base, (params, buffers), (x,))

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean losses ``(A,)`` of the batches ``x`` ``(A, B, *sample)``, ``y`` ``(A, B)``."""
        config = self.config
        logits = config.alpha * vmap(self._forward)(self.params, self.buffers, x)
        if config.loss == "hinge" and logits.shape[-1] > 2:  # multi_margin_loss has no vmap rule
            losses = torch.stack([_loss(config.loss, z, t) for z, t in zip(logits, y, strict=True)])
        else:
            losses = vmap(lambda z, t: _loss(config.loss, z, t))(logits, y)
        return losses / config.alpha**2

    @torch.no_grad()
    def follow_layout(self, grads: dict[str, torch.Tensor | None]) -> None:
        """Store each parameter (and momentum buffer) in the memory layout of its gradient.

        The gradients of the window convolutions come out permuted (``(N, C_out, C, K)`` laid
        out as ``(N, K, C, C_out)``); an update ``p += g`` across two layouts is a strided gather,
        three times slower than in one layout, and the forward pass's ``(K * C, C_out)`` view of
        the weight is then free. Only acts when a layout differs (first step, after ``keep``).
        """
        for name, grad in grads.items():
            p = self.params[name]
            if grad is None or grad.stride() == p.stride():
                continue
            self.params[name] = torch.empty_like(grad).copy_(p).requires_grad_()
            if name in self.momentum:
                self.momentum[name] = torch.empty_like(grad).copy_(self.momentum[name])

    @torch.no_grad()
    def sgd(self, grads: dict[str, torch.Tensor | None], lr: float) -> None:
        """``torch.optim.SGD.step`` (dampening 0, no Nesterov) on the stacked parameters."""
        momentum, weight_decay = self.config.momentum, self.config.weight_decay
        for name, p in self.params.items():
            grad = grads[name]
            if grad is None:  # as SGD: a parameter without gradient is not touched
                continue
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            if momentum != 0:
                buf = self.momentum.get(name)
                if buf is None:
                    buf = self.momentum[name] = torch.clone(grad).detach()
                else:
                    buf.mul_(momentum).add_(grad)
                grad = buf
            p.add_(grad, alpha=-lr)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (positions in ``self.active``) of every stacked tensor."""
        index = torch.as_tensor(rows, dtype=torch.long)
        on = index.to(self.device)
        self.params = {k: v.detach()[on].requires_grad_() for k, v in self.params.items()}
        self.buffers = {k: v[on] for k, v in self.buffers.items()}
        self.momentum = {k: v[on] for k, v in self.momentum.items()}
        self.running_loss = self.running_loss[index]
        if self.tensors:
            self.x, self.y = self.x[on], self.y[on]
        if self.x_test is not None and self.y_test is not None:
            self.x_test, self.y_test = self.x_test[index], self.y_test[index]
        self.active = [self.active[r] for r in rows]

    def batch(self, order: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The active members' batches ``(A, B, *sample)``, ``(A, B)`` at position ``batch``."""
        size = self.config.batch_size
        index = order[:, batch * size : (batch + 1) * size]  # (A, B)
        if self.tensors:
            index = index.to(self.device)
            rows = torch.arange(len(self.active), device=self.device)[:, None]
            return self.x[rows, index], self.y[rows, index]
        parts = [
            take(self.members[i].train_set, row) for i, row in zip(self.active, index, strict=True)
        ]
        x = torch.stack([p[0] for p in parts]).to(self.device)
        return x, torch.stack([p[1] for p in parts]).to(self.device)

    # -- the loop --

    def checkpoint_all(self, step: int, losses: list[float]) -> None:
        lr = self.config.lr * self.lr_factor(step)
        errors = list(zip(self.train_errors(TRAIN_EVAL_MAX), self.test_errors(), strict=True))
        for row, i in enumerate(self.active):
            member = self.members[i]
            member.load(self.params, self.buffers, row)
            if step in member.checkpointed:
                continue
            member.checkpoint(
                step,
                self.steps_per_epoch,
                losses[row],
                errors[row],
                lr,
                self.momentum,
                row,
                self.log,
            )

    # -- errors of all active members at once --

    @torch.no_grad()
    def errors(self, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Fraction misclassified per active member: ``x`` ``(A, n, *sample)``, ``y`` ``(A, n)``.

        The stacked model in eval mode, at most ``EVAL_BATCH`` images per forward pass in all (as
        ``train``'s evaluation, so no more memory). Equal to ``train``'s count unless a logit
        margin is within float rounding.
        """
        n = x.shape[1]
        chunk = max(1, EVAL_BATCH // x.shape[0])
        wrong = torch.zeros(x.shape[0], dtype=torch.long)
        self.base.eval()
        try:
            for i in range(0, n, chunk):
                part = x[:, i : i + chunk].to(self.device)
                logits = vmap(self._forward)(self.params, self.buffers, part)
                wrong += (logits.argmax(-1).cpu() != y[:, i : i + chunk].cpu()).sum(1)
        finally:
            self.base.train()
        return [w / max(n, 1) for w in wrong.tolist()]

    def train_errors(self, limit: int | None) -> list[float]:
        """Training error of every active member on its first ``limit`` points (all: ``None``)."""
        if self.tensors:
            n = self.n_train if limit is None else min(limit, self.n_train)
            return self.errors(self.x[:, :n], self.y[:, :n])
        result = []
        for row, i in enumerate(self.active):
            member = self.members[i]
            member.load(self.params, self.buffers, row)
            result.append(_error(member.model, member.train_set, limit, member.device))
        return result

    def test_errors(self) -> list[float]:
        """Test error of every active member."""
        if self.x_test is not None and self.y_test is not None:
            return self.errors(self.x_test, self.y_test)
        result = []
        for row, i in enumerate(self.active):
            member = self.members[i]
            member.load(self.params, self.buffers, row)
            result.append(_error_tensors(member.model, member.x_test, member.y_test, member.device))
        return result

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Start ``epoch`` for the active members; their shuffles of the training set ``(A, n)``."""
        for i in self.active:
            train_set = self.members[i].train_set
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
        return torch.stack(
            [
                torch.randperm(
                    self.n_train, generator=_generator(self.members[i].config.seed, 1, epoch)
                )
                for i in self.active
            ]
        )

    def run(self) -> list[str]:
        """Train every member to its end; return the messages of the members that diverged."""
        config, members = self.config, self.members
        for member in members:  # a complete checkpoint 0 is kept, as train() keeps it
            if 0 in runs.completed_checkpoints(member.run_dir):
                member.checkpointed.append(0)
        self.checkpoint_all(0, [math.nan] * len(members))
        step, loop_seconds, diverged = 0, 0.0, []
        while step < self.total_steps and self.active:
            epoch = step // self.steps_per_epoch
            order = self.epoch_order(epoch)
            tick = time.perf_counter()
            for batch in range(step % self.steps_per_epoch, self.steps_per_epoch):
                x, y = self.batch(order, batch)
                losses = self.losses(x, y)
                names = list(self.params)
                finite = torch.isfinite(losses.detach())
                grads: Sequence[torch.Tensor | None]
                if bool(finite.all()):
                    grads = torch.autograd.grad(
                        losses.sum(), [self.params[k] for k in names], allow_unused=True
                    )
                else:  # gradients of the others first, then the diverged rows go
                    values, losses = losses.detach(), losses[finite]
                    grads = torch.autograd.grad(
                        losses.sum(), [self.params[k] for k in names], allow_unused=True
                    )
                    grads = [g if g is None else g[finite] for g in grads]
                    diverged += self.diverge(finite, values, step, epoch)
                    order = order[finite.cpu()]
                    if not self.active:
                        break
                by_name = dict(zip(names, grads, strict=True))
                self.follow_layout(by_name)
                self.sgd(by_name, config.lr * self.lr_factor(step))
                step += 1
                self.running_loss += losses.detach().double().cpu() * y.shape[1]
                self.running_seen += y.shape[1]
                for i in self.active:
                    members[i].images += y.shape[1]
                if step in self.schedule:  # train_loss: mean over the steps since the last one
                    loop_seconds += time.perf_counter() - tick
                    self.checkpoint_all(step, (self.running_loss / self.running_seen).tolist())
                    self.running_loss.zero_()
                    self.running_seen = 0
                    tick = time.perf_counter()
            loop_seconds += time.perf_counter() - tick
            if config.stop_at_zero_error and self.active:
                self.stop_finished(step, loop_seconds)
        for row, i in enumerate(self.active):  # the members that ran all epochs
            members[i].load(self.params, self.buffers, row)
            members[i].finish(step, self.steps_per_epoch, self.start, loop_seconds)
        return diverged

    def stop_finished(self, step: int, loop_seconds: float) -> None:
        """After an epoch: finish and take out the members with zero training error."""
        stop = [e == 0.0 for e in self.train_errors(None)]
        if not any(stop):
            return
        test = self.test_errors()
        lr = self.config.lr * self.lr_factor(step)
        for row, i in enumerate(self.active):
            member = self.members[i]
            if not stop[row]:
                continue
            member.load(self.params, self.buffers, row)
            if member.last is None or member.last["step"] != step:
                errors = (0.0, test[row])  # zero on all points, so on the first TRAIN_EVAL_MAX
                member.checkpoint(
                    step, self.steps_per_epoch, math.nan, errors, lr, self.momentum, row, self.log
                )
            member.finish(step, self.steps_per_epoch, self.start, loop_seconds)
        self.keep([row for row in range(len(self.active)) if not stop[row]])

    def diverge(
        self, finite: torch.Tensor, losses: torch.Tensor, step: int, epoch: int
    ) -> list[str]:
        """Take out the members whose loss is not finite; their directories keep the last good
        checkpoint. Returns one message per member, as ``train``'s ``TrainingDiverged``.
        """
        messages = []
        for row, i in enumerate(self.active):
            if bool(finite[row]):
                continue
            member = self.members[i]
            kept = runs.completed_checkpoints(member.run_dir)
            member.diverged = (
                f"seed {member.config.seed}: the loss became {losses[row].item()} at step {step} "
                f"(epoch {epoch}); "
                + (
                    f"the last good checkpoint is step {kept[-1]} in {member.run_dir}; "
                    if kept
                    else ""
                )
                + "try a smaller lr"
            )
            messages.append(member.diverged)
            self.log(member.diverged)
        self.keep([row for row in range(len(self.active)) if bool(finite[row])])
        return messages


class _WindowConv1d(TorchFunctionMode):
    """Compute ``conv1d`` with stride == kernel size, no padding, dilation 1 and one group as a
    reshape and a matrix product.

    A signal ``(B, C, L)`` is cut into ``L // K`` windows ``(B, L // K, K, C)`` and multiplied by
    the weight ``(C_out, C, K)`` laid out ``(K * C, C_out)``; the result ``(B, C_out, L // K)`` is
    returned as a transposed view of ``(B, L // K, C_out)``, so that the next such convolution's
    windows are again a view. Under ``vmap`` with stacked weights this is one batched matrix
    product per layer, where vmap's own rule for ``conv1d`` is a grouped convolution (about twice
    as slow on CPU). Any other call goes to ``torch`` unchanged.
    """

    def __torch_function__(
        self,
        func: Callable,
        types: tuple[type, ...],
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> object:
        kwargs = kwargs or {}
        if func is F.conv1d:
            out = _window_conv1d(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def _window_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor | None:
    """``F.conv1d`` for non-overlapping windows (see :class:`_WindowConv1d`); ``None`` otherwise."""
    out_channels, channels, size = weight.shape
    stride = stride[0] if isinstance(stride, (tuple, list)) else stride
    dilation = dilation[0] if isinstance(dilation, (tuple, list)) else dilation
    no_padding = padding == "valid" or padding in (0, (0,), [0])
    if x.dim() != 3 or stride != size or not no_padding or dilation != 1 or groups != 1:
        return None
    windows = x.shape[-1] // size
    cols = x[..., : windows * size].unflatten(-1, (windows, size)).permute(0, 2, 3, 1)
    out = cols.reshape(x.shape[0] * windows, size * channels) @ weight.permute(2, 1, 0).reshape(
        size * channels, out_channels
    )
    out = out.view(x.shape[0], windows, out_channels)
    if bias is not None:
        out = out + bias
    return out.transpose(1, 2)
