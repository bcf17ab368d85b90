"""The self-contained HTML report: content, no external resource, and a real headless browser."""

from __future__ import annotations

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

from diffeoprobe.report import render_report, write_report  # noqa: E402

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
)


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path, format="png")
    plt.close(fig)


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
    claims = pd.DataFrame(
        [
            dict(
                figure="alpha",
                claim="c1",
                statement="R falls <fast>",
                paper="rho <= -0.5",
                subject="task 1",
                holds=True,
                measured="rho = -0.9",
            ),  # fmt: skip
            dict(
                figure="beta",
                claim="c2",
                statement="G rises",
                paper="rho >= 0.5",
                subject="task 2",
                holds=False,
                measured="rho = 0.1",
            ),  # fmt: skip
            dict(
                figure="(all)",
                claim="wall time",
                statement="quick in 20 min",
                paper="<= 20 min",
                subject="quick",
                holds=None,
                measured="resumed",
            ),  # fmt: skip
        ]
    )
    summary = dict(
        preset=dict(name="tiny", description="micro sizes"),
        machine=dict(host="host", cpus=2, load_start=[1.0, 1, 1], load_end=[2.0, 2, 2], cuda=False),
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
    assert "<b>" not in text.split("<h2", 1)[1].split("</h2>")[0]  # titles are escaped
    assert "R falls &lt;fast&gt;" in text
    for word in ("holds", "does not hold", "not checked"):
        assert f">{word}</td>" in text
    assert "&quot;diffeoprobe&quot;: &quot;0.1.0&quot;" in text  # versions inline (escaped)


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
