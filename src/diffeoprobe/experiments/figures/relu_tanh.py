"""Figure ``relu-tanh``: the same scale-detection nets with tanh, and the idealised nets.

docs/science.md section 1 and 7: ReLU rectifies the noise, which acquires a positive mean that pooling
sums layer after layer (G_k rises); an odd activation keeps the noise zero-mean, so it averages out.
The 1D scale-detection CNN is trained with ReLU and with tanh (same seeds, same training); the
idealised stride-2 net of the same depth is shown with both activations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffeoprobe import plots
from diffeoprobe.experiments.common import (
    INIT,
    TRAINED,
    Context,
    fmt,
    measure_config,
    representations,
    sd_run,
    seed_mean,
)
from diffeoprobe.experiments.presets import Preset
from diffeoprobe.experiments.spec import Claim, FigureSpec, Preconditions, Verdict

__all__ = [
    "ACTIVATIONS",
    "COLOURS",
    "IDEAL_VALUES",
    "NAME",
    "build",
    "plot",
    "spec",
    "summary",
]

NAME = "relu-tanh"
ACTIVATIONS = ("relu", "tanh")
COLOURS = {"relu": "C3", "tanh": "C0"}
IDEAL_VALUES = (0.1, 1.0)  # amplitudes of the idealised net's active pixel


def spec(preset: Preset) -> FigureSpec:
    """This figure under ``preset``: its runs, measurement and claims."""
    runs = tuple(
        sd_run(preset, task=t, seed=s, activation=a)
        for a in ACTIVATIONS
        for t in preset.sd_tasks
        for s in preset.seeds
    )
    claims = (
        Claim(
            "tanh: trained G grows less than with ReLU",
            "with tanh instead of ReLU, noise sensitivity grows less with depth in trained nets "
            "(the noise no longer piles up)",
            "trained nets, same task, seeds and training: G_out / G_1 (seed means) with tanh "
            "below G_out / G_1 with ReLU",
            _tanh_below_relu,
            Preconditions(),
            headline=True,
        ),
    )
    return FigureSpec(
        name=NAME,
        title="ReLU versus tanh: noise piles up only with a rectifying activation",
        description=(
            "The 1D scale-detection CNN trained with ReLU (red) and with tanh (blue), same tasks, "
            "seeds and training; dashed: at initialisation. Right: the idealised stride-2 net of "
            "the same depth with ReLU and with tanh (small amplitude a = 0.1 and a = 1)."
        ),
        paper="Section 5 / Fig. 7's discussion (odd activations remove the pile-up)",
        runs=runs,
        measure=measure_config(preset),
        probes=("idealised stride-2 net, ReLU and tanh: theory.exact_sensitivities",),
        build=lambda context: build(context, list(runs), preset),
        plot=plot,
        claims=claims,
        summary=summary,
    )


def build(context: Context, runs: list, preset: Preset) -> pd.DataFrame:
    """The figure's tidy table from the finished ``runs``, with the exact idealised curves."""
    from diffeoprobe.theory import exact_sensitivities

    context.require(runs, NAME)
    table = pd.concat([representations(context.table(r)) for r in runs], ignore_index=True)
    ideal = []
    for activation in ACTIVATIONS:
        for value in IDEAL_VALUES if activation == "tanh" else (1.0,):
            exact = exact_sensitivities(
                depth=preset.sd_depth, stride=2, filter_size=2, activation=activation, value=value
            )
            ideal.append(exact.assign(state="theory", value=value, k=exact["depth"].astype(float)))
    table = pd.concat([table, *ideal], ignore_index=True)
    keep = ["state", "activation", "task", "value", "run", "seed", "layer", "k", "rel_depth"]
    keep += ["D", "G", "R", "D_se", "G_se", "R_se", "Z", "n", "train_error", "test_error"]
    keep += ["chance_error"]
    return table[[c for c in keep if c in table]]


def _curves(table: pd.DataFrame, task: int) -> pd.DataFrame:
    part = table[(table["task"] == task) & table["state"].isin([INIT, TRAINED])]
    return seed_mean(part, ["activation", "state", "layer", "k"]).sort_values("k")


def _tanh_below_relu(table: pd.DataFrame) -> list[Verdict]:
    out = []
    for task in sorted(table["task"].dropna().unique()):
        mean = _curves(table, task)
        ratios = {}
        for activation in ACTIVATIONS:
            g = mean[(mean["activation"] == activation) & (mean["state"] == TRAINED)]
            g = g[g["k"] >= 1]["G"]
            ratios[activation] = (g.iloc[0], g.iloc[-1], g.iloc[-1] / g.iloc[0])
        (g1, gout, ratio), relu = ratios["tanh"], ratios["relu"]
        rows = table[(table["task"] == task) & table["state"].isin([INIT, TRAINED])]
        errors = rows[rows["state"] == TRAINED].groupby("activation")["test_error"].mean()
        out.append(
            Verdict(
                f"task {int(task)}",
                bool(ratio < relu[2]),
                f"G_out / G_1: tanh {fmt(ratio)} ({fmt(g1)} -> {fmt(gout)}), ReLU "
                f"{fmt(relu[2])} ({fmt(relu[0])} -> {fmt(relu[1])}); mean test error tanh "
                f"{fmt(errors.get('tanh', float('nan')), 2)}, ReLU "
                f"{fmt(errors.get('relu', float('nan')), 2)}",
                rows=rows,
            )
        )
    return out


def plot(table: pd.DataFrame) -> Figure:
    """Rows: tasks; columns: trained D, G, R (ReLU red, tanh blue) and the idealised nets' G."""
    tasks = sorted(table["task"].dropna().unique())
    fig, axes = plots.grid(len(tasks), 4, width=3.3)
    ideal = table[table["state"] == "theory"]
    for row, task in enumerate(tasks):
        mean = _curves(table, task)
        for col, q in enumerate(plots.QUANTITIES):
            ax = axes[row, col]
            for activation in ACTIVATIONS:
                for state, ls in ((INIT, "--"), (TRAINED, "-")):
                    part = mean[(mean["activation"] == activation) & (mean["state"] == state)]
                    ax.errorbar(
                        part["k"],
                        part[q],
                        yerr=part[f"{q}_se"],
                        color=COLOURS[activation],
                        ls=ls,
                        marker="o",
                        ms=3,
                        lw=1.4 if state == TRAINED else 0.9,
                        alpha=1.0 if state == TRAINED else 0.6,
                        capsize=2,
                        label=f"{activation}, {state}",
                    )
            ax.set_yscale("log")
            plots.title(ax, q, f"task {int(task)}" if col == 0 else None)
            ax.set_xlabel("layer k (last: output)")
        ax = axes[row, 3]
        for activation in ACTIVATIONS:
            for value in sorted(ideal[ideal["activation"] == activation]["value"].unique()):
                part = ideal[
                    (ideal["activation"] == activation) & np.isclose(ideal["value"], value)
                ]
                part = part[part["k"] >= 1]
                ax.plot(
                    part["k"],
                    part["G"],
                    marker="o" if value == 1.0 else "s",
                    ms=3,
                    color=COLOURS[activation],
                    ls="-" if value == 1.0 else ":",
                    label=f"{activation}, a = {value:g}",
                )
        ax.set_yscale("log")
        plots.title(ax, "idealised net: G_k")
        ax.set_xlabel("layer k")
        if row == 0:
            axes[row, 0].legend(fontsize=7, loc="lower left")
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("ReLU versus tanh: trained scale-detection CNNs and the idealised stride-2 net")
    fig.tight_layout()
    return fig


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Trained G and R per layer, ReLU next to tanh, per task (seed means)."""
    rows = []
    for task in sorted(table["task"].dropna().unique()):
        mean = _curves(table, task)
        trained = mean[mean["state"] == TRAINED]
        wide = trained.pivot_table(index=["layer", "k"], columns="activation", values=["G", "R"])
        wide.columns = [f"{q} {activation}" for q, activation in wide.columns]
        wide = wide.reset_index().sort_values("k")
        wide.insert(0, "task", int(task))
        rows.append(wide)
    return pd.concat(rows, ignore_index=True)
