"""The commands that probe a model or the theory without training: ``measure``, ``deform``,
``theory``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from diffeoprobe.cli.options import config_options, console, parse_options, print_sensitivities
from diffeoprobe.config import MeasureConfig
from diffeoprobe.errors import DiffeoProbeError

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``measure``, ``deform`` and ``theory`` to ``app``."""
    app.command("measure")(config_options((MeasureConfig, "measure"))(measure))
    app.command("deform")(deform)
    app.command("theory")(theory)


def load_probe(
    dataset: str, split: str, data_dir: Path | None, seed: int, options: dict[str, Any]
) -> Any:
    """One split of a data set by name (a Dataset of ``(x, label)``), for ``measure``/``deform``."""
    from diffeoprobe import data as datasets

    return datasets.build(dataset, split=split, data_dir=data_dir, seed=seed, **options)


def _model_preprocessing(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """The folder's size, mean and std from what a ``hf:`` model declares, where the user gave
    none (``-d stats=`` counts as given); the values used are printed.
    """
    from diffeoprobe.models.pretrained import preprocessing

    declared = preprocessing(model) or {}
    given = set(options) | ({"mean", "std"} if "stats" in options else set())
    taken = {k: v for k, v in declared.items() if k not in given}
    if taken:
        shown = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in taken.items())
        console.print(f"preprocessing of {model}: {shown}", markup=False)
    return {**options, **taken}


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
        Path | None,
        typer.Option(
            "--weights",
            "--checkpoint",
            help="weights for the model: .safetensors, or a PyTorch state dict (.pt, read with "
            "weights_only); a mismatch names the missing and unexpected keys",
        ),
    ] = None,
    model_option: Annotated[
        list[str] | None, typer.Option("--model-option", "-m", help="KEY=VALUE for the model")
    ] = None,
    dataset_option: Annotated[
        list[str] | None, typer.Option("--dataset-option", "-d", help="KEY=VALUE for the data set")
    ] = None,
    layers: Annotated[
        str | None, typer.Option(help="comma-separated layer names (default: all)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed for the model initialisation and every draw")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="write the table to .parquet or .csv")] = None,
    list_names: Annotated[
        bool, typer.Option("--list", help="list models and data sets, then exit")
    ] = False,
    configs: dict | None = None,
) -> None:
    """D_k, G_k, R_k for every layer of a model on a probe set.

    Example: diffeoprobe measure --model simplecnn --dataset fashionmnist --probe-size 500 --out fm.parquet
    """
    import torch

    from diffeoprobe import measure as run_measure
    from diffeoprobe import models
    from diffeoprobe.atomic import check_out_file
    from diffeoprobe.config import measure_arguments, validate
    from diffeoprobe.data import available
    from diffeoprobe.data.tensors import labels
    from diffeoprobe.measurement import check_model_fits
    from diffeoprobe.runs import TABLE_FORMATS, load_weights, write_table
    from diffeoprobe.validate import check_device, check_seed

    if list_names:
        console.print("models:   " + ", ".join(models.available()))
        console.print("datasets: " + ", ".join(available()))
        return
    if out is not None:
        check_out_file(out, suffixes=TABLE_FORMATS)
    assert configs is not None  # built from the options by config_options
    settings = validate(configs[MeasureConfig], flags=True)
    check_seed(seed, "--seed")
    check_device(device, "--device")
    layer_names = [name.strip() for name in layers.split(",")] if layers else None
    data_options = parse_options(dataset_option, "--dataset-option")
    if dataset == "folder" and model is not None and model.lower().startswith("hf:"):
        data_options = _model_preprocessing(model, data_options)
    data = load_probe(dataset, split, data_dir, seed, data_options)
    if len(data) < 2:
        raise DiffeoProbeError(
            f"--dataset {dataset!r} split {split!r} holds {len(data)} image(s); measure needs "
            "at least 2"
        )
    x0, _ = data[0]
    model = model or ("simplecnn1d" if x0.dim() == 2 else "simplecnn")
    arguments = measure_arguments(settings, dataset=dataset, dataset_options=data_options)
    torch.manual_seed(seed)
    net = models.build(
        model,
        x0.shape[0],
        int(labels(data).max()) + 1,
        input_size=x0.shape[-1],
        **parse_options(model_option, "--model-option"),
    )
    if checkpoint is not None:
        load_weights(net, checkpoint)
    probe = torch.stack([data[i][0] for i in range(2)])
    check_model_fits(net.to(device), probe.to(device), name=model)
    table = run_measure(
        net,
        data,
        **arguments,
        layers=layer_names,
        probe_size=settings.probe_size,
        device=device,
        seed=seed,
        progress=sys.stderr.isatty(),
    )
    table.attrs.update(model=model, dataset=dataset, split=split, checkpoint=str(checkpoint or ""))
    temp = (
        f"T = {table.attrs['temperature']:.3g}"
        if arguments["diffeo"] == "max-entropy"
        else table.attrs["diffeo"]
    )
    print_sensitivities(
        table,
        f"{model} on {dataset} ({split}, P = {int(table['n'].iloc[0])}, {temp})",
    )
    if out is not None:
        write_table(table, out, keep=True)
        console.print(f"wrote {out}")


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

    from diffeoprobe.atomic import check_out_file
    from diffeoprobe.config import INTERPOLATIONS
    from diffeoprobe.plots import deform_grid, save_figure
    from diffeoprobe.validate import check_choice, check_cut, check_int, check_seed

    check_int(images, "--images", minimum=1, maximum=64)
    check_int(temperatures, "--temperatures", minimum=1, maximum=32)
    check_cut(cut, "--cut")
    check_choice(interp, "--interp", INTERPOLATIONS)
    check_seed(seed, "--seed")
    check_out_file(out, suffixes=(".png",))
    data = load_probe(
        dataset, "test", data_dir, seed, parse_options(dataset_option, "--dataset-option")
    )
    if len(data) == 0:
        raise DiffeoProbeError(f"--dataset {dataset!r}: the test split is empty")
    x = torch.stack([data[i][0] for i in range(min(images, len(data)))])
    if x.dim() != 4:
        raise DiffeoProbeError(
            f"--dataset {dataset!r} holds 1D signals of shape {tuple(x.shape[1:])}; deform draws "
            "2D images (for scale-detection: -d dim=2)"
        )
    save_figure(
        deform_grid(x, temperatures=temperatures, cut=cut, interp=interp, seed=seed),
        out,
        keep=True,
    )
    console.print(f"wrote {out}")


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
    from diffeoprobe.atomic import check_out_file
    from diffeoprobe.runs import TABLE_FORMATS, write_table
    from diffeoprobe.theory import theory_table
    from diffeoprobe.validate import check_seed

    check_seed(seed, "--seed")
    if out not in (None, "-"):
        check_out_file(out, suffixes=TABLE_FORMATS)
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
        write_table(table, out, keep=True)
        console.print(f"wrote {out}")
