"""Streaming sums for the sensitivities D_k, G_k, R_k of one representation (science.md section 4).

Pure tensor maths, no model: :class:`SensitivitySums` is fed one batch at a time with the clean
representations ``a_i = f_k(x_i)`` and the per-image squared distances

    d_i = mean over draws of ||f_k(tau x_i) - f_k(x_i)||^2
    g_i = mean over draws of ||f_k(x_i + eta_i) - f_k(x_i)||^2

and keeps only float64 sums, so memory does not grow with the number of probe images P and
nothing is O(P^2). :meth:`SensitivitySums.result` turns them into

    Z   = mean over pairs i != j of ||a_i - a_j||^2 = 2 P / (P - 1) * (mean ||a||^2 - ||mean a||^2)
    D   = mean_i d_i / Z,   G = mean_i g_i / Z,   R = D / G = sum_i d_i / sum_i g_i

with standard errors. Errors: the numerators' errors come from the per-image spread
(``std(d) / sqrt(P)``); the error of the pairwise denominator Z is of relative order
``1 / sqrt(P)`` times the spread of ``||a_i - mean a||^2`` but enters D and G as a common factor,
and is neglected (for P in the hundreds it is a few per cent of the numerator's error at most);
R does not depend on Z, and its error is propagated to first order (delta method) from the
variances and the covariance of d and g over images.

The reference code averages over all pairs including i = j; that Z is (P - 1) / P times ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


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
        self._moments: torch.Tensor | None = None  # sums of d, g, d^2, g^2, d*g

    def update(self, clean: torch.Tensor, d: torch.Tensor, g: torch.Tensor) -> None:
        """Add one batch.

        Args:
            clean: ``(B, F)`` clean representations, float32 or float64.
            d: ``(B,)`` per-image squared distance under the diffeomorphism.
            g: ``(B,)`` per-image squared distance under the noise.
        """
        if self._ref is None:
            self._ref = clean.mean(0)
            self._sum_a = torch.zeros(clean.shape[1], dtype=torch.float64, device=clean.device)
            self._sum_a2 = torch.zeros((), dtype=torch.float64, device=clean.device)
            self._moments = torch.zeros(5, dtype=torch.float64, device=clean.device)
        centred = clean - self._ref
        self._sum_a += centred.sum(0).double()  # batch sums are short: input precision suffices
        self._sum_a2 += torch.linalg.vector_norm(centred, dim=1).double().square().sum()
        d, g = d.double(), g.double()
        self._moments += torch.stack(
            [d.sum(), g.sum(), d.square().sum(), g.square().sum(), (d * g).sum()]
        )
        self.n += clean.shape[0]

    def result(self) -> Sensitivity:
        """D, G, R and their standard errors; needs at least two images."""
        if self.n < 2:
            raise ValueError(
                f"need at least 2 probe images to compute the pairwise denominator, got {self.n}"
            )
        n = self.n
        mean_a = self._sum_a / n
        variance = (self._sum_a2 / n - mean_a.square().sum()).item()
        z = 2.0 * n / (n - 1) * variance
        sd, sg, sdd, sgg, sdg = (v / n for v in self._moments.tolist())
        var_d = max(sdd - sd * sd, 0.0) * n / (n - 1)
        var_g = max(sgg - sg * sg, 0.0) * n / (n - 1)
        cov_dg = (sdg - sd * sg) * n / (n - 1)
        r = _ratio(sd, sg)
        if sd > 0 and sg > 0:
            rel2 = (var_d / sd**2 + var_g / sg**2 - 2 * cov_dg / (sd * sg)) / n
            r_se = r * math.sqrt(max(rel2, 0.0))
        else:
            r_se = math.nan
        return Sensitivity(
            D=_ratio(sd, z),
            G=_ratio(sg, z),
            R=r,
            D_se=_ratio(math.sqrt(var_d / n), z),
            G_se=_ratio(math.sqrt(var_g / n), z),
            R_se=r_se,
            Z=z,
            n=n,
        )


def _ratio(num: float, den: float) -> float:
    """``num / den`` with IEEE semantics (0/0 = nan, x/0 = inf) and no Python exception."""
    if den != 0:
        return num / den
    if num == 0 or math.isnan(num):
        return math.nan
    return math.copysign(math.inf, num)
