"""catalog.engine=athena: the lake registered in Glue and the sql/ files run on Athena, against moto's
server on 127.0.0.1.

What moto verifies: Glue's database, tables (columns, types, partition keys, location, serde) and
partitions read back after the catalog stage, and after the lake changes; Athena's
StartQueryExecution requests (the transpiled SQL, workgroup, database, output location), polling
GetQueryExecution through QUEUED -> RUNNING -> SUCCEEDED (moto's state manager), and paging
GetQueryResults.
What moto cannot do: run SQL. Its GetQueryResults answers rows queued through its
/moto-api/static/athena/query-results API, so these tests queue DuckDB's own answers (as Athena's
ResultSet: a header row, strings, column types) and check that the Athena path writes the very same
result files as the DuckDB path. Whether the transpiled SQL computes the same numbers is checked
without Athena: it is transpiled back to DuckDB, run, and compared with the pandas oracle.
"""

from __future__ import annotations

import filecmp
import json
import uuid
from contextlib import chdir
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
import requests
import sqlglot
from sqlglot import exp

from reviewpipe import cli
from reviewpipe.analytics import pandas_reference
from reviewpipe.analytics.explore import load_queries, prepare_connection, query_catalog, run_query
from reviewpipe.aws.athena import current_views, results_frame, to_athena
from reviewpipe.config import load_params
from reviewpipe.data.catalog import connect
from reviewpipe.data.synth import write_synth
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import catalog as catalog_stage
from reviewpipe.stages import explore as explore_stage
from reviewpipe.stages import ingest as ingest_stage
from tests.conftest import REPO_ROOT, run_data_stages
from tests.helpers.aws_calls import Recorder, record_clients
from tests.test_explore import read_lake_table

EDGES = [0, 25, 35, 45, 55, 65, 200]
APPROXIMATE = {"word_count_stats": ["median_words", "p90_words"]}  # approx_percentile on Athena


# ---------------------------------------------------------------- transpiling (no AWS)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "sql").glob("*.sql")), ids=lambda p: p.name)
def test_every_sql_file_transpiles_to_athena(path: Path) -> None:
    athena = to_athena(path.read_text(), EDGES, path.name)
    tree = sqlglot.parse_one(athena, read="athena")  # Athena's dialect parses what we wrote
    functions = {type(f).__name__ for f in tree.find_all(exp.Func)}
    unknown = [f.name for f in tree.find_all(exp.Anonymous)]
    assert not unknown, f"functions sqlglot does not know in Trino: {unknown}"
    assert "PercentileCont" not in functions  # Trino has no exact percentile
    original = sqlglot.parse_one(path.read_text(), read="duckdb")
    lowered = " ".join(tree.sql("athena", comments=False).lower().split())
    assert "word_count(" not in lowered and "quantile_cont" not in lowered
    if any(t.name == "age_bands" for t in original.find_all(exp.Table)):
        assert "with age_bands as (select * from (values ('<25', 0, 0, 25)," in lowered
    if any(f.name.lower() == "word_count" for f in original.find_all(exp.Anonymous)):
        assert r"regexp_count(review_body, '\s+')" in lowered


def local_glue_view(table_dir: Path, con: Any) -> dict[str, Any]:
    """What sync_lake records for the versioned reviews table, from the local lake's manifest."""
    manifest = json.loads((table_dir / "_manifest.json").read_text())
    columns = [c for c, *_ in con.execute("DESCRIBE reviews_history").fetchall()]
    info = {"glue_table": "reviews_history", "columns": columns}
    return {
        "tables": {
            "reviews": {
                **info,
                "record_id": manifest["record_id"],
                "version_column": manifest["version_column"],
            }
        }
    }


def test_transpiled_sql_computes_what_the_pandas_oracle_computes(synthetic_catalog: Path) -> None:
    """Athena's SQL transpiled back to DuckDB and run on the synthetic lake equals the pandas twin
    of each query (the approximate percentiles within one word)."""
    with chdir(synthetic_catalog):
        params = load_params("params.yaml")
        con = connect(params)
        prepare_connection(con, EDGES)
        lake = Path(params.lake.uri)
        expected = pandas_reference.run_all(
            read_lake_table(lake / "reviews"), read_lake_table(lake / "rejects"), EDGES
        )
        views = current_views(local_glue_view(lake / "reviews", con))
        assert set(views) == {"reviews"}  # the lake's reviews table is versioned: Glue holds reviews_history
        for name, sql in load_queries(REPO_ROOT / "sql").items():
            back = sqlglot.transpile(to_athena(sql, EDGES, name, views), read="athena", write="duckdb")[0]
            got = pandas_reference.comparable(run_query(con, back, name))
            want = pandas_reference.comparable(expected[name])
            approx = APPROXIMATE.get(name, [])
            for column in approx:
                assert (got[column] - want[column]).abs().max() <= 1.0, (name, column)
            pd.testing.assert_frame_equal(
                got.drop(columns=approx), want.drop(columns=approx), rtol=1e-9, obj=name
            )
        con.close()


def test_sql_errors_name_the_query() -> None:
    with pytest.raises(ReviewpipeError, match="bad.sql: one SQL statement"):
        to_athena("SELECT 1; SELECT 2", EDGES, "bad.sql")
    with pytest.raises(ReviewpipeError, match="bad.sql: sqlglot cannot parse"):
        to_athena("SELECT FROM WHERE (", EDGES, "bad.sql")


def test_results_frame_checks_the_header_row() -> None:
    page = {
        "ResultSet": {
            "ResultSetMetadata": {"ColumnInfo": [{"Name": "n", "Type": "bigint"}]},
            "Rows": [{"Data": [{"VarCharValue": "7"}]}],
        }
    }
    with pytest.raises(ReviewpipeError, match="not the header"):
        results_frame([page])


# ---------------------------------------------------------------- Glue + Athena on moto


def athena_result(frame: pd.DataFrame) -> dict[str, Any]:
    """A DuckDB result as Athena's GetQueryResults gives it: the header row first, every value a
    string (nulls without VarCharValue), Trino type names."""
    types = {
        "int8": "tinyint",
        "int16": "smallint",
        "int32": "integer",
        "int64": "bigint",
        "float64": "double",
    }
    info = [
        {"Name": c, "Label": c, "Type": types.get(str(frame[c].dtype).lower(), "varchar")}
        for c in frame.columns
    ]

    def cell(value: Any) -> dict[str, str]:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return {}
        return {"VarCharValue": repr(value) if isinstance(value, float) else str(value)}

    rows = [{"Data": [{"VarCharValue": c} for c in frame.columns]}]
    rows += [{"Data": [cell(v) for v in row]} for row in frame.astype(object).itertuples(index=False)]
    return {"rows": rows, "column_info": info}


def queue_athena_results(endpoint: str, frames: list[pd.DataFrame]) -> None:
    response = requests.post(
        f"{endpoint}/moto-api/static/athena/query-results",
        json={"region": "us-east-1", "results": [athena_result(f) for f in frames]},
        timeout=10,
    )
    assert response.status_code == 201


@pytest.fixture
def slow_athena(moto_server: str) -> Any:
    """Each query execution answers QUEUED, RUNNING, RUNNING, SUCCEEDED to its polls (moto's state manager)."""
    url = f"{moto_server}/moto-api/state-manager"
    requests.post(
        f"{url}/set-transition",
        json={"model_name": "athena::execution", "transition": {"progression": "manual", "times": 2}},
        timeout=10,
    )
    yield
    requests.post(f"{url}/unset-transition", json={"model_name": "athena::execution"}, timeout=10)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return record_clients(monkeypatch, ("athena", "glue"))


def lake_overrides(bucket: str, database: str, workgroup: str) -> list[str]:
    return [
        f"lake.uri=s3://{bucket}/lake",
        "catalog.engine=athena",
        f"catalog.athena.database={database}",
        f"catalog.athena.workgroup={workgroup}",
        f"catalog.athena.output_location=s3://{bucket}/athena-results/",
        "catalog.athena.poll_delay_s=0.01",
        "catalog.athena.timeout_s=30",
        "aws.region=us-east-1",
    ]


def make_athena_lake(workdir: Path, bucket: str) -> tuple[Path, str]:
    """ingest -> catalog (engine athena) on synthetic data, the lake on moto's S3; (workdir, database)."""
    database = f"reviews_{uuid.uuid4().hex[:8]}"
    workgroup = f"reviewpipe-{uuid.uuid4().hex[:8]}"
    boto3.client("athena", region_name="us-east-1").create_work_group(
        Name=workgroup, Configuration={"ResultConfiguration": {"OutputLocation": f"s3://{bucket}/wg/"}}
    )
    run_data_stages(workdir, overrides=lake_overrides(bucket, database, workgroup))
    return workdir, database


@pytest.fixture(scope="module")
def athena_lake(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> tuple[Path, str]:
    """One lake + Glue database for the tests that only read them."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
    return make_athena_lake(tmp_path_factory.mktemp("athena_lake"), bucket)


def glue_partitions(glue: Any, database: str, table: str) -> dict[tuple[str, ...], str]:
    pages = glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table)
    return {
        tuple(p["Values"]): p["StorageDescriptor"]["Location"] for page in pages for p in page["Partitions"]
    }


def test_catalog_registers_the_lake_in_glue(athena_lake: tuple[Path, str]) -> None:
    workdir, database = athena_lake
    s3_bucket = load_params(workdir / "params.yaml").lake.uri.split("/")[2]
    glue = boto3.client("glue", region_name="us-east-1")
    assert glue.get_database(Name=database)["Database"]["LocationUri"] == f"s3://{s3_bucket}/lake/"
    with chdir(workdir):
        params = load_params("params.yaml")
        con = connect(params)
        duck = {
            t: con.execute(f"DESCRIBE {t}").fetchall() for t in ("reviews_history", "rejects")
        }  # the local catalog over the same files
        categories = [r[0] for r in con.execute("SELECT DISTINCT product_category FROM reviews").fetchall()]
        con.close()
    hive = {
        "BIGINT": "bigint",
        "VARCHAR": "string",
        "TIMESTAMP WITH TIME ZONE": "timestamp",
        "INTEGER": "int",
    }
    for name, glue_name in (("reviews", "reviews_history"), ("rejects", "rejects")):
        table = glue.get_table(DatabaseName=database, Name=glue_name)["Table"]
        sd = table["StorageDescriptor"]
        assert sd["Location"] == f"s3://{s3_bucket}/lake/{name}/"
        assert sd["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
        assert table["TableType"] == "EXTERNAL_TABLE" and table["Parameters"]["classification"] == "parquet"
        keys = table.get("PartitionKeys", [])
        # Same columns, same order and types as DuckDB reads from the files; the partition key last.
        expected = [(c, hive[t]) for c, t, *_ in duck[glue_name]]
        assert [(c["Name"], c["Type"]) for c in sd["Columns"] + keys] == expected
    keys = glue.get_table(DatabaseName=database, Name="reviews_history")["Table"]["PartitionKeys"]
    assert keys == [{"Name": "product_category", "Type": "string"}]
    partitions = glue_partitions(glue, database, "reviews_history")
    assert {v[0] for v in partitions} == {
        "__HIVE_DEFAULT_PARTITION__" if c is None else c for c in categories
    }
    for (value,), location in partitions.items():
        from urllib.parse import quote

        assert location == f"s3://{s3_bucket}/lake/reviews/product_category={quote(value, safe=' ')}/"
        objects = boto3.client("s3").list_objects_v2(
            Bucket=s3_bucket, Prefix=location.removeprefix(f"s3://{s3_bucket}/")
        )
        assert objects["KeyCount"] == 1 and objects["Contents"][0]["Key"].endswith(".parquet")


@pytest.mark.slow
def test_catalog_follows_the_lake_when_it_changes(tmp_path: Path, s3_bucket: str, calls: Recorder) -> None:
    """A new ingest without one category: the table's run is updated, that partition is dropped, the
    others point at the same folders; an unchanged lake makes no Glue writes."""
    workdir, database = make_athena_lake(tmp_path, s3_bucket)
    glue = boto3.client("glue", region_name="us-east-1")
    before = glue_partitions(glue, database, "reviews_history")
    run_before = glue.get_table(DatabaseName=database, Name="reviews_history")["Table"]["Parameters"]
    with chdir(workdir):
        params = load_params("params.yaml")
        raw = pd.read_csv(params.data.raw_uri, encoding="latin-1", dtype=str, keep_default_na=False)
        dropped = "Dresses"
        assert (raw["Class Name"] == dropped).any()
        raw[raw["Class Name"] != dropped].to_csv(params.data.raw_uri, index=False, encoding="latin-1")
        ingest_stage.main(params)
        calls.log.clear()
        catalog_stage.main(params)
        writes = [op for op, _ in calls.log if not op.startswith("Get")]
        assert writes == ["UpdateTable", "BatchDeletePartition", "UpdateTable"]  # reviews; rejects' run
        assert calls.named("BatchDeletePartition")[0]["PartitionsToDelete"] == [{"Values": [dropped]}]
        after = glue_partitions(glue, database, "reviews_history")
        assert after == {k: v for k, v in before.items() if k != (dropped,)}
        run_after = glue.get_table(DatabaseName=database, Name="reviews_history")["Table"]["Parameters"]
        assert run_after["reviewpipe.run_id"] != run_before["reviewpipe.run_id"]
        assert int(run_after["reviewpipe.rows"]) < int(run_before["reviewpipe.rows"])
        calls.log.clear()
        catalog_stage.main(params)
        assert [op for op, _ in calls.log if not op.startswith("Get")] == []


def test_explore_on_athena_writes_what_duckdb_writes(
    athena_lake: tuple[Path, str],
    calls: Recorder,
    moto_server: str,
    slow_athena: None,
    capsys: pytest.CaptureFixture,
) -> None:
    workdir, database = athena_lake
    s3_bucket = load_params(workdir / "params.yaml").lake.uri.split("/")[2]
    with chdir(workdir):
        params = load_params("params.yaml")
        queries = load_queries(params.explore.sql_dir)
        duck = query_catalog(params, queries, engine="duckdb")
        queue_athena_results(moto_server, [duck[name] for name in queries])
        explore_stage.main(params)  # catalog.engine=athena
        athena_dir = Path("reports/athena")
        Path(params.explore.out_dir).rename(athena_dir)
        explore_stage.main(load_params("params.yaml", ["catalog.engine=duckdb"]))
    started = calls.named("StartQueryExecution")
    views = current_views(json.loads((workdir / "data/catalog.json").read_text())["glue"])
    assert [c["QueryString"] for c in started] == [
        to_athena(sql, EDGES, n, views) for n, sql in queries.items()
    ]
    assert "FROM reviews_history" in started[0]["QueryString"]  # reviews = each record's newest version
    for call in started:
        assert call["WorkGroup"] == params.catalog.athena.workgroup
        assert call["QueryExecutionContext"] == {"Database": database, "Catalog": "AwsDataCatalog"}
        assert call["ResultConfiguration"] == {"OutputLocation": f"s3://{s3_bucket}/athena-results/"}
    # Polled through QUEUED and RUNNING until SUCCEEDED: four GetQueryExecution calls per query.
    assert len(calls.named("GetQueryExecution")) == 4 * len(queries)
    printed = capsys.readouterr().out
    assert all(f"{state}\n" in printed for state in ("QUEUED", "RUNNING", "SUCCEEDED"))
    results = workdir / "reports/explore/results"
    for name in queries:
        assert filecmp.cmp(
            results / f"{name}.csv", workdir / athena_dir / "results" / f"{name}.csv", shallow=False
        ), name
    assert (workdir / athena_dir / "index.html").stat().st_size > 0


def test_query_command_on_athena(
    athena_lake: tuple[Path, str], calls: Recorder, moto_server: str, capsys: pytest.CaptureFixture
) -> None:
    workdir, _ = athena_lake
    sql = "SELECT sentiment, COUNT(*) AS n, AVG(word_count(review_body)) AS words FROM reviews GROUP BY 1 ORDER BY 1"
    with chdir(workdir):
        expected = query_catalog(load_params("params.yaml"), {"q": sql}, engine="duckdb")["q"]
        queue_athena_results(moto_server, [expected])
        assert cli.main(["query", "--engine", "athena", sql, "-o", "out.csv"]) == 0
        got = pd.read_csv("out.csv")
    assert "REGEXP_COUNT(review_body, '\\S+')" in calls.named("StartQueryExecution")[0]["QueryString"]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert f"({len(expected)} rows)" in capsys.readouterr().out


def test_athena_engine_needs_the_lake_on_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ingest writes metrics/ and data/lake/ here
    write_synth(str(tmp_path / "raw.csv.gz"), rows=50, seed=1)
    params = load_params(
        REPO_ROOT / "params.yaml",
        [f"data.raw_uri={tmp_path / 'raw.csv.gz'}", f"lake.uri={tmp_path / 'lake'}", "catalog.engine=athena"],
    )
    ingest_stage.main(params)
    with pytest.raises(ReviewpipeError, match="needs the lake on S3"):
        catalog_stage.main(params)
    with pytest.raises(ReviewpipeError, match="catalog.engine: Input should be 'duckdb' or 'athena'"):
        load_params(REPO_ROOT / "params.yaml", ["catalog.engine=spark"])


def test_athena_reads_only_the_published_files_of_the_lake(synthetic_catalog: Path, tmp_path: Path) -> None:
    """Athena reads every object under a partition; the lake keeps retired files (lake.retain_seconds)
    beside the published ones. The queries' CTEs keep only rows whose "$path" the manifest lists, so
    they count what DuckDB's catalog counts. Athena's table is emulated in DuckDB: every parquet file
    under the table folder, with the file name as "$path"; a retired copy of a file lies beside it."""
    import shutil

    import duckdb

    lake = tmp_path / "lake"
    with chdir(synthetic_catalog):
        shutil.copytree(Path(load_params("params.yaml").lake.uri), lake)
    manifests = {t: json.loads((lake / t / "_manifest.json").read_text()) for t in ("reviews", "rejects")}
    for table, manifest in manifests.items():  # a retired file still under the partition
        first = lake / table / manifest["files"][0]
        retired = pd.read_parquet(first)
        if manifest.get("record_id"):  # rows of reviews the published version no longer has
            retired[manifest["record_id"]] = retired[manifest["record_id"]] + 10**9
        retired.to_parquet(first.with_name("retired-" + first.name), index=False)
    expected = pandas_reference.run_all(
        read_lake_table(lake / "reviews"), read_lake_table(lake / "rejects"), EDGES
    )

    con = duckdb.connect()
    prepare_connection(con, EDGES)
    con.execute("CREATE SCHEMA reviewsdb")
    glue: dict[str, Any] = {"database": "reviewsdb", "tables": {}}
    for table, glue_name in (("reviews", "reviews_history"), ("rejects", "reviewsdb.rejects")):
        con.execute(
            f'CREATE VIEW {glue_name} AS SELECT *, filename AS "$path" FROM read_parquet('
            f"'{lake / table}/**/*.parquet', hive_partitioning = true, filename = true)"
        )
        columns = [
            c for c, *_ in con.execute(f"DESCRIBE {glue_name}").fetchall() if c not in ("$path", "filename")
        ]
        versioned = table == "reviews"
        glue["tables"][table] = {
            "glue_table": glue_name.split(".")[-1],
            "columns": columns,
            "record_id": manifests[table]["record_id"] if versioned else None,
            "version_column": manifests[table]["version_column"] if versioned else None,
            "files": [str(lake / table / f) for f in manifests[table]["files"]],
        }
    con.execute("CREATE VIEW rejects AS SELECT * FROM reviewsdb.rejects")  # the query's default database

    def counts(views: dict[str, str]) -> dict[str, pd.DataFrame]:
        out = {}
        for name in ("sentiment_counts", "rejects_by_reason"):
            sql = (REPO_ROOT / "sql" / f"{name}.sql").read_text()
            back = sqlglot.transpile(to_athena(sql, EDGES, name, views), read="athena", write="duckdb")[0]
            out[name] = pandas_reference.comparable(run_query(con, back, name))
        return out

    for name, got in counts(current_views(glue)).items():
        pd.testing.assert_frame_equal(got, pandas_reference.comparable(expected[name]), obj=name)
    # Without the file list (what Athena read before): the retired file's rows are counted too.
    unlisted = {**glue, "tables": {t: {**i, "files": None} for t, i in glue["tables"].items()}}
    overcount = counts(current_views(unlisted))
    for name, column in (("sentiment_counts", "reviews"), ("rejects_by_reason", "rows_rejected")):
        assert overcount[name][column].sum() > expected[name][column].sum(), name
    con.close()
