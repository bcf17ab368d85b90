"""Bad input gets one line naming the parameter, before any work (issue 14).

At the command line: ``error: ...`` on stderr, exit code 2, no traceback; from the API: a
DiffeoProbeError. No file is changed or left unusable. Each test failed before its fix.
"""

from __future__ import annotations

import errno
import json
import pickle
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

import diffeoprobe as dp
from diffeoprobe import atomic, runs
from diffeoprobe.cli import main
from diffeoprobe.config import TrainConfig
from diffeoprobe.errors import DiffeoProbeError, DiffeoProbeWarning
from diffeoprobe.sweep import RUNS_DIR, expand_grid, run_sweep
from diffeoprobe.sweep import results as store

SMALL_1D = ["-d", "d=32", "-d", "xi=8", "-d", "train_size=16", "-d", "test_size=16"]  # 1D, small
UNWRITABLE = "/proc/diffeoprobe-hostile"  # not even root can create files under /proc


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``diffeoprobe ARGS`` through the console entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["diffeoprobe", *args])
    with warnings.catch_warnings():
        warnings.simplefilter("always", DiffeoProbeWarning)  # the suite makes warnings errors
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str) -> str:
    """The single ``error:`` line of a refused command (exit code 2, no traceback)."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def small_train(**fields: object) -> TrainConfig:
    base: dict[str, object] = dict(
        model="simplecnn1d",
        model_options={"depth": 2, "width": 4},
        dataset="scale-detection",
        dataset_options={"d": 32, "xi": 8, "train_size": 32, "test_size": 16},
        epochs=1,
        batch_size=16,
        checkpoints=0,
    )
    return TrainConfig(**{**base, **fields})  # type: ignore[arg-type]


# ---- 1. a model that does not fit the data -------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("simplecnn", "(2, 1, 32)"),  # a 2D CNN on 1D signals: torch.fx's traceback before
        ("lenet", "(2, 1, 32)"),
        ("torch.nn:Linear", "in_channels"),  # a factory of another signature: a TypeError before
    ],
)
def test_measure_a_model_that_does_not_fit_the_data_is_one_line(
    monkeypatch, capsys, model, needle
) -> None:
    code, _, err = cli(
        monkeypatch, capsys, "measure", "--model", model, "--dataset", "scale-detection",
        *SMALL_1D, "--probe-size", "8",
    )  # fmt: skip
    line = one_line_error(code, err)
    assert model in line and needle in line


def test_measure_api_names_the_shape_that_does_not_fit() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten())
    with pytest.raises(DiffeoProbeError, match=r"does not fit the data.*\(2, 3, 8, 8\)") as err:
        dp.measure(net, torch.rand(4, 3, 8, 8))
    assert "\n" not in str(err.value)


def test_train_a_model_that_does_not_fit_the_data_is_one_line_and_leaves_no_config(
    tmp_path,
) -> None:
    with pytest.raises(DiffeoProbeError, match=r"model 'simplecnn' does not fit the data"):
        dp.train(small_train(model="simplecnn", model_options={}), tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()


def test_train_together_checks_the_model_on_a_probe_batch(tmp_path) -> None:
    from diffeoprobe.ensemble import train_together

    configs = [small_train(model="lenet", model_options={}, seed=s) for s in (0, 1)]
    with pytest.raises(DiffeoProbeError, match=r"model 'lenet' does not fit the data"):
        train_together(configs, [tmp_path / "a", tmp_path / "b"])


def test_the_probe_batch_changes_neither_the_model_nor_the_random_state() -> None:
    from diffeoprobe.measurement import check_model_fits

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(4))
    net.train()
    net[1].eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(5, 4)
    rng = torch.get_rng_state()
    check_model_fits(net, x)
    assert torch.equal(rng, torch.get_rng_state())
    assert net.training and not net[1].training and net[2].training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


# ---- 2. --out in every command ---------------------------------------------------------------------


def test_measure_out_a_directory_says_so_before_any_work(monkeypatch, capsys, tmp_path) -> None:
    from diffeoprobe.cli import measuring

    folder = tmp_path / "results.parquet"  # even with a table's suffix
    folder.mkdir()
    monkeypatch.setattr(measuring, "load_probe", lambda *a: pytest.fail("work started"))
    code, _, err = cli(monkeypatch, capsys, "measure", "--out", str(folder))
    line = one_line_error(code, err)
    assert "is a directory" in line and "does not exist" not in line


@pytest.mark.parametrize(
    "command",
    [
        ["theory", "--depth", "3"],
        ["deform"],
        ["results", "SWEEP"],
    ],
)
def test_out_a_directory_where_a_file_is_expected(monkeypatch, capsys, tmp_path, command) -> None:
    folder = tmp_path / "here"
    folder.mkdir()
    args = [str(tmp_path) if a == "SWEEP" else a for a in command]
    code, _, err = cli(monkeypatch, capsys, *args, "--out", str(folder))
    assert "is a directory, where a file is expected" in one_line_error(code, err)


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--dataset", "scale-detection", "--model", "simplecnn1d"],
        ["plot", "RUN"],
        ["sweep", "GRID"],
        ["report", "SWEEP"],
        ["reproduce", "tiny"],
    ],
)
def test_out_a_file_where_a_directory_is_expected(monkeypatch, capsys, tmp_path, command) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("train: {model: simplecnn1d, dataset: scale-detection}\n")
    target = tmp_path / "a-file"
    target.write_text("keep me")
    subs = {"RUN": str(tmp_path), "GRID": str(grid), "SWEEP": str(tmp_path)}
    code, _, err = cli(
        monkeypatch, capsys, *(subs.get(a, a) for a in command), "--out", str(target)
    )
    line = one_line_error(code, err)
    assert "is an existing file, where a directory is expected" in line
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    "command",
    [
        ["measure", "--out", f"{UNWRITABLE}/t.parquet"],
        ["theory", "--out", f"{UNWRITABLE}/t.csv"],
        ["train", "--model", "simplecnn1d", "--out", f"{UNWRITABLE}/run"],
        ["sweep", "GRID", "--out", f"{UNWRITABLE}/sweep"],
    ],
)
def test_out_in_an_unwritable_place_is_refused_before_the_work(
    monkeypatch, capsys, tmp_path, command
) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("train: {model: simplecnn1d, dataset: scale-detection}\n")
    args = [str(grid) if a == "GRID" else a for a in command]
    code, _, err = cli(monkeypatch, capsys, *args)
    assert "cannot write in '/proc'" in one_line_error(code, err)


def test_out_under_a_file_names_the_file(monkeypatch, capsys, tmp_path) -> None:
    (tmp_path / "f").write_text("")
    code, _, err = cli(monkeypatch, capsys, "theory", "--out", str(tmp_path / "f" / "t.csv"))
    assert f"'{tmp_path / 'f'}' is a file, not a directory" in one_line_error(code, err)


def test_a_failed_write_keeps_the_result_and_says_where(monkeypatch, capsys, tmp_path) -> None:
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_write_bytes", full)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR read again
    code, _, err = cli(
        monkeypatch, capsys, "theory", "--depth", "3", "--out", str(tmp_path / "t.csv")
    )
    line = one_line_error(code, err)
    assert "No space left on device" in line
    kept = list((tmp_path / "tmp").glob("diffeoprobe-t-*.csv"))
    assert len(kept) == 1 and str(kept[0]) in line
    assert len(pd.read_csv(kept[0])) > 0 and not (tmp_path / "t.csv").exists()


def test_train_api_refuses_an_unwritable_out() -> None:
    with pytest.raises(DiffeoProbeError, match="out '/proc/.*': cannot write in '/proc'"):
        dp.train(small_train(), f"{UNWRITABLE}/run")


# ---- 3. one corrupt run does not break results, report and plot ---------------------------------


def _fake_run(root: Path, run: str, lr: float) -> Path:
    """A finished run directory as train() leaves it, with a small real table."""
    folder = root / RUNS_DIR / run
    folder.mkdir(parents=True)
    net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten())
    table = dp.measure(net, torch.rand(8, 1, 16, generator=torch.Generator().manual_seed(0)))
    table.attrs = {}
    for key, value in (("test_error", 0.1 + lr), ("step", 10), ("seed", 0), ("model", "m")):
        table.insert(0, key, value)
    runs.write_table(table, folder / "table.parquet")
    config = {"train": {"model": "m", "lr": lr, "seed": 0}, "measure": {"delta": 1.0}}
    runs.write_json(folder / "config.json", {"config": config})
    runs.write_json(folder / "run.json", {"grid": "g", "seconds": 1.0, "attempts": [{}]})
    runs.write_json(folder / "done.json", {"test_error": 0.1 + lr})
    return folder


def _truncate(folder: Path) -> None:
    data = (folder / "table.parquet").read_bytes()
    (folder / "table.parquet").write_bytes(data[: len(data) // 2])


def _list_config(folder: Path) -> None:
    (folder / "config.json").write_text("[1, 2]")


def _drop_column(folder: Path) -> None:
    table = runs.read_table(folder / "table.parquet")
    runs.write_table(table.drop(columns=["R"]), folder / "table.parquet")


@pytest.fixture(params=[_truncate, _list_config, _drop_column])
def sweep_with_a_corrupt_run(request, tmp_path) -> Path:
    for run, lr in (("good0", 0.1), ("good1", 0.2)):
        _fake_run(tmp_path, run, lr)
    request.param(_fake_run(tmp_path, "broken", 0.3))
    return tmp_path


def test_results_skip_a_corrupt_run_with_a_warning(sweep_with_a_corrupt_run) -> None:
    with pytest.warns(DiffeoProbeWarning, match="skipped run broken: "):
        table = store.query(sweep_with_a_corrupt_run)
    assert set(table["run"]) == {"good0", "good1"}


def test_results_and_report_commands_warn_once_per_skipped_run(
    monkeypatch, capsys, sweep_with_a_corrupt_run
) -> None:
    out = sweep_with_a_corrupt_run
    code, stdout, err = cli(monkeypatch, capsys, "results", str(out), "--out", str(out / "r.csv"))
    assert code == 0, err
    assert err.strip().splitlines() == [err.strip().splitlines()[0]]
    assert err.startswith("warning: skipped run broken: ")
    assert set(pd.read_csv(out / "r.csv")["run"]) == {"good0", "good1"}
    code, _, err = cli(monkeypatch, capsys, "report", str(out))
    assert code == 0, err
    assert all(line.startswith("warning: skipped run broken: ") for line in err.splitlines())
    assert (out / "report" / "report.html").is_file()


def test_plot_skips_a_corrupt_run(monkeypatch, capsys, tmp_path) -> None:
    good = _fake_run(tmp_path, "good", 0.1)
    bad = _fake_run(tmp_path, "bad", 0.2)
    _truncate(bad)
    code, _, err = cli(
        monkeypatch, capsys, "plot", str(good), str(bad), "--out", str(tmp_path / "f")
    )
    assert code == 0, err
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith(f"warning: skipped run {bad}: table.parquet is not a readable")
    assert (tmp_path / "f" / "good-layers.png").is_file()


def test_no_usable_run_is_still_a_clear_error(monkeypatch, capsys, tmp_path) -> None:
    _list_config(_fake_run(tmp_path, "only", 0.1))
    code, _, err = cli(monkeypatch, capsys, "results", str(tmp_path))
    assert code == 2 and err.splitlines()[0].startswith("warning: skipped run only: ")
    assert err.splitlines()[1].startswith("error: ") and "none of its 1 run(s)" in err
    _drop_column(_fake_run(tmp_path / "p", "only", 0.1))
    code, _, err = cli(monkeypatch, capsys, "plot", str(tmp_path / "p" / RUNS_DIR / "only"))
    assert code == 2 and "lacks the column(s) R" in err and "none of the run directories" in err


# ---- 4. probe sets, devices and seeds ----------------------------------------------------------------


def test_measure_api_refuses_a_probe_set_of_one_image() -> None:
    net = torch.nn.Flatten()
    with pytest.raises(DiffeoProbeError, match="holds 1 image; measure needs at least 2"):
        dp.measure(net, torch.rand(1, 1, 8, 8))
    with pytest.raises(DiffeoProbeError, match="probe set is empty"):
        dp.measure(net, torch.utils.data.TensorDataset(torch.rand(0, 1, 8, 8)))
    loader = torch.utils.data.DataLoader(torch.rand(4, 1, 8, 8), batch_size=1)
    assert dp.measure(net, loader)["n"].iloc[0] == 4  # single images per batch still work


def test_measure_cli_refuses_a_data_set_of_one_image(monkeypatch, capsys) -> None:
    code, _, err = cli(monkeypatch, capsys, "measure", "-d", "test_size=1", "--probe-size", "2")
    assert "holds 1 image(s); measure needs at least 2" in one_line_error(code, err)


def test_deform_on_1d_data_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    out = tmp_path / "d.png"
    code, _, err = cli(
        monkeypatch, capsys, "deform", "--dataset", "scale-detection", *SMALL_1D, "--out", str(out)
    )
    assert "1D signals" in one_line_error(code, err) and not out.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["measure", "--device", "tpu"],
        ["train", "--model", "simplecnn1d", "--device", "tpu", "--out", "OUT"],
    ],
)
def test_an_unknown_device_is_one_line(monkeypatch, capsys, tmp_path, command) -> None:
    args = [str(tmp_path / "run") if a == "OUT" else a for a in command]
    code, _, err = cli(monkeypatch, capsys, *args)
    assert "must be cpu, cuda or cuda:N, got 'tpu'" in one_line_error(code, err)


@pytest.mark.parametrize(
    "command",
    [
        ["measure", "--probe-size", "4"],
        ["deform"],
        ["theory", "--depth", "3"],
        ["train", "--model", "simplecnn1d", "--out", "OUT"],
    ],
)
def test_a_seed_beyond_64_bits_is_one_line(monkeypatch, capsys, tmp_path, command) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    code, _, err = cli(monkeypatch, capsys, *args, "--seed", str(2**70))
    assert "seed must be an integer >= 0 and <= 18446744073709551615" in one_line_error(code, err)


def test_api_seed_beyond_64_bits_and_cuda_without_cuda(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    net = torch.nn.Flatten()
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(DiffeoProbeError, match="seed must be an integer"):
        dp.measure(net, x, seed=2**70)
    with pytest.raises(DiffeoProbeError, match="device 'cuda': CUDA is not available"):
        dp.measure(net, x, device="cuda")
    with pytest.raises(DiffeoProbeError, match="device must be cpu, cuda or cuda:N"):
        dp.measure(net, x, device="tpu")
    with pytest.raises(DiffeoProbeError, match="device 'cuda': CUDA is not available"):
        dp.train(small_train(device="cuda"), tmp_path / "run")
    with pytest.raises(DiffeoProbeError, match="seed must be an integer"):
        dp.train(small_train(seed=2**70))
    assert not (tmp_path / "run").exists()


# ---- 5. a sweep no run of which can start is refused once ---------------------------------------


GRID = {
    "train": {
        "model": "simplecnn1d",
        "dataset": "scale-detection",
        "dataset_options": {"d": 32, "xi": 8, "train_size": 32, "test_size": 16},
        "epochs": 1,
    },
    "axes": {"seed": [0, 1, 2]},
}


def test_a_sweep_of_cuda_runs_without_cuda_is_refused_before_it_starts(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    specs = expand_grid({**GRID, "train": {**GRID["train"], "device": "cuda"}})
    with pytest.raises(DiffeoProbeError, match="device: 3 of the 3 runs to do ask for 'cuda'"):
        run_sweep(specs, tmp_path / "sweep", executor="serial")
    assert not (tmp_path / "sweep").exists()


def test_a_sweep_on_absent_data_files_is_refused_before_it_starts(
    monkeypatch, capsys, tmp_path
) -> None:
    import yaml

    train = {**GRID["train"], "dataset": "mnist", "data_dir": str(tmp_path / "none")}
    train.pop("dataset_options")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({**GRID, "train": train}))
    code, _, err = cli(monkeypatch, capsys, "sweep", str(grid), "--out", str(tmp_path / "s"))
    line = one_line_error(code, err)
    assert "dataset 'mnist'" in line and "3 of the 3 runs" in line
    assert "-d download=true" in line and not (tmp_path / "s" / RUNS_DIR).exists()


# ---- 6. clear messages ------------------------------------------------------------------------------


def test_missing_data_files_name_the_real_command_line_option(tmp_path) -> None:
    with pytest.raises(DiffeoProbeError) as err:
        dp.data.build("mnist", data_dir=tmp_path)
    assert "-d download=true" in str(err.value) and "--download" not in str(err.value)


def test_yaml_errors_are_one_line(monkeypatch, capsys, tmp_path) -> None:
    grid = tmp_path / "bad.yaml"
    grid.write_text("train:\n  model: [simplecnn\n  lr: 1\n")
    code, _, err = cli(monkeypatch, capsys, "sweep", str(grid), "--out", str(tmp_path / "s"))
    assert "(line 3, column 5)" in one_line_error(code, err)
    code, _, err = cli(monkeypatch, capsys, "measure", "-m", "depth=[1")
    assert "not valid YAML" in one_line_error(code, err)


def test_a_foreign_checkpoint_is_one_line_without_unsafe_advice(
    monkeypatch, capsys, tmp_path
) -> None:
    pickled = tmp_path / "foreign.pt"
    pickled.write_bytes(pickle.dumps(object()))
    code, _, err = cli(monkeypatch, capsys, "measure", "--checkpoint", str(pickled))
    line = one_line_error(code, err)
    assert "could not be read" in line and "weights_only" not in line
    torch.save({"a": 1}, tmp_path / "numbers.pt")
    code, _, err = cli(monkeypatch, capsys, "measure", "--checkpoint", str(tmp_path / "numbers.pt"))
    assert "does not hold a state dict" in one_line_error(code, err)
    with pytest.raises(DiffeoProbeError) as exc:
        runs.load_training_state(pickled)
    assert "weights_only" not in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--dataset", "fashionmnist", "-d", "download=maybe"], "download"),
        (["-m", "batch_norm=maybe"], "batch_norm"),
    ],
)
def test_boolean_options_refuse_other_values(monkeypatch, capsys, option, needle) -> None:
    code, _, err = cli(monkeypatch, capsys, "measure", *option)
    assert f"{needle}: " in (line := one_line_error(code, err))
    assert "takes true or false, got 'maybe'" in line


def test_boolean_options_in_configs_and_set(tmp_path) -> None:
    from diffeoprobe.config import check_options
    from diffeoprobe.experiments.overrides import apply_overrides
    from diffeoprobe.experiments.presets import get_preset

    with pytest.raises(DiffeoProbeError, match="dataset_options.download: .*true or false"):
        check_options(TrainConfig(dataset="mnist", dataset_options={"download": "no"}))
    preset = get_preset("tiny")
    with pytest.raises(DiffeoProbeError, match=r"--set .*download.*true or false, got 'maybe'"):
        apply_overrides(preset, {"zoo_dataset": "cifar10", "zoo_dataset_options": "download=maybe"})
    assert json.dumps(apply_overrides(preset, {"zoo_dataset_options": "d=12"}).zoo_dataset_options)


def test_an_empty_data_set_is_one_line(monkeypatch, capsys, tmp_path) -> None:
    from diffeoprobe.data import DATASETS

    def empty(*, split: str = "test", seed: int = 0) -> torch.utils.data.TensorDataset:
        return torch.utils.data.TensorDataset(torch.zeros(0, 1, 8), torch.zeros(0).long())

    monkeypatch.setitem(DATASETS._factories, "empty", empty)
    with pytest.raises(DiffeoProbeError, match="dataset 'empty': its train split is empty"):
        dp.train(small_train(dataset="empty", dataset_options={}), tmp_path / "run")
    code, _, err = cli(monkeypatch, capsys, "measure", "--dataset", "empty")
    assert "holds 0 image(s)" in one_line_error(code, err)
    code, _, err = cli(monkeypatch, capsys, "deform", "--dataset", "empty", "--out", "x.png")
    assert "the test split is empty" in one_line_error(code, err)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["measure", "--seed", "abc"], "Invalid value for '--seed'"),
        (["measure", "--nope"], "No such option: --nope"),
        (["sweep"], "Missing argument 'grid'"),
    ],
)
def test_usage_errors_are_one_line(monkeypatch, capsys, args, needle) -> None:
    code, _, err = cli(monkeypatch, capsys, *args)
    line = one_line_error(code, err)
    assert needle in line and line.endswith("--help)")
