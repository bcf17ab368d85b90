"""Sweeps: grid files, run ids, locks, executors (real processes), failures, kills and resumption."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffeoprobe import runs
from diffeoprobe.cli import app, main
from diffeoprobe.config import MeasureConfig, TrainConfig
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.runs import LOCK_NAME, RunLock
from diffeoprobe.sweep import (
    expand_grid,
    is_complete,
    load_grid,
    plan,
    run_dir,
    run_id,
    run_sweep,
)
from diffeoprobe.sweep import results as store

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# a process that holds a run's lock the way RunLock does (flock, "host pid" inside), without
# importing torch: a second of start-up instead of several
HOLDER = """
import fcntl, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{socket.gethostname()} {os.getpid()}\\n".encode())
print("held", flush=True)
time.sleep(60)
"""

TINY = {
    "model": "simplecnn1d",
    "model_options": {"depth": 2, "width": 8},
    "dataset": "scale-detection",
    "dataset_options": {"d": 32, "xi": 8, "train_size": 128, "test_size": 64},
    "epochs": 2,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 0.01,
    "weight_decay": 0.0,
    "loss": "hinge",
    "checkpoints": 2,
    "measure": True,
}


def tiny_grid(seeds: int = 4, **axes: list) -> dict:
    """``seeds`` x lr in {0.01, 0.02} runs of about a second each."""
    return {
        "train": dict(TINY),
        "measure": {"probe_size": 32},
        "axes": {"seed": list(range(seeds)), "lr": [0.01, 0.02], **axes},
    }


def tables(out: Path) -> pd.DataFrame:
    """Every finished run's table with its run id (timings excluded), in a fixed order."""
    return store.query(out, view="tables").reset_index(drop=True)


def file_states(directory: Path) -> dict[str, tuple[int, str]]:
    """mtime and sha256 of every file under ``directory``."""
    return {
        str(p.relative_to(directory)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def assert_store_is_clean(out: Path, specs: list) -> None:
    """Each run once, finished, every file readable, no temporary file left behind."""
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(s.id for s in specs)
    for spec in specs:
        directory = run_dir(out, spec)
        assert (directory / "done.json").is_file()
        assert not list(directory.rglob("*.tmp"))
        for path in directory.rglob("*.json"):
            runs.read_json(path)
        for path in directory.rglob("*.parquet"):
            pd.read_parquet(path)
    table = tables(out)
    per_run = table.groupby("run")[["step", "layer"]].apply(lambda t: t.duplicated().sum())
    assert (per_run == 0).all()
    assert set(table["run"]) == {s.id for s in specs}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, pd.DataFrame]:
    """The 8-run tiny grid done serially in this process, one torch thread per run."""
    out = tmp_path_factory.mktemp("reference")
    specs = expand_grid(tiny_grid())
    result = run_sweep(specs, out, executor="serial", threads=1)
    assert result.ok and len(result.trained) == 8
    return specs, tables(out)


# ---- grid files -------------------------------------------------------------------------------


def test_grid_is_the_product_of_its_axes_with_the_fixed_values() -> None:
    specs = expand_grid(tiny_grid(seeds=3, **{"model_options.depth": [2, 3]}))
    assert len(specs) == 3 * 2 * 2 and len({s.id for s in specs}) == 12
    assert {(s.train.seed, s.train.lr, s.train.model_options["depth"]) for s in specs} == {
        (seed, lr, depth) for seed in range(3) for lr in (0.01, 0.02) for depth in (2, 3)
    }
    assert all(s.train.model_options["width"] == 8 and s.measure.probe_size == 32 for s in specs)
    assert specs[0].axes == {"seed": 0, "lr": 0.01, "model_options.depth": 2}


def test_sub_grids_inherit_override_and_are_united() -> None:
    grid = tiny_grid(seeds=2)
    grid["grids"] = {
        "adam": {},
        "sgd": {"train": {"optimizer": "sgd", "lr": 0.05}},  # a fixed lr replaces the lr axis
        "deep": {
            "axes": {"model_options.depth": [3]},
            "grids": {"tanh": {"train": {"model_options": {"activation": "tanh"}}}},
        },
    }
    specs = expand_grid(grid)
    by_grid = {name: [s for s in specs if s.grid == name] for name in ("adam", "sgd", "deep/tanh")}
    assert [len(v) for v in by_grid.values()] == [4, 2, 4]
    assert {s.train.lr for s in by_grid["sgd"]} == {0.05}
    assert all(
        s.train.model_options == {"depth": 3, "width": 8, "activation": "tanh"}
        for s in by_grid["deep/tanh"]
    )
    assert [s.grid for s in expand_grid(grid, only=["deep"])] == ["deep/tanh"] * 4
    with pytest.raises(DiffeoProbeError, match="no sub-grid 'sdg'; did you mean 'sgd'"):
        expand_grid(grid, only=["sdg"])


def test_the_same_configuration_twice_is_one_run() -> None:
    grid = tiny_grid(seeds=1)
    grid["grids"] = {"a": {}, "b": {"axes": {"lr": [0.02, 0.03]}}}
    assert [s.train.lr for s in expand_grid(grid)] == [0.01, 0.02, 0.03]


def test_run_id_is_a_hash_of_the_canonical_config() -> None:
    config = TrainConfig(**TINY)
    same = TrainConfig(
        **{**TINY, "lr": 0.01, "dataset_options": dict(reversed(TINY["dataset_options"].items()))}
    )
    assert run_id(config, MeasureConfig()) == run_id(same, MeasureConfig())
    assert run_id(TrainConfig(epochs=2, alpha=1), MeasureConfig()) == run_id(
        TrainConfig(epochs=2, alpha=1.0), MeasureConfig()
    )
    others = [
        TrainConfig(**{**TINY, "seed": 1}),
        TrainConfig(**{**TINY, "model_options": {"depth": 3, "width": 8}}),
    ]
    ids = {run_id(c, MeasureConfig()) for c in [config, *others]}
    ids.add(run_id(config, MeasureConfig(probe_size=33)))
    assert len(ids) == 4 and all(len(i) == 16 for i in ids)


BAD_GRIDS = [
    ({"train": {"modle": "vgg11"}}, r"grid: train.modle: unknown setting; did you mean 'model'\?"),
    ({"trian": {}}, r"grid: trian: unknown key; did you mean 'train'\?"),
    ({"model": "vgg11"}, r"grid: model: unknown key; settings go under 'train:'"),
    (
        {"axes": {"delta": [1.0]}},
        r"grid: axes.delta: unknown setting; did you mean 'measure.delta'\?",
    ),
    (
        {"axes": {"measure.probe_sise": [8]}},
        r"axes.measure.probe_sise: unknown setting; did you mean 'measure.probe_size'\?",
    ),
    (
        {"grids": {"zoo": {"axes": {"model": ["vgg11", "vgg12"]}}}},
        r"grid: grids.zoo.axes.model\[1\]: unknown model 'vgg12' \(did you mean 'vgg11'\?\)",
    ),
    (
        {"train": {"dataset": "cifar"}},
        r"train.dataset: unknown dataset 'cifar' \(did you mean 'cifar10'\?\)",
    ),
    ({"train": {"lr": -0.1}}, r"train.lr: lr must be a finite number > 0, got -0.1"),
    ({"train": {"epochs": 2.5}}, r"train.epochs: expected an integer, got 2.5"),
    ({"train": {"optimizer": "adamw"}}, r"train.optimizer: optimizer must be one of 'sgd', 'adam'"),
    ({"measure": {"interp": "cubic"}}, r"measure.interp: interp must be one of"),
    ({"axes": {"seed": 3}}, r"axes.seed: an axis takes a non-empty list of values"),
    ({"axes": {"seed": [0], "train.seed": [1]}}, r"axes.train.seed: the same setting as axes.seed"),
    ({"train": {"lr.x": 1}}, r"train.lr.x: 'lr' is not a mapping"),
    (
        {"train": {**TINY, "model_options": {"dept": 2}}},
        r"model_options.dept: model 'simplecnn1d' does not take 'dept'; did you mean 'depth'\?",
    ),
    (
        {"train": {**TINY, "dataset_options": {"xii": 2}}},
        r"dataset_options.xii: dataset 'scale-detection' does not take 'xii'; did you mean 'xi'\?",
    ),
    ({"grids": {"bad name": {}}}, r"grids.bad name: a sub-grid name uses"),
    ([1, 2], r"a grid file is a mapping"),
]


@pytest.mark.parametrize(("grid", "message"), BAD_GRIDS)
def test_grid_errors_name_the_key_path_and_the_closest_valid_name(
    grid: object, message: str
) -> None:
    with pytest.raises(DiffeoProbeError, match=message):
        expand_grid(grid)


def test_grid_files_are_yaml_with_floats_in_exponent_form(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5.0e-4\naxes:\n  seed: [0, 1]\n")
    specs = load_grid(path)
    assert [s.train.lr for s in specs] == [1e-3, 1e-3] and specs[0].train.weight_decay == 5e-4
    path.write_text("train: [unclosed\n")
    with pytest.raises(DiffeoProbeError, match="not valid YAML"):
        load_grid(path)
    with pytest.raises(DiffeoProbeError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")


def test_the_example_grids_are_valid() -> None:
    quick = load_grid(EXAMPLES / "sweep-quick.yaml")
    assert len(quick) == 8 and all(s.train.dataset == "scale-detection" for s in quick)
    paper = load_grid(EXAMPLES / "sweep-paper.yaml")
    names = {s.grid for s in paper}
    assert {
        "cifar10-noise/cnn",
        "cifar10-noise/fc",
        "scale-detection-2d",
        "scale-detection-1d",
    } <= names
    noisy = [s for s in paper if s.grid == "cifar10-noise/cnn"]
    assert len(noisy) == 10 * 7 * 5  # zoo x noise levels x seeds (docs/science.md sections 8-9)
    assert {s.train.dataset_options["noise_norm"] for s in noisy} == {0, 0.01, 0.1, 1, 10, 30, 100}


# ---- locks ------------------------------------------------------------------------------------


def test_a_run_lock_is_exclusive_and_dies_with_its_process(tmp_path: Path) -> None:
    path = tmp_path / "run" / LOCK_NAME
    path.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = RunLock(path)
        assert lock.held_elsewhere() and not lock.acquire()
        assert lock.owner().endswith(f" {holder.pid}")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert lock.acquire(wait=True)  # the kernel released it with the process
        lock.release()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# ---- sweeps -----------------------------------------------------------------------------------


def test_a_second_sweep_skips_finished_runs_without_touching_them(tmp_path: Path) -> None:
    specs = expand_grid(tiny_grid(seeds=1))
    first = run_sweep(specs, tmp_path, executor="serial")
    assert sorted(first.trained) == sorted(s.id for s in specs)
    before = file_states(tmp_path / "runs")
    second = run_sweep(specs, tmp_path, executor="serial")
    assert second.trained == [] and sorted(second.skipped) == sorted(first.trained)
    assert file_states(tmp_path / "runs") == before
    record = runs.read_json(run_dir(tmp_path, specs[0]) / "run.json")
    assert record["status"] == "done" and len(record["attempts"]) == 1
    assert record["axes"] == {"seed": 0, "lr": 0.01} and record["config"]["train"]["lr"] == 0.01
    assert {"torch", "diffeoprobe"} <= set(record["versions"]) and record["seconds"] > 0
    assert "done in" in (run_dir(tmp_path, specs[0]) / "log.txt").read_text()


def test_a_failing_run_is_recorded_with_its_traceback_and_retried(tmp_path: Path) -> None:
    grid = tiny_grid(seeds=1)
    grid["axes"]["model_options.depth"] = [2, 0]  # depth 0 passes the grid, fails in the model
    specs = expand_grid(grid)
    bad = [s for s in specs if s.train.model_options["depth"] == 0]
    result = run_sweep(specs, tmp_path, executor="serial", retries=1)
    assert sorted(result.failed) == sorted(s.id for s in bad)
    assert len(result.trained) == 2
    for spec in bad:
        error = runs.read_json(run_dir(tmp_path, spec) / "error.json")
        assert error["type"] == "DiffeoProbeError" and "depth" in error["message"]
        assert "Traceback" in error["traceback"] and error["attempt"] == 2
        assert len(runs.read_json(run_dir(tmp_path, spec) / "run.json")["attempts"]) == 2
    assert {r["status"] for r in plan(specs, tmp_path)} == {"done", "failed"}


def test_stale_temporary_files_are_removed_when_a_run_is_taken(tmp_path: Path) -> None:
    spec = expand_grid(tiny_grid(seeds=1))[0]
    stale = run_dir(tmp_path, spec) / "checkpoints" / ".step_00000001.json.x1y2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"partial')
    assert run_sweep([spec], tmp_path, executor="serial").ok
    assert not stale.exists()


@pytest.fixture
def dask_cluster() -> str:
    """The address of a 2-worker ``distributed.LocalCluster`` on loopback, started apart from the
    sweep (as a cluster on other machines would be)."""
    pytest.importorskip("distributed")
    import dask
    from distributed import LocalCluster

    with (
        dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
    ):
        yield cluster.scheduler_address


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask --scheduler"])
def test_executors_give_the_same_tables_as_a_serial_run(
    executor: str, reference, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    specs, expected = reference
    if executor == "local":
        result = run_sweep(specs, tmp_path, executor="local", workers=2, threads=1)
    else:
        address = request.getfixturevalue("dask_cluster")
        result = run_sweep(specs, tmp_path, executor="dask", scheduler=address, threads=1)
    assert result.ok and sorted(result.trained) == sorted(s.id for s in specs)
    pd.testing.assert_frame_equal(tables(tmp_path), expected, check_exact=True)
    assert_store_is_clean(tmp_path, specs)
    pids = {
        a["pid"]
        for s in specs
        for a in runs.read_json(run_dir(tmp_path, s) / "run.json")["attempts"]
    }
    assert len(pids) == 2 and os.getpid() not in pids  # both workers trained, not this process


def _kill_when_training(out: Path, victim: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the process that holds ``victim``'s lock once it has written a checkpoint."""
    directory = out / "runs" / victim
    while not stop.is_set():
        lock = RunLock(directory / LOCK_NAME)
        if runs.completed_checkpoints(directory) and lock.held_elsewhere():
            owner = lock.owner().split()
            if owner:
                os.kill(int(owner[-1]), signal.SIGKILL)
                killed.append(int(owner[-1]))
                return
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "dask"])
def test_sigkill_of_a_worker_loses_nothing(executor: str, reference, tmp_path: Path) -> None:
    specs, expected = reference
    if executor == "dask":
        pytest.importorskip("distributed")
    victim = specs[2].id
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_training, args=(tmp_path, victim, killed, stop))
    killer.start()
    try:
        result = run_sweep(specs, tmp_path, executor=executor, workers=2, threads=1)
    finally:
        stop.set()
        killer.join()
    assert killed, "the victim run was never caught training"
    assert result.ok and sorted(result.trained) == sorted(s.id for s in specs)
    attempts = runs.read_json(run_dir(tmp_path, victim) / "run.json")["attempts"]
    assert len(attempts) >= 2 and attempts[0]["pid"] == killed[0]
    assert attempts[-1]["resumed_from"] is not None  # continued from its checkpoint
    assert_store_is_clean(tmp_path, specs)
    pd.testing.assert_frame_equal(tables(tmp_path), expected, check_exact=True)


def worker_killer(in_channels: int, num_classes: int, sweep: str = "", **options: object) -> None:
    """A model factory that SIGKILLs its process: a run that takes its worker down every time.

    With ``sweep`` (the sweep directory) it first waits, up to 10 s, until another run of the
    sweep is training (its lock held by the other worker), so that the pool breaks under a
    neighbour: waiting a fixed time raced with how fast the neighbours finish."""
    deadline = time.monotonic() + 10
    while sweep and time.monotonic() < deadline:
        others = [RunLock(p) for p in Path(sweep, "runs").glob("*/.lock")]
        if any(not lock.held_here() and lock.held_elsewhere() for lock in others):
            break
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_run_that_kills_its_worker_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diffeoprobe.sweep.driver as driver

    monkeypatch.setattr(driver, "MAX_LOST", 1)  # one death fails a run: a wrong charge would show
    grid = tiny_grid(seeds=2)
    grid["train"]["epochs"] = 100  # about a second each: the killer dies while one of these trains
    killer = {
        "train": {
            "model": f"{__name__}:worker_killer",
            "model_options": {"sweep": str(tmp_path)},
            "lr": 0.01,
        },
        "axes": {"seed": [0]},
    }
    grid["grids"] = {"killer": killer, "fine": {}}  # the killer first: it breaks the pool at once
    specs = expand_grid(grid)
    bad = next(s for s in specs if s.grid == "killer")
    fine = [s for s in specs if s is not bad]
    result = run_sweep(specs, tmp_path, executor="local", workers=2, threads=1)
    assert list(result.failed) == [bad.id] and "died (1 of 1 deaths" in result.failed[bad.id]
    assert runs.read_json(run_dir(tmp_path, bad) / "error.json")["type"] == "WorkerDied"
    assert sorted(result.trained) == sorted(s.id for s in fine)
    attempts = [len(runs.read_json(run_dir(tmp_path, s) / "run.json")["attempts"]) for s in fine]
    assert 2 in attempts  # the run beside the killer was stopped with it, then finished


def _write_grid(tmp_path: Path, grid: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _sweep_process(grid: Path, out: Path, *extra: str, **kwargs) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "diffeoprobe",
        "sweep",
        str(grid),
        "--out",
        str(out),
        "--threads",
        "1",
        *extra,
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )


def _complete(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("runs/*") if is_complete(p))


def _processes_in_session(session: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _kill_session(sweep: subprocess.Popen) -> None:
    """SIGKILL whatever is left of a sweep started in its own session; close its output."""
    if sweep.poll() is None:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    sweep.stdout.close()


def _assert_session_gone(session: int) -> None:
    """Every process of the session (the driver and its workers) ends within 10 s."""
    deadline = time.monotonic() + 10
    while _processes_in_session(session) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes_in_session(session)


@pytest.mark.slow
def test_sigkill_of_the_whole_sweep_then_restart_finishes_it(reference, tmp_path: Path) -> None:
    specs, expected = reference
    grid = _write_grid(tmp_path, tiny_grid())
    out = tmp_path / "out"
    sweep = _sweep_process(grid, out, "--workers", "2", start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(_complete(out)) < 3:
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.stdout.read()
            time.sleep(0.01)
        os.killpg(sweep.pid, signal.SIGKILL)  # the driver and its workers, as a dying machine
        sweep.wait(timeout=30)
    finally:
        _kill_session(sweep)
    _assert_session_gone(sweep.pid)
    finished = _complete(out)  # a run killed between done.json and run.json is completed later
    assert 3 <= len(finished) < len(specs)
    before = {run: file_states(out / "runs" / run) for run in finished}

    restarted = run_sweep(load_grid(grid), out, workers=2, threads=1)
    assert restarted.ok and sorted(restarted.skipped) == finished
    assert sorted(restarted.trained) == sorted({s.id for s in specs} - set(finished))
    for run in finished:
        assert file_states(out / "runs" / run) == before[run]
    assert_store_is_clean(out, specs)
    pd.testing.assert_frame_equal(tables(out), expected, check_exact=True)


@pytest.mark.slow
def test_sweep_command_on_its_own_local_cluster_gives_the_serial_tables(
    reference, tmp_path: Path
) -> None:
    """The command's path: fork server started before torch is imported, LocalCluster workers
    forked from it, the driver in a fresh process."""
    pytest.importorskip("distributed")
    specs, expected = reference
    grid = _write_grid(tmp_path, tiny_grid())
    out = tmp_path / "out"
    sweep = _sweep_process(grid, out, "--executor", "dask", "--workers", "2")
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    assert "Dask cluster at tcp://127.0.0.1" in output
    assert_store_is_clean(out, specs)
    pd.testing.assert_frame_equal(tables(out), expected, check_exact=True)


@pytest.mark.slow
def test_the_slurm_recipe_starts_workers_that_run_a_sweep(tmp_path: Path) -> None:
    """examples/slurm_cluster.py without SLURM: its job script, run by bash as sbatch would run
    it, starts workers that join the cluster and train a sweep (the GPU line is only checked)."""
    pytest.importorskip("dask_jobqueue")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import slurm_cluster
    finally:
        sys.path.remove(str(EXAMPLES))
    gpu = slurm_cluster.make_cluster(scheduler_host="127.0.0.1", cores=1, memory="2GB")
    try:
        assert "#SBATCH --gres=gpu:1" in gpu.job_script()
    finally:
        gpu.close()
    cluster = slurm_cluster.make_cluster(
        queue="cpu", cores=1, memory="2GB", gpus=0, venv=sys.prefix, scheduler_host="127.0.0.1"
    )
    jobs = []
    try:
        script = cluster.job_script()
        assert "#SBATCH -p cpu" in script and "--gres" not in script
        assert f"source {sys.prefix}/bin/activate" in script and cluster.scheduler_address in script
        for index in range(2):  # two "jobs", as SLURM would start them
            path = tmp_path / f"job{index}.sh"
            path.write_text(script.replace("dummy-name", f"job-{index}"))
            jobs.append(subprocess.Popen(["bash", str(path)], start_new_session=True))
        specs = expand_grid(tiny_grid(seeds=2))
        result = run_sweep(
            specs, tmp_path / "out", executor="dask", scheduler=cluster.scheduler_address, threads=1
        )
        assert result.ok and sorted(result.trained) == sorted(s.id for s in specs)
        hosts = {
            a["pid"]
            for s in specs
            for a in runs.read_json(run_dir(tmp_path / "out", s) / "run.json")["attempts"]
        }
        assert os.getpid() not in hosts
    finally:
        for job in jobs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGTERM)
            job.wait(timeout=30)
        cluster.close()


def test_the_command_line_starts_without_torch() -> None:
    """`import diffeoprobe` and the CLI module leave torch unimported (the sweep command starts
    its fork server first); `dp.measure` still loads on first use and stays the function."""
    code = (
        "import sys, diffeoprobe, diffeoprobe.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "import diffeoprobe.measurement.core\n"
        "assert callable(diffeoprobe.measure) and diffeoprobe.measure.__name__ == 'measure'\n"
        "assert 'deform' in dir(diffeoprobe)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@pytest.mark.slow
def test_sigterm_stops_the_sweep_and_its_workers_at_once(tmp_path: Path) -> None:
    grid = tiny_grid(seeds=2)
    grid["train"]["epochs"] = 2000  # minutes: only a prompt stop ends this test quickly
    path = _write_grid(tmp_path, grid)
    out = tmp_path / "out"
    sweep = _sweep_process(path, out, "--workers", "2", start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any(RunLock(p).held_elsewhere() for p in out.glob(f"runs/*/{LOCK_NAME}")):
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.stdout.read()
            time.sleep(0.05)
        stopped = time.monotonic()
        sweep.send_signal(signal.SIGTERM)  # the driver only, as a batch system's stop
        output, _ = sweep.communicate(timeout=60)
        assert time.monotonic() - stopped < 30 and sweep.returncode != 0
    finally:
        _kill_session(sweep)
    _assert_session_gone(sweep.pid)
    assert not any(RunLock(p).held_elsewhere() for p in out.glob(f"runs/*/{LOCK_NAME}"))
    assert "sweep interrupted" in (out / "sweep.log").read_text()


@pytest.mark.slow
def test_two_sweeps_at_once_train_each_run_once(reference, tmp_path: Path) -> None:
    specs, expected = reference
    grid = _write_grid(tmp_path, tiny_grid())
    out = tmp_path / "out"
    first = specs[0].id
    contested = RunLock(run_dir(out, first) / LOCK_NAME)  # a third sweep holds the first run
    assert contested.acquire()
    contested.mark_owner()
    sweeps = [_sweep_process(grid, out, "--workers", "1") for _ in range(2)]
    try:  # until both sweeps have found it busy: then they wait for it, and both want it
        deadline = time.monotonic() + 120
        journal = out / "sweep.log"
        while not journal.is_file() or journal.read_text().count(f"{first} is being") < 2:
            assert time.monotonic() < deadline and all(s.poll() is None for s in sweeps)
            time.sleep(0.02)
    finally:
        contested.release()
    outputs = [s.communicate(timeout=300)[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outputs
    for spec in specs:
        log = (run_dir(out, spec) / "log.txt").read_text()
        assert log.count(" attempt ") == 1, log
        assert len(runs.read_json(run_dir(out, spec) / "run.json")["attempts"]) == 1
    trained = [line for text in outputs for line in text.splitlines() if " done in " in line]
    assert sorted(line.split()[0] for line in trained) == sorted(s.id for s in specs)
    assert sum(f"{first} was finished by another process" in text for text in outputs) == 1
    assert_store_is_clean(out, specs)
    pd.testing.assert_frame_equal(tables(out), expected, check_exact=True)


# ---- command line -----------------------------------------------------------------------------


def test_sweep_dry_run_lists_the_runs_and_their_status(tmp_path: Path) -> None:
    grid = _write_grid(tmp_path, tiny_grid(seeds=1))
    out = tmp_path / "out"
    specs = load_grid(grid)
    run_sweep(specs[:1], out, executor="serial")
    result = CliRunner().invoke(
        app, ["sweep", str(grid), "--out", str(out), "--dry-run"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert specs[0].id in result.output and specs[1].id in result.output
    assert "1 done, 1 todo" in result.output
    assert not run_dir(out, specs[1]).exists()  # a dry run creates nothing


def test_sweep_command_runs_and_exits_1_when_a_run_fails(tmp_path: Path) -> None:
    grid = tiny_grid(seeds=1)
    grid["axes"]["model_options.depth"] = [0]
    path = _write_grid(tmp_path, grid)
    result = CliRunner().invoke(
        app, ["sweep", str(path), "--out", str(tmp_path / "o"), "--executor", "serial"]
    )
    assert result.exit_code == 1 and "2 runs failed" in result.output


@pytest.mark.parametrize(
    ("grid", "options", "message"),
    [
        (
            {"train": {"modle": "vgg11"}},
            [],
            "train.modle: unknown setting; did you mean 'model'?",
        ),
        (tiny_grid(1), ["--executor", "slurm"], "executor must be one of local, dask, serial"),
        (tiny_grid(1), ["--retries", "-1"], "retries must be"),
        (tiny_grid(1), ["--only", "adam"], "has no sub-grid 'adam'"),
    ],
)
def test_sweep_command_refuses_bad_input_in_one_line_with_exit_2(
    grid: dict,
    options: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = _write_grid(tmp_path, grid)
    argv = ["diffeoprobe", "sweep", str(path), "--out", str(tmp_path / "o"), *options]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1, error
    assert not (tmp_path / "o" / "runs").exists()


def test_gpu_assignment_gives_each_worker_its_own_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import diffeoprobe.sweep.worker as worker

    spec = expand_grid({"train": {**TINY, "device": "cuda"}})[0]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(worker, "_WORKER_SLOT", 3)
    assert worker._assign_gpu(spec, ("0", "1")) == "1"
    monkeypatch.setattr(worker, "_WORKER_SLOT", 2)
    assert worker._assign_gpu(spec, ("4", "5", "6")) == "6"
    cpu = expand_grid({"train": TINY})[0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert worker._assign_gpu(cpu, ("0", "1")) == "7"  # a cpu run leaves the devices alone


@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="expects every cuda run to fail for want of CUDA; with a real GPU some would train",
)
def test_each_pool_worker_gets_its_own_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real worker processes on a machine without CUDA said to have 2 GPUs: each worker sets its
    own CUDA_VISIBLE_DEVICES before training (the runs then fail, without CUDA, and are recorded).
    The workers are separate processes, so CUDA cannot be hidden from them by a patch here: on a
    machine with CUDA the test is skipped."""
    import diffeoprobe.sweep.driver as driver

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(driver, "local_gpus", lambda: ("0", "1"))
    # the driver believes the machine has CUDA (no refusal up front); the worker processes do not
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    specs = expand_grid({"train": {**TINY, "device": "cuda"}, "axes": {"seed": [0, 1, 2, 3]}})
    result = run_sweep(specs, tmp_path, executor="local", threads=1)  # workers: one per GPU
    assert sorted(result.failed) == sorted(s.id for s in specs)
    devices: dict[int, set[str]] = {}
    for spec in specs:
        for attempt in runs.read_json(run_dir(tmp_path, spec) / "run.json")["attempts"]:
            devices.setdefault(attempt["pid"], set()).add(attempt["cuda_visible_devices"])
    assert os.getpid() not in devices and 1 <= len(devices) <= 2
    assert all(len(seen) == 1 for seen in devices.values())  # a worker keeps its GPU
    chosen = [seen.pop() for seen in devices.values()]
    assert len(set(chosen)) == len(chosen) and set(chosen) <= {"0", "1"}  # one GPU each


@pytest.mark.slow
def test_workers_that_die_as_they_start_stop_the_sweep_with_the_reason(tmp_path: Path) -> None:
    """A script without the __main__ guard: each forkserver worker re-runs it and dies before
    taking a run. The sweep stops after MAX_LOST such pool breaks in a row, saying why, instead
    of restarting the pool for ever."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_sweep import tiny_grid\n"
        "from diffeoprobe.sweep import expand_grid, run_sweep\n"
        f"run_sweep(expand_grid(tiny_grid(seeds=1)), {str(tmp_path / 'out')!r}, workers=2)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240
    )
    assert done.returncode != 0
    assert "died 3 times in a row before any of them started a run" in done.stderr
    assert "if __name__ == '__main__':" in done.stderr
    assert not list((tmp_path / "out" / "runs").glob("*/done.json"))
