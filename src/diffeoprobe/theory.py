"""Idealised pooling networks: exact sensitivities and asymptotic laws (docs/science.md section 7).

The idealised net is a stack of ``depth`` layers, each a convolution with a constant (averaging)
filter and no bias, followed by an activation, on a periodic signal that is zero except for one
active pixel; the diffeomorphism moves that pixel by one. :func:`exact_sensitivities` runs the
project's own :func:`~diffeoprobe.measure` on it, :func:`power_laws` returns the laws derived in
``docs/theory.md``, :func:`fit_exponent` fits slopes, :func:`theory_table` shows both side by side.

Example:
    >>> tab = theory_table(stride=1, filter_size=2, depth=64)
    >>> tab[["depth", "D", "D_theory", "G", "G_theory"]].iloc[-1].round(3).tolist()
    [64.0, 0.015, 0.016, 1.425, 1.444]
    >>> fit = fit_exponent(tab["depth"], tab["G"], "power", offset=True, k_min=8)
    >>> round(fit.exponent, 1)  # G_k ~ k^(1/2) + const
    0.5
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypedDict

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from torch import nn

from diffeoprobe.config import NOISES
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.limits import check_memory, check_parameters
from diffeoprobe.measurement import measure
from diffeoprobe.measurement.core import Diffeo, Noise
from diffeoprobe.models.simple_cnn import ACTIVATIONS
from diffeoprobe.perturb import matched_noise
from diffeoprobe.validate import MAX_AMPLITUDE, check_choice, check_int, check_positive

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11

__all__ = [
    "Law",
    "PowerLaws",
    "exact_sensitivities",
    "fit_exponent",
    "idealized_net",
    "power_laws",
    "receptive_field",
    "theory_table",
]

THEORY_ACTIVATIONS = ("relu", "tanh", "identity")
"""Activations :func:`power_laws` covers (tanh in its small-amplitude limit, docs/theory.md)."""
PROBES = ("lattice", "all")
LAW_KINDS = ("power", "exponential")

SIZE_PER_FIELD = 8
"""Default input side, in receptive fields, rounded up to a multiple of stride^depth: stride s >= 2
leaves 8 units in the last layer; stride 1 leaves room for 8 non-overlapping responses."""
MIN_SIDE = {1: 1024, 2: 64}
"""Smallest default side: at stride 1 the noise terms self-average over the whole signal, so a
longer signal gives G a smaller error at no cost to D (lattice probes never overlap)."""
LATTICE_MIN = 8
"""Fewest lattice probes per axis (see _lattice)."""
PROBE_CHUNK = 256
"""Probe images built at a time (measure perturbs blocks of 256)."""
ELEMENTS_PER_FORWARD = 2**22
"""Input elements per forward pass (clean + deformed + noisy copies together): bounds memory."""
MOVES_2D = ((1, 0), (0, 1), (1, 1))
"""2D moves measured for each probe: axis, other axis, diagonal, with equal weights. By the
symmetries of the net and the lattice this is pixel_shift's law (each axis step 1/6, each diagonal
1/12): 2/3 of the moves are axis steps, 1/3 diagonal (docs/theory.md, "The probe set")."""

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d}


def receptive_field(depth: int, filter_size: int, stride: int) -> int:
    """Input pixels seen by one unit of layer ``depth``: ``1 + (F - 1)(1 + s + ... + s^(depth-1))``.

    docs/science.md section 7 writes ``F + (F - 1) sum_{l=1..L} s^l``: the same number for ``L = depth -
    1`` (its sum starts after the first layer), checked by probing in tests/test_theory.py.

    >>> receptive_field(7, 2, 2), receptive_field(12, 2, 1)
    (128, 13)
    """
    depth = check_int(depth, "depth", minimum=0)
    filter_size = check_int(filter_size, "filter_size", minimum=1)
    stride = check_int(stride, "stride", minimum=1)
    layers = depth if stride == 1 else (stride**depth - 1) // (stride - 1)  # 1 + s + ... exactly
    return 1 + (filter_size - 1) * layers


def idealized_net(
    *,
    dim: int = 1,
    depth: int,
    filter_size: int = 2,
    stride: int = 2,
    activation: str = "relu",
    channels: int = 1,
) -> nn.Sequential:
    """The idealised pooling CNN: constant filters, no bias, periodic boundary.

    Layer ``k`` is ``layer{k}.pad`` (circular, ``F - s`` pixels after the signal on each axis;
    absent when ``F <= s``) -> ``layer{k}.conv`` (filter ``F`` per axis, stride ``s``, every weight
    ``(s / F)^dim / c_in``) -> ``layer{k}.act``. Unit ``i`` sums the inputs ``s i .. s i + F - 1``
    taken modulo the length, so a side ``n`` divisible by ``s`` becomes ``n / s``, and the net
    commutes with cyclic shifts by ``s^depth`` pixels. The weight keeps the sum (the "mass") of a
    non-negative signal fixed: each input pixel reaches ``(F / s)^dim`` outputs of each channel.
    For ReLU and the identity the normalisation does not matter to D, G, R (both activations are
    positively homogeneous); for tanh it sets how far the signal reaches into saturation.

    Args:
        dim: 1 (input ``(B, 1, L)``) or 2 (input ``(B, 1, L, L)``).
        depth: number of layers, ``>= 1``.
        filter_size: filter side ``F >= 1`` in pixels.
        stride: stride ``s >= 1`` in pixels.
        activation: a name of :data:`diffeoprobe.models.simple_cnn.ACTIVATIONS` (``"relu"``,
            ``"tanh"``, ``"identity"``, ...).
        channels: channels of every layer (the input has one); each output channel sums all
            input channels, so every channel carries the same map.

    >>> net = idealized_net(depth=2, filter_size=2, stride=1)
    >>> [name for name, _ in net.named_modules()][2:5]
    ['layer1.pad', 'layer1.conv', 'layer1.act']
    >>> net(torch.tensor([[[0.0, 0.0, 1.0, 0.0]]])).tolist()  # binomial spreading, mass kept
    [[[0.25, 0.5, 0.25, 0.0]]]
    """
    dim = check_int(dim, "dim", minimum=1, maximum=2)
    depth = check_int(depth, "depth", minimum=1)
    filter_size = check_int(filter_size, "filter_size", minimum=1)
    stride = check_int(stride, "stride", minimum=1)
    check_choice(activation, "activation", tuple(ACTIVATIONS))
    channels = check_int(channels, "channels", minimum=1)
    check_parameters(
        "depth, filter_size, channels",
        float(filter_size) ** dim * (channels + (depth - 1) * float(channels) ** 2),
        modules=4 * depth,
    )

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = 1
    for k in range(1, depth + 1):
        block: OrderedDict[str, nn.Module] = OrderedDict()
        if filter_size > stride:
            pad = filter_size - stride
            block["pad"] = (
                nn.CircularPad1d((0, pad)) if dim == 1 else nn.CircularPad2d((0, pad, 0, pad))
            )
        conv = _CONVS[dim](c_in, channels, filter_size, stride=stride, bias=False)
        with torch.no_grad():
            conv.weight.fill_((stride / filter_size) ** dim / c_in)
        block["conv"] = conv
        block["act"] = ACTIVATIONS[activation]()
        layers[f"layer{k}"] = nn.Sequential(block)
        c_in = channels
    return nn.Sequential(layers)


def exact_sensitivities(
    *,
    dim: int = 1,
    depth: int,
    filter_size: int = 2,
    stride: int = 2,
    activation: str = "relu",
    size: int | None = None,
    probe: str | int = "lattice",
    noise: str = "matched",
    noise_scale: float = 1.0,
    value: float = 1.0,
    seed: int = 0,
    draws: int = 1,
) -> pd.DataFrame:
    """D_k, G_k, R_k of the idealised net, measured by :func:`~diffeoprobe.measure`.

    Probes are single active pixels of amplitude ``value`` on a periodic signal of side ``size``;
    the diffeo moves the pixel by one with wrap-around (pixel_shift's move on the net's periodic
    domain; 1D: always ``+1``, 2D: an axis step, the other axis, a diagonal, for every probe),
    which by the symmetries of the lattice probe set gives pixel_shift's average over directions
    exactly (docs/theory.md). The noise is matched noise (``||eta|| = noise_scale ||tau x - x|| =
    noise_scale sqrt(2) value`` in 1D) or the rectified variant. Only the input and the outputs of
    the activations are measured: the representations the theory describes.

    Args:
        dim: the net's dimension, as in :func:`idealized_net`.
        depth: the net's number of layers, as in :func:`idealized_net`.
        filter_size: the net's filter size, as in :func:`idealized_net`.
        stride: the net's stride, as in :func:`idealized_net`.
        activation: the net's activation, as in :func:`idealized_net`.
        size: side of the periodic input, a multiple of ``stride^depth`` with at least two units in
            the last layer and no smaller than the receptive field. Default: the smallest multiple
            of ``stride^depth`` that is at least 8 receptive fields and :data:`MIN_SIDE` pixels.
        probe: ``"lattice"`` (default: a lattice with every position class modulo ``stride^depth``
            equally often, spread over the signal; exact at low cost), ``"all"`` (every position)
            or an integer ``P >= 2`` (a random subset of ``P`` positions, seeded by ``seed``).
        noise: ``"matched"`` (isotropic, section 3) or ``"rectified"`` (the 1D scripts' variant).
        noise_scale: noise norm in units of the matched norm (``> 0``).
        value: amplitude of the active pixel (``> 0``; matters only for non-homogeneous
            activations such as tanh).
        seed: seeds the noise (and a random probe subset).
        draws: noise draws per probe (and per move in 2D).

    Returns:
        The :func:`~diffeoprobe.measure` table (``depth`` = layer index ``k``, 0 for the input;
        ``layer`` = ``"input"``, ``"layer1.act"``, ...) with columns ``activation, stride,
        filter_size, depth_total`` added, so runs concatenate. ``attrs`` records size and probes.

    Example:
        >>> tab = exact_sensitivities(depth=3, stride=1, filter_size=2)
        >>> tab["D"].round(4).tolist()  # D_k = 1 / (k + 1) exactly at stride 1, F = 2
        [1.0, 0.5, 0.3333, 0.25]
    """
    dim = check_int(dim, "dim", minimum=1, maximum=2)
    depth = check_int(depth, "depth", minimum=1)
    filter_size = check_int(filter_size, "filter_size", minimum=1)
    stride = check_int(stride, "stride", minimum=1)
    check_choice(activation, "activation", tuple(ACTIVATIONS))
    given = "size" if size is not None else "depth, filter_size and stride"
    size = _check_size(size, dim, depth, filter_size, stride)
    check_choice(noise, "noise", NOISES)
    noise_scale = check_positive(noise_scale, "noise_scale", maximum=MAX_AMPLITUDE)
    value = check_positive(value, "value", maximum=MAX_AMPLITUDE)
    seed = check_int(seed, "seed", minimum=0)
    draws = check_int(draws, "draws", minimum=1)
    if isinstance(probe, str):
        check_choice(probe, "probe", PROBES)
    else:
        probe = check_int(probe, "probe", minimum=2, maximum=size**dim)
    moves = 1 if dim == 1 else len(MOVES_2D)
    period, field = stride**depth, receptive_field(depth, filter_size, stride)
    _check_memory(given, probe, dim, size, period, field, moves * draws)

    positions = _probe_positions(probe, dim, size, period, field, seed)
    net = idealized_net(
        dim=dim, depth=depth, filter_size=filter_size, stride=stride, activation=activation
    )
    per_forward = 1 + 2 * moves * draws
    table = measure(
        net,
        _probe_batches(positions, dim, size, value),
        diffeo=_shift_by_one if dim == 1 else _moves_2d(moves * draws),
        noise=_noise(noise == "rectified", noise_scale),
        layers=["input", *(f"layer{k}.act" for k in range(1, depth + 1))],
        batch_size=per_forward * max(1, ELEMENTS_PER_FORWARD // (per_forward * size**dim)),
        draws=moves * draws,
        seed=seed,
    )
    # measure labels the representation that is also the model's output "output"
    table["layer"] = ["input", *(f"layer{k}.act" for k in range(1, depth + 1))]
    for unused in ("temperature", "cut", "interp"):  # settings of the max-entropy diffeo
        table.attrs.pop(unused, None)
    table["activation"] = activation
    table["stride"] = stride
    table["filter_size"] = filter_size
    table["depth_total"] = depth
    table.attrs.update(dim=dim, size=size, probes=len(positions), value=value)
    table.attrs.update(noise_scale=noise_scale, noise=noise)
    return table


@dataclass(frozen=True)
class Law:
    """``prefactor * k**exponent + offset`` (``"power"``) or ``prefactor * exp(exponent * k) +
    offset`` (``"exponential"``) of the layer index ``k``.

    >>> Law("exponential", -math.log(2), 1.0)([0, 1, 2]).tolist()
    [1.0, 0.5, 0.25]
    """

    kind: str
    exponent: float
    prefactor: float
    offset: float = 0.0

    def __call__(self, k: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """The law at the layer indices ``k`` (float64)."""
        k = np.asarray(k, dtype=np.float64)
        core = k**self.exponent if self.kind == "power" else np.exp(self.exponent * k)
        return self.prefactor * core + self.offset


class PowerLaws(NamedTuple):
    """Asymptotic laws of D_k, G_k and R_k (R without G's offset: ``D.prefactor / G.prefactor``)."""

    D: Law
    G: Law
    R: Law


def power_laws(
    *, dim: int = 1, stride: int = 2, filter_size: int = 2, activation: str = "relu"
) -> PowerLaws:
    """Large-``k`` laws of the idealised net under matched noise (derived in docs/theory.md).

    ``k`` is the layer index, ``F`` the filter size, ``sigma2 = (F^2 - 1) / 12`` the variance one
    stride-1 layer adds to a spreading pixel, and ``m = 1`` in 1D, ``4/3`` in 2D (pixel_shift's
    mean squared move, which is also the mean number of axes a move changes).

    - stride 1, ``F >= 2``: ``D_k ~ m / (4 sigma2 k)``; ReLU: ``G_k ~ (4 pi sigma2 k)^(dim/2) /
      (2 pi F^dim) + C``, ``C`` the summed covariance of the first layer's rectified noise. 1D,
      ``F = 2``: ``D_k ~ 1/k`` (exactly ``1/(k+1)``), ``G_k ~ sqrt(k) / (4 sqrt(pi)) + 0.316``,
      ``R_k ~ 4 sqrt(pi) k^(-3/2)``.
    - stride ``s = F >= 2``: ``D_k ~ m F^-k`` (exact in 1D; 2D adds ``-F^(-2k) / 3``); ReLU: ``G_k =
      F^(dim (k-1)) / (2 pi) + (pi - 1) / (2 pi)`` for ``k >= 1``. 1D, ``F = 2``: ``D_k = 2^-k``,
      ``G_k = 2^k / (4 pi) + 0.341``, ``R_k ~ 4 pi 4^-k``.
    - identity: ``G_k = 1`` exactly; tanh: ``G_k -> 1`` for small amplitudes (the noise stays
      zero-mean and averages out as in a linear net).

    These are infinite-size laws: finite signals lower ``Z_k`` in the last layers (stride >= 2)
    and so raise D and G alike; ``R_k`` is free of ``Z_k``. ``"exponential"`` exponents are
    natural-log rates per layer (``-ln 2`` for ``2^-k``).

    Raises:
        DiffeoProbeError: a stride other than 1 or ``filter_size`` (no closed form here),
            ``filter_size < 2``, or an activation outside :data:`THEORY_ACTIVATIONS`.

    >>> laws = power_laws(stride=1, filter_size=2)
    >>> laws.D.exponent, laws.G.exponent, laws.R.exponent
    (-1.0, 0.5, -1.5)
    >>> round(laws.D.prefactor, 6), round(laws.G.prefactor, 4), round(laws.G.offset, 4)
    (1.0, 0.141, 0.3158)
    """
    dim = check_int(dim, "dim", minimum=1, maximum=2)
    stride = check_int(stride, "stride", minimum=1)
    filter_size = check_int(filter_size, "filter_size", minimum=2)
    check_choice(activation, "activation", THEORY_ACTIVATIONS)
    rectified = activation == "relu"
    axes_moved = 1.0 if dim == 1 else 4 / 3  # also the mean squared move, axis 1 and diagonal 2
    if stride == 1:
        sigma2 = (filter_size**2 - 1) / 12
        d = Law("power", -1.0, axes_moved / (4 * sigma2))
        g = (
            Law(
                "power",
                dim / 2,
                (4 * math.pi * sigma2) ** (dim / 2) / (2 * math.pi * filter_size**dim),
                _stride1_offset(filter_size, dim),
            )
            if rectified
            else Law("power", 0.0, 1.0)
        )
    elif stride == filter_size:
        # a move changes the layer-k unit when it crosses a block edge (F^k pixels per axis);
        # the rectified noise's mean sums over F^(dim k) pixels
        rate = math.log(filter_size)
        d = Law("exponential", -rate, axes_moved)
        g = (
            Law(
                "exponential",
                dim * rate,
                1 / (2 * math.pi * filter_size**dim),
                1 / 2 - 1 / (2 * math.pi),
            )
            if rectified
            else Law("exponential", 0.0, 1.0)
        )
    else:
        raise DiffeoProbeError(
            f"stride must be 1 or equal to filter_size={filter_size} for the power laws "
            f"(overlapping strided pooling has no closed form here), got {stride}"
        )
    r = Law(d.kind, d.exponent - g.exponent, d.prefactor / g.prefactor)
    return PowerLaws(d, g, r)


def _numbers(values: object, name: str) -> np.ndarray:
    """``values`` as float64 numbers, or one error naming ``name``."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DiffeoProbeError(f"{name} must be a sequence of numbers, got {values!r}") from None


def fit_exponent(
    k: Sequence[float] | np.ndarray | pd.Series,
    values: Sequence[float] | np.ndarray | pd.Series,
    kind: str = "power",
    *,
    offset: bool = False,
    k_min: float | None = None,
) -> Law:
    """Fit ``values ~ A k^alpha`` (``"power"``) or ``A exp(alpha k)`` (``"exponential"``).

    Without ``offset``: least squares on ``log values`` against ``log k`` (or ``k``), the usual
    log-log (log-linear) slope. With ``offset``: ``A k^alpha + C`` minimising the relative
    residuals ``sum ((A f(k) + C) / values - 1)^2``; for each ``alpha`` on a grid the best ``A, C``
    are linear, and the grid is refined around the minimum. Use it where a constant correction
    (G's noise fluctuations, docs/theory.md) hides the asymptotic exponent at moderate ``k``.

    Args:
        k: layer indices (``> 0`` for ``"power"``).
        values: the curve at ``k`` (``> 0`` without ``offset``).
        kind: ``"power"`` or ``"exponential"``.
        offset: also fit a constant ``C``.
        k_min: use only ``k >= k_min`` (the asymptotic range).

    Returns:
        A :class:`Law` with the fitted exponent, prefactor and offset.

    >>> k = np.arange(1.0, 50.0)
    >>> round(fit_exponent(k, 3 / k).exponent, 6)
    -1.0
    >>> fit_exponent(k, 2 * k**0.5 + 1, offset=True)  # doctest: +ELLIPSIS
    Law(kind='power', exponent=0.5..., prefactor=2.0..., offset=0.99...)
    """
    check_choice(kind, "kind", LAW_KINDS)
    k, values = _numbers(k, "k"), _numbers(values, "values")
    if k.ndim != 1 or k.shape != values.shape:
        raise DiffeoProbeError(
            f"k and values must be 1D of the same length, got shapes {k.shape} and {values.shape}"
        )
    if k_min is not None:
        keep = k >= check_positive(k_min, "k_min", allow_zero=True)
        k, values = k[keep], values[keep]
    needed = 3 if offset else 2
    if len(k) < needed or not (np.isfinite(k).all() and np.isfinite(values).all()):
        raise DiffeoProbeError(
            f"values: need at least {needed} finite points (k >= k_min) to fit, got {len(k)}"
        )
    if kind == "power" and (k <= 0).any():
        raise DiffeoProbeError(f"k must be > 0 for a power law, got min {k.min()}")
    if not offset:
        if (values <= 0).any():
            raise DiffeoProbeError(
                f"values must be > 0 for a log fit without offset, got min {values.min()}"
            )
        x = np.log(k) if kind == "power" else k
        slope, intercept = np.polyfit(x, np.log(values), 1)
        return Law(kind, float(slope), float(np.exp(intercept)))
    return _fit_with_offset(k, values, kind)


class ExactOptions(TypedDict, total=False):
    """The options of :func:`exact_sensitivities` that :func:`theory_table` passes on."""

    size: int | None
    probe: str | int
    noise: str
    noise_scale: float
    value: float
    seed: int
    draws: int


def theory_table(
    *,
    dim: int = 1,
    depth: int,
    filter_size: int = 2,
    stride: int = 2,
    activation: str = "relu",
    **options: Unpack[ExactOptions],
) -> pd.DataFrame:
    """Exact (measured) D_k, G_k, R_k next to the asymptotic laws, one row per layer.

    ``options`` go to :func:`exact_sensitivities` (``size``, ``probe``, ``noise``, ``noise_scale``,
    ``value``, ``seed``, ``draws``). ``*_theory`` columns evaluate :func:`power_laws` at ``k >= 1``
    (``R_theory = D_theory / G_theory``, G scaled by ``noise_scale^2``); they are NaN at the input,
    for rectified noise (G, R) and where no law is derived (``attrs["theory"]`` says why).

    Returns:
        Columns ``depth, layer, D, D_theory, G, G_theory, R, R_theory, D_se, G_se, R_se, Z,
        activation, stride, filter_size, depth_total``.
    """
    exact = exact_sensitivities(
        dim=dim,
        depth=depth,
        filter_size=filter_size,
        stride=stride,
        activation=activation,
        **options,
    )
    k = exact["depth"].to_numpy(dtype=np.float64)
    nan = np.full_like(k, np.nan)
    d_theory, g_theory = nan.copy(), nan.copy()
    note = "power_laws"
    try:
        laws = power_laws(dim=dim, stride=stride, filter_size=filter_size, activation=activation)
    except DiffeoProbeError as exc:
        note = f"no law: {exc}"
    else:
        deep = k >= 1
        d_theory[deep] = laws.D(k[deep])
        if exact.attrs["noise"] == "matched":
            g_theory[deep] = laws.G(k[deep]) * exact.attrs["noise_scale"] ** 2
        else:
            note = "no law for G under rectified noise"
    table = exact.assign(D_theory=d_theory, G_theory=g_theory, R_theory=d_theory / g_theory)
    columns = ["depth", "layer", "D", "D_theory", "G", "G_theory", "R", "R_theory"]
    columns += ["D_se", "G_se", "R_se", "Z", "activation", "stride", "filter_size", "depth_total"]
    table = table[columns]
    table.attrs.update(exact.attrs, theory=note)
    return table


# ---------------------------------------------------------------------------------------------
# internals


def _check_size(size: int | None, dim: int, depth: int, filter_size: int, stride: int) -> int:
    if stride >= 2 and depth * math.log2(stride) > 64:  # before computing stride^depth exactly
        sides = 2.0 ** min(1000.0, 1 + depth * math.log2(stride))
        check_memory(
            "depth and stride",
            4.0 * sides**dim,
            f"the input (a side of at least 2 stride^depth = 2^{1 + depth * math.log2(stride):.0f})",
        )
    period: int = stride**depth
    field = receptive_field(depth, filter_size, stride)
    if size is None:
        side = max(SIZE_PER_FIELD * field, MIN_SIDE[dim], 2 * period)
        return period * math.ceil(side / period)
    size = check_int(size, "size", minimum=2)
    if size % period or size < 2 * period or size < field:
        raise DiffeoProbeError(
            f"size must be a multiple of stride^depth = {period}, at least {2 * period} (two units "
            f"in the last layer) and at least the receptive field {field}, got {size}"
        )
    return size


def _check_memory(
    name: str, probe: str | int, dim: int, size: int, period: int, field: int, copies: int
) -> None:
    """Refuse a measurement whose probe images, perturbed copies and forward passes would not fit.

    The probe set holds ``P`` images of ``size^dim`` pixels, built :data:`PROBE_CHUNK` at a time;
    measure repeats each ``copies`` times, deforms and adds noise (about ``1 + 4 copies`` images
    per probe), and a forward pass holds at least one probe's ``1 + 2 copies`` images, a few times
    over (input, padding, convolution, activation).
    """
    elements = float(size) ** dim
    if probe == "all":
        probes = elements
    elif probe == "lattice":
        probes = float(_lattice_count(size, period, field)) ** dim
    else:
        probes = float(probe)
    chunk = min(float(PROBE_CHUNK), probes)
    forward = max(float(ELEMENTS_PER_FORWARD), (1 + 2 * copies) * elements)
    needed = 8 * (probes + elements) + 4 * (chunk * elements * (1 + 4 * copies) + 4 * forward)
    check_memory(
        name,
        needed,
        f"the {dim}D input of side {size} ({probes:.3g} probes, {chunk:.0f} at a time, "
        f"{copies} perturbed cop{'y' if copies == 1 else 'ies'} each)",
    )


def _lattice_count(size: int, period: int, field: int) -> int:
    """Probes per axis of the lattice (see :func:`_lattice`)."""
    return period * math.ceil(max(LATTICE_MIN, size // field) / period)


def _lattice(size: int, period: int, field: int) -> np.ndarray:
    """Positions ``g j mod size`` for ``j < n``: every class modulo ``period`` equally often.

    ``n`` is the smallest multiple of ``period`` that is at least ``size / field`` (at stride 1:
    one probe per receptive field, so responses never overlap) and :data:`LATTICE_MIN`; the step
    ``g`` is the integer nearest ``size / n`` that is prime to ``period`` (so ``g j`` runs through
    the classes modulo ``period``) and gives distinct positions (no wrap, or ``g`` prime to
    ``size``).
    """
    n = _lattice_count(size, period, field)
    base = size // n
    for distance in range(size + 1):  # nearest to base first, the larger of two at equal distance
        for step in (base + distance, base - distance) if distance else (base,):
            if not 1 <= step <= size:
                continue
            if math.gcd(step, period) == 1 and (n * step <= size or math.gcd(step, size) == 1):
                return (np.arange(n) * step) % size
    raise AssertionError("step 1 always qualifies")


def _probe_positions(
    probe: str | int, dim: int, size: int, period: int, field: int, seed: int
) -> np.ndarray:
    """Flat indices of the active pixels, one per probe."""
    if probe == "all":
        return np.arange(size**dim)
    if probe == "lattice":
        axis = _lattice(size, period, field)
        return axis if dim == 1 else (axis[:, None] * size + axis[None, :]).ravel()
    order = torch.randperm(size**dim, generator=torch.Generator().manual_seed(seed))
    return np.sort(order[:probe].numpy())


def _probe_batches(
    positions: np.ndarray, dim: int, size: int, value: float
) -> Iterator[torch.Tensor]:
    for start in range(0, len(positions), PROBE_CHUNK):
        chunk = torch.from_numpy(positions[start : start + PROBE_CHUNK])
        x = torch.zeros(len(chunk), 1, size**dim)
        x[torch.arange(len(chunk)), 0, chunk] = value
        yield x.view(len(chunk), 1, *([size] * dim))


def _shift_by_one(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """1D: move every probe's pixel one step to the right, wrapping around."""
    return torch.roll(x, 1, dims=2)


def _moves_2d(group: int) -> Diffeo:
    """2D diffeo: copy ``j`` of each probe moves along ``MOVES_2D[j % 3]``, wrapping around.

    measure repeats each probe ``draws = group`` times in consecutive rows (``group`` a multiple of
    3); the check makes sure of that layout instead of assuming it.
    """
    moves = len(MOVES_2D)

    def shift_axes_and_diagonal(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        copies = torch.unflatten(x, 0, (-1, group)) if x.shape[0] % group == 0 else None
        if copies is None or not torch.equal(copies, copies[:, :1].expand_as(copies)):
            raise RuntimeError("measure no longer repeats each probe in consecutive rows")
        out = torch.empty_like(copies)
        for j, step in enumerate(MOVES_2D):
            out[:, j::moves] = torch.roll(copies[:, j::moves], step, dims=(3, 4))
        return out.flatten(0, 1)

    return shift_axes_and_diagonal


def _noise(rectified: bool, scale: float) -> Noise:
    def noise(x: torch.Tensor, xt: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return scale * matched_noise(x, xt, generator=generator, rectified=rectified)

    noise.__name__ = ("rectified" if rectified else "matched") + (
        f"x{scale:g}" if scale != 1 else ""
    )
    return noise


def _relu_kernel(rho: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``E[relu(X) relu(Y)]``, X and Y standard normal with correlation ``rho`` (arc-cosine)."""
    rho = np.clip(rho, -1.0, 1.0)
    return (np.sqrt(1 - rho**2) + rho * (np.pi - np.arccos(rho))) / (2 * np.pi)


def _stride1_offset(filter_size: int, dim: int) -> float:
    """``C``: summed covariance of the first ReLU layer's noise over the input noise variance."""
    lags = np.arange(-(filter_size - 1), filter_size)
    rho = (filter_size - np.abs(lags)) / filter_size
    if dim == 2:
        rho = np.multiply.outer(rho, rho)
    return float((_relu_kernel(rho) - 1 / (2 * np.pi)).sum() / filter_size**dim)


_ALPHA_GRID = np.linspace(-4.0, 4.0, 801)
_REFINE_STEPS = 4


def _fit_with_offset(k: np.ndarray, values: np.ndarray, kind: str) -> Law:
    def best(alpha: float) -> tuple[float, float, float]:
        core = k**alpha if kind == "power" else np.exp(alpha * k)
        design = np.stack([core / values, 1 / values], axis=1)
        (a, c), *_ = np.linalg.lstsq(design, np.ones_like(values), rcond=None)
        return float(np.sum((design @ [a, c] - 1) ** 2)), float(a), float(c)

    grid = _ALPHA_GRID
    for _ in range(_REFINE_STEPS):
        errors = [best(a)[0] for a in grid]
        i = int(np.argmin(errors))
        step = grid[1] - grid[0]
        grid = np.linspace(grid[i] - step, grid[i] + step, 201)
    alpha = float(grid[np.argmin([best(a)[0] for a in grid])])
    _, a, c = best(alpha)
    return Law(kind, alpha, a, c)
