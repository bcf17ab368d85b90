"""Hostile values for every option of every command: exit code 2, one ``error: `` line naming the
option on standard error, no traceback, and no file under the working directory changed.

``COMMANDS`` gives a valid base command line of each command, ``OPTIONS`` each option with the
kind of value it takes; ``BAD`` the hostile values of each kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hostile.promise import assert_cli_refuses, fake_sweep, run_cli, snapshot, xfail_if

SMALL_DATA = ["-d", "d=32", "-d", "xi=8", "-d", "train_size=100", "-d", "test_size=60"]
GRID = """\
train:
  model: simplecnn1d
  dataset: scale-detection
  dataset_options: {d: 32, xi: 8, train_size: 64, test_size: 32}
  epochs: 1
  checkpoints: 1
"""

# command -> a valid command line; {VALUE} is its positional argument
COMMANDS: dict[str, list[str]] = {
    "measure": ["measure", "--probe-size", "40", *SMALL_DATA, "-m", "depth=2"],
    "deform": ["deform"],
    "theory": ["theory", "--depth", "3"],
    "train": [
        "train",
        "--out",
        "run",
        "--model",
        "simplecnn1d",
        "--dataset",
        "scale-detection",
        *SMALL_DATA,
        "--epochs",
        "1",
        "--checkpoints",
        "1",
    ],
    "plot": ["plot", "{sweep/runs/r0}"],
    "sweep": ["sweep", "{grid.yaml}", "--out", "sweep-out"],
    "results": ["results", "{sweep}"],
    "report": ["report", "{sweep}"],
    "reproduce": ["reproduce", "{tiny}", "--out", "repro", "--no-train"],
}

FLOAT = [("type", "abc"), ("nan", "nan"), ("inf", "inf"), ("negative", "-1"), ("huge", "1e300")]
COUNT = [("type", "abc"), ("float", "2.5"), ("zero", "0"), ("negative", "-1")]
SEED = [("type", "abc"), ("negative", "-1"), ("huge", str(2**70))]
NAME = [("empty", ""), ("unknown", "nope")]
BAD: dict[str, list[tuple[str, str]]] = {
    "float": FLOAT,
    "count": COUNT,
    "seed": SEED,
    "name": NAME,
    "only": [],
}

# (command, option, kind, extra values of this option only); an option of "" is a positional.
OPTIONS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    ("measure", "--delta", "float", []),
    ("measure", "--temperature", "float", []),
    ("measure", "--cut", "count", []),
    ("measure", "--probe-size", "count", []),
    ("measure", "--batch-size", "count", []),
    ("measure", "--draws", "count", []),
    ("measure", "--interp", "name", []),
    ("measure", "--diffeo", "name", []),
    ("measure", "--noise", "name", []),
    ("measure", "--seed", "seed", []),
    ("measure", "--device", "name", []),
    ("measure", "--split", "name", []),
    ("measure", "--layers", "name", []),
    ("measure", "--model", "name", []),
    ("measure", "--dataset", "name", []),
    ("measure", "--out", "only", [("suffix", "table.xlsx")]),
    ("measure", "--checkpoint", "only", [("missing", "nope.safetensors")]),
    ("measure", "--model-option", "only", [("no-value", "depth"), ("range", "depth=-1")]),
    ("measure", "--dataset-option", "only", [("no-value", "d"), ("unknown", "bogus=1")]),
    ("deform", "--images", "count", [("huge", "1000")]),
    ("deform", "--temperatures", "count", [("huge", "1000")]),
    ("deform", "--cut", "count", []),
    ("deform", "--interp", "name", []),
    ("deform", "--seed", "seed", []),
    ("deform", "--out", "only", [("suffix", "grid.txt")]),
    ("deform", "--dataset", "name", []),
    ("theory", "--depth", "count", []),
    ("theory", "--stride", "count", []),
    ("theory", "--filter", "count", []),
    ("theory", "--activation", "name", []),
    ("theory", "--dim", "count", [("three", "3")]),
    ("theory", "--noise", "name", []),
    ("theory", "--seed", "seed", []),
    ("theory", "--out", "only", [("suffix", "table.xlsx")]),
    ("train", "--lr", "float", []),
    ("train", "--momentum", "float", []),
    ("train", "--alpha", "float", []),
    ("train", "--epochs", "count", []),
    ("train", "--batch-size", "count", []),
    ("train", "--checkpoints", "count", []),
    ("train", "--optimizer", "name", []),
    ("train", "--schedule", "name", []),
    ("train", "--loss", "name", []),
    ("train", "--seed", "seed", []),
    ("train", "--device", "name", []),
    ("train", "--model", "name", []),
    ("train", "--dataset", "name", []),
    ("train", "--probe-size", "count", []),
    ("plot", "", "only", [("missing", "no-such-run"), ("no-table", "sweep")]),
    ("sweep", "", "only", [("missing", "no-such-grid.yaml"), ("list", "list.yaml")]),
    ("sweep", "--executor", "name", []),
    ("sweep", "--workers", "count", []),
    ("sweep", "--threads", "count", []),
    ("sweep", "--retries", "only", [("type", "abc"), ("negative", "-1")]),
    ("sweep", "--only", "name", []),
    ("results", "", "only", [("missing", "no-such-sweep")]),
    ("results", "--where", "only", [("syntax", "layer = = 1"), ("column", "nope > 1")]),
    ("results", "--sql", "only", [("syntax", "SELEC 1"), ("file", "SELECT * FROM 'grid.yaml'")]),
    ("results", "--out", "only", [("suffix", "rows.xlsx")]),
    ("report", "", "only", [("missing", "no-such-sweep")]),
    ("report", "--where", "only", [("syntax", "layer = = 1")]),
    ("reproduce", "", "only", [("unknown", "nope")]),
    ("reproduce", "--executor", "name", []),
    ("reproduce", "--workers", "count", []),
    ("reproduce", "--only", "name", []),
    ("reproduce", "--set", "only", [("unknown", "bogus=1"), ("type", "seeds=abc")]),
]

# Positionals are named in messages by what they are.
POSITIONAL_NAMES = {
    "plot": ("table.parquet", "run"),
    "sweep": ("grid",),
    "results": ("not a directory", "no runs"),
    "report": ("not a directory", "no runs"),
    "reproduce": ("preset",),
}
MAY_WORK = {  # values that look hostile but mean something: the command may succeed
    "theory---seed-huge",  # numpy's SeedSequence takes any integer >= 0
    "measure---layers-empty",  # all layers
    "measure---model-empty",  # the default model of the data
    "train---checkpoints-zero",  # only the initial and the final checkpoint
    "sweep---only-empty",  # no sub-grid named: the whole grid
    "reproduce---only-empty",  # every figure
}

# Cases that break the promise today (case id -> what happens); each is a strict xfail.
KNOWN: dict[str, str] = {}


def _cases() -> list[Any]:
    out = []
    for command, option, kind, extra in OPTIONS:
        for label, value in [*BAD[kind], *extra]:
            case_id = f"{command}-{option or 'ARG'}-{label}"
            out.append(
                pytest.param(
                    command, option, value, case_id, id=case_id, marks=xfail_if(KNOWN, case_id)
                )
            )
    return out


def _files(root: Path) -> None:
    """What a valid command line reads, and one old table --out could clobber."""
    (root / "grid.yaml").write_text(GRID)
    (root / "list.yaml").write_text("- train: {}\n- train: {}\n")
    fake_sweep(root / "sweep")


@pytest.mark.parametrize(("command", "option", "value", "case_id"), _cases())
def test_a_hostile_option_exits_2_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
    option: str,
    value: str,
    case_id: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    _files(tmp_path)
    before = snapshot(tmp_path)
    base = COMMANDS[command]
    args = [value if a.startswith("{") and not option else a.strip("{}") for a in base]
    args += [option, value] if option else []
    bare = option.lstrip("-")
    key = value.partition("=")[0] if option in ("--model-option", "--dataset-option") else bare
    names = (bare, bare.replace("-", "_"), key) if option else POSITIONAL_NAMES[command]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    if case_id in MAY_WORK and code == 0:
        return
    assert_cli_refuses(code, err, names)
    assert snapshot(tmp_path) == before, "a refused command changed files"
