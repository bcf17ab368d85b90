"""Figures over a whole sweep, and a self-contained HTML page that shows them.

Each function takes the ``results`` table of :mod:`diffeoprobe.sweep.results` (one row per run, checkpoint
and layer: ``run``, ``model``, ``step``, ``layer``, ``rel_depth``, ``D``, ``G``, ``R``, ``*_se``,
``test_error`` and the config columns) and returns a matplotlib Figure.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffeoprobe.atomic import atomic_write_bytes
from diffeoprobe.plots import QUANTITIES, error_versus_r, layer_curves, plt, save_figure
from diffeoprobe.sweep.results import varying_settings

__all__ = [
    "PER_RUN_LIMIT",
    "final_checkpoint",
    "layers_by_group",
    "output_versus",
    "sweep_figures",
    "write_sweep_report",
]

PER_RUN_LIMIT = 12  # per-run layer figures are drawn for sweeps of at most this many runs


def final_checkpoint(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last checkpoint."""
    last = table.groupby("run")["step"].transform("max")
    return table[table["step"] == last]


def layers_by_group(table: pd.DataFrame, by: str | None) -> Figure:
    """D_k, G_k, R_k versus relative depth at the last checkpoint: mean over the runs of each
    ``by`` group (seeds), bars = standard error across runs (one run: its own error).
    """
    final = final_checkpoint(table)
    groups = [(None, final)] if by is None else list(final.groupby(by, sort=True))
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, max(len(groups), 1)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for colour, (key, part) in zip(colours, groups, strict=True):
        for ax, q in zip(axes, QUANTITIES, strict=True):
            stats = part.groupby("depth").agg(
                x=("rel_depth", "mean"),
                y=(q, "mean"),
                sd=(q, "std"),
                n=(q, "size"),
                se=(f"{q}_se", "mean"),
            )
            err = np.where(stats["n"] > 1, stats["sd"] / np.sqrt(stats["n"]), stats["se"])
            label = "" if key is None else f"{by} = {key}"
            ax.errorbar(
                stats["x"], stats["y"], yerr=err, color=colour, marker=".", lw=1, label=label
            )
    for ax, q in zip(axes, QUANTITIES, strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("relative depth k / L")
        ax.set_title(f"{q}_k at the last checkpoint")
    if by is not None:
        axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def output_versus(table: pd.DataFrame, axis: str, by: str | None) -> Figure:
    """D, G, R at the output layer (last checkpoint) versus a numeric setting, one line per ``by``
    group, mean and standard error over the runs (seeds) at each value (the papers' Fig. 1).
    """
    final = final_checkpoint(table)
    final = final[final["layer"] == "output"]
    groups = [(None, final)] if by is None else list(final.groupby(by, sort=True))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for key, part in groups:
        for ax, q in zip(axes, QUANTITIES, strict=True):
            stats = part.groupby(axis)[q].agg(["mean", "std", "size"]).reset_index()
            err = stats["std"].fillna(0.0) / np.sqrt(stats["size"])
            label = "" if key is None else str(key)
            ax.errorbar(stats[axis], stats["mean"], yerr=err, marker="o", ms=3, lw=1, label=label)
    for ax, q in zip(axes, QUANTITIES, strict=True):
        ax.set_yscale("log")
        if (final[axis] > 0).all() and final[axis].max() >= 10 * final[axis].min():
            ax.set_xscale("log")
        ax.set_xlabel(axis)
        ax.set_title(f"{q} at the output")
    if by is not None:
        axes[-1].legend(fontsize=7, loc="best", title=by, title_fontsize=7)
    fig.tight_layout()
    return fig


def sweep_figures(table: pd.DataFrame, runs: pd.DataFrame) -> dict[str, Figure]:
    """Every figure of the report, by file stem."""
    settings = varying_settings(runs[runs["run"].isin(table["run"].unique())])
    by = settings[0] if settings else None
    figures = {"error-vs-R": error_versus_r(table), "layers": layers_by_group(table, by)}
    for axis in settings:
        if pd.api.types.is_numeric_dtype(table[axis]) and table[axis].nunique() > 1:
            others = [s for s in settings if s != axis]
            figures[f"output-vs-{axis}"] = output_versus(table, axis, others[0] if others else None)
    if table["run"].nunique() <= PER_RUN_LIMIT:
        for run, part in table.groupby("run", sort=True):
            figures[f"run-{run}"] = layer_curves(part, title=str(run))
    return figures


def write_sweep_report(table: pd.DataFrame, runs: pd.DataFrame, out: str | Path) -> Path:
    """Write every figure as PNG and PDF into ``out`` and ``out/report.html``; returns the page."""
    out = Path(out)
    images = []
    for stem, fig in sweep_figures(table, runs).items():
        _save_pdf(fig, out / f"{stem}.pdf")
        png = save_figure(fig, out / f"{stem}.png")  # closes the figure
        images.append((stem, base64.b64encode(png.read_bytes()).decode()))
    settings = varying_settings(runs)
    shown = [
        c
        for c in ("run", "grid", "status", *settings, "seed", "test_error", "seconds")
        if c in runs
    ]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>diffeoprobe sweep report</title>",
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style>",
        f"<h1>Sweep report</h1><p>{len(runs)} runs, {int((runs['status'] == 'done').sum())} done; "
        f"settings that vary: {html.escape(', '.join(settings) or 'none')}.</p>",
    ]
    parts += [
        f"<h2>{html.escape(stem)}</h2><img src='data:image/png;base64,{data}'>"
        for stem, data in images
    ]
    parts.append("<h2>Runs</h2>" + runs[shown].to_html(index=False, na_rep="", float_format="%.4g"))
    return atomic_write_bytes(out / "report.html", "\n".join(parts).encode())


def _save_pdf(fig: Figure, path: Path) -> None:
    """Write ``fig`` as PDF, atomically, leaving it open (``save_figure`` closes it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="pdf")
    atomic_write_bytes(path, buffer.getvalue())
