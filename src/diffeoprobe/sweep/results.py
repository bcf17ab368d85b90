"""The results store: every finished run's table, joined with its config, queried with DuckDB.

A sweep directory holds ``runs/<id>/`` (see :mod:`diffeoprobe.sweep`); a run is finished when its
``done.json`` exists, and its tidy table is ``runs/<id>/table.parquet``. :func:`connect` copies
them into an in-memory DuckDB database as three relations:

- ``runs``: one row per run directory: ``run`` (the id), ``grid``, ``status`` (done, failed,
  incomplete), ``seconds``, ``attempts``, ``test_error``, and every config field as a column
  (TrainConfig fields by name, ``model_options`` and ``dataset_options`` keys as
  ``model_options_KEY`` / ``dataset_options_KEY``, MeasureConfig fields as ``measure_NAME``);
- ``tables``: the rows of every finished run's ``table.parquet`` with its ``run`` id;
- ``results``: ``tables`` joined with ``runs`` (the table's own columns win a clash).

A directory can be a local or shared path, or an fsspec URL (``s3://bucket/sweep``,
``memory://sweep``; needs the matching fsspec driver): local tables are read by DuckDB directly,
remote ones through fsspec into memory (fine for the thousands of small tables a sweep makes).

The user's SQL (``--where``, ``--sql``) runs only after that copy, with DuckDB's external access
disabled and its configuration locked: it reaches these three relations and nothing else (no
file, URL, database file, extension or setting).
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pandas as pd

from diffeoprobe import runs
from diffeoprobe.errors import DiffeoProbeError, DiffeoProbeWarning
from diffeoprobe.sweep import RUNS_DIR

__all__ = [
    "NOT_SETTINGS",
    "ORDER",
    "RUN_COLUMNS",
    "connect",
    "export",
    "flatten_config",
    "query",
    "run_table",
    "varying_settings",
]

if TYPE_CHECKING:
    import duckdb

ORDER = ("run", "step", "depth")  # rows come sorted by these (those present)
TABLE_COLUMNS = ("step", "layer", "depth", "rel_depth", "D", "G", "R", "D_se", "G_se", "R_se")
"""Columns every run table has (a table without one is skipped, with a warning)."""
RUN_COLUMNS = ("run", "grid", "status", "seconds", "attempts", "test_error")
NOT_SETTINGS = {*RUN_COLUMNS, "seed"}  # run-table columns that are not swept settings


class _Files:
    """The few file operations the store needs, on a local path or an fsspec URL."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        self.remote = "://" in text and not text.startswith("file://")
        if self.remote:
            try:
                import fsspec
            except ImportError:
                raise DiffeoProbeError(
                    f"{text!r}: reading results from a URL needs fsspec: pip install fsspec"
                ) from None
            try:
                self.fs, self.root = fsspec.core.url_to_fs(text)
            except (ImportError, ValueError) as exc:
                raise DiffeoProbeError(f"{text!r}: no fsspec file system for it ({exc})") from None
        else:
            self.root = str(Path(text.removeprefix("file://")))
        self.text = text

    def run_dirs(self) -> list[str]:
        """Directories with a ``config.json`` (written by ``train()`` once the run is checked)
        or a ``run.json`` (the sweep's record: a run that failed before training started).
        """
        found: list[str] = []
        for name in ("config.json", "run.json"):
            if self.remote:
                found += self.fs.glob(f"{self.root}/{RUNS_DIR}/*/{name}")
            else:
                found += map(str, Path(self.root).glob(f"{RUNS_DIR}/*/{name}"))
        return sorted({str(PurePosixPath(p).parent) for p in found})

    def exists(self, path: str) -> bool:
        return self.fs.exists(path) if self.remote else Path(path).is_file()

    def read_json(self, path: str) -> dict[str, Any]:
        if not self.remote:
            return runs.read_json(path)
        try:
            with self.fs.open(path, "rb") as handle:
                return json.loads(handle.read())
        except (OSError, json.JSONDecodeError) as exc:
            raise DiffeoProbeError(f"{path!r} could not be read as JSON ({exc})") from exc

    def read_parquet(self, path: str) -> pd.DataFrame:
        with self.fs.open(path, "rb") as handle:
            return pd.read_parquet(io.BytesIO(handle.read()))

    def table_problem(self, path: str) -> str | None:
        """Why the Parquet file at ``path`` cannot be used as a run table (``None``: it can)."""
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        try:
            if self.remote:
                with self.fs.open(path, "rb") as handle:
                    source: Any = io.BytesIO(handle.read())
            else:
                source = path
            schema = pq.read_schema(source)
        except Exception as exc:  # pyarrow's errors for truncated or foreign files vary
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            return f"table.parquet is not a readable Parquet file ({first})"
        missing = [c for c in TABLE_COLUMNS if c not in schema.names]
        if missing:
            return f"table.parquet lacks the column(s) {', '.join(missing)}"
        return None


def _skip(run: str, reason: str) -> None:
    """Warn (one line) that run ``run`` is left out of the results."""
    warnings.warn(f"skipped run {run}: {reason}", DiffeoProbeWarning, stacklevel=3)


def run_table(root: str | Path) -> pd.DataFrame:
    """One row per run directory under ``root/runs`` (see the module docstring for the columns)."""
    files = _Files(root)
    rows = []
    for directory in files.run_dirs():
        try:
            rows.append(_run_row(files, directory))
        except DiffeoProbeError as exc:  # one corrupt run does not hide the others
            _skip(PurePosixPath(directory).name, str(exc))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in RUN_COLUMNS})
    table = pd.DataFrame(rows)
    for column in table.columns:  # a column of mixed kinds (2 and [2, 4]) becomes JSON text
        kinds = {_kind(v) for v in table[column] if v is not None}
        if len(kinds) > 1:
            table[column] = [None if v is None else json.dumps(v) for v in table[column]]
    return table


def varying_settings(runs: pd.DataFrame) -> list[str]:
    """Config columns of a run table that take more than one value (the sweep's axes, seed aside).

    >>> varying_settings(pd.DataFrame({"run": ["a", "b"], "lr": [0.1, 0.2], "seed": [0, 1],
    ...                                "epochs": [5, 5]}))
    ['lr']
    """
    return [
        c
        for c in runs.columns
        if c not in NOT_SETTINGS and runs[c].astype(str).nunique(dropna=False) > 1
    ]


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _object(files: _Files, path: str, key: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path`` (``key``: the object under that key, ``{}`` if absent).

    Raises:
        DiffeoProbeError: not JSON, or not an object where one is expected.
    """
    value: Any = files.read_json(path)
    name = PurePosixPath(path).name
    if not isinstance(value, dict):
        raise DiffeoProbeError(f"{name} holds a {type(value).__name__}, not a JSON object")
    if key is not None:
        value = value.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise DiffeoProbeError(f"{name}: {key!r} is not an object of sections")
    return value


def _run_row(files: _Files, directory: str) -> dict[str, Any]:
    record = (
        _object(files, f"{directory}/run.json") if files.exists(f"{directory}/run.json") else {}
    )
    if files.exists(f"{directory}/config.json"):
        config = _object(files, f"{directory}/config.json", "config")
    else:  # failed before train() wrote its config: the sweep's record holds it
        config = record.get("config", {})
        if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
            raise DiffeoProbeError("run.json: 'config' is not an object of sections")
    done = files.exists(f"{directory}/done.json")
    failed = files.exists(f"{directory}/error.json")
    row: dict[str, Any] = dict(
        run=PurePosixPath(directory).name,
        grid=record.get("grid", ""),
        status="done" if done else "failed" if failed else "incomplete",
        seconds=record.get("seconds"),
        attempts=len(record.get("attempts", [])),
        test_error=_object(files, f"{directory}/done.json").get("test_error") if done else None,
    )
    row.update(flatten_config(config))
    return row


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"train": ..., "measure": ...}`` as flat columns (lists and mappings as JSON text).

    >>> flatten_config({"train": {"lr": 0.1, "model_options": {"depth": 2}},
    ...                 "measure": {"delta": 1.0}})
    {'lr': 0.1, 'model_options_depth': 2, 'measure_delta': 1.0}
    """
    flat: dict[str, Any] = {}
    for section, prefix in (("train", ""), ("measure", "measure_")):
        for name, value in config.get(section, {}).items():
            if isinstance(value, dict):
                for key, option in value.items():
                    flat[f"{prefix}{name}_{key}"] = _scalar(option)
            else:
                flat[f"{prefix}{name}"] = _scalar(value)
    return flat


def _scalar(value: object) -> object:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _table_files(files: _Files, table: pd.DataFrame) -> Iterator[tuple[str, str]]:
    """Finished runs' tables that can be read and have the run table's columns; the others are
    skipped with a warning each.
    """
    for run in table.loc[table["status"] == "done", "run"]:
        path = f"{files.root}/{RUNS_DIR}/{run}/table.parquet"
        if files.exists(path):
            problem = files.table_problem(path)
            if problem is None:
                yield run, path
            else:
                _skip(run, problem)


# DuckDB settings fixed when the connection opens: no extension is installed or loaded behind the
# user's back, none from the community repository, and no Python variable is scanned by name.
_CONNECT_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,
}
# Applied once the run tables are in memory, before any user SQL: no file, URL, database file,
# extension or secret can be reached any more, and the user's SQL cannot undo it (``SET`` is
# refused once the configuration is locked).
_SANDBOX = ("SET enable_external_access = false", "SET lock_configuration = true")


def connect(root: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection holding the tables ``runs`` and ``tables`` and the view
    ``results``, with every way out of it switched off.

    The run tables are copied into memory first (from files this module chose); then external
    access (files, network, ``ATTACH``, ``COPY``, ``INSTALL``/``LOAD``) is disabled and the
    configuration locked, so SQL run on the connection sees only those tables.

    Raises:
        DiffeoProbeError: ``root`` holds no run directory.
    """
    import duckdb

    files = _Files(root)
    if not files.remote and not Path(files.root).is_dir():
        raise DiffeoProbeError(f"{files.text!r} is not a directory")
    run_rows = run_table(root)
    if run_rows.empty and files.run_dirs():
        raise DiffeoProbeError(
            f"{files.text!r}: none of its {len(files.run_dirs())} run(s) could be read (each is "
            "named in a warning above)"
        )
    if run_rows.empty:
        raise DiffeoProbeError(
            f"{files.text!r} holds no runs ({RUNS_DIR}/<id>/config.json): run `diffeoprobe sweep GRID --out {files.text}` first"
        )
    con = duckdb.connect(config=dict(_CONNECT_CONFIG))
    try:
        _load(con, files, run_rows)
        for statement in _SANDBOX:
            con.execute(statement)
    except BaseException:
        con.close()
        raise
    return con


def _load(con: duckdb.DuckDBPyConnection, files: _Files, run_rows: pd.DataFrame) -> None:
    """Copy the run table and every finished run's table into ``con`` as in-memory tables."""
    con.register("runs_frame", run_rows)
    con.execute("CREATE TABLE runs AS SELECT * FROM runs_frame")
    con.unregister("runs_frame")
    tables = list(_table_files(files, run_rows))
    if not tables:
        con.execute("CREATE TABLE tables AS SELECT NULL::VARCHAR AS run WHERE false")
    elif files.remote:
        frames = [files.read_parquet(path).assign(run=run) for run, path in tables]
        con.register("tables_frame", pd.concat(frames, ignore_index=True))
        con.execute("CREATE TABLE tables AS SELECT * FROM tables_frame")
        con.unregister("tables_frame")
    else:
        paths = ", ".join(_quote(path) for _, path in tables)
        con.execute(
            "CREATE TABLE tables AS SELECT * EXCLUDE (filename), "
            r"regexp_extract(filename, '([^/\\]+)[/\\]table\.parquet$', 1) AS run "
            f"FROM read_parquet([{paths}], filename = true, union_by_name = true)"
        )
    table_columns = {row[0] for row in con.execute("DESCRIBE SELECT * FROM tables").fetchall()}
    extra = [c for c in run_rows.columns if c not in table_columns]
    selected = ", ".join(f"r.{_ident(c)}" for c in extra)
    con.execute(
        f"CREATE VIEW results AS SELECT t.*{', ' + selected if selected else ''} "
        "FROM tables t JOIN runs r ON t.run = r.run"
    )


def _one_line(exc: Exception) -> str:
    """DuckDB's message without its ``LINE 1: ... ^^^`` pointer, on one line."""
    lines = str(exc).splitlines()
    cut = next((i for i, line in enumerate(lines) if line.startswith("LINE ")), len(lines))
    return " ".join(line.strip() for line in lines[:cut] if line.strip())


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def query(
    root: str | Path, *, where: str | None = None, sql: str | None = None, view: str = "results"
) -> pd.DataFrame:
    """Rows of ``view`` (``results``, ``runs`` or ``tables``) matching the SQL ``where``, sorted by
    run, step and depth; or the result of a whole ``sql`` statement over the three relations.

    Both run on the sandboxed connection of :func:`connect`: SQL that reaches for a file, a URL,
    another database, an extension or a setting is refused.

    Raises:
        DiffeoProbeError: no runs under ``root``, an unknown view, or SQL DuckDB refuses.
    """
    import duckdb

    if view not in ("results", "runs", "tables"):
        raise DiffeoProbeError(f"view must be results, runs or tables, got {view!r}")
    con = connect(root)
    try:
        if sql is None:
            columns = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()}
            order = ", ".join(_ident(c) for c in ORDER if c in columns)
            sql = f"SELECT * FROM {view}" + (f" WHERE {where}" if where else "")
            sql += f" ORDER BY {order}" if order else ""
        return con.execute(sql).fetchdf()
    except duckdb.Error as exc:
        flag = "--sql" if where is None else "--where"
        hint = ""
        if isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in str(
            exc
        ):
            hint = (
                " (only the tables runs, tables and results can be queried: files, URLs, "
                "ATTACH, COPY, extensions and settings are off)"
            )
        raise DiffeoProbeError(
            f"{flag}: DuckDB refused the query: {_one_line(exc)}{hint}"
        ) from None
    finally:
        con.close()


def export(table: pd.DataFrame, path: str | Path, *, keep: bool = False) -> Path:
    """Write a query's rows to ``.csv`` or ``.parquet``, atomically (``keep``: see
    :func:`~diffeoprobe.runs.write_table`).
    """
    return runs.write_table(table, path, keep=keep)
