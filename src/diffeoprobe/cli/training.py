"""The commands around one training run: ``train`` (with checkpoints, optionally measured) and
``plot`` (its figures).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diffeoprobe.cli.options import config_options, console, print_sensitivities
from diffeoprobe.config import MeasureConfig, TrainConfig
from diffeoprobe.errors import DiffeoProbeError

__all__ = ["register"]

if TYPE_CHECKING:
    import pandas as pd


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``plot`` to ``app``."""
    app.command("train")(config_options((TrainConfig, "train"), (MeasureConfig, "measure"))(train))
    app.command("plot")(plot)


def train(
    out: Annotated[Path, typer.Option(help="run directory (resumed when it exists)")],
    configs: dict | None = None,
) -> None:
    """Train a model with checkpoints at init, log-spaced steps and the end; optionally measure each.

    Example: diffeoprobe train --model simplecnn --dataset fashionmnist --epochs 5 --lr 0.05 --measure --out runs/fm
    """
    from diffeoprobe.atomic import check_out_dir
    from diffeoprobe.training import TrainingDiverged
    from diffeoprobe.training import train as run_training

    check_out_dir(out)
    assert configs is not None  # built from the options by config_options
    config, measure_config = configs[TrainConfig], configs[MeasureConfig]
    try:
        summary = run_training(
            config, out, measure=measure_config, progress=sys.stderr.isatty(), log=console.print
        )
    except TrainingDiverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    console.print(
        f"done: {summary.steps} steps ({summary.epochs:.2f} epochs), train error {summary.train_error:.4f}, "
        f"test error {summary.test_error:.4f}, {summary.seconds:.1f} s -> {out}"
    )
    if summary.table is not None:
        last = summary.table[summary.table["step"] == summary.table["step"].max()]
        print_sensitivities(
            last,
            f"{config.model} on {config.dataset} after training (step {int(last['step'].iloc[0])})",
        )


def plot(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="run directories made by `diffeoprobe train --measure`")
    ],
    out: Annotated[
        Path | None, typer.Option(help="folder for the figures (default: each run's figures/)")
    ] = None,
) -> None:
    """Figures of one or more runs: D_k, G_k, R_k versus relative depth per checkpoint; error versus R.

    Example: diffeoprobe plot runs/fm runs/fm-seed1
    """
    import pandas as pd

    from diffeoprobe.atomic import check_out_dir
    from diffeoprobe.plots import error_versus_r, layer_curves, save_figure

    if out is not None:
        check_out_dir(out)
    tables = []
    usable: list[tuple[Path, pd.DataFrame]] = []
    for run_dir in run_dirs:
        table = _run_table(run_dir)
        if table is not None:
            if out is None:
                check_out_dir(run_dir / "figures")
            usable.append((run_dir, table))
    if not usable:
        raise DiffeoProbeError(
            "plot: none of the run directories holds a usable table.parquet (each is named in a "
            "warning above)"
        )
    for run_dir, table in usable:
        table["run"] = str(run_dir)
        tables.append(table)
        folder = out or run_dir / "figures"
        for suffix in (".png", ".pdf"):
            save_figure(
                layer_curves(table, title=str(run_dir)), folder / f"{run_dir.name}-layers{suffix}"
            )
        console.print(f"wrote {folder / (run_dir.name + '-layers.png')}")
    if len(tables) > 1 or out is not None:
        folder = out or run_dirs[0] / "figures"
        for suffix in (".png", ".pdf"):
            save_figure(
                error_versus_r(pd.concat(tables, ignore_index=True)), folder / f"error-vs-R{suffix}"
            )
        console.print(f"wrote {folder / 'error-vs-R.png'}")


def _run_table(run_dir: Path) -> pd.DataFrame | None:
    """``run_dir/table.parquet``; ``None``, with a one-line warning, when it is corrupt or lacks
    a column the figures need.

    Raises:
        DiffeoProbeError: there is no table (the run was not measured, or has not finished).
    """
    import warnings

    from diffeoprobe.errors import DiffeoProbeWarning
    from diffeoprobe.runs import read_table
    from diffeoprobe.sweep.results import TABLE_COLUMNS

    path = run_dir / "table.parquet"
    if not path.is_file():
        raise DiffeoProbeError(
            f"{str(run_dir)!r} has no table.parquet: run `diffeoprobe train --measure --out {run_dir}` (to its end) first"
        )
    try:
        table = read_table(path)
    except Exception as exc:  # a truncated or foreign file: pyarrow's errors vary
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        reason = f"table.parquet is not a readable Parquet file ({first})"
    else:
        missing = [c for c in (*TABLE_COLUMNS, "test_error") if c not in table.columns]
        if not missing:
            return table
        reason = f"table.parquet lacks the column(s) {', '.join(missing)}"
    warnings.warn(f"skipped run {run_dir}: {reason}", DiffeoProbeWarning, stacklevel=2)
    return None
