"""`reproduce`: every figure end to end on the tiny preset, resumption, bad input, claims, the CLI."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import CHROMIUM, check_rendered, render_in_chromium

from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.experiments import FIGURES, PRESETS, figure_specs, reproduce
from diffeoprobe.experiments.common import run_id
from diffeoprobe.experiments.driver import CLAIM_COLUMNS
from diffeoprobe.experiments.figures.error_vs_r import fit_power
from diffeoprobe.experiments.spec import spearman


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """One tiny reproduce of every figure (a few seconds), shared by the tests below."""
    out = tmp_path_factory.mktemp("tiny")
    return reproduce("tiny", out)


def _mtimes(root: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.glob(pattern))}


def test_tiny_preset_makes_every_figure_table_and_report(tiny) -> None:
    assert tiny.ok and [f.name for f in tiny.figures] == list(FIGURES)
    assert {f.status for f in tiny.figures} == {"made"}
    for name in FIGURES:
        for suffix in (".png", ".pdf"):
            path = tiny.out / "figures" / f"{name}{suffix}"
            assert path.is_file() and path.stat().st_size > 1000, path
        assert (tiny.out / "tables" / f"{name}.parquet").is_file()
    results = pd.read_parquet(tiny.out / "results.parquet")
    assert set(results["figure"]) == set(FIGURES)
    assert {"figure", "quantity", "value", "se"} <= set(results.columns)
    assert {"D", "G", "R"} <= set(results["quantity"])
    assert results["value"].notna().all()
    report = (tiny.out / "report.html").read_text()
    assert report.count('src="data:image/png;base64,') == len(FIGURES)
    assert all(run["status"] == "done" for run in tiny.runs)


def test_claims_table_has_every_figure_and_numbers(tiny) -> None:
    claims = pd.read_csv(tiny.out / "claims.csv")
    assert list(claims.columns) == CLAIM_COLUMNS
    assert set(claims["figure"]) == set(FIGURES)
    assert claims["measured"].str.contains(r"\d").all()  # each verdict gives its numbers
    # tiny's nets are measured on 32 probes: every claim on them is not evaluable, with the reason
    measured = claims[claims["figure"] != "theory"]
    assert (measured["status"] == "not evaluable").all() and measured["holds"].isna().all()
    assert measured["reason"].str.contains("too few probes: 32 < 100").all()
    theory = claims[claims["figure"] == "theory"].set_index(["claim", "subject"])["holds"]
    assert theory.notna().all() and theory.astype(bool).all()  # exact nets: no precondition
    assert set(theory.index.get_level_values(0)) == {
        "stride-1 exponents", "stride-2 exponents", "tanh: G grows less than with ReLU",
        "tanh: noise does not pile up",
    }  # fmt: skip
    assert claims[claims["claim"].str.startswith("tanh")]["headline"].any()
    sd = claims[claims["figure"] == "scale-detection"]
    assert set(sd["claim"]) == {
        "R falls with depth", "G rises with depth", "R drops with training", "R at init is order 1",
    }  # fmt: skip
    assert sd["subject"].str.contains("task 1").any() and sd["subject"].str.contains("task 2").any()
    assert sd["subject"].str.contains("stride 1").any()  # stride 1 versus stride 2
    drop = sd[sd["claim"] == "R drops with training"]["measured"]
    assert drop.str.contains("mean of 2 initialisations").all()  # the untrained value's protocol
    table = tiny.figures[0].table
    init = table[(table["state"] == "init") & (table["layer"] == "output")]
    assert set(init["seed"]) == {0, 1} and set(table[table["state"] == "trained"]["seed"]) == {0}


def test_second_call_retrains_nothing_and_rebuilds_nothing(tiny, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny.out, out)
    before = _mtimes(out, "runs/*/**/*") | _mtimes(out, "figures/*") | _mtimes(out, "tables/*")
    again = reproduce("tiny", out)
    assert {f.status for f in again.figures} == {"reused"}
    after = _mtimes(out, "runs/*/**/*") | _mtimes(out, "figures/*") | _mtimes(out, "tables/*")
    assert after == before
    assert again.claims.drop(columns="measured").equals(tiny.claims.drop(columns="measured"))
    one = reproduce("tiny", out, only=["error-vs-r"])  # --only keeps the other complete figures
    assert [f.name for f in one.figures] == list(FIGURES)
    assert set(pd.read_parquet(out / "results.parquet")["figure"]) == set(FIGURES)
    assert (out / "report.html").read_text().count('src="data:image/png;base64,') == len(FIGURES)


def test_half_finished_reproduce_does_only_what_is_left(tiny, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(tiny.out, out)
    spec = figure_specs("tiny", ["scale-detection"])[0]
    run = out / "runs" / run_id(spec.runs[0].config, spec.runs[0].measure)
    shutil.rmtree(run)  # as if killed before this run started...
    (out / "claims" / "scale-detection.json").unlink()  # ...and before this figure was complete
    untouched = _mtimes(out, "runs/*/**/*")
    again = reproduce("tiny", out)
    statuses = {f.name: f.status for f in again.figures}
    assert statuses.pop("scale-detection") == "made"
    assert set(statuses.values()) == {"reused"}
    after = _mtimes(out, "runs/*/**/*")
    assert {k: after[k] for k in untouched} == untouched  # the other runs were not retrained
    assert (run / "done.json").is_file()
    scale = again.figures[0].table.drop(columns="run")
    first = tiny.figures[0].table.drop(columns="run")
    pd.testing.assert_frame_equal(scale, first)  # the rerun is bit-identical (same seeds)


def test_figure_without_its_runs_says_which_run_to_do(tmp_path: Path) -> None:
    result = reproduce("tiny", tmp_path, only=["scale-detection"], train=False)
    missing = result.figures[0]
    assert missing.status == "missing" and not result.ok
    spec = figure_specs("tiny", ["scale-detection"])[0]
    for run in spec.runs:
        assert run_id(run.config, run.measure) in missing.note
    assert "diffeoprobe reproduce tiny --only scale-detection" in missing.note
    assert not (tmp_path / "runs").exists()  # nothing was trained
    report = (tmp_path / "report.html").read_text()
    assert "missing" in report and "diffeoprobe reproduce tiny --only scale-detection" in report


def test_unknown_figure_or_preset_lists_the_available_ones() -> None:
    with pytest.raises(DiffeoProbeError, match="available: scale-detection, theory, pooling"):
        figure_specs("quick", ["scale-detecton"])
    with pytest.raises(DiffeoProbeError, match="did you mean 'scale-detection'"):
        figure_specs("quick", ["scale-detecton"])
    with pytest.raises(DiffeoProbeError, match="available: quick, standard, paper, tiny"):
        figure_specs("fast")


def test_presets_follow_the_protocols() -> None:
    paper, quick, standard = PRESETS["paper"], PRESETS["quick"], PRESETS["standard"]
    assert paper.sd_width == 1000 and len(paper.seeds) == 10 and paper.zoo_epochs == 250
    assert paper.r_drop == 10 and quick.r_drop == 10 and quick.time_budget_s == 20 * 60
    assert 64 <= quick.sd_width <= 256 and 2 <= len(quick.seeds) <= 3 and quick.probe_size == 256
    for preset in (quick, standard, paper):  # the papers' training of the 1D CNN everywhere
        assert (preset.sd_batch, preset.sd_lr_per_width, preset.sd_weight_decay) == (8, 0.01, 0)
    assert standard.sd_width >= 256 and len(standard.seeds) >= 5 and standard.zoo_epochs >= 30
    assert quick.zoo_train_size is None and quick.zoo_epochs >= 10  # all 60k images
    assert not quick.judge_error_law and standard.judge_error_law and paper.judge_error_law
    sd = figure_specs("paper", ["scale-detection"])[0]
    models = {r.config.model for r in sd.runs}
    assert {"scalecnn1d", "vgg11", "vgg11bn", "vgg13bn"} <= models
    for name in ("quick", "standard", "paper"):
        for spec in figure_specs(name):
            ids = [run_id(r.config, r.measure) for r in spec.runs]
            assert len(ids) == len(set(ids)), spec.name


# ---- the command line ---------------------------------------------------------------------------


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from diffeoprobe import cli

    monkeypatch.setattr(sys, "argv", ["diffeoprobe", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_unknown_figure_exits_2_listing_the_figures(monkeypatch, capsys, tmp_path) -> None:
    code, _, err = run_cli(
        monkeypatch, capsys, "reproduce", "tiny", "--only", "nope", "--out", str(tmp_path)
    )
    assert code == 2
    assert "unknown figure 'nope'" in err and "error-vs-r" in err
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_cli_as_a_subprocess_refuses_an_unknown_figure(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "diffeoprobe", "reproduce", "quick", "--only", "fig7"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "unknown figure 'fig7'" in done.stderr and "noisy-training" in done.stderr
    assert not (tmp_path / "out").exists()


def test_cli_reproduces_one_figure_with_its_report(monkeypatch, capsys, tmp_path) -> None:
    code, out, _ = run_cli(
        monkeypatch, capsys, "reproduce", "tiny", "--only", "theory", "--out", str(tmp_path)
    )
    assert code == 0, out
    assert "claims:" in out
    assert (tmp_path / "figures" / "theory.png").is_file()
    assert (tmp_path / "report.html").is_file()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_tiny_report_renders_in_headless_chromium(tiny, tmp_path: Path) -> None:
    dom, shot = render_in_chromium(tiny.out / "report.html", tmp_path)
    check_rendered(dom, shot, images=len(FIGURES))
    assert dom.count('class="claim"') == 2 * len(tiny.claims)  # the table and per figure


def test_seeds_of_one_configuration_are_trained_together(tmp_path: Path) -> None:
    """The 1D CNN's seeds go through diffeoprobe.ensemble, one run directory each, and the
    figure is made from them as from runs trained alone."""
    from dataclasses import replace

    from diffeoprobe.experiments.presets import TINY

    result = reproduce(replace(TINY, seeds=(0, 1)), tmp_path, only=["relu-tanh"])
    assert result.ok and [f.status for f in result.figures] == ["made"]
    (note,) = [n for n in result.notes if n.startswith("seeds trained together")]
    assert note.startswith("seeds trained together: 8 runs in 4 groups; 0 left to the sweep")
    assert len(result.runs) == 8 and all(r["status"] == "done" for r in result.runs)
    table = result.figures[0].table
    assert set(table[table["state"] == "trained"]["seed"]) == {0, 1}


def test_a_local_pool_trains_groups_and_single_runs_together(tmp_path: Path) -> None:
    """With --executor local the groups and the other runs share one pool; the sweep after it
    finds every run finished and only records it."""
    from dataclasses import replace

    from diffeoprobe.experiments.presets import TINY

    result = reproduce(
        replace(TINY, seeds=(0, 1), sd2d_seeds=1),
        tmp_path,
        only=["scale-detection"],
        executor="local",
        workers=2,
    )
    assert result.ok and all(r["status"] == "done" for r in result.runs)
    (note,) = [n for n in result.notes if n.startswith("seeds trained together")]
    # tasks 1 and 2 of the stride-2 1D CNN in groups; the stride-1 net and the 2D nets alone
    assert note.startswith(
        "seeds trained together: 4 runs in 2 groups, with 3 other runs in the same pool; 0 left"
    )
    (runs_note,) = [n for n in result.notes if n.startswith("runs:")]
    # the sweep writes the records of the grouped runs (4) and finds the others' (3): no retry
    assert "4 trained now, 3 finished before, 0 failed" in runs_note
    assert all((tmp_path / "runs" / r["id"] / "run.json").is_file() for r in result.runs)


def test_a_directory_made_for_another_preset_is_refused_unless_forced(tmp_path: Path) -> None:
    """reproduce tiny then reproduce OTHER in one --out: refused before any work (the tables and
    report of the first stay), with the reason and the way out; --force reuses the directory."""
    from dataclasses import replace

    from diffeoprobe.experiments.presets import TINY

    assert reproduce("tiny", tmp_path, only=["theory"]).ok
    assert reproduce("tiny", tmp_path, only=["theory"]).ok  # the same preset resumes as before
    recorded = (tmp_path / "reproduce.json").read_text()
    results = pd.read_parquet(tmp_path / "results.parquet")

    other = replace(TINY, name="other", theory_draws=TINY.theory_draws + 1)
    with pytest.raises(DiffeoProbeError, match="--force") as refused:
        reproduce(other, tmp_path, only=["theory"], overrides={"theory_draws": "2"})
    message = str(refused.value)
    assert "preset tiny" in message and "other with --set theory_draws=2" in message
    assert "theory_draws" in message and "new --out" in message
    assert (tmp_path / "reproduce.json").read_text() == recorded
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "results.parquet"), results)
    # the same name with another field (dataclasses.replace keeps the name) is another preset too
    with pytest.raises(DiffeoProbeError, match="theory_tolerance"):
        reproduce(replace(TINY, theory_tolerance=0.5), tmp_path, only=["theory"])

    forced = reproduce(other, tmp_path, only=["theory"], force=True)
    assert forced.ok
    summary = json.loads((tmp_path / "reproduce.json").read_text())
    assert summary["preset_name"] == "other" and summary["preset"]["theory_draws"] == 2


def test_cli_refuses_another_presets_directory_and_force_reuses_it(
    monkeypatch, capsys, tmp_path
) -> None:
    assert reproduce("tiny", tmp_path, only=["theory"]).ok
    args = ["reproduce", "tiny", "--only", "theory", "--set", "theory_draws=2", "--out"]
    code, _, err = run_cli(monkeypatch, capsys, *args, str(tmp_path))
    assert code != 0 and "--force" in err and "theory_draws" in err
    assert json.loads((tmp_path / "reproduce.json").read_text())["overrides"] == {}
    code, out, _ = run_cli(monkeypatch, capsys, *args, str(tmp_path), "--force")
    assert code == 0, out
    assert json.loads((tmp_path / "reproduce.json").read_text())["overrides"] == {
        "theory_draws": "2"
    }


# ---- the statistics of the claims (warnings are errors in this suite: degenerate input is quiet)


def test_spearman_is_the_correlation_of_the_ranks() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    d = pd.Series(x).rank() - pd.Series(y).rank()
    n = len(x)
    assert spearman(x, y) == pytest.approx(1 - 6 * (d**2).sum() / (n * (n**2 - 1)), abs=1e-12)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)  # any increasing map
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    ties_x, ties_y = [1, 2, 2, 3, 5, 5], [2, 1, 4, 4, 9, 0]  # ties: Pearson of the mean ranks
    ranks_x, ranks_y = pd.Series(ties_x).rank(), pd.Series(ties_y).rank()
    assert spearman(ties_x, ties_y) == pytest.approx(np.corrcoef(ranks_x, ranks_y)[0, 1])


def test_spearman_drops_pairs_with_a_non_finite_value() -> None:
    x, y = [1, 2, math.nan, 4, 5, 6], [1, 3, 9, 2, math.inf, 4]
    assert spearman(x, y) == pytest.approx(spearman([1, 2, 4, 6], [1, 3, 2, 4]))


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([], []),
        ([1, 2], [1, 2]),  # fewer than 3 pairs
        ([1, 2, math.nan, 4], [1, math.inf, 3, 4]),  # 2 finite pairs
        ([1, 2, 3], [4, 4, 4]),  # constant y
        ([7, 7, 7, 7], [1, 2, 3, 4]),  # constant x
    ],
)
def test_spearman_is_nan_when_undefined(x: list[float], y: list[float]) -> None:
    assert math.isnan(spearman(x, y))


def test_fit_power_is_least_squares_in_log_log_with_its_standard_errors() -> None:
    rng = np.random.default_rng(1)
    r = np.geomspace(1e-4, 1, 12)
    error = 0.2 * np.sqrt(r) * np.exp(rng.normal(0, 0.3, r.size))
    fit = fit_power(r, error)
    x, y = np.log10(r), np.log10(error)  # the regression written out
    sxx = ((x - x.mean()) ** 2).sum()
    b = ((x - x.mean()) * (y - y.mean())).sum() / sxx
    c = y.mean() - b * x.mean()
    s2 = ((y - c - b * x) ** 2).sum() / (len(x) - 2)
    c_se = math.sqrt(s2 * (1 / len(x) + x.mean() ** 2 / sxx))
    assert fit["n"] == len(r)
    assert fit["b"] == pytest.approx(b, rel=1e-10) and fit["a"] == pytest.approx(10**c, rel=1e-10)
    assert fit["b_se"] == pytest.approx(math.sqrt(s2 / sxx), rel=1e-10)
    assert fit["log10_a_se"] == pytest.approx(c_se, rel=1e-10)
    assert fit["a_se"] == pytest.approx(10**c * math.log(10) * c_se, rel=1e-10)
    assert 0.5 - 3 * fit["b_se"] < fit["b"] < 0.5 + 3 * fit["b_se"]  # the law it was drawn from
    exact = fit_power(r, 0.2 * np.sqrt(r))
    assert (exact["a"], exact["b"]) == (pytest.approx(0.2), pytest.approx(0.5))
    # scipy's errors go through sqrt(1 - r^2): an exact law leaves ~1e-8 of rounding, not 0
    assert exact["b_se"] < 1e-6 * exact["b"]


def test_fit_power_drops_points_that_are_not_positive_and_finite() -> None:
    r, error = (
        np.array([0.0, 1e-3, 1e-2, -1.0, 0.1, 1.0]),
        np.array([0.1, 0.01, 0.03, 0.2, 0.05, math.nan]),
    )
    assert fit_power(r, error) == pytest.approx(fit_power(r[[1, 2, 4]], error[[1, 2, 4]]))
    assert fit_power(r, error)["n"] == 3


def test_fit_power_on_too_few_points() -> None:
    for r, error in (([], []), ([0.1], [0.2]), ([0.0, -1.0, 0.1], [0.1, 0.1, 0.1])):
        fit = fit_power(np.array(r, float), np.array(error, float))
        assert fit["n"] == min(len(r), 1)
        assert all(math.isnan(fit[k]) for k in ("a", "b", "a_se", "b_se", "log10_a_se"))
    same_r = fit_power(np.array([0.1, 0.1, 0.1]), np.array([0.1, 0.2, 0.3]))
    assert same_r["n"] == 3 and math.isnan(same_r["b"]) and math.isnan(same_r["b_se"])
    two = fit_power(np.array([0.01, 1.0]), np.array([0.02, 0.2]))  # the line, no errors
    assert (two["a"], two["b"]) == (pytest.approx(0.2), pytest.approx(0.5))
    assert math.isnan(two["b_se"]) and math.isnan(two["a_se"]) and two["n"] == 2
    flat = fit_power(np.array([0.01, 0.1, 1.0]), np.array([0.3, 0.3, 0.3]))  # an exact fit
    assert (flat["a"], flat["b"], flat["b_se"], flat["a_se"]) == (
        pytest.approx(0.3),
        pytest.approx(0.0, abs=1e-15),
        0.0,
        0.0,
    )


def test_reproduce_takes_a_device(monkeypatch, capsys, tmp_path) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "reproduce", "tiny", "--device", "tpu")
    assert code == 2 and "--device must be cpu, cuda or cuda:N" in err and err.count("\n") == 1
    code, out, _ = run_cli(
        monkeypatch, capsys, "reproduce", "tiny", "--only", "theory", "--device", "cpu",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, out
    record = json.loads((tmp_path / "reproduce.json").read_text())
    assert record["overrides"] == {} and record["machine"]["device"] == "cpu"
