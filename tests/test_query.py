"""`reviewpipe query`: ad-hoc SQL against the catalog; errors for people (exit 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reviewpipe.cli import main
from reviewpipe.config import load_params
from reviewpipe.data.catalog import connect

SENTIMENTS_SQL = "SELECT sentiment, COUNT(*) AS n FROM reviews GROUP BY sentiment ORDER BY sentiment"


@pytest.fixture
def in_catalog(synthetic_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(synthetic_catalog)
    return synthetic_catalog


def expected_sentiments() -> pd.DataFrame:
    con = connect(load_params("params.yaml"))
    try:
        return con.sql(SENTIMENTS_SQL).df()
    finally:
        con.close()


def test_prints_a_table_with_a_row_count(in_catalog: Path, capsys) -> None:
    assert main(["query", SENTIMENTS_SQL]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["sentiment", "n"]
    expected = expected_sentiments()
    assert [line.split() for line in lines[1:4]] == [
        [str(s), str(n)] for s, n in expected.itertuples(index=False)
    ]
    assert lines[4] == "(3 rows)"


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_output_file_holds_the_full_result(in_catalog: Path, tmp_path: Path, capsys, suffix: str) -> None:
    output = tmp_path / f"sentiments.{suffix}"
    assert main(["query", SENTIMENTS_SQL, "--output", str(output), "--max-rows", "1"]) == 0
    assert "(3 rows, first 1 shown)" in capsys.readouterr().out
    written = pd.read_csv(output) if suffix == "csv" else pd.read_parquet(output)
    pd.testing.assert_frame_equal(written, expected_sentiments(), check_dtype=False)


def test_sql_from_a_file_with_age_bands_and_word_count(in_catalog: Path, tmp_path: Path, capsys) -> None:
    query = tmp_path / "q.sql"
    query.write_text(
        "SELECT COUNT(DISTINCT band) AS bands, MIN(word_count(review_body)) > 0 AS words "
        "FROM reviews CROSS JOIN age_bands"
    )
    assert main(["query", f"@{query}"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["6", "True"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", "Parser Error: syntax error"),
        ("SELECT * FROM no_such_table", "Table with name no_such_table does not exist"),
        ("SELECT no_such_column FROM reviews", 'Referenced column "no_such_column" not found'),
    ],
)
def test_bad_query_gives_duckdbs_message_and_exit_2(in_catalog: Path, capsys, sql: str, message: str) -> None:
    assert main(["query", sql]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: query failed:") and message in err


def test_missing_catalog_says_run_dvc_repro_catalog(in_catalog: Path, tmp_path: Path, capsys) -> None:
    assert main(["query", "SELECT 1", "-S", f"catalog.database={tmp_path / 'missing.duckdb'}"]) == 2
    assert "run `dvc repro catalog`" in capsys.readouterr().err


def test_unknown_output_format_is_refused_before_running(in_catalog: Path, capsys) -> None:
    assert main(["query", "SELECT 1", "--output", "result.xlsx"]) == 2
    assert "use a .csv or .parquet" in capsys.readouterr().err
    assert not Path("result.xlsx").exists()


def test_command_line_prints_no_traceback(in_catalog: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reviewpipe.cli", "query", "SELECT FROM WHERE"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Parser Error" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM read_text('/etc/hostname')", "file system operations are disabled"),
        ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
        ("SELECT * FROM glob('/etc/*')", "file system operations are disabled"),
        (
            "COPY (SELECT * FROM reviews) TO 'leak.csv'",
            "only SELECT queries run against the catalog, not COPY",
        ),
        ("COPY (SELECT 1 AS a) TO 'data/lake/reviews/leak.parquet'", "not COPY"),
        ("ATTACH 'other.duckdb'", "not ATTACH"),
        ("INSTALL httpfs", "not"),
        ("SET enable_external_access = true", "not SET"),
    ],
)
def test_queries_cannot_touch_files_beyond_the_lake(in_catalog: Path, capsys, sql: str, message: str) -> None:
    """The catalog's views still read the lake; nothing else can be read, and nothing written."""
    assert main(["query", sql]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: query") and message in err, err
    assert not Path("leak.csv").exists() and not Path("data/lake/reviews/leak.parquet").exists()
    assert not Path("other.duckdb").exists()
    assert main(["query", "SELECT COUNT(*) FROM reviews JOIN rejects ON false"]) == 0


def test_csv_output_neutralises_formula_cells(in_catalog: Path, tmp_path: Path, capsys) -> None:
    sql = (
        "SELECT * FROM (VALUES ('=HYPERLINK(\"http://x.example\",\"click\")', -3), ('+1+1', 2), ('-2', 3),"
        " ('@SUM(A1)', 4), ('fine text', 5), ('a=b', 6)) AS t(cell, n)"
    )
    assert main(["query", sql, "-o", str(tmp_path / "out.csv")]) == 0
    written = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert written["cell"].tolist() == [
        '\'=HYPERLINK("http://x.example","click")',
        "'+1+1",
        "'-2",
        "'@SUM(A1)",
        "fine text",
        "a=b",
    ]
    assert written["n"].tolist() == [-3, 2, 3, 4, 5, 6]  # numbers stay numbers
    assert not list(tmp_path.glob("*.tmp-*"))
