"""Figures (matplotlib, headless) and their shared look. Functions return a Figure; callers write
it with :func:`save_figure`. One style for init, trained and theory curves (the papers' figures in
:mod:`diffeoprobe.experiments.figures` and a sweep's report use the same).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from diffeoprobe.atomic import atomic_write_bytes, write_or_keep  # noqa: E402
from diffeoprobe.perturb import deform, temperature_range, typical_displacement  # noqa: E402

__all__ = [
    "COLOURS",
    "INIT_STYLE",
    "LABELS",
    "QUANTITIES",
    "THEORY_STYLE",
    "TRAINED_STYLE",
    "deform_grid",
    "empty",
    "error_versus_r",
    "grid",
    "layer_curves",
    "save_figure",
    "title",
]

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


def deform_grid(
    x: torch.Tensor, *, temperatures: int = 6, cut: int = 3, interp: str = "bilinear", seed: int = 0
) -> Figure:
    """Rows: images; columns: the original, then T log-spaced over [T_min, T_max] of the ensemble.

    Args:
        x: ``(B, C, H, W)`` images with values in any range (each row is shown with one colour scale).
        temperatures: number of temperatures shown.
        cut: integer frequency cut-off ``c >= 1`` of the diffeos.
        interp: the interpolation, as in :func:`~diffeoprobe.perturb.deform`.
        seed: seed of the diffeos drawn.
    """
    size = tuple(x.shape[2:])
    t_min, t_max = temperature_range(size, cut)
    temps = np.geomspace(t_min, t_max, temperatures)
    gen = torch.Generator().manual_seed(seed)
    columns = [x] + [deform(x, float(t), cut, interp, generator=gen) for t in temps]
    rows, cols = x.shape[0], len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.5), squeeze=False)
    for j, column in enumerate(columns):
        for i in range(rows):
            image = (
                column[i].permute(1, 2, 0).numpy() if column.shape[1] == 3 else column[i, 0].numpy()
            )
            ax = axes[i, j]
            ax.imshow(image, cmap="gray", vmin=float(x[i].min()), vmax=float(x[i].max()))
            ax.set_xticks([])
            ax.set_yticks([])
        if j == 0:
            axes[0, j].set_title("original", fontsize=8)
        else:
            t = temps[j - 1]
            axes[0, j].set_title(
                f"T={t:.1e}\nδ={typical_displacement(float(t), size, cut):.2f}px", fontsize=8
            )
    fig.suptitle(f"max-entropy diffeomorphisms, c = {cut} ({interp})", fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 150, *, keep: bool = False) -> Path:
    """Write ``fig`` atomically in the format given by the suffix (png, pdf, svg), then close it.

    ``keep``: a failed write (full disk) saves the image to a temporary file and raises a
    DiffeoProbeError naming it (:func:`~diffeoprobe.atomic.write_or_keep`).
    """
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower(), dpi=dpi)
    plt.close(fig)
    if keep:
        return write_or_keep(path, buffer.getvalue())
    return atomic_write_bytes(path, buffer.getvalue())


def layer_curves(table, *, title: str = "", x: str = "rel_depth") -> Figure:
    """D_k, G_k, R_k versus relative depth, one curve per checkpoint (init light, end dark).

    Args:
        table: a run table (columns ``step``, ``rel_depth``, ``D``, ``G``, ``R`` and ``*_se``);
            without a ``step`` column it is drawn as one curve.
        title: the figure's title.
        x: the column on the horizontal axis.
    """
    steps = sorted(table["step"].unique()) if "step" in table else [None]
    colours = plt.cm.viridis(np.linspace(0.9, 0.0, len(steps)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for colour, step in zip(colours, steps, strict=True):
        part = table if step is None else table[table["step"] == step]
        label = "" if step is None else ("init" if step == 0 else f"step {step}")
        for ax, q in zip(axes, QUANTITIES, strict=True):
            ax.errorbar(
                part[x],
                part[q],
                yerr=part[f"{q}_se"],
                color=colour,
                marker=".",
                ms=4,
                lw=1,
                label=label,
            )
    for ax, q in zip(axes, QUANTITIES, strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("relative depth k / L")
        ax.set_title({"D": "D_k (diffeo)", "G": "G_k (noise)", "R": "R_k = D_k / G_k"}[q])
    if steps != [None]:
        axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def error_versus_r(table) -> Figure:
    """Test error versus R at the output, one point per run (its last checkpoint), log-log."""
    last = table[table["layer"] == "output"].sort_values("step").groupby("run").tail(1)
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    ax.errorbar(last["R"], last["test_error"], xerr=last["R_se"], fmt="o")
    for row in last.itertuples():
        ax.annotate(f"{row.model}", (row.R, row.test_error), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("R at the output")
    ax.set_ylabel("test error")
    fig.tight_layout()
    return fig


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
