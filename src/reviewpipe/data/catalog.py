"""The local Glue crawler + Data Catalog: DuckDB views over the lake, and a JSON description.

`build_catalog` reads each lake table's manifest (only the files it lists), infers the schema and
partitions, and writes a DuckDB database with one view per table. `connect` opens it for every
reader (explore, prepare, `reviewpipe query`), registering the S3 filesystem when the lake is on S3.

Local lake files are stored in the views relative to the database's folder when the lake URI is
relative (so a clone or `dvc pull` elsewhere still works); `connect` adds that folder to DuckDB's
`file_search_path`. From the plain duckdb CLI run `SET file_search_path='data'` first (the folder
holding the database). An absolute lake URI gives absolute paths.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import duckdb
import pyarrow as pa

from reviewpipe import storage
from reviewpipe.config import section
from reviewpipe.data import lake
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions

TABLES: tuple[str, ...] = ("reviews", "rejects")
ENGINES: tuple[str, ...] = ("duckdb", "athena")  # catalog.engine: who runs explore's and query's SQL
# Key/value facts a reader needs before it can query the views (which filesystem, which base dir).
INFO_TABLE = "reviewpipe_catalog_info"
MISSING_HINT = "run `dvc repro catalog` (or `reviewpipe stage catalog`) first"


def build_catalog(lake_uri: str, database: str, options: StorageOptions | None = None) -> dict[str, Any]:
    """Crawl the lake and (re)write `database` atomically; return the catalog description."""
    options = options or StorageOptions()
    database = os.path.abspath(database)
    os.makedirs(os.path.dirname(database), exist_ok=True)
    tmp = f"{database}.tmp-{uuid.uuid4().hex[:8]}"
    relative = not storage.is_remote(lake_uri) and not os.path.isabs(_local_path(lake_uri))
    try:
        con = duckdb.connect(tmp)
        try:
            _prepare_connection(con, lake_uri, os.path.dirname(database), options)
            con.execute(f"CREATE TABLE {INFO_TABLE} (key VARCHAR, value VARCHAR)")
            con.executemany(f"INSERT INTO {INFO_TABLE} VALUES (?, ?)", [
                ("lake_uri", lake_uri),
                ("local_paths", "relative_to_database_dir" if relative else "absolute"),
            ])
            tables = {}
            for table in TABLES:
                table_uri = storage.join(lake_uri, table)
                manifest = lake.read_manifest(table_uri, options)
                files = [_view_path(uri, os.path.dirname(database), relative)
                         for uri in lake.table_files(table_uri, options)]
                con.execute(f"CREATE VIEW {table} AS {_select_sql(con, manifest, files)}")
                tables[table] = describe_table(con, table, table_uri, manifest)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, database)
    finally:
        for leftover in (tmp, f"{tmp}.wal"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return {"lake": lake_uri, "tables": tables}


def describe_table(con: duckdb.DuckDBPyConnection, table: str, location: str,
                   manifest: dict[str, Any]) -> dict[str, Any]:
    """Location, columns and types, partitions (with rows per value) and row count of one view.

    Fails when the files hold a different number of rows than the manifest says.
    """
    columns = [{"name": name, "type": dtype}
               for name, dtype, *_ in con.execute(f"DESCRIBE {table}").fetchall()]
    rows = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    if manifest.get("rows") is not None and rows != manifest["rows"]:
        raise ReviewpipeError(
            f"lake table {location}: its files hold {rows} rows but the manifest says "
            f"{manifest['rows']}; the lake is inconsistent, rerun `dvc repro ingest`."
        )
    partition_by = manifest.get("partition_by")
    partitions = None
    if partition_by:
        counts = con.execute(
            f'SELECT "{partition_by}", COUNT(*) FROM {table} GROUP BY 1 ORDER BY 1 NULLS LAST'
        ).fetchall()
        partitions = {
            "column": partition_by,
            "type": next(c["type"] for c in columns if c["name"] == partition_by),
            "values": [{"value": value, "rows": n} for value, n in counts],
        }
    return {
        "location": location,
        "format": "parquet",
        "files": len(manifest.get("files", [])),
        "columns": columns,
        "partitions": partitions,
        "rows": rows,
        "run_id": manifest.get("run_id"),
        "created_at": manifest.get("created_at"),
    }


def check_engine(engine: str) -> str:
    """catalog.engine, checked: duckdb (local views) or athena (Glue tables, queries on Athena)."""
    if engine not in ENGINES:
        raise ReviewpipeError(f"catalog.engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


def connect(params: Any, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to the catalog in `params.catalog.database`, ready to query."""
    database = section(params, "catalog").database
    return open_catalog(database, StorageOptions.from_params(params.get("storage")), read_only)


def open_catalog(database: str, options: StorageOptions | None = None,
                 read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open a catalog database file: registers S3 and the base folder its views need."""
    if not os.path.exists(database):
        raise ReviewpipeError(f"catalog database not found at {database}: {MISSING_HINT}.")
    try:
        con = duckdb.connect(database, read_only=read_only)
    except duckdb.Error as exc:
        raise ReviewpipeError(f"cannot open catalog database {database}: {exc}") from exc
    try:
        info = dict(con.execute(f"SELECT key, value FROM {INFO_TABLE}").fetchall())
    except duckdb.CatalogException as exc:
        con.close()
        raise ReviewpipeError(f"{database} is not a reviewpipe catalog: {MISSING_HINT}.") from exc
    _prepare_connection(con, info["lake_uri"], os.path.dirname(os.path.abspath(database)),
                        options or StorageOptions())
    return con


def _prepare_connection(con: duckdb.DuckDBPyConnection, lake_uri: str, database_dir: str,
                        options: StorageOptions) -> None:
    storage.register_with_duckdb(con, lake_uri, options)
    # Relative view paths resolve against the database's folder, from any working directory.
    con.execute(f"SET file_search_path = '{_sql_string(database_dir)}'")


def _select_sql(con: duckdb.DuckDBPyConnection, manifest: dict[str, Any], files: list[str]) -> str:
    if not files:  # an empty table (e.g. no rejects): typed, zero rows
        columns = ", ".join(
            f'CAST(NULL AS {_duckdb_type(con, dtype) or "VARCHAR"}) AS "{name}"'
            for name, dtype in manifest.get("columns", {}).items()
        )
        return f"SELECT {columns or 'NULL AS empty'} WHERE false"
    file_list = "[" + ", ".join(f"'{_sql_string(f)}'" for f in files) + "]"
    file_columns = {row[0] for row in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{_sql_string(files[0])}', hive_partitioning = false)"
    ).fetchall()}
    partition_by = manifest.get("partition_by")
    options = "union_by_name = true"
    if partition_by and partition_by not in file_columns:
        # The partition column lives only in the paths (<column>=<value>/): type it as the manifest says.
        options += ", hive_partitioning = true"
        dtype = _duckdb_type(con, manifest.get("columns", {}).get(partition_by))
        if dtype:
            options += f", hive_types = {{'{partition_by}': {dtype}}}"
    else:
        options += ", hive_partitioning = false"
    return f"SELECT * FROM read_parquet({file_list}, {options})"


def _duckdb_type(con: duckdb.DuckDBPyConnection, arrow_type: str | None) -> str | None:
    """The DuckDB type for an Arrow type name from a manifest ("int64" -> BIGINT); None if unknown."""
    if not arrow_type:
        return None
    try:
        empty = pa.table({"c": pa.array([], type=pa.type_for_alias(str(arrow_type)))})
    except (ValueError, KeyError, TypeError):
        return None
    con.register("arrow_type_probe", empty)
    try:
        return con.execute("DESCRIBE SELECT * FROM arrow_type_probe").fetchall()[0][1]
    finally:
        con.unregister("arrow_type_probe")


def _view_path(uri: str, database_dir: str, relative: bool) -> str:
    if storage.is_remote(uri):
        return uri
    path = os.path.abspath(_local_path(uri))
    return os.path.relpath(path, database_dir) if relative else path


def _local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _sql_string(text: str) -> str:
    return text.replace("'", "''")
