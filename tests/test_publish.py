"""Sweeps whose results live at an fsspec URL: staged training, atomic publication, resumption."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest
from test_sweep import _write_grid, file_states, tiny_grid
from typer.testing import CliRunner

from diffeoprobe.cli import app
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.sweep import expand_grid, plan, publish, run_sweep
from diffeoprobe.sweep import results as store

pytest.importorskip("fsspec")


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, pd.DataFrame]:
    """A 2-run sweep in a plain directory: the tables a published sweep must equal."""
    out = tmp_path_factory.mktemp("local")
    specs = expand_grid(tiny_grid(seeds=1))
    assert run_sweep(specs, out, executor="serial", threads=1).ok
    return specs, store.query(out, view="tables")


def published_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_sweep_to_a_url_publishes_every_finished_run(local, tmp_path: Path) -> None:
    specs, expected = local
    url = f"file://{tmp_path / 'dest'}"
    result = run_sweep(specs, url, stage=tmp_path / "stage", executor="serial", threads=1)
    assert result.ok and sorted(result.trained) == sorted(s.id for s in specs)
    pd.testing.assert_frame_equal(store.query(url, view="tables"), expected, check_exact=True)
    files = published_files(tmp_path / "dest")
    assert "sweep.log" in files
    for spec in specs:  # the whole run but its lock, and no temporary file
        staged = {
            f"runs/{spec.id}/{p}"
            for p in published_files(tmp_path / "stage" / "runs" / spec.id)
            if p != ".lock"
        }
        assert staged <= set(files) and f"runs/{spec.id}/checkpoints" not in files
        assert not [f for f in files if f.endswith(".tmp") or f.endswith(".lock")]
    assert {r["status"] for r in plan(specs, url, tmp_path / "stage")} == {"done"}


def test_runs_at_the_url_are_skipped_even_from_an_empty_stage(local, tmp_path: Path) -> None:
    specs, _ = local
    url = f"file://{tmp_path / 'dest'}"
    assert run_sweep(specs, url, stage=tmp_path / "one", executor="serial", threads=1).ok
    before = file_states(tmp_path / "dest" / "runs")
    again = run_sweep(specs, url, stage=tmp_path / "two", executor="serial", threads=1)
    assert again.ok and not again.trained and sorted(again.skipped) == sorted(s.id for s in specs)
    assert file_states(tmp_path / "dest" / "runs") == before
    assert not list((tmp_path / "two" / "runs").iterdir())  # nothing trained or staged


def test_a_run_whose_publication_was_cut_is_published_again_without_training(
    local, tmp_path: Path
) -> None:
    specs, expected = local
    url, stage = f"file://{tmp_path / 'dest'}", tmp_path / "stage"
    assert run_sweep(specs, url, stage=stage, executor="serial", threads=1).ok
    cut = tmp_path / "dest" / "runs" / specs[0].id
    (cut / "run.json").unlink()  # the copy died before its last file
    (cut / "done.json").unlink()
    assert specs[0].id not in publish.Destination(url).complete_runs()
    assert {r["id"]: r["status"] for r in plan(specs, url, stage)}[specs[0].id] == "done"
    again = run_sweep(specs, url, stage=stage, executor="serial", threads=1)
    assert again.ok and not again.trained
    assert (cut / "run.json").is_file()
    pd.testing.assert_frame_equal(store.query(url, view="tables"), expected, check_exact=True)


def test_a_failed_copy_fails_the_run_and_a_rerun_copies_it(
    local, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs, expected = local
    url, stage = f"file://{tmp_path / 'dest'}", tmp_path / "stage"
    real_put = publish.Destination._put

    def put_but_refuse_tables(self, path: Path, remote: str) -> None:
        if path.name == "table.parquet":
            raise PermissionError("bucket is read-only")
        real_put(self, path, remote)

    monkeypatch.setattr(publish.Destination, "_put", put_but_refuse_tables)
    result = run_sweep(specs, url, stage=stage, executor="serial", threads=1)
    assert sorted(result.failed) == sorted(s.id for s in specs) and not result.trained
    assert "read-only" in next(iter(result.failed.values()))
    assert not publish.Destination(url).complete_runs()  # nothing half-published looks done
    monkeypatch.setattr(publish.Destination, "_put", real_put)
    again = run_sweep(specs, url, stage=stage, executor="serial", threads=1)
    assert again.ok and not again.trained  # copied from the stage, not trained again
    pd.testing.assert_frame_equal(store.query(url, view="tables"), expected, check_exact=True)


def test_an_in_memory_file_system_holds_a_whole_sweep(local, tmp_path: Path) -> None:
    """A file system that is not a local path at all (fsspec's memory://, read back through
    fsspec by the store)."""
    specs, expected = local
    url = f"memory://sweep-{uuid.uuid4().hex[:8]}"
    assert run_sweep(specs, url, stage=tmp_path / "stage", executor="serial", threads=1).ok
    pd.testing.assert_frame_equal(store.query(url, view="tables"), expected, check_exact=True)
    table = store.run_table(url)
    assert set(table["status"]) == {"done"} and len(table) == len(specs)


def test_the_sweep_command_writes_to_a_url_and_lists_it(tmp_path: Path) -> None:
    grid = _write_grid(tmp_path, tiny_grid(seeds=1))
    url = f"file://{tmp_path / 'dest'}"
    base = ["sweep", str(grid), "--out", url, "--stage", str(tmp_path / "stage")]
    done = CliRunner().invoke(app, [*base, "--executor", "serial", "--threads", "1"])
    assert done.exit_code == 0, done.output
    listed = CliRunner().invoke(app, [*base, "--dry-run"])
    assert listed.exit_code == 0 and "2 done" in listed.output
    assert len(store.run_table(url)) == 2


@pytest.mark.parametrize(
    ("out", "stage", "message"),
    [
        ("plain-dir", "stage", "stage: .* only used when out is a URL"),
        ("nosuchscheme://bucket/x", None, "out: 'nosuchscheme://bucket/x': no fsspec file system"),
        ("memory://x", "memory://y", "stage: 'memory://y' must be a directory"),
    ],
)
def test_bad_out_and_stage_are_refused_before_anything_runs(
    out: str, stage: str | None, message: str, tmp_path: Path
) -> None:
    specs = expand_grid(tiny_grid(seeds=1))
    out = out if "://" in out else str(tmp_path / out)
    stage = stage if stage is None or "://" in stage else str(tmp_path / stage)
    with pytest.raises(DiffeoProbeError, match=message):
        run_sweep(specs, out, stage=stage, executor="serial")
    assert not (tmp_path / "plain-dir").exists() and not (tmp_path / "stage").exists()


def test_the_default_stage_is_per_url_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    one, two = publish.default_stage("s3://a/x"), publish.default_stage("s3://a/y")
    assert one.parent == tmp_path / "diffeoprobe" / "stage" and one != two
    assert publish.default_stage("s3://a/x") == one
