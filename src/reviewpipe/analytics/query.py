"""`reviewpipe query "SELECT ..."`: ad-hoc SQL against the catalog (views `reviews`, `rejects`,
plus the `age_bands` lookup table from params), printed as a table or saved as CSV/parquet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from reviewpipe import storage
from reviewpipe.analytics.explore import query_catalog, write_result
from reviewpipe.config import load_params
from reviewpipe.errors import ReviewpipeError

OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sql",
        help='the query, e.g. "SELECT sentiment, COUNT(*) FROM reviews GROUP BY 1", '
        "or @file.sql to read it from a file",
    )
    parser.add_argument(
        "-o", "--output", help="also write the full result to this .csv or .parquet (any URI)"
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="override a param, e.g. -S catalog.database=/tmp/catalog.duckdb",
    )
    parser.add_argument(
        "--engine",
        choices=["duckdb", "athena"],
        help="who runs it (default: catalog.engine): DuckDB over the local catalog, or Athena over "
        "the Glue tables (the SQL is DuckDB's dialect, transpiled with sqlglot)",
    )
    parser.add_argument(
        "--max-rows", type=int, default=50, help="rows to print (default 50; the output file always gets all)"
    )


def run(args: argparse.Namespace) -> int:
    sql = _read_sql(args.sql)
    output_format = _output_format(args.output) if args.output else None
    params = load_params(args.params, args.overrides)
    result = query_catalog(params, {"query": sql}, label="query", engine=args.engine)["query"]
    print(format_table(result, args.max_rows))
    if args.output:
        write_result(
            result, args.output, output_format, storage.StorageOptions.from_params(params.get("storage"))
        )
        print(f"wrote {len(result)} rows to {args.output}")
    return 0


def format_table(frame: pd.DataFrame, max_rows: int = 50) -> str:
    """A plain-text table with at most `max_rows` rows and a row count."""
    if frame.columns.empty:
        return "(no result)"
    with pd.option_context("display.max_colwidth", 60, "display.width", 200, "display.max_columns", None):
        text = frame.head(max_rows).to_string(index=False, na_rep="NULL")
    more = f", first {max_rows} shown" if len(frame) > max_rows else ""
    return f"{text}\n({len(frame)} row{'s' if len(frame) != 1 else ''}{more})"


def _read_sql(text: str) -> str:
    if not text.startswith("@"):
        return text
    path = Path(text[1:])
    if not path.is_file():
        raise ReviewpipeError(f"SQL file {path} not found.")
    return path.read_text()


def _output_format(uri: str) -> str:
    suffix = Path(uri).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ReviewpipeError(f"--output {uri}: use a .csv or .parquet file name.")
    return OUTPUT_FORMATS[suffix]
