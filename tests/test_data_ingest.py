"""Ingest: reading any URI, one test per validation rule, reconciliation, the stage, the real file."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from reviewpipe.cli import main as cli_main
from reviewpipe.config import load_params
from reviewpipe.data import lake
from reviewpipe.data.ingest import (
    DEFAULT_RAW_URI,
    REJECT_RULES,
    ReconciliationError,
    ingest,
    parse_raw,
    reconcile,
    validate,
)
from reviewpipe.data.schema import (
    CLEAN_COLUMNS,
    LAKE_REJECT_COLUMNS,
    RAW_COLUMNS,
    REJECT_COLUMNS,
    sentiment_of,
)
from reviewpipe.data.synth import synth_reviews
from reviewpipe.errors import ReviewpipeError
from reviewpipe.stages import ingest as ingest_stage
from tests.conftest import REPO_ROOT

GOOD = {
    "": "0",
    "Clothing ID": "767",
    "Age": "33",
    "Title": "Lovely",
    "Review Text": "Absolutely wonderful",
    "Rating": "4",
    "Recommended IND": "1",
    "Positive Feedback Count": "0",
    "Division Name": "Initmates",
    "Department Name": "Intimate",
    "Class Name": "Intimates",
}


def csv_bytes(rows: list[dict[str, str | None]], header: tuple[str, ...] = RAW_COLUMNS) -> bytes:
    """A Kaggle-style CSV; each row is GOOD with some fields changed (None = empty field)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for i, changes in enumerate(rows):
        row = {**GOOD, "": str(i), **changes}
        writer.writerow(["" if row.get(c) is None else row[c] for c in header])
    return out.getvalue().encode("utf-8")


def run(rows: list[dict[str, str | None]], **kwargs: object):
    return validate(parse_raw(csv_bytes(rows)), min_age=13, max_age=110, **kwargs)


def reasons(result) -> list[str]:
    return result.rejects["reject_reason"].tolist()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"": None}, "missing_review_id"),
        ({"": "r-17"}, "invalid_review_id"),
        ({"Rating": None}, "missing_rating"),
        ({"Rating": "five"}, "invalid_rating"),
        ({"Rating": "4.5"}, "invalid_rating"),
        ({"Rating": "0"}, "rating_out_of_range"),
        ({"Rating": "6"}, "rating_out_of_range"),
        ({"Review Text": None}, "missing_review_body"),
        ({"Review Text": "  \n "}, "missing_review_body"),
        ({"Age": "thirty"}, "invalid_age"),
        ({"Age": "12"}, "age_out_of_range"),
        ({"Age": "111"}, "age_out_of_range"),
        ({"Clothing ID": "-4"}, "invalid_clothing_id"),
        ({"Clothing ID": "A12"}, "invalid_clothing_id"),
        ({"Recommended IND": "2"}, "invalid_recommended_ind"),
        ({"Positive Feedback Count": "-1"}, "invalid_positive_feedback_count"),
        ({"Positive Feedback Count": "many"}, "invalid_positive_feedback_count"),
    ],
)
def test_each_rule_rejects_its_row_with_its_reason(changes: dict[str, str | None], reason: str) -> None:
    result = run([{}, changes, {}])
    assert reasons(result) == [reason]
    assert result.rejects["source_row"].tolist() == [2]
    assert result.clean["review_id"].tolist() == [0, 2]
    assert result.metrics["rejected_by_reason"][reason] == 1


def test_boundaries_and_optional_fields_are_clean() -> None:
    result = run(
        [
            {"Age": "13", "Rating": "1"},
            {"Age": "110", "Rating": "5"},
            {"Age": None},
            {"Title": None, "Class Name": None, "Department Name": None, "Division Name": None},
            {"Rating": " 3 ", "Clothing ID": "12.0"},
        ]
    )
    assert result.metrics["rows_rejected"] == 0
    clean = result.clean
    assert clean["age"].tolist()[:2] == [13, 110] and clean["age"].isna().tolist()[2]
    assert clean.loc[3, ["title", "product_category"]].isna().all()
    assert clean.loc[4, "rating"] == 3 and clean.loc[4, "clothing_id"] == 12


def test_undecodable_bytes_reject_only_their_row() -> None:
    data = csv_bytes([{}, {"Review Text": "MARK"}, {"Review Text": "Café crème, très bien"}])
    data = data.replace(b"MARK", b"The caf\xe9 color")  # latin-1 bytes in a UTF-8 file
    result = validate(parse_raw(data), 13, 110)
    assert reasons(result) == ["undecodable_bytes"]
    assert result.rejects.loc[0, "review_body"] == "The caf\\xe9 color"  # the bytes, visible
    assert result.clean["review_body"].tolist()[1] == "Café crème, très bien"


def test_other_encodings_decode_by_data_encoding() -> None:
    data = csv_bytes([{"Review Text": "\u201cPerfect\u201d caf\u00e9"}]).decode("utf-8").encode("cp1252")
    assert reasons(validate(parse_raw(data, "utf-8"), 13, 110)) == ["undecodable_bytes"]
    result = validate(parse_raw(data, "cp1252"), 13, 110, encoding="cp1252")
    assert result.clean["review_body"].tolist() == ["\u201cPerfect\u201d caf\u00e9"]
    utf16 = csv_bytes([{"Title": "é"}]).decode("utf-8").encode("utf-16")
    assert validate(parse_raw(utf16, "utf-16"), 13, 110, encoding="utf-16").clean["title"].tolist() == ["é"]


def test_utf8_bom_is_not_part_of_the_header() -> None:
    result = validate(parse_raw(b"\xef\xbb\xbf" + csv_bytes([{}])), 13, 110)
    assert result.metrics["rows_clean"] == 1


def test_rows_with_too_many_or_too_few_fields_are_kept_in_place_and_rejected() -> None:
    data = csv_bytes([{}, {}, {}, {}]).replace(b"\n1,", b"\n1,extra,", 1)
    data = data.replace(b",Intimates\n3,", b"\n3,", 1)  # row 2 loses its last field
    result = validate(parse_raw(data), 13, 110)
    assert reasons(result) == ["wrong_field_count", "wrong_field_count"]
    assert result.rejects["review_id"].tolist() == ["1", "2"]
    assert result.rejects["source_row"].tolist() == [2, 3]
    assert result.rejects.loc[0, "product_category"] == "Intimate,Intimates"  # the surplus, kept
    assert pd.isna(result.rejects.loc[1, "product_category"])
    assert result.clean["review_id"].tolist() == [0, 3]


def test_duplicates_keep_the_first_good_row() -> None:
    result = run([{"": "5"}, {"": "5", "Title": "again"}, {"": "7", "Rating": "9"}, {"": "7"}, {"": "7"}])
    assert reasons(result) == ["duplicate_review_id", "rating_out_of_range", "duplicate_review_id"]
    assert result.rejects["source_row"].tolist() == [2, 3, 5]
    assert result.clean["review_id"].tolist() == [5, 7]  # the broken first 7 does not hide the good one
    assert result.clean["title"].tolist() == ["Lovely", "Lovely"]


def test_first_failing_rule_names_the_reject() -> None:
    result = run([{"Rating": "ten", "Review Text": None, "Age": "2"}, {"Review Text": None, "Age": "2"}])
    assert reasons(result) == ["invalid_rating", "missing_review_body"]
    assert REJECT_RULES.index("invalid_rating") < REJECT_RULES.index("missing_review_body")


def test_quoted_newlines_and_source_rows() -> None:
    body = 'Line one,\r\nline "two"\n\nline three'
    result = run([{"Review Text": body}, {"Review Text": body}, {"Rating": "x"}])
    assert result.clean["review_body"].tolist() == [body, body]
    assert result.rejects["source_row"].tolist() == [3]  # records, not physical lines


def test_clean_and_reject_tables_have_the_contract_columns_and_types() -> None:
    result = run([{"Rating": "1"}, {"Rating": "3"}, {"Rating": "5"}, {"Rating": "0"}])
    assert tuple(result.clean.columns) == CLEAN_COLUMNS
    assert tuple(result.rejects.columns) == REJECT_COLUMNS
    assert result.clean["sentiment"].tolist() == [-1, 0, 1]
    assert str(result.clean["ingested_at"].dtype) == "datetime64[us, UTC]"
    assert str(result.clean["review_id"].dtype) == "int64"
    assert result.rejects.loc[0, "rating"] == "0" and result.rejects.loc[0, "review_id"] == "3"


def test_sentiment_of() -> None:
    assert [sentiment_of(r) for r in range(1, 6)] == [-1, -1, 0, 1, 1]
    assert sentiment_of(pd.Series([5, 3, 2])).tolist() == [1, 0, -1]
    with pytest.raises(ValueError):
        sentiment_of(6)


def test_reconciliation_invariant() -> None:
    result = run([{}, {"Rating": "x"}, {"": "0"}])
    m = result.metrics
    assert m["rows_in"] == m["rows_clean"] + m["rows_rejected"] == 3
    assert sum(m["rejected_by_reason"].values()) == m["rows_rejected"] == 2
    assert set(m["rejected_by_reason"]) == set(REJECT_RULES)
    with pytest.raises(ReconciliationError, match="rows_in 4 != rows_clean 1 \\+ rows_rejected 2"):
        reconcile(4, result.clean, result.rejects)
    bogus = result.rejects.assign(reject_reason="cosmic_rays")
    with pytest.raises(ReconciliationError, match="cosmic_rays"):
        reconcile(3, result.clean, bogus)


def test_missing_columns_are_named_in_one_error() -> None:
    header = tuple(c for c in RAW_COLUMNS if c not in ("Rating", "Class Name", ""))
    with pytest.raises(ReviewpipeError) as err:
        parse_raw(csv_bytes([{}], header=header))
    message = str(err.value)
    assert "3 required column(s)" in message
    for name in ("'Rating' (rating)", "'Class Name' (product_category)", "unnamed first column (review_id)"):
        assert name in message


def test_snake_case_header_is_accepted() -> None:
    snake = (
        "review_id",
        "clothing_id",
        "age",
        "title",
        "review_body",
        "rating",
        "recommended_ind",
        "positive_feedback_count",
        "division_name",
        "department_name",
        "product_category",
    )
    raw = csv_bytes([{}]).split(b"\n", 1)[1]
    result = validate(parse_raw(",".join(snake).encode() + b"\n" + raw), 13, 110)
    assert result.metrics["rows_clean"] == 1


def test_unreadable_csv_is_a_user_error() -> None:
    with pytest.raises(ReviewpipeError, match="not a readable CSV \\(line 3"):
        parse_raw(csv_bytes([{}]) + b'1,2,3,"never closed\n')
    with pytest.raises(ReviewpipeError, match="empty"):
        parse_raw(b"")
    with pytest.raises(ReviewpipeError, match="header but no data rows"):
        parse_raw(csv_bytes([]))


def test_reads_gzip_plain_and_file_uri(tmp_path: Path) -> None:
    data, _ = synth_reviews(120, seed=1, bad_rows=1)
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(data))
    (tmp_path / "r.csv").write_bytes(data)
    (tmp_path / "gz_without_extension").write_bytes(gzip.compress(data))
    results = [
        ingest(str(tmp_path / "r.csv.gz")),
        ingest(f"file://{tmp_path / 'r.csv'}"),
        ingest(str(tmp_path / "gz_without_extension")),
        ingest(str(tmp_path / "r.csv.gz"), compression="gzip"),
    ]
    for result in results[1:]:
        assert result.metrics == results[0].metrics
        pd.testing.assert_frame_equal(
            result.clean.drop(columns="ingested_at"), results[0].clean.drop(columns="ingested_at")
        )
    assert results[0].metrics["rows_in"] == 120
    with pytest.raises(ReviewpipeError, match="not a readable CSV|lacks"):
        ingest(str(tmp_path / "r.csv.gz"), compression="none")


def test_missing_raw_file_says_where_and_how_to_override(tmp_path: Path) -> None:
    with pytest.raises(ReviewpipeError) as err:
        ingest(str(tmp_path / "nope.csv.gz"))
    message = str(err.value)
    assert str(tmp_path / "nope.csv.gz") in message and DEFAULT_RAW_URI in message
    assert "dvc exp run -S data.raw_uri=" in message and "reviewpipe stage ingest -S data.raw_uri=" in message


def _params(tmp_path: Path, raw_uri: str, lake_uri: str, **extra: str):
    overrides = [f"data.raw_uri={raw_uri}", f"lake.uri={lake_uri}", *(f"{k}={v}" for k, v in extra.items())]
    return load_params(REPO_ROOT / "params.yaml", overrides)


def test_stage_writes_lake_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data, expected = synth_reviews(2000, seed=21, bad_rows=3)
    Path("raw.csv.gz").write_bytes(gzip.compress(data))
    ingest_stage.main(_params(tmp_path, "raw.csv.gz", "lake"))

    metrics = json.loads(Path("metrics/ingest.json").read_text())
    assert metrics["rows_in"] == 2000 and metrics["rows_rejected"] == 18
    assert {k: v for k, v in metrics["rejected_by_reason"].items() if v} == expected
    reviews = lake.read_table("lake/reviews")
    rejects = lake.read_table("lake/rejects")
    assert len(reviews) == metrics["rows_clean"] == lake.read_manifest("lake/reviews")["rows"]
    assert reviews["review_id"].is_unique
    assert sorted(rejects["reject_reason"].unique()) == sorted(expected)
    assert set(rejects.columns) == set(LAKE_REJECT_COLUMNS)
    assert lake.read_manifest("lake/reviews")["partition_by"] == "product_category"


def test_stage_partition_by_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("raw.csv").write_bytes(synth_reviews(300, seed=2)[0])
    ingest_stage.main(_params(tmp_path, "raw.csv", "lake", **{"lake.partition_by": "department_name"}))
    files = lake.read_manifest("lake/reviews")["files"]
    assert all(f.startswith("department_name=") for f in files)
    assert "department_name=Tops/" in " ".join(files)


def test_cli_missing_file_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(
        [
            "stage",
            "ingest",
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "-S",
            f"data.raw_uri={tmp_path}/absent.csv",
            "-S",
            f"lake.uri={tmp_path}/lake",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: raw reviews file not found") and "Traceback" not in err


@pytest.mark.realdata
def test_real_file_counts_reconcile(real_raw: Path) -> None:
    result = ingest(str(real_raw))
    m = result.metrics
    assert m["rows_in"] == 23486
    assert m["rows_in"] == m["rows_clean"] + m["rows_rejected"]
    # The 845 reviews without text are quarantined with a reason, not dropped.
    assert m["rejected_by_reason"]["missing_review_body"] == 845
    assert (result.rejects["reject_reason"] == "missing_review_body").sum() == 845
    assert m["rows_clean"] == 23486 - m["rows_rejected"]
    assert result.clean["review_id"].is_unique
    assert result.clean["product_category"].isna().sum() == 13  # of the 14, one has no text
    assert result.clean["sentiment"].value_counts().to_dict().keys() == {-1, 0, 1}
