"""SageMaker Feature Store, offline and local: an append-only parquet feature group.

Layout under ``{store_uri}/{name}/`` (a local folder or ``s3://bucket/prefix``)::

    definition.json                 feature names, types, descriptions (DescribeFeatureGroup-like)
    data/part-<write time>-<content id>.parquet   one file per ingest, never rewritten

Each ingested row also gets ``write_time`` (as the SageMaker offline store adds it): the time of
the ingest, or the one the caller gives (a pipeline stage passes one derived from its params, so a
rerun writes byte-identical files under the same names). Reads go
through DuckDB over the part files: ``to_df`` and ``query`` see every version of every record
(like Athena over the offline store, the group is a view named after it); ``get_record`` and
``as_of`` resolve versions by ``event_time`` (ties: the later write wins).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reviewpipe import storage
from reviewpipe.errors import ReviewpipeError
from reviewpipe.storage import StorageOptions

WRITE_TIME = "write_time"
DEFINITION_FILE = "definition.json"
FORMAT = "reviewpipe.feature_group/1"
_ENTITIES = "_reviewpipe_point_in_time_entities"
_TIMESTAMP = re.compile(r"timestamp\[(\w+)(?:, tz=(.+))?\]")


def arrow_type(name: str) -> pa.DataType:
    """Arrow type from its string form: "int64", "string", "list<item: int32>", "timestamp[us, tz=UTC]"."""
    name = name.strip()
    if name.startswith("list<") and name.endswith(">"):
        inner = name[len("list<") : -1]
        return pa.list_(arrow_type(inner.split(":", 1)[1] if ":" in inner else inner))
    match = _TIMESTAMP.fullmatch(name)
    if match:
        return pa.timestamp(match.group(1), tz=match.group(2))
    try:
        return pa.type_for_alias(name)
    except ValueError as exc:
        raise ReviewpipeError(f"unknown feature type {name!r} in a feature definition") from exc


@dataclass(frozen=True)
class FeatureDefinition:
    """One feature: name, Arrow type (as a string) and a description."""

    name: str
    type: str
    description: str = ""

    @property
    def arrow(self) -> pa.DataType:
        return arrow_type(self.type)

    def to_json(self) -> dict[str, Any]:
        """SageMaker's FeatureDefinition fields, plus the exact Arrow type and a description."""
        value = self.arrow.value_type if pa.types.is_list(self.arrow) else self.arrow
        if pa.types.is_integer(value) or pa.types.is_boolean(value):
            feature_type = "Integral"
        elif pa.types.is_floating(value):
            feature_type = "Fractional"
        else:
            feature_type = "String"
        out = {
            "FeatureName": self.name,
            "FeatureType": feature_type,
            "ArrowType": self.type,
            "Description": self.description,
        }
        if pa.types.is_list(self.arrow):
            out["CollectionType"] = "List"
        return out

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> FeatureDefinition:
        return cls(item["FeatureName"], item["ArrowType"], item.get("Description", ""))


def definitions_from_frame(
    df: pd.DataFrame, descriptions: Mapping[str, str] | None = None
) -> list[FeatureDefinition]:
    """Feature definitions inferred from a frame's columns (like SageMaker's load_feature_definitions)."""
    schema = pa.Schema.from_pandas(df, preserve_index=False)
    descriptions = descriptions or {}
    return [
        FeatureDefinition(f.name, str(f.type).replace("large_string", "string"), descriptions.get(f.name, ""))
        for f in schema
    ]


class FeatureGroup:
    """An offline feature group: create → ingest (append-only) → get_record / as_of / to_df / query."""

    def __init__(
        self,
        name: str,
        store_uri: str = "data/features",
        record_identifier: str = "review_id",
        event_time: str = "event_time",
        options: StorageOptions | None = None,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise ReviewpipeError(
                f"feature group name {name!r}: use letters, digits, '_' and '-' (it names a folder and a SQL view)."
            )
        self.name = name
        self.record_identifier = record_identifier
        self.event_time = event_time
        self.options = options or StorageOptions()
        self.uri = storage.join(store_uri, name)
        self._fs, self._path = storage.get_fs(self.uri, self.options)
        self._definition: dict[str, Any] | None = None

    # ---- definition -------------------------------------------------------------------------
    @property
    def definition_uri(self) -> str:
        return storage.join(self.uri, DEFINITION_FILE)

    def exists(self) -> bool:
        return self._fs.exists(posixpath.join(self._path, DEFINITION_FILE))

    def create(
        self, features: Sequence[FeatureDefinition], description: str = "", creation_time: Any = None
    ) -> FeatureGroup:
        """Write the definition (`CreationTime`: `creation_time`, default now). Re-creating with the
        same features is a no-op; different features on an existing group are an error (delete it first)."""
        features = list(features)
        self._check_features(features)
        if self.exists():
            if self.features != features:
                raise ReviewpipeError(
                    f"feature group {self.name!r} already exists at {self.uri} with other features; "
                    "delete it first (FeatureGroup.delete) or use another name."
                )
            return self
        definition = {
            "Format": FORMAT,
            "FeatureGroupName": self.name,
            "RecordIdentifierFeatureName": self.record_identifier,
            "EventTimeFeatureName": self.event_time,
            "Description": description,
            "FeatureDefinitions": [f.to_json() for f in features],
            "OfflineStoreConfig": {
                "S3StorageConfig": {"S3Uri": storage.join(self.uri, "data")},
                "TableFormat": "Parquet",
            },
            "CreationTime": utc_timestamp(
                creation_time if creation_time is not None else dt.datetime.now(dt.UTC)
            ).isoformat(),
        }
        storage.write_json(self.definition_uri, definition, self.options)
        self._definition = definition
        return self

    def _check_features(self, features: Sequence[FeatureDefinition]) -> None:
        names = [f.name for f in features]
        problems = []
        if len(set(names)) != len(names):
            problems.append("duplicate feature names")
        if WRITE_TIME in names:
            problems.append(f"{WRITE_TIME!r} is reserved (ingest adds it)")
        if self.record_identifier not in names:
            problems.append(f"record identifier {self.record_identifier!r} is not a feature")
        by_name = {f.name: f for f in features}
        if self.event_time not in by_name:
            problems.append(f"event time {self.event_time!r} is not a feature")
        elif not pa.types.is_timestamp(by_name[self.event_time].arrow):
            problems.append(
                f"event time {self.event_time!r} must be a timestamp type, "
                f"not {by_name[self.event_time].type}"
            )
        for f in features:
            f.arrow  # noqa: B018 - raises on an unknown type
        if problems:
            raise ReviewpipeError(f"feature group {self.name!r}: " + "; ".join(problems) + ".")

    @property
    def definition(self) -> dict[str, Any]:
        if self._definition is None:
            if not self.exists():
                raise ReviewpipeError(
                    f"feature group {self.name!r} not found at {self.uri}; create it first "
                    "(FeatureGroup.create, or `dvc repro features`)."
                )
            self._definition = storage.read_json(self.definition_uri, self.options)
        return self._definition

    @property
    def features(self) -> list[FeatureDefinition]:
        return [FeatureDefinition.from_json(f) for f in self.definition["FeatureDefinitions"]]

    @property
    def schema(self) -> pa.Schema:
        """The offline store's schema: the features, then write_time."""
        return pa.schema(
            [pa.field(f.name, f.arrow) for f in self.features]
            + [pa.field(WRITE_TIME, pa.timestamp("us", tz="UTC"))]
        )

    def delete(self) -> None:
        """Remove the group (definition and every part file)."""
        if self._fs.exists(self._path):
            self._fs.rm(self._path, recursive=True)
        self._definition = None

    # ---- writing ----------------------------------------------------------------------------
    def ingest(self, df: pd.DataFrame, write_time: Any = None) -> str:
        """Append df as one new part file, published whole; returns its URI. Every row gets
        `write_time` (default now). The file is named by write time and content, so the same rows
        written at the same time give the same file. The frame must have exactly the defined
        features, convertible to their types; otherwise nothing is written."""
        written = utc_timestamp(write_time if write_time is not None else dt.datetime.now(dt.UTC)).floor("us")
        table = self._to_table(df, written)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
        name = f"part-{written:%Y%m%dT%H%M%S%fZ}-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
        uri = storage.join(self.uri, "data", name)
        storage.write_bytes(uri, data, self.options)
        return storage.full_uri(self._fs, posixpath.join(self._path, "data", name))

    def _to_table(self, df: pd.DataFrame, write_time: pd.Timestamp) -> pa.Table:
        features = self.features
        names = [f.name for f in features]
        missing = [n for n in names if n not in df.columns]
        unexpected = [c for c in df.columns if c not in names]
        if missing or unexpected:
            raise ReviewpipeError(
                f"ingest into feature group {self.name!r}: the frame does not match its definition "
                f"(missing columns {missing}, unexpected columns {unexpected}); nothing was written."
            )
        arrays, wrong = [], []
        for f in features:
            try:
                arrays.append(pa.array(df[f.name], type=f.arrow, from_pandas=True))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
                wrong.append(f"{f.name} (expected {f.type}, got {df[f.name].dtype}: {str(exc)[:80]})")
        if wrong:
            raise ReviewpipeError(
                f"ingest into feature group {self.name!r}: wrong types in columns {', '.join(wrong)}; "
                "nothing was written."
            )
        nulls = [
            n
            for n, a in zip(names, arrays, strict=True)
            if n in (self.record_identifier, self.event_time) and a.null_count
        ]
        if nulls:
            raise ReviewpipeError(
                f"ingest into feature group {self.name!r}: columns {nulls} may not be null; nothing was written."
            )
        arrays.append(pa.array([write_time] * len(df), type=pa.timestamp("us", tz="UTC")))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    # ---- reading ----------------------------------------------------------------------------
    def part_files(self) -> list[str]:
        """URIs of the part files, oldest first."""
        found = self._fs.glob(posixpath.join(self._path, "data", "part-*.parquet"))
        return [storage.full_uri(self._fs, p) for p in sorted(found)]

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection (time zone UTC) where the group is a view named after it."""
        self.definition  # noqa: B018 - a clear error when the group does not exist
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            storage.register_with_duckdb(con, self.uri, self.options)
            files = self.part_files()
            if files:
                file_list = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(f"CREATE VIEW {self._view} AS SELECT * FROM read_parquet([{file_list}])")
            else:
                con.register(self.name, self.schema.empty_table())
            yield con
        finally:
            con.close()

    @property
    def _view(self) -> str:
        return '"' + self.name + '"'

    def query(self, sql: str, parameters: Sequence[Any] | None = None) -> pd.DataFrame:
        """SQL over the offline store, the group being a view named after it (Athena-style)."""
        with self.connect() as con:
            try:
                return con.execute(sql, parameters or []).df()
            except duckdb.Error as exc:
                raise ReviewpipeError(f"query on feature group {self.name!r} failed: {exc}") from exc

    def to_df(self) -> pd.DataFrame:
        """Every stored row (all versions), with write_time, in write order."""
        return self.query(
            f"SELECT * FROM {self._view} ORDER BY {WRITE_TIME}, "
            f'"{self.record_identifier}", "{self.event_time}"'
        )

    def get_record(self, record_id: Any) -> dict[str, Any] | None:
        """The latest version of one record (by event time, then write time); None if unknown."""
        rows = self.query(
            f'SELECT * EXCLUDE ({WRITE_TIME}) FROM {self._view} WHERE "{self.record_identifier}" = ? '
            f'ORDER BY "{self.event_time}" DESC, {WRITE_TIME} DESC LIMIT 1',
            [_python(record_id)],
        )
        return None if rows.empty else rows.iloc[0].to_dict()

    def as_of(self, timestamp: Any) -> pd.DataFrame:
        """Point-in-time view: each record as it was at `timestamp` (its latest version with
        event_time <= timestamp); records whose first version is later are absent."""
        ids = f'SELECT DISTINCT "{self.record_identifier}" FROM {self._view}'
        rows = self._asof(
            f'SELECT "{self.record_identifier}", ?::TIMESTAMPTZ AS as_of_time FROM ({ids})',
            [utc_timestamp(timestamp)],
        )
        return rows.drop(columns="as_of_time")

    def point_in_time(self, entities: pd.DataFrame, time_column: str = "as_of_time") -> pd.DataFrame:
        """For each (record id, time) row of `entities`, the record as it was at that time
        (an ASOF join: training sets without leakage from later versions)."""
        frame = entities[[self.record_identifier, time_column]].rename(columns={time_column: "as_of_time"})
        frame["as_of_time"] = pd.to_datetime(frame["as_of_time"], utc=True)
        return self._asof(f"SELECT * FROM {_ENTITIES}", [], entities=frame)

    def _asof(
        self, entities_sql: str, parameters: list[Any], entities: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        rid, event = f'"{self.record_identifier}"', f'"{self.event_time}"'
        sql = f"""
            WITH versions AS (   -- one row per (record, event time): the latest write wins
                SELECT * FROM {self._view}
                QUALIFY row_number() OVER (PARTITION BY {rid}, {event} ORDER BY {WRITE_TIME} DESC) = 1
            ), wanted AS ({entities_sql})
            SELECT v.* EXCLUDE ({WRITE_TIME}), w.as_of_time
            FROM wanted w ASOF JOIN versions v ON w.{rid} = v.{rid} AND w.as_of_time >= v.{event}
            ORDER BY v.{rid}, w.as_of_time"""
        with self.connect() as con:
            if entities is not None:
                con.register(_ENTITIES, entities)
            return con.execute(sql, parameters).df()


def _python(value: Any) -> Any:
    """numpy scalars → Python values (DuckDB binds those)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, str | bytes) else value


def utc_timestamp(timestamp: Any) -> pd.Timestamp:
    """Any timestamp-like as a UTC pandas Timestamp (naive values are taken as UTC)."""
    try:
        value = pd.Timestamp(timestamp)
    except (ValueError, TypeError) as exc:
        raise ReviewpipeError(
            f"not a timestamp: {timestamp!r} (use ISO 8601, e.g. 2024-05-01T12:00:00Z)"
        ) from exc
    return value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")
