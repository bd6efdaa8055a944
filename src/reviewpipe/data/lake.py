"""The data lake: parquet tables (Hive-partitioned or flat) under a local folder or s3:// prefix.

Each table directory holds data files and `_manifest.json`, written LAST, that lists exactly the
files of the current version. Readers use only the files the manifest lists, so a reader never sees
a half-written table:

1. write the new files under names no reader knows yet (`part-<run_id>.parquet`; locally each file
   is also written to a temporary name and renamed);
2. publish by replacing `_manifest.json` (an atomic rename locally, one PUT on S3);
3. delete the files the new manifest does not list (the previous version, leftovers of crashed runs).

Manifest: {"table", "files": [paths relative to the table dir], "partition_by", "rows",
"columns": {name: arrow type} (keys sorted, as storage.write_json writes), "run_id", "created_at"}.
Partitioned tables keep the partition column out of the files (Hive style: it lives in the path). Null partition values are written as
`__HIVE_DEFAULT_PARTITION__`, which DuckDB's and Arrow's hive partitioning read back as NULL; other
values are percent-encoded like Hive/Arrow do (DuckDB decodes them).
"""

from __future__ import annotations

import os
import uuid
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
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MANIFEST_KEYS = ("table", "files", "partition_by", "rows", "columns", "run_id", "created_at")


def new_run_id(now: datetime | None = None) -> str:
    """Unique, sortable id for one write: 20250101T120000Z-1a2b3c4d."""
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def table_uri(lake_uri: str, table: str) -> str:
    return storage.join(lake_uri, table)


def partition_dir(column: str, value: Any) -> str:
    """`product_category=Fine gauge`; null -> `product_category=__HIVE_DEFAULT_PARTITION__`."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return f"{column}={HIVE_NULL}"
    return f"{column}={quote(str(value), safe=' ')}"


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def _write_parquet(fs: Any, path: str, table: pa.Table, local: bool) -> None:
    if local:
        fs.makedirs(fs._parent(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    else:
        with fs.open(path, "wb") as f:  # one object, visible only when complete
            pq.write_table(table, f)


def write_table_files(table_uri: str, frame: pd.DataFrame, partition_by: str | None, run_id: str,
                      options: StorageOptions | None = None) -> list[str]:
    """Step 1: write the frame's data files under new names; returns them relative to the table dir.
    Not visible to readers until `commit_manifest`. Partitioned tables leave the partition column out
    of the files (it lives in the path); a flat table always gets one file, even when empty."""
    fs, root = get_fs(table_uri, options)
    local = not is_remote(table_uri)
    name = f"part-{run_id}.parquet"
    files: list[str] = []
    if not partition_by:
        _write_parquet(fs, f"{root}/{name}", _arrow_table(frame), local)
        return [name]
    if partition_by not in frame.columns:
        raise ReviewpipeError(
            f"lake.partition_by={partition_by!r} is not a column; choose one of {list(frame.columns)}")
    data_columns = [c for c in frame.columns if c != partition_by]
    for value, part in frame.groupby(partition_by, dropna=False, sort=True):
        key = value[0] if isinstance(value, tuple) else value
        rel = f"{partition_dir(partition_by, key)}/{name}"
        _write_parquet(fs, f"{root}/{rel}", _arrow_table(part[data_columns]), local)
        files.append(rel)
    return files


def column_types(frame: pd.DataFrame) -> dict[str, str]:
    """{column: arrow type} as parquet stores them (the partition column included)."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    return {f.name: str(f.type) for f in schema}


def commit_manifest(table_uri: str, table: str, files: list[str], frame: pd.DataFrame,
                    partition_by: str | None, run_id: str, options: StorageOptions | None = None,
                    created_at: datetime | None = None) -> dict[str, Any]:
    """Step 2: publish — replace the manifest so readers switch to `files` in one step."""
    manifest = {
        "table": table,
        "files": sorted(files),
        "partition_by": partition_by or None,
        "rows": int(len(frame)),
        "columns": column_types(frame),
        "run_id": run_id,
        "created_at": (created_at or datetime.now(UTC)).isoformat(),
    }
    storage.write_json(storage.join(table_uri, MANIFEST), manifest, options)
    return manifest


def remove_unlisted(table_uri: str, options: StorageOptions | None = None) -> list[str]:
    """Step 3: delete every file under the table dir that the current manifest does not list
    (previous versions, temporary files of crashed writes). Returns the removed relative paths."""
    manifest = read_manifest(table_uri, options)
    keep = set(manifest["files"]) | {MANIFEST}
    fs, root = get_fs(table_uri, options)
    root = root.rstrip("/")
    removed = []
    for path in sorted(fs.find(root)):
        rel = path[len(root) + 1:]
        if rel not in keep:
            fs.rm_file(path)
            removed.append(rel)
    if not is_remote(table_uri):  # local folders outlive their files; S3 prefixes do not
        for dirpath, dirnames, filenames in os.walk(root, topdown=False):
            if dirpath != root and not dirnames and not filenames:
                os.rmdir(dirpath)
    return removed


def publish_table(lake_uri: str, table: str, frame: pd.DataFrame, partition_by: str | None = None,
                  run_id: str | None = None, options: StorageOptions | None = None) -> dict[str, Any]:
    """Write `frame` as lake table `table` (steps 1-3); returns the new manifest."""
    run_id = run_id or new_run_id()
    uri = table_uri(lake_uri, table)
    files = write_table_files(uri, frame, partition_by, run_id, options)
    manifest = commit_manifest(uri, table, files, frame, partition_by, run_id, options)
    remove_unlisted(uri, options)
    return manifest


def read_manifest(table_uri: str, options: StorageOptions | None = None) -> dict[str, Any]:
    """The table's current manifest; a clear error when the table has not been written."""
    uri = storage.join(table_uri, MANIFEST)
    if not storage.exists(uri, options):
        raise ReviewpipeError(
            f"no lake table at {table_uri} ({MANIFEST} missing). Run the ingest stage first: "
            "`dvc repro ingest` (or `reviewpipe stage ingest`), with the same lake.uri.")
    manifest = storage.read_json(uri, options)
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ReviewpipeError(f"{uri} is not a reviewpipe manifest (missing {missing}); re-run ingest")
    return manifest


def table_files(table_uri: str, options: StorageOptions | None = None) -> list[str]:
    """Full URIs of the table's current files (local paths for a local lake), for DuckDB or pandas."""
    manifest = read_manifest(table_uri, options)
    base = table_uri[len("file://"):] if table_uri.startswith("file://") else table_uri
    return [storage.join(base, rel) for rel in manifest["files"]]


_DUCKDB_TYPES = {"string": "VARCHAR", "large_string": "VARCHAR", "int64": "BIGINT", "int32": "INTEGER",
                 "double": "DOUBLE", "bool": "BOOLEAN"}


def duckdb_scan(table_uri: str, options: StorageOptions | None = None) -> str:
    """A DuckDB `read_parquet(...)` expression over the table's current files (the partition
    column typed as the manifest says, nulls from __HIVE_DEFAULT_PARTITION__)."""
    manifest = read_manifest(table_uri, options)
    files = ", ".join("'" + f.replace("'", "''") + "'" for f in table_files(table_uri, options))
    partition_by = manifest["partition_by"]
    if not partition_by:
        return f"read_parquet([{files}])"
    sql_type = _DUCKDB_TYPES.get(manifest["columns"].get(partition_by, "string"), "VARCHAR")
    return (f"read_parquet([{files}], hive_partitioning = true, "
            f"hive_types = {{'{partition_by}': {sql_type}}})")


def read_table(table_uri: str, options: StorageOptions | None = None) -> pd.DataFrame:
    """The whole table through DuckDB (small tables, tests, notebooks). As in Hive/Athena, the
    partition column comes last."""
    import duckdb

    con = duckdb.connect()
    try:
        storage.register_with_duckdb(con, table_uri, options)
        return con.sql(f"SELECT * FROM {duckdb_scan(table_uri, options)}").df()
    finally:
        con.close()
