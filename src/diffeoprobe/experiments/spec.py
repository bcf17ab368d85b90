"""The declarative pieces of a figure: its runs, its claims, its table builder and its plot.

A :class:`FigureSpec` says *what* a figure of the papers needs (the training runs, the measurement,
the probes applied to the trained nets), *how* its tidy table is made from finished runs, how it is
drawn, and which claims of the paper it checks. The driver (:mod:`.driver`) does the work: it trains
the runs (resumable ``train()`` directories), builds each table, draws it, checks the claims.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
from matplotlib.figure import Figure

from diffeoprobe.config import MeasureConfig, TrainConfig
from diffeoprobe.experiments.preconditions import Preconditions

__all__ = [
    "NOT_EVALUABLE",
    "Claim",
    "FigureSpec",
    "Preconditions",
    "Run",
    "Verdict",
    "status_of",
    "first_last",
    "spearman",
]


@dataclass(frozen=True)
class Run:
    """One training run of a figure: ``train(config, DIR/runs/<id>, measure=measure)``.

    ``tags`` label the run in the figure's table (``task``, ``activation``, ``noise_norm``, ...):
    they are columns there, and the axes of the run in the sweep's records.
    """

    config: TrainConfig
    measure: MeasureConfig
    tags: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``scalecnn1d on scale-detection (task=1, seed=0)``."""
        tags = ", ".join(f"{k}={v}" for k, v in self.tags.items())
        return f"{self.config.model} on {self.config.dataset}" + (f" ({tags})" if tags else "")


@dataclass(frozen=True)
class Verdict:
    """One checked statement: for which subject, whether it holds, and the numbers that say so.

    ``holds`` is ``None`` when the claim is not evaluable on this subject, ``reason`` says why.
    ``rows`` are the table rows the verdict read: the driver checks the claim's
    :class:`~.preconditions.Preconditions` on them (they are not stored).
    """

    subject: str
    holds: bool | None
    measured: str
    reason: str = ""
    rows: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def status(self) -> str:
        """``holds``, ``does not hold`` or ``not evaluable``."""
        return status_of(self.holds)


def status_of(holds: bool | None) -> str:
    """The word for a verdict: ``holds``, ``does not hold`` or ``not evaluable``."""
    if holds is None or holds != holds:  # None or NaN (a missing value read back from a file)
        return NOT_EVALUABLE
    return "holds" if bool(holds) else "does not hold"


NOT_EVALUABLE = "not evaluable"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, checked on the figure's table by running the code.

    ``check(table)`` returns one :class:`Verdict` per subject (a task, a noise level, a net); a
    claim with no data to check returns none. ``paper`` is the criterion (what "holds" means);
    ``preconditions`` what the rows of each verdict must meet for the claim to be judged at all
    (``None``: the claim reads no trained net, e.g. the exact idealised nets); ``headline``
    marks the papers' headline claims, shown first in the report.
    """

    key: str
    statement: str
    paper: str
    check: Callable[[pd.DataFrame], list[Verdict]]
    preconditions: Preconditions | None = None
    headline: bool = False

    def judge(self, table: pd.DataFrame) -> list[Verdict]:
        """The claim's verdicts, each judged only if its rows meet the preconditions."""
        out = []
        for verdict in self.check(table) or []:
            if self.preconditions is not None and verdict.holds is not None:
                reason = self.preconditions.check(verdict.rows)
                if reason:
                    verdict = Verdict(verdict.subject, None, verdict.measured, reason)
            out.append(verdict)
        return out


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the papers as data: runs, measurement, probes, table, plot, claims.

    Attributes:
        name: the name ``--only`` takes (``scale-detection``, ``theory``, ...).
        title: one line for the report.
        description: what the figure shows and how it is made (a paragraph for the report).
        paper: the figures of the papers it reproduces (docs/science.md section 9).
        runs: the training runs it needs (shared runs are trained once).
        measure: the layer-wise measurement of every run (docs/science.md section 4).
        probes: what is measured beyond ``train()``'s own tables, in words.
        build: ``build(context) -> table``: the figure's tidy table from the finished runs.
        plot: ``plot(table) -> Figure``.
        claims: the claims it checks on its table.
        requires: data sets that must be present (``fashionmnist``); the figure is skipped with a
            note when one is not.
        options: the preset's settings the builder and the claims read (sizes, depths, seeds).
        summary: ``summary(table) -> small table`` of the key numbers, shown in the report.
    """

    name: str
    title: str
    description: str
    paper: str
    runs: tuple[Run, ...]
    measure: MeasureConfig
    probes: tuple[str, ...]
    build: Callable[[Any], pd.DataFrame]
    plot: Callable[[pd.DataFrame], Figure]
    claims: tuple[Claim, ...]
    requires: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    summary: Callable[[pd.DataFrame], pd.DataFrame] | None = None


# ---- small statistics used by several claims ----------------------------------------------------


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get mean ranks), by :func:`scipy.stats.spearmanr`.

    Pairs with a non-finite value are dropped. NaN, without a warning, for fewer than 3 finite
    pairs or a constant ``x`` or ``y`` (its ranks have no spread: the correlation is undefined).

    >>> spearman([1, 2, 3, 4], [10, 8, 5, 1])
    -1.0
    >>> spearman([1, 2, 3], [5, 5, 5])
    nan
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan  # scipy would warn (ConstantInputWarning) and return NaN
    rho, _ = scipy.stats.spearmanr(xs, ys)
    return float(rho)


TREND = 0.5
"""|Spearman rho| over the layers for "falls" / "rises" with depth (p ~ 0.1 for 8 layers)."""


def depth_trend(
    k: Sequence[float], values: Sequence[float], *, falling: bool
) -> tuple[bool, float]:
    """Whether ``values`` fall (rise) with the layer index ``k``: Spearman's rho <= -TREND
    (>= TREND) and the last value below (above) the first; returns (holds, rho).

    >>> depth_trend([1, 2, 3, 4], [1.0, 0.5, 0.3, 0.1], falling=True)
    (True, -1.0)
    """
    rho = spearman(k, values)
    first, last = list(values)[0], list(values)[-1]
    if falling:
        return bool(rho <= -TREND and last < first), rho
    return bool(rho >= TREND and last > first), rho


def first_last(values: Sequence[float]) -> tuple[float, float]:
    """The first and last entries of a sequence (NaN, NaN when empty)."""
    values = list(values)
    return (values[0], values[-1]) if values else (math.nan, math.nan)
