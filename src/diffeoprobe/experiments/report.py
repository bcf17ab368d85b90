"""A self-contained HTML report of a ``reproduce`` directory.

One file, no external resource: figures are embedded as base64 PNG, tables are inline HTML, the
style is an inline stylesheet. It reads top-down:

1. ``#summary``: the total (how many evaluable claims hold, how many are not evaluable), one row
   per figure with its status and its counts of claims that hold / do not hold / are not
   evaluable, the papers' headline claims, then the machine, the wall time, the preset and its
   ``--set`` overrides;
2. ``#figures``: one section per figure (figure, what it shows, its claims, its key numbers);
3. ``#paper-versus-measured``: the full "paper versus measured" table (``table#claims``): the
   criterion with its preconditions, the measured numbers (with the reason of a claim that is not
   evaluable) and the status as a coloured word;
4. the runs, the preset, the versions and the machine that produced it.

A small inline script checks, once the page has loaded, that every image decoded, and writes the
result into ``#render-check`` (``data-images``, ``data-decoded``) so a headless browser can read it
back.
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

from diffeoprobe.atomic import atomic_write_bytes

__all__ = ["render_report", "write_report"]

TITLE = "diffeoprobe: how deep CNNs lose spatial information with training, reproduced"
HOLDS, FAILS, UNEVALUABLE = "holds", "does not hold", "not evaluable"
STATUS_CSS = {HOLDS: "holds", FAILS: "fails", UNEVALUABLE: "unevaluable"}
KEY_NUMBER_CHARS = 110  # the headline table shows the first clause of ``measured``, cut to this

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #1d1d1d; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; }
.verdict { font-weight: 600; padding: 0 4px; border-radius: 3px; white-space: nowrap; }
.verdict.holds { color: #17641f; background: #e3f4e3; }
.verdict.fails { color: #a11a1a; background: #fbe3e3; }
.verdict.unevaluable { color: #7a5a00; background: #f6efd9; }
.sub { color: #555; font-size: 0.88em; margin-top: 0.25em; }
.reason { color: #7a5a00; font-size: 0.9em; margin-top: 0.25em; }
.total { font-size: 1.1em; }
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


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value: object) -> str:
    """A cell's text: ``""`` for a missing value (None, NaN read back from a file)."""
    return "" if _missing(value) else str(value)


def _number(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}"
    return str(value)


def _status(row: dict[str, Any]) -> str:
    """``holds``, ``does not hold`` or ``not evaluable``: from ``holds`` (None or NaN: not
    evaluable), so that an older table without a ``status`` column reads the same.
    """
    holds = row.get("holds")
    if _missing(holds):
        return UNEVALUABLE
    return HOLDS if bool(holds) else FAILS


def _verdict(status: str) -> str:
    return f'<span class="verdict {STATUS_CSS[status]}">{_e(status)}</span>'


def _records(claims: pd.DataFrame) -> list[dict[str, Any]]:
    return [dict(zip(claims.columns, values, strict=True)) for values in claims.itertuples(False)]


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = {HOLDS: 0, FAILS: 0, UNEVALUABLE: 0}
    for row in rows:
        counts[_status(row)] += 1
    return counts


def _key_number(measured: object) -> str:
    """The first clause of a verdict's numbers (up to the first ``;``), cut to a table cell."""
    first = _text(measured).split(";", 1)[0].strip()
    if len(first) > KEY_NUMBER_CHARS:
        first = first[: KEY_NUMBER_CHARS - 1].rstrip() + "\u2026"
    return first


def _table(frame: pd.DataFrame, *, table_id: str | None = None) -> str:
    ident = f' id="{_e(table_id)}"' if table_id else ""
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        rows.append("<tr>" + "".join(f"<td>{_e(_number(v))}</td>" for v in record) + "</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _claims(claims: pd.DataFrame, *, table_id: str | None = None) -> str:
    """The "paper versus measured" table: criterion (and preconditions), numbers, status."""
    ident = f' id="{_e(table_id)}"' if table_id else ""
    head = "".join(
        f"<th>{h}</th>"
        for h in ("figure", "paper's claim", "subject", "criterion", "measured", "status")
    )
    rows = []
    for row in _records(claims):
        status = _status(row)
        criterion = _e(_text(row.get("paper")))
        if _text(row.get("preconditions")):
            criterion += f'<div class="sub">preconditions: {_e(row["preconditions"])}</div>'
        measured = _e(_text(row.get("measured")))
        if status == UNEVALUABLE:
            reason = _text(row.get("reason")) or "no reason recorded"
            measured += f'<div class="reason">not evaluable: {_e(reason)}</div>'
        rows.append(
            f'<tr class="claim"><td>{_e(_text(row.get("figure")))}</td>'
            f"<td>{_e(_text(row.get('statement')))}</td><td>{_e(_text(row.get('subject')))}</td>"
            f"<td>{criterion}</td><td>{measured}</td><td>{_verdict(status)}</td></tr>"
        )
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _figure_counts(summary: dict[str, Any], results: Sequence[Any], rows: list[dict]) -> str:
    """One row per figure: its status (made / reused / skipped / missing, with the note) and its
    counts of claims per status; claims of no figure (``(all)``: the wall time) come last.
    """
    figures = summary.get("figures")
    if figures is None:
        figures = [
            dict(name=r.name, status=r.status, note=r.note, seconds=getattr(r, "seconds", None))
            for r in results
        ]
    names = [f["name"] for f in figures]
    extra = [n for n in dict.fromkeys(_text(r.get("figure")) for r in rows) if n not in names]
    figures = [*figures, *(dict(name=n, status="-", note="", seconds=None) for n in extra)]
    head = "".join(
        f"<th>{h}</th>" for h in ("figure", "figure status", HOLDS, FAILS, UNEVALUABLE, "note")
    )
    body = []
    for figure in figures:
        name = figure["name"]
        counts = _counts([r for r in rows if r.get("figure") == name])
        status = _text(figure.get("status"))
        seconds = figure.get("seconds")
        if status == "made" and not _missing(seconds) and seconds:
            status += f" in {seconds:.0f} s"
        link = f'<a href="#fig-{_e(name)}">{_e(name)}</a>' if name in names else _e(name)
        body.append(
            f'<tr class="figure-count" data-figure="{_e(name)}"><td>{link}</td>'
            f"<td>{_e(status)}</td>"
            + "".join(f'<td class="num">{counts[s]}</td>' for s in (HOLDS, FAILS, UNEVALUABLE))
            + f"<td>{_e(_text(figure.get('note')))}</td></tr>"
        )
    return (
        f'<table id="figure-counts"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _headlines(rows: list[dict[str, Any]]) -> str:
    """The papers' headline claims as a short table (``headline`` True), or a line saying none
    was checked.
    """
    mine = [r for r in rows if not _missing(r.get("headline")) and bool(r.get("headline"))]
    if not mine:
        return '<p class="note">No headline claim was checked (their figures were not made).</p>'
    head = "".join(
        f"<th>{h}</th>" for h in ("claim", "subject", "status", "key number", "why not evaluable")
    )
    body = []
    for row in mine:
        status = _status(row)
        reason = (_text(row.get("reason")) or "no reason recorded") if status == UNEVALUABLE else ""
        body.append(
            f'<tr class="headline"><td>{_e(_text(row.get("statement")))}'
            f'<div class="sub">{_e(_text(row.get("figure")))}: {_e(_text(row.get("claim")))}'
            f"</div></td><td>{_e(_text(row.get('subject')))}</td><td>{_verdict(status)}</td>"
            f"<td>{_e(_key_number(row.get('measured')))}</td><td>{_e(reason)}</td></tr>"
        )
    return (
        f'<table id="headline-claims"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _load(machine: dict[str, Any], key: str) -> str:
    load = machine.get(key)
    if not load:
        return "?"
    return f"{load[0]:.1f}"


def _summary(summary: dict[str, Any], results: Sequence[Any], claims: pd.DataFrame) -> list[str]:
    rows = _records(claims)
    counts = _counts(rows)
    evaluable = counts[HOLDS] + counts[FAILS]
    machine = summary["machine"]
    preset_name = summary.get("preset_name") or summary["preset"].get("name", "?")
    overrides = summary.get("overrides") or {}
    if overrides:
        shown = ", ".join(f"<code>{_e(k)}={_e(v)}</code>" for k, v in overrides.items())
    else:
        shown = "none"
    threads = machine.get("torch_threads")
    seconds = float(summary["seconds"])
    return [
        '<section id="summary">',
        "<h2>Summary</h2>",
        f'<p class="total" id="total"><b>{counts[HOLDS]} of {evaluable} evaluable claims '
        f"hold</b>; {counts[UNEVALUABLE]} not evaluable ({len(rows)} verdicts in all; "
        f"{counts[FAILS]} {'does' if counts[FAILS] == 1 else 'do'} not hold).</p>",
        "<h3>Per figure</h3>",
        _figure_counts(summary, results, rows),
        "<h3>The papers' headline claims</h3>",
        _headlines(rows),
        "<h3>Run</h3>",
        '<ul id="run-facts">',
        f"<li>Machine: {_e(machine.get('host', '?'))}, {_e(machine.get('cpus', '?'))} CPUs, "
        f"torch threads {_e('?' if threads is None else threads)}, CUDA "
        f"{'yes' if machine.get('cuda') else 'no'}; runs on {_e(machine.get('device', 'cpu'))} "
        f"({_e(machine.get('device_name', 'cpu'))}, TF32 {'on' if machine.get('tf32') else 'off'}, "
        f"fp32); load average {_load(machine, 'load_start')} "
        f"at the start, {_load(machine, 'load_end')} at the end.</li>",
        f"<li>Wall time: {seconds:.0f} s ({seconds / 60:.1f} min).</li>",
        f"<li>Preset: <b>{_e(preset_name)}</b>; overrides (<code>--set</code>): "
        f'<span id="overrides">{shown}</span>.</li>',
        "</ul>",
        "</section>",
    ]


def _image(path: Path, alt: str) -> str:
    if not path.is_file():
        return '<p class="note">(no figure)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _figures(
    root: Path, specs: Sequence[Any], results: Sequence[Any], claims: pd.DataFrame
) -> list[str]:
    by_name = {r.name: r for r in results}
    parts = ['<section id="figures">']
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
    parts.append("</section>")
    return parts


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
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(TITLE)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(TITLE)}</h1>",
        f"<p>Preset <b>{_e(preset.get('name', '?'))}</b>: {_e(preset.get('description', ''))}. "
        f"Made {_e(time.strftime('%Y-%m-%d %H:%M %Z'))}.</p>",
        '<p id="render-check" class="note">figures not checked yet</p>',
        *_summary(summary, results, claims),
        *_figures(root, specs, results, claims),
        '<section id="paper-versus-measured">',
        "<h2>Paper versus measured</h2>",
        '<p class="note">Every claim is checked by running the code on the runs of this '
        'directory; the criterion says what "holds" means, and the preconditions what the runs '
        "must meet for the claim to be judged at all (a claim whose runs do not meet them is "
        '"not evaluable", with the reason); the measured column gives the numbers.</p>',
        _claims(claims, table_id="claims"),
        "</section>",
        "<h2>Runs</h2>",
    ]
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
