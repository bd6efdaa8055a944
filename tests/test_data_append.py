"""Incremental ingest: batches append with their own ingested_at, re-ingesting adds nothing, a changed
row is a new version, publishing is all-or-nothing; streaming equals the in-memory parse; oversized
fields and oversized files; the real file split into two batches (counts, --since, prepare)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from reviewpipe.cli import main as cli_main
from reviewpipe.config import load_params
from reviewpipe.data import lake
from reviewpipe.data.append import AppendSettings, Batch, ingest_batch, ingest_batches, load_state, publish
from reviewpipe.data.catalog import open_catalog
from reviewpipe.data.ingest import ReadSettings, ingest
from reviewpipe.data.synth import synth_reviews
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import catalog as catalog_stage
from reviewpipe.stages import ingest as ingest_stage
from tests.conftest import REPO_ROOT

T1, T2, T3 = "2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z", "2024-09-01T00:00:00Z"


def settings(chunk_rows: int = 20_000, **read: object) -> AppendSettings:
    return AppendSettings(ReadSettings(chunk_rows=chunk_rows, **read), "product_category", "256MB", 0)


def raw_rows(data: bytes) -> tuple[list[str], list[list[str]]]:
    """A raw CSV's header and records as latin-1 strings (bytes preserved for writing back)."""
    records = list(csv.reader(io.StringIO(data.decode("latin-1"), newline="")))
    return records[0], [r for r in records[1:] if r]


def write_raw(path: Path, header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = out.getvalue().encode("latin-1")
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return str(path)


def lake_bytes(lake_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake_dir)): p.read_bytes() for p in sorted(lake_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[list[str]]]:
    folder = tmp_path_factory.mktemp("raw")
    header, rows = raw_rows(synth_reviews(900, seed=5, bad_rows=2)[0])
    return folder, header, rows


def test_second_batch_appends_reingest_adds_nothing_changed_rows_are_versions(
    tmp_path: Path, synthetic
) -> None:
    folder, header, rows = synthetic
    first = write_raw(folder / "first.csv", header, rows[:600])
    edited = [[*r[:4], r[4] + " Edited later.", *r[5:]] for r in rows[:3]]  # same ids, new text
    second = write_raw(folder / "second.csv", header, rows[600:] + edited)
    uri = str(tmp_path / "lake")

    m1 = ingest_batches([Batch.of(first, T1)], uri, settings(chunk_rows=97), rebuild=False)
    n1 = m1["rows_clean"]
    assert m1["rows_new"] == n1 and m1["lake"]["review_ids"] == n1
    m2 = ingest_batches([Batch.of(second, T2)], uri, settings(chunk_rows=97), rebuild=False)
    replayed = {r[0] for r in rows[600:]} & {r[0] for r in rows[:600]}  # synth's planted duplicate ids
    assert (m2["rows_changed"], m2["rows_unchanged"]) == (3, len(replayed))
    assert m2["lake"]["review_rows"] == n1 + m2["rows_new"] + 3  # versions kept, none overwritten
    assert m2["lake"]["review_ids"] == n1 + m2["rows_new"]
    manifest = lake.read_manifest(f"{uri}/reviews")
    assert [b["ingested_at"] for b in manifest["batches"]] == [
        "2024-01-01T00:00:00+00:00",
        "2024-06-01T00:00:00+00:00",
    ]

    before = lake_bytes(tmp_path / "lake")
    again = ingest_batches([Batch.of(first, T3)], uri, settings(chunk_rows=50), rebuild=False)
    assert (again["rows_new"], again["rows_changed"], again["rows_unchanged"]) == (0, 0, n1)
    assert again["rows_rejected"] == m1["rows_rejected"]  # counted in the run, not stored twice
    assert lake_bytes(tmp_path / "lake") == before  # nothing at all changed

    current = lake.read_current(f"{uri}/reviews")
    assert current["review_id"].is_unique and len(current) == m2["lake"]["review_ids"]
    edited_ids = [int(r[0]) for r in edited]
    latest = current.set_index("review_id").loc[edited_ids]
    assert latest["review_body"].str.endswith("Edited later.").all()  # the newer version is current
    assert (latest["ingested_at"] == pd.Timestamp(T2)).all()
    history = lake.read_table(f"{uri}/reviews")
    assert (history["review_id"].isin(edited_ids)).sum() == 6


def test_catalog_views_current_versions_and_since(tmp_path: Path, synthetic, monkeypatch) -> None:
    folder, header, rows = synthetic
    first = write_raw(folder / "c1.csv.gz", header, rows[:500])
    second = write_raw(
        folder / "c2.csv", header, rows[500:] + [[*rows[0][:4], "Changed text.", *rows[0][5:]]]
    )
    monkeypatch.chdir(tmp_path)
    params = load_params(
        REPO_ROOT / "params.yaml", ["lake.uri=lake", f"data.raw_uri={first}", f"data.ingested_at={T1}"]
    )
    OmegaConf.update(params, "data.batches", [{"uri": second, "ingested_at": T2}])
    ingest_stage.main(params)
    catalog_stage.main(params)
    metrics = json.loads(Path("metrics/ingest.json").read_text())
    con = open_catalog("data/catalog.duckdb")
    current, ids = con.execute("SELECT count(*), count(DISTINCT review_id) FROM reviews").fetchone()
    history = con.execute("SELECT count(*) FROM reviews_history").fetchone()[0]
    assert (
        current == ids == metrics["lake"]["review_ids"]
        and history == metrics["lake"]["review_rows"] == ids + 1
    )
    assert con.execute("SELECT review_body FROM reviews WHERE review_id = ?", [int(rows[0][0])]).fetchone()[
        0
    ] == ("Changed text.")
    from reviewpipe.monitoring.cli import read_since

    since = read_since(con, "2024-03-01")
    assert len(since) == metrics["batches"][1]["rows_new"] + metrics["batches"][1]["rows_changed"]
    assert len(read_since(con, "2023-12-31")) == current
    description = json.loads(Path("data/catalog.json").read_text())["tables"]["reviews"]
    assert (description["rows"], description["versions"], len(description["batches"])) == (
        current,
        history,
        2,
    )


def test_batches_must_come_in_time_order(tmp_path: Path, synthetic) -> None:
    folder, header, rows = synthetic
    first = write_raw(folder / "o1.csv", header, rows[:50])
    uri = str(tmp_path / "lake")
    ingest_batches([Batch.of(first, T2)], uri, settings(), rebuild=False)
    with pytest.raises(ReviewpipeError, match="not later than the lake's last batch"):
        ingest_batches([Batch.of(first, T1)], uri, settings(), rebuild=False)
    with pytest.raises(ReviewpipeError, match="not an ISO 8601 time"):
        Batch.of(first, "yesterday-ish")


def test_readers_see_the_old_lake_until_publish_and_concurrent_writers_are_caught(
    tmp_path: Path, synthetic
) -> None:
    folder, header, rows = synthetic
    first = write_raw(folder / "p1.csv", header, rows[:300])
    second = write_raw(folder / "p2.csv", header, rows[300:600])
    uri = str(tmp_path / "lake")
    ingest_batches([Batch.of(first, T1)], uri, settings(), rebuild=False)
    readers_before = lake.read_current(f"{uri}/reviews")
    base = load_state(uri, "product_category")
    state, metrics = ingest_batch(Batch.of(second, T2), uri, base, settings())  # written, not published
    assert metrics["rows_new"] > 0
    pd.testing.assert_frame_equal(lake.read_current(f"{uri}/reviews"), readers_before)
    # Another writer publishes in between: this publish must fail, not overwrite it.
    ingest_batches([Batch.of(second, T3)], uri, settings(), rebuild=False)
    with pytest.raises(ReviewpipeError, match="another ingest published meanwhile"):
        publish(uri, state, base, retain_seconds=0)


def test_streaming_in_small_chunks_equals_the_in_memory_parse(tmp_path: Path) -> None:
    data, expected = synth_reviews(700, seed=8, bad_rows=3)  # duplicates land in other chunks
    raw = tmp_path / "raw.csv.gz"
    raw.write_bytes(gzip.compress(data))
    whole = ingest(str(raw), ingested_at=pd.Timestamp(T1).to_pydatetime())
    metrics = ingest_batches(
        [Batch.of(str(raw), T1)], str(tmp_path / "lake"), settings(chunk_rows=13), rebuild=True
    )
    assert {k: v for k, v in metrics["rejected_by_reason"].items() if v} == expected
    assert metrics["rows_clean"] == len(whole.clean) and metrics["rows_rejected"] == len(whole.rejects)
    streamed = lake.read_table(str(tmp_path / "lake" / "reviews"))[list(whole.clean.columns)]
    pd.testing.assert_frame_equal(
        streamed.sort_values("review_id").reset_index(drop=True),
        whole.clean.sort_values("review_id").reset_index(drop=True),
        check_dtype=False,
    )
    rejects = lake.read_table(str(tmp_path / "lake" / "rejects")).sort_values("source_row")
    assert (
        rejects["reject_reason"].tolist() == whole.rejects.sort_values("source_row")["reject_reason"].tolist()
    )


def test_a_field_over_the_limit_quarantines_only_its_row(tmp_path: Path) -> None:
    header, rows = raw_rows(synth_reviews(20, seed=2)[0])
    rows[5][4] = "x" * 200_000  # a 200 KB review text, quoted with commas and a newline inside
    rows[6][4] = "fine, " * 1000 + "\nstill fine"
    raw = write_raw(tmp_path / "big.csv", header, rows)
    metrics = ingest_batches([Batch.of(raw, T1)], str(tmp_path / "lake"), settings(), rebuild=True)
    assert metrics["rejected_by_reason"]["field_too_large"] == 1 and metrics["rows_clean"] == 19
    reject = lake.read_table(str(tmp_path / "lake" / "rejects")).iloc[0]
    assert reject["reject_reason"] == "field_too_large" and reject["source_row"] == 6
    assert len(reject["review_body"]) < 2_000 and "200,000 bytes" in reject["review_body"]
    # Past 64 x the limit a field is an unbalanced quote swallowing the file: refused, and said so.
    small = settings(max_field_bytes=1_000)
    with pytest.raises(ReviewpipeError, match="runs past 64,000 bytes.*quote is probably unbalanced"):
        ingest_batches([Batch.of(raw, T1)], str(tmp_path / "lake2"), small, rebuild=True)


def test_raw_size_cap_stops_a_gzip_bomb(tmp_path: Path) -> None:
    data = synth_reviews(30, seed=1)[0] + b"0," * 2_000_000  # 4 MB that gzip squeezes to a few KB
    bomb = tmp_path / "bomb.csv.gz"
    bomb.write_bytes(gzip.compress(data))
    assert bomb.stat().st_size < 50_000
    with pytest.raises(ReviewpipeError, match="larger than data.max_raw_bytes=1,000,000 bytes"):
        ingest_batches(
            [Batch.of(str(bomb), T1)], str(tmp_path / "lake"), settings(max_raw_bytes=1_000_000), rebuild=True
        )
    assert not (tmp_path / "lake" / "reviews" / lake.MANIFEST).exists()  # nothing published


def test_stage_reruns_are_byte_identical(tmp_path: Path, synthetic, monkeypatch) -> None:
    """Same raw data and params -> the same lake files, manifests and catalog description, whatever
    the clock says (issue 11 section 5)."""
    folder, header, rows = synthetic
    first = write_raw(folder / "d1.csv.gz", header, rows[:400])
    second = write_raw(folder / "d2.csv", header, rows[400:])
    outputs = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)
        params = load_params(REPO_ROOT / "params.yaml", ["lake.uri=data/lake", f"data.raw_uri={first}"])
        OmegaConf.update(params, "data.batches", [{"uri": second, "ingested_at": T2}])
        ingest_stage.main(params)
        catalog_stage.main(params)
        outputs.append(
            {
                **lake_bytes(Path("data/lake")),
                "catalog.json": Path("data/catalog.json").read_bytes(),
                "ingest.json": Path("metrics/ingest.json").read_bytes(),
            }
        )
    assert outputs[0].keys() == outputs[1].keys() and outputs[0] == outputs[1]
    assert any(name.endswith(".parquet") for name in outputs[0])


def test_cli_append_then_reappend(tmp_path: Path, synthetic, monkeypatch, capsys) -> None:
    folder, header, rows = synthetic
    first = write_raw(folder / "a1.csv", header, rows[:200])
    monkeypatch.chdir(tmp_path)
    common = ["--params", str(REPO_ROOT / "params.yaml"), "-S", "lake.uri=data/lake"]
    assert cli_main(["ingest", "--append", first, "--ingested-at", T1, *common]) == 0
    out = capsys.readouterr().out
    clean = int(re.search(r"(\d+) clean \(\1 new, 0 changed, 0 already in the lake\)", out)[1])
    assert "catalog data/catalog.duckdb refreshed" in out
    assert "add to data.batches" in out and f"uri: {first}" in out  # the DVC-tracked lake: how to keep it
    before = lake_bytes(Path("data/lake"))
    assert cli_main(["ingest", "--append", first, *common]) == 0
    assert f"(0 new, 0 changed, {clean} already in the lake)" in capsys.readouterr().out
    assert lake_bytes(Path("data/lake")) == before
    assert cli_main(["ingest", "--append", str(tmp_path / "absent.csv"), *common]) == 2
    assert "raw reviews file not found" in capsys.readouterr().err


def test_append_to_a_lake_on_s3(tmp_path: Path, synthetic, moto_server: str, s3_bucket: str) -> None:
    from reviewpipe.storage import StorageOptions

    folder, header, rows = synthetic
    options = StorageOptions(endpoint_url=moto_server)
    first = write_raw(folder / "s1.csv", header, rows[:300])
    second = write_raw(folder / "s2.csv", header, rows[250:600])  # 50 rows overlap
    uri = f"s3://{s3_bucket}/lake"
    ingest_batches([Batch.of(first, T1)], uri, settings(), rebuild=False, options=options)
    m2 = ingest_batches([Batch.of(second, T2)], uri, settings(), rebuild=False, options=options)
    overlap = write_raw(folder / "s-overlap.csv", header, rows[250:300])
    expected = set(ingest(first).clean["review_id"]) & set(ingest(overlap).clean["review_id"])
    assert m2["rows_unchanged"] == len(expected) > 40
    local = str(tmp_path / "lake")
    ingest_batches([Batch.of(first, T1), Batch.of(second, T2)], local, settings(), rebuild=True)
    for table, key in (("reviews", "review_id"), ("rejects", "source_row")):
        remote = lake.read_current(f"{uri}/{table}", options)
        here = lake.read_current(f"{local}/{table}")
        assert sorted(remote[key].tolist()) == sorted(here[key].tolist())
        assert (
            lake.read_manifest(f"{uri}/{table}", options)["files"]
            == lake.read_manifest(f"{local}/{table}")["files"]
        )


@pytest.mark.realdata
def test_real_file_in_two_batches(real_raw: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """The real file split by row order: both batches ingest, counts add up to the whole file's,
    --since sees the second only, re-ingesting the first changes no byte, and prepare and the
    catalog see one current version per review."""
    header, rows = raw_rows(gzip.decompress(real_raw.read_bytes()))
    assert len(rows) == 23486
    first = write_raw(tmp_path / "batch1.csv.gz", header, rows[:12000])
    second = write_raw(tmp_path / "batch2.csv.gz", header, rows[12000:])
    whole = ingest(str(real_raw))

    monkeypatch.chdir(tmp_path)
    params = load_params(
        REPO_ROOT / "params.yaml", ["lake.uri=data/lake", f"data.raw_uri={first}", f"data.ingested_at={T1}"]
    )
    OmegaConf.update(params, "data.batches", [{"uri": second, "ingested_at": T2}])
    OmegaConf.save(params, "params.yaml")
    ingest_stage.main(params)
    catalog_stage.main(params)
    metrics = json.loads(Path("metrics/ingest.json").read_text())
    b1, b2 = metrics["batches"]
    print(
        "real-data batches:",
        json.dumps(
            {
                k: {x: b[x] for x in ("rows_in", "rows_clean", "rows_rejected", "rows_new")}
                for k, b in (("batch1", b1), ("batch2", b2))
            }
        ),
    )
    assert (b1["rows_in"], b2["rows_in"]) == (12000, 11486)
    assert b1["rows_clean"] + b2["rows_clean"] == len(whole.clean)  # the same reviews as one whole ingest
    assert b2["rows_changed"] == b2["rows_unchanged"] == 0
    assert metrics["lake"]["review_ids"] == metrics["lake"]["review_rows"] == len(whole.clean)
    assert metrics["rejected_by_reason"] == whole.metrics["rejected_by_reason"]

    con = open_catalog("data/catalog.duckdb")
    from reviewpipe.monitoring.cli import read_since

    assert len(read_since(con, "2024-03-01")) == b2["rows_clean"]
    con.close()

    before = lake_bytes(Path("data/lake"))
    assert cli_main(["ingest", "--append", first, "--no-catalog"]) == 0
    assert f"(0 new, 0 changed, {b1['rows_clean']} already in the lake)" in capsys.readouterr().out
    assert lake_bytes(Path("data/lake")) == before

    # A third batch edits 5 reviews of the first: new versions, still one current row per review.
    edited = [[*r[:4], r[4] + " UPDATE: returned it.", *r[5:]] for r in rows[100:105]]
    third = write_raw(tmp_path / "batch3.csv", header, edited)
    assert cli_main(["ingest", "--append", third, "--ingested-at", T3]) == 0
    con = open_catalog("data/catalog.duckdb")
    assert con.execute("SELECT count(*) FROM reviews").fetchone()[0] == len(whole.clean)
    assert con.execute("SELECT count(*) FROM reviews_history").fetchone()[0] == len(whole.clean) + 5
    con.close()
    from reviewpipe.stages import prepare as prepare_stage

    prepare_stage.main(params)
    prepared = pd.concat([pd.read_parquet(f"data/prepared/{s}.parquet") for s in ("unbalanced", "dropped")])
    assert prepared["review_id"].is_unique
    unbalanced = pd.read_parquet("data/prepared/unbalanced.parquet").set_index("review_id")
    kept = [int(r[0]) for r in edited if int(r[0]) in unbalanced.index]
    assert kept and unbalanced.loc[kept, "review_body"].str.endswith("UPDATE: returned it.").all()
