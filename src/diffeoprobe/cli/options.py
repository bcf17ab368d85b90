"""What the commands share: options derived from the config dataclasses, ``KEY=VALUE`` parsing and
the printed table of sensitivities.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from diffeoprobe.config import from_dict
from diffeoprobe.errors import DiffeoProbeError, one_line

__all__ = ["config_options", "console", "parse_options", "print_sensitivities"]

console = Console()


def parse_options(pairs: list[str] | None, flag: str) -> dict[str, object]:
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
                f"{flag} {pair!r}: the value is not valid YAML ({one_line(exc)})"
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
                    annotation: Any = Annotated[
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
                values[cls][field_name] = (
                    parse_options(typing.cast(list[str] | None, value), dict_flag)
                    if dict_flag
                    else value
                )
            return fn(**rest, configs={cls: from_dict(cls, v) for cls, v in values.items()})

        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _fmt(value: float, se: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g} ± {se:.1g}" if math.isfinite(se) else f"{value:.3g}"


def print_sensitivities(table: Any, title: str) -> None:
    """Print a table of :func:`diffeoprobe.measure` (layer, depth, D, G, R with their errors)."""
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
