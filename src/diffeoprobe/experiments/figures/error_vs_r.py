"""Figure ``error-vs-r``: test error against R at the output across a zoo (the predecessor's headline).

docs/science.md section 8: across architectures on CIFAR-10, Petrini et al. (2021) found test error ~
0.2 sqrt(R_f), R_f the relative sensitivity of the output, about 1 at initialisation and decades
lower after training. Here every net of the preset's zoo is trained, R at its output is measured
at initialisation and at the end, and ``error = a R^b`` is fitted (least squares in log-log, one
point per trained net and seed) with standard errors of a and b.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.stats
from matplotlib.figure import Figure

from diffeoprobe import plots
from diffeoprobe.experiments.common import (
    FILE_BACKED,
    INIT,
    TRAINED,
    Context,
    fmt,
    measure_config,
    representations,
    zoo_run,
)
from diffeoprobe.experiments.presets import Preset
from diffeoprobe.experiments.spec import (
    TREND,
    Claim,
    FigureSpec,
    Preconditions,
    Verdict,
    depth_trend,
    spearman,
)

__all__ = [
    "INIT_BAND",
    "NAME",
    "build",
    "plot",
    "spec",
    "summary",
]

NAME = "error-vs-r"
PAPER_A, PAPER_B = 0.2, 0.5  # error ~ 0.2 sqrt(R) on CIFAR-10 (Petrini et al. 2021)
INIT_BAND = 10.0  # R at init "about 1": within a decade


def spec(preset: Preset) -> FigureSpec:
    """The zoo of the preset's data set (every net and seed), trained and measured."""
    runs = tuple(zoo_run(preset, net, seed=s) for net in preset.zoo for s in preset.zoo_seeds)
    # file-backed data (downloaded or not): the driver skips the figure, with the reason, when
    # the files are absent and cannot be downloaded here
    requires = (preset.zoo_dataset,) if preset.zoo_dataset in FILE_BACKED else ()
    nets = ", ".join(dict.fromkeys(r.tags["net"] for r in runs))
    claims: tuple[Claim, ...] = (
        Claim(
            "CNNs: trained R_k falls with depth",
            "after training, R_k falls with depth in the convolutional nets of the zoo",
            f"per CNN: Spearman rho(k, R_k) <= -{TREND} and R at the output below R at layer 1",
            _cnn_depth,
            Preconditions(),
            headline=True,
        ),
        Claim(
            "CNNs: training lowers R",
            "training makes a CNN relatively stable to diffeomorphisms: R at the output falls "
            "below its value at initialisation (fully connected nets are shown for contrast)",
            "per CNN: R_trained < R_init at the output, beyond 2 standard errors",
            _cnn_drop,
            Preconditions(),
        ),
        Claim(
            "R at init is about 1",
            "at initialisation a net is about as sensitive to a diffeo as to noise: R at the "
            "output is of order 1, decades above its trained value",
            f"every net: R_init (mean over seeds) within a decade of 1: {1 / INIT_BAND:g} <= "
            f"R_init <= {INIT_BAND:g}",
            _init_about_one,
            Preconditions(learned=False, no_collapse=False, min_seeds=0),
        ),
    )
    if preset.judge_error_law:  # quick's small zoo reports the fit, with its error bars, only
        claims += (
            Claim(
                "error grows with R",
                "across architectures the test error grows with R at the output",
                "fitted b > 0 and Spearman rho(R, error) > 0 over the trained nets",
                _grows,
                Preconditions(),
                headline=True,
            ),
            Claim(
                "error ~ 0.2 sqrt(R)",
                "test error ~ 0.2 sqrt(R_f) (CIFAR-10, Petrini et al. 2021)",
                f"b = {PAPER_B} within 2 standard errors (a = {PAPER_A} on CIFAR-10)",
                _sqrt_law,
                Preconditions(),
                headline=True,
            ),
        )
    return FigureSpec(
        name=NAME,
        title="Test error versus R at the output across a zoo",
        description=(
            f"{nets} on {preset.zoo_dataset} ({preset.zoo_epochs} epochs"
            + (f", {preset.zoo_train_size} training images" if preset.zoo_train_size else "")
            + f", {len(preset.zoo_seeds)} seed(s)): test error against R at the output after "
            "training (filled) and at initialisation (hollow, at its untrained error); the line "
            "is the fit error = a R^b, the dashed line the predecessor's 0.2 sqrt(R) on CIFAR-10."
            + (
                ""
                if preset.judge_error_law
                else " With this preset's zoo the fit is reported with its error bars, not "
                "judged (the standard and paper presets judge it)."
            )
        ),
        paper="Petrini et al. 2021, Fig. 3 / docs/science.md section 8 (error ~ 0.2 sqrt(R))",
        runs=runs,
        measure=measure_config(preset),
        probes=(),
        build=lambda context: build(context, list(runs)),
        plot=plot,
        claims=claims,
        requires=requires,
        summary=summary,
    )


def build(context: Context, runs: list) -> pd.DataFrame:
    """Every representation of every net at init and trained (the claims on depth read them; the
    plot and the fit read the output), with ``cnn``: whether the net is convolutional.
    """
    context.require(runs, NAME)
    rows = []
    for run in runs:
        table = representations(context.table(run))
        keep = ["net", "state", "run", "seed", "layer", "k", "D", "G", "R", "D_se", "G_se"]
        keep += ["R_se", "Z", "n", "train_error", "test_error", "chance_error", "epoch"]
        rows.append(table[keep].assign(cnn=not run.config.model.startswith("fc")))
    return pd.concat(rows, ignore_index=True)


def _output(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["layer"] == "output"]


def _cnn_depth(table: pd.DataFrame) -> list[Verdict]:
    out = []
    for net, rows in table[table["cnn"]].groupby("net", sort=False):
        trained = rows[(rows["state"] == TRAINED) & (rows["k"] >= 1)]
        curve = trained.groupby("k")["R"].mean()
        holds, rho = depth_trend(curve.index, curve.to_numpy(), falling=True)
        values = ", ".join(fmt(v, 2) for v in curve)
        out.append(
            Verdict(
                net,
                bool(holds),
                f"trained rho = {fmt(rho, 2)}, R_k (k = 1 .. output) = {values}; test error "
                f"{fmt(trained['test_error'].mean(), 2)}",
                rows=rows,
            )
        )
    return out


def _cnn_drop(table: pd.DataFrame) -> list[Verdict]:
    out = []
    outputs = _output(table)
    for net, rows in outputs[outputs["cnn"]].groupby("net", sort=False):
        by_state = rows.groupby("state")
        r, se = by_state["R"].mean(), by_state["R_se"].mean()
        gap = float(r[INIT] - r[TRAINED])
        holds = gap > 2 * math.hypot(se[INIT], se[TRAINED])
        out.append(
            Verdict(
                net,
                bool(holds),
                f"R at the output: init {fmt(r[INIT])} +- {fmt(se[INIT], 2)} -> trained "
                f"{fmt(r[TRAINED])} +- {fmt(se[TRAINED], 2)}; " + _fc_contrast(outputs),
                rows=table[table["net"] == net],
            )
        )
    return out


def _fc_contrast(outputs: pd.DataFrame) -> str:
    fc = outputs[~outputs["cnn"]].pivot_table(index="net", columns="state", values="R")
    if fc.empty:
        return "no fully connected net"
    return "fully connected: " + ", ".join(
        f"{net} {fmt(row[INIT], 2)} -> {fmt(row[TRAINED], 2)}" for net, row in fc.iterrows()
    )


def fit_power(r: np.ndarray, error: np.ndarray) -> dict[str, float]:
    """``error = a R^b`` by least squares on ``log10`` (:func:`scipy.stats.linregress`).

    Returns ``a``, ``b``, their standard errors ``a_se`` and ``b_se``, ``log10_a_se`` (the
    intercept's) and ``n``, the number of points used. Points whose ``R`` or error is not positive
    and finite are dropped. With fewer than 2 points, or all at one ``R``, every value is NaN; with
    exactly 2 the line through them is returned and the standard errors are NaN (no residual
    degree of freedom is left to estimate them); one error at every ``R`` is an exact fit, b = 0
    with standard errors 0. ``a_se = a ln(10) log10_a_se``, first order.

    >>> f = fit_power(np.array([0.01, 0.1, 1.0]), 0.2 * np.sqrt([0.01, 0.1, 1.0]))
    >>> round(f["a"], 6), round(f["b"], 6)
    (0.2, 0.5)
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # log10 of 0 or < 0: dropped below
        x, y = np.log10(np.asarray(r, float)), np.log10(np.asarray(error, float))
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return dict(a=math.nan, b=math.nan, a_se=math.nan, b_se=math.nan, log10_a_se=math.nan, n=n)
    fit = scipy.stats.linregress(x, y)
    if n == 2:  # scipy reports 0 for both errors: there is no residual to estimate them from
        b_se = c_se = math.nan
    elif np.ptp(y) == 0:  # one error for every R: an exact fit (scipy's r, hence errors, is NaN)
        b_se = c_se = 0.0
    else:
        b_se, c_se = float(fit.stderr), float(fit.intercept_stderr)
    a = float(10**fit.intercept)
    return dict(
        a=a, b=float(fit.slope), a_se=a * math.log(10) * c_se, b_se=b_se, log10_a_se=c_se, n=n
    )


def _trained(table: pd.DataFrame) -> pd.DataFrame:
    table = _output(table)
    return table[(table["state"] == TRAINED) & (table["test_error"] > 0)]


def _fit_text(fit: dict[str, float]) -> str:
    return (
        f"a = {fmt(fit['a'])} +- {fmt(fit['a_se'], 2)}, b = {fmt(fit['b'])} +- "
        f"{fmt(fit['b_se'], 2)} (n = {fit['n']})"
    )


def _init_about_one(table: pd.DataFrame) -> list[Verdict]:
    rows = _output(table)
    rows = rows[rows["state"] == INIT]
    init = rows.groupby("net", sort=False)["R"].mean()
    inside = init.between(1 / INIT_BAND, INIT_BAND)
    values = ", ".join(f"{net} {fmt(r)}" for net, r in init.items())
    return [Verdict("every net", bool(inside.all()), f"R_init at the output: {values}", rows=rows)]


def _errors(table: pd.DataFrame) -> str:
    trained = table[table["state"] == TRAINED].groupby("net", sort=False)["test_error"].mean()
    return "test errors " + ", ".join(f"{net} {fmt(e, 2)}" for net, e in trained.items())


def _grows(table: pd.DataFrame) -> list[Verdict]:
    trained = _trained(table)
    fit = fit_power(trained["R"].to_numpy(), trained["test_error"].to_numpy())
    rho = spearman(trained["R"], trained["test_error"])
    holds = fit["b"] > 0 and rho > 0
    text = f"{_fit_text(fit)}; Spearman rho = {fmt(rho, 2)}; {_errors(table)}"
    return [Verdict("trained zoo", bool(holds), text, rows=table)]


def _sqrt_law(table: pd.DataFrame) -> list[Verdict]:
    trained = _trained(table)
    fit = fit_power(trained["R"].to_numpy(), trained["test_error"].to_numpy())
    holds = math.isfinite(fit["b_se"]) and abs(fit["b"] - PAPER_B) <= 2 * fit["b_se"]
    return [Verdict("trained zoo", bool(holds), f"{_fit_text(fit)}; {_errors(table)}", rows=table)]


def plot(table: pd.DataFrame) -> Figure:
    """Log-log test error versus R at the output; fit and the predecessor's law."""
    table = _output(table)
    fig, axes = plots.grid(1, 1, width=6.0, height=4.4)
    ax = axes[0, 0]
    nets = list(dict.fromkeys(table["net"]))
    for i, net in enumerate(nets):
        colour = plots.COLOURS[i % len(plots.COLOURS)]
        part = table[table["net"] == net]
        trained, init = part[part["state"] == TRAINED], part[part["state"] == INIT]
        ax.errorbar(trained["R"], trained["test_error"], xerr=trained["R_se"], fmt="o",
                    color=colour, label=net, capsize=2)  # fmt: skip
        ax.plot(init["R"], init["test_error"], "o", mfc="none", color=colour, alpha=0.6)
    trained = _trained(table)
    fit = fit_power(trained["R"].to_numpy(), trained["test_error"].to_numpy())
    r_all = table["R"][table["R"] > 0]
    if len(r_all) and math.isfinite(fit["b"]):
        grid = np.geomspace(r_all.min() / 1.5, r_all.max() * 1.5, 50)
        ax.plot(grid, fit["a"] * grid ** fit["b"], "k-", lw=1,
                label=f"fit: {fmt(fit['a'], 2)} R^{fmt(fit['b'], 2)}")  # fmt: skip
        ax.plot(
            grid, PAPER_A * grid**PAPER_B, "k--", lw=1, alpha=0.6, label="0.2 sqrt(R) (CIFAR-10)"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("R at the output (filled: trained, hollow: init)")
    ax.set_ylabel("test error")
    ax.grid(alpha=0.25, which="both")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Test error versus relative stability R_f", fontsize=10)
    fig.tight_layout()
    return fig


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per net and seed: R at the output and the test error, at init and trained; last row: the
    fit ``error = a R^b`` over the trained nets, with its standard errors.
    """
    output = _output(table)
    wide = output.pivot_table(index=["net", "seed"], columns="state", values=["R", "test_error"])
    wide.columns = [f"{q} {state}" for q, state in wide.columns]
    trained = _trained(table)
    fit = fit_power(trained["R"].to_numpy(), trained["test_error"].to_numpy())
    fit_row = pd.DataFrame([{"net": f"fit error = a R^b: {_fit_text(fit)}"}])
    return pd.concat([wide.reset_index(), fit_row], ignore_index=True)
