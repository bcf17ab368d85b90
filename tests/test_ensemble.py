"""Seeds trained together as one batched model (diffeoprobe.ensemble) against train() alone.

Tolerance: weights within ``1e-5 * max|w|`` of the solo run's at every checkpoint (``1e-3`` in
the stopping test, where the stack shrinks as members stop). Observed on CPU: bit-identical with
the hinge loss (plain SGD or momentum and weight decay) while the stack keeps its members; at most
1.2e-7 absolute (3e-8 of the largest weight) with cross-entropy, momentum, weight decay and a
cosine schedule; 2.6e-5 of the largest weight for the member that trains on after the others
stopped (200 steps at lr 1.6 with momentum). Errors in the metadata, steps, epochs at which
members stop, checkpoint lists, scheduler and RNG state agree exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from diffeoprobe import runs
from diffeoprobe.config import MeasureConfig, TrainConfig
from diffeoprobe.ensemble import _window_conv1d, batchable, train_together
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.training import TrainingDiverged, train

TASK = dict(dim=1, task=2, d=32, xi=8, train_size=128, test_size=64)
MEASURE = MeasureConfig(probe_size=16)
TOLERANCE = 1e-5  # of the largest weight


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is fastest, and steady on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**changes: object) -> TrainConfig:
    values = dict(
        model="scalecnn1d",
        model_options=dict(depth=5, width=16),
        dataset="scale-detection",
        dataset_options=TASK,
        epochs=3,
        batch_size=8,
        optimizer="sgd",
        lr=0.16,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        loss="hinge",
        checkpoints=3,
        seed=0,
    )
    values.update(changes)
    return TrainConfig(**values)


def files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def weights_close(a: Path, b: Path, tolerance: float = TOLERANCE) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    scale = max(w.abs().max().item() for w in wb.values())
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wb)
    assert diff <= tolerance * scale, (a, diff, scale)


def same_run(together: Path, alone: Path, tolerance: float = TOLERANCE) -> None:
    """Same files, same JSON keys and metrics, weights within tolerance, same resume state."""
    assert files(together) == files(alone)
    for name in files(alone):
        if name.endswith(".json"):
            a, b = runs.read_json(together / name), runs.read_json(alone / name)
            assert a.keys() == b.keys(), name
            for key in ("step", "epoch", "steps", "epochs", "checkpoints"):
                assert a.get(key) == b.get(key), (name, key)
            for key in ("train_error", "test_error", "config"):
                assert a.get(key) == b.get(key), (name, key)
            if "train_loss" in b and b["train_loss"] == b["train_loss"]:  # not NaN
                assert a["train_loss"] == pytest.approx(b["train_loss"], rel=max(tolerance, 1e-5))
        if name.endswith(".safetensors"):
            weights_close(together / name, alone / name, tolerance)
    (resume,) = [n for n in files(alone) if n.endswith(".resume.pt")]
    a = runs.load_training_state(together / resume)
    b = runs.load_training_state(alone / resume)
    assert a["step"] == b["step"] and a["scheduler"] == b["scheduler"]
    assert torch.equal(a["torch_rng"], b["torch_rng"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key, state in b["optimizer"]["state"].items():
        buffer = state["momentum_buffer"]
        torch.testing.assert_close(
            a["optimizer"]["state"][key]["momentum_buffer"],
            buffer,
            rtol=0,
            atol=max(tolerance * buffer.abs().max().item(), 1e-7),
        )


@pytest.mark.parametrize(
    "changes",
    [
        dict(measure=True),  # the paper's recipe: plain SGD, constant schedule
        dict(momentum=0.9, weight_decay=5e-4, schedule="cosine", loss="cross-entropy", lr=0.5),
    ],
    ids=["plain-sgd-measure", "momentum-cosine"],
)
def test_members_equal_solo_runs(tmp_path: Path, changes: dict) -> None:
    configs = [config(seed=seed, **changes) for seed in (0, 1, 2)]
    outs = [tmp_path / f"together{c.seed}" for c in configs]
    summaries = train_together(configs, outs, measure=MEASURE)
    for c, out, summary in zip(configs, outs, summaries, strict=True):
        alone = train(c, tmp_path / f"alone{c.seed}", measure=MEASURE)
        same_run(out, tmp_path / f"alone{c.seed}")
        assert summary.run_dir == out and summary.steps == alone.steps == 48
        assert summary.checkpoints == alone.checkpoints
        assert summary.images == 48 * 8
        if c.measure:
            assert summary.table.shape == alone.table.shape
            assert (summary.table["seed"] == c.seed).all()


def test_a_model_without_window_convolutions_uses_vmaps_own_rules(tmp_path: Path) -> None:
    changes = dict(model="simplecnn1d", model_options=dict(depth=2, width=8), epochs=1)
    configs = [config(seed=seed, **changes) for seed in (3, 4)]
    train_together(configs, [tmp_path / f"t{c.seed}" for c in configs])
    for c in configs:
        train(c, tmp_path / f"a{c.seed}")
        same_run(tmp_path / f"t{c.seed}", tmp_path / f"a{c.seed}")


def test_each_member_stops_at_its_own_zero_error_epoch(tmp_path: Path) -> None:
    # seeds 1, 2, 3 reach zero training error after 18, 17 and 22 epochs alone; seed 0 never does
    options = dict(TASK, train_size=64)
    changes = dict(
        dataset_options=options, lr=1.6, momentum=0.9, epochs=25, checkpoints=2,
        stop_at_zero_error=True,
    )  # fmt: skip
    configs = [config(seed=seed, **changes) for seed in (0, 1, 2, 3)]
    outs = [tmp_path / f"together{c.seed}" for c in configs]
    together = train_together(configs, outs)
    epochs = []
    for c, summary in zip(configs, together, strict=True):
        alone = train(c, tmp_path / f"alone{c.seed}")
        done = runs.read_json(tmp_path / f"together{c.seed}" / "done.json")
        assert done["epochs"] == summary.epochs == alone.epochs
        assert done["steps"] == alone.steps and done["checkpoints"] == alone.checkpoints
        # once members stop, the batched products of the others have fewer rows and may round
        # differently; over 200 steps at lr 1.6 with momentum that grew to 2.6e-5 of max|w|
        same_run(tmp_path / f"together{c.seed}", tmp_path / f"alone{c.seed}", tolerance=1e-3)
        epochs.append(alone.epochs)
    assert len(set(epochs)) == 4 and max(epochs) == 25  # all differ; one ran every epoch


def kill_at(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make writing the metadata file ``name`` fail, as a process killed just before it."""
    write_json = runs.write_json

    def failing(path: str | Path, payload: dict) -> Path:
        if Path(path).name == name:
            raise RuntimeError(f"killed before {name}")
        return write_json(path, payload)

    monkeypatch.setattr(runs, "write_json", failing)


def test_finished_members_are_skipped_and_step_zero_restarts_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = [config(seed=seed, epochs=1) for seed in (0, 1)]
    outs = [tmp_path / "a", tmp_path / "b"]
    train_together(configs[:1], outs[:1])  # a finished
    before = {p: p.stat().st_mtime_ns for p in outs[0].rglob("*")}
    with monkeypatch.context() as patch:  # b killed before its checkpoint at step 1 was complete
        kill_at(patch, "step_00000001.json")
        with pytest.raises(RuntimeError, match="killed"):
            train_together(configs[1:], outs[1:])
    assert runs.completed_checkpoints(outs[1]) == [0]
    step0 = {p: p.stat().st_mtime_ns for p in outs[1].glob("checkpoints/step_00000000.[js]*")}
    lines: list[str] = []
    summaries = train_together(configs, outs, log=lines.append)
    assert {p: p.stat().st_mtime_ns for p in outs[0].rglob("*")} == before  # a untouched
    assert {p: p.stat().st_mtime_ns for p in step0} == step0  # b's step 0 kept, not rewritten
    assert [s.steps for s in summaries] == [16, 16]
    assert not any(line.startswith("seed 1: step 0 ") for line in lines)
    assert any(line.startswith("seed 1: step 16 ") for line in lines)
    train(configs[1], tmp_path / "alone")
    same_run(outs[1], tmp_path / "alone")


def test_members_resumed_past_step_zero_are_resumed_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = [config(seed=seed, epochs=1) for seed in (0, 1)]
    outs = [tmp_path / "a", tmp_path / "b"]
    with monkeypatch.context() as patch:  # killed at the last checkpoint: both resume from step 4
        kill_at(patch, "step_00000016.json")
        with pytest.raises(RuntimeError, match="killed"):
            train_together(configs, outs)
    assert [runs.completed_checkpoints(out)[-1] for out in outs] == [4, 4]
    lines: list[str] = []
    summaries = train_together(configs, outs, log=lines.append)
    assert any("resumed alone" in line for line in lines)
    assert [s.steps for s in summaries] == [16, 16]
    for c, out in zip(configs, outs, strict=True):
        train(c, tmp_path / f"alone{c.seed}")
        same_run(out, tmp_path / f"alone{c.seed}")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (dict(lr=0.32), "lr"),
        (dict(model_options=dict(depth=5, width=8)), "model_options"),
        (dict(epochs=4), "epochs"),
    ],
)
def test_configs_differing_in_another_field_are_refused(
    tmp_path: Path, change: dict, field: str
) -> None:
    configs = [config(seed=0), config(seed=1, **change)]
    assert batchable(configs).startswith(f"{field}:")
    with pytest.raises(DiffeoProbeError, match=f"^{field}: differs"):
        train_together(configs, [tmp_path / "a", tmp_path / "b"])
    assert not any(tmp_path.iterdir())  # refused before any work


def test_adam_augment_and_batchnorm_are_refused(tmp_path: Path) -> None:
    adam = [config(seed=s, optimizer="adam") for s in (0, 1)]
    assert batchable(adam).startswith("optimizer:")
    with pytest.raises(DiffeoProbeError, match="^optimizer: 'adam'"):
        train_together(adam, [tmp_path / "a", tmp_path / "b"])
    assert batchable([config(seed=s, augment=True) for s in (0, 1)]).startswith("augment:")
    bn = dict(model="simplecnn1d", model_options=dict(depth=2, width=8, batch_norm=True))
    norm = [config(seed=s, **bn) for s in (0, 1)]
    assert "updates buffers" in batchable(norm) and batchable(norm).startswith("model:")
    with pytest.raises(DiffeoProbeError, match="^model: 'simplecnn1d' updates buffers"):
        train_together(norm, [tmp_path / "a", tmp_path / "b"])
    assert not any(tmp_path.iterdir())
    assert batchable([config(seed=s) for s in (0, 1, 2)]) is None


def test_repeated_or_missing_run_directories_are_refused(tmp_path: Path) -> None:
    configs = [config(seed=s) for s in (0, 1)]
    with pytest.raises(DiffeoProbeError, match="^outs: the run directories must be distinct"):
        train_together(configs, [tmp_path / "a", tmp_path / "a"])
    with pytest.raises(DiffeoProbeError, match="^outs: one run directory per config"):
        train_together(configs, [tmp_path / "a"])


def test_diverged_members_keep_their_last_good_checkpoint(tmp_path: Path) -> None:
    configs = [config(seed=s, lr=1e30, loss="cross-entropy") for s in (0, 1)]
    outs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(TrainingDiverged, match="seed 0: .*last good checkpoint is step"):
        train_together(configs, outs)
    for out in outs:
        assert runs.completed_checkpoints(out)[0] == 0
        assert not (out / "done.json").exists()


@pytest.mark.parametrize(
    ("length", "size", "bias"), [(32, 2, False), (33, 2, True), (12, 3, True), (8, 8, False)]
)
def test_window_conv1d_matches_conv1d(length: int, size: int, bias: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, length, generator=gen)
    w = torch.randn(6, 5, size, generator=gen)
    b = torch.randn(6, generator=gen) if bias else None
    out = _window_conv1d(x, w, b, size)
    torch.testing.assert_close(out, F.conv1d(x, w, b, size))
    assert _window_conv1d(x, w, b, 1) is None  # overlapping windows: left to conv1d
    assert _window_conv1d(x, w, b, size, padding=1) is None


def test_json_of_done_matches_keys(tmp_path: Path) -> None:
    out = tmp_path / "a"
    train_together([config(seed=0, epochs=1)], [out])
    done = json.loads((out / "done.json").read_text())
    assert set(done) == {"steps", "epochs", "train_error", "test_error", "seconds", "checkpoints"}


def test_a_member_another_process_is_training_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    from test_train import HOLD_LOCK

    outs = [tmp_path / "a", tmp_path / "b"]
    outs[1].mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(outs[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    configs = [config(seed=seed, epochs=1) for seed in (0, 1)]
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            DiffeoProbeError, match=f"another process .* {holder.pid}\\) is training"
        ):
            train_together(configs, outs)
        assert not (outs[0] / "config.json").exists() and not (outs[1] / "config.json").exists()
    finally:
        holder.communicate("\n", timeout=60)
    assert [s.steps for s in train_together(configs, outs)] == [16, 16]
