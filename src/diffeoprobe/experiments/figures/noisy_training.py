"""Figure ``noisy-training``: nets trained on images carrying white noise of total norm s.

docs/science.md section 8 (paper Fig. 1 and 10): training images get noise ``z s / sqrt(C H W)``; the
claim is that the trends of D_k, G_k, R_k (R falls, G rises with depth after training) survive.
``quick`` trains the 1D scale-detection CNN on noisy signals and probes it with the clean test
signals (the pixel shift would move the noise pixels too); ``paper`` trains CIFAR-10 nets and
probes them with noisy test images, as the paper did.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffeoprobe import plots
from diffeoprobe.experiments.common import (
    INIT,
    TRAINED,
    Context,
    availability,
    fmt,
    measure_config,
    noise_norms,
    representations,
    sd_run,
    seed_mean,
    zoo_run,
)
from diffeoprobe.experiments.presets import Preset, ZooNet
from diffeoprobe.experiments.spec import (
    TREND,
    Claim,
    FigureSpec,
    Preconditions,
    Run,
    Verdict,
    depth_trend,
)

__all__ = [
    "NAME",
    "build",
    "plot",
    "spec",
    "summary",
]

NAME = "noisy-training"


def spec(preset: Preset) -> FigureSpec:
    """This figure under ``preset``: its runs, measurement and claims."""
    runs: list[Run] = []
    where: list[str] = []
    if preset.noisy_sd:
        runs += [
            sd_run(preset, task=preset.noisy_task, seed=seed, noise_norm=s, noise_level=level)
            for s, level in noise_norms(preset, "scale-detection", _sd_data(preset))
            for seed in preset.noisy_seeds
        ]
        where.append(
            f"the 1D scale-detection CNN on Task {preset.noisy_task} (width {preset.sd_width}; "
            "probed on the clean test signals)"
        )
    absent = (
        availability(preset.zoo_dataset, preset.zoo_dataset_options)
        if preset.noisy_models
        else None
    )
    if preset.noisy_models and absent is None:
        nets = {n.model: n for n in preset.zoo}
        levels = noise_norms(preset, preset.zoo_dataset, preset.zoo_dataset_options)
        runs += [
            zoo_run(preset, nets.get(m, ZooNet(m)), seed=seed, noise_norm=s, noise_level=level)
            for m in preset.noisy_models
            for s, level in levels
            for seed in preset.noisy_zoo_seeds
        ]
        where.append(
            f"{', '.join(preset.noisy_models)} on {preset.zoo_dataset} (probed on noisy test "
            "images, as in the paper)"
        )
    elif preset.noisy_models:
        where.append(f"({', '.join(preset.noisy_models)} left out: {absent})")
    norms = (
        "s / ||x|| in {" + ", ".join(f"{s:g}" for s in preset.noise_levels) + "} of the data "
        "set's mean image norm ||x||"
        if preset.noise_levels
        else "s in {" + ", ".join(f"{s:g}" for s in preset.noise_norms) + "}"
    )
    claims = (
        Claim(
            "R falls with depth, any noise",
            "with white noise on the training images, R_k still falls with depth after training",
            f"for every noise norm: Spearman rho(k, R_k) <= -{TREND} and R at the output below "
            "R at layer 1",
            lambda t: _trends(t, "R"),
            Preconditions(),
            headline=True,
        ),
        Claim(
            "G rises with depth, any noise",
            "with white noise on the training images, G_k still rises with depth after training",
            f"for every noise norm: Spearman rho(k, G_k) >= {TREND} and G at the output above "
            "G at layer 1",
            lambda t: _trends(t, "G"),
            Preconditions(),
        ),
    )
    return FigureSpec(
        name=NAME,
        title="Noisy training: the trends survive white noise on the training images",
        description=(
            f"{'; '.join(where)}, trained with white noise of total norm {norms} added to every "
            "training image (a fixed draw per image). Left: D_k, G_k, R_k after training, one "
            "colour per noise norm (dashed grey: initialisation, s = 0). Right: the output's D, G "
            "and R versus s, with the test error."
        ),
        paper="Fig. 1 and 10 (CIFAR-10, noise norms 0 .. 100)",
        runs=tuple(runs),
        measure=measure_config(preset),
        probes=("scale-detection: checkpoints re-measured on clean test signals",)
        if preset.noisy_sd
        else (),
        build=lambda context: build(context, list(runs)),
        plot=plot,
        claims=claims,
        summary=summary,
    )


def _sd_data(preset: Preset) -> dict:
    return dict(
        dim=1,
        task=preset.noisy_task,
        d=preset.sd_d,
        xi=preset.sd_xi,
        train_size=preset.sd_train,
        test_size=preset.sd_test,
    )


def build(context: Context, runs: list) -> pd.DataFrame:
    """The figure's tidy table from the finished ``runs``."""
    context.require(runs, NAME)
    parts = []
    for run in runs:
        table = representations(context.table(run))
        table["net"] = run.tags.get("net", run.config.model)
        parts.append(table)
    table = pd.concat(parts, ignore_index=True)
    keep = ["net", "noise_norm", "noise_level", "state", "run", "seed", "layer", "k", "rel_depth"]
    keep += ["D", "G", "R", "D_se", "G_se", "R_se", "Z", "n", "train_error", "test_error"]
    keep += ["chance_error", "epoch"]
    return table[[c for c in keep if c in table]]


def _curves(table: pd.DataFrame) -> pd.DataFrame:
    return seed_mean(
        table,
        ["net", "noise_norm", "state", "layer", "k"],
        ("D", "G", "R", "train_error", "test_error"),
    ).sort_values(["net", "noise_norm", "k"])


def _trend(part: pd.DataFrame, quantity: str) -> tuple[bool, float, float, float]:
    """Whether trained R_k falls (G_k rises) with depth in one net's seed-mean curve ``part``;
    with Spearman's rho and the values at layer 1 and at the output.
    """
    part = part[part["k"] >= 1]
    holds, rho = depth_trend(part["k"], part[quantity], falling=quantity == "R")
    return holds, rho, part[quantity].iloc[0], part[quantity].iloc[-1]


def _trends(table: pd.DataFrame, quantity: str) -> list[Verdict]:
    """The trend at every noise norm; "still" presupposes it in the net trained without noise:
    where that net does not show it, the claim is not evaluable on the noisy ones.
    """
    out = []
    mean = _curves(table)
    trained = mean[mean["state"] == TRAINED]
    clean = {
        net: _trend(part[part["noise_norm"] == part["noise_norm"].min()], quantity)
        for net, part in trained.groupby("net")
    }
    for (net, norm), part in trained.groupby(["net", "noise_norm"]):
        rows = table[(table["net"] == net) & (table["noise_norm"] == norm)]
        level = _level(rows)
        holds, rho, first, last = _trend(part, quantity)
        part = part[part["k"] >= 1]
        reason = ""
        if norm > 0 and not clean[net][0]:
            reason = (
                f"the net trained without noise does not show the trend either (rho "
                f"{fmt(clean[net][1], 2)}): there is no trend for the noise to preserve"
            )
        out.append(
            Verdict(
                f"{net}, noise norm {norm:.3g}" + (f" (s / ||x|| = {level:g})" if level else ""),
                None if reason else holds,
                f"rho = {fmt(rho, 2)} ({quantity} {fmt(first)} at layer 1 -> {fmt(last)} at the "
                f"output); train error {fmt(part['train_error'].iloc[0])}, test error "
                f"{fmt(part['test_error'].iloc[0])}",
                reason,
                rows=rows,
            )
        )
    return out


def _level(rows: pd.DataFrame) -> float:
    """The noise norm relative to the data's typical image norm (0 when not recorded)."""
    if "noise_level" not in rows or rows["noise_level"].isna().all():
        return 0.0
    return float(rows["noise_level"].dropna().iloc[0])


def plot(table: pd.DataFrame) -> Figure:
    """Per net: D, G, R versus k (one colour per noise norm), and the output's values versus s."""
    mean = _curves(table)
    nets = list(dict.fromkeys(mean["net"]))
    norms = sorted(mean["noise_norm"].unique())
    colours = plt.cm.plasma(np.linspace(0.0, 0.85, len(norms)))
    fig, axes = plots.grid(len(nets), 4, width=3.3)
    for row, net in enumerate(nets):
        part = mean[mean["net"] == net]
        for col, q in enumerate(plots.QUANTITIES):
            ax = axes[row, col]
            clean_init = part[(part["noise_norm"] == norms[0]) & (part["state"] == INIT)]
            style = {k: v for k, v in plots.INIT_STYLE.items() if k != "capsize"}
            ax.plot(clean_init["k"], clean_init[q], **style, label=f"init, s = {norms[0]:g}")
            for colour, norm in zip(colours, norms, strict=True):
                curve = part[(part["noise_norm"] == norm) & (part["state"] == TRAINED)]
                ax.errorbar(curve["k"], curve[q], yerr=curve[f"{q}_se"], color=colour,
                            marker="o", ms=3, lw=1.3, capsize=2, label=f"s = {norm:g}")  # fmt: skip
            ax.set_yscale("log")
            plots.title(ax, q, net if col == 0 else None)
            ax.set_xlabel("layer k (last: output)")
        ax = axes[row, 3]
        out = part[(part["layer"] == "output") & (part["state"] == TRAINED)]
        x = np.asarray(out["noise_norm"], dtype=float)
        shown = np.where(x > 0, x, min(x[x > 0].min() / 10, 0.01) if (x > 0).any() else 1.0)
        for q, colour in zip(plots.QUANTITIES, ("C1", "C2", "C0"), strict=True):
            ax.plot(shown, out[q], marker="o", color=colour, label=f"{q} at the output")
        ax.plot(shown, out["test_error"], marker="s", color="k", ls="--", label="test error")
        ax.set_xscale("log")
        ax.set_yscale("log")
        plots.title(ax, "output versus noise norm s")
        ax.set_xlabel("noise norm s (s = 0 drawn at the left)")
        if row == 0:
            axes[row, 2].legend(fontsize=7, loc="best")
            ax.legend(fontsize=7, loc="best")
    fig.suptitle("Training on noisy images: D_k, G_k, R_k after training for each noise norm")
    fig.tight_layout()
    return fig


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per net and noise norm: the output's D, G, R after training, and the errors."""
    mean = _curves(table)
    out = mean[(mean["layer"] == "output") & (mean["state"] == TRAINED)]
    return out[["net", "noise_norm", "D", "G", "R", "train_error", "test_error"]].reset_index(
        drop=True
    )
