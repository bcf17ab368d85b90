"""The ``diffeoprobe`` command line: a thin layer over the library (Typer).

User errors (:class:`DiffeoProbeError`) are printed as one line on standard error with exit code 2,
never as a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from diffeoprobe.config import MeasureConfig, TrainConfig, from_dict
from diffeoprobe.errors import DiffeoProbeError

app = typer.Typer(
    name="diffeoprobe",
    help="Measure how sensitive each layer of a network is to smooth deformations versus noise.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _options(pairs: list[str] | None, flag: str) -> dict[str, object]:
    """``["depth=4", "activation=tanh"]`` -> ``{"depth": 4, "activation": "tanh"}`` (YAML values)."""
    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DiffeoProbeError(f"{flag} takes KEY=VALUE, got {pair!r}")
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise DiffeoProbeError(
                f"{flag} {pair!r}: the value is not valid YAML ({exc})"
            ) from None
    return out


def config_options(
    *configs: tuple[type, str],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Derive a command's options from config dataclasses (the one source of defaults).

    Each field becomes ``--field-name`` with the field's type, default and help; ``bool`` fields
    become ``--x/--no-x``; ``dict`` fields become repeatable ``--model-option KEY=VALUE``. A field
    whose name the command already uses gets the config's prefix (``--measure-batch-size``). The
    command receives the built configs as ``configs={cls: instance}``.
    """

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(fn, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != "configs"]
        taken = {p.name for p in params}
        fields_of: dict[str, tuple[type, str, str | None]] = {}
        for cls, prefix in configs:
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                name = f.name if f.name not in taken else f"{prefix}_{f.name}"
                taken.add(name)
                help_text = f.metadata.get("help", "")
                if typing.get_origin(hints[f.name]) is dict:
                    flag = "--" + f.name.removesuffix("s").replace("_", "-")
                    annotation = Annotated[
                        list[str] | None,
                        typer.Option(
                            flag,
                            *filter(None, [f.metadata.get("short")]),
                            help=f"{help_text}; KEY=VALUE, repeatable",
                        ),
                    ]
                    default, dict_flag = None, flag
                else:
                    flag = "--" + name.replace("_", "-")
                    decls = (f"{flag}/--no-{flag[2:]}",) if hints[f.name] is bool else (flag,)
                    annotation = Annotated[hints[f.name], typer.Option(*decls, help=help_text)]
                    default, dict_flag = f.default, None
                params.append(
                    inspect.Parameter(
                        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
                    )
                )
                fields_of[name] = (cls, f.name, dict_flag)

        @functools.wraps(fn)
        def command(**kwargs: object) -> None:
            values: dict[type, dict[str, object]] = {cls: {} for cls, _ in configs}
            rest = {}
            for key, value in kwargs.items():
                if key not in fields_of:
                    rest[key] = value
                    continue
                cls, field_name, dict_flag = fields_of[key]
                values[cls][field_name] = _options(value, dict_flag) if dict_flag else value
            return fn(**rest, configs={cls: from_dict(cls, v) for cls, v in values.items()})

        command.__signature__ = signature.replace(parameters=params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _load_probe(
    dataset: str, split: str, data_dir: Path | None, seed: int, options: dict[str, object]
):
    from diffeoprobe.data import build_dataset

    return build_dataset(dataset, split=split, data_dir=data_dir, seed=seed, **options)


def _fmt(value: float, se: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g} ± {se:.1g}" if math.isfinite(se) else f"{value:.3g}"


def _print_table(table, title: str) -> None:
    view = Table(title=title, show_lines=False)
    for column in ("layer", "depth", "D", "G", "R"):
        view.add_column(column, justify="left" if column == "layer" else "right")
    for row in table.itertuples():
        view.add_row(
            row.layer,
            str(row.depth),
            _fmt(row.D, row.D_se),
            _fmt(row.G, row.G_se),
            _fmt(row.R, row.R_se),
        )
    console.print(view)
    if table[["D", "G", "R"]].isna().any().any():  # measure raises on non-finite sums: only 0/0
        console.print(
            "nan = 0/0: the perturbation changed nothing there (D = G = 0, e.g. T = 0) "
            "or the layer is constant over the probe images (Z = 0)"
        )


@app.command()
def measure(
    model: Annotated[
        str | None,
        typer.Option(
            help="zoo name (see --list) or module.path:factory [default: simplecnn, or simplecnn1d on 1D data]"
        ),
    ] = None,
    dataset: Annotated[str, typer.Option(help="data set name (see --list)")] = "scale-detection",
    split: Annotated[str, typer.Option(help="train or test")] = "test",
    data_dir: Annotated[Path | None, typer.Option(help="where the data set files are")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help=".safetensors (or .pt) weights for the model")
    ] = None,
    model_option: Annotated[
        list[str] | None, typer.Option("--model-option", "-m", help="KEY=VALUE for the model")
    ] = None,
    dataset_option: Annotated[
        list[str] | None, typer.Option("--dataset-option", "-d", help="KEY=VALUE for the data set")
    ] = None,
    probe_size: Annotated[int, typer.Option(help="number of probe images P")] = 500,
    delta: Annotated[float, typer.Option(help="typical diffeo displacement in pixels")] = 1.0,
    temperature: Annotated[
        float | None, typer.Option(help="ensemble temperature T (overrides --delta)")
    ] = None,
    cut: Annotated[int, typer.Option(help="ensemble frequency cut-off c >= 1")] = 3,
    interp: Annotated[str, typer.Option(help="bilinear, nearest or gaussian")] = "bilinear",
    diffeo: Annotated[
        str, typer.Option(help="max-entropy, pixel-shift, or auto (pixel-shift on scale-detection)")
    ] = "auto",
    noise: Annotated[str, typer.Option(help="matched or rectified")] = "matched",
    draws: Annotated[int, typer.Option(help="diffeo/noise draws per image")] = 1,
    channel_mean: Annotated[
        bool, typer.Option(help="average representations over channels")
    ] = False,
    layers: Annotated[
        str | None, typer.Option(help="comma-separated layer names (default: all)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="images per forward pass (all copies)")] = 256,
    seed: Annotated[int, typer.Option(help="seed for the model initialisation and every draw")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="write the table to .parquet or .csv")] = None,
    list_names: Annotated[
        bool, typer.Option("--list", help="list models and data sets, then exit")
    ] = False,
) -> None:
    """D_k, G_k, R_k for every layer of a model on a probe set.

    Example: diffeoprobe measure --model simplecnn --dataset fashionmnist --probe-size 500 --out fm.parquet
    """
    import torch

    from diffeoprobe import measure as run_measure
    from diffeoprobe import models
    from diffeoprobe.data import available_datasets
    from diffeoprobe.measure.core import DIFFEOS, INTERPOLATIONS, NOISES
    from diffeoprobe.perturb.shifts import task_diffeo
    from diffeoprobe.runs import check_table_path, load_weights, write_table
    from diffeoprobe.validate import (
        check_choice,
        check_cut,
        check_int,
        check_positive,
        check_temperature,
    )

    if list_names:
        console.print("models:   " + ", ".join(models.available()))
        console.print("datasets: " + ", ".join(available_datasets()))
        return
    if out is not None:
        check_table_path(out)
    check_cut(cut, "--cut")
    check_int(draws, "--draws", minimum=1)
    check_int(batch_size, "--batch-size", minimum=1)
    check_int(probe_size, "--probe-size", minimum=2)
    check_choice(interp, "--interp", INTERPOLATIONS)
    check_choice(noise, "--noise", NOISES)
    check_choice(diffeo, "--diffeo", ("auto", *DIFFEOS))
    if temperature is not None:
        check_temperature(temperature, "--temperature")
    check_positive(delta, "--delta", allow_zero=True)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DiffeoProbeError(
            f"--device {device!r}: CUDA is not available on this machine; use --device cpu"
        )
    layer_names = [name.strip() for name in layers.split(",")] if layers else None
    data_options = _options(dataset_option, "--dataset-option")
    data = _load_probe(dataset, split, data_dir, seed, data_options)
    if len(data) == 0:
        raise DiffeoProbeError(f"--dataset {dataset!r} split {split!r} is empty")
    x0, _ = data[0]
    labels = (
        data.tensors[1]
        if hasattr(data, "tensors")
        else torch.tensor([data[i][1] for i in range(len(data))])
    )
    model = model or ("simplecnn1d" if x0.dim() == 2 else "simplecnn")
    perturbation = task_diffeo(diffeo, dataset, data_options)
    torch.manual_seed(seed)
    net = models.build(
        model,
        x0.shape[0],
        int(labels.max()) + 1,
        input_size=x0.shape[-1],
        **_options(model_option, "--model-option"),
    )
    if checkpoint is not None:
        load_weights(net, checkpoint)
    table = run_measure(
        net,
        data,
        delta=delta,
        temperature=temperature,
        cut=cut,
        interp=interp,
        diffeo=perturbation,
        noise=noise,
        layers=layer_names,
        batch_size=batch_size,
        draws=draws,
        channel_mean=channel_mean,
        probe_size=probe_size,
        device=device,
        seed=seed,
        progress=sys.stderr.isatty(),
    )
    table.attrs.update(model=model, dataset=dataset, split=split, checkpoint=str(checkpoint or ""))
    temp = (
        f"T = {table.attrs['temperature']:.3g}"
        if perturbation == "max-entropy"
        else table.attrs["diffeo"]
    )
    _print_table(
        table,
        f"{model} on {dataset} ({split}, P = {int(table['n'].iloc[0])}, {temp})",
    )
    if out is not None:
        write_table(table, out)
        console.print(f"wrote {out}")


@app.command()
def deform(
    out: Annotated[Path, typer.Option(help="PNG file to write")] = Path("deform.png"),
    dataset: Annotated[str, typer.Option(help="data set to take images from")] = "fashionmnist",
    data_dir: Annotated[Path | None, typer.Option(help="where the data set files are")] = None,
    dataset_option: Annotated[
        list[str] | None, typer.Option("--dataset-option", "-d", help="KEY=VALUE for the data set")
    ] = None,
    images: Annotated[int, typer.Option(help="number of images (rows)")] = 4,
    temperatures: Annotated[
        int, typer.Option(help="number of temperatures (columns after the original)")
    ] = 6,
    cut: Annotated[int, typer.Option(help="ensemble frequency cut-off c >= 2")] = 3,
    interp: Annotated[str, typer.Option(help="bilinear, nearest or gaussian")] = "bilinear",
    seed: Annotated[int, typer.Option(help="seed of the draws")] = 0,
) -> None:
    """A PNG grid: images deformed at temperatures log-spaced over the natural range [T_min, T_max].

    Example: diffeoprobe deform --dataset fashionmnist --images 4 --temperatures 6 --out deform.png
    """
    import torch

    from diffeoprobe.plots import deform_grid, save_figure
    from diffeoprobe.validate import check_cut, check_int

    check_int(images, "--images", minimum=1, maximum=64)
    check_int(temperatures, "--temperatures", minimum=1, maximum=32)
    check_cut(cut, "--cut")
    if out.suffix.lower() != ".png":
        raise DiffeoProbeError(f"--out must end in .png, got {str(out)!r}")
    data = _load_probe(
        dataset, "test", data_dir, seed, _options(dataset_option, "--dataset-option")
    )
    x = torch.stack([data[i][0] for i in range(min(images, len(data)))])
    save_figure(deform_grid(x, temperatures=temperatures, cut=cut, interp=interp, seed=seed), out)
    console.print(f"wrote {out}")


@app.command()
@config_options((TrainConfig, "train"), (MeasureConfig, "measure"))
def train(
    out: Annotated[Path, typer.Option(help="run directory (resumed when it exists)")],
    configs: dict | None = None,
) -> None:
    """Train a model with checkpoints at init, log-spaced steps and the end; optionally measure each.

    Example: diffeoprobe train --model simplecnn --dataset fashionmnist --epochs 5 --lr 0.05 --measure --out runs/fm
    """
    from diffeoprobe.train import TrainingDiverged
    from diffeoprobe.train import train as run_training

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
        _print_table(
            last,
            f"{config.model} on {config.dataset} after training (step {int(last['step'].iloc[0])})",
        )


@app.command()
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


@app.command()
def theory(
    depth: Annotated[int, typer.Option(help="number of layers L")] = 12,
    stride: Annotated[int, typer.Option(help="stride s of every layer")] = 2,
    filter_size: Annotated[int, typer.Option("--filter", help="filter size F of every layer")] = 2,
    activation: Annotated[str, typer.Option(help="relu, tanh or identity")] = "relu",
    dim: Annotated[int, typer.Option(help="1 (signals) or 2 (images)")] = 1,
    noise: Annotated[str, typer.Option(help="matched or rectified")] = "matched",
    seed: Annotated[int, typer.Option(help="seed of the noise draws")] = 0,
    out: Annotated[
        str | None, typer.Option(help="write the table: .csv or .parquet, or - for CSV on stdout")
    ] = None,
) -> None:
    """Idealised pooling nets (constant filters, one active pixel): exact D_k, G_k, R_k next to the power laws.

    Example: diffeoprobe theory --stride 1 --filter 2 --depth 12 --activation relu --out -
    """
    from diffeoprobe.runs import check_table_path, write_table
    from diffeoprobe.theory import theory_table

    if out not in (None, "-"):
        check_table_path(out)
    table = theory_table(
        dim=dim,
        depth=depth,
        filter_size=filter_size,
        stride=stride,
        activation=activation,
        noise=noise,
        seed=seed,
    )
    if out == "-":
        table.to_csv(sys.stdout, index=False)
        return
    view = Table(
        title=f"idealised {dim}D net: F = {filter_size}, s = {stride}, {activation}, {noise} noise"
    )
    for column in ("k", "D", "D theory", "G", "G theory", "R", "R theory"):
        view.add_column(column, justify="right")
    for row in table.itertuples():
        view.add_row(
            str(row.depth),
            *(f"{v:.4g}" for v in (row.D, row.D_theory, row.G, row.G_theory, row.R, row.R_theory)),
        )
    console.print(view)
    if out is not None:
        write_table(table, out)
        console.print(f"wrote {out}")


def _register_extensions() -> None:
    """Add the commands that live in their own modules: sweep/results/report, reproduce."""
    from diffeoprobe import cli_reproduce, cli_sweep

    cli_sweep.register(app)
    cli_reproduce.register(app)


_register_extensions()


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()  # standalone mode: usage errors print themselves and exit with code 2
    except DiffeoProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
