"""Explore: every sql/*.sql equals the same computation in pandas; results, plots and the offline report."""

from __future__ import annotations

import json
import re
from contextlib import chdir
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pytest

from reviewpipe.analytics import pandas_reference
from reviewpipe.analytics.explore import load_queries, query_catalog
from reviewpipe.config import load_params
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import explore
from tests.conftest import REPO_ROOT, run_data_stages

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_lake_table(table_dir: Path) -> pd.DataFrame:
    """A lake table read with pyarrow alone (not DuckDB): the manifest's files, Hive partitions."""
    manifest = json.loads((table_dir / "_manifest.json").read_text())
    dataset = pads.dataset(
        [str(table_dir / f) for f in manifest["files"]],
        format="parquet",
        partitioning="hive",
        partition_base_dir=str(table_dir),
    )
    return dataset.to_table().to_pandas()


def assert_sql_equals_pandas(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    params = load_params("params.yaml")
    got = query_catalog(params, load_queries(REPO_ROOT / "sql"))
    lake = Path(params.lake.uri)
    expected = pandas_reference.run_all(
        read_lake_table(lake / "reviews"), read_lake_table(lake / "rejects"), params.data.age_bands
    )
    assert set(got) == set(expected), "every sql/ file needs its pandas twin in pandas_reference"
    for name in got:
        assert len(got[name]) > 0, name
        pd.testing.assert_frame_equal(
            pandas_reference.comparable(got[name]),
            pandas_reference.comparable(expected[name]),
            rtol=1e-9,
            obj=f"sql/{name}.sql",
        )


def test_every_sql_file_equals_pandas_on_synthetic_data(synthetic_catalog: Path, monkeypatch) -> None:
    assert_sql_equals_pandas(synthetic_catalog, monkeypatch)


@pytest.fixture(scope="module")
def explored(synthetic_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The explore stage's output folder for the synthetic catalog (default params)."""
    out = tmp_path_factory.mktemp("explore")
    with chdir(synthetic_catalog):
        explore.main(load_params("params.yaml", [f"explore.out_dir={out}"]))
    return out


def test_explore_stage_writes_results_plots_and_offline_report(
    synthetic_catalog: Path, explored: Path
) -> None:
    out = explored
    names = set(load_queries(REPO_ROOT / "sql"))
    assert {p.stem for p in (out / "results").glob("*.csv")} == names
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) == 6 and all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)

    metrics = json.loads((synthetic_catalog / "metrics" / "ingest.json").read_text())
    sentiments = pd.read_csv(out / "results" / "sentiment_counts.csv")
    assert sentiments["reviews"].sum() == metrics["rows_clean"]
    assert (
        pd.read_csv(out / "results" / "rejects_by_reason.csv")["rows_rejected"].sum()
        == metrics["rows_rejected"]
    )

    html = (out / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == 6
    assert not re.search(r'(src|href)="(https?:)?//', html), (
        "the report must not load anything from the network"
    )
    assert all(f'id="query-{name}"' in html for name in names)
    assert f"{metrics['rows_clean']:,}" in html  # the catalog table's row count


def test_parquet_results_and_other_age_bands(synthetic_catalog: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(synthetic_catalog)
    out = tmp_path / "explore"
    explore.main(
        load_params(
            "params.yaml",
            [f"explore.out_dir={out}", "explore.result_format=parquet", "data.age_bands=[0,40,200]"],
        )
    )
    bands = pd.read_parquet(out / "results" / "sentiment_by_age_band.parquet")
    assert list(bands["age_band"].unique()) == ["<40", "40+"]
    assert bands.groupby("age_band")["share"].sum().round(9).eq(1).all()


def test_a_broken_sql_file_is_named_with_duckdbs_message(
    synthetic_catalog: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(synthetic_catalog)
    (tmp_path / "broken.sql").write_text("SELECT nope FROM reviews")
    params = load_params(
        "params.yaml", [f"explore.sql_dir={tmp_path}", f"explore.out_dir={tmp_path / 'out'}"]
    )
    with pytest.raises(ReviewpipeError, match=r"sql/broken\.sql failed: Binder Error.*nope"):
        explore.main(params)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM read_text('/etc/hostname')", "file system operations are disabled"),
        ("COPY (SELECT * FROM reviews) TO 'leak.csv'", "only SELECT queries"),
    ],
)
def test_sql_files_cannot_read_or_write_files_beyond_the_lake(
    synthetic_catalog: Path, tmp_path: Path, monkeypatch, sql: str, message: str
) -> None:
    monkeypatch.chdir(synthetic_catalog)
    (tmp_path / "sneaky.sql").write_text(sql)
    params = load_params(
        "params.yaml", [f"explore.sql_dir={tmp_path}", f"explore.out_dir={tmp_path / 'out'}"]
    )
    with pytest.raises(ReviewpipeError, match=rf"sql/sneaky\.sql.*{message}"):
        explore.main(params)
    assert not (synthetic_catalog / "leak.csv").exists()


def test_explore_reruns_are_byte_identical(synthetic_catalog: Path, explored: Path, tmp_path: Path) -> None:
    """Results, plots and the HTML report derive from the catalog and params, not the clock."""
    with chdir(synthetic_catalog):
        explore.main(load_params("params.yaml", [f"explore.out_dir={tmp_path / 'again'}"]))
    first = {p.relative_to(explored): p.read_bytes() for p in sorted(explored.rglob("*")) if p.is_file()}
    second = {
        p.relative_to(tmp_path / "again"): p.read_bytes()
        for p in sorted((tmp_path / "again").rglob("*"))
        if p.is_file()
    }
    assert first.keys() == second.keys() and first == second
    assert (
        "data as of its last ingested batch (2018-01-01T00:00:00+00:00)"
        in (explored / "index.html").read_text()
    )


def test_explore_with_the_lake_on_s3_equals_local(
    explored: Path, tmp_path: Path, s3_bucket: str, moto_server: str
) -> None:
    remote = run_data_stages(
        tmp_path / "s3",
        stages=("ingest", "catalog", "explore"),
        overrides=[f"lake.uri=s3://{s3_bucket}/lake", f"storage.endpoint_url={moto_server}"],
    )
    assert not list(remote.rglob("*.parquet")), "the lake must live on S3 only"
    description = json.loads((remote / "data" / "catalog.json").read_text())
    assert description["tables"]["reviews"]["location"] == f"s3://{s3_bucket}/lake/reviews"
    local_results = sorted((explored / "results").glob("*.csv"))
    assert len(local_results) == len(load_queries(REPO_ROOT / "sql"))
    for local in local_results:
        pd.testing.assert_frame_equal(
            pd.read_csv(remote / "reports" / "explore" / "results" / local.name),
            pd.read_csv(local),
            obj=local.name,
        )


@pytest.mark.realdata
@pytest.mark.slow
def test_real_data_report_and_counts(real_raw: Path, tmp_path: Path, monkeypatch) -> None:
    workdir = run_data_stages(tmp_path, raw=real_raw, stages=("ingest", "catalog", "explore"))
    metrics = json.loads((workdir / "metrics" / "ingest.json").read_text())
    assert metrics["rows_in"] == 23486
    results = workdir / "reports" / "explore" / "results"
    assert pd.read_csv(results / "sentiment_counts.csv")["reviews"].sum() == metrics["rows_clean"]
    assert pd.read_csv(results / "rejects_by_reason.csv")["rows_rejected"].sum() == metrics["rows_rejected"]
    html = (workdir / "reports" / "explore" / "index.html").read_text()
    assert html.count('src="data:image/png;base64,') == 6
    assert_sql_equals_pandas(workdir, monkeypatch)
