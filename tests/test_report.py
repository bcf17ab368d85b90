"""The self-contained HTML report: content, no external resource, and a real headless browser."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from diffeoprobe.experiments.report import render_report, write_report  # noqa: E402

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
)


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path, format="png")
    plt.close(fig)


CLAIMS = [
    dict(
        figure="alpha",
        claim="c1",
        statement="R falls <fast>",
        paper="rho <= -0.5",
        preconditions="nets learned & >= 100 probes",
        headline=True,
        subject="task 1",
        holds=True,
        measured="rho = -0.9; test error 0.1",
    ),
    dict(
        figure="beta",
        claim="c2",
        statement="G rises",
        paper="rho >= 0.5",
        subject="task 2",
        holds=False,
        measured="rho = 0.1",
    ),
    dict(
        figure="(all)",
        claim="wall time",
        statement="quick in 20 min",
        paper="<= 20 min",
        subject="quick",
        holds=None,
        measured="resumed",
        reason="resumed: <not judged>",
    ),
]


def _claim(**row):
    """A claims row with every column of the driver's table (``CLAIM_COLUMNS``)."""
    holds = row.get("holds")
    status = "not evaluable" if holds is None else "holds" if holds else "does not hold"
    base = dict(preconditions="", headline=False, status=status, reason="")
    return {**base, **row}


def _inputs(root: Path):
    names = ("alpha", "beta")
    for name in names:
        _png(root / "figures" / f"{name}.png")
    specs = [
        SimpleNamespace(
            name=n,
            title=f"Figure {n} <b>",
            description="what it shows & why",
            paper="Fig. 7",
            probes=("a probe",),
            summary=lambda t: t.head(2),
        )  # fmt: skip
        for n in names
    ]
    table = pd.DataFrame(dict(layer=["input", "output"], R=[1.0, 0.01]))
    results = [SimpleNamespace(name=n, status="made", note="", table=table) for n in names]
    claims = pd.DataFrame([_claim(**row) for row in CLAIMS])
    summary = dict(
        preset=dict(name="tiny", description="micro sizes"),
        preset_name="tiny",
        overrides={},
        figures=[dict(name=n, status="made", note="", seconds=3.0) for n in names],
        machine=dict(
            host="host",
            cpus=2,
            torch_threads=1,
            cuda=False,
            load_start=[1.0, 1, 1],
            load_end=[2.0, 2, 2],
        ),
        seconds=12.0,
        runs=[dict(id="abc", run="scalecnn1d on scale-detection", seed=0, status="done")],
        versions=dict(diffeoprobe="0.1.0"),
        notes=["a note"],
    )
    return summary, specs, results, claims


def test_report_embeds_every_figure_and_needs_nothing_outside(tmp_path: Path) -> None:
    text = render_report(tmp_path, *_inputs(tmp_path))
    assert text.count('src="data:image/png;base64,') == 2
    assert not re.search(r'(src|href)="(https?:|file:|//)', text)  # no external resource
    assert '<table id="claims">' in text and text.count('<tr class="claim">') == 3 + 2
    assert "Figure alpha &lt;b&gt;" in text and "Figure alpha <b>" not in text  # escaped
    assert "R falls &lt;fast&gt;" in text and "<fast>" not in text
    for word, css in (("holds", "holds"), ("does not hold", "fails"), ("not evaluable", "une")):
        assert re.search(rf'<span class="verdict {css}\w*">{word}</span>', text), word
    assert "&quot;diffeoprobe&quot;: &quot;0.1.0&quot;" in text  # versions inline (escaped)
    assert text.count("<section") == text.count("</section>") == 3


def _section(text: str, ident: str) -> str:
    return text.split(f'<section id="{ident}">', 1)[1].split("</section>", 1)[0]


def _counts(text: str) -> dict[str, tuple[str, list[int], str]]:
    """The summary's per-figure rows: figure -> (figure status, [holds, fails, n.e.], note)."""
    rows = re.findall(
        r'<tr class="figure-count" data-figure="([^"]*)">(.*?)</tr>', _section(text, "summary")
    )
    out = {}
    for name, cells in rows:
        values = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells)]
        out[name] = (values[1], [int(v) for v in values[2:5]], values[5])
    return out


def test_summary_comes_first_then_the_figures_then_the_full_table(tmp_path: Path) -> None:
    text = render_report(tmp_path, *_inputs(tmp_path))
    order = [
        text.index(f'id="{i}"') for i in ("summary", "figures", "paper-versus-measured", "claims")
    ]
    assert order == sorted(order)
    headings = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<h2[^>]*>(.*?)</h2>", text)]
    assert headings[:4] == [
        "Summary",
        "Figure alpha &lt;b&gt;",
        "Figure beta &lt;b&gt;",
        "Paper versus measured",
    ]
    assert text.index('id="figure-counts"') < text.index('id="fig-alpha"')
    assert text.index('id="headline-claims"') < text.index('id="fig-alpha"')


def test_summary_lists_the_headline_claims_with_their_key_number(tmp_path: Path) -> None:
    summary, specs, results, claims = _inputs(tmp_path)
    claims.loc[claims["claim"] == "wall time", "headline"] = True
    text = render_report(tmp_path, summary, specs, results, claims)
    table = text.split('<table id="headline-claims">', 1)[1].split("</table>", 1)[0]
    assert table.count('<tr class="headline">') == 2
    assert "R falls &lt;fast&gt;" in table and "G rises" not in table  # only headline rows
    assert "rho = -0.9" in table and "test error 0.1" not in table  # the first clause only
    assert '<span class="verdict holds">holds</span>' in table
    assert "resumed: &lt;not judged&gt;" in table  # the reason of a not-evaluable headline
    assert table in _section(text, "summary")

    none = claims.assign(headline=False)
    text = render_report(tmp_path, summary, specs, results, none)
    assert "headline-claims" not in text and "No headline claim was checked" in text


def test_full_table_shows_criterion_preconditions_and_the_reason(tmp_path: Path) -> None:
    text = render_report(tmp_path, *_inputs(tmp_path))
    table = text.split('<table id="claims">', 1)[1].split("</table>", 1)[0]
    rows = dict(zip(("alpha", "beta", "all"), table.split('<tr class="claim">')[1:], strict=True))
    assert "rho &lt;= -0.5" in rows["alpha"]
    assert (
        '<div class="sub">preconditions: nets learned &amp; &gt;= 100 probes</div>'
        in (rows["alpha"])
    )
    assert "not evaluable:" not in rows["alpha"] + rows["beta"]
    assert '<div class="reason">not evaluable: resumed: &lt;not judged&gt;</div>' in rows["all"]
    assert '<span class="verdict unevaluable">not evaluable</span>' in rows["all"]
    assert '<span class="verdict fails">does not hold</span>' in rows["beta"]


def test_overrides_are_shown_or_none(tmp_path: Path) -> None:
    summary, specs, results, claims = _inputs(tmp_path)
    text = render_report(tmp_path, summary, specs, results, claims)
    facts = _section(text, "summary")
    assert '<span id="overrides">none</span>' in facts
    assert "<b>tiny</b>" in facts and "torch threads 1" in facts and "CUDA no" in facts
    assert "12 s" in facts

    summary["overrides"] = {"epochs": "3", "probes": "<64>"}
    text = render_report(tmp_path, summary, specs, results, claims)
    shown = text.split('<span id="overrides">', 1)[1].split("</span>", 1)[0]
    assert shown == "<code>epochs=3</code>, <code>probes=&lt;64&gt;</code>"


def test_summary_counts_every_status_per_figure_and_in_total(tmp_path: Path) -> None:
    summary, specs, results, _ = _inputs(tmp_path)
    summary["figures"] = [
        dict(name="alpha", status="made", note="", seconds=3.0),
        dict(name="beta", status="reused", note="", seconds=1.0),
        dict(name="gamma", status="skipped", note="skipped: no <fashionmnist>", seconds=0.0),
    ]
    statuses = dict(alpha=[True, True, False, None], beta=[False, None, math.nan])
    statuses["(all)"] = [None]
    rows = [
        _claim(
            figure=f, claim=f"c{i}", statement="s", paper="p", subject="x", holds=h, measured="m"
        )
        for f, values in statuses.items()
        for i, h in enumerate(values)
    ]
    text = render_report(tmp_path, summary, specs, results, pd.DataFrame(rows))
    assert _counts(text) == {
        "alpha": ("made in 3 s", [2, 1, 1], ""),
        "beta": ("reused", [0, 1, 2], ""),
        "gamma": ("skipped", [0, 0, 0], "skipped: no &lt;fashionmnist&gt;"),
        "(all)": ("-", [0, 0, 1], ""),
    }
    assert "<b>2 of 4 evaluable claims hold</b>; 4 not evaluable" in _section(text, "summary")


def test_write_report_is_atomic(tmp_path: Path) -> None:
    path = write_report(tmp_path / "report.html", tmp_path, *_inputs(tmp_path))
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".*.tmp"))


def render_in_chromium(report: Path, workdir: Path) -> tuple[str, Path]:
    """Run headless Chromium on ``report``: the DOM after the page's scripts ran, a screenshot."""
    shot = workdir / "shot.png"
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={workdir / 'profile'}",
        "--window-size=1200,2000",
        "--virtual-time-budget=5000",
    ]
    url = report.resolve().as_uri()
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    subprocess.run(
        [*common, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True
    )
    return dom, shot


def check_rendered(dom: str, shot: Path, images: int) -> None:
    mark = re.search(r'id="render-check"[^>]*', dom)
    assert mark, "the report's check script did not run"
    found = dict(re.findall(r'data-(images|decoded)="(\d+)"', mark.group(0)))
    assert found == {"images": str(images), "decoded": str(images)}, found
    assert '<table id="claims">' in dom
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium_with_every_image_decoded(tmp_path: Path) -> None:
    report = write_report(tmp_path / "report.html", tmp_path, *_inputs(tmp_path))
    dom, shot = render_in_chromium(report, tmp_path)
    check_rendered(dom, shot, images=2)
    assert dom.count('class="claim"') == 5
