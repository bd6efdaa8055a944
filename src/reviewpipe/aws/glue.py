"""catalog.engine=athena: the S3 lake registered in the Glue Data Catalog (what a Glue crawler does).

One database, one EXTERNAL parquet table per lake table (`reviews`, `rejects`), columns from the
files' parquet schema (in file order) with the manifest's types, and one Glue partition per Hive
partition directory the manifest lists. `sync_lake` reconciles: it creates what is missing, updates
a table whose columns/location/run changed, adds new partitions and drops partitions the lake no
longer has, so Athena sees exactly the manifest's version of the lake after each `catalog` run.

Athena reads every object under a partition's location, not the manifest: files an ingest wrote but
has not published yet, and files a new version retired but still keeps (lake.retain_seconds). So
sync_lake also records the manifest's files (as S3 URIs), and the queries read each table through a
CTE that keeps only rows whose `"$path"` is one of them (reviewpipe.aws.athena.current_views):
Athena counts exactly the rows DuckDB's catalog counts, whatever else lies under the partitions.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from reviewpipe import storage
from reviewpipe.aws.clients import aws_call, error_code
from reviewpipe.data import lake
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions

TABLES: tuple[str, ...] = ("reviews", "rejects")
HISTORY_SUFFIX = "_history"  # as reviewpipe.data.catalog names a versioned table's every-version view
PARQUET_SERDE = {
    "SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
    "Parameters": {"serialization.format": "1"},
}
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
# Arrow type names (as manifests record them) -> Hive/Glue types Athena reads parquet with.
HIVE_TYPES = {
    "string": "string",
    "large_string": "string",
    "int64": "bigint",
    "int32": "int",
    "int16": "smallint",
    "int8": "tinyint",
    "double": "double",
    "float": "float",
    "bool": "boolean",
    "date32[day]": "date",
}
CREATE_BATCH, DELETE_BATCH = 100, 25  # BatchCreatePartition / BatchDeletePartition limits


def hive_type(arrow_type: str, column: str, table: str) -> str:
    """The Glue column type for an Arrow type; timestamps of any unit/zone are `timestamp`."""
    if arrow_type.startswith("timestamp["):
        return "timestamp"
    if arrow_type not in HIVE_TYPES:
        raise ReviewpipeError(
            f"lake table {table!r}, column {column!r}: Arrow type {arrow_type} has no Glue mapping in "
            "reviewpipe.aws.glue.HIVE_TYPES; cast the column in ingest or add the mapping"
        )
    return HIVE_TYPES[arrow_type]


def s3_location(uri: str) -> str:
    """A folder URI as Glue stores locations: s3://bucket/prefix/ (trailing slash)."""
    if not uri.startswith("s3://"):
        raise ReviewpipeError(
            f"catalog.engine=athena needs the lake on S3, but lake.uri is {uri!r}; "
            "use `-S lake=s3` (and lake.uri=s3://bucket/prefix)"
        )
    return uri.rstrip("/") + "/"


def file_column_order(table_uri: str, manifest: dict[str, Any], options: StorageOptions | None) -> list[str]:
    """Column names in the order of the first data file's parquet schema (manifests sort them)."""
    import pyarrow.parquet as pq

    files = lake.table_files(table_uri, options)
    if not files:
        return sorted(c for c in manifest["columns"] if c != manifest["partition_by"])
    fs, path = storage.get_fs(files[0], options)
    with fs.open(path, "rb") as f:
        return [name for name in pq.read_schema(f).names if name != manifest["partition_by"]]


def table_input(table: str, location: str, manifest: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """Glue TableInput for one lake table (EXTERNAL parquet, Hive partition key from the manifest)."""
    types = manifest["columns"]
    partition_by = manifest["partition_by"]
    columns = [{"Name": c, "Type": hive_type(types[c], c, table)} for c in order]
    return {
        "Name": table,
        "Description": f"reviewpipe lake table {table} (written by `reviewpipe stage ingest`)",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {
            "classification": "parquet",
            "EXTERNAL": "TRUE",
            "reviewpipe.run_id": str(manifest["run_id"]),
            "reviewpipe.rows": str(manifest["rows"]),
        },
        "PartitionKeys": (
            [{"Name": partition_by, "Type": hive_type(types[partition_by], partition_by, table)}]
            if partition_by
            else []
        ),
        "StorageDescriptor": _storage_descriptor(columns, location),
    }


def _storage_descriptor(columns: list[dict[str, str]], location: str) -> dict[str, Any]:
    return {
        "Columns": columns,
        "Location": location,
        "InputFormat": PARQUET_INPUT,
        "OutputFormat": PARQUET_OUTPUT,
        "SerdeInfo": PARQUET_SERDE,
        "Compressed": False,
        "StoredAsSubDirectories": False,
    }


def partition_values(manifest: dict[str, Any], location: str) -> dict[tuple[str, ...], str]:
    """{(value,): partition location} for every partition directory the manifest's files live in.
    Values are percent-decoded as Hive does; a null stays __HIVE_DEFAULT_PARTITION__ (Athena: NULL)."""
    column = manifest["partition_by"]
    if not column:
        return {}
    out = {}
    for rel in manifest["files"]:
        directory = posixpath.dirname(rel)
        key, _, value = directory.partition("=")
        if key != column or "/" in directory:
            raise ReviewpipeError(
                f"lake file {rel} is not under a {column}=<value>/ directory; rerun `dvc repro ingest`"
            )
        out[(unquote(value),)] = f"{location}{directory}/"
    return out


class GlueCatalog:
    """Reconciles one Glue database with the lake's manifests."""

    def __init__(self, glue: Any, database: str) -> None:
        self.glue = glue
        self.database = database

    def ensure_database(self, location: str) -> None:
        with aws_call(f"reading Glue database {self.database}"):
            try:
                self.glue.get_database(Name=self.database)
                return
            except Exception as exc:
                if error_code(exc) != "EntityNotFoundException":
                    raise
        with aws_call(f"creating Glue database {self.database}"):
            self.glue.create_database(
                DatabaseInput={
                    "Name": self.database,
                    "Description": "reviewpipe data lake (tables registered by `reviewpipe stage catalog`)",
                    "LocationUri": location,
                }
            )
        print(f"catalog: created Glue database {self.database}")

    def ensure_table(self, wanted: dict[str, Any]) -> str:
        """create_table or update_table (only when it differs); returns created|updated|unchanged."""
        name = wanted["Name"]
        with aws_call(f"reading Glue table {self.database}.{name}"):
            try:
                current = self.glue.get_table(DatabaseName=self.database, Name=name)["Table"]
            except Exception as exc:
                if error_code(exc) != "EntityNotFoundException":
                    raise
                current = None
        if current is None:
            with aws_call(f"creating Glue table {self.database}.{name}"):
                self.glue.create_table(DatabaseName=self.database, TableInput=wanted)
            return "created"
        if {k: current.get(k) for k in wanted} == wanted:
            return "unchanged"
        with aws_call(f"updating Glue table {self.database}.{name}"):
            self.glue.update_table(DatabaseName=self.database, TableInput=wanted)
        return "updated"

    def partitions(self, table: str) -> dict[tuple[str, ...], str]:
        """{values: location} of the table's registered partitions."""
        out = {}
        with aws_call(f"listing partitions of {self.database}.{table}"):
            for page in self.glue.get_paginator("get_partitions").paginate(
                DatabaseName=self.database, TableName=table
            ):
                for partition in page["Partitions"]:
                    out[tuple(partition["Values"])] = partition["StorageDescriptor"]["Location"]
        return out

    def sync_partitions(
        self, table: str, wanted: dict[tuple[str, ...], str], columns: list[dict[str, str]]
    ) -> dict[str, int]:
        """Add missing partitions, drop stale ones (or ones whose location moved)."""
        current = self.partitions(table)
        stale = [values for values, where in current.items() if wanted.get(values) != where]
        new = [values for values, where in wanted.items() if current.get(values) != where]
        self._batched(
            stale,
            DELETE_BATCH,
            "dropping partitions of",
            lambda batch: self.glue.batch_delete_partition(
                DatabaseName=self.database,
                TableName=table,
                PartitionsToDelete=[{"Values": list(v)} for v in batch],
            ),
            table,
        )
        self._batched(
            new,
            CREATE_BATCH,
            "adding partitions to",
            lambda batch: self.glue.batch_create_partition(
                DatabaseName=self.database,
                TableName=table,
                PartitionInputList=[
                    {"Values": list(v), "StorageDescriptor": _storage_descriptor(columns, wanted[v])}
                    for v in batch
                ],
            ),
            table,
        )
        return {"added": len(new), "dropped": len(stale), "partitions": len(wanted)}

    def _batched(
        self, items: list[Any], size: int, verb: str, call: Callable[[list[Any]], dict[str, Any]], table: str
    ) -> None:
        """`call` on batches of at most `size` items; any per-partition error fails the stage."""
        what = f"{verb} {self.database}.{table}"
        for start in range(0, len(items), size):
            with aws_call(what):
                response = call(items[start : start + size])
            _raise_errors(response, what)


def _raise_errors(response: dict[str, Any], what: str) -> None:
    errors = response.get("Errors") or []
    if errors:
        first = errors[0]
        detail = first.get("ErrorDetail", {})
        raise ReviewpipeError(
            f"{what}: {len(errors)} partition(s) failed, e.g. {first.get('PartitionValues')}: "
            f"{detail.get('ErrorCode')}: {detail.get('ErrorMessage')}"
        )


def sync_lake(
    glue: Any, database: str, lake_uri: str, options: StorageOptions | None = None
) -> dict[str, Any]:
    """Register (or update) every lake table and its partitions in Glue; returns what was done."""
    lake_location = s3_location(lake_uri)
    catalog = GlueCatalog(glue, database)
    catalog.ensure_database(lake_location)
    out: dict[str, Any] = {"database": database, "tables": {}}
    for table in TABLES:
        table_uri = storage.join(lake_uri, table)
        manifest = lake.read_manifest(table_uri, options)
        location = s3_location(table_uri)
        # A versioned table (every version of each record, as the lake stores it) is registered as
        # <table>_history, like the DuckDB catalog's view; Athena queries get <table> as its current
        # versions (reviewpipe.aws.athena.current_views).
        versioned = bool(manifest.get("record_id") and manifest.get("version_column"))
        name = f"{table}{HISTORY_SUFFIX}" if versioned else table
        order = file_column_order(table_uri, manifest, options)
        wanted = table_input(name, location, manifest, order)
        change = catalog.ensure_table(wanted)
        parts = catalog.sync_partitions(
            name, partition_values(manifest, location), wanted["StorageDescriptor"]["Columns"]
        )
        out["tables"][table] = {
            "glue_table": name,
            "table": change,
            "location": location,
            "columns": order + ([manifest["partition_by"]] if manifest["partition_by"] else []),
            "record_id": manifest["record_id"] if versioned else None,
            "version_column": manifest["version_column"] if versioned else None,
            "files": [location + rel for rel in manifest["files"]],  # the published version only
            **parts,
        }
        print(
            f"catalog: Glue table {database}.{name} {change}; partitions: {parts['partitions']} "
            f"(+{parts['added']} -{parts['dropped']})"
        )
    return out
