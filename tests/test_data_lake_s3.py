"""The lake: Hive partitions read back by DuckDB (NULLs included), manifest-last publishing, and
ingest on moto's real S3 server giving the same lake as a local run."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from reviewpipe import storage
from reviewpipe.config import load_params
from reviewpipe.data import lake
from reviewpipe.data.ingest import parse_raw, validate
from reviewpipe.data.synth import synth_reviews, write_synth
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import ingest as ingest_stage
from reviewpipe.storage import StorageOptions, get_fs
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    data, _ = synth_reviews(600, seed=13)
    return validate(parse_raw(data), 13, 110).clean


def _sorted(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame[columns].sort_values("review_id").reset_index(drop=True)


def _same_rows(read: pd.DataFrame, written: pd.DataFrame) -> None:
    columns = [c for c in written.columns if c != "ingested_at"]
    left, right = _sorted(read, columns), _sorted(written, columns)
    assert left.isna().equals(right.isna())
    assert (
        left.astype(object).where(left.notna(), None).values.tolist()
        == right.astype(object).where(right.notna(), None).values.tolist()
    )


def test_null_partitions_round_trip_through_duckdb_hive_partitioning(
    tmp_path: Path, clean: pd.DataFrame
) -> None:
    assert clean["product_category"].isna().sum() >= 2
    manifest = lake.publish_table(str(tmp_path), "reviews", clean, "product_category")
    assert "product_category=__HIVE_DEFAULT_PARTITION__/" in " ".join(manifest["files"])
    files = lake.table_files(str(tmp_path / "reviews"))
    con = duckdb.connect()
    nulls, total, typ = con.execute(
        "SELECT count(*) FILTER (WHERE product_category IS NULL), count(*), any_value(typeof(product_category)) "
        "FROM read_parquet(?, hive_partitioning = true)",
        [files],
    ).fetchone()
    assert (nulls, total, typ) == (clean["product_category"].isna().sum(), len(clean), "VARCHAR")
    assert "__HIVE_DEFAULT_PARTITION__" not in set(
        con.execute(
            "SELECT DISTINCT product_category FROM read_parquet(?, hive_partitioning = true) "
            "WHERE product_category IS NOT NULL",
            [files],
        ).df()["product_category"]
    )
    _same_rows(lake.read_table(str(tmp_path / "reviews")), clean)


def test_manifest_contract(tmp_path: Path, clean: pd.DataFrame) -> None:
    manifest = lake.publish_table(str(tmp_path), "reviews", clean, "product_category", run_id="r1")
    on_disk = json.loads((tmp_path / "reviews" / lake.MANIFEST).read_text())
    assert on_disk == manifest
    assert set(manifest) == {*lake.MANIFEST_KEYS, *lake.VERSIONING_KEYS}
    assert manifest["batches"] == [] and manifest["record_id"] is None  # a whole-table publish
    assert manifest["table"] == "reviews" and manifest["run_id"] == "r1" and manifest["rows"] == len(clean)
    assert set(manifest["columns"]) == set(clean.columns)
    assert manifest["columns"]["review_id"] == "int64" and manifest["columns"]["title"] == "string"
    assert manifest["files"] == sorted(manifest["files"])
    assert all(f.endswith("/part-r1.parquet") for f in manifest["files"])
    # Exactly the files on disk, nothing more: data files plus the manifest.
    on_disk_files = sorted(
        str(p.relative_to(tmp_path / "reviews")) for p in (tmp_path / "reviews").rglob("*") if p.is_file()
    )
    assert on_disk_files == sorted([*manifest["files"], lake.MANIFEST])
    assert lake.table_files(str(tmp_path / "reviews")) == [
        os.path.join(str(tmp_path / "reviews"), f) for f in manifest["files"]
    ]
    assert lake.table_files(f"file://{tmp_path / 'reviews'}") == lake.table_files(str(tmp_path / "reviews"))


def test_partition_values_with_special_characters(tmp_path: Path, clean: pd.DataFrame) -> None:
    odd = (
        clean.head(4)
        .assign(product_category=["Tops/Tees", "50% off", "a=b", None])
        .astype({"product_category": "string"})
    )
    lake.publish_table(str(tmp_path), "reviews", odd, "product_category")
    read = lake.read_table(str(tmp_path / "reviews"))
    assert sorted(read["product_category"].fillna("<null>")) == sorted(
        ["Tops/Tees", "50% off", "a=b", "<null>"]
    )


def test_readers_see_the_old_version_until_the_manifest_is_written(
    tmp_path: Path, clean: pd.DataFrame
) -> None:
    uri = str(tmp_path / "reviews")
    old = clean.head(100)
    lake.publish_table(str(tmp_path), "reviews", old, "product_category", run_id="v1")
    old_files = lake.table_files(uri)

    new = clean.iloc[100:]
    new_files = lake.write_table_files(uri, new, "product_category", "v2")  # written, not published
    assert all((tmp_path / "reviews" / f).exists() for f in new_files)
    assert lake.table_files(uri) == old_files
    _same_rows(lake.read_table(uri), old)

    lake.commit_manifest(uri, "reviews", new_files, new, "product_category", "v2")
    _same_rows(lake.read_table(uri), new)  # switched in one step; old files not yet deleted
    assert all(os.path.exists(f) for f in old_files)

    removed = lake.remove_unlisted(uri)
    assert sorted(removed) == sorted(os.path.relpath(f, uri) for f in old_files)
    assert not any(os.path.exists(f) for f in old_files)
    partitions_left = {p.name for p in (tmp_path / "reviews").iterdir() if p.is_dir()}
    assert partitions_left == {f.split("/")[0] for f in new_files}  # no empty partition folders


def test_leftovers_of_a_crashed_write_are_removed_by_the_next_publish(
    tmp_path: Path, clean: pd.DataFrame
) -> None:
    uri = str(tmp_path / "reviews")
    lake.publish_table(str(tmp_path), "reviews", clean, "product_category", run_id="v1")
    lake.write_table_files(uri, clean.head(5), "product_category", "crashed")  # no manifest followed
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    leftover = f"part-x.parquet{storage.TMP_MARK}{int(dead.stdout)}-0123abcd"  # a killed writer's temp file
    (tmp_path / "reviews" / "product_category=Dresses" / leftover).write_bytes(b"half")
    manifest = lake.publish_table(str(tmp_path), "reviews", clean, "product_category", run_id="v3")
    on_disk = sorted(
        str(p.relative_to(tmp_path / "reviews")) for p in (tmp_path / "reviews").rglob("*") if p.is_file()
    )
    assert on_disk == sorted([*manifest["files"], lake.MANIFEST])


def test_unlisted_files_outlive_the_grace_period_for_readers_in_flight(
    tmp_path: Path, clean: pd.DataFrame
) -> None:
    """A reader that read the previous manifest can still open its files: publishing a new version
    retires them, and they are deleted only once retain_seconds have passed."""
    uri = str(tmp_path / "reviews")
    lake.publish_table(str(tmp_path), "reviews", clean.head(50), "product_category", run_id="v1")
    in_flight = lake.table_files(uri)  # a reader's plan, made from manifest v1
    lake.publish_table(
        str(tmp_path), "reviews", clean.iloc[50:], "product_category", run_id="v2", retain_seconds=3600
    )
    con = duckdb.connect()  # the reader goes on with v1's files after v2 is published
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [in_flight]).fetchone()[0] == 50
    retired = json.loads((tmp_path / "reviews" / lake.RETIRED).read_text())
    assert sorted(retired) == sorted(os.path.relpath(f, uri) for f in in_flight)
    # Within the grace period nothing is deleted; after it, the retired files go and the ledger too.
    assert lake.remove_unlisted(uri, retain_seconds=3600) == []
    later = max(pd.Timestamp(t).timestamp() for t in retired.values()) + 3601
    removed = lake.remove_unlisted(uri, retain_seconds=3600, now=later)
    assert sorted(removed) == sorted(retired)
    assert not any(os.path.exists(f) for f in in_flight)
    assert not (tmp_path / "reviews" / lake.RETIRED).exists()
    _same_rows(lake.read_table(uri), clean.iloc[50:])


def test_flat_table_and_empty_table(tmp_path: Path, clean: pd.DataFrame) -> None:
    manifest = lake.publish_table(str(tmp_path), "rejects", clean.head(0), None, run_id="e")
    assert manifest["files"] == ["part-e.parquet"] and manifest["rows"] == 0
    assert manifest["partition_by"] is None
    empty = lake.read_table(str(tmp_path / "rejects"))
    assert len(empty) == 0 and set(empty.columns) == set(clean.columns)


def test_errors_for_people(tmp_path: Path, clean: pd.DataFrame) -> None:
    with pytest.raises(ReviewpipeError, match="Run the ingest stage first"):
        lake.read_manifest(str(tmp_path / "nothing"))
    with pytest.raises(ReviewpipeError, match="lake.partition_by='colour' is not a column"):
        lake.publish_table(str(tmp_path), "reviews", clean, "colour")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / lake.MANIFEST).write_text('{"files": []}')
    with pytest.raises(ReviewpipeError, match="not a reviewpipe manifest"):
        lake.read_manifest(str(tmp_path / "bad"))


def _stage_params(raw_uri: str, lake_uri: str, endpoint: str | None = None):
    overrides = [f"data.raw_uri={raw_uri}", f"lake.uri={lake_uri}"]
    if endpoint:
        overrides.append(f"storage.endpoint_url={endpoint}")
    return load_params(REPO_ROOT / "params.yaml", overrides)


def test_ingest_on_s3_equals_local(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_server: str, s3_bucket: str
) -> None:
    """Raw on S3 and lake on S3 (endpoint from storage.endpoint_url) = the same lake as a local run."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the endpoint must come from params
    options = StorageOptions(endpoint_url=moto_server)
    raw_s3 = f"s3://{s3_bucket}/raw/reviews.csv.gz"
    expected = write_synth(raw_s3, 1500, seed=31, bad_rows=2, options=options)
    local_raw = tmp_path / "reviews.csv.gz"
    write_synth(str(local_raw), 1500, seed=31, bad_rows=2)

    monkeypatch.chdir(tmp_path)
    ingest_stage.main(_stage_params(str(local_raw), "local_lake"))
    local_metrics = json.loads(Path("metrics/ingest.json").read_text())
    lake_s3 = f"s3://{s3_bucket}/lake"
    ingest_stage.main(_stage_params(raw_s3, lake_s3, moto_server))
    s3_metrics = json.loads(Path("metrics/ingest.json").read_text())
    # DVC tracks data/lake: for a lake elsewhere it holds a pointer with the published manifests.
    pointer = json.loads(Path("data/lake/_pointer.json").read_text())
    assert pointer["uri"] == lake_s3
    assert pointer["tables"]["reviews"] == lake.read_manifest(f"{lake_s3}/reviews", options)

    def comparable(metrics: dict) -> dict:  # the batch's source URI (and so its id) differ
        batches = [
            {k: v for k, v in b.items() if k not in ("source", "batch_id")} for b in metrics["batches"]
        ]
        return {**metrics, "batches": batches}

    assert comparable(s3_metrics) == comparable(local_metrics)
    assert {k: v for k, v in s3_metrics["rejected_by_reason"].items() if v} == expected
    for table in ("reviews", "rejects"):
        local_manifest = lake.read_manifest(f"local_lake/{table}")
        s3_manifest = lake.read_manifest(f"{lake_s3}/{table}", options)
        for key in ("table", "partition_by", "rows", "columns"):
            assert s3_manifest[key] == local_manifest[key]
        strip = [f.replace(local_manifest["run_id"], "") for f in local_manifest["files"]]
        assert [f.replace(s3_manifest["run_id"], "") for f in s3_manifest["files"]] == strip
        files = lake.table_files(f"{lake_s3}/{table}", options)
        assert all(f.startswith(f"s3://{s3_bucket}/lake/{table}/") for f in files)
        local = lake.read_table(f"local_lake/{table}").drop(columns="ingested_at", errors="ignore")
        remote = lake.read_table(f"{lake_s3}/{table}", options).drop(columns="ingested_at", errors="ignore")
        key = "source_row" if table == "rejects" else "review_id"
        pd.testing.assert_frame_equal(
            remote.sort_values(key).reset_index(drop=True), local.sort_values(key).reset_index(drop=True)
        )

    # Publishing again replaces the objects: only the new manifest's files remain on S3.
    ingest_stage.main(_stage_params(raw_s3, lake_s3, moto_server))
    fs, root = get_fs(f"{lake_s3}/reviews", options)
    fs.invalidate_cache()
    on_s3 = sorted(p[len(root) + 1 :] for p in fs.find(root))
    assert on_s3 == sorted([*lake.read_manifest(f"{lake_s3}/reviews", options)["files"], lake.MANIFEST])


def test_missing_raw_on_s3_is_a_clear_error(moto_server: str, s3_bucket: str) -> None:
    from reviewpipe.data.ingest import ingest

    with pytest.raises(ReviewpipeError, match="raw reviews file not found at s3://"):
        ingest(f"s3://{s3_bucket}/raw/absent.csv.gz", options=StorageOptions(endpoint_url=moto_server))


def test_gzip_raw_from_s3_by_magic_bytes(moto_server: str, s3_bucket: str) -> None:
    from reviewpipe.data.ingest import ingest

    options = StorageOptions(endpoint_url=moto_server)
    fs, path = get_fs(f"s3://{s3_bucket}/raw/reviews", options)
    with fs.open(path, "wb") as f:
        f.write(gzip.compress(synth_reviews(80, seed=3)[0]))
    assert ingest(f"s3://{s3_bucket}/raw/reviews", options=options).metrics["rows_clean"] == 80
