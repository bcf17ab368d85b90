"""End-to-end CLI: in-process through main() and once as a real subprocess."""

from __future__ import annotations

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
        run_cli(
            monkeypatch,
            capsys,
            "measure",
            *SMALL,
            "--seed",
            "3",
            "--out",
            str(tmp_path / f"{name}.parquet"),
        )
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
    code, _, err = run_cli(monkeypatch, capsys, "measure", *SMALL, "--checkpoint", str(bad))
    assert code == 2
    assert "does not fit the model" in err and "block3" in err and "Traceback" not in err


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
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--cut", "-3"], "cu"),
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


def test_every_command_has_help_with_an_example(monkeypatch, capsys) -> None:
    for command in ("measure", "deform"):
        code, out, _ = run_cli(monkeypatch, capsys, command, "--help")
        assert code == 0 and "Example: diffeoprobe " + command in " ".join(out.split())


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
