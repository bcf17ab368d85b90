"""Figure ``theory``: the idealised pooling nets, exact against the power laws, ReLU against tanh.

docs/science.md section 7 and docs/theory.md: 1D nets of constant filters (F = 2) at stride 1 and 2,
one active pixel, the diffeo moves it by one, matched noise. "Exact" is the project's own
``measure`` run on the constructed net (:func:`diffeoprobe.theory.exact_sensitivities`); "law" is
:func:`diffeoprobe.theory.power_laws`. tanh is shown at a small amplitude (a = 0.1, where the
authors' argument holds) and at a = 1 (where tanh squashes the signal and Z_k falls), with the
noise numerator G_k Z_k / (2 a^2) that tells the two apart.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from diffeoprobe import plots
from diffeoprobe.experiments.common import fmt, measure_config
from diffeoprobe.experiments.presets import Preset
from diffeoprobe.experiments.spec import Claim, FigureSpec, Verdict

__all__ = [
    "FILTER",
    "FLAT",
    "LN2",
    "NAME",
    "NUMERATOR_FLAT",
    "R_RATIO_TOL",
    "SMALL",
    "STYLES",
    "VARIANTS",
    "build",
    "plot",
    "spec",
    "summary",
]

NAME = "theory"
FILTER = 2
SMALL = 0.1  # tanh amplitude where tanh is close to linear (docs/theory.md section 5)
FLAT = 1.5  # G_K / G_1 above this with tanh: the text says why G still grows
NUMERATOR_FLAT = 1.1  # the noise numerator at k = K over k = 1
R_RATIO_TOL = 0.05  # |R / R_law - 1| at the last layer, stride 1
VARIANTS = (("relu", 1.0), ("tanh", SMALL), ("tanh", 1.0))
LN2 = math.log(2.0)


def spec(preset: Preset) -> FigureSpec:
    """This figure under ``preset``: its runs, measurement and claims."""
    tol = preset.theory_tolerance
    claims = (
        Claim(
            "stride-1 exponents",
            "stride 1: D_k ~ 1/k, G_k ~ k^(1/2) (+ a constant), R_k ~ k^(-3/2)",
            f"exponents -1 and +1/2 within {tol:g}; R / law at the last layer within "
            f"{max(R_RATIO_TOL, tol):g} of 1",
            lambda t: _stride1(t, tol, preset.theory_kmin1),
        ),
        Claim(
            "stride-2 exponents",
            "stride 2 (F = 2): D_k ~ 2^-k, G_k ~ 2^k, R_k ~ 4^-k",
            f"rates -1, +1, -2 (units of ln 2) within {tol:g}",
            lambda t: _stride2(t, tol),
        ),
        Claim(
            "tanh: G grows less than with ReLU",
            "with tanh (odd) instead of ReLU, noise sensitivity grows less with depth in the "
            "same idealised net",
            "G_K / G_1 with tanh below G_K / G_1 with ReLU, same net (stride, depth), at a = "
            f"{SMALL:g} and a = 1",
            _tanh_below_relu,
            headline=True,
        ),
        Claim(
            "tanh: noise does not pile up",
            "rectified by ReLU the noise acquires a positive mean that pooling piles up; with "
            "tanh it stays zero-mean and averages out",
            f"noise numerator G_K Z_K / (G_1 Z_1) with tanh <= {NUMERATOR_FLAT:g} and below "
            f"ReLU's, same net, at a = 1 and a = {SMALL:g}",
            _tanh_numerator,
        ),
    )
    return FigureSpec(
        name=NAME,
        title="Idealised pooling nets: exact versus power laws, ReLU versus tanh",
        description=(
            "1D constant-filter nets (F = 2, no bias, periodic signal, one active pixel moved by "
            f"one; matched noise) at stride 1 (depth {preset.theory_depth1}, log-log axes) and "
            f"stride 2 (depth {preset.theory_depth2}, log-linear axes). Markers: exact values from "
            "the project's own measure on the constructed net; lines: the laws of docs/theory.md "
            "(ReLU: D ~ 1/k, G ~ B k^(1/2) + C at stride 1; D = 2^-k, G = 2^k / (4 pi) + 0.34 at "
            f"stride 2; tanh at small amplitude: G = 1). tanh at a = {SMALL:g} and a = 1; the last "
            "column is the noise numerator G_k Z_k / (2 a^2), which shows that with tanh the noise "
            "does not pile up even where G rises through the fall of Z_k."
        ),
        paper="Section 7 / Fig. 7's theory curves (stride 1 and 2)",
        runs=(),
        measure=measure_config(preset),
        probes=("theory.theory_table: exact measure on constant-filter nets + power_laws",),
        build=lambda context: build(preset),
        plot=plot,
        claims=claims,
        summary=summary,
    )


def build(preset: Preset) -> pd.DataFrame:
    """Exact and law rows for stride 1 and 2, ReLU and tanh at two amplitudes."""
    from diffeoprobe.theory import theory_table

    parts = []
    for stride, depth, extra in (
        (1, preset.theory_depth1, dict(draws=preset.theory_draws)),
        (2, preset.theory_depth2, dict(size=preset.theory_size2)),
    ):
        for activation, value in VARIANTS:
            tab = theory_table(
                depth=depth,
                filter_size=FILTER,
                stride=stride,
                activation=activation,
                value=value,
                **extra,
            )
            tab = tab.assign(value=value, numerator=tab["G"] * tab["Z"] / (2 * value**2))
            exact = tab.assign(variant="exact")
            law = tab.assign(variant="law", D=tab["D_theory"], G=tab["G_theory"], R=tab["R_theory"])
            law[["D_se", "G_se", "R_se", "Z", "numerator"]] = np.nan
            if activation == "tanh" and value != SMALL:
                law = law.iloc[0:0]  # no law for tanh at large amplitude
            parts += [exact, law]
    table = pd.concat(parts, ignore_index=True).rename(columns={"depth": "k"})
    keep = ["stride", "activation", "value", "variant", "k", "layer", "D", "G", "R"]
    keep += ["D_se", "G_se", "R_se", "Z", "numerator", "depth_total"]
    return table[keep]


def _curve(table: pd.DataFrame, stride: int, activation: str, value: float) -> pd.DataFrame:
    sel = (table["stride"] == stride) & (table["activation"] == activation)
    sel &= np.isclose(table["value"], value) & (table["variant"] == "exact")
    return table[sel].sort_values("k")


def _stride1(table: pd.DataFrame, tol: float, k_min: int) -> list[Verdict]:
    from diffeoprobe.theory import fit_exponent

    exact = _curve(table, 1, "relu", 1.0)
    d = fit_exponent(exact["k"], exact["D"], "power", k_min=2 * k_min)
    g = fit_exponent(exact["k"], exact["G"], "power", offset=True, k_min=k_min)
    g_loglog = fit_exponent(exact["k"], exact["G"], "power", k_min=k_min)
    last = exact.iloc[-1]
    laws = table[(table["stride"] == 1) & (table["activation"] == "relu")]
    law = laws[(laws["variant"] == "law") & (laws["k"] == last["k"])]["R"].iloc[0]
    ratio = float(last["R"] / law)
    return [
        Verdict(
            f"D exponent (k >= {2 * k_min})",
            abs(d.exponent + 1) <= tol,
            f"fitted {d.exponent:+.3f} (predicted -1)",
        ),
        Verdict(
            f"G exponent, fit B k^a + C (k >= {k_min})",
            abs(g.exponent - 0.5) <= tol,
            f"fitted {g.exponent:+.3f} (predicted +0.5), B = {g.prefactor:.4f} (0.1410), "
            f"C = {g.offset:.3f} (0.316); plain log-log slope {g_loglog.exponent:+.3f} "
            "(the constant C hides the 1/2 at these depths, docs/theory.md)",
        ),
        Verdict(
            f"R at k = {int(last['k'])} against the law A k^-1 / (B k^(1/2) + C)",
            abs(ratio - 1) <= max(R_RATIO_TOL, tol),
            f"R / law = {ratio:.3f}",
        ),
    ]


def _stride2(table: pd.DataFrame, tol: float) -> list[Verdict]:
    from diffeoprobe.theory import fit_exponent

    exact = _curve(table, 2, "relu", 1.0)
    depth = int(exact["k"].max())
    d = fit_exponent(exact["k"], exact["D"], "exponential", k_min=1)
    g = fit_exponent(exact["k"], exact["G"], "exponential", offset=True, k_min=1)
    r = fit_exponent(exact["k"], exact["R"], "exponential", k_min=max(1, depth - 4))
    out = []
    for label, law, predicted in (
        ("D rate (k >= 1)", d, -1),
        ("G rate, fit B 2^(a k) + C (k >= 1)", g, +1),
        (f"R rate (k >= {max(1, depth - 4)})", r, -2),
    ):
        rate = law.exponent / LN2
        out.append(
            Verdict(
                label,
                abs(rate - predicted) <= tol,
                f"fitted {rate:+.3f} (predicted {predicted:+d})",
            )
        )
    return out


def _tanh_below_relu(table: pd.DataFrame) -> list[Verdict]:
    out = []
    for stride in (1, 2):
        relu = _curve(table, stride, "relu", 1.0)
        relu_ratio = relu["G"].iloc[-1] / relu[relu["k"] >= 1]["G"].iloc[0]
        for value in (SMALL, 1.0):
            tanh = _curve(table, stride, "tanh", value)
            g1 = tanh[tanh["k"] >= 1]["G"].iloc[0]
            ratio = tanh["G"].iloc[-1] / g1
            out.append(
                Verdict(
                    f"stride {stride}, a = {value:g}",
                    bool(ratio < relu_ratio),
                    f"G_K / G_1 (K = {int(tanh['k'].max())}): tanh {fmt(ratio)} (G_1 = "
                    f"{fmt(g1)}, G_K = {fmt(tanh['G'].iloc[-1])}), ReLU {fmt(relu_ratio)}"
                    + (
                        "; at a = 1 tanh squashes the signal, Z_k falls and G = numerator / Z "
                        "rises without any pile-up of the noise (docs/theory.md section 5)"
                        if value == 1.0 and ratio > FLAT
                        else ""
                    ),
                )
            )
    return out


def _tanh_numerator(table: pd.DataFrame) -> list[Verdict]:
    out = []
    for stride in (1, 2):
        relu = _curve(table, stride, "relu", 1.0)
        relu = relu[relu["k"] >= 1]["numerator"]
        for value in (SMALL, 1.0):
            tanh = _curve(table, stride, "tanh", value)
            num = tanh[tanh["k"] >= 1]["numerator"]
            ratio = num.iloc[-1] / num.iloc[0]
            out.append(
                Verdict(
                    f"stride {stride}, a = {value:g}",
                    bool(ratio <= NUMERATOR_FLAT and ratio < relu.iloc[-1] / relu.iloc[0]),
                    f"tanh numerator {fmt(num.iloc[0])} -> {fmt(num.iloc[-1])} (ratio "
                    f"{fmt(ratio)}); ReLU {fmt(relu.iloc[0])} -> {fmt(relu.iloc[-1])} (ratio "
                    f"{fmt(relu.iloc[-1] / relu.iloc[0])})",
                )
            )
    return out


STYLES = {
    ("relu", 1.0): dict(color="C3", label="ReLU"),
    ("tanh", SMALL): dict(color="C0", label=f"tanh, a = {SMALL:g}"),
    ("tanh", 1.0): dict(color="C2", label="tanh, a = 1"),
}


def plot(table: pd.DataFrame) -> Figure:
    """Rows: stride 1, stride 2; columns: D, G, R, noise numerator; markers exact, lines laws."""
    columns = (*plots.QUANTITIES, "numerator")
    fig, axes = plots.grid(2, len(columns), width=3.3, height=2.9)
    for row, stride in enumerate((1, 2)):
        for col, q in enumerate(columns):
            ax = axes[row, col]
            for (activation, value), style in STYLES.items():
                sel = (table["stride"] == stride) & (table["activation"] == activation)
                sel &= np.isclose(table["value"], value) & (table["k"] >= 1)
                exact = table[sel & (table["variant"] == "exact")].sort_values("k")
                law = table[sel & (table["variant"] == "law")].sort_values("k")
                ax.plot(exact["k"], exact[q], "o", ms=3, color=style["color"], label=style["label"])
                if len(law) and q != "numerator":
                    ax.plot(law["k"], law[q], "-", lw=1, color=style["color"], alpha=0.8)
            ax.set_yscale("log")
            if stride == 1:
                ax.set_xscale("log")
            label = "noise numerator G Z / 2a^2" if q == "numerator" else q
            plots.title(ax, label, f"stride {stride}" if col == 0 else None)
            ax.set_xlabel("layer k")
    axes[0, 1].legend(fontsize=7, loc="best")
    fig.suptitle("Idealised nets (F = 2): exact (markers) and laws (lines)")
    fig.tight_layout()
    return fig


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """ReLU exact and law at a few depths, with tanh's G at both amplitudes."""
    rows = []
    for stride in (1, 2):
        relu = _curve(table, stride, "relu", 1.0).set_index("k")
        law = table[(table["stride"] == stride) & (table["activation"] == "relu")]
        law = law[law["variant"] == "law"].set_index("k")
        small = _curve(table, stride, "tanh", SMALL).set_index("k")
        large = _curve(table, stride, "tanh", 1.0).set_index("k")
        depth = int(relu.index.max())
        ks = sorted({k for k in (1, 2, 4, 8, 16, 64, 256, depth) if k <= depth})
        for k in ks:
            rows.append(
                {
                    "stride": stride,
                    "k": k,
                    "D": relu.loc[k, "D"],
                    "D law": law.loc[k, "D"],
                    "G": relu.loc[k, "G"],
                    "G law": law.loc[k, "G"],
                    "R": relu.loc[k, "R"],
                    "R law": law.loc[k, "R"],
                    f"tanh G (a={SMALL:g})": small.loc[k, "G"],
                    "tanh G (a=1)": large.loc[k, "G"],
                }
            )
    return pd.DataFrame(rows)
