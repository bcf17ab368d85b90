"""End-to-end CLI: in-process through main() and once as a real subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from diffeoprobe.cli import main
from diffeoprobe.models import build
from diffeoprobe.runs import save_weights


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["diffeoprobe", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    out, err = capsys.readouterr()
    return code, out, err


SMALL = [
    "--probe-size",
    "40",
    "-d",
    "d=32",
    "-d",
    "xi=8",
    "-d",
    "train_size=100",
    "-d",
    "test_size=60",
    "-m",
    "depth=2",
]


def test_measure_writes_parquet_and_csv_with_a_row_per_layer(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    for suffix in (".parquet", ".csv"):
        out = tmp_path / f"table{suffix}"
        code, stdout, _ = run_cli(monkeypatch, capsys, "measure", *SMALL, "--out", str(out))
        assert code == 0
        table = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
        assert table["layer"].iloc[0] == "input" and table["layer"].iloc[-1] == "output"
        assert (table["n"] == 40).all()
        assert "block1.conv" in stdout
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_measure_same_seed_same_table(monkeypatch, capsys, tmp_path: Path) -> None:
    for name in ("a", "b"):
        code, _, err = run_cli(
            monkeypatch,
            capsys,
            "measure",
            *SMALL,
            "--seed",
            "3",
            "--out",
            str(tmp_path / f"{name}.parquet"),
        )
        assert code == 0, err
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    )


def test_measure_loads_a_checkpoint_and_refuses_one_that_does_not_fit(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    good = tmp_path / "good.safetensors"
    save_weights(build("simplecnn1d", 1, 2, depth=2), good)
    code, _, _ = run_cli(monkeypatch, capsys, "measure", *SMALL, "--checkpoint", str(good))
    assert code == 0
    bad = tmp_path / "bad.safetensors"
    save_weights(build("simplecnn1d", 1, 2, depth=3), bad)
    code, _, err = run_cli(monkeypatch, capsys, "measure", *SMALL, "--weights", str(bad))
    assert code == 2
    assert "does not fit the model" in err and "block3" in err and "Traceback" not in err
    assert "unexpected keys" in err  # the mismatch names the keys


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "-1"], "--temperature"),
        (["--temperature", "nan"], "--temperature"),
        (["--temperature", "1e300"], "--temperature must be a finite number in [0, 1e+06]"),
        (["--delta", "1e300"], "delta must be in"),
        (["--cut", "0"], "--cut"),
        (["--probe-size", "0"], "--probe-size"),
        (["--layers", "nope"], "nope"),
        (["--model", "resnet9000"], "available"),
        (["--dataset", "imagenet"], "available"),
        (["--out", "table.xlsx"], "--out"),
        (["--dataset", "fashionmnist", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["-d", "xi"], "KEY=VALUE"),
    ],
)
def test_user_errors_exit_2_with_one_message_and_no_traceback(
    monkeypatch, capsys, args, message
) -> None:
    base = [] if "--dataset" in args else SMALL
    code, _, err = run_cli(monkeypatch, capsys, "measure", *base, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_measure_on_cuda_without_cuda_is_a_user_error(monkeypatch, capsys) -> None:
    """On a machine said to have no CUDA (``torch.cuda.is_available`` patched to False), so that
    the test means the same on a machine that has a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli(monkeypatch, capsys, "measure", *SMALL, "--device", "cuda:7")
    assert code == 2
    assert "--device 'cuda:7'" in err and "CUDA is not available" in err
    assert "Traceback" not in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_on_cuda_gives_the_layers_of_the_cpu_table(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    tables = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.parquet"
        code, _, err = run_cli(
            monkeypatch, capsys, "measure", *SMALL, "--device", device, "--out", str(out)
        )
        assert code == 0, err
        tables[device] = pd.read_parquet(out)
    assert list(tables["cuda"]["layer"]) == list(tables["cpu"]["layer"])
    assert (tables["cuda"]["n"] == 40).all() and tables["cuda"]["D"].notna().all()


def test_deform_writes_a_png(monkeypatch, capsys, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    code, _, _ = run_cli(
        monkeypatch,
        capsys,
        "deform",
        "--dataset",
        "scale-detection",
        "-d",
        "dim=2",
        "-d",
        "d=16",
        "-d",
        "xi=4",
        "--images",
        "2",
        "--temperatures",
        "3",
        "--out",
        str(out),
    )
    assert code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def command_paths() -> list[tuple[str, ...]]:
    """Every command of the ``diffeoprobe`` app, as the words that call it (``("measure",)``, or
    ``("group", "command")`` inside a group): the Click tree Typer builds from the app's
    registered commands and groups, so a command added later is found without naming it here."""
    import typer.main

    from diffeoprobe.cli import app

    root = typer.main.get_command(app)  # Typer's own (vendored) Click: groups have .commands
    registered = len(app.registered_commands) + len(app.registered_groups)
    assert len(root.commands) == registered > 0  # the tree is the registered commands, all

    def walk(command: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        children = getattr(command, "commands", None)
        if children is None:
            return [path]
        return [p for name, sub in children.items() for p in walk(sub, (*path, name))]

    return walk(root, ())


def test_every_command_has_help_with_an_example(monkeypatch, capsys) -> None:
    paths = command_paths()
    assert {("measure",), ("deform",)} <= set(paths)
    missing = []
    for path in paths:
        code, out, err = run_cli(monkeypatch, capsys, *path, "--help")
        assert code == 0, (path, err)
        words = " ".join(out.split())
        if not re.search(rf"Examples?: diffeoprobe {re.escape(' '.join(path))}( |$)", words):
            missing.append(" ".join(path))
    assert not missing, f"--help without an 'Example: diffeoprobe ...' line: {missing}"


def test_real_subprocess_user_error_and_success(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "diffeoprobe", "measure", "--cut", "2.5"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    good = subprocess.run(
        [sys.executable, "-m", "diffeoprobe", "measure", *SMALL, "--out", str(tmp_path / "t.csv")],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "t.csv").is_file()


def test_measure_at_zero_temperature_says_why_r_is_nan(monkeypatch, capsys) -> None:
    code, out, _ = run_cli(
        monkeypatch, capsys, "measure", *SMALL, "--diffeo", "max-entropy", "--temperature", "0"
    )
    assert code == 0
    assert "nan" in out and "nan = 0/0" in out
