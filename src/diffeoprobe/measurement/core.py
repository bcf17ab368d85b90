"""``measure``: D_k, G_k, R_k for every layer of any ``nn.Module`` (docs/science.md section 4)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from diffeoprobe.config import DIFFEOS, INTERPOLATIONS, NOISES
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.limits import check_memory
from diffeoprobe.measurement.capture import output_tensor, plan_capture, run_captured
from diffeoprobe.measurement.fit import check_model_fits
from diffeoprobe.measurement.stats import SensitivitySums
from diffeoprobe.perturb import deform, matched_noise, pixel_shift, temperature_for
from diffeoprobe.perturb.diffeo import deform_memory
from diffeoprobe.validate import (
    check_choice,
    check_cut,
    check_device,
    check_flag,
    check_int,
    check_positive,
    check_seed,
    check_signal,
    check_temperature,
)

__all__ = [
    "COLUMNS",
    "PERTURBATION_BLOCK",
    "REFERENCE_IMAGES",
    "Diffeo",
    "MeasureOptions",
    "Noise",
    "ProbeData",
    "measure",
]

if TYPE_CHECKING:
    from rich.progress import Progress

Diffeo = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``(x, generator) -> tau x``: a batch ``(B, C, ...)`` deformed, one independent draw per sample."""

Noise = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
"""``(x, tau x, generator) -> eta``: the noise added to ``x`` (not ``x + eta``)."""

ProbeData = torch.Tensor | Dataset[Any] | DataLoader[Any] | Iterable[Any]
"""Probe images: a tensor ``(P, C, ...)``, a Dataset of ``x`` or ``(x, label)`` items, or a
DataLoader / iterable of such batches."""


PERTURBATION_BLOCK = 256
"""Perturbations are drawn for fixed blocks of this many probe images, each block with its own
generator seeded from (seed, block index): results do not depend on ``batch_size`` or on how a
DataLoader batches the data."""

REFERENCE_IMAGES = 32
"""Images in the first forward pass, whose mean representation centres every layer's sums."""

COLUMNS = [
    "layer",
    "module",
    "depth",
    "rel_depth",
    "D",
    "G",
    "R",
    "D_se",
    "G_se",
    "R_se",
    "Z",
    "Z_se",
    "n",
    "features",
]


def measure(
    model: nn.Module,
    data: ProbeData,
    *,
    delta: float = 1.0,
    temperature: float | None = None,
    cut: int = 3,
    interp: str = "bilinear",
    diffeo: str | Diffeo = "max-entropy",
    noise: str | Noise = "matched",
    layers: Sequence[str] | None = None,
    batch_size: int = 256,
    draws: int = 1,
    channel_mean: bool = False,
    probe_size: int | None = None,
    capture: str = "auto",
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Relative sensitivity to diffeomorphisms versus noise, layer by layer.

    For every representation f_k (input, each layer, output) and probe images x_i:
    ``D_k = mean_i ||f_k(tau_i x_i) - f_k(x_i)||^2 / Z_k``, ``G_k`` the same with ``x_i + eta_i``,
    ``R_k = D_k / G_k``, ``Z_k`` the mean squared distance between the representations of two
    different clean images. The clean, deformed and noisy copies of a batch go through the model in
    ONE forward pass; each layer is reduced to float64 sums inside the pass (see
    :mod:`diffeoprobe.measurement.stats` for the error bars).

    Args:
        model: any ``nn.Module`` taking a batch ``(B, C, L)`` or ``(B, C, H, W)``. Measured in
            ``eval()`` mode (restored afterwards); moved to ``device`` when one is given.
        data: probe images: a tensor ``(P, C, ...)``, a Dataset of ``x`` or ``(x, label)`` items, or
            a DataLoader / iterable of such batches. Labels are ignored.
        delta: typical displacement of the max-entropy diffeo, in pixels (ignored if ``temperature``
            is given): ``temperature = dp.temperature_for(delta, size, cut)``.
        temperature: the ensemble's temperature ``0 <= T <= 1e6`` (``MAX_TEMPERATURE``),
            overriding ``delta``.
        cut: the ensemble's integer frequency cut-off c >= 1.
        interp: ``"bilinear"``, ``"nearest"`` or ``"gaussian"``.
        diffeo: ``"max-entropy"`` (docs/science.md section 2), ``"pixel-shift"`` (the scale-detection
            moves of section 6) or a callable ``(x, generator) -> tau x``.
        noise: ``"matched"`` (isotropic, per-image norm ``||tau x - x||``), ``"rectified"`` (the 1D
            scripts' variant) or a callable ``(x, tau x, generator) -> eta``.
        layers: names to measure (see :func:`~diffeoprobe.measurement.capture.plan_capture`), plus
            ``"input"`` and ``"output"``. Default: the input, every layer, the output.
        batch_size: images per forward pass, counting the clean, deformed and noisy copies together.
        draws: diffeo (and noise) draws per probe image; per-image distances are averaged over them.
        channel_mean: average each representation over channels (dim 1) before measuring, which
            isolates spatial structure; representations of rank 2 ``(B, F)`` are left as they are.
        probe_size: use only the first ``probe_size`` images of ``data``.
        capture: ``"auto"`` (torch.fx when the model traces, else module hooks), ``"fx"``, ``"hooks"``.
        device: where to run; default the model's device.
        seed: seeds every random draw; the same seed gives bit-identical tables on CPU.
        progress: show a progress bar.

    Returns:
        One row per representation in firing order, columns ``layer, module, depth, rel_depth, D,
        G, R, D_se, G_se, R_se, Z, n, features``. ``depth`` counts the measured representations
        (input = 0); ``rel_depth = depth / max depth``; ``n`` the number of probe images; ``features``
        the size of the (channel-averaged) representation. ``table.attrs`` records the settings.
        A NaN in the table only ever means 0/0 (e.g. ``T = 0``: D = G = 0, R undefined; a constant
        layer: Z = 0); non-finite representations raise instead.

    Raises:
        DiffeoProbeError: an invalid argument (checked before any forward pass; ``temperature``
            or ``delta`` past ``MAX_TEMPERATURE`` included), or a layer whose sums are not finite
            (named in the message).

    Example:
        >>> import torch, diffeoprobe as dp
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
        >>> x = torch.rand(16, 1, 12, 12, generator=torch.Generator().manual_seed(0))
        >>> tab = dp.measure(net, x, delta=1.0, seed=0)
        >>> list(tab["layer"])
        ['input', '0', '1', 'output']
        >>> bool(abs(tab["R"].iloc[0] - 1) < 1e-5)  # matched noise: R = 1 at the input
        True
    """
    if not isinstance(model, nn.Module):
        raise DiffeoProbeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    cut = check_cut(cut)
    channel_mean = check_flag(channel_mean, "channel_mean")
    draws = check_int(draws, "draws", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_seed(seed)
    if probe_size is not None:
        probe_size = check_int(probe_size, "probe_size", minimum=2)
    interp = check_choice(interp, "interp", INTERPOLATIONS)
    if temperature is not None:
        temperature = check_temperature(temperature)
    else:
        delta = check_positive(delta, "delta", allow_zero=True)
    _check_layers(layers)
    if device is not None:
        device = check_device(device)
        model.to(device)
    device = device if device is not None else _model_device(model)

    first, images = _first_batch(data, probe_size)
    size = tuple(first.shape[2:])
    _check_memory(first, _probe_count(data, probe_size), draws, batch_size, diffeo, cut, interp)
    if temperature is None:
        temperature = temperature_for(delta, size, cut) if delta > 0 else 0.0
    diffeo_fn = _diffeo(diffeo, temperature=temperature, cut=cut, interp=interp)
    noise_fn = _noise(noise)

    was_training = model.training
    model.eval()
    try:
        plan = plan_capture(model, layers, capture)  # checks layers and capture first
        if layers is not None:  # glob patterns resolved to the layers they match
            layers = [n for n in layers if n in ("input", "output")] + list(plan.selected)
        check_model_fits(model, first.to(device))
        want_input = layers is None or "input" in layers
        want_output = layers is None or "output" in layers
        state = _MeasureState(set(plan.selected), layers is None)
        total = _probe_count(data, probe_size)
        bar = _progress(progress, total)
        with (
            bar as tracker,
            torch.no_grad(),
        ):  # not inference_mode: version counters detect in-place edits
            task = tracker.add_task("measuring", total=total) if tracker else None
            for block_index, block in _reblock(images, PERTURBATION_BLOCK):
                x = check_signal(block, "data").to(device)
                gen = torch.Generator(device=device).manual_seed(_block_seed(seed, block_index))
                x_rep = x.repeat_interleave(draws, 0) if draws > 1 else x
                xt = diffeo_fn(x_rep, gen)
                xn = x_rep + noise_fn(x_rep, xt, gen)
                per_forward = max(1, batch_size // (1 + 2 * draws))
                for start, stop in _chunks(x.shape[0], per_forward, first=block_index == 0):
                    k = stop - start
                    # per image: its clean copy, then `draws` deformed, then `draws` noisy copies,
                    # so a layer's output views as (k, 1 + 2 draws, features) with no copying
                    shape = x.shape[1:]
                    stacked = torch.cat(
                        [
                            x[start:stop, None],
                            xt[start * draws : stop * draws].view(k, draws, *shape),
                            xn[start * draws : stop * draws].view(k, draws, *shape),
                        ],
                        dim=1,
                    ).view(k * (1 + 2 * draws), *shape)
                    state.begin(k, draws)
                    if want_input:
                        state.reduce("input", stacked, channel_mean, force=True)
                    out = run_captured(
                        model, plan, stacked, lambda n, t: state.reduce(n, t, channel_mean)
                    )
                    state.finish_forward(out, want_output, channel_mean)
                    if tracker and task is not None:
                        tracker.advance(task, k)
    finally:
        model.train(was_training)
    state.check_requested(layers)
    return _table(
        state,
        plan.modules,
        dict(
            capture=plan.mode,
            temperature=temperature,
            cut=cut,
            interp=interp,
            diffeo=diffeo if isinstance(diffeo, str) else getattr(diffeo, "__name__", "custom"),
            noise=noise if isinstance(noise, str) else getattr(noise, "__name__", "custom"),
            draws=draws,
            channel_mean=channel_mean,
            seed=seed,
        ),
    )


class MeasureOptions(TypedDict, total=False):
    """The keyword arguments of :func:`measure` but ``seed``, for functions that pass them on."""

    delta: float
    temperature: float | None
    cut: int
    interp: str
    diffeo: str | Diffeo
    noise: str | Noise
    layers: Sequence[str] | None
    batch_size: int
    draws: int
    channel_mean: bool
    probe_size: int | None
    capture: str
    device: str | torch.device | None
    progress: bool


class _MeasureState:
    """Per-layer sums and firing order, filled from inside the forward pass."""

    def __init__(self, selected: set[str], all_calls: bool) -> None:
        self.selected = selected
        self.all_calls = all_calls  # default selection: every call of a selected module
        self.sums: dict[str, SensitivitySums] = {}
        self.features: dict[str, int] = {}
        self.order: list[str] = []
        self.skipped: dict[str, str] = {}
        self.output_alias: str | None = None
        self._first_forward = True
        self._last: tuple[str, torch.Tensor, int] | None = None
        self._buffer: torch.Tensor | None = None

    def begin(self, k: int, draws: int) -> None:
        self.k, self.draws = k, draws
        self.total = k * (1 + 2 * draws)
        self._last = None

    def _accepts(self, name: str) -> bool:
        return name in self.selected or (self.all_calls and name.split(":", 1)[0] in self.selected)

    def reduce(self, name: str, t: torch.Tensor, channel_mean: bool, force: bool = False) -> None:
        if not force and not self._accepts(name):
            return
        if t.dim() == 0 or t.shape[0] != self.total:
            self.skipped[name] = (
                f"output of shape {tuple(t.shape)} has no batch dimension of size {self.total}"
            )
            return
        self._last = (name, t, t._version)
        a = t.detach()
        if channel_mean and a.dim() >= 3:
            a = a.mean(1)
        a = a.flatten(1)
        a = a.to(torch.promote_types(a.dtype, torch.float32))
        k, r = self.k, self.draws
        copies = a.view(k, 1 + 2 * r, -1)
        if name not in self.sums:
            if not self._first_forward:
                return  # a layer that did not fire in the first forward: ignore, keep the order stable
            self.sums[name] = SensitivitySums()
            self.features[name] = a.shape[1]
            self.order.append(name)
        sums = self.sums[name]
        ref = sums.reference(copies[:, 0])
        # One scratch tensor holds, per image, a_i - ref, then every perturbed copy minus a_i:
        # one norm over it gives s_i, d_i and g_i (no fresh large temporaries per layer).
        diff = self._scratch(copies)
        torch.sub(copies[:, 1:], copies[:, :1], out=diff[:, 1:])
        torch.sub(copies[:, 0], ref, out=diff[:, 0])
        squared = torch.linalg.vector_norm(diff, dim=-1).double().square()
        d, g = squared[:, 1 : 1 + r].mean(1), squared[:, 1 + r :].mean(1)
        sums.add(diff[:, 0].sum(0), squared[:, 0], d, g)

    def _scratch(self, like: torch.Tensor) -> torch.Tensor:
        """A tensor of ``like``'s shape, dtype and device, carved from one reused buffer."""
        numel, buffer = like.numel(), self._buffer
        if (
            buffer is None
            or buffer.numel() < numel
            or (buffer.dtype, buffer.device) != (like.dtype, like.device)
        ):
            buffer = self._buffer = like.new_empty(numel)
        return buffer[:numel].view(like.shape)

    def finish_forward(self, returned: object, want_output: bool, channel_mean: bool) -> None:
        out = output_tensor(returned)
        if self._first_forward and isinstance(out, torch.Tensor) and self._last is not None:
            name, tensor, version = self._last
            if out is tensor and out._version == version and name != "input":
                self.output_alias = name
        if want_output and self.output_alias is None:
            if out is None:
                raise DiffeoProbeError(
                    f"model output must hold a tensor to measure 'output' (a tensor, a tuple, a "
                    f"dict or a ModelOutput), got {type(returned).__name__}; select layers=[...] "
                    "without 'output'"
                )
            self.reduce("output", out, channel_mean, force=True)
        self._first_forward = False

    def check_requested(self, layers: Sequence[str] | None) -> None:
        if layers is None:
            return
        seen = set(self.order) | ({"output"} if self.output_alias else set())
        missing = [name for name in layers if name not in seen]
        if missing:
            reasons = "; ".join(
                f"{n}: {self.skipped.get(n, 'never called in the forward pass')}" for n in missing
            )
            raise DiffeoProbeError(f"layers: could not measure {missing} ({reasons})")


def _table(state: _MeasureState, modules: dict[str, str], attrs: dict[str, object]) -> pd.DataFrame:
    """The result table; refuses one whose numbers would come from non-finite sums.

    Raises:
        DiffeoProbeError: naming every layer whose representations or distances were NaN or
            infinite (D, G, R would be NaN with no reason shown).
    """
    broken = [
        "output" if name == state.output_alias else name
        for name in state.order
        if not state.sums[name].is_finite()
    ]
    if broken:
        raise DiffeoProbeError(
            f"measure: the sums of layer(s) {broken} are not finite (NaN or infinite values in "
            "the representations of the clean, deformed or noisy probe images), so D, G and R "
            f"cannot be computed there (temperature={attrs.get('temperature')!r}); check the "
            "model (overflow, log of a negative) and a custom diffeo or noise"
        )
    rows = []
    for depth, name in enumerate(state.order):
        s = state.sums[name].result()
        is_output = name == state.output_alias
        rows.append(
            dict(
                layer="output" if is_output else name,
                module=modules.get(name, "") if name not in ("input", "output") else "",
                depth=depth,
                D=s.D,
                G=s.G,
                R=s.R,
                D_se=s.D_se,
                G_se=s.G_se,
                R_se=s.R_se,
                Z=s.Z,
                Z_se=s.Z_se,
                n=s.n,
                features=state.features[name],
            )
        )
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rel_depth"])
    max_depth = max(int(table["depth"].max()), 1) if len(table) else 1
    table.insert(3, "rel_depth", table["depth"] / max_depth)
    table.attrs.update(attrs)
    return table


def _chunks(n: int, size: int, *, first: bool) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of ``size`` images; the very first forward of a measurement always
    holds ``REFERENCE_IMAGES`` images (its mean centres the sums), so that no statistic, error bars
    included, depends on ``batch_size``.
    """
    bounds = [0, min(REFERENCE_IMAGES, n)] if first else [0]
    bounds += list(range(bounds[-1] + size, n, size)) + [n]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _diffeo(diffeo: str | Diffeo, *, temperature: float, cut: int, interp: str) -> Diffeo:
    if callable(diffeo):
        return diffeo
    check_choice(diffeo, "diffeo", DIFFEOS)
    if diffeo == "pixel-shift":
        return lambda x, g: pixel_shift(x, generator=g)
    return lambda x, g: deform(x, temperature, cut, interp, generator=g)


def _noise(noise: str | Noise) -> Noise:
    if callable(noise):
        return noise
    check_choice(noise, "noise", NOISES)
    return partial(_matched, rectified=noise == "rectified")


def _matched(
    x: torch.Tensor, xt: torch.Tensor, g: torch.Generator, *, rectified: bool
) -> torch.Tensor:
    try:
        return matched_noise(x, xt, generator=g, rectified=rectified)
    except DiffeoProbeError as exc:  # what the diffeo returned: say so, not "xt"
        raise DiffeoProbeError(
            f"diffeo: the deformed images are not usable ({str(exc).replace('xt ', '')})"
        ) from None


def _check_layers(layers: Sequence[str] | None) -> None:
    if layers is not None and (isinstance(layers, str) or len(layers) == 0):
        raise DiffeoProbeError(f"layers must be a non-empty list of layer names, got {layers!r}")


def _model_device(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _block_seed(seed: int, block: int) -> int:
    """An independent 63-bit seed for perturbation block ``block`` of run ``seed``."""
    return int(
        np.random.SeedSequence([seed, block]).generate_state(1, np.uint64)[0] >> np.uint64(1)
    )


def _iter_images(data: object, chunk: int, limit: int | None) -> Iterator[torch.Tensor]:
    """Batches of images (labels dropped), at most ``limit`` images in all."""
    if isinstance(data, torch.Tensor):
        source: Iterable[object] = (data[i : i + chunk] for i in range(0, data.shape[0], chunk))
    elif isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        source = DataLoader(data, batch_size=chunk, shuffle=False)
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        source = data
    else:
        raise DiffeoProbeError(
            f"data must be a tensor, a Dataset or a DataLoader, got {type(data).__name__}"
        )
    seen = 0
    for batch in source:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor):
            raise DiffeoProbeError(
                f"data must yield tensors or (tensor, label) pairs, got {type(x).__name__}"
            )
        if limit is not None:
            x = x[: limit - seen]
        if x.shape[0] == 0:
            break
        seen += x.shape[0]
        yield x
        if limit is not None and seen >= limit:
            break


def _first_batch(
    data: object, probe_size: int | None
) -> tuple[torch.Tensor, Iterator[torch.Tensor]]:
    """The first batch of the probe images, checked, and all the batches (it included).

    Raises:
        DiffeoProbeError: fewer than 2 images, or a first batch that is not a batch of signals.
    """
    images = _iter_images(data, PERTURBATION_BLOCK, probe_size)
    first = next(images, None)
    if first is None:
        raise DiffeoProbeError("data: the probe set is empty; give at least 2 images")
    check_signal(first, "data")
    if first.shape[0] < 2:  # a loader of single images: the second one may come in its own batch
        second = next(images, None)
        if second is None:
            raise DiffeoProbeError(
                "data: the probe set holds 1 image; measure needs at least 2 (Z_k is the mean "
                "distance between two different images)"
            )
        images = itertools.chain([second], images)
    return first, itertools.chain([first], images)


def _reblock(batches: Iterable[torch.Tensor], size: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Re-cut a stream of batches into blocks of exactly ``size`` images (the last may be shorter)."""
    pending: list[torch.Tensor] = []
    count = 0
    index = 0
    for batch in batches:
        pending.append(batch)
        count += batch.shape[0]
        while count >= size:
            joined = torch.cat(pending)
            yield index, joined[:size]
            index += 1
            rest = joined[size:]
            pending, count = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
    if count:
        yield index, torch.cat(pending)


def _check_memory(
    first: torch.Tensor,
    total: int | None,
    draws: int,
    batch_size: int,
    diffeo: str | Diffeo,
    cut: int,
    interp: str,
) -> None:
    """Refuse a measurement whose perturbed copies would pass the memory limit, before drawing them.

    A block of ``B`` probe images (:data:`PERTURBATION_BLOCK`) is repeated ``draws`` times,
    deformed and made noisy (with the noise's temporaries: about 4 ``B draws`` images), and a
    forward pass stacks at least one image's ``1 + 2 draws`` copies, twice (the input and the
    measurement's scratch). The model's own activations come on top.
    """
    block = PERTURBATION_BLOCK if total is None else max(1, min(PERTURBATION_BLOCK, total))
    itemsize = max(4, first.element_size())
    pixels = float(first[0].numel())
    copies = float(block) * draws
    per_forward = max(1, batch_size // (1 + 2 * draws))
    images = itemsize * pixels * (4 * copies + 2 * min(per_forward, block) * (1 + 2 * draws))
    cut_part = 0.0
    if diffeo == "max-entropy":
        cut_part, deformed = deform_memory(
            int(copies), tuple(first.shape[2:]), cut, interp, itemsize, first.shape[1]
        )
        images += deformed
    name = "cut" if cut_part > images else "draws" if draws > 1 else "data"
    check_memory(
        name,
        cut_part + images,
        f"{block} probe images of shape {tuple(first.shape[1:])} with {draws} deformed and "
        f"{draws} noisy copies each (cut {cut})",
    )


def _probe_count(data: object, limit: int | None) -> int | None:
    source = data.dataset if isinstance(data, DataLoader) else data
    if not isinstance(source, Sized):
        return limit
    try:
        n = len(source)  # a tensor's: its first dimension
    except TypeError:  # a __len__ that refuses, as a 0-d tensor's
        return limit
    return min(n, limit) if limit is not None else n


def _progress(show: bool, total: int | None) -> AbstractContextManager[Progress | None]:
    if not show:
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
