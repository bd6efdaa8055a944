"""Catalog: views over exactly the files each manifest lists, schema/partition inference, catalog.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from reviewpipe.data.catalog import build_catalog, open_catalog
from reviewpipe.errors import ReviewpipeError

CATEGORIES = ["Dresses", "Knits", "Casual bottoms", "Tops/Tees", None]


def clean_reviews(rows: int, seed: int = 0) -> pd.DataFrame:
    """Rows shaped like the lake's clean table; categories include a space, a slash and NULL."""
    rng = np.random.default_rng(seed)
    rating = rng.choice([1, 2, 3, 4, 5], size=rows, p=[0.05, 0.07, 0.12, 0.2, 0.56])
    return pd.DataFrame(
        {
            "review_id": np.arange(rows, dtype="int64"),
            "age": pd.array(rng.integers(18, 90, rows), dtype="Int64"),
            "review_body": [" ".join(["word"] * int(n)) for n in rng.integers(1, 40, rows)],
            "rating": rating.astype("int64"),
            "product_category": pd.array(
                rng.choice(np.array(CATEGORIES, dtype=object), rows), dtype="string"
            ),
            "sentiment": np.where(rating <= 2, -1, np.where(rating == 3, 0, 1)).astype("int64"),
        }
    )


def write_lake_table(table_dir: Path, frame: pd.DataFrame, partition_by: str | None) -> dict:
    """Write one table as the ingest contract says: Hive-partitioned parquet, `_manifest.json` last."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    files: list[str] = []
    if len(frame):
        pads.write_dataset(
            table,
            table_dir,
            format="parquet",
            basename_template="part-{i}.parquet",
            partitioning=[partition_by] if partition_by else None,
            partitioning_flavor="hive",
            file_visitor=lambda written: files.append(os.path.relpath(written.path, table_dir)),
            existing_data_behavior="overwrite_or_ignore",
        )
    table_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "table": table_dir.name,
        "files": sorted(files),
        "partition_by": partition_by,
        "rows": len(frame),
        "columns": {field.name: str(field.type) for field in table.schema},
        "run_id": "test-run",
        "created_at": "2025-01-01T00:00:00+00:00",
    }
    (table_dir / "_manifest.json").write_text(json.dumps(manifest))
    return manifest


def rejects_frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "review_id": [str(i) for i in range(rows)],
            "rating": ["7"] * rows,
            "reject_reason": ["rating_out_of_range"] * rows,
            "source_row": np.arange(rows, dtype="int64"),
        }
    )


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    reviews = clean_reviews(400)
    write_lake_table(tmp_path / "lake" / "reviews", reviews, "product_category")
    write_lake_table(tmp_path / "lake" / "rejects", rejects_frame(3), None)
    return tmp_path / "lake", reviews


def test_views_hold_the_lake_rows_with_partition_values(lake, tmp_path: Path) -> None:
    lake_dir, reviews = lake
    build_catalog(str(lake_dir), str(tmp_path / "catalog.duckdb"))
    con = open_catalog(str(tmp_path / "catalog.duckdb"))
    got = con.sql("SELECT * FROM reviews").df().sort_values("review_id", ignore_index=True)
    assert len(got) == len(reviews)
    # The partition column comes back from the paths (spaces, slashes, NULL included).
    pd.testing.assert_series_equal(got["product_category"].astype("string"), reviews["product_category"])
    pd.testing.assert_series_equal(got["review_body"], reviews["review_body"], check_dtype=False)
    assert con.execute("SELECT COUNT(*), MIN(reject_reason) FROM rejects").fetchone() == (
        3,
        "rating_out_of_range",
    )


def test_description_lists_columns_partitions_and_rows(lake, tmp_path: Path) -> None:
    lake_dir, reviews = lake
    description = build_catalog(str(lake_dir), str(tmp_path / "catalog.duckdb"))
    table = description["tables"]["reviews"]
    assert table["location"] == str(lake_dir / "reviews")
    assert table["rows"] == 400
    types = {c["name"]: c["type"] for c in table["columns"]}
    assert types == {
        "review_id": "BIGINT",
        "age": "BIGINT",
        "review_body": "VARCHAR",
        "rating": "BIGINT",
        "sentiment": "BIGINT",
        "product_category": "VARCHAR",
    }
    assert table["partitions"]["column"] == "product_category"
    expected = reviews["product_category"].value_counts(dropna=False)
    got = {v["value"]: v["rows"] for v in table["partitions"]["values"]}
    assert got == {(None if pd.isna(k) else k): n for k, n in expected.items()}
    assert table["partitions"]["values"][-1]["value"] is None  # NULL partition listed last
    assert description["tables"]["rejects"]["partitions"] is None
    assert description["tables"]["rejects"]["rows"] == 3
    json.dumps(description)  # JSON-ready as is


def test_views_work_from_another_working_directory(lake, tmp_path: Path, monkeypatch) -> None:
    lake_dir, _ = lake
    monkeypatch.chdir(tmp_path)
    build_catalog("lake", "db/catalog.duckdb")  # relative URIs, as in params.yaml
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    con = open_catalog(str(tmp_path / "db" / "catalog.duckdb"))
    assert con.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 400


def test_only_files_in_the_manifest_are_read(lake, tmp_path: Path) -> None:
    lake_dir, reviews = lake
    stray = lake_dir / "reviews" / "product_category=Dresses" / "half-written.parquet"
    reviews.drop(columns="product_category").to_parquet(stray)
    description = build_catalog(str(lake_dir), str(tmp_path / "catalog.duckdb"))
    assert description["tables"]["reviews"]["rows"] == 400


def test_manifest_row_count_mismatch_is_an_error(lake, tmp_path: Path) -> None:
    lake_dir, _ = lake
    manifest_path = lake_dir / "reviews" / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "rows": 401}))
    with pytest.raises(ReviewpipeError, match="401"):
        build_catalog(str(lake_dir), str(tmp_path / "catalog.duckdb"))
    assert not (tmp_path / "catalog.duckdb").exists()  # nothing half-built is published


def test_empty_table_gives_a_typed_empty_view(tmp_path: Path) -> None:
    write_lake_table(tmp_path / "lake" / "reviews", clean_reviews(50), "product_category")
    write_lake_table(tmp_path / "lake" / "rejects", rejects_frame(0), None)
    description = build_catalog(str(tmp_path / "lake"), str(tmp_path / "catalog.duckdb"))
    rejects = description["tables"]["rejects"]
    assert rejects["rows"] == 0
    assert {c["name"]: c["type"] for c in rejects["columns"]}["source_row"] == "BIGINT"


def test_numeric_partition_keeps_its_type(tmp_path: Path) -> None:
    write_lake_table(tmp_path / "lake" / "reviews", clean_reviews(60), "rating")
    write_lake_table(tmp_path / "lake" / "rejects", rejects_frame(1), None)
    description = build_catalog(str(tmp_path / "lake"), str(tmp_path / "catalog.duckdb"))
    partitions = description["tables"]["reviews"]["partitions"]
    assert partitions["type"] == "BIGINT"
    assert [v["value"] for v in partitions["values"]] == [1, 2, 3, 4, 5]


def test_missing_catalog_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ReviewpipeError, match="dvc repro catalog"):
        open_catalog(str(tmp_path / "nope.duckdb"))


def test_catalog_on_s3_matches_local(lake, tmp_path: Path, s3_bucket: str, moto_server: str) -> None:
    import s3fs

    from reviewpipe.storage import StorageOptions

    lake_dir, _ = lake
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_server})
    fs.put(f"{lake_dir}/", f"{s3_bucket}/lake/", recursive=True)
    options = StorageOptions(endpoint_url=moto_server)
    remote = build_catalog(f"s3://{s3_bucket}/lake", str(tmp_path / "s3.duckdb"), options)
    local = build_catalog(str(lake_dir), str(tmp_path / "local.duckdb"))
    for name in ("reviews", "rejects"):
        assert {k: v for k, v in remote["tables"][name].items() if k != "location"} == {
            k: v for k, v in local["tables"][name].items() if k != "location"
        }
    assert remote["tables"]["reviews"]["location"] == f"s3://{s3_bucket}/lake/reviews"
    query = "SELECT product_category, SUM(sentiment) AS s FROM reviews GROUP BY 1 ORDER BY 1"
    pd.testing.assert_frame_equal(
        open_catalog(str(tmp_path / "s3.duckdb"), options).sql(query).df(),
        open_catalog(str(tmp_path / "local.duckdb")).sql(query).df(),
    )


def test_the_tracked_script_is_byte_stable_and_the_database_is_rebuilt_from_it(lake, tmp_path: Path) -> None:
    """catalog.sql (the stage's DVC output) is the same bytes on every rerun; the DuckDB file (random
    id inside) is derived from it: rebuilt when missing (a fresh clone) or built from another script."""
    lake_dir, reviews = lake
    database = tmp_path / "catalog.duckdb"
    build_catalog(str(lake_dir), str(database))
    script = (tmp_path / "catalog.sql").read_bytes()
    build_catalog(str(lake_dir), str(database))
    assert (tmp_path / "catalog.sql").read_bytes() == script
    database.unlink()  # `dvc pull` on a fresh clone brings catalog.sql, not the database
    con = open_catalog(str(database))
    assert con.sql("SELECT COUNT(*) FROM reviews").fetchall() == [(len(reviews),)]
    con.close()
    other = tmp_path / "other"
    other.mkdir()
    build_catalog(str(lake_dir), str(other / "catalog.duckdb"))
    with (other / "catalog.sql").open("a") as f:
        f.write("CREATE VIEW answer AS SELECT 42 AS answer;\n")
    con = open_catalog(str(other / "catalog.duckdb"))  # a newer script: the database follows it
    assert con.sql("SELECT answer FROM answer").fetchall() == [(42,)]
    con.close()
    assert not list(tmp_path.rglob("*.tmp-*"))
