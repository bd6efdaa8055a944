"""catalog.engine=athena: the sql/*.sql files run on Athena over the Glue tables.

One SQL source: the files are DuckDB SQL; `to_athena` transpiles them with sqlglot to Athena's engine
v3 dialect (Trino), rewriting the two things reviewpipe adds to DuckDB's connection:
  * `word_count(text)` (a DuckDB macro) -> `regexp_count(text, '\\S+')` (runs of non-whitespace);
  * the `age_bands` lookup table (registered from data.age_bands) -> a VALUES CTE of the same rows;
  * a versioned lake table (`reviews`: Glue holds every version as `reviews_history`) -> a CTE of
    each record's newest version, as the DuckDB catalog's `reviews` view; every lake table reads only
    the rows of the manifest's files (`"$path"`), not the retired or unpublished files beside them;
and one DuckDB function Trino lacks: `quantile_cont` (exact) -> `approx_percentile` (Trino's only
percentile; approximate, so medians on Athena can differ slightly from DuckDB's).

`AthenaRunner.run_all` starts every query (StartQueryExecution with the workgroup, database and
results location from catalog.athena), polls GetQueryExecution until each ends, and reads the rows
with GetQueryResults into pandas frames typed by the result's column metadata, which the explore
stage and `reviewpipe query` write exactly as they write DuckDB's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlglot
from sqlglot import exp

from reviewpipe import storage
from reviewpipe.aws.clients import aws_call, poll
from reviewpipe.errors import ReviewpipeError

DIALECT = "athena"
AGE_BANDS = "age_bands"
AGE_BAND_COLUMNS = ("band", "band_order", "lower_bound", "upper_bound")
DONE = ("SUCCEEDED", "FAILED", "CANCELLED")


# ---------------------------------------------------------------- transpiling


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Anonymous) and node.name.lower() == "word_count":
        if len(node.expressions) != 1:
            raise ReviewpipeError(f"word_count takes one argument: {node.sql('duckdb')}")
        return exp.RegexpCount(this=node.expressions[0], expression=exp.Literal.string(r"\S+"))
    if isinstance(node, exp.PercentileCont) and node.expression is not None:
        return exp.ApproxQuantile(this=node.this, quantile=node.expression)
    return node


def _cte(name: str, select_sql: str) -> exp.CTE:
    return exp.CTE(
        this=sqlglot.parse_one(select_sql, read=DIALECT), alias=exp.TableAlias(this=exp.to_identifier(name))
    )


def _published_only(info: dict[str, Any]) -> str:
    """A WHERE clause keeping the rows of the manifest's files (Athena's `"$path"`), or "" when the
    catalog recorded no file list. Athena reads every object under a partition, and the lake keeps
    retired files for lake.retain_seconds, so without it Athena would count rows DuckDB does not."""
    files = info.get("files")
    if files is None:
        return ""
    if not files:
        return " WHERE FALSE"
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f' WHERE "$path" IN ({listed})'


def current_views(glue: dict[str, Any]) -> dict[str, str]:
    """{table: what queries read as that table}: for a versioned lake table (registered in Glue as
    `<table>_history`) the newest row per record id, as the DuckDB catalog's view selects; for every
    table, only the rows of the lake's published files (the manifest's, as the catalog recorded)."""
    views = {}
    for table, info in glue["tables"].items():
        columns = ", ".join(f'"{c}"' for c in info["columns"])
        published = _published_only(info)
        if info["record_id"]:
            views[table] = (
                f'SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY "{info["record_id"]}" '
                f'ORDER BY "{info["version_column"]}" DESC) AS reviewpipe_rank FROM {info["glue_table"]}'
                f"{published}) WHERE reviewpipe_rank = 1"
            )
        elif published:  # the Glue table has the view's name: qualify it so the CTE reads the table
            views[table] = f'SELECT {columns} FROM "{glue["database"]}"."{info["glue_table"]}"{published}'
    return views


def _age_bands_cte(edges: Sequence[int]) -> exp.CTE:
    from reviewpipe.analytics.explore import age_bands_frame

    frame = age_bands_frame(edges)
    rows = ", ".join(
        exp.Tuple(
            expressions=[
                exp.Literal.string(str(r.band)),
                *(exp.Literal.number(int(v)) for v in (r.band_order, r.lower_bound, r.upper_bound)),
            ]
        ).sql(DIALECT)
        for r in frame.itertuples()
    )
    select = sqlglot.parse_one(
        f"SELECT * FROM (VALUES {rows}) AS t({', '.join(AGE_BAND_COLUMNS)})", read=DIALECT
    )
    return exp.CTE(this=select, alias=exp.TableAlias(this=exp.to_identifier(AGE_BANDS)))


def to_athena(
    sql: str, age_band_edges: Sequence[int], name: str = "query", views: dict[str, str] | None = None
) -> str:
    """DuckDB SQL (one statement, as in sql/*.sql) -> Athena (Trino) SQL; a ReviewpipeError naming
    `name` when sqlglot cannot parse it or cannot express something in Athena's dialect. `views`
    ({table: SELECT in Athena's dialect}) become CTEs of the queries that read those tables."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise ReviewpipeError(f"{name}: sqlglot cannot parse it as DuckDB SQL: {exc}") from exc
    if len(statements) != 1:
        raise ReviewpipeError(f"{name}: one SQL statement per query, found {len(statements)}")
    tree = statements[0].transform(_rewrite)
    ctes = {AGE_BANDS: lambda: _age_bands_cte(age_band_edges)}
    ctes.update({name: (lambda sql=sql, name=name: _cte(name, sql)) for name, sql in (views or {}).items()})
    defined = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    used = {t.name.lower() for t in tree.find_all(exp.Table) if not t.db}
    for name in sorted(used & set(ctes) - defined, reverse=True):
        with_ = tree.args.get("with_")
        if with_ is None:
            tree.set("with_", exp.With(expressions=[ctes[name]()]))
        else:
            with_.set("expressions", [ctes[name](), *with_.expressions])
    try:
        return tree.sql(dialect=DIALECT, pretty=True, unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.UnsupportedError as exc:
        raise ReviewpipeError(f"{name}: cannot be written in Athena's dialect: {exc}") from exc


# ---------------------------------------------------------------- results


# Athena integer types -> the numpy width DuckDB's .df() gives the same SQL type (nullable when nulls).
_INTEGER = {"tinyint": "int8", "smallint": "int16", "integer": "int32", "int": "int32", "bigint": "int64"}
_FLOAT = ("double", "float", "real", "decimal")


def _column(values: list[str | None], athena_type: str) -> pd.Series:
    """One result column from Athena's strings, typed as DuckDB's .df() types the same SQL type, so
    both engines' results are written alike: integers by width (pandas' nullable Int when a value is
    null), floats float64, booleans, timestamps, text as object."""
    kind = athena_type.lower().split("(")[0].strip()
    if kind in _INTEGER:
        dtype = _INTEGER[kind]
        if any(v is None for v in values):
            return pd.Series([None if v is None else int(v) for v in values], dtype=dtype.capitalize())
        return pd.Series([int(v) for v in values], dtype=dtype)  # type: ignore[arg-type]
    if kind in _FLOAT:
        return pd.Series([float("nan") if v is None else float(v) for v in values], dtype="float64")
    if kind == "boolean":
        return pd.Series([None if v is None else v.lower() == "true" for v in values], dtype="object")
    if kind == "date" or kind.startswith("timestamp"):
        return pd.Series(pd.to_datetime(values))
    return pd.Series(values, dtype="object")


def results_frame(pages: list[dict[str, Any]], name: str = "query") -> pd.DataFrame:
    """GetQueryResults pages -> a frame. The first row of a SELECT's results is its header (Athena's
    contract); it is checked against the column names and dropped."""
    if not pages:
        return pd.DataFrame()
    info = pages[0]["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
    names = [c["Name"] for c in info]
    rows = [
        [cell.get("VarCharValue") for cell in row["Data"]]
        for page in pages
        for row in page["ResultSet"]["Rows"]
    ]
    if rows:
        if rows[0] != names:
            raise ReviewpipeError(
                f"{name}: Athena's first result row {rows[0]} is not the header {names}; "
                "only SELECT / WITH queries are supported"
            )
        rows = rows[1:]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pd.DataFrame(
        {n: _column(list(values), c["Type"]) for n, values, c in zip(names, columns, info, strict=True)},
        columns=names,
    )


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class AthenaSettings:
    """The `catalog.athena` params section."""

    database: str
    workgroup: str
    output_location: str
    poll_delay_s: float
    timeout_s: float

    @classmethod
    def from_params(cls, section: Any) -> AthenaSettings:
        settings = cls(
            database=str(section.database),
            workgroup=str(section.workgroup),
            output_location=str(section.output_location),
            poll_delay_s=float(section.poll_delay_s),
            timeout_s=float(section.timeout_s),
        )
        if not settings.output_location.startswith("s3://"):
            raise ReviewpipeError(
                "catalog.athena.output_location must be an s3:// prefix for Athena's result files, "
                f"not {settings.output_location!r}"
            )
        return settings


class AthenaRunner:
    """Runs queries on Athena with the configured workgroup, database and results location."""

    def __init__(self, athena: Any, settings: AthenaSettings) -> None:
        self.athena = athena
        self.settings = settings

    def start(self, sql: str, name: str) -> str:
        with aws_call(f"starting {name} on Athena"):
            return str(
                self.athena.start_query_execution(
                    QueryString=sql,
                    QueryExecutionContext={"Database": self.settings.database, "Catalog": "AwsDataCatalog"},
                    ResultConfiguration={"OutputLocation": self.settings.output_location},
                    WorkGroup=self.settings.workgroup,
                )["QueryExecutionId"]
            )

    def wait(self, execution_id: str, name: str) -> dict[str, Any]:
        def describe() -> dict[str, Any]:
            with aws_call(f"polling {name} on Athena"):
                return self.athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]

        execution = poll(
            describe,
            lambda e: e["Status"]["State"],
            DONE,
            f"athena {name} ({execution_id})",
            self.settings.poll_delay_s,
            self.settings.timeout_s,
        )
        state = execution["Status"]["State"]
        if state != "SUCCEEDED":
            reason = execution["Status"].get("StateChangeReason", "no reason given")
            raise ReviewpipeError(f"{name} {state} on Athena: {reason}")
        return execution

    def results(self, execution_id: str, name: str) -> pd.DataFrame:
        with aws_call(f"reading the results of {name} from Athena"):
            pages = list(
                self.athena.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id)
            )
        return results_frame(pages, name)

    def run_all(self, queries: dict[str, str], label: str = "{name}") -> dict[str, pd.DataFrame]:
        """Start every query, then wait for each and read its rows (Athena runs them concurrently)."""
        started = {name: self.start(sql, label.format(name=name)) for name, sql in queries.items()}
        out = {}
        for name, execution_id in started.items():
            self.wait(execution_id, label.format(name=name))
            out[name] = self.results(execution_id, label.format(name=name))
        return out


def query_athena(
    params: Any, queries: dict[str, str], label: str = "sql/{name}.sql"
) -> dict[str, pd.DataFrame]:
    """Transpile {name: DuckDB SQL} and run it on Athena as `params` configures (catalog.athena, aws)."""
    from reviewpipe.aws.clients import Aws, AwsSettings
    from reviewpipe.config import section

    edges = section(params, "data").age_bands
    catalog = section(params, "catalog")
    settings = AthenaSettings.from_params(catalog.athena)
    description = storage.read_json(catalog.description) if storage.exists(catalog.description) else {}
    if "glue" not in description:
        raise ReviewpipeError(
            f"{catalog.description} has no Glue registration; run `dvc repro catalog` with catalog.engine=athena"
        )
    views = current_views(description["glue"])
    transpiled = {
        name: to_athena(sql, edges, label.format(name=name), views) for name, sql in queries.items()
    }
    athena = Aws(AwsSettings.from_params(section(params, "aws"))).client("athena")
    return AthenaRunner(athena, settings).run_all(transpiled, label)
