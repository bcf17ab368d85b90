"""Shared looks of the figures: one style for init, trained and theory curves, readable labels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

QUANTITIES = ("D", "G", "R")
LABELS = {
    "D": "D_k  (diffeo)",
    "G": "G_k  (noise)",
    "R": "R_k = D_k / G_k",
}
INIT_STYLE = dict(color="0.55", ls="--", marker="o", ms=3, lw=1, capsize=2)
TRAINED_STYLE = dict(color="C0", ls="-", marker="o", ms=4, lw=1.5, capsize=2)
THEORY_STYLE = dict(color="k", ls=":", marker="", lw=1.5)
COLOURS = [f"C{i}" for i in range(10)]


def grid(
    rows: int, cols: int, *, width: float = 3.6, height: float = 2.8
) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows x cols`` axes, always a 2D array of axes."""
    fig, axes = plt.subplots(
        max(rows, 1), cols, figsize=(width * cols, height * max(rows, 1) + 0.6), squeeze=False
    )
    return fig, axes


def title(ax: Axes, quantity: str, row_label: str | None = None) -> None:
    """The quantity as the axes title; the row's label as the y label of the first column."""
    ax.set_title(LABELS.get(quantity, quantity), fontsize=9)
    if row_label:
        ax.set_ylabel(row_label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25, which="major")


def empty(ax: Axes, text: str) -> None:
    """An axes that only says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
