"""Athena, locally: run the sql/*.sql files against the catalog and save each result."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from reviewpipe import storage
from reviewpipe.config import section
from reviewpipe.data.catalog import check_engine, check_statements, connect
from reviewpipe.errors import ReviewpipeError
from reviewpipe.prep.bands import band_labels

RESULT_FORMATS = ("csv", "parquet")


def load_queries(sql_dir: str | Path) -> dict[str, str]:
    """{file stem: SQL text} for every *.sql in `sql_dir`, in file-name order."""
    files = sorted(Path(sql_dir).glob("*.sql"))
    if not files:
        raise ReviewpipeError(f"no *.sql files in {sql_dir}; set explore.sql_dir to the folder of queries.")
    return {f.stem: f.read_text() for f in files}


def age_bands_frame(edges: Sequence[int]) -> pd.DataFrame:
    """The `age_bands` lookup table the SQL joins on: band, band_order, lower_bound, upper_bound."""
    edges = [int(e) for e in edges]
    if len(edges) < 2 or edges != sorted(set(edges)):
        raise ReviewpipeError(f"data.age_bands must be at least two increasing edges, got {edges}.")
    return pd.DataFrame(
        {
            "band": band_labels(edges),
            "band_order": range(len(edges) - 1),
            "lower_bound": edges[:-1],
            "upper_bound": edges[1:],
        }
    )


# A word is a run of characters other than whitespace (space, tab, LF, CR, FF): RE2's \S+. Mapping the
# other whitespace to spaces (replace: ~10x faster than translate here), splitting on spaces and dropping
# the empty pieces is ~4x faster in DuckDB than cardinality(regexp_extract_all(text, '\S+')).
# On Athena/Trino use regexp_count(text, '\S+').
WORD_COUNT_MACRO = """
CREATE OR REPLACE TEMP MACRO word_count(text) AS
    len(list_filter(
        string_split(replace(replace(replace(replace(text, chr(9), ' '), chr(10), ' '), chr(12), ' '),
                             chr(13), ' '), ' '),
        lambda w: w <> ''))
"""


def prepare_connection(con: duckdb.DuckDBPyConnection, edges: Sequence[int]) -> None:
    """What the sql/ files use besides the catalog's views: the `age_bands` lookup table (from
    `data.age_bands`) and the `word_count(text)` macro. Works on a read-only connection."""
    con.register("age_bands", age_bands_frame(edges))
    con.execute(WORD_COUNT_MACRO)


def run_query(
    con: duckdb.DuckDBPyConnection, sql: str, name: str = "query", select_only: bool = False
) -> pd.DataFrame:
    """Run one statement; DuckDB's own message becomes a ReviewpipeError. `select_only`: refuse
    anything but SELECT (user SQL on a sandboxed catalog connection)."""
    if select_only:
        check_statements(con, sql, name)
    try:
        relation = con.sql(sql)
        return relation.df() if relation is not None else pd.DataFrame()
    except duckdb.Error as exc:
        raise ReviewpipeError(f"{name} failed: {exc}") from exc


def query_catalog(
    params: Any, queries: dict[str, str], label: str = "sql/{name}.sql", engine: str | None = None
) -> dict[str, pd.DataFrame]:
    """Run {name: SQL} against the catalog in `params`, prepared as the sql/ files expect, on
    `engine` (default catalog.engine): DuckDB, or Athena over the Glue tables (reviewpipe.aws.athena).
    On DuckDB the connection is sandboxed: SELECTs only, and no file access beyond the lake files the
    catalog's views read. A failing query raises a ReviewpipeError naming it (`label`) with the
    engine's message."""
    if check_engine(engine or section(params, "catalog").engine) == "athena":
        from reviewpipe.aws.athena import query_athena

        return query_athena(params, queries, label)
    con = connect(params, sandboxed=True)
    try:
        prepare_connection(con, section(params, "data").age_bands)
        return {
            name: run_query(con, sql, label.format(name=name), select_only=True)
            for name, sql in queries.items()
        }
    finally:
        con.close()


def write_result(
    frame: pd.DataFrame, uri: str, fmt: str, options: storage.StorageOptions | None = None
) -> None:
    """A query result as CSV (formula cells neutralised: results get opened in spreadsheets) or
    parquet, published atomically."""
    if fmt not in RESULT_FORMATS:
        raise ReviewpipeError(f"unknown result format {fmt!r}; use one of {', '.join(RESULT_FORMATS)}.")
    if fmt == "csv":
        storage.write_csv(frame, uri, options, spreadsheet_safe=True)
    else:
        storage.write_parquet(frame, uri, options)


def write_results(
    results: dict[str, pd.DataFrame], out_dir: str, fmt: str, options: storage.StorageOptions | None = None
) -> list[str]:
    """Write each result as `{out_dir}/{name}.{fmt}`; returns the URIs written."""
    written = []
    for name, frame in results.items():
        uri = storage.join(out_dir, f"{name}.{fmt}")
        write_result(frame, uri, fmt, options)
        written.append(uri)
    return written
