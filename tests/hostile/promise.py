"""The project's promise for hostile input, shared by the hostile suite.

A user error is one line that names the parameter: a :class:`DiffeoProbeError` in the API, exit
code 2 with ``error: ...`` on standard error (no traceback) at the command line, and no file left
changed. Every test of ``tests/hostile/`` checks it through these helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diffeoprobe.errors import DiffeoProbeError, DiffeoProbeWarning

CASE_SECONDS = 30  # a hostile value must be refused before any real work


@contextlib.contextmanager
def time_limit(seconds: int = CASE_SECONDS) -> Iterator[None]:
    """Fail (instead of hanging the suite) when a case takes longer than ``seconds``."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the case ran past {seconds} s: the value was not refused up front")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes (to show nothing changed)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_one_line(message: str, names: tuple[str, ...]) -> None:
    """One line that names the parameter (any of ``names``)."""
    assert message.strip(), "empty message"
    assert "\n" not in message.strip(), f"more than one line: {message!r}"
    lowered = message.lower()
    assert any(n.lower() in lowered for n in names), f"{message!r} names none of {names}"


def assert_api_refuses(call: Callable[[], object], names: tuple[str, ...]) -> str:
    """``call()`` raises a one-line DiffeoProbeError naming one of ``names``; a
    :class:`DiffeoProbeWarning` on the way (a skipped corrupt run, named there) is one line too."""
    with (
        time_limit(),
        warnings.catch_warnings(record=True) as caught,
        pytest.raises(DiffeoProbeError) as info,
    ):
        warnings.simplefilter("always", DiffeoProbeWarning)
        call()
    texts = [str(info.value)]
    for warning in caught:
        assert issubclass(warning.category, DiffeoProbeWarning), warning
        texts.append(str(warning.message))
    for text in texts:  # each one line; the error, or the warning before it, names the culprit
        assert_one_line(text, (*names, "run", "could"))
    joined = " ".join(texts).lower()
    assert any(n.lower() in joined for n in names), f"{texts!r} name none of {names}"
    return str(info.value)


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``diffeoprobe ARGS`` in this process: (exit code, stdout, stderr)."""
    from diffeoprobe.cli import main

    monkeypatch.setattr(sys, "argv", ["diffeoprobe", *args])
    code: int | str | None = 0
    with time_limit(), warnings.catch_warnings():
        warnings.simplefilter("default", DiffeoProbeWarning)  # printed by the CLI as one line
        try:
            main()
        except SystemExit as exc:
            code = exc.code
    out, err = capsys.readouterr()
    return (code if isinstance(code, int) else 1), out, err


def assert_cli_refuses(code: int, err: str, names: tuple[str, ...]) -> None:
    """Exit code 2, standard error one line ``error: ...`` naming the option, no traceback;
    ``warning: ...`` lines before it (a skipped corrupt run, named there) are allowed."""
    assert "Traceback" not in err, err
    assert code == 2, f"exit code {code}, stderr {err!r}"
    lines = err.strip().splitlines()
    warned = [line for line in lines if line.startswith("warning: ")]
    rest = "\n".join(line for line in lines if not line.startswith("warning: "))
    assert rest.startswith("error: "), f"stderr does not start with 'error: ': {err!r}"
    assert_one_line(rest, (*names, *(["run"] if warned else [])))
    if warned:
        assert any(n.lower() in err.lower() for n in names), f"{err!r} names none of {names}"


def xfail_if(known: dict[str, str], case_id: str) -> list[pytest.MarkDecorator]:
    """The strict xfail mark of a known break of the promise (``issue 14: ...``), if any."""
    if case_id in known:
        return [pytest.mark.xfail(strict=True, reason=f"issue 14: {known[case_id]}")]
    return []


def fake_sweep(root: Path) -> Path:
    """A sweep directory with one finished run (its files as ``train`` writes them), no training."""
    import pandas as pd

    from diffeoprobe import runs

    run = root / "runs" / "r0"
    config = {"train": {"model": "simplecnn", "seed": 0, "lr": 0.1}, "measure": {"delta": 1.0}}
    runs.write_json(run / "config.json", {"config": config})
    table = pd.DataFrame(
        {
            "step": [0, 0],
            "layer": ["input", "output"],
            "depth": [0, 1],
            "rel_depth": [0.0, 1.0],
            "D": [1.0, 0.5],
            "G": [1.0, 2.0],
            "R": [1.0, 0.25],
            "D_se": [0.01, 0.01],
            "G_se": [0.01, 0.02],
            "R_se": [0.01, 0.01],
        }
    )
    runs.write_table(table, run / "table.parquet")
    runs.write_json(run / "done.json", {"test_error": 0.1})
    return root
