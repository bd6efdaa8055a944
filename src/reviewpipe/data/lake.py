"""The data lake: parquet tables (Hive-partitioned or flat) under a local folder or s3:// prefix.

Each table directory holds data files and `_manifest.json`, written LAST, that lists exactly the
files of the current version. Readers use only the files the manifest lists, so a reader never sees
a half-written table:

1. write the new files under names no reader knows yet (`part-<run_id>.parquet`, every file
   published whole through `storage.open_atomic`);
2. publish by replacing `_manifest.json` (an atomic rename locally, one PUT on S3);
3. retire the files the new manifest no longer lists and delete them only once they have been
   retired for `retain_seconds` (`remove_unlisted`): a reader that read the previous manifest a
   moment ago can still open its files.

Appending (`append_files`) adds a batch's files to the listed ones; nothing is rewritten, so
readers of the previous manifest are unaffected. Names derive from content (`content_id`), never
from the clock, so the same input and params give byte-identical tables and manifests.

Manifest: {"table", "files": [paths relative to the table dir], "partition_by", "rows",
"columns": {name: arrow type}, "run_id" (the last publish's content id), "created_at" (the last
batch's ingested_at, or null), "batches": [{batch_id, source, ingested_at, rows, files}, ...],
"record_id" / "version_column" (versioned tables: the current version of a record is its row
with the latest version_column)}. Partitioned tables keep the partition column out of the files
(Hive style: it lives in the path). Null partition values are written as
`__HIVE_DEFAULT_PARTITION__`, which DuckDB's and Arrow's hive partitioning read back as NULL; other
values are percent-encoded like Hive/Arrow do (DuckDB decodes them).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reviewpipe import storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions, get_fs, is_remote

MANIFEST = "_manifest.json"
# {relative path: ISO time it stopped being listed}: files kept for readers of older manifests.
RETIRED = "_retired.json"
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MANIFEST_KEYS = ("table", "files", "partition_by", "rows", "columns", "run_id", "created_at")
# Keys every manifest this version writes also holds (older manifests read as if empty/None).
VERSIONING_KEYS = ("batches", "record_id", "version_column")


def content_id(*parts: Any) -> str:
    """A 16-hex-digit id from content (sha256 of the parts' text): equal input, equal id."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode("utf-8"))
        digest.update(b"\x1f")
    return digest.hexdigest()[:16]


def frame_id(frame: pd.DataFrame) -> str:
    """A content id of a frame's columns and values (row order included)."""
    values = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes() if len(frame) else b""
    return content_id(list(frame.columns), [str(t) for t in frame.dtypes], values)


def table_uri(lake_uri: str, table: str) -> str:
    return storage.join(lake_uri, table)


def partition_dir(column: str, value: Any) -> str:
    """`product_category=Fine gauge`; null -> `product_category=__HIVE_DEFAULT_PARTITION__`."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return f"{column}={HIVE_NULL}"
    return f"{column}={quote(str(value), safe=' ')}"


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def write_file(
    uri: str,
    batches: Iterable[pa.RecordBatch | pa.Table],
    schema: pa.Schema,
    options: StorageOptions | None = None,
    durable: bool = True,
) -> int:
    """Stream record batches into one parquet file published whole (one row group per batch);
    returns its row count. `durable=False` skips the fsync (scratch files)."""
    rows = 0
    with storage.open_atomic(uri, "wb", options, durable) as f, pq.ParquetWriter(f, schema) as writer:
        for batch in batches:
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch], schema)
            writer.write_table(table.cast(schema))
            rows += len(table)
    return rows


def write_table_files(
    table_uri: str,
    frame: pd.DataFrame,
    partition_by: str | None,
    run_id: str,
    options: StorageOptions | None = None,
) -> list[str]:
    """Step 1: write the frame's data files under new names; returns them relative to the table dir.
    Not visible to readers until `commit_manifest`. Partitioned tables leave the partition column out
    of the files (it lives in the path); a flat table always gets one file, even when empty."""
    name = f"part-{run_id}.parquet"
    if not partition_by:
        table = _arrow_table(frame)
        write_file(storage.join(table_uri, name), [table], table.schema, options)
        return [name]
    if partition_by not in frame.columns:
        raise ReviewpipeError(
            f"lake.partition_by={partition_by!r} is not a column; choose one of {list(frame.columns)}"
        )
    data_columns = [c for c in frame.columns if c != partition_by]
    files: list[str] = []
    for value, part in frame.groupby(partition_by, dropna=False, sort=True):
        key = value[0] if isinstance(value, tuple) else value
        rel = f"{partition_dir(partition_by, key)}/{name}"
        table = _arrow_table(part[data_columns])
        write_file(storage.join(table_uri, rel), [table], table.schema, options)
        files.append(rel)
    return files


def column_types(frame: pd.DataFrame) -> dict[str, str]:
    """{column: arrow type} as parquet stores them (the partition column included)."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    return {f.name: str(f.type) for f in schema}


def schema_types(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def new_manifest(
    table: str,
    partition_by: str | None,
    columns: dict[str, str],
    record_id: str | None = None,
    version_column: str | None = None,
) -> dict[str, Any]:
    """The manifest of an empty table (the start of a rebuild or of a first append)."""
    return {
        "table": table,
        "files": [],
        "partition_by": partition_by or None,
        "rows": 0,
        "columns": dict(columns),
        "run_id": None,
        "created_at": None,
        "batches": [],
        "record_id": record_id,
        "version_column": version_column,
    }


def with_batch(
    manifest: dict[str, Any], batch: dict[str, Any], files: list[str], rows: int, run_id: str
) -> dict[str, Any]:
    """`manifest` plus one appended batch's files and rows (a new dict; nothing written)."""
    listed = set(manifest["files"])
    clash = [f for f in files if f in listed]
    if clash:
        raise ReviewpipeError(f"lake table {manifest['table']}: batch files {clash} are already listed")
    return {
        **manifest,
        "files": sorted([*manifest["files"], *files]),
        "rows": int(manifest["rows"]) + int(rows),
        "run_id": run_id,
        "created_at": batch.get("ingested_at", manifest["created_at"]),
        "batches": [*manifest.get("batches", []), {**batch, "rows": int(rows), "files": sorted(files)}],
    }


def commit_manifest(
    table_uri: str,
    table: str | dict[str, Any],
    files: list[str] | None = None,
    frame: pd.DataFrame | None = None,
    partition_by: str | None = None,
    run_id: str | None = None,
    options: StorageOptions | None = None,
    created_at: datetime | str | None = None,
    *,
    expected_run_id: str | None | bool = False,
) -> dict[str, Any]:
    """Step 2: publish: replace the manifest so readers switch to the new files in one step.

    Pass a whole manifest dict as `table`, or (name, files, frame, partition_by, run_id) for a
    table holding exactly `frame`. `expected_run_id` (when given) must be the run_id of the manifest
    being replaced: a concurrent writer that published meanwhile makes this fail instead of being
    silently overwritten."""
    if isinstance(table, dict):
        manifest = table
    else:
        assert files is not None and frame is not None and run_id is not None
        stamp = created_at.isoformat() if isinstance(created_at, datetime) else created_at
        manifest = {
            **new_manifest(table, partition_by, column_types(frame)),
            "files": sorted(files),
            "rows": int(len(frame)),
            "run_id": run_id,
            "created_at": stamp,
        }
    if expected_run_id is not False:
        current = read_manifest_or_none(table_uri, options)
        found = current["run_id"] if current else None
        if found != expected_run_id:
            raise ReviewpipeError(
                f"lake table {table_uri} changed while this write ran (its manifest is now {found}, "
                f"not {expected_run_id}): another ingest published meanwhile. Nothing of this run is "
                "listed; run it again."
            )
    storage.write_json(storage.join(table_uri, MANIFEST), manifest, options)
    return manifest


def _walk_files(table_uri: str, options: StorageOptions | None) -> list[str]:
    fs, root = get_fs(table_uri, options)
    root = root.rstrip("/")
    if not fs.exists(root):
        return []
    fs.invalidate_cache()
    return sorted(path[len(root) + 1 :] for path in fs.find(root))


def remove_unlisted(
    table_uri: str, options: StorageOptions | None = None, retain_seconds: float = 0, now: float | None = None
) -> list[str]:
    """Step 3: delete the files the current manifest does not list, once they have been unlisted
    for `retain_seconds` (they are retired in `_retired.json` first, with the time they were found
    unlisted). Temporary files of a live write are left alone; those of a dead writer are deleted.
    Returns the removed relative paths."""
    manifest = read_manifest(table_uri, options)
    keep = set(manifest["files"]) | {MANIFEST, RETIRED}
    fs, root = get_fs(table_uri, options)
    root = root.rstrip("/")
    now = time.time() if now is None else now
    retired_uri = storage.join(table_uri, RETIRED)
    retired: dict[str, str] = (
        storage.read_json(retired_uri, options) if storage.exists(retired_uri, options) else {}
    )
    removed, still = [], {}
    for rel in _walk_files(table_uri, options):
        if rel in keep:
            continue
        path = f"{root}/{rel}"
        if storage.TMP_MARK in os.path.basename(rel):
            if not is_remote(table_uri) and storage.is_stale_temp(path, now):
                os.remove(path)
                removed.append(rel)
            continue
        since = retired.get(rel)
        since_ts = datetime.fromisoformat(since).timestamp() if since else now
        if now - since_ts >= retain_seconds:
            fs.rm_file(path)
            removed.append(rel)
        else:
            still[rel] = since or datetime.fromtimestamp(now, UTC).isoformat()
    if still:
        storage.write_json(retired_uri, still, options)
    elif storage.exists(retired_uri, options):
        fs.rm_file(f"{root}/{RETIRED}")
    if not is_remote(table_uri):  # local folders outlive their files; S3 prefixes do not
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            if dirpath != root and not dirnames and not filenames:
                os.rmdir(dirpath)
    return removed


def publish_table(
    lake_uri: str,
    table: str,
    frame: pd.DataFrame,
    partition_by: str | None = None,
    run_id: str | None = None,
    options: StorageOptions | None = None,
    created_at: datetime | str | None = None,
    retain_seconds: float = 0,
) -> dict[str, Any]:
    """Write `frame` as the whole of lake table `table` (steps 1-3); returns the new manifest.
    The run id defaults to the frame's content id, so the same frame gives the same files."""
    run_id = run_id or frame_id(frame)
    uri = table_uri(lake_uri, table)
    files = write_table_files(uri, frame, partition_by, run_id, options)
    manifest = commit_manifest(uri, table, files, frame, partition_by, run_id, options, created_at)
    remove_unlisted(uri, options, retain_seconds)
    return manifest


def read_manifest_or_none(table_uri: str, options: StorageOptions | None = None) -> dict[str, Any] | None:
    uri = storage.join(table_uri, MANIFEST)
    fs, path = get_fs(uri, options)
    fs.invalidate_cache()
    return read_manifest(table_uri, options) if fs.exists(path) else None


def read_manifest(table_uri: str, options: StorageOptions | None = None) -> dict[str, Any]:
    """The table's current manifest; a clear error when the table has not been written."""
    uri = storage.join(table_uri, MANIFEST)
    if not storage.exists(uri, options):
        raise ReviewpipeError(
            f"no lake table at {table_uri} ({MANIFEST} missing). Run the ingest stage first: "
            "`dvc repro ingest` (or `reviewpipe stage ingest`), with the same lake.uri."
        )
    manifest = storage.read_json(uri, options)
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ReviewpipeError(f"{uri} is not a reviewpipe manifest (missing {missing}); re-run ingest")
    for key in VERSIONING_KEYS:
        manifest.setdefault(key, [] if key == "batches" else None)
    return manifest


def files_of(table_uri: str, manifest: dict[str, Any]) -> list[str]:
    """Full URIs (local paths for a local lake) of the files a manifest lists."""
    base = storage.local_path(table_uri)
    return [storage.join(base, rel) for rel in manifest["files"]]


def table_files(table_uri: str, options: StorageOptions | None = None) -> list[str]:
    """Full URIs of the table's current files (local paths for a local lake), for DuckDB or pandas."""
    return files_of(table_uri, read_manifest(table_uri, options))


_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "large_string": "VARCHAR",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "double": "DOUBLE",
    "bool": "BOOLEAN",
}


def sql_string(text: str) -> str:
    """A SQL string literal's body ('' for ')."""
    return text.replace("'", "''")


def scan_sql(manifest: dict[str, Any], files: list[str]) -> str:
    """A DuckDB `read_parquet(...)` expression over `files` (the partition column typed as the
    manifest says, nulls from __HIVE_DEFAULT_PARTITION__)."""
    quoted = ", ".join(f"'{sql_string(f)}'" for f in files)
    partition_by = manifest["partition_by"]
    if not partition_by:
        return f"read_parquet([{quoted}], union_by_name = true)"
    sql_type = _DUCKDB_TYPES.get(manifest["columns"].get(partition_by, "string"), "VARCHAR")
    return (
        f"read_parquet([{quoted}], hive_partitioning = true, union_by_name = true, "
        f"hive_types = {{'{partition_by}': {sql_type}}})"
    )


def current_sql(manifest: dict[str, Any], source: str) -> str:
    """SELECT of the current version of each record of `source` (all rows for unversioned tables)."""
    record_id, version = manifest.get("record_id"), manifest.get("version_column")
    if not record_id or not version:
        return f"SELECT * FROM {source}"
    return (
        f"SELECT * FROM {source} QUALIFY row_number() OVER "
        f'(PARTITION BY "{record_id}" ORDER BY "{version}" DESC) = 1'
    )


def duckdb_scan(table_uri: str, options: StorageOptions | None = None) -> str:
    """A DuckDB `read_parquet(...)` expression over the table's current files (every version)."""
    manifest = read_manifest(table_uri, options)
    return scan_sql(manifest, files_of(table_uri, manifest))


def _query(table_uri: str, options: StorageOptions | None, sql: str) -> pd.DataFrame:
    import duckdb

    con = duckdb.connect()
    try:
        storage.register_with_duckdb(con, table_uri, options)
        return con.sql(sql).df()
    finally:
        con.close()


def read_table(table_uri: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """The whole table through DuckDB, every version of every record (small tables, tests,
    notebooks). As in Hive/Athena, the partition column comes last."""
    manifest = read_manifest(table_uri, options)
    files = files_of(table_uri, manifest)
    if not files:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in manifest["columns"]})
    return _query(table_uri, options, f"SELECT * FROM {scan_sql(manifest, files)}")


def read_current(table_uri: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """The current version of each record (all rows of an unversioned table), in record-id order."""
    manifest = read_manifest(table_uri, options)
    files = files_of(table_uri, manifest)
    if not files:
        return read_table(table_uri, options)
    order = f' ORDER BY "{manifest["record_id"]}"' if manifest.get("record_id") else ""
    return _query(
        table_uri, options, f"SELECT * FROM ({current_sql(manifest, scan_sql(manifest, files))}){order}"
    )


def iter_current(
    table_uri: str, columns: list[str], rows: int, options: StorageOptions | None = None
) -> Iterator[pd.DataFrame]:
    """The current version of each record, `columns` only, in frames of up to `rows` rows, in
    record-id order (streamed from DuckDB: memory bounded by the frame)."""
    import duckdb

    manifest = read_manifest(table_uri, options)
    files = files_of(table_uri, manifest)
    if not files:
        return
    missing = [c for c in columns if c not in manifest["columns"]]
    if missing:
        raise ReviewpipeError(
            f"lake table {table_uri} has no column(s) {missing}; it has {sorted(manifest['columns'])}"
        )
    order = manifest.get("record_id") or columns[0]
    select = ", ".join(f'"{c}"' for c in columns)
    con = duckdb.connect()
    try:
        storage.register_with_duckdb(con, table_uri, options)
        reader = con.sql(
            f'SELECT {select} FROM ({current_sql(manifest, scan_sql(manifest, files))}) ORDER BY "{order}"'
        ).to_arrow_reader(rows)
        for batch in reader:
            yield batch.to_pandas()
    finally:
        con.close()
