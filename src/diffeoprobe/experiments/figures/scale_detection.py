"""Figure ``scale-detection``: the scale-detection CNNs at init and trained, against the theory.

Paper Fig. 7 (the 1D CNN, filter 2, stride 2, against section 7's idealised net) and, in the
``paper`` preset, Fig. 5, 8, 9 (a 2D zoo on the 2D task) and a stride-1 1D net. For each task and
net: D_k, G_k, R_k of the representations (input, every block's activation, output) at
initialisation and after training to zero training error, mean and standard error over seeds, with
the idealised pooling net of the same depth (constant filters, one active pixel, docs/theory.md)
drawn over them.
"""

from __future__ import annotations

from dataclasses import replace

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
    run_id,
    sd_run,
    seed_mean,
    zoo_run,
)
from diffeoprobe.experiments.presets import Preset
from diffeoprobe.experiments.spec import (
    TREND,
    Claim,
    FigureSpec,
    Preconditions,
    Run,
    Verdict,
    depth_trend,
    spearman,
)

__all__ = [
    "INIT_BAND",
    "NAME",
    "TRAINED_NETS",
    "build",
    "plot",
    "spec",
    "summary",
]

NAME = "scale-detection"
INIT_BAND = 10.0  # "R at init is of order 1": within a decade of 1
TRAINED_NETS = Preconditions()  # learned, no collapse, enough probes


def spec(preset: Preset) -> FigureSpec:
    """This figure under ``preset``: its runs, measurement and claims."""
    runs = [sd_run(preset, task=t, seed=s) for t in preset.sd_tasks for s in preset.seeds]
    if preset.sd_stride1 is not None:
        filter_size, depth = preset.sd_stride1
        runs += [
            sd_run(
                preset,
                task=1,
                seed=s,
                stride=1,
                filter_size=filter_size,
                depth=depth,
                width=preset.sd_stride1_width,
                lr_per_width=preset.sd_stride1_lr_per_width,
                epochs=preset.sd_stride1_epochs,
                adam_lr=preset.sd_stride1_adam_lr,
                batch_size=preset.sd_stride1_batch,
            )
            for s in preset.seeds[: preset.sd_stride1_seeds]
        ]
    for net in preset.sd2d_models:
        for task in preset.sd_tasks:
            for seed in preset.seeds[: preset.sd2d_seeds]:
                run = zoo_run(
                    preset,
                    net,
                    seed=seed,
                    dataset="scale-detection",
                    dataset_options=dict(preset.sd2d_data, task=task),
                    epochs=preset.sd2d_epochs,
                    loss="hinge",
                    augment=False,
                )
                runs.append(Run(run.config, run.measure, {**run.tags, "task": task, "stride": 0}))
    claims = (
        Claim(
            "R falls with depth",
            "after training, R_k falls with depth",
            f"Spearman rho(k, R_k) <= -{TREND} and R at the output below R at layer 1",
            lambda t: _trend(t, "R", falling=True),
            TRAINED_NETS,
            headline=True,
        ),
        Claim(
            "G rises with depth",
            "after training, G_k rises with depth (noise piles up)",
            f"Spearman rho(k, G_k) >= {TREND} and G at the output above G at layer 1",
            lambda t: _trend(t, "G", falling=False),
            TRAINED_NETS,
            headline=True,
        ),
        Claim(
            "R drops with training",
            "trained R at the last layer far below its value at initialisation",
            f"R_init / R_trained at the output >= {preset.r_drop:g}, R_init the mean over "
            f"{preset.init_seeds} initialisations, R_trained the mean over the trained seeds",
            lambda t: _drop(t, preset.r_drop),
            Preconditions(min_init=min(preset.init_seeds, 2)),
            headline=True,
        ),
        Claim(
            "R at init is order 1",
            "at initialisation a net is about as sensitive to a diffeo as to noise: R is of "
            "order 1 (it is training that lowers it by decades)",
            f"R at the output at init (mean of {preset.init_seeds} initialisations) within a "
            f"decade of 1: {1 / INIT_BAND:g} <= R_init <= {INIT_BAND:g}",
            _init_order_one,
            Preconditions(learned=False, no_collapse=False, min_seeds=0),
        ),
    )
    return FigureSpec(
        name=NAME,
        title="Scale detection: trained CNNs against the idealised pooling net",
        description=(
            "The 1D scale-detection CNN (filter 2, stride 2, ReLU, NTK scaling, hinge loss, SGD to "
            f"zero training error; d = {preset.sd_d}, xi = {preset.sd_xi}, width {preset.sd_width}, "
            f"{len(preset.seeds)} seed(s)) on tasks {', '.join(map(str, preset.sd_tasks))}"
            + (
                f", and a stride-1 net on task 1 (filter {preset.sd_stride1[0]}, depth "
                f"{preset.sd_stride1[1]}, width {preset.sd_stride1_width or preset.sd_width}, at "
                f"most {preset.sd_stride1_epochs or preset.sd_epochs} epochs"
                + (f", Adam {preset.sd_stride1_adam_lr:g}" if preset.sd_stride1_adam_lr else "")
                + ")"
                if preset.sd_stride1
                else ""
            )
            + ": D_k, "
            "G_k, R_k of the input, of each block's activation and of the output, at "
            "initialisation (grey) and after training (colour), mean +- standard error over seeds; "
            "the dotted black curve is the idealised net of the same depth (constant filters, one "
            "active pixel, computed exactly by the same measurement). Diffeo: the task's pixel "
            "shift (Task 2: moves stay inside the blocks); noise: matched."
        ),
        paper="Fig. 7 (1D CNN vs theory, stride 2 and stride 1); the paper preset adds Fig. 5, 8, 9 (2D zoo)",
        runs=tuple(runs),
        measure=measure_config(preset),
        probes=(
            "Task 2 checkpoints re-measured with the block-constrained pixel shift",
            "idealised net: theory.exact_sensitivities (same depth, filter, stride)",
        ),
        build=lambda context: build(context, runs, preset),
        plot=plot,
        claims=claims,
        options=dict(depth=preset.sd_depth),
        summary=summary,
    )


def build(context: Context, runs: list[Run], preset: Preset) -> pd.DataFrame:
    """Init and trained representations of every run, plus the idealised nets' exact values."""
    from diffeoprobe.theory import exact_sensitivities

    context.require(runs, NAME)
    parts = []
    groups: dict[str, list[Run]] = {}
    for run in runs:  # the same net and task with other seeds form a group
        groups.setdefault(run_id(replace(run.config, seed=0), run.measure), []).append(run)
    for members in groups.values():
        trained = {r.config.seed for r in members}
        extra = context.init_tables(members[0], preset.init_seeds)
        extra = extra[~extra["seed"].isin(trained)]  # untrained value: init_seeds initialisations
        for run, table in [(r, context.table(r)) for r in members] + [(members[0], extra)]:
            table = representations(table)
            table["net"] = run.tags.get("net", "scalecnn1d")
            table["family"] = "1D CNN" if run.config.model == "scalecnn1d" else "2D zoo"
            parts.append(table)
    table = pd.concat(parts, ignore_index=True)
    ideal = []
    for stride, filter_size, depth in sorted(
        {
            (int(r.tags["stride"]), *_filter_depth(r, preset))
            for r in runs
            if r.config.model == "scalecnn1d"
        }
    ):
        exact = exact_sensitivities(depth=depth, filter_size=filter_size, stride=stride)
        exact = exact.assign(
            state="theory",
            net=f"idealised (F={filter_size}, s={stride})",
            family="1D CNN",
            stride=stride,
            k=exact["depth"].astype(float),
            model="idealised",
        ).drop(columns=["activation", "filter_size", "depth_total"])
        ideal.append(exact)
    table = pd.concat([table, *ideal], ignore_index=True)
    keep = [
        "family", "net", "task", "stride", "state", "run", "seed", "layer", "k", "rel_depth",
        "D", "G", "R", "D_se", "G_se", "R_se", "Z", "n", "train_error", "test_error",
        "chance_error", "epoch",
    ]  # fmt: skip
    return table[[c for c in keep if c in table]]


def _filter_depth(run: Run, preset: Preset) -> tuple[int, int]:
    options = run.config.model_options
    return int(options.get("filter_size", 2)), int(options.get("depth", preset.sd_depth))


def _groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(subject, seed-averaged curves, per-seed rows) per trained family, net, stride, task."""
    measured = table[table["state"].isin([INIT, TRAINED])]
    out = []
    for (_, net, stride, task), part in measured.groupby(
        ["family", "net", "stride", "task"], sort=True
    ):
        mean = seed_mean(part, ["state", "layer", "k"]).sort_values("k")
        label = f"task {int(task)}, {net}" + (f", stride {int(stride)}" if stride else "")
        out.append((label, mean, part))
    return out


def _trend(table: pd.DataFrame, quantity: str, *, falling: bool) -> list[Verdict]:
    verdicts = []
    for subject, mean, part in _groups(table):
        trained = mean[(mean["state"] == TRAINED) & (mean["k"] >= 1)]
        init = mean[(mean["state"] == INIT) & (mean["k"] >= 1)]
        holds, rho = depth_trend(trained["k"], trained[quantity], falling=falling)
        rho0 = spearman(init["k"], init[quantity])
        values = ", ".join(fmt(v, 2) for v in trained[quantity])
        verdicts.append(
            Verdict(
                subject,
                bool(holds),
                f"trained rho = {fmt(rho, 2)}, {quantity}_k (k = 1 .. output) = {values}; "
                f"at init rho = {fmt(rho0, 2)}; test error {_test_error(part)}",
                rows=part,
            )
        )
    return verdicts


def _drop(table: pd.DataFrame, factor: float) -> list[Verdict]:
    verdicts = []
    for subject, mean, part in _groups(table):
        out = mean[mean["layer"] == "output"].set_index("state")["R"]
        hidden = mean[mean["k"] == mean[mean["layer"] != "output"]["k"].max()]
        hidden = hidden.set_index("state")["R"]
        ratio = out[INIT] / out[TRAINED]
        per_seed = part[part["layer"] == "output"].pivot_table(
            index="seed", columns="state", values="R"
        )
        inits = per_seed[INIT].count()
        per_seed = per_seed.dropna()
        spread = ", ".join(
            f"seed {int(s)}: {fmt(r[INIT], 2)} -> {fmt(r[TRAINED], 2)}"
            for s, r in per_seed.iterrows()
        )
        verdicts.append(
            Verdict(
                subject,
                bool(ratio >= factor),
                f"R at the output: init {fmt(out[INIT])} (mean of {inits} initialisations) -> "
                f"trained {fmt(out[TRAINED])} (mean of {len(per_seed)} seeds), ratio {fmt(ratio)}; "
                f"per trained seed {spread}; last hidden layer: ratio "
                f"{fmt(hidden[INIT] / hidden[TRAINED])}; test error {_test_error(part)}",
                rows=part,
            )
        )
    return verdicts


def _init_order_one(table: pd.DataFrame) -> list[Verdict]:
    verdicts = []
    for subject, mean, part in _groups(table):
        init = mean[(mean["layer"] == "output") & (mean["state"] == INIT)].iloc[0]
        r0, se = float(init["R"]), float(init["R_se"])
        holds = 1 / INIT_BAND <= r0 <= INIT_BAND
        verdicts.append(
            Verdict(
                subject,
                bool(holds),
                f"R at the output at init = {fmt(r0)} +- {fmt(se, 2)} ({int(init['seeds'])} "
                "initialisations)",
                rows=part[part["state"] == INIT],
            )
        )
    return verdicts


def _test_error(part: pd.DataFrame) -> str:
    """The trained runs' test errors, for a verdict's text."""
    errors = part[part["state"] == TRAINED].groupby("run", sort=False)["test_error"].first()
    return ", ".join(fmt(e, 2) for e in errors) or "nan"


def plot(table: pd.DataFrame) -> Figure:
    """Rows: (net family, task); columns: D, G, R versus the layer index (relative depth for 2D)."""
    groups = _groups(table)
    theory = table[table["state"] == "theory"]
    fig, axes = plots.grid(len(groups), 3, height=2.7)
    for row, (subject, mean, rows) in enumerate(groups):
        two_d = rows["family"].eq("2D zoo").any()  # no idealised 1D net to draw over these
        x = "k"
        for col, q in enumerate(plots.QUANTITIES):
            ax = axes[row, col]
            for state, style in ((INIT, plots.INIT_STYLE), (TRAINED, plots.TRAINED_STYLE)):
                part = mean[mean["state"] == state]
                ax.errorbar(part[x], part[q], yerr=part[f"{q}_se"], label=state, **style)
            if not two_d:
                stride = 1 if "stride 1" in subject else 2
                ideal = theory[theory["stride"] == stride]
                ax.plot(ideal["k"], ideal[q], **plots.THEORY_STYLE, label="idealised net")
            ax.set_yscale("log")
            plots.title(ax, q, subject if col == 0 else None)
            if row == len(groups) - 1:
                ax.set_xlabel("layer k (last point: output)")
        if row == 0:
            axes[row, 2].legend(fontsize=7, loc="best")
    fig.suptitle("Scale detection: D_k, G_k, R_k at init and trained, idealised net dotted")
    fig.tight_layout()
    return fig


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Seed means of D, G, R at init and trained, per subject and layer."""
    rows = []
    for subject, mean, _ in _groups(table):
        wide = mean.pivot_table(index=["layer", "k"], columns="state", values=["D", "G", "R"])
        wide.columns = [f"{q} {state}" for q, state in wide.columns]
        wide = wide.reset_index().sort_values("k")
        wide.insert(0, "subject", subject)
        rows.append(wide)
    return pd.concat(rows, ignore_index=True)
