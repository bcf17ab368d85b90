"""Figure ``pooling``: spatial versus channel pooling (docs/science.md section 5; paper Fig. 3, 4, 9, 11-14).

For each probed net (the 1D scale-detection CNNs, and the real-image CNNs of the zoo):

- spatial pooling: :func:`diffeoprobe.probes.filter_spectrum`, the fraction of filter energy on
  each eigenmode of the filter grid's Laplacian, at initialisation and after training (mode 0 is
  the constant, averaging filter);
- channel pooling: :func:`diffeoprobe.probes.shuffled_sensitivities`, D_k, G_k, R_k of the trained
  net and of copies whose convolutions have their input channels permuted (paired probe draws),
  plus the channel-averaged measurement;
- the share: :func:`diffeoprobe.probes.pooling_shares` splits the stability log10(R_in / R_k) into
  the part lost by shuffling (channel pooling) and the rest (spatial pooling), per relative depth.
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
    availability,
    fmt,
    measure_config,
    measure_options,
    representations,
    sd_run,
    zoo_run,
)
from diffeoprobe.experiments.presets import Preset
from diffeoprobe.experiments.spec import Claim, FigureSpec, Preconditions, Run, Verdict

__all__ = [
    "MIN_STABILITY",
    "NAME",
    "VARIANT_STYLE",
    "build",
    "plot",
    "spec",
    "summary",
]

NAME = "pooling"
MIN_STABILITY = 0.05  # decades of R: below, a layer's channel fraction is noise over noise
VARIANT_STYLE = {
    INIT: dict(color="0.55", ls="--"),
    "original": dict(color="C0", ls="-"),
    "shuffled": dict(color="C3", ls="-"),
    "channel-mean": dict(color="C2", ls=":"),
}


def spec(preset: Preset) -> FigureSpec:
    """This figure under ``preset``: its runs, measurement and claims."""
    runs: list[Run] = [sd_run(preset, task=t, seed=preset.seeds[0]) for t in preset.sd_tasks]
    skipped = ""
    zoo = [n for n in preset.zoo if n.model in preset.pooling_models]
    absent = availability(preset.zoo_dataset, preset.zoo_dataset_options) if zoo else None
    if zoo and absent is None:
        runs += [zoo_run(preset, net, seed=preset.zoo_seeds[0]) for net in zoo]
    elif zoo:
        skipped = f" The {preset.zoo_dataset} nets are left out: {absent}."
    claims = (
        Claim(
            "spatial pooling in early layers",
            "training moves filter energy to the low (smooth, averaging) modes, most strongly "
            "in the early layers",
            "trained - init energy fraction of mode 0: positive in the first half of the convs, "
            "and larger there than in the second half",
            _spatial,
            Preconditions(no_collapse=False),
        ),
        Claim(
            "channel pooling in deep layers",
            "stability owed to channel pooling is the larger share in the deep layers",
            f"mean channel fraction (layers with >= {MIN_STABILITY} decades of stability) "
            "positive in the second half of the net and larger there than in the first",
            _channel,
            Preconditions(),
        ),
    )
    return FigureSpec(
        name=NAME,
        title="Spatial versus channel pooling: filter spectra, channel shuffle, shares",
        description=(
            "Per net: (1) fraction of filter energy in the constant (averaging) mode of the filter "
            "grid's Laplacian, per convolution, at init (dashed) and trained (solid); (2) the "
            "trained spectrum, energy fraction per eigenvalue, one line per convolution (dark = "
            "deep); (3) R_k at init, trained, trained with every convolution's input channels "
            f"permuted ({preset.shuffle_permutations} permutations, paired draws) and "
            "channel-averaged; (4) the stability log10(R_in / R_k) split into the part shuffling "
            "destroys (channel pooling) and the rest (spatial pooling). The 1D nets are the "
            "scale-detection CNNs (filter 2: two modes, average and difference; their first conv "
            "has one input channel, so shuffling starts at the second)." + skipped
        ),
        paper="Fig. 3, 11 (channel shuffle), 4, 12-14 (filter spectra), 9 (scale detection)",
        runs=tuple(runs),
        measure=measure_config(preset),
        probes=(
            "probes.filter_spectrum at init and trained (degenerate modes summed)",
            f"probes.shuffled_sensitivities, {preset.shuffle_permutations} permutations",
            "measure(channel_mean=True) of the trained net",
            "probes.pooling_shares",
        ),
        build=lambda context: build(context, runs, preset),
        plot=plot,
        claims=claims,
        summary=summary,
    )


def _label(run: Run) -> str:
    if run.config.model == "scalecnn1d":
        return f"1D CNN, task {run.tags['task']}"
    return f"{run.tags['net']} on {run.config.dataset}"


def build(context: Context, runs: list[Run], preset: Preset) -> pd.DataFrame:
    """The figure's tidy table from the finished ``runs`` and the probes of their nets."""
    from diffeoprobe.probes import filter_spectrum, pooling_shares, shuffled_sensitivities

    context.require(runs, NAME)
    parts = []
    for run in runs:
        net = _label(run)
        first, last = context.steps(run)
        for state, step in ((INIT, first), (TRAINED, last)):
            spectrum = filter_spectrum(context.model(run, step), group_degenerate=True)
            parts.append(spectrum.assign(kind="spectrum", net=net, state=state))
        trained = context.model(run, last)
        options = measure_options(run)
        shuffled = shuffled_sensitivities(
            trained,
            context.probe(run),
            permutations=preset.shuffle_permutations,
            seed=run.config.seed,
            **options,
        )
        channel_mean = context.measure(run, last, model=trained, channel_mean=True)
        states = representations(context.table(run))  # init and trained: the preconditions
        parts.append(states.assign(kind="run", net=net))
        init = context.table(run)
        init = init[init["state"] == INIT]
        sensitivities = pd.concat(
            [
                init.assign(variant=INIT),
                shuffled,
                channel_mean.assign(variant="channel-mean"),
            ],
            ignore_index=True,
        )
        sensitivities = representations(sensitivities)
        parts.append(sensitivities.assign(kind="sensitivity", net=net))
        shares = pooling_shares(shuffled, channel_mean_table=channel_mean)
        shares = representations(shares)
        parts.append(shares.assign(kind="share", net=net))
    table = pd.concat(parts, ignore_index=True)
    keep = ["kind", "net", "state", "variant", "layer", "conv_index", "k", "rel_depth", "mode"]
    keep += ["eigenvalue", "energy_fraction", "energy_fraction_se", "D", "G", "R", "D_se"]
    keep += ["G_se", "R_se", "stability", "stability_se", "channel_pooling"]
    keep += ["channel_pooling_se", "spatial_pooling", "spatial_pooling_se", "channel_fraction"]
    keep += ["channel_fraction_se", "spatial_channel_mean", "spatial_channel_mean_se"]
    keep += ["run", "seed", "Z", "n", "test_error", "chance_error"]
    return table[[c for c in keep if c in table]]


def _mode0(table: pd.DataFrame) -> pd.DataFrame:
    """Per net and conv: the energy fraction of mode 0 at init and trained, and their difference."""
    spectrum = table[(table["kind"] == "spectrum") & (table["mode"] == 0)]
    wide = spectrum.pivot_table(
        index=["net", "conv_index", "rel_depth"], columns="state", values="energy_fraction"
    ).reset_index()
    wide["gain"] = wide[TRAINED] - wide[INIT]
    return wide


def _spatial(table: pd.DataFrame) -> list[Verdict]:
    out = []
    for net, part in _mode0(table).groupby("net", sort=False):
        early = part[part["rel_depth"] <= 0.5]["gain"]
        late = part[part["rel_depth"] > 0.5]["gain"]
        holds = early.mean() > 0 and (late.empty or early.mean() > late.mean())
        gains = ", ".join(fmt(g, 2) for g in part.sort_values("conv_index")["gain"])
        out.append(
            Verdict(
                net,
                bool(holds),
                f"mode-0 energy gain per conv (first to last): {gains}; mean first half "
                f"{fmt(early.mean(), 2)}, second half {fmt(late.mean(), 2)}",
                rows=_runs(table, net),
            )
        )
    return out


def _channel(table: pd.DataFrame) -> list[Verdict]:
    out = []
    shares = table[(table["kind"] == "share") & (table["k"] >= 1)]
    for net, part in shares.groupby("net", sort=False):
        part = part[part["stability"] >= MIN_STABILITY]
        early = part[part["rel_depth"] <= 0.5]["channel_fraction"]
        late = part[part["rel_depth"] > 0.5]["channel_fraction"]
        holds = not late.empty and late.mean() > 0
        holds = holds and (early.empty or late.mean() > early.mean())
        text = (
            f"mean channel fraction: first half {fmt(early.mean(), 2)} ({len(early)} layers), "
            f"second half {fmt(late.mean(), 2)} ({len(late)} layers); at the output "
            f"{fmt(_at_output(part, 'channel_fraction'), 2)}"
        )
        rows = _runs(table, net)
        if late.empty:  # no deep layer is stable at all: nothing to split into two shares
            out.append(
                Verdict(
                    net,
                    None,
                    text,
                    f"no layer of the second half carries >= {MIN_STABILITY} decades of "
                    "stability (R_k not below R at the input): nothing to split",
                    rows=rows,
                )
            )
            continue
        out.append(Verdict(net, bool(holds), text, rows=rows))
    return out


def _runs(table: pd.DataFrame, net: str) -> pd.DataFrame:
    """The net's own init and trained rows (test error, Z, probes): the claims' preconditions."""
    return table[(table["kind"] == "run") & (table["net"] == net)]


def _at_output(part: pd.DataFrame, column: str) -> float:
    row = part[part["layer"] == "output"]
    return float(row[column].iloc[0]) if len(row) else float("nan")


def plot(table: pd.DataFrame) -> Figure:
    """The figure drawn from its ``table``: one row of panels per net."""
    nets = list(dict.fromkeys(table["net"]))
    fig, axes = plots.grid(len(nets), 4, width=3.4, height=2.9)
    mode0 = _mode0(table)
    for row, net in enumerate(nets):
        part = table[table["net"] == net]
        ax = axes[row, 0]
        m = mode0[mode0["net"] == net].sort_values("rel_depth")
        ax.plot(m["rel_depth"], m[INIT], marker="o", ms=3, **VARIANT_STYLE[INIT], label="init")
        ax.plot(m["rel_depth"], m[TRAINED], marker="o", ms=4, color="C0", label="trained")
        ax.set_ylim(0, 1.02)
        plots.title(ax, "energy in the constant mode", net)
        ax.set_xlabel("relative depth of the conv")
        ax = axes[row, 1]
        spectrum = part[(part["kind"] == "spectrum") & (part["state"] == TRAINED)]
        convs = sorted(spectrum["conv_index"].unique())
        colours = plots.plt.cm.viridis(np.linspace(0.0, 0.9, len(convs)))
        for colour, conv in zip(colours, convs, strict=True):
            s = spectrum[spectrum["conv_index"] == conv].sort_values("mode")
            ax.plot(s["mode"], s["energy_fraction"], marker="o", ms=3, color=colour,
                    label=f"conv {int(conv) + 1}")  # fmt: skip
        ax.set_yscale("log")
        plots.title(ax, "trained: energy per eigenvalue")
        ax.set_xlabel("Laplacian eigenvalue index (0 = constant)")
        if len(convs) <= 8:
            ax.legend(fontsize=6, loc="best")
        ax = axes[row, 2]
        sens = part[part["kind"] == "sensitivity"]
        for variant, style in VARIANT_STYLE.items():
            s = sens[sens["variant"] == variant].sort_values("k")
            ax.errorbar(s["k"], s["R"], yerr=s["R_se"], marker="o", ms=3, capsize=2, **style,
                        label=variant if variant != "original" else "trained")  # fmt: skip
        ax.set_yscale("log")
        plots.title(ax, "R")
        ax.set_xlabel("layer k (last: output)")
        ax = axes[row, 3]
        shares = part[(part["kind"] == "share") & (part["k"] >= 1)].sort_values("k")
        x = np.arange(len(shares))
        ax.bar(x - 0.2, shares["spatial_pooling"], width=0.4, color="C0",
               label="spatial (survives shuffling)")  # fmt: skip
        ax.bar(x + 0.2, shares["channel_pooling"], width=0.4, color="C3",
               label="channel (lost by shuffling)")  # fmt: skip
        ax.plot(x, shares["stability"], "kD", ms=4, label="stability = sum")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_xticks(x, [f"{r:.2f}" for r in shares["rel_depth"]], rotation=60, fontsize=6)
        plots.title(ax, "stability, decades of R")
        ax.set_xlabel("relative depth")
        if row == 0:
            axes[row, 0].legend(fontsize=7, loc="best")
            axes[row, 2].legend(fontsize=7, loc="best")
            ax.legend(fontsize=6, loc="best")
    fig.suptitle("Spatial versus channel pooling")
    fig.tight_layout()
    return fig


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per net and representation: the stability and its split, in decades of R."""
    shares = table[(table["kind"] == "share") & (table["k"] >= 1)]
    columns = ["net", "layer", "rel_depth", "stability", "spatial_pooling", "channel_pooling"]
    return shares[columns + ["channel_fraction"]].reset_index(drop=True)
