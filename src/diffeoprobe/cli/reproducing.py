"""``diffeoprobe reproduce quick|paper``: every figure of the paper, measured by this code.

Registered on the main app by ``register(app)`` (in ``diffeoprobe.cli``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from diffeoprobe.errors import DiffeoProbeError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``reproduce`` command to ``app``."""
    app.command("reproduce")(reproduce)


def reproduce(
    preset: Annotated[
        str,
        typer.Argument(
            help="quick (2 CPU cores, ~20 min), paper (the full protocol: GPU or cluster), or "
            "tiny (seconds, a smoke test)"
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="output directory (resumed when it exists) [default: out/PRESET]"),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="make only this figure (repeatable, or comma-separated)"),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(help="local (process pool), dask, serial [default: the preset's]"),
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address, e.g. tcp://host:8786")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="processes of the local pool [default: one per core]")
    ] = None,
    train: Annotated[
        bool,
        typer.Option(
            "--train/--no-train",
            help="train missing runs; --no-train builds what finished runs allow",
        ),
    ] = True,
    redo_figures: Annotated[
        bool, typer.Option(help="rebuild complete figures (runs are never retrained)")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="reuse an --out made for another preset or other --set values: its tables, "
            "claims and report are replaced by this preset's (runs are never mixed up, their ids "
            "hash their configs) [default: such a directory is refused]",
        ),
    ] = False,
    list_figures: Annotated[
        bool, typer.Option("--list", help="list the figures and presets, then exit")
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(
            help="train and measure every run there: cpu, cuda, cuda:N (the same as --set "
            "device=...) [default: the preset's, cpu]"
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="change a field of the preset (repeatable), e.g. --set sd_width=256 --set "
            "seeds=0,1,2 --set sd_stride1=5,8 --set zoo=lenet,fc2; values are read as the field's "
            "type (see presets.py); a changed setting trains new runs, it never reuses old ones",
        ),
    ] = None,
) -> None:
    """Train, measure and plot every figure of the paper; write results.parquet, PNG + PDF figures
    and a self-contained report.html, with a "paper versus measured" table of every claim.

    Example: diffeoprobe reproduce quick --out out/quick    (then open out/quick/report.html)

    Example: diffeoprobe reproduce quick --set sd_width=128 --set seeds=0,1,2 --out out/quick-w128
    """
    from rich.console import Console

    from diffeoprobe.experiments import PRESETS, figure_specs, get_preset
    from diffeoprobe.experiments import reproduce as run_reproduce
    from diffeoprobe.experiments.overrides import (
        apply_overrides,
        describe_overrides,
        parse_overrides,
    )

    console = Console()
    if list_figures:
        for spec in figure_specs(preset if preset in PRESETS else "quick"):
            console.print(f"{spec.name:16s} {spec.title}  [{spec.paper}]")
        console.print("presets: " + ", ".join(PRESETS))
        return
    if preset not in PRESETS:
        raise DiffeoProbeError(
            f"preset: unknown preset {preset!r}; available: {', '.join(PRESETS)}"
        )
    if executor is not None and executor not in ("local", "dask", "serial"):
        raise DiffeoProbeError(f"--executor must be local, dask or serial, got {executor!r}")
    if workers is not None and workers < 1:
        raise DiffeoProbeError(f"--workers must be >= 1, got {workers}")
    if device is not None:
        from diffeoprobe.validate import check_device

        check_device(device, "--device")
        if device != get_preset(preset).device:  # the preset's own device is no override
            set_ = [*(set_ or []), f"device={device}"]
    overrides = parse_overrides(set_)  # a bad --set fails before any work, as does --only
    chosen = apply_overrides(get_preset(preset), overrides)
    figure_specs(chosen, only)
    out = out or Path("out") / preset
    from diffeoprobe.atomic import check_out_dir

    check_out_dir(out)
    if overrides:
        console.print(f"preset {preset} with {describe_overrides(overrides)}", markup=False)
    result = run_reproduce(
        chosen,
        out,
        only=only,
        executor=executor,
        scheduler=scheduler,
        workers=workers,
        train=train,
        redo_figures=redo_figures,
        progress=sys.stderr.isatty(),
        log=console.print,
        overrides=overrides,
        force=force,
    )
    claims = result.claims
    held = int((claims["holds"] == True).sum())  # noqa: E712
    console.print(
        f"{len(result.figures)} figure(s) in {result.seconds:.0f} s; claims: {held} of "
        f"{len(claims)} hold -> {result.report}"
    )
    for figure in result.figures:
        if figure.status in ("missing", "skipped"):
            console.print(f"{figure.name}: {figure.status}: {figure.note}")
    if not result.ok:
        raise typer.Exit(1)
