"""The ``diffeoprobe`` command line: a thin layer over the library (Typer).

One module per command group: :mod:`~diffeoprobe.cli.measuring` (``measure``, ``deform``,
``theory``), :mod:`~diffeoprobe.cli.training` (``train``, ``plot``),
:mod:`~diffeoprobe.cli.sweeping` (``sweep``, ``results``, ``report``) and
:mod:`~diffeoprobe.cli.reproducing` (``reproduce``); :mod:`~diffeoprobe.cli.options` derives
options from the config dataclasses. No module imports torch at start: ``diffeoprobe --help`` is
fast, and ``sweep`` starts its worker processes before torch loads. User errors
(:class:`DiffeoProbeError`) are printed as one line on standard error with exit code 2, never as a
traceback.
"""

from __future__ import annotations

import sys
import warnings

import typer

from diffeoprobe.cli import measuring, reproducing, sweeping, training
from diffeoprobe.errors import DiffeoProbeError, DiffeoProbeWarning

__all__ = ["app", "main"]

app = typer.Typer(
    name="diffeoprobe",
    help="Measure how sensitive each layer of a network is to smooth deformations versus noise.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
measuring.register(app)
training.register(app)
sweeping.register(app)
reproducing.register(app)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2; a failed
    write (a full disk) one line and exit code 1; a skipped run one ``warning:`` line.
    """
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DiffeoProbeWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        code = app(standalone_mode=False)  # usage errors come here, as the user errors do
    except DiffeoProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as exc:  # click's usage errors: one line, not a 6-line box
        if type(exc).__name__ == "NoArgsIsHelpError":  # `diffeoprobe` alone: the help
            exc.show()  # type: ignore[attr-defined]
        else:
            print(f"error: {_usage_error(exc)}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except OSError as exc:  # the machine's, not the user's: a full disk, a lost mount
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        warnings.showwarning = shown
    if isinstance(code, int) and code:  # typer.Exit(1) of a command, e.g. a sweep's failed runs
        sys.exit(code)


def _usage_error(exc: Exception) -> str:
    """A usage error of click (unknown option, bad value) on one line, with where to look."""
    format_message = getattr(exc, "format_message", None)
    message = " ".join(str(format_message() if format_message else exc).split())
    context = getattr(exc, "ctx", None)
    path = getattr(context, "command_path", None)
    return f"{message} (see {path} --help)" if path else message
