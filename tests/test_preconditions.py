"""Claims are judged only on runs that meet their preconditions: a net that never learned, or one
whose representation collapsed, gives "not evaluable" with the reason for every claim that reads it."""

from __future__ import annotations

import pandas as pd
import pytest

from diffeoprobe.experiments import figure_specs
from diffeoprobe.experiments.preconditions import (
    COLLAPSE_FACTOR,
    MIN_PROBES,
    Preconditions,
    chance_error,
)
from diffeoprobe.experiments.spec import Claim, Verdict

LAYERS = ["input", "block1.act", "block2.act", "block3.act", "output"]


def _net_table(
    *, test_error: float = 0.01, z_out_trained: float = 2.0, probes: int = 256, seeds=(0, 1)
) -> pd.DataFrame:
    """A scale-detection figure's rows for one trained 1D net: R falls, G rises after training."""
    rows = []
    for seed in seeds:
        for state in ("init", "trained"):
            for k, layer in enumerate(LAYERS):
                trained = state == "trained"
                g = 1.0 + (0.5 * k if trained else 0.05 * k)
                r = 0.5 / (3.0**k) if trained else 0.5
                z = 1.0 if layer != "output" else (z_out_trained if trained else 1e-3)
                rows.append(
                    dict(family="1D CNN", net="scalecnn1d", task=1, stride=2, state=state,
                         run=f"run{seed}", seed=seed, layer=layer, k=float(k), D=r * g, G=g, R=r,
                         D_se=0.01, G_se=0.01, R_se=0.01, Z=z, n=probes, train_error=0.0,
                         test_error=test_error if trained else 0.5, chance_error=0.5)
                )  # fmt: skip
    return pd.DataFrame(rows)


def _claims(name: str) -> dict[str, Claim]:
    (spec,) = figure_specs("quick", [name])
    return {c.key: c for c in spec.claims}


def test_a_net_that_learned_is_judged() -> None:
    claims = _claims("scale-detection")
    table = _net_table()
    falls = claims["R falls with depth"].judge(table)
    rises = claims["G rises with depth"].judge(table)
    assert [v.holds for v in falls] == [True] and [v.holds for v in rises] == [True]
    assert falls[0].reason == ""


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        (_net_table(test_error=0.46), "the net did not learn: test error 0.46 > 0.25"),
        (_net_table(z_out_trained=1e-8), "a representation collapsed: Z at output fell"),
        (_net_table(probes=32), f"too few probes: 32 < {MIN_PROBES}"),
    ],
    ids=["untrained", "collapsed", "few probes"],
)
def test_failed_preconditions_make_every_trained_claim_not_evaluable(table, reason) -> None:
    claims = _claims("scale-detection")
    for key in ("R falls with depth", "G rises with depth", "R drops with training"):
        (verdict,) = claims[key].judge(table)
        assert verdict.holds is None and verdict.status == "not evaluable", key
        assert reason in verdict.reason, (key, verdict.reason)
        assert verdict.measured  # the numbers are still shown


def test_untrained_nets_fail_every_figure_that_reads_trained_nets() -> None:
    """relu-tanh and noisy-training too: a net at chance gives no verdict either way."""
    table = _net_table(test_error=0.5)
    both = pd.concat([table.assign(activation="relu"), table.assign(activation="tanh")])
    (verdict,) = _claims("relu-tanh")["tanh: trained G grows less than with ReLU"].judge(
        both.assign(run=both["run"] + both["activation"])
    )
    assert verdict.holds is None and "did not learn" in verdict.reason
    noisy = table.assign(noise_norm=0.0)
    for claim in _claims("noisy-training").values():
        (verdict,) = claim.judge(noisy)
        assert verdict.holds is None and "did not learn" in verdict.reason


def test_init_claim_reads_only_initialisations() -> None:
    (verdict,) = _claims("scale-detection")["R at init is order 1"].judge(
        _net_table(test_error=0.5)
    )
    assert verdict.holds is True  # R = 0.5 at init: a decade of 1, whatever training did


def test_preconditions_rules() -> None:
    assert chance_error(2) == 0.5 and chance_error(10) == pytest.approx(0.9)
    good = _net_table()
    assert Preconditions().check(good) is None
    assert "too few trained seeds: 1 < 3" in Preconditions(min_seeds=3).check(
        _net_table(seeds=(0,))
    )
    assert Preconditions().check(good.iloc[0:0]) == "no measured rows to check the preconditions on"
    assert "not recorded" in Preconditions().check(good.drop(columns="chance_error"))
    # the collapse limit is two orders of magnitude, inclusive
    edge = good.copy()
    hidden = (edge["layer"] == "block2.act") & (edge["state"] == "trained")
    edge.loc[hidden, "Z"] = 1.0 / COLLAPSE_FACTOR
    assert Preconditions().check(edge) is None
    edge.loc[hidden, "Z"] = 0.99 / COLLAPSE_FACTOR
    assert "collapsed: Z at block2.act" in Preconditions().check(edge)
    zero = good.copy()
    zero.loc[zero["layer"] == "block1.act", "Z"] = 0.0  # nothing left at init or trained
    assert "collapsed" in Preconditions().check(zero)
    assert "learned" in Preconditions().describe() and "collapsed" in Preconditions().describe()


def test_a_verdict_already_not_evaluable_keeps_its_reason() -> None:
    claim = Claim(
        "k", "s", "p", lambda t: [Verdict("x", None, "1", "own reason", rows=t)], Preconditions()
    )
    (verdict,) = claim.judge(_net_table(test_error=0.5))
    assert verdict.reason == "own reason"


def test_verdicts_without_rows_are_not_evaluable_when_preconditions_apply() -> None:
    claim = Claim("k", "s", "p", lambda t: [Verdict("x", True, "1")], Preconditions())
    (verdict,) = claim.judge(_net_table())
    assert verdict.holds is None and "no measured rows" in verdict.reason


def test_noise_cannot_preserve_a_trend_the_clean_net_lacks() -> None:
    """G "still rises with noise" is not evaluable where G does not rise without noise."""
    rising = _net_table()
    flat = rising.copy()
    flat.loc[flat["state"] == "trained", "G"] = 1.0 / (1.0 + flat["k"])  # G falls with depth
    table = pd.concat([flat.assign(noise_norm=0.0), rising.assign(noise_norm=1.0)])
    table["run"] = table["run"] + table["noise_norm"].astype(str)
    verdicts = _claims("noisy-training")["G rises with depth, any noise"].judge(table)
    clean, noisy = sorted(verdicts, key=lambda v: v.subject)
    assert clean.holds is False  # judged: the clean net's own trend is a finding
    assert noisy.holds is None and "no trend for the noise to preserve" in noisy.reason
    both = pd.concat([rising.assign(noise_norm=0.0), rising.assign(noise_norm=1.0)])
    both["run"] = both["run"] + both["noise_norm"].astype(str)
    verdicts = _claims("noisy-training")["G rises with depth, any noise"].judge(both)
    assert [v.holds for v in verdicts] == [True, True]
