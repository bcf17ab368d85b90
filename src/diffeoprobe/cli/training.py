"""The commands around one training run: ``train`` (with checkpoints, optionally measured) and
``plot`` (its figures).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from diffeoprobe.cli.options import config_options, console, print_sensitivities
from diffeoprobe.config import MeasureConfig, TrainConfig
from diffeoprobe.errors import DiffeoProbeError

__all__ = ["register"]


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
    from diffeoprobe.training import TrainingDiverged
    from diffeoprobe.training import train as run_training

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
    from diffeoprobe.plots import error_versus_r, layer_curves, save_figure
    from diffeoprobe.runs import read_table

    tables = []
    for run_dir in run_dirs:
        path = run_dir / "table.parquet"
        if not path.is_file():
            raise DiffeoProbeError(
                f"{str(run_dir)!r} has no table.parquet: run `diffeoprobe train --measure --out {run_dir}` (to its end) first"
            )
        table = read_table(path)
        table["run"] = str(run_dir)
        tables.append(table)
        folder = out or run_dir / "figures"
        for suffix in (".png", ".pdf"):
            save_figure(
                layer_curves(table, title=str(run_dir)), folder / f"{run_dir.name}-layers{suffix}"
            )
        console.print(f"wrote {folder / (run_dir.name + '-layers.png')}")
    if len(tables) > 1 or out is not None:
        import pandas as pd

        folder = out or run_dirs[0] / "figures"
        for suffix in (".png", ".pdf"):
            save_figure(
                error_versus_r(pd.concat(tables, ignore_index=True)), folder / f"error-vs-R{suffix}"
            )
        console.print(f"wrote {folder / 'error-vs-R.png'}")
