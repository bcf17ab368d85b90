"""The results store: DuckDB views over a sweep directory, export, fsspec URLs, the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from diffeoprobe import runs
from diffeoprobe.cli import app
from diffeoprobe.errors import DiffeoProbeError
from diffeoprobe.sweep import expand_grid, run_dir, run_sweep
from diffeoprobe.sweep import results as store

GRID = {
    "train": {
        "model": "simplecnn1d",
        "model_options": {"width": 8},
        "dataset": "scale-detection",
        "dataset_options": {"d": 32, "xi": 8, "train_size": 128, "test_size": 64},
        "epochs": 1,
        "batch_size": 32,
        "optimizer": "adam",
        "lr": 0.01,
        "weight_decay": 0.0,
        "loss": "hinge",
        "checkpoints": 2,
        "measure": True,
    },
    "measure": {"probe_size": 32},
    "axes": {"seed": [0, 1], "model_options.depth": [2, 3, 0]},  # depth 0 fails in the model
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """4 finished runs and 2 failed ones."""
    out = tmp_path_factory.mktemp("sweep")
    specs = expand_grid(GRID)
    result = run_sweep(specs, out, executor="serial")
    assert len(result.trained) == 4 and len(result.failed) == 2
    return out, specs


def test_runs_view_has_one_row_per_run_with_its_config_and_status(sweep) -> None:
    out, specs = sweep
    table = store.query(out, view="runs").set_index("run")
    assert sorted(table.index) == sorted(s.id for s in specs)
    for spec in specs:
        row = table.loc[spec.id]
        assert row["model_options_depth"] == spec.train.model_options["depth"]
        assert row["seed"] == spec.train.seed and row["measure_probe_size"] == 32
        assert row["status"] == ("failed" if spec.train.model_options["depth"] == 0 else "done")
    assert (
        table["attempts"].eq(1).all()
        and table.loc[table["status"] == "done", "seconds"].gt(0).all()
    )
    assert store.varying_settings(table.reset_index()) == ["model_options_depth"]


def test_results_join_every_table_row_with_its_run(sweep) -> None:
    out, specs = sweep
    results = store.query(out)
    done = [s for s in specs if s.train.model_options["depth"] != 0]
    assert set(results["run"]) == {s.id for s in done}
    for spec in done:
        own = runs.read_table(run_dir(out, spec) / "table.parquet")
        part = results[results["run"] == spec.id].reset_index(drop=True)
        pd.testing.assert_frame_equal(part[list(own.columns)], own, check_dtype=False)
        assert (part["model_options_depth"] == spec.train.model_options["depth"]).all()
    assert not any(c.endswith("_1") for c in results.columns)  # no duplicated join columns
    keys = list(zip(results["run"], results["step"], results["depth"], strict=True))
    assert keys == sorted(keys)


def test_where_and_sql_select_rows_and_bad_sql_is_a_user_error(sweep) -> None:
    out, _ = sweep
    output = store.query(out, where="layer = 'output' AND model_options_depth = 3")
    assert len(output) == 2 * 3 and set(output["layer"]) == {"output"}  # 2 seeds x 3 checkpoints
    summary = store.query(
        out,
        sql="SELECT model_options_depth AS depth, count(DISTINCT run) AS n FROM results "
        "GROUP BY 1 ORDER BY 1",
    )
    assert summary.to_dict("list") == {"depth": [2, 3], "n": [2, 2]}
    with pytest.raises(DiffeoProbeError, match="--where: DuckDB refused the query"):
        store.query(out, where="no_such_column = 1")
    with pytest.raises(DiffeoProbeError, match="view must be"):
        store.query(out, view="everything")


def test_export_writes_csv_and_parquet(sweep, tmp_path: Path) -> None:
    out, _ = sweep
    table = store.query(out, where="layer = 'output'")
    for name in ("rows.csv", "rows.parquet"):
        store.export(table, tmp_path / name)
        back = runs.read_table(tmp_path / name)
        assert len(back) == len(table) and list(back.columns) == list(table.columns)
    with pytest.raises(DiffeoProbeError, match="must end in"):
        store.export(table, tmp_path / "rows.xlsx")


def test_results_from_an_fsspec_url_equal_the_local_ones(sweep) -> None:
    fsspec = pytest.importorskip("fsspec")
    out, _ = sweep
    memory = fsspec.filesystem("memory")
    memory.put(str(out), "/store-test", recursive=True)
    try:
        remote = store.query("memory://store-test", where="layer = 'output'")
        local = store.query(out, where="layer = 'output'")
        pd.testing.assert_frame_equal(remote, local, check_dtype=False)
        assert len(store.query("memory://store-test", view="runs")) == 6
    finally:
        memory.rm("/store-test", recursive=True)


def test_an_unfinished_run_is_listed_without_rows(sweep, tmp_path: Path) -> None:
    out, specs = sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (run_dir(copy, specs[0]) / "done.json").unlink()
    assert specs[0].id not in set(store.query(copy)["run"])
    status = store.query(copy, view="runs").set_index("run")["status"]
    assert status[specs[0].id] == "incomplete"


def test_a_directory_without_runs_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DiffeoProbeError, match="holds no runs"):
        store.query(tmp_path)
    with pytest.raises(DiffeoProbeError, match="is not a directory"):
        store.query(tmp_path / "missing")


def test_results_command_prints_and_exports(sweep, tmp_path: Path) -> None:
    out, _ = sweep
    runner = CliRunner()
    shown = runner.invoke(app, ["results", str(out), "--runs"], terminal_width=250)
    assert shown.exit_code == 0, shown.output
    assert "6 rows" in shown.output and "failed" in shown.output
    csv = tmp_path / "output.csv"
    written = runner.invoke(
        app, ["results", str(out), "--where", "layer = 'output'", "--out", str(csv)]
    )
    assert written.exit_code == 0, written.output
    assert len(pd.read_csv(csv)) == 4 * 3
    bad = runner.invoke(app, ["results", str(out), "--sql", "SELECT 1", "--runs"])
    assert isinstance(bad.exception, DiffeoProbeError)


@pytest.mark.slow
def test_report_command_draws_the_sweep(sweep, tmp_path: Path) -> None:
    out, _ = sweep
    result = CliRunner().invoke(
        app, ["report", str(out), "--out", str(tmp_path / "report"), "--where", "seed = 0"]
    )
    assert result.exit_code == 0, result.output
    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {
        "report.html",
        "error-vs-R.png",
        "layers.pdf",
        "output-vs-model_options_depth.png",
    } <= files
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "model_options_depth" in page


def _secret_files(folder: Path) -> tuple[Path, Path]:
    """A CSV and a Parquet file outside the runs, each holding a secret word."""
    csv, parquet = folder / "secret.csv", folder / "secret.parquet"
    csv.write_text("word\nsesame-csv\n")
    pd.DataFrame({"word": ["sesame-parquet"]}).to_parquet(parquet)
    return csv, parquet


@pytest.mark.parametrize(
    "reach",
    [
        "read_csv('{csv}')",
        "read_csv('/etc/passwd')",
        "read_parquet('{parquet}')",
        "read_text('{csv}')",
        "'{csv}'",
    ],
)
def test_where_and_sql_cannot_read_files_outside_the_runs(
    sweep, tmp_path: Path, reach: str
) -> None:
    out, _ = sweep
    csv, parquet = _secret_files(tmp_path)
    source = reach.format(csv=csv, parquet=parquet)
    for kind, text in (
        ("where", f"run IN (SELECT * FROM {source})"),
        ("where", f"(SELECT count(*) FROM {source}) > 0"),
        ("sql", f"SELECT * FROM {source}"),
    ):
        with pytest.raises(DiffeoProbeError) as refused:
            store.query(out, **{kind: text})
        message = str(refused.value)
        assert f"--{kind}: DuckDB refused" in message and "\n" not in message
        assert "sesame" not in message and "root:" not in message


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1) TO '{folder}/x.csv'",
        "COPY results TO '{folder}/x.parquet' (FORMAT parquet)",
        "EXPORT DATABASE '{folder}/export'",
        "ATTACH '{folder}/x.db' AS other",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SELECT * FROM read_csv('https://example.com/x.csv')",
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET lock_configuration",
        "SET autoinstall_known_extensions = true",
    ],
)
def test_sql_cannot_write_attach_install_or_reconfigure(
    sweep, tmp_path: Path, statement: str
) -> None:
    out, _ = sweep
    with pytest.raises(DiffeoProbeError, match="--sql: DuckDB refused") as refused:
        store.query(out, sql=statement.format(folder=tmp_path))
    message = str(refused.value)
    assert "\n" not in message and "only the tables runs, tables and results" in message
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_sql_does_not_scan_python_variables(sweep) -> None:
    out, _ = sweep
    with pytest.raises(DiffeoProbeError, match="store does not exist"):
        store.query(out, sql="SELECT * FROM store")  # the module in scope is not scanned


def test_a_where_cannot_smuggle_a_second_statement(sweep, tmp_path: Path) -> None:
    out, _ = sweep
    with pytest.raises(DiffeoProbeError, match="--where: DuckDB refused"):
        store.query(out, where=f"true; COPY (SELECT 1) TO '{tmp_path}/x.csv'")
    assert list(tmp_path.iterdir()) == []


def test_the_sandbox_still_answers_queries_over_the_run_tables(sweep) -> None:
    out, _ = sweep
    counts = store.query(
        out,
        sql="SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM tables) AS t, "
        "(SELECT count(*) FROM results) AS r",
    )
    assert counts["runs"].item() == len(store.run_table(out))
    assert counts["t"].item() == counts["r"].item() == len(store.query(out)) > 0
    assert len(store.query(out, where="step > 0 AND layer = 'output'")) > 0


def test_results_command_refuses_a_file_read_on_one_line(sweep, tmp_path: Path) -> None:
    out, _ = sweep
    csv, _ = _secret_files(tmp_path)
    result = CliRunner().invoke(
        app, ["results", str(out), "--where", f"run IN (SELECT * FROM read_csv('{csv}'))"]
    )
    assert isinstance(result.exception, DiffeoProbeError)
    assert "sesame" not in str(result.exception) and "sesame" not in result.output
