"""The sweep commands of the command line: ``sweep``, ``results`` and ``report``.

:func:`register` adds them to the ``diffeoprobe`` Typer app (``diffeoprobe.cli`` calls it). They are thin:
the work is in :mod:`diffeoprobe.sweep`, :mod:`diffeoprobe.sweep.results` and
:mod:`diffeoprobe.sweep.report`; user errors are :class:`DiffeoProbeError` (exit code 2 through
``cli.main``); a sweep with failed runs exits with code 1.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from diffeoprobe.cli.options import console
from diffeoprobe.errors import DiffeoProbeError

__all__ = [
    "register",
]

COMMANDS = ("sweep", "results", "report")
SHOWN_ROWS = 20  # rows `results` prints when it writes no file


def register(app: typer.Typer) -> None:
    """Add ``sweep``, ``results`` and ``report`` to ``app`` (a second call adds nothing)."""
    present = {c.name for c in app.registered_commands}
    if set(COMMANDS) <= present:
        return
    app.command("sweep")(sweep)
    app.command("results")(results)
    app.command("report")(report)


def sweep(
    grid: Annotated[Path, typer.Argument(help="grid file (YAML), see docs/sweeps.md")],
    out: Annotated[str, typer.Option(help="sweep directory (runs/<id>/ per run) or an fsspec URL")],
    executor: Annotated[
        str, typer.Option(help="local (process pool), dask (a cluster), serial (this process)")
    ] = "local",
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Dask scheduler address, tcp://HOST:8786 (dask; default: a LocalCluster)"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="worker processes (default: one per GPU for cuda runs, else per core)"),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per run (default: cores / workers, local)")
    ] = None,
    retries: Annotated[int, typer.Option(help="tries again a failing run this many times")] = 0,
    only: Annotated[
        list[str] | None, typer.Option(help="run only this sub-grid (repeatable)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the runs and their status, run nothing")
    ] = False,
    stage: Annotated[
        Path | None,
        typer.Option(help="with --out a URL: where runs train (default: ~/.cache/diffeoprobe)"),
    ] = None,
) -> None:
    """Run every configuration of a grid file, skipping finished runs and resuming interrupted ones.

    Examples:
      diffeoprobe sweep examples/sweep-quick.yaml --out runs/quick --dry-run
      diffeoprobe sweep examples/sweep-quick.yaml --out runs/quick --workers 2
      diffeoprobe sweep grid.yaml --out /shared/sweep --executor dask --scheduler tcp://head:8786
      diffeoprobe sweep grid.yaml --out s3://bucket/sweep --stage /scratch/sweep
    """
    from diffeoprobe import processes
    from diffeoprobe.atomic import check_out_dir

    if "://" not in out:
        check_out_dir(out)
    if stage is not None:
        check_out_dir(stage, flag="--stage")
    if executor == "dask" and scheduler is None and not dry_run:
        # the LocalCluster's workers fork from this server: it imports torch and the training
        # code on another core while this process imports its own (no torch imported so far)
        processes.start_forkserver(("distributed",))
    from diffeoprobe.sweep import load_grid, plan, resolve_out, run_sweep

    specs = load_grid(grid, only=only or ())
    if dry_run:
        rows = plan(specs, out, stage)
        columns = ("id", "grid", "axes", "status", "checkpoint")
        view = Table(title=f"{grid}: {len(rows)} runs in {out}")
        for column in columns:
            view.add_column(column)
        for row in rows:
            view.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
        console.print(view)
        counts = {s: sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}}
        console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs")
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a batch system's stop: clean up
    try:
        result = run_sweep(
            specs,
            out,  # a str: an s3://... URL stays one (typer would make a Path of it)
            executor=executor,
            scheduler=scheduler,
            workers=workers,
            threads=threads,
            retries=retries,
            progress=sys.stderr.isatty(),
            start_method="fork",  # this process has only read the grid: its copies are clean
            stage=stage,
            log=lambda message: console.print(
                message, markup=False, highlight=False, soft_wrap=True
            ),
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.failed:
        trained_in = resolve_out(out, stage)[0]
        console.print(
            f"{len(result.failed)} runs failed; their tracebacks: {trained_in}/runs/<id>/error.json"
        )
        raise typer.Exit(1)


def results(
    directory: Annotated[str, typer.Argument(help="a sweep directory (or fsspec URL)")],
    where: Annotated[
        str | None, typer.Option(help="SQL condition, e.g. \"layer = 'output' AND step > 0\"")
    ] = None,
    sql: Annotated[
        str | None,
        typer.Option(
            help="a whole SQL query over the tables results, runs, tables (no files or network)"
        ),
    ] = None,
    runs: Annotated[
        bool, typer.Option("--runs", help="one row per run (status, config) instead of per layer")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="write the rows to .csv or .parquet")] = None,
) -> None:
    """Query the tables of every finished run with DuckDB; print them or export CSV / Parquet.

    Examples:
      diffeoprobe results runs/quick --where "layer = 'output'" --out output.csv
      diffeoprobe results runs/quick --runs
      diffeoprobe results runs/quick --sql "SELECT model_options_depth, avg(R) FROM results WHERE layer = 'output' GROUP BY 1"
    """
    from diffeoprobe.atomic import check_out_file
    from diffeoprobe.runs import TABLE_FORMATS
    from diffeoprobe.sweep import results as store

    if out is not None:
        check_out_file(out, suffixes=TABLE_FORMATS)
    if sql is not None and (where is not None or runs):
        raise DiffeoProbeError("--sql is a whole query: use it without --where and --runs")
    table = store.query(directory, where=where, sql=sql, view="runs" if runs else "results")
    if out is not None:
        store.export(table, out, keep=True)
        console.print(f"wrote {len(table)} rows to {out}")
        return
    columns = list(table.columns)
    if sql is None:  # the columns that tell rows apart; --out writes them all
        settings = store.varying_settings(store.query(directory, view="runs"))
        wanted = (
            ("run", "grid", "status", *settings, "seed", "test_error", "seconds")
            if runs
            else ("run", *settings, "seed", "step", "layer", "D", "G", "R", "test_error")
        )
        columns = [c for c in dict.fromkeys(wanted) if c in table.columns]
    hidden = len(table.columns) - len(columns)
    title = f"{len(table)} rows" + (f", first {SHOWN_ROWS}" if len(table) > SHOWN_ROWS else "")
    view = Table(title=title + (f"; {hidden} more columns with --out" if hidden else ""))
    for column in columns:
        view.add_column(str(column), overflow="fold")
    for row in table[columns].head(SHOWN_ROWS).itertuples(index=False):
        view.add_row(*(_cell(v) for v in row))
    console.print(view)


def report(
    directory: Annotated[str, typer.Argument(help="a sweep directory (or fsspec URL)")],
    out: Annotated[
        Path | None,
        typer.Option(help="folder for the figures and report.html (default DIR/report)"),
    ] = None,
    where: Annotated[
        str | None, typer.Option(help="SQL condition selecting the rows drawn")
    ] = None,
) -> None:
    """Figures over a whole sweep (error vs R, layer curves by setting, output vs each numeric
    setting) and a self-contained report.html.

    Example: diffeoprobe report runs/quick
    """
    from diffeoprobe.atomic import check_out_dir
    from diffeoprobe.sweep import results as store
    from diffeoprobe.sweep.report import write_sweep_report

    folder = out or (Path(directory) / "report" if "://" not in directory else Path("report"))
    check_out_dir(folder, flag="--out" if out is not None else "the report folder")
    table = store.query(directory, where=where)
    if table.empty:
        raise DiffeoProbeError(
            f"{directory}: no finished run with a table matches; nothing to draw"
        )
    page = write_sweep_report(table, store.query(directory, view="runs"), folder)
    console.print(f"wrote {page}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
