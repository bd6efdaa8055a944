"""The local Glue crawler + Data Catalog: DuckDB views over the lake, and a JSON description.

`build_catalog` reads each lake table's manifest (only the files it lists), infers the schema and
partitions, and writes the SQL script of a DuckDB database with one view per table (data/catalog.sql,
DVC-tracked and byte-stable) and the database built from it (data/catalog.duckdb); a versioned table (`reviews`,
whose manifest names a record id and version column) gets two: `reviews`, the current version of
each review (what prepare, explore and monitor read), and `reviews_history`, every version.
`connect` opens it for every reader (explore, prepare, `reviewpipe query`), registering the S3
filesystem when the lake is on S3; `sandboxed=True` (user SQL: explore's sql/*.sql, `reviewpipe
query`) also turns DuckDB's external access off except for the lake files the views read, and
accepts only SELECT statements, so such SQL can neither read other files nor write any.

Local lake files are stored in the views relative to the database's folder when the lake URI is
relative (so a clone or `dvc pull` elsewhere still works); `connect` adds that folder to DuckDB's
`file_search_path`. From the plain duckdb CLI run `SET file_search_path='data'` first (the folder
holding the database). An absolute lake URI gives absolute paths.
"""

from __future__ import annotations

import hashlib
import os
import re
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
HISTORY_SUFFIX = "_history"
# Key/value facts a reader needs before it can query the views (which filesystem, which base dir).
INFO_TABLE = "reviewpipe_catalog_info"
# The files the views read: the only ones a sandboxed connection may open.
FILES_TABLE = "reviewpipe_catalog_files"
MISSING_HINT = "run `dvc repro catalog` (or `reviewpipe stage catalog`) first"
# Statements user SQL may run on a sandboxed connection (DESCRIBE, SUMMARIZE, FROM-first are SELECTs).
ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN")
_TIMESTAMP = re.compile(r"timestamp\[(\w+)(?:, tz=(.+))?\]")


def sql_path(database: str) -> str:
    """The catalog's SQL script beside its database: data/catalog.duckdb -> data/catalog.sql."""
    return os.path.splitext(database)[0] + ".sql"


def build_catalog(lake_uri: str, database: str, options: StorageOptions | None = None) -> dict[str, Any]:
    """Crawl the lake into the catalog: the SQL script that defines it (`sql_path(database)`, the
    stage's tracked output: it derives from the manifests only, so reruns are byte-identical) and the
    DuckDB database built from it (a DuckDB file carries a random id, so it is rebuilt from the
    script whenever it is missing or stale, see `open_catalog`). Returns the catalog description."""
    options = options or StorageOptions()
    database_dir = os.path.dirname(os.path.abspath(database))
    relative = not storage.is_remote(lake_uri) and not os.path.isabs(storage.local_path(lake_uri))
    statements = [
        f"CREATE TABLE {INFO_TABLE} (key VARCHAR, value VARCHAR)",
        f"INSERT INTO {INFO_TABLE} VALUES ('lake_uri', '{lake.sql_string(lake_uri)}'), "
        f"('local_paths', '{'relative_to_database_dir' if relative else 'absolute'}')",
        f"CREATE TABLE {FILES_TABLE} (path VARCHAR)",
    ]
    con = duckdb.connect()  # the views are checked and described in memory, then scripted
    try:
        _prepare_connection(con, lake_uri, database_dir, options)
        tables = {}
        for statement in statements:
            con.execute(statement)
        for table in TABLES:
            table_uri = storage.join(lake_uri, table)
            manifest = lake.read_manifest(table_uri, options)
            files = [_view_path(uri, database_dir, relative) for uri in lake.table_files(table_uri, options)]
            views = []
            if files:
                views.append(
                    f"INSERT INTO {FILES_TABLE} VALUES "
                    + ", ".join(f"('{lake.sql_string(f)}')" for f in files)
                )
            source = f"({_select_sql(con, manifest, files)})"
            if manifest.get("record_id") and manifest.get("version_column"):
                views.append(f"CREATE VIEW {table}{HISTORY_SUFFIX} AS SELECT * FROM {source}")
                views.append(f"CREATE VIEW {table} AS {lake.current_sql(manifest, table + HISTORY_SUFFIX)}")
            else:
                views.append(f"CREATE VIEW {table} AS SELECT * FROM {source}")
            for statement in views:
                con.execute(statement)
            statements += views
            tables[table] = describe_table(con, table, table_uri, manifest)
    finally:
        con.close()
    script = (
        "-- reviewpipe catalog: views over the lake's manifest-listed files (written by `reviewpipe stage"
        " catalog`).\n-- Run it in DuckDB with file_search_path set to this folder; reviewpipe builds "
        f"{os.path.basename(database)} from it.\n" + "".join(f"{s};\n" for s in statements)
    )
    storage.write_text(sql_path(database), script)
    materialize(database, script, options)
    return {"lake": lake_uri, "tables": tables}


def materialize(database: str, script: str, options: StorageOptions | None = None) -> None:
    """Build the DuckDB database `database` from the catalog script, atomically (it records the
    script's hash, so `open_catalog` can tell when it is stale). The views bind to the lake files as
    they are created, so the lake's filesystem is registered first (from the script's info rows)."""
    database = os.path.abspath(database)
    os.makedirs(os.path.dirname(database), exist_ok=True)
    storage.remove_stale_siblings(database)  # a killed build's leftovers
    tmp = storage.temp_name(database)
    try:
        con = duckdb.connect(tmp)
        try:
            prepared = False
            for statement in con.extract_statements(script):
                if not prepared and statement.type.name == "CREATE" and FILES_TABLE in statement.query:
                    info = dict(con.execute(f"SELECT key, value FROM {INFO_TABLE}").fetchall())
                    _prepare_connection(
                        con, info["lake_uri"], os.path.dirname(database), options or StorageOptions()
                    )
                    prepared = True
                con.execute(statement)
            con.execute(f"INSERT INTO {INFO_TABLE} VALUES ('script_sha256', ?)", [_sha256(script)])
            con.execute("CHECKPOINT")
        finally:
            con.close()
        storage.publish_local(tmp, database)
    finally:
        for leftover in (tmp, f"{tmp}.wal"):
            if os.path.exists(leftover):
                os.remove(leftover)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def describe_table(
    con: duckdb.DuckDBPyConnection, table: str, location: str, manifest: dict[str, Any]
) -> dict[str, Any]:
    """Location, columns and types, partitions (with rows per value), row count and batches of one
    view (a versioned table: its current rows, and `versions`, the rows of every version).

    Fails when the files hold a different number of rows than the manifest says.
    """
    versioned = bool(manifest.get("record_id") and manifest.get("version_column"))
    every = f"{table}{HISTORY_SUFFIX}" if versioned else table
    columns = [
        {"name": name, "type": dtype} for name, dtype, *_ in con.execute(f"DESCRIBE {table}").fetchall()
    ]
    stored = con.execute(f"SELECT COUNT(*) FROM {every}").fetchone()[0]
    if manifest.get("rows") is not None and stored != manifest["rows"]:
        raise ReviewpipeError(
            f"lake table {location}: its files hold {stored} rows but the manifest says "
            f"{manifest['rows']}; the lake is inconsistent, rerun `dvc repro ingest`."
        )
    rows = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] if versioned else stored
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
    description = {
        "location": location,
        "format": "parquet",
        "files": len(manifest.get("files", [])),
        "columns": columns,
        "partitions": partitions,
        "rows": rows,
        "run_id": manifest.get("run_id"),
        "created_at": manifest.get("created_at"),
        "batches": [
            {k: b[k] for k in ("batch_id", "source", "ingested_at", "rows") if k in b}
            for b in manifest.get("batches", [])
        ],
    }
    if versioned:
        description.update(
            versions=stored,
            history_view=every,
            record_id=manifest["record_id"],
            version_column=manifest["version_column"],
        )
    return description


def check_engine(engine: str) -> str:
    """catalog.engine, checked: duckdb (local views) or athena (Glue tables, queries on Athena)."""
    if engine not in ENGINES:
        raise ReviewpipeError(f"catalog.engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


def connect(params: Any, read_only: bool = True, sandboxed: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to the catalog in `params.catalog.database`, ready to query."""
    database = section(params, "catalog").database
    return open_catalog(database, StorageOptions.from_params(params.get("storage")), read_only, sandboxed)


def open_catalog(
    database: str, options: StorageOptions | None = None, read_only: bool = True, sandboxed: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open a catalog database file (built first from its script when missing or stale): registers
    S3 and the base folder its views need. `sandboxed`: file access limited to the lake files the
    views read (see the module doc)."""
    _ensure_built(database, options)
    try:
        con = duckdb.connect(database, read_only=read_only)
    except duckdb.Error as exc:
        raise ReviewpipeError(f"cannot open catalog database {database}: {exc}") from exc
    try:
        info = dict(con.execute(f"SELECT key, value FROM {INFO_TABLE}").fetchall())
        files = (
            [row[0] for row in con.execute(f"SELECT path FROM {FILES_TABLE}").fetchall()] if sandboxed else []
        )
    except duckdb.CatalogException as exc:
        con.close()
        raise ReviewpipeError(f"{database} is not a reviewpipe catalog: {MISSING_HINT}.") from exc
    database_dir = os.path.dirname(os.path.abspath(database))
    _prepare_connection(con, info["lake_uri"], database_dir, options or StorageOptions())
    if sandboxed:
        _sandbox(con, files, database_dir)
    return con


def _ensure_built(database: str, options: StorageOptions | None) -> None:
    """(Re)build `database` from its script when it is missing or was built from another script
    (a fresh clone or `dvc pull` brings the script, the DVC-tracked output, not the database)."""
    script_file = sql_path(database)
    if not os.path.exists(script_file):
        if not os.path.exists(database):
            raise ReviewpipeError(f"catalog database not found at {database}: {MISSING_HINT}.")
        return  # a database without its script (built by an older reviewpipe): use it as it is
    script = storage.read_bytes(script_file).decode("utf-8")
    if os.path.exists(database):
        try:
            con = duckdb.connect(database, read_only=True)
            try:
                row = con.execute(f"SELECT value FROM {INFO_TABLE} WHERE key = 'script_sha256'").fetchone()
            finally:
                con.close()
        except duckdb.Error:
            row = None
        if row is not None and row[0] == _sha256(script):
            return
    materialize(database, script, options)


def _sandbox(con: duckdb.DuckDBPyConnection, files: list[str], database_dir: str) -> None:
    """Only the listed files may be opened, as DuckDB checks them: the path as the view holds it,
    and resolved against the database folder. Locked, so SQL cannot switch it back."""
    allowed = set(files)
    allowed.update(os.path.normpath(os.path.join(database_dir, f)) for f in files if not storage.is_remote(f))
    paths = ", ".join(f"'{lake.sql_string(p)}'" for p in sorted(allowed))
    con.execute(f"SET allowed_paths = [{paths}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check_statements(con: duckdb.DuckDBPyConnection, sql: str, name: str) -> None:
    """User SQL on a sandboxed connection: SELECT (and EXPLAIN) statements only."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ReviewpipeError(f"{name} failed: {exc}") from exc
    refused = [s.type.name for s in statements if s.type.name not in ALLOWED_STATEMENTS]
    if refused:
        raise ReviewpipeError(
            f"{name}: only SELECT queries run against the catalog, not {', '.join(refused)}; "
            "write results with `reviewpipe query ... -o FILE` (or explore's result files) instead."
        )


def _prepare_connection(
    con: duckdb.DuckDBPyConnection, lake_uri: str, database_dir: str, options: StorageOptions
) -> None:
    storage.register_with_duckdb(con, lake_uri, options)
    # Relative view paths resolve against the database's folder, from any working directory.
    con.execute(f"SET file_search_path = '{lake.sql_string(database_dir)}'")


def _select_sql(con: duckdb.DuckDBPyConnection, manifest: dict[str, Any], files: list[str]) -> str:
    if not files:  # an empty table (e.g. no rejects): typed, zero rows
        columns = ", ".join(
            f'CAST(NULL AS {_duckdb_type(con, dtype) or "VARCHAR"}) AS "{name}"'
            for name, dtype in manifest.get("columns", {}).items()
        )
        return f"SELECT {columns or 'NULL AS empty'} WHERE false"
    file_list = "[" + ", ".join(f"'{lake.sql_string(f)}'" for f in files) + "]"
    file_columns = {
        row[0]
        for row in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{lake.sql_string(files[0])}', hive_partitioning = false)"
        ).fetchall()
    }
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
    timestamp = _TIMESTAMP.fullmatch(str(arrow_type))
    try:
        arrow = (
            pa.timestamp(timestamp[1], tz=timestamp[2]) if timestamp else pa.type_for_alias(str(arrow_type))
        )
    except (ValueError, KeyError, TypeError):
        return None
    con.register("arrow_type_probe", pa.table({"c": pa.array([], type=arrow)}))
    try:
        return con.execute("DESCRIBE SELECT * FROM arrow_type_probe").fetchall()[0][1]
    finally:
        con.unregister("arrow_type_probe")


def _view_path(uri: str, database_dir: str, relative: bool) -> str:
    if storage.is_remote(uri):
        return uri
    path = os.path.abspath(storage.local_path(uri))
    return os.path.relpath(path, database_dir) if relative else path
