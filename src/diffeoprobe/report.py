"""A self-contained HTML report of a ``reproduce`` directory.

One file, no external resource: figures are embedded as base64 PNG, tables are inline HTML, the
style is an inline stylesheet. It holds the "paper versus measured" table of every claim, one
section per figure (figure, what it shows, its claims, its key numbers), the runs, the preset, the
versions and the machine that produced it. A small inline script checks, once the page has loaded,
that every image decoded, and writes the result into ``#render-check`` (``data-images``,
``data-decoded``) so a headless browser can read it back.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from diffeoprobe.runs import atomic_write_bytes

__all__ = ["render_report", "write_report"]

TITLE = "diffeoprobe: how deep CNNs lose spatial information with training, reproduced"
VERDICTS = {
    True: ("holds", "holds"),
    False: ("does not hold", "fails"),
    None: ("not checked", "unchecked"),
}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #1d1d1d; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.holds { background: #e3f4e3; font-weight: 600; }
td.fails { background: #fbe3e3; font-weight: 600; }
td.unchecked { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
.note { color: #555; font-size: 0.9em; }
.status { font-size: 0.85em; color: #555; }
"""

CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img");
  var decoded = 0;
  images.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { decoded += 1; } });
  var mark = document.getElementById("render-check");
  mark.setAttribute("data-images", String(images.length));
  mark.setAttribute("data-decoded", String(decoded));
  mark.textContent = decoded + " of " + images.length + " figures decoded";
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return str(value)


def _table(frame: pd.DataFrame, *, table_id: str | None = None) -> str:
    ident = f' id="{_e(table_id)}"' if table_id else ""
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        rows.append("<tr>" + "".join(f"<td>{_e(_number(v))}</td>" for v in record) + "</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _claims(claims: pd.DataFrame, *, table_id: str | None = None) -> str:
    ident = f' id="{_e(table_id)}"' if table_id else ""
    head = "".join(
        f"<th>{h}</th>"
        for h in ("figure", "paper's claim", "subject", "criterion", "measured", "verdict")
    )
    rows = []
    for row in claims.itertuples(index=False):
        holds = None if row.holds is None or row.holds != row.holds else bool(row.holds)
        word, css = VERDICTS[holds]
        rows.append(
            f'<tr class="claim"><td>{_e(row.figure)}</td><td>{_e(row.statement)}</td>'
            f"<td>{_e(row.subject)}</td><td>{_e(row.paper)}</td><td>{_e(row.measured)}</td>"
            f'<td class="{css}">{word}</td></tr>'
        )
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _image(path: Path, alt: str) -> str:
    if not path.is_file():
        return '<p class="note">(no figure)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def render_report(
    root: Path,
    summary: dict[str, Any],
    specs: Sequence[Any],
    results: Sequence[Any],
    claims: pd.DataFrame,
) -> str:
    """The report as one HTML string (see the module docstring)."""
    preset = summary["preset"]
    machine = summary["machine"]
    by_name = {r.name: r for r in results}
    held = int((claims["holds"] == True).sum())  # noqa: E712 (a column of True/False/None)
    failed = int((claims["holds"] == False).sum())  # noqa: E712
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(TITLE)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(TITLE)}</h1>",
        f"<p>Preset <b>{_e(preset['name'])}</b>: {_e(preset['description'])}.</p>",
        f"<p>Made {_e(time.strftime('%Y-%m-%d %H:%M %Z'))} in {summary['seconds']:.0f} s on "
        f"{_e(machine['host'])} ({machine['cpus']} CPUs, load average "
        f"{machine['load_start'][0]:.1f} at the start, {machine['load_end'][0]:.1f} at the end; "
        f"CUDA {'yes' if machine['cuda'] else 'no'}). Claims: <b>{held} hold</b>, "
        f"<b>{failed} do not</b>, of {len(claims)}.</p>",
        '<p id="render-check" class="note">figures not checked yet</p>',
        "<h2>Paper versus measured</h2>",
        '<p class="note">Every claim is checked by running the code on the runs of this '
        'directory; the criterion says what "holds" means, the measured column gives the '
        "numbers.</p>",
        _claims(claims, table_id="claims"),
    ]
    for spec in specs:
        result = by_name.get(spec.name)
        parts.append(f'<h2 id="fig-{_e(spec.name)}">{_e(spec.title)}</h2>')
        status = result.status if result else "not run"
        parts.append(
            f'<p class="status">figure <code>{_e(spec.name)}</code> - {_e(status)}'
            + (f": {_e(result.note)}" if result and result.note else "")
            + f" - paper: {_e(spec.paper)}</p>"
        )
        parts.append(f"<p>{_e(spec.description)}</p>")
        if result is not None and result.table is not None:
            parts.append(_image(root / "figures" / f"{spec.name}.png", spec.title))
            mine = claims[claims["figure"] == spec.name]
            if len(mine):
                parts.append("<h3>Claims</h3>" + _claims(mine))
            if spec.summary is not None:
                try:
                    small = spec.summary(result.table)
                except Exception as exc:  # the report still renders; say what failed
                    parts.append(f'<p class="note">summary failed: {_e(exc)}</p>')
                else:
                    parts.append("<h3>Key numbers</h3>" + _table(small))
        if spec.probes:
            items = "".join(f"<li>{_e(p)}</li>" for p in spec.probes)
            parts.append(f"<h3>Probes</h3><ul>{items}</ul>")
    parts.append("<h2>Runs</h2>")
    if summary["runs"]:
        columns = ["id", "run", "seed", "status", "seconds", "epochs", "train_error", "test_error"]
        frame = pd.DataFrame(summary["runs"]).reindex(columns=columns)
        parts.append(_table(frame, table_id="runs"))
    else:
        parts.append('<p class="note">no training run</p>')
    for note in summary.get("notes", []):
        parts.append(f'<p class="note">{_e(note)}</p>')
    parts.append("<h2>Configuration and versions</h2>")
    parts.append(f"<pre>{_e(json.dumps(preset, indent=2, default=str))}</pre>")
    parts.append(f"<pre>{_e(json.dumps(summary['versions'], indent=2))}</pre>")
    parts.append(f"<pre>{_e(json.dumps(machine, indent=2, default=str))}</pre>")
    parts.append(
        '<p class="note">All numbers: results.parquet (one tidy table, column <code>figure</code>), '
        "tables/NAME.parquet, claims.csv, reproduce.json in this directory.</p>"
    )
    parts.append(f"<script>{CHECK_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_report(
    path: str | Path,
    root: str | Path,
    summary: dict[str, Any],
    specs: Sequence[Any],
    results: Sequence[Any],
    claims: pd.DataFrame,
) -> Path:
    """Render the report and write it atomically to ``path``."""
    text = render_report(Path(root), summary, specs, results, claims)
    return atomic_write_bytes(path, text.encode("utf-8"))
