"""Training: checkpoints, measurement at checkpoints, resumption after SIGKILL, divergence."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from diffeoprobe import runs
from diffeoprobe.config import MeasureConfig, TrainConfig
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.training import TrainingDiverged, checkpoint_steps, train

train_module = importlib.import_module("diffeoprobe.training")
TASK = {"d": 32, "xi": 8, "train_size": 256, "test_size": 128}
NET = {"depth": 4, "width": 16}


def small_config(**changes: object) -> TrainConfig:
    values = dict(
        model="simplecnn1d",
        model_options=NET,
        dataset="scale-detection",
        dataset_options=TASK,
        epochs=4,
        batch_size=16,
        optimizer="adam",
        lr=0.01,
        weight_decay=0.0,
        loss="hinge",
        checkpoints=4,
        measure=True,
        seed=0,
    )
    values.update(changes)
    return TrainConfig(**values)


MEASURE = MeasureConfig(probe_size=64)


def test_checkpoint_steps_are_log_spaced_with_init_and_end() -> None:
    assert checkpoint_steps(1000, 4) == [0, 1, 10, 100, 1000]
    assert checkpoint_steps(7, 0) == [0, 7]
    assert checkpoint_steps(5, 10) == [0, 1, 2, 3, 4, 5]


def test_training_learns_and_writes_a_tidy_table_per_checkpoint(tmp_path: Path) -> None:
    summary = train(small_config(epochs=20), tmp_path / "run", measure=MEASURE)
    assert summary.train_error < 0.2  # chance is 0.5
    table = summary.table
    assert sorted(table["step"].unique()) == summary.checkpoints
    assert summary.checkpoints[0] == 0 and summary.checkpoints[-1] == summary.steps
    first = table[table["step"] == 0]
    assert list(first["layer"])[0] == "input" and list(first["layer"])[-1] == "output"
    assert {
        "model",
        "dataset",
        "seed",
        "step",
        "epoch",
        "train_error",
        "test_error",
        "D",
        "G",
        "R",
    } <= set(table)
    meta = runs.read_json(tmp_path / "run" / "checkpoints" / f"step_{summary.steps:08d}.json")
    assert meta["config"]["model"] == "simplecnn1d" and "torch" in meta["versions"]
    # a finished run is not redone
    again = train(small_config(epochs=20), tmp_path / "run", measure=MEASURE)
    pd.testing.assert_frame_equal(again.table, table)


def test_in_memory_training_is_reproducible(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two in-memory trainings with one seed end with the same weights, bit for bit (on CPU).

    ``train(config)`` without a directory keeps no checkpoint, so the test keeps a reference to
    each model ``train`` builds (its model factory wrapped) and compares the trained weights."""
    built: list[torch.nn.Module] = []
    build = train_module._build_model

    def keep(*args: object, **kwargs: object) -> torch.nn.Module:
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_module, "_build_model", keep)
    config = small_config(measure=False, epochs=2, device="cpu")
    one, two = train(config), train(config)
    assert len(built) == 2 and built[0] is not built[1]
    assert (one.train_error, one.test_error) == (two.train_error, two.test_error)
    first, second = built[0].state_dict(), built[1].state_dict()
    assert list(first) == list(second) and first
    for name, tensor in first.items():
        assert tensor.device.type == "cpu"
        assert torch.equal(tensor, second[name]), f"{name} differs between the two trainings"
    # the weights did train: they moved away from a fresh model's of the same seed
    torch.manual_seed(config.seed)
    fresh = build(config, in_channels=1, num_classes=2, input_size=TASK["d"]).state_dict()
    assert any(not torch.equal(first[name], fresh[name]) for name in fresh)


def test_a_directory_holding_another_configuration_is_refused(tmp_path: Path) -> None:
    train(small_config(epochs=1, measure=False), tmp_path / "run")
    with pytest.raises(DiffeoProbeError, match="another configuration"):
        train(small_config(epochs=1, measure=False, lr=0.02), tmp_path / "run")


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    config = small_config(
        optimizer="sgd", lr=1e30, momentum=0.0, loss="cross-entropy", measure=False
    )
    with pytest.raises(TrainingDiverged, match="last good checkpoint is step"):
        train(config, tmp_path / "run")
    kept = runs.completed_checkpoints(tmp_path / "run")
    assert kept and kept[0] == 0
    assert not (tmp_path / "run" / "done.json").exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(epochs=0), "epochs"),
        (dict(lr=-1.0), "lr"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(loss="mse"), "loss"),
        (dict(model="nonet"), "available"),
        (dict(train_size=10**6), "train_size"),
    ],
)
def test_bad_configurations_are_refused(change: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(DiffeoProbeError, match=match):
        train(small_config(**change), tmp_path / "run")


def cli_train(out: Path, **changes: str) -> list[str]:
    args = {
        "--model": "simplecnn1d",
        "--dataset": "scale-detection",
        "--epochs": "12",
        "--batch-size": "8",
        "--optimizer": "adam",
        "--lr": "0.01",
        "--loss": "hinge",
        "--checkpoints": "12",
        "--probe-size": "32",
        "--seed": "1",
        **changes,
    }
    flat = [item for pair in args.items() for item in pair]
    options = ["-m", "depth=2", "-m", "width=8"] + [
        x for k, v in TASK.items() for x in ("--dataset-option", f"{k}={v}")
    ]
    return [
        sys.executable,
        "-m",
        "diffeoprobe",
        "train",
        *flat,
        *options,
        "--measure",
        "--out",
        str(out),
    ]


def test_a_resumed_run_deletes_files_half_written_by_a_killed_process(tmp_path: Path) -> None:
    config = small_config(epochs=1, checkpoints=2, measure=False)
    train(config, tmp_path)
    (tmp_path / "done.json").unlink()  # as if killed after its last checkpoint
    stale = tmp_path / "checkpoints" / ".step_00000016.safetensors.k1ll.tmp"
    stale.write_bytes(b"half a file")
    train(config, tmp_path)
    assert (tmp_path / "done.json").is_file() and not stale.exists()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_sigkill_then_restart_continues_and_gives_the_same_table(tmp_path: Path) -> None:
    reference = subprocess.run(cli_train(tmp_path / "reference"), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    victim = tmp_path / "killed"
    process = subprocess.Popen(
        cli_train(victim), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while len(runs.completed_checkpoints(victim)) < 5 and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = runs.completed_checkpoints(victim)
    assert 0 < len(done_before) and not (victim / "done.json").exists(), (
        "the run finished before it was killed"
    )
    resumed = subprocess.run(cli_train(victim), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {done_before[-1]}" in resumed.stdout
    pd.testing.assert_frame_equal(
        pd.read_parquet(victim / "table.parquet"),
        pd.read_parquet(tmp_path / "reference" / "table.parquet"),
        check_exact=True,
    )
    assert not list(victim.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("task", "diffeo"), [(1, "pixel-shift"), (2, "pixel_shift_in_blocks_of_8")]
)
def test_scale_detection_runs_are_measured_with_the_tasks_own_shift(
    tmp_path: Path, task: int, diffeo: str
) -> None:
    # Task 2's moves stay inside the blocks of side xi = 8, so that no label changes.
    options = {**TASK, "task": task, "train_size": 128, "test_size": 64}
    summary = train(
        small_config(epochs=1, checkpoints=0, dataset_options=options), tmp_path, measure=MEASURE
    )
    assert summary.table.attrs["diffeo"] == diffeo


@pytest.mark.parametrize(
    ("config", "measure", "match"),
    [
        (small_config(model_options={**NET, "bogus": 1}), MEASURE, "does not take .bogus."),
        (small_config(), MeasureConfig(probe_size=64, interp="bogus"), "interp"),
    ],
    ids=["model-option", "measurement"],
)
def test_a_run_that_fails_on_its_settings_leaves_the_directory_free(
    config: TrainConfig, measure: MeasureConfig, match: str, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    with pytest.raises(DiffeoProbeError, match=match):
        train(config, run, measure=measure)
    assert not (run / "config.json").exists()
    assert not runs.completed_checkpoints(run)
    # the corrected command is not refused as "another configuration"
    summary = train(small_config(epochs=1, checkpoints=1), run, measure=MEASURE)
    assert (run / "done.json").is_file() and summary.table is not None


HOLD_LOCK = """
import sys
from diffeoprobe.runs import LOCK_NAME, RunLock
lock = RunLock(sys.argv[1] + "/" + LOCK_NAME)
assert lock.acquire()
lock.mark_owner()
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_directory_another_process_is_training_in_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    in_flight = run / "checkpoints" / ".step_00000000.safetensors.a1b2c3d4.tmp"
    in_flight.parent.mkdir()
    in_flight.write_bytes(b"being written by the other process")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = small_config(epochs=1, checkpoints=1, measure=False)
        with pytest.raises(DiffeoProbeError, match="another process") as refused:
            train(config, run)
        assert str(run) in str(refused.value) and f" {holder.pid})" in str(refused.value)
        assert in_flight.is_file()  # the other process's temporary file is left alone
        assert not (run / "config.json").exists()
    finally:
        holder.communicate("\n", timeout=60)
    in_flight.unlink()
    assert train(config, run).checkpoints  # free again once the other process is done


def test_train_under_a_lock_this_thread_holds_reuses_it(tmp_path: Path) -> None:
    import threading

    from diffeoprobe.runs import LOCK_NAME, RunLock

    run = tmp_path / "run"
    config = small_config(epochs=1, checkpoints=1, measure=False)
    with RunLock(run / LOCK_NAME) as lock:
        assert lock.acquire()
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                train(config, run)
            except BaseException as exc:  # noqa: BLE001 - inspected below
                errors.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert len(errors) == 1 and "another process" in str(errors[0])
        assert train(config, run).checkpoints  # as a sweep calls it: the lock is not taken twice
        assert lock.held_here()
    assert not lock.held_here() and not RunLock(run / LOCK_NAME).held_elsewhere()
