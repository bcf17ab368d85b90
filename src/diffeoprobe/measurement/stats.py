"""Streaming sums for the sensitivities D_k, G_k, R_k of one representation (docs/science.md section 4).

Pure tensor maths, no model: :class:`SensitivitySums` is fed one batch at a time with the clean
representations ``a_i = f_k(x_i)`` and the per-image squared distances

    d_i = mean over draws of ||f_k(tau x_i) - f_k(x_i)||^2
    g_i = mean over draws of ||f_k(x_i + eta_i) - f_k(x_i)||^2

and keeps only float64 sums, so memory does not grow with the number of probe images P and
nothing is O(P^2). :meth:`SensitivitySums.result` turns them into

    Z   = mean over pairs i != j of ||a_i - a_j||^2 = 2 P / (P - 1) * (mean ||a||^2 - ||mean a||^2)
    D   = mean_i d_i / Z,   G = mean_i g_i / Z,   R = D / G = sum_i d_i / sum_i g_i

with standard errors, all by first-order propagation (delta method) over images: Z is, up to
O(1/P) terms, 2 P/(P - 1) times the mean of ``s_i = ||a_i - ref||^2`` minus a constant, so

    (D_se / D)^2 = (var d / dbar^2 + var s / sbar^2 - 2 cov(d, s) / (dbar sbar)) / P

(sbar the centred mean, Z (P - 1) / (2 P)); the same for G with g; R = sum d / sum g does not
depend on Z: (R_se / R)^2 = (var d / dbar^2 + var g / gbar^2 - 2 cov(d, g) / (dbar gbar)) / P.
``ref`` is the first batch's mean, a close stand-in for the final mean in ``s_i`` (the difference
is of order 1/sqrt(batch) and enters the error bars at second order). tests/test_stats.py
checks the error bars against a bootstrap over images.

The reference code averages over all pairs including i = j; that Z is (P - 1) / P times ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "Sensitivity",
    "SensitivitySums",
]


@dataclass(frozen=True)
class Sensitivity:
    """Final statistics of one representation. ``n`` is the number of probe images."""

    D: float
    G: float
    R: float
    D_se: float
    G_se: float
    R_se: float
    Z: float
    Z_se: float
    n: int


class SensitivitySums:
    """Float64 running sums for one layer (all on the device of the first batch).

    To keep the subtraction ``mean ||a||^2 - ||mean a||^2`` well conditioned, sums are taken of
    ``a - ref`` where ``ref`` is the mean representation of the first batch (Z is shift invariant).

    >>> sums = SensitivitySums()
    >>> a = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> sums.update(a, d=torch.tensor([1.0, 2.0, 3.0]), g=torch.tensor([2.0, 2.0, 2.0]))
    >>> s = sums.result()
    >>> round(s.Z, 6), round(s.R, 6)  # pairs at distance^2 1, 1, 2 -> Z = 4/3; R = 6 / 6
    (1.333333, 1.0)
    """

    def __init__(self) -> None:
        self.n = 0
        self._ref: torch.Tensor | None = None
        self._sum_a: torch.Tensor | None = None  # sum_i (a_i - ref), shape (F,)
        self._sum_a2: torch.Tensor | None = None  # sum_i ||a_i - ref||^2
        self._moments: torch.Tensor | None = None  # sums of d, g, s, d^2, g^2, s^2, dg, ds, gs

    def update(self, clean: torch.Tensor, d: torch.Tensor, g: torch.Tensor) -> None:
        """Add one batch.

        Args:
            clean: ``(B, F)`` clean representations, float32 or float64.
            d: ``(B,)`` per-image squared distance under the diffeomorphism.
            g: ``(B,)`` per-image squared distance under the noise.
        """
        centred = clean - self.reference(clean)
        squared = torch.linalg.vector_norm(centred, dim=1).double().square()
        self.add(centred.sum(0), squared, d, g)

    def reference(self, clean: torch.Tensor) -> torch.Tensor:
        """``(F,)``: the reference ``ref``, set from ``clean`` (``(B, F)``) on the first call."""
        if self._ref is None:
            self._ref = clean.mean(0)
            self._sum_a = torch.zeros(clean.shape[1], dtype=torch.float64, device=clean.device)
            self._sum_a2 = torch.zeros((), dtype=torch.float64, device=clean.device)
            self._moments = torch.zeros(9, dtype=torch.float64, device=clean.device)
        return self._ref

    def add(
        self, centred_sum: torch.Tensor, squared: torch.Tensor, d: torch.Tensor, g: torch.Tensor
    ) -> None:
        """Add one batch given its reductions (after :meth:`reference` was set).

        Args:
            centred_sum: ``(F,)`` the batch sum of ``a_i - ref``.
            squared: ``(B,)`` the ``s_i = ||a_i - ref||^2``.
            d: ``(B,)`` per-image squared distance under the diffeomorphism.
            g: ``(B,)`` per-image squared distance under the noise.
        """
        sum_a, sum_a2, moments = self._running()
        sum_a.add_(centred_sum.double())  # batch sums are short: input precision suffices
        sq, d, g = squared.double(), d.double(), g.double()
        sum_a2.add_(sq.sum())
        moments.add_(
            torch.stack(
                [
                    d.sum(),
                    g.sum(),
                    sq.sum(),
                    d.square().sum(),
                    g.square().sum(),
                    sq.square().sum(),
                    (d * g).sum(),
                    (d * sq).sum(),
                    (g * sq).sum(),
                ]
            )
        )
        self.n += squared.shape[0]

    def _running(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The running sums of ``a - ref``, of ``||a - ref||^2`` and the moments."""
        if self._sum_a is None or self._sum_a2 is None or self._moments is None:
            raise ValueError("no reference yet: call reference() before add()")
        return self._sum_a, self._sum_a2, self._moments

    def is_finite(self) -> bool:
        """Whether every running sum is finite (a NaN or an infinite representation or distance
        makes D, G, R and their errors meaningless, not merely undefined as 0/0 is).
        """
        return all(
            bool(torch.isfinite(t).all())
            for t in (self._sum_a, self._sum_a2, self._moments)
            if t is not None
        )

    def result(self) -> Sensitivity:
        """D, G, R and their standard errors; needs at least two images."""
        if self.n < 2:
            raise ValueError(
                f"need at least 2 probe images to compute the pairwise denominator, got {self.n}"
            )
        n = self.n
        sum_a, sum_a2, moments = self._running()
        mean_a = sum_a / n
        variance = (sum_a2 / n - mean_a.square().sum()).item()
        z = 2.0 * n / (n - 1) * variance
        md, mg, ms, mdd, mgg, mss, mdg, mds, mgs = (v / n for v in moments.tolist())
        unbias = n / (n - 1)
        var_d, var_g, var_s = (
            max(m2 - m * m, 0.0) * unbias for m, m2 in ((md, mdd), (mg, mgg), (ms, mss))
        )
        cov_dg, cov_ds, cov_gs = (
            (mxy - mx * my) * unbias
            for mx, my, mxy in ((md, mg, mdg), (md, ms, mds), (mg, ms, mgs))
        )
        return Sensitivity(
            D=_ratio(md, z),
            G=_ratio(mg, z),
            R=_ratio(md, mg),
            D_se=_ratio(md, z) * _relative_error(md, variance, var_d, var_s, cov_ds, n),
            G_se=_ratio(mg, z) * _relative_error(mg, variance, var_g, var_s, cov_gs, n),
            R_se=_ratio(md, mg) * _relative_error(md, mg, var_d, var_g, cov_dg, n),
            Z=z,
            Z_se=z * math.sqrt(var_s / n) / variance if variance > 0 else math.nan,
            n=n,
        )


def _relative_error(x: float, y: float, var_x: float, var_y: float, cov: float, n: int) -> float:
    """First-order relative standard error of a ratio of means x / y over n images."""
    if x <= 0 or y <= 0:
        return math.nan if x != 0 or y == 0 else 0.0
    return math.sqrt(max((var_x / x**2 + var_y / y**2 - 2 * cov / (x * y)) / n, 0.0))


def _ratio(num: float, den: float) -> float:
    """``num / den`` with IEEE semantics (0/0 = nan, x/0 = inf) and no Python exception."""
    if den != 0:
        return num / den
    if num == 0 or math.isnan(num):
        return math.nan
    return math.copysign(math.inf, num)
