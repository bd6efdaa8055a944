"""Raw batches -> the lake, incrementally and idempotently, in bounded memory.

A batch is one raw file with its own `ingested_at`. Ingesting it:

1. streams the file in chunks (`ingest.iter_raw_chunks`), validates each chunk and stages its clean
   rows (grouped by partition value) and rejects as parquet in a local temporary folder;
2. lets DuckDB (under `data.duckdb_memory_limit`, spilling to that folder) judge what only the
   whole batch and the lake can tell: duplicate ids within the batch (the first good row wins), and
   each clean row against the lake: `unchanged` (its review id and content hash are already there:
   nothing is added), `changed` (the id is there with other content: a new version) or `new`;
3. writes the new and changed rows as one file per partition, `part-<batch id>.parquet`, and the
   batch's new rejects as one file, streaming from DuckDB; the batch id is a content id (raw bytes,
   ingested_at, the lake version it builds on, validation params), never the clock;
4. returns the lake's next manifests (the previous files plus the batch's); `publish` makes them
   current in one step per table, so readers in flight see the old or the new lake, never a part.

Versions: a review's current version is its row with the latest `ingested_at` (batches must come
in time order; `lake.current_sql`, the catalog's `reviews` view). Re-ingesting rows the lake
already holds (same id, same content hash, in any version) adds nothing: replaying an old batch
never resurrects old content over newer.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from reviewpipe import storage
from reviewpipe.data import lake
from reviewpipe.data.ingest import (
    ReadSettings,
    iter_raw_chunks,
    open_raw,
    reconcile_counts,
    validate,
)
from reviewpipe.data.schema import CLEAN_COLUMNS, CLEAN_DTYPES, LAKE_REJECT_COLUMNS, REJECT_COLUMNS
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions

TABLES = ("reviews", "rejects")
RECORD_ID, VERSION = "review_id", "ingested_at"
STATUSES = ("new", "changed", "unchanged")


@dataclass(frozen=True)
class Batch:
    """One raw file and the time its rows enter the lake (their version)."""

    uri: str
    ingested_at: pd.Timestamp

    @classmethod
    def of(cls, uri: str, ingested_at: Any, where: str = "ingested_at") -> Batch:
        return cls(str(uri), utc_time(ingested_at, where))


def utc_time(value: Any, where: str = "ingested_at") -> pd.Timestamp:
    """An ISO 8601 time (naive = UTC) as a UTC timestamp at microsecond precision."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ReviewpipeError(
            f"{where}: {value!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)"
        ) from exc
    if pd.isna(stamp):
        raise ReviewpipeError(f"{where} is missing: give an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.floor("us")


@dataclass(frozen=True)
class AppendSettings:
    """Reading (`ReadSettings`) plus how the lake is written."""

    read: ReadSettings
    partition_by: str | None
    duckdb_memory_limit: str = "1GB"
    retain_seconds: float = 3600

    @classmethod
    def from_params(cls, data: Any, lake_cfg: Any) -> AppendSettings:
        return cls(
            ReadSettings.from_params(data),
            lake_cfg.partition_by or None,
            str(data.duckdb_memory_limit),
            float(lake_cfg.retain_seconds),
        )


@dataclass
class LakeState:
    """The manifests of the lake's two tables (published or about to be)."""

    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def run_ids(self) -> dict[str, str | None]:
        return {t: m["run_id"] for t, m in self.manifests.items()}


def _clean_schema(columns: list[str]) -> pa.Schema:
    empty = pd.DataFrame({c: pd.Series(dtype=CLEAN_DTYPES[c]) for c in columns})
    return pa.Schema.from_pandas(empty, preserve_index=False)


def _reject_schema() -> pa.Schema:
    dtypes = {
        **{c: "string" for c in REJECT_COLUMNS},
        "source_row": "int64",
        "ingested_at": "datetime64[us, UTC]",
        "content_hash": "string",
    }
    empty = pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in LAKE_REJECT_COLUMNS})
    return pa.Schema.from_pandas(empty, preserve_index=False)


def empty_state(partition_by: str | None) -> LakeState:
    """The manifests of an empty lake (the start of a rebuild)."""
    return LakeState(
        {
            "reviews": lake.new_manifest(
                "reviews",
                partition_by,
                lake.schema_types(_clean_schema(list(CLEAN_COLUMNS))),
                RECORD_ID,
                VERSION,
            ),
            "rejects": lake.new_manifest("rejects", None, lake.schema_types(_reject_schema())),
        }
    )


def load_state(lake_uri: str, partition_by: str | None, options: StorageOptions | None = None) -> LakeState:
    """The lake's current manifests (an empty table where none was published yet)."""
    state = empty_state(partition_by)
    for table in TABLES:
        current = lake.read_manifest_or_none(lake.table_uri(lake_uri, table), options)
        if current is None:
            continue
        expected = state.manifests[table]
        if set(current["columns"]) != set(expected["columns"]):
            raise ReviewpipeError(
                f"lake table {lake.table_uri(lake_uri, table)} was written by another version of reviewpipe "
                f"(columns {sorted(current['columns'])}); rebuild it with `dvc repro ingest` "
                "(or `reviewpipe stage ingest`) before appending."
            )
        if table == "reviews" and current["partition_by"] != expected["partition_by"]:
            raise ReviewpipeError(
                f"the lake at {lake_uri} is partitioned by {current['partition_by']!r}, not "
                f"lake.partition_by={partition_by!r}: appending cannot change the layout; rebuild it "
                "with `dvc repro ingest`, or set lake.partition_by back."
            )
        state.manifests[table] = {**expected, **current}
    return state


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join(f"'{lake.sql_string(p)}'" for p in paths) + "]"


def ingest_batch(
    batch: Batch,
    lake_uri: str,
    state: LakeState,
    settings: AppendSettings,
    options: StorageOptions | None = None,
) -> tuple[LakeState, dict[str, Any]]:
    """Stage, judge and write one batch on top of `state`; returns the next (unpublished) state
    and the batch's metrics."""
    read = settings.read
    last = state.manifests["reviews"]["created_at"]
    if last is not None and batch.ingested_at <= utc_time(last):
        raise ReviewpipeError(
            f"batch {batch.uri}: ingested_at {batch.ingested_at.isoformat()} is not later than the lake's "
            f"last batch ({last}); versions are ordered by ingested_at, so each batch must be newer."
        )
    with tempfile.TemporaryDirectory(prefix="reviewpipe-ingest-") as staging:
        staged = _stage(batch, read, settings.partition_by, staging, options)
        batch_id = lake.content_id(
            staged["raw_sha256"],
            batch.ingested_at.isoformat(),
            state.run_ids(),
            settings.partition_by,
            read.encoding,
            read.min_age,
            read.max_age,
            read.max_field_bytes,
        )
        con = duckdb.connect(
            config={
                "memory_limit": settings.duckdb_memory_limit,
                "temp_directory": os.path.join(staging, "duckdb"),
            }
        )
        try:
            con.execute("SET TimeZone = 'UTC'")
            storage.register_with_duckdb(con, lake_uri, options)
            judged = _judge(con, lake_uri, state, staging, staged)
            written = (
                _write_reviews(con, lake_uri, staging, settings, batch_id, options)
                if judged["write"]
                else ([], 0)
            )
            rejects = _write_rejects(con, lake_uri, state, staging, staged, batch, batch_id, read, options)
        finally:
            con.close()
    by_reason = Counter(staged["by_reason"])
    by_reason["duplicate_review_id"] += judged["duplicates"]
    metrics = {
        "source": batch.uri,
        "ingested_at": batch.ingested_at.isoformat(),
        "batch_id": batch_id,
        "raw_sha256": staged["raw_sha256"],
        "raw_bytes": staged["raw_bytes"],
        **reconcile_counts(staged["rows_in"], staged["candidates"] - judged["duplicates"], dict(by_reason)),
        **{f"rows_{s}": judged[s] for s in STATUSES},
        "rejects_stored": rejects[1],
    }
    info = {"batch_id": batch_id, "source": batch.uri, "ingested_at": batch.ingested_at.isoformat()}
    manifests = dict(state.manifests)
    if written[1]:
        manifests["reviews"] = lake.with_batch(manifests["reviews"], info, written[0], written[1], batch_id)
    if rejects[1]:
        manifests["rejects"] = lake.with_batch(manifests["rejects"], info, rejects[0], rejects[1], batch_id)
    return LakeState(manifests), metrics


def _stage(
    batch: Batch, read: ReadSettings, partition_by: str | None, staging: str, options: StorageOptions | None
) -> dict[str, Any]:
    """Parse and validate the raw file chunk by chunk into staging/{clean/<partition>,source,rejects}/."""
    rows_in, candidates, chunks = 0, 0, 0
    by_reason: Counter[str] = Counter()
    with open_raw(batch.uri, options, read.compression, read.max_raw_bytes) as stream:
        for chunk, raw in enumerate(
            iter_raw_chunks(stream, read.encoding, batch.uri, read.chunk_rows, read.max_field_bytes)
        ):
            result = validate(
                raw,
                read.min_age,
                read.max_age,
                read.encoding,
                batch.ingested_at.to_pydatetime(),
                check_duplicates=False,
            )
            assert result.clean_source is not None
            rows_in += len(raw)
            candidates += len(result.clean)
            chunks += 1
            by_reason.update(result.rejects["reject_reason"].astype(str).tolist())
            name = f"{chunk:06d}.parquet"
            if len(result.clean):
                clean = result.clean.assign(source_row=result.clean_source["source_row"].to_numpy())
                _stage_clean(clean, partition_by, os.path.join(staging, "clean", name))
                storage.write_parquet(
                    result.clean_source, os.path.join(staging, "source", name), durable=False
                )
            if len(result.rejects):
                rejects = result.rejects.assign(source_row=result.rejects["source_row"].astype("int64"))
                storage.write_parquet(rejects, os.path.join(staging, "rejects", name), durable=False)
        return {
            "rows_in": rows_in,
            "candidates": candidates,
            "chunks": chunks,
            "by_reason": dict(by_reason),
            "raw_sha256": stream.sha256.hexdigest(),
            "raw_bytes": stream.bytes_read,
        }


def _stage_clean(clean: pd.DataFrame, partition_by: str | None, path: str) -> None:
    """A chunk's clean rows as one scratch file, one row group per partition value, so that
    DuckDB reads only a partition's row groups when it writes that partition."""
    if not partition_by:
        pieces = [pa.Table.from_pandas(clean, preserve_index=False)]
    else:
        clean = clean.sort_values([partition_by, "source_row"], na_position="last", kind="stable")
        table = pa.Table.from_pandas(clean, preserve_index=False)
        sizes = clean.groupby(partition_by, dropna=False, sort=True).size().tolist()
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        pieces = [table.slice(start, n) for start, n in zip(starts, sizes, strict=True)]
    lake.write_file(path, pieces, pieces[0].schema, durable=False)


def _judge(
    con: duckdb.DuckDBPyConnection, lake_uri: str, state: LakeState, staging: str, staged: dict[str, Any]
) -> dict[str, Any]:
    """Duplicates within the batch, and new / changed / unchanged against the lake, as the temp
    table `status(source_row, status)` of the rows to keep."""
    out = {"duplicates": 0, "new": 0, "changed": 0, "unchanged": 0, "write": False}
    if staged["candidates"] == 0:
        return out
    clean_glob = os.path.join(staging, "clean", "*.parquet")
    con.execute(
        f"CREATE VIEW cand AS SELECT review_id, content_hash, source_row FROM read_parquet("
        f"'{lake.sql_string(clean_glob)}', hive_partitioning = false)"
    )
    con.execute(
        "CREATE TEMP TABLE dup AS SELECT source_row FROM cand "
        "QUALIFY row_number() OVER (PARTITION BY review_id ORDER BY source_row) > 1"
    )
    files = lake.files_of(lake.table_uri(lake_uri, "reviews"), state.manifests["reviews"])
    if files:
        con.execute(
            f"CREATE VIEW seen AS SELECT review_id, content_hash FROM read_parquet({_sql_list(files)}, "
            "hive_partitioning = false, union_by_name = true)"
        )
    else:
        con.execute(
            "CREATE VIEW seen AS SELECT CAST(NULL AS BIGINT) AS review_id, "
            "CAST(NULL AS VARCHAR) AS content_hash WHERE false"
        )
    con.execute("""
        CREATE TEMP TABLE status AS
        SELECT c.source_row,
               CASE WHEN s.review_id IS NOT NULL THEN 'unchanged'
                    WHEN k.review_id IS NOT NULL THEN 'changed' ELSE 'new' END AS status
        FROM cand c
        ANTI JOIN dup d ON d.source_row = c.source_row
        LEFT JOIN (SELECT DISTINCT review_id, content_hash FROM seen) s
               ON s.review_id = c.review_id AND s.content_hash = c.content_hash
        LEFT JOIN (SELECT DISTINCT review_id FROM seen) k ON k.review_id = c.review_id
    """)
    out["duplicates"] = con.execute("SELECT count(*) FROM dup").fetchone()[0]
    for status, n in con.execute("SELECT status, count(*) FROM status GROUP BY 1").fetchall():
        out[status] = int(n)
    out["write"] = out["new"] + out["changed"] > 0
    return out


def _write_reviews(
    con: duckdb.DuckDBPyConnection,
    lake_uri: str,
    staging: str,
    settings: AppendSettings,
    batch_id: str,
    options: StorageOptions | None,
) -> tuple[list[str], int]:
    """One file per partition of the batch's new and changed rows, in file order."""
    partition_by = settings.partition_by
    columns = [c for c in CLEAN_COLUMNS if c != partition_by]
    schema = _clean_schema(columns)
    select = ", ".join(f'c."{c}"' for c in columns)
    table = lake.table_uri(lake_uri, "reviews")
    source = f"read_parquet('{lake.sql_string(os.path.join(staging, 'clean', '*.parquet'))}', hive_partitioning = false)"
    values = [None]
    if partition_by:
        values = [
            v
            for (v,) in con.execute(
                f'SELECT DISTINCT "{partition_by}" FROM {source} ORDER BY 1 NULLS LAST'
            ).fetchall()
        ]
    files, rows = [], 0
    for value in values:
        where = (
            ""
            if not partition_by
            else (f'AND c."{partition_by}" IS NULL' if value is None else f'AND c."{partition_by}" = $value')
        )
        reader = con.sql(
            f"SELECT {select} FROM {source} c JOIN status s ON s.source_row = c.source_row "
            f"WHERE s.status <> 'unchanged' {where} ORDER BY c.source_row",
            params={"value": value} if "$value" in where else None,
        ).to_arrow_reader(settings.read.chunk_rows)
        batches = _non_empty(reader)
        if batches is None:
            continue
        folder = lake.partition_dir(partition_by, value) if partition_by else ""
        rel = f"{folder}/part-{batch_id}.parquet" if partition_by else f"part-{batch_id}.parquet"
        rows += lake.write_file(storage.join(table, rel), batches, schema, options)
        files.append(rel)
    return files, rows


def _non_empty(reader: Any) -> Iterator[pa.RecordBatch] | None:
    """The reader's non-empty batches, streamed; None when there are none (no file to write)."""
    batches = (b for b in reader if b.num_rows)
    first = next(batches, None)
    return None if first is None else itertools.chain([first], batches)


def _write_rejects(
    con: duckdb.DuckDBPyConnection,
    lake_uri: str,
    state: LakeState,
    staging: str,
    staged: dict[str, Any],
    batch: Batch,
    batch_id: str,
    read: ReadSettings,
    options: StorageOptions | None,
) -> tuple[list[str], int]:
    """The batch's rejects (row rules, then duplicates) that the lake does not hold yet, as one file."""
    parts = []
    strings = ", ".join(f'"{c}"' for c in REJECT_COLUMNS if c not in ("reject_reason", "source_row"))
    if os.path.isdir(os.path.join(staging, "rejects")):
        glob = os.path.join(staging, "rejects", "*.parquet")
        parts.append(
            f"SELECT {strings}, reject_reason, source_row FROM read_parquet('{lake.sql_string(glob)}')"
        )
    if staged["candidates"]:
        glob = os.path.join(staging, "source", "*.parquet")
        parts.append(
            f"SELECT {strings}, 'duplicate_review_id' AS reject_reason, s.source_row "
            f"FROM read_parquet('{lake.sql_string(glob)}') s SEMI JOIN dup d ON d.source_row = s.source_row"
        )
    if not parts:
        return [], 0
    hashed = " || chr(31) || ".join(f'coalesce("{c}", chr(0))' for c in REJECT_COLUMNS if c != "source_row")
    con.execute(
        f"""CREATE VIEW batch_rejects AS
        SELECT *, TIMESTAMPTZ '{batch.ingested_at.isoformat()}' AS ingested_at,
               left(md5({hashed} || chr(31) || CAST(source_row AS VARCHAR)), 16) AS content_hash
        FROM ({" UNION ALL ".join(parts)})"""
    )
    files = lake.files_of(lake.table_uri(lake_uri, "rejects"), state.manifests["rejects"])
    known = (
        (
            f"ANTI JOIN (SELECT content_hash FROM read_parquet({_sql_list(files)}, union_by_name = true)) k "
            "ON k.content_hash = r.content_hash"
        )
        if files
        else ""
    )
    select = ", ".join(f'r."{c}"' for c in LAKE_REJECT_COLUMNS)
    reader = con.sql(f"SELECT {select} FROM batch_rejects r {known} ORDER BY r.source_row").to_arrow_reader(
        read.chunk_rows
    )
    batches = _non_empty(reader)
    if batches is None:
        return [], 0
    rel = f"part-{batch_id}.parquet"
    rows = lake.write_file(
        storage.join(lake.table_uri(lake_uri, "rejects"), rel), batches, _reject_schema(), options
    )
    return [rel], rows


def publish(
    lake_uri: str,
    state: LakeState,
    base: LakeState,
    options: StorageOptions | None = None,
    retain_seconds: float = 3600,
) -> None:
    """Make `state` the lake's current version: rejects first, then reviews, each in one step
    (a manifest replace) and only where it differs from `base`, the version it was built on (which
    must still be current: a concurrent writer makes this fail). Files no longer listed are
    deleted after `retain_seconds`."""
    for table in ("rejects", "reviews"):
        uri = lake.table_uri(lake_uri, table)
        manifest = state.manifests[table]
        published = lake.read_manifest_or_none(uri, options)
        if published is not None and published == manifest:
            continue
        lake.commit_manifest(
            uri,
            manifest,
            options=options,
            expected_run_id=base.manifests[table]["run_id"] if published is not None else None,
        )
        lake.remove_unlisted(uri, options, retain_seconds)


def lake_counts(lake_uri: str, state: LakeState, options: StorageOptions | None = None) -> dict[str, int]:
    """Rows (every version), review ids (current versions) and rejects of a lake state."""
    reviews = lake.files_of(lake.table_uri(lake_uri, "reviews"), state.manifests["reviews"])
    ids = 0
    if reviews:
        con = duckdb.connect()
        try:
            storage.register_with_duckdb(con, lake_uri, options)
            ids = con.execute(
                f"SELECT count(DISTINCT review_id) FROM read_parquet({_sql_list(reviews)}, "
                "hive_partitioning = false)"
            ).fetchone()[0]
        finally:
            con.close()
    return {
        "review_rows": int(state.manifests["reviews"]["rows"]),
        "review_ids": int(ids),
        "reject_rows": int(state.manifests["rejects"]["rows"]),
    }


def ingest_batches(
    batches: list[Batch],
    lake_uri: str,
    settings: AppendSettings,
    *,
    rebuild: bool,
    options: StorageOptions | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Ingest `batches` in order and publish. `rebuild=True` builds a new lake version from these
    batches alone (the previous files stay readable for lake.retain_seconds); `rebuild=False`
    appends them to the current lake. Returns the metrics (totals, per batch, lake counts)."""
    base = load_state(lake_uri, settings.partition_by, options)
    state = empty_state(settings.partition_by) if rebuild else base
    per_batch = []
    for batch in batches:
        state, metrics = ingest_batch(batch, lake_uri, state, settings, options)
        per_batch.append(metrics)
        log(describe(metrics))
        if metrics["rows_clean"] == 0:
            publish(lake_uri, state, base, options, settings.retain_seconds)
            raise AllRejectedError(metrics, lake.table_uri(lake_uri, "rejects"))
    publish(lake_uri, state, base, options, settings.retain_seconds)
    return summarize(per_batch, lake_counts(lake_uri, state, options))


class AllRejectedError(ReviewpipeError):
    """Every row of a batch was rejected (its rejects are published for inspection)."""

    def __init__(self, metrics: dict[str, Any], rejects_uri: str) -> None:
        self.metrics = metrics
        reasons = {k: v for k, v in metrics["rejected_by_reason"].items() if v}
        super().__init__(
            f"all {metrics['rows_in']} rows of {metrics['source']} were rejected ({reasons}); "
            f"see the rejects table under {rejects_uri}"
        )


def summarize(per_batch: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
    """Totals over the batches (rows_in == rows_clean + rows_rejected; rows_clean == new + changed +
    unchanged), each batch's metrics, and the lake's counts after them."""
    by_reason: Counter[str] = Counter()
    for m in per_batch:
        by_reason.update(m["rejected_by_reason"])
    totals = reconcile_counts(
        sum(m["rows_in"] for m in per_batch), sum(m["rows_clean"] for m in per_batch), dict(by_reason)
    )
    for status in STATUSES:
        totals[f"rows_{status}"] = sum(m[f"rows_{status}"] for m in per_batch)
    return {**totals, "batches": per_batch, "lake": counts}


def describe(m: dict[str, Any]) -> str:
    reasons = ", ".join(f"{k}={v}" for k, v in m["rejected_by_reason"].items() if v) or "none"
    return (
        f"ingest: {m['source']} (ingested_at {m['ingested_at']}): {m['rows_in']} rows in, "
        f"{m['rows_clean']} clean ({m['rows_new']} new, {m['rows_changed']} changed, "
        f"{m['rows_unchanged']} already in the lake), {m['rows_rejected']} rejected ({reasons})"
    )
