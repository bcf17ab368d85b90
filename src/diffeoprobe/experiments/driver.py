"""``reproduce``: train every run the selected figures need, build each figure, check its claims,
and write one tidy table, the figures and a self-contained report.

Layout of the output directory ``DIR``::

    runs/<id>/              train() directories (resumable; a finished one is never retrained)
    figures/<name>.png|pdf  the figures
    tables/<name>.parquet   each figure's own (wide) table
    claims/<name>.json      each figure's checked claims; written last: a figure with it is complete
    results.parquet         every figure's table in one tidy (long) table with a `figure` column
    claims.csv              the "paper versus measured" table
    reproduce.json          preset, versions, machine, wall time, runs and figure statuses
    report.html             self-contained report (figures embedded, tables inline)

Runs go through :func:`diffeoprobe.sweep.run_sweep` (a local process pool, a Dask cluster, or
serially).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from diffeoprobe import runs as files
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.experiments.common import Context, MissingRuns, availability, run_id
from diffeoprobe.experiments.figures import (
    error_vs_r,
    idealised,
    noisy_training,
    pooling,
    relu_tanh,
    scale_detection,
)
from diffeoprobe.experiments.presets import Preset, get_preset
from diffeoprobe.experiments.spec import FigureSpec, Run, Verdict, status_of

__all__ = ["FIGURES", "FigureResult", "ReproduceResult", "figure_specs", "reproduce"]

FIGURES: dict[str, Callable[[Preset], FigureSpec]] = {
    "scale-detection": scale_detection.spec,
    "theory": idealised.spec,
    "pooling": pooling.spec,
    "relu-tanh": relu_tanh.spec,
    "noisy-training": noisy_training.spec,
    "error-vs-r": error_vs_r.spec,
}
"""Every figure by the name ``--only`` takes, in the order of the report."""

QUANTITIES = (
    "D", "G", "R", "Z", "numerator", "energy_fraction", "stability", "channel_pooling",
    "spatial_pooling", "channel_fraction", "spatial_channel_mean",
)  # fmt: skip
"""Measured columns of the figures' tables; the tidy table has one row per (row, quantity)."""

FIGURE_SUFFIXES = (".png", ".pdf")


@dataclass
class FigureResult:
    """What became of one figure: ``made``, ``reused`` (complete already), ``skipped`` (its data
    set is absent) or ``missing`` (runs not finished), with the table and verdicts when made.
    """

    name: str
    status: str
    note: str = ""
    seconds: float = 0.0
    table: pd.DataFrame | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReproduceResult:
    """The outcome of :func:`reproduce`."""

    out: Path
    preset: Preset
    figures: list[FigureResult]
    seconds: float
    runs: list[dict[str, Any]]
    claims: pd.DataFrame
    report: Path
    notes: list[str]

    @property
    def ok(self) -> bool:
        """Every selected figure was made (or is complete); none is missing data."""
        return all(f.status in ("made", "reused", "skipped") for f in self.figures)


def figure_specs(preset: str | Preset, only: Sequence[str] | None = None) -> list[FigureSpec]:
    """The specs of the selected figures (all by default); an unknown name lists the available."""
    preset = get_preset(preset)
    names = list(FIGURES)
    if only:
        wanted = [n.strip() for item in only for n in str(item).split(",") if n.strip()]
        unknown = [n for n in wanted if n not in FIGURES]
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DiffeoProbeError(
                f"--only: unknown figure {unknown[0]!r}{hint}; available: {', '.join(names)}"
            )
        names = [n for n in names if n in wanted]
    return [FIGURES[name](preset) for name in names]


def reproduce(
    preset: str | Preset,
    out: str | Path,
    *,
    only: Sequence[str] | None = None,
    executor: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    train: bool = True,
    redo_figures: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = lambda message: None,
    overrides: dict[str, str] | None = None,
    force: bool = False,
) -> ReproduceResult:
    """Make the selected figures of ``preset`` in ``out``; resume whatever is already there.

    Args:
        preset: ``"quick"``, ``"paper"``, ``"tiny"`` or a :class:`Preset`.
        out: the output directory (created; reused and resumed when it exists).
        only: figure names (see :data:`FIGURES`); ``None`` for all.
        executor: ``"local"`` (a process pool), ``"dask"``, ``"serial"``; default: the preset's.
        scheduler: a Dask scheduler address for ``executor="dask"``.
        workers: processes of the local pool (default: one per core).
        train: train the missing runs; ``False`` builds what the finished runs allow and says,
            for each other figure, which runs it lacks.
        redo_figures: rebuild figures even when they are complete (runs are never retrained).
        progress: progress bars on standard error.
        log: called with one line per event.
        overrides: the ``--set KEY=VALUE`` settings ``preset`` was made with (see
            :func:`~diffeoprobe.experiments.overrides.apply_overrides`): recorded in
            ``reproduce.json`` as ``overrides``, next to ``preset_name``; not applied here.
        force: reuse a directory whose ``reproduce.json`` was written for another preset (or
            other overrides): its tables, claims and report are replaced by this preset's (runs
            are never mixed up: a run's id hashes its config). Without it, such a directory is
            refused before any work.

    Raises:
        DiffeoProbeError: an unknown preset or figure name, a bad executor, an ``out`` made for
            another preset (without ``force``).
    """
    preset = get_preset(preset)
    specs = figure_specs(preset, only)
    if executor is not None and executor not in ("local", "dask", "serial"):
        raise DiffeoProbeError(f"executor must be one of local, dask, serial, got {executor!r}")
    if workers is not None:
        from diffeoprobe.validate import check_int

        check_int(workers, "workers", minimum=1)
    root = Path(out)
    if not force:
        _check_same_preset(root, preset, overrides)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load_start = _load()
    notes: list[str] = []

    # why each required data set cannot be had here (and how to make it available), per figure
    options = {preset.zoo_dataset: preset.zoo_dataset_options}
    absent = {
        s.name: [r for d in s.requires if (r := availability(d, options.get(d)))] for s in specs
    }
    needed = _unique_runs(s for s in specs if not absent[s.name])
    done_before = sum(
        (root / "runs" / run_id(r.config, r.measure) / "done.json").is_file() for r in needed
    )
    outcome: dict[str, str] = {}
    if train and needed:
        outcome = _train(needed, root, preset, executor, scheduler, workers, progress, log, notes)

    context = Context(preset, root, log)
    results = []
    with _threads(preset.threads):
        for spec in specs:
            if absent[spec.name]:
                note = "; ".join(absent[spec.name])  # why, and how to make the data available
                log(f"{spec.name}: skipped: {note}")
                results.append(FigureResult(spec.name, "skipped", note))
                continue
            results.append(_figure(spec, context, preset, redo_figures, outcome, log))

    if only:  # figures complete from earlier calls stay in the tables and the report
        made = {r.name for r in results}
        kept = {s.name: s for s in specs}
        for name in FIGURES:
            if name in made:
                continue
            spec = FIGURES[name](preset)
            earlier = _complete(spec, root, preset)
            if earlier is not None:
                kept[name] = spec
                results.append(earlier)
        order = list(FIGURES)
        specs = sorted(kept.values(), key=lambda s: order.index(s.name))
        results.sort(key=lambda r: order.index(r.name))
    run_rows = _run_rows(needed, root, outcome)
    claims = _claims_table(results)
    seconds = time.perf_counter() - start
    machine = _machine(load_start, preset.device)
    summary = dict(
        preset=asdict(preset),
        preset_name=preset.name,
        overrides=dict(overrides or {}),
        figures=[
            dict(name=r.name, status=r.status, note=r.note, seconds=r.seconds) for r in results
        ],
        runs=run_rows,
        seconds=seconds,
        machine=machine,
        versions=files.versions(),
        notes=notes,
    )
    if preset.time_budget_s is not None and only is None:
        resumed = done_before > 0 or any(r.status == "reused" for r in results)
        budget = preset.time_budget_s
        verdict = _time_claim(preset, budget, seconds, run_rows, results, machine, resumed)
        verdict["status"] = status_of(verdict["holds"])
        claims = pd.concat([claims, pd.DataFrame([verdict])], ignore_index=True)
    _write_outputs(root, results, claims, summary)
    from diffeoprobe.experiments.report import write_report

    report = write_report(root / "report.html", root, summary, specs, results, claims)
    log(f"report: {report}")
    return ReproduceResult(root, preset, results, seconds, run_rows, claims, report, notes)


def _check_same_preset(root: Path, preset: Preset, overrides: dict[str, str] | None) -> None:
    """Refuse ``root`` when its ``reproduce.json`` records another preset (``preset`` holds every
    field, overrides applied); a directory without one is free.
    """
    path = root / "reproduce.json"
    if not path.is_file():
        return
    way_out = (
        "pass --force to reuse it anyway (its tables, claims and report are replaced; runs are "
        "never mixed up, their ids hash their configs) or choose a new --out"
    )
    try:
        recorded = files.read_json(path)
    except DiffeoProbeError as exc:
        raise DiffeoProbeError(f"out: {exc}; {way_out}") from None
    wanted = json.loads(json.dumps(asdict(preset), default=str))
    found = recorded.get("preset")
    if found == wanted:
        return
    found = found if isinstance(found, dict) else {}
    fields = [k for k in wanted if found.get(k) != wanted[k]]
    fields += [k for k in found if k not in wanted]

    def describe(name: object, sets: object) -> str:
        changes = ", ".join(f"{k}={v}" for k, v in sets.items()) if isinstance(sets, dict) else ""
        return f"{name}" + (f" with --set {changes}" if changes else "")

    raise DiffeoProbeError(
        f"out: {str(root)!r} holds the outputs of preset "
        f"{describe(recorded.get('preset_name', '?'), recorded.get('overrides'))}, not of "
        f"{describe(preset.name, overrides)} (they differ in {', '.join(fields[:6])}"
        f"{', ...' if len(fields) > 6 else ''}); {way_out}"
    )


# ---- runs ----------------------------------------------------------------------------------------


def _unique_runs(specs: Iterator[FigureSpec] | Sequence[FigureSpec]) -> list[Run]:
    seen: dict[str, Run] = {}
    for spec in specs:
        for run in spec.runs:
            seen.setdefault(run_id(run.config, run.measure), run)
    return list(seen.values())


def _train(
    needed: list[Run],
    root: Path,
    preset: Preset,
    executor: str | None,
    scheduler: str | None,
    workers: int | None,
    progress: bool,
    log: Callable[[str], None],
    notes: list[str],
) -> dict[str, str]:
    """Train the runs that are not done; returns run id -> error for the ones that failed.

    With a local pool, the seeds of one configuration are trained together and the other runs
    alone, in one pool (:mod:`.seed_groups`; serially: the groups only); the sweep then records
    every run and trains whatever is left.
    """
    from diffeoprobe import sweep
    from diffeoprobe.experiments.seed_groups import seed_groups, train_seed_groups

    kind = executor or preset.executor
    specs = [
        sweep.RunSpec(
            run_id(r.config, r.measure),
            r.config,
            r.measure,
            grid=f"reproduce/{preset.name}",
            axes={**{k: v for k, v in r.tags.items()}, "seed": r.config.seed},
        )
        for r in needed
    ]
    if kind in ("local", "serial"):
        start = time.perf_counter()
        groups = seed_groups(needed, root)
        grouped = {run_id(r.config, r.measure) for group in groups for r in group}
        singles = [
            s for s in specs if s.id not in grouped and not sweep.is_done(root / "runs" / s.id)
        ]
        count = 0 if kind == "serial" else (workers or os.cpu_count() or 1)
        left = train_seed_groups(
            groups,
            root,
            workers=count,
            threads=preset.threads,
            singles=singles if count else (),
            log=log,
        )
        if groups:
            notes.append(
                f"seeds trained together: {len(grouped)} runs in {len(groups)} groups"
                + (f", with {len(singles)} other runs in the same pool" if count else "")
                + f"; {len(left)} left to the sweep ({time.perf_counter() - start:.0f} s)"
            )
    result = sweep.run_sweep(
        specs,
        root,
        executor=kind,
        scheduler=scheduler,
        workers=workers,
        threads=preset.threads,
        progress=progress,
        log=log,
    )
    notes.append(
        f"runs: executor {kind}, {len(result.trained)} trained now, {len(result.skipped)} "
        f"finished before, {len(result.failed)} failed ({result.seconds:.0f} s)"
    )
    return dict(result.failed)


def _run_rows(needed: list[Run], root: Path, failed: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for run in needed:
        key = run_id(run.config, run.measure)
        directory = root / "runs" / key
        row: dict[str, Any] = dict(id=key, run=run.describe(), seed=run.config.seed)
        if (directory / "done.json").is_file():
            done = files.read_json(directory / "done.json")
            row.update(
                status="done",
                seconds=done.get("seconds"),
                epochs=done.get("epochs"),
                train_error=done.get("train_error"),
                test_error=done.get("test_error"),
            )
            record = directory / "run.json"
            if record.is_file():  # the sweep's record: time over every attempt
                row["seconds"] = files.read_json(record).get("seconds", row["seconds"])
        else:
            row.update(status="failed" if key in failed else "missing", error=failed.get(key, ""))
        rows.append(row)
    return rows


# ---- figures -------------------------------------------------------------------------------------


def _fingerprint(spec: FigureSpec, preset: Preset) -> str:
    payload = dict(
        figure=spec.name,
        preset=asdict(preset),
        runs=sorted(run_id(r.config, r.measure) for r in spec.runs),
    )
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _paths(root: Path, name: str) -> dict[str, Path]:
    return dict(
        png=root / "figures" / f"{name}.png",
        pdf=root / "figures" / f"{name}.pdf",
        table=root / "tables" / f"{name}.parquet",
        claims=root / "claims" / f"{name}.json",
    )


def _figure(
    spec: FigureSpec,
    context: Context,
    preset: Preset,
    redo: bool,
    failed: dict[str, str],
    log: Callable[[str], None],
) -> FigureResult:
    from diffeoprobe.plots import save_figure

    paths = _paths(context.root, spec.name)
    fingerprint = _fingerprint(spec, preset)
    earlier = None if redo else _complete(spec, context.root, preset)
    if earlier is not None:
        log(f"{spec.name}: complete, reused")
        return earlier
    start = time.perf_counter()
    try:
        table = spec.build(context)
    except MissingRuns as exc:
        errors = [f"{k}: {v}" for k, v in failed.items() if k in str(exc)]
        note = str(exc) + (f" (training failed: {'; '.join(errors)})" if errors else "")
        log(f"{spec.name}: {note}")
        return FigureResult(spec.name, "missing", note)
    figure = spec.plot(table)
    for suffix in FIGURE_SUFFIXES:  # one figure, both formats (drawing is most of a figure's time)
        save_figure(figure, paths[suffix.lstrip(".")])
    verdicts = []
    for claim in spec.claims:
        try:
            found = claim.judge(table)
        except Exception as exc:  # a claim that cannot be evaluated is reported, not fatal
            reason = f"the check failed: {type(exc).__name__}: {exc}"
            found = [Verdict("", None, "not checked", reason)]
        verdicts += [
            dict(
                claim=claim.key,
                statement=claim.statement,
                paper=claim.paper,
                preconditions=claim.preconditions.describe() if claim.preconditions else "",
                headline=claim.headline,
                subject=verdict.subject,
                holds=verdict.holds,
                status=verdict.status,
                measured=verdict.measured,
                reason=verdict.reason,
            )
            for verdict in found
        ]
    seconds = time.perf_counter() - start
    files.write_table(_parquet_safe(table), paths["table"])
    files.write_json(
        paths["claims"],
        dict(figure=spec.name, fingerprint=fingerprint, seconds=seconds, verdicts=verdicts),
    )
    held = sum(v["holds"] is True for v in verdicts)
    log(f"{spec.name}: made in {seconds:.1f} s, {held} of {len(verdicts)} claims hold")
    return FigureResult(spec.name, "made", "", seconds, table, verdicts)


def _complete(spec: FigureSpec, root: Path, preset: Preset) -> FigureResult | None:
    """The figure as an earlier call made it, when all its files are there for this preset."""
    paths = _paths(root, spec.name)
    if not all(p.is_file() for p in paths.values()):
        return None
    record = files.read_json(paths["claims"])
    if record.get("fingerprint") != _fingerprint(spec, preset):
        return None
    table = files.read_table(paths["table"])
    return FigureResult(
        spec.name, "reused", "", record.get("seconds", 0.0), table, record["verdicts"]
    )


CLAIM_COLUMNS = [
    "figure", "claim", "statement", "paper", "preconditions", "headline", "subject", "holds",
    "status", "measured", "reason",
]  # fmt: skip
"""The "paper versus measured" table: ``holds`` True / False / None (not evaluable, ``reason``)."""


def _claims_table(results: list[FigureResult]) -> pd.DataFrame:
    rows = [dict(figure=r.name, **v) for r in results for v in r.verdicts]
    table = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    table["headline"] = table["headline"].fillna(False).astype(bool)
    table["status"] = [status_of(h) for h in table["holds"]]
    table["reason"] = table["reason"].fillna("")
    return table


def _time_claim(
    preset: Preset,
    budget: float,
    seconds: float,
    run_rows: list[dict[str, Any]],
    results: list[FigureResult],
    machine: dict[str, Any],
    resumed: bool,
) -> dict[str, Any]:
    """The preset's stated wall time ``budget``, judged on a fresh call only; a resumed call
    reports the recorded run and figure times (summed: what one worker would take).
    """
    recorded = sum(r.get("seconds") or 0.0 for r in run_rows) + sum(r.seconds for r in results)
    text = f"this call {seconds:.0f} s"
    if resumed:
        text += (
            f" (resumed, so not judged; recorded run + figure time {recorded:.0f} s summed "
            "over runs; a fresh directory gives the wall time)"
        )
    text += (
        f"; {machine['cpus']} CPUs, load average {machine['load_start'][0]:.1f} at the start, "
        f"{machine['load_end'][0]:.1f} at the end"
    )
    return dict(
        figure="(all)",
        claim="wall time",
        statement=f"the {preset.name} preset finishes in the stated time",
        paper=f"<= {budget / 60:.0f} min on 2 CPU cores",
        preconditions="a fresh output directory (a resumed call is not judged)",
        headline=False,
        subject=f"{preset.name} preset",
        holds=None if resumed else bool(seconds <= budget),
        measured=text,
        reason="resumed: the wall time of a resumed call says nothing" if resumed else "",
    )


# ---- outputs -------------------------------------------------------------------------------------


def tidy(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """One row per (table row, measured quantity): ``figure, <labels>, quantity, value, se``."""
    quantities = [q for q in QUANTITIES if q in table]
    labels = [c for c in table if c not in quantities and not c.endswith("_se")]
    parts = []
    for q in quantities:
        part = table[labels].copy()
        part["quantity"] = q
        part["value"] = table[q].to_numpy(dtype=float)
        part["se"] = table[f"{q}_se"].to_numpy(dtype=float) if f"{q}_se" in table else math.nan
        parts.append(part[part["value"].notna()])
    long = pd.concat(parts, ignore_index=True) if parts else table[labels].copy()
    long.insert(0, "figure", name)
    return long


def _parquet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding mixed types become strings (missing values stay missing)."""
    out = table.copy()
    for column in out.columns:
        if out[column].dtype == object:
            values = out[column].dropna()
            if not values.map(lambda v: isinstance(v, str)).all():
                out[column] = out[column].map(lambda v: v if v is None or v != v else str(v))
    return out


def _write_outputs(
    root: Path, results: list[FigureResult], claims: pd.DataFrame, summary: dict[str, Any]
) -> None:
    tables = [tidy(r.name, r.table) for r in results if r.table is not None]
    if tables:
        files.write_table(
            _parquet_safe(pd.concat(tables, ignore_index=True)), root / "results.parquet"
        )
    files.write_table(_parquet_safe(claims), root / "claims.csv")
    files.write_json(root / "reproduce.json", summary)


def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (math.nan, math.nan, math.nan)


def _machine(load_start: tuple[float, float, float], device: str) -> dict[str, Any]:
    import torch

    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    return dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(torch.device(device)) if cuda else "cpu",
        tf32=bool(cuda and torch.backends.cuda.matmul.allow_tf32),
        host=platform.node(),
        platform=platform.platform(),
        cpus=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        cuda=torch.cuda.is_available(),
        load_start=list(load_start),
        load_end=list(_load()),
    )


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Set torch's thread count for the block (tiny nets on shared cores: one thread is fastest)."""
    import torch

    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
