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
from matplotlib.figure import Figure

from diffeoprobe.config import MeasureConfig, TrainConfig

__all__ = [
    "Claim",
    "FigureSpec",
    "Run",
    "Verdict",
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
    """One checked statement: for which subject, whether it holds, and the numbers that say so."""

    subject: str
    holds: bool
    measured: str


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, checked on the figure's table by running the code.

    ``check(table)`` returns one :class:`Verdict` per subject (a task, a noise level, a net); a
    claim with no data to check returns none.
    """

    key: str
    statement: str
    paper: str
    check: Callable[[pd.DataFrame], list[Verdict]]


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the papers as data: runs, measurement, probes, table, plot, claims.

    Attributes:
        name: the name ``--only`` takes (``scale-detection``, ``theory``, ...).
        title: one line for the report.
        description: what the figure shows and how it is made (a paragraph for the report).
        paper: the figures of the papers it reproduces (science.md section 9).
        runs: the training runs it needs (shared runs are trained once).
        measure: the layer-wise measurement of every run (science.md section 4).
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
    """Spearman's rank correlation (ties get mean ranks); NaN for fewer than 3 finite points.

    >>> spearman([1, 2, 3, 4], [10, 8, 5, 1])
    -1.0
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return math.nan
    rx = pd.Series(x[keep]).rank().to_numpy()
    ry = pd.Series(y[keep]).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def first_last(values: Sequence[float]) -> tuple[float, float]:
    """The first and last entries of a sequence (NaN, NaN when empty)."""
    values = list(values)
    return (values[0], values[-1]) if values else (math.nan, math.nan)
