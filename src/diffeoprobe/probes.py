"""Probes of the two pooling mechanisms (docs/science.md section 5).

- **Spatial pooling.** :func:`filter_spectrum` projects every filter of every convolution on the
  eigenmodes of the Laplacian of the filter's grid (:func:`laplacian_eigenbasis`) and reports the
  fraction of filter energy per mode; mode 0 (eigenvalue 0) is the constant, averaging filter.
- **Channel pooling.** :func:`channel_shuffle` permutes the input-channel index of every
  convolution's weights, which keeps each filter's spatial shape and destroys the learned
  combination of channels; :func:`shuffled_sensitivities` measures D_k, G_k, R_k of the model and
  of shuffled copies on the same probe draws; :func:`pooling_shares` splits the stability
  log10(R_input / R_k) into the part lost by shuffling (channel pooling) and the rest.

Conventions and the decomposition are in docs/probes.md.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.measurement import measure
from diffeoprobe.measurement.core import MeasureOptions, ProbeData
from diffeoprobe.validate import check_int, check_seed, check_size

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's from Python 3.11

__all__ = [
    "CONVOLUTIONS",
    "channel_shuffle",
    "filter_spectrum",
    "laplacian_eigenbasis",
    "pooling_shares",
    "shuffled_sensitivities",
]

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d)
"""The layers the probes act on (subclasses included); transposed and 3D convolutions are not."""

DEGENERACY_TOL = 1e-9
"""Eigenvalues closer than this (relative to the largest, or absolute below 1) count as equal."""

_FILTER_CHUNK = 1 << 16  # filters projected at once: bounds memory on 512 x 512 layers
_SHUFFLE_STREAM = (
    0x5EED_C4A1  # mixed into the shuffle seeds, apart from measure's perturbation seeds
)
_MEASURED = ("D", "G", "R", "Z")
_LN10 = math.log(10.0)


# --------------------------------------------------------------------------- spatial pooling


def laplacian_eigenbasis(shape: int | tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and orthonormal eigenvectors of the Laplacian ``L = D - A`` of a filter's grid.

    The grid is the path graph of length ``F`` (1D) or the 4-neighbour ``H x W`` grid graph (2D),
    with free (Neumann) boundary: border nodes simply have fewer neighbours. Its modes are
    separable (products of the path-graph modes, a DCT-II basis):

        lambda_k = 2 - 2 cos(pi k / F),   v_k(n) = c_k cos(pi k (n + 1/2) / F),   k = 0 .. F - 1

    (``c_0 = 1/sqrt(F)``, else ``sqrt(2/F)``; in 2D ``lambda = lambda_kh + lambda_kw``). Modes are
    ordered by eigenvalue; equal eigenvalues (the pairs ``(kh, kw)``, ``(kw, kh)`` of a square grid,
    and accidental ones, to :data:`DEGENERACY_TOL`) get exactly the same value and keep the order
    of ``(kh, kw)``. Mode 0 is the constant filter, eigenvalue exactly 0. Every mode is positive at
    the first pixel of each axis. Pure and cached; the arrays are read-only.

    Args:
        shape: the kernel's spatial shape: ``F`` or ``(F,)`` (1D), ``(H, W)`` (2D).

    Returns:
        ``(eigenvalues, modes)``: float64 arrays of shapes ``(N,)`` and ``(N, *shape)``,
        ``N = prod(shape)``; ``modes[m]`` is mode ``m`` laid out as a filter.

    Example:
        >>> lam, modes = laplacian_eigenbasis((3, 3))
        >>> lam.round(3).tolist()
        [0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 6.0]
        >>> bool(np.allclose(modes[0], 1 / 3))  # the averaging filter
        True
    """
    return _eigenbasis(check_size(shape, "shape"))


@lru_cache(maxsize=64)
def _eigenbasis(sides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    path = [_path_modes(n) for n in sides]
    if len(sides) == 1:
        lam, modes = path[0]
    else:
        (lam_h, v_h), (lam_w, v_w) = path
        lam = (lam_h[:, None] + lam_w[None, :]).ravel()
        modes = np.einsum("ai,bj->abij", v_h, v_w).reshape(-1, *sides)
    order = np.argsort(lam, kind="stable")
    tol = DEGENERACY_TOL * max(1.0, float(lam.max()))
    group = np.concatenate([[0], np.cumsum(np.diff(lam[order]) > tol)])
    order = order[np.lexsort((order, group))]  # by eigenvalue, then (kh, kw)
    snapped = (np.bincount(group, lam[order]) / np.bincount(group))[group]
    modes = np.ascontiguousarray(modes[order])
    snapped.flags.writeable = False
    modes.flags.writeable = False
    return snapped, modes


def _path_modes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``(n,)`` and rows ``(n, n)`` of the Neumann path-graph Laplacian."""
    k = np.arange(n)
    lam = 2.0 - 2.0 * np.cos(np.pi * k / n)
    vecs = np.cos(np.pi * k[:, None] * (k[None, :] + 0.5) / n)
    vecs *= np.where(k == 0, math.sqrt(1.0 / n), math.sqrt(2.0 / n))[:, None]
    return lam, vecs


def filter_spectrum(model: nn.Module, *, group_degenerate: bool = False) -> pd.DataFrame:
    """Fraction of filter energy in each eigenmode of the grid Laplacian, convolution by convolution.

    Every filter ``w[o, i]`` (one per output channel ``o`` and input channel ``i`` of the group,
    shape ``kernel_size``) is projected on the modes of :func:`laplacian_eigenbasis` of its own
    kernel shape: ``e[f, m] = <w_f, v_m>^2``, ``E_f = sum_m e[f, m] = ||w_f||^2``. Per layer:

    - ``energy_fraction`` = ``sum_f e[f, m] / sum_f E_f``, the fraction of the layer's total
      filter energy in mode m (docs/science.md section 5). It is the mean of the per-filter normalised
      distributions ``p[f, m] = e[f, m] / E_f`` weighted by ``E_f``; ``energy_fraction_se`` treats
      each filter's ``p[f]`` as one sample (delta method for the ratio):
      ``se^2 = n / (n - 1) * sum_f (e[f, m] - F_m E_f)^2 / (sum_f E_f)^2``.
    - ``mean_fraction``: the unweighted mean of ``p[f, m]`` over filters, ``mean_fraction_se``
      its standard error (std / sqrt(n)); all filters count the same, whatever their norm.

    ``n`` counts the filters of non-zero norm (zero filters carry no distribution). Biases are
    not filters and are ignored. A 1 x 1 convolution has one mode, holding all its energy.

    Args:
        model: any module; its :data:`CONVOLUTIONS` are analysed in module order
            (``model.named_modules()``), a module shared by several paths once.
        group_degenerate: sum the energies of modes with equal eigenvalues (to
            :data:`DEGENERACY_TOL`): one row per distinct eigenvalue, ``mode`` then indexes the
            distinct eigenvalues.

    Returns:
        One row per (convolution, mode), columns ``layer`` (the module path, as in
        :func:`~diffeoprobe.measurement.measure` tables), ``conv_index`` (0-based among the
        convolutions), ``rel_depth`` (``(conv_index + 1) / number of convolutions``: the last is
        1), ``module_index`` (position among the model's leaf modules, registration order),
        ``kernel`` (e.g. ``"3x3"``), ``filters`` (out x in/groups), ``mode``, ``eigenvalue``,
        ``multiplicity`` (modes sharing the eigenvalue), ``energy_fraction``,
        ``energy_fraction_se``, ``mean_fraction``, ``mean_fraction_se``. Fractions of a layer sum
        to 1.

    Example:
        >>> conv = nn.Conv2d(2, 4, 3)
        >>> _ = conv.weight.data.fill_(1.0)  # averaging filters
        >>> tab = filter_spectrum(nn.Sequential(conv, nn.ReLU()), group_degenerate=True)
        >>> tab["eigenvalue"].round(6).tolist(), tab["multiplicity"].tolist()
        ([0.0, 1.0, 2.0, 3.0, 4.0, 6.0], [1, 2, 1, 2, 2, 1])
        >>> tab["energy_fraction"].round(6).tolist()
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """
    convs = _convolutions(model)
    if not isinstance(group_degenerate, bool):
        raise DiffeoProbeError(f"group_degenerate must be True or False, got {group_degenerate!r}")
    rows = []
    for conv_index, (name, module_index, conv) in enumerate(convs):
        kernel = tuple(conv.weight.shape[2:])
        lam, modes = laplacian_eigenbasis(kernel)
        values, group, multiplicity = np.unique(lam, return_inverse=True, return_counts=True)
        merge = np.zeros((len(lam), len(values) if group_degenerate else len(lam)))
        merge[np.arange(len(lam)), group if group_degenerate else np.arange(len(lam))] = 1.0
        stats = _spectrum(conv.weight, modes.reshape(len(lam), -1), merge)
        eigenvalues = values if group_degenerate else lam
        counts = multiplicity if group_degenerate else multiplicity[group]
        for mode in range(merge.shape[1]):
            rows.append(
                dict(
                    layer=name,
                    conv_index=conv_index,
                    rel_depth=(conv_index + 1) / len(convs),
                    module_index=module_index,
                    kernel="x".join(map(str, kernel)),
                    filters=conv.weight.shape[0] * conv.weight.shape[1],
                    mode=mode,
                    eigenvalue=float(eigenvalues[mode]),
                    multiplicity=int(counts[mode]),
                    **{key: float(column[mode]) for key, column in stats.items()},
                )
            )
    return pd.DataFrame(rows)


def _spectrum(weight: torch.Tensor, basis: np.ndarray, merge: np.ndarray) -> dict[str, np.ndarray]:
    """Energy fractions and their errors for one convolution; ``basis`` ``(N, N)`` rows = modes,
    ``merge`` ``(N, M)`` sums modes into the reported columns.
    """
    w = weight.detach().reshape(-1, basis.shape[1])

    def energies() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, w.shape[0], _FILTER_CHUNK):
            chunk = w[start : start + _FILTER_CHUNK].to("cpu", torch.float64).numpy()
            e = np.square(chunk @ basis.T) @ merge
            norm = e.sum(1)
            yield e[norm > 0], norm[norm > 0]

    n, total_e, total_norm, total_p = 0, np.zeros(merge.shape[1]), 0.0, np.zeros(merge.shape[1])
    for e, norm in energies():
        n += len(norm)
        total_e += e.sum(0)
        total_norm += norm.sum()
        total_p += (e / norm[:, None]).sum(0)
    if n == 0:
        nan = np.full(merge.shape[1], np.nan)
        return dict(
            energy_fraction=nan, energy_fraction_se=nan, mean_fraction=nan, mean_fraction_se=nan
        )
    pooled, mean = total_e / total_norm, total_p / n
    res_pooled, res_mean = np.zeros_like(pooled), np.zeros_like(mean)
    for e, norm in energies():
        res_pooled += np.square(e - pooled * norm[:, None]).sum(0)
        res_mean += np.square(e / norm[:, None] - mean).sum(0)
    dof = n - 1 if n > 1 else np.nan
    return dict(
        energy_fraction=pooled,
        energy_fraction_se=np.sqrt(n / dof * res_pooled) / total_norm,
        mean_fraction=mean,
        mean_fraction_se=np.sqrt(res_mean / dof / n),
    )


def _convolutions(model: nn.Module) -> list[tuple[str, int, nn.Conv1d | nn.Conv2d]]:
    """``(path, index among leaf modules, module)`` of every convolution, in module order."""
    if not isinstance(model, nn.Module):
        raise DiffeoProbeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    leaves = [(name, m) for name, m in model.named_modules() if not any(m.children())]
    convs = [(name, i, m) for i, (name, m) in enumerate(leaves) if isinstance(m, CONVOLUTIONS)]
    if not convs:
        raise DiffeoProbeError(
            f"model: {type(model).__name__} has no Conv1d or Conv2d layer; the pooling probes need at least one convolution"
        )
    return convs


# --------------------------------------------------------------------------- channel pooling


def channel_shuffle(
    model: nn.Module, *, generator: torch.Generator, per_filter: bool = True
) -> nn.Module:
    """A deep copy of ``model`` with the input-channel index of every convolution's weight permuted.

    A weight ``(out, in / groups, *kernel)`` becomes ``w[o, j] <- w[o, perm_o[j]]``:

    - ``per_filter=True``: each output filter ``o`` gets its own independent uniform permutation
      ``perm_o``: every filter keeps its spatial shape and its multiset of weights, and the learned
      combination of channels is destroyed (docs/science.md section 5).
    - ``per_filter=False``: one permutation shared by all filters of a convolution, i.e. the
      convolution reads a fixed permutation of its input channels.

    Grouped convolutions (``groups > 1``) are permuted within each group only: the weight's second
    axis already indexes the channels of the filter's own group (with ``per_filter=False``, one
    permutation per group). Depthwise convolutions (one input channel per group) are left as
    they are: they combine no channels. Biases, norms and every other layer are untouched (so a
    BatchNorm after a shuffled convolution keeps its running statistics); a weight shared by
    several modules is permuted once. ``model`` itself is not modified.

    Args:
        model: any module with at least one of :data:`CONVOLUTIONS`.
        generator: the source of the permutations (drawn in float64 on its device, in module
            order): the same generator state gives the same copy.
        per_filter: one permutation per output filter (default) or per convolution (per group).

    Returns:
        The shuffled copy, on the same device, in the same train/eval mode.

    Example:
        >>> conv = nn.Conv1d(3, 2, 1, bias=False)
        >>> conv.weight.data = torch.arange(6.0).view(2, 3, 1)
        >>> shuffled = channel_shuffle(conv, generator=torch.Generator().manual_seed(0))
        >>> shuffled.weight.sort(1).values.equal(conv.weight)  # each filter keeps its weights
        True
    """
    _convolutions(model)
    if not isinstance(generator, torch.Generator):
        raise DiffeoProbeError(
            f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), got {type(generator).__name__}"
        )
    if not isinstance(per_filter, bool):
        raise DiffeoProbeError(f"per_filter must be True or False, got {per_filter!r}")
    shuffled = copy.deepcopy(model)
    seen: set[int] = set()
    with torch.no_grad():
        for _, _, conv in _convolutions(shuffled):
            weight = conv.weight
            if id(weight) in seen:
                continue
            seen.add(id(weight))
            out, per_group = weight.shape[:2]
            rows = out if per_filter else conv.groups
            keys = torch.rand(
                rows, per_group, generator=generator, device=generator.device, dtype=torch.float64
            )
            perm = keys.argsort(dim=1, stable=True).to(weight.device)
            if not per_filter:
                perm = perm.repeat_interleave(out // conv.groups, 0)
            index = perm.view(out, per_group, *[1] * (weight.dim() - 2)).expand_as(weight)
            weight.copy_(weight.gather(1, index))
    return shuffled


def shuffled_sensitivities(
    model: nn.Module,
    data: ProbeData,
    *,
    permutations: int = 5,
    seed: int = 0,
    per_filter: bool = True,
    **measure_options: Unpack[MeasureOptions],
) -> pd.DataFrame:
    """D_k, G_k, R_k of ``model`` and of channel-shuffled copies, paired on the same probe draws.

    Measures ``model`` and ``permutations`` copies from :func:`channel_shuffle` (the p-th drawn
    from a generator seeded with ``(seed, p)``), every measurement with the same ``seed`` and so the
    same probe images, diffeomorphisms and noises: the comparison is paired.

    The shuffled rows are the mean over permutations of D, G, R, Z, and each error combines, in
    quadrature, the spread over permutations and the mean error of one measurement:
    ``X_se = sqrt(std_p(X)^2 / permutations + mean_p(X_se)^2)`` (std with ddof 1; the spread term
    is 0 for ``permutations=1``). The measurement errors are not divided by ``sqrt(permutations)``:
    all measurements share the probe draws, so their errors are strongly correlated.

    Args:
        model: a module with at least one of :data:`CONVOLUTIONS`.
        data: probe images as for :func:`~diffeoprobe.measurement.measure`; read ``1 + permutations``
            times, so a tensor, a Dataset or a DataLoader, not a one-shot iterator.
        permutations: shuffled copies to average, >= 1.
        seed: seeds the probe draws of every measurement and the permutations.
        per_filter: passed to :func:`channel_shuffle`.
        **measure_options: passed to :func:`~diffeoprobe.measurement.measure` (``delta``,
            ``probe_size``, ``layers``, ``channel_mean``, ``device``, ...).

    Returns:
        The rows of the original model (``variant="original"``) then the shuffled means
        (``variant="shuffled"``), columns ``variant`` followed by the columns of ``measure``
        (``layer, module, depth, rel_depth`` from the original) and ``permutations`` (0 for the
        original). ``attrs`` holds the measurement's settings plus ``permutations`` and
        ``per_filter``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten())
        >>> x = torch.rand(12, 2, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> tab = shuffled_sensitivities(net, x, permutations=2)
        >>> tab.groupby("variant", sort=False).size().to_dict()
        {'original': 4, 'shuffled': 4}
    """
    _convolutions(model)
    permutations = check_int(permutations, "permutations", minimum=1)
    seed = check_seed(seed)
    if isinstance(data, Iterator):
        raise DiffeoProbeError(
            "data: a one-shot iterator cannot be measured several times; pass a tensor, a Dataset or a DataLoader"
        )
    original = measure(model, data, seed=seed, **measure_options)
    tables = [
        measure(
            channel_shuffle(model, generator=_shuffle_generator(seed, p), per_filter=per_filter),
            data,
            seed=seed,
            **measure_options,
        )
        for p in range(permutations)
    ]
    shuffled = original.copy()
    for key in _MEASURED:
        values = np.stack([t[key].to_numpy() for t in tables])
        errors = np.stack([t[f"{key}_se"].to_numpy() for t in tables])
        spread = values.std(0, ddof=1) if permutations > 1 else np.zeros(values.shape[1])
        shuffled[key] = values.mean(0)
        shuffled[f"{key}_se"] = np.sqrt(spread**2 / permutations + errors.mean(0) ** 2)
    table = pd.concat(
        [original.assign(permutations=0), shuffled.assign(permutations=permutations)],
        ignore_index=True,
    )
    table.insert(0, "variant", ["original"] * len(original) + ["shuffled"] * len(shuffled))
    table.attrs.update(original.attrs, permutations=permutations, per_filter=per_filter)
    return table


def _shuffle_generator(seed: int, permutation: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, _SHUFFLE_STREAM, permutation]).generate_state(
        1, np.uint64
    )
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


# --------------------------------------------------------------------------- decomposition


def pooling_shares(
    original: pd.DataFrame,
    shuffled: pd.DataFrame | None = None,
    channel_mean_table: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Split each layer's stability into the parts owed to channel and to spatial pooling.

    With ``R_in`` the input row's R of the original table (1 for matched noise), ``R_k`` the
    original model's and ``R_k^shuf`` the shuffled model's R at layer k (all in log10 units,
    "decades" of R):

        stability_k        = log10(R_in / R_k)         what the network achieved by layer k
        channel_pooling_k  = log10(R_k^shuf / R_k)     lost when the channel combinations are shuffled
        spatial_pooling_k  = log10(R_in / R_k^shuf)    what survives shuffling
        channel_fraction_k = channel_pooling_k / stability_k

    so ``stability = channel_pooling + spatial_pooling`` exactly. With ``channel_mean_table`` (a
    ``measure(..., channel_mean=True)`` table of the original model), an independent estimate of the
    spatial part is added: ``spatial_channel_mean_k = log10(R_in^cm / R_k^cm)``, each R from that
    table (its own input row as reference); it is not part of the sum.

    Errors are propagated to first order from the R_se of the tables, as if the tables were
    independent: ``se(log10 R) = R_se / (R ln 10)``, summed in quadrature; the original and
    shuffled measurements share their probe draws, so their errors are positively correlated and
    these error bars are conservative. ``channel_fraction_se`` by the delta method over
    ``ln R_in, ln R_k, ln R_k^shuf``; it is large where the stability is close to 0.

    Args:
        original: a :func:`~diffeoprobe.measurement.measure` table of the trained model, with an
            ``input`` row, or a :func:`shuffled_sensitivities` table (then ``shuffled`` is None
            and both are read from its ``variant`` column).
        shuffled: the same measurement of the shuffled model (e.g. the ``shuffled`` rows of
            :func:`shuffled_sensitivities`).
        channel_mean_table: optional channel-averaged measurement of the original model.

    Returns:
        One row per layer present in both tables, in the original's order, columns ``layer,
        module, depth, rel_depth, R_original, R_shuffled, stability, stability_se,
        channel_pooling, channel_pooling_se, spatial_pooling, spatial_pooling_se,
        channel_fraction, channel_fraction_se`` (and ``spatial_channel_mean``,
        ``spatial_channel_mean_se``).

    Example:
        >>> row = dict(module="", depth=0, rel_depth=0.0, R_se=0.0)
        >>> orig = pd.DataFrame([dict(row, layer="input", R=1.0), dict(row, layer="out", R=0.01)])
        >>> shuf = pd.DataFrame([dict(row, layer="input", R=1.0), dict(row, layer="out", R=0.1)])
        >>> pooling_shares(orig, shuf).loc[1, ["stability", "channel_pooling", "spatial_pooling"]].tolist()
        [2.0, 1.0, 1.0]
    """
    if shuffled is None:
        original, shuffled = _split_variants(original)
    orig = _indexed(original, "original")
    shuf = _indexed(shuffled, "shuffled")
    r_in, s_in = _input_log(orig, "original")
    common = [name for name in orig.index if name in shuf.index]
    if not common:
        raise DiffeoProbeError("shuffled: no layer in common with original")
    orig, shuf = orig.loc[common], shuf.loc[common]
    a, sa = _log10(orig)
    b, sb = _log10(shuf)
    stability, channel, spatial = r_in - a, b - a, r_in - b
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = channel / stability
        # d f / d(a, b, r_in) for f = (b - a) / (r_in - a)
        fraction_se = np.sqrt(
            ((b - r_in) / stability**2 * sa) ** 2
            + (sb / stability) ** 2
            + (channel / stability**2 * s_in) ** 2
        )
    table = orig[["module", "depth", "rel_depth"]].reset_index()
    table = table.assign(
        R_original=orig["R"].to_numpy(),
        R_shuffled=shuf["R"].to_numpy(),
        stability=stability,
        stability_se=np.hypot(sa, s_in),
        channel_pooling=channel,
        channel_pooling_se=np.hypot(sa, sb),
        spatial_pooling=spatial,
        spatial_pooling_se=np.hypot(sb, s_in),
        channel_fraction=fraction,
        channel_fraction_se=fraction_se,
    )
    if channel_mean_table is not None:
        cm = _indexed(channel_mean_table, "channel_mean_table")
        c_in, sc_in = _input_log(cm, "channel_mean_table")
        c, sc = _log10(cm.reindex(common))
        table["spatial_channel_mean"] = c_in - c
        table["spatial_channel_mean_se"] = np.hypot(sc, sc_in)
    return table


def _split_variants(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not isinstance(table, pd.DataFrame) or "variant" not in table:
        raise DiffeoProbeError(
            "shuffled: give the shuffled table, or pass a shuffled_sensitivities table (with a 'variant' column) as original"
        )
    parts = {v: table[table["variant"] == v] for v in ("original", "shuffled")}
    if any(part.empty for part in parts.values()):
        raise DiffeoProbeError(
            f"original: the 'variant' column must hold 'original' and 'shuffled' rows, got {sorted(table['variant'].unique())}"
        )
    return parts["original"], parts["shuffled"]


def _indexed(table: object, name: str) -> pd.DataFrame:
    required = {"layer", "module", "depth", "rel_depth", "R", "R_se"}
    if not isinstance(table, pd.DataFrame) or not required <= set(table.columns):
        missing = sorted(required - set(getattr(table, "columns", [])))
        raise DiffeoProbeError(f"{name} must be a measure table; missing columns {missing}")
    if table["layer"].duplicated().any():
        raise DiffeoProbeError(
            f"{name}: each layer must appear once (one model, one measurement); average over seeds first"
        )
    return table.set_index("layer")


def _input_log(table: pd.DataFrame, name: str) -> tuple[float, float]:
    if "input" not in table.index:
        raise DiffeoProbeError(
            f"{name}: no 'input' row, the reference R_in of the stability; measure with layers=None or include 'input'"
        )
    value, error = _log10(table.loc[["input"]])
    return float(value[0]), float(error[0])


def _log10(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """log10 R and its first-order error ``R_se / (R ln 10)``."""
    r = table["R"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(r), table["R_se"].to_numpy(dtype=float) / (r * _LN10)
